"""torchrun support: process group from the environment (gloo on CPU, NCCL on GPU), rank-0 helpers.

Run with `torchrun --nproc_per_node N -m biomamba pretrain ...`; a plain `biomamba pretrain` is a
world of one and every helper here is a no-op.
"""
import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device_type: str):
    """Join the torchrun process group when launched by torchrun; returns the local device."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return torch.device("cuda" if device_type == "cuda" else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return torch.device("cpu")


def teardown():
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier():
    if dist.is_initialized():
        dist.barrier()


def mean(value: torch.Tensor) -> torch.Tensor:
    if not dist.is_initialized():
        return value
    value = value.detach().clone().float()
    dist.all_reduce(value)
    return value / world_size()


def sum_int(value: int) -> int:
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.long)
    dist.all_reduce(tensor)
    return int(tensor.item())


def wrap(model, device):
    """DDP when running in a process group (each rank holds the whole model)."""
    if not dist.is_initialized():
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
