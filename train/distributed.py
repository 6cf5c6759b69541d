"""torchrun support: process group from the environment (gloo on CPU, NCCL on GPU), rank-0 helpers,
and the two ways to spread a model over the ranks (train.parallel):
    ddp    every rank holds the whole model; gradients are all-reduced
    fsdp   FSDP2 (`fully_shard`): parameters, gradients and optimizer state are sharded over the
           ranks, for models too large to replicate; checkpoints are still whole-model files
Run with `torchrun --nproc_per_node N -m biomamba pretrain ...`; a plain `biomamba pretrain` is a
world of one and every helper here is a no-op.
"""
import gc
import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from biomamba.train.models import tied_parameters


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


def require_one_process(command: str):
    """Commands that train in one process refuse torchrun: every rank would train the same model
    and overwrite the same RUN_DIR."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        raise ValueError(f"`biomamba {command}` trains in one process and cannot run under torchrun "
                         f"(WORLD_SIZE={world}); run it directly. `biomamba pretrain` is the distributed command.")


def teardown():
    """Destroy the process group once nothing uses it: reference cycles that hold a DDP reducer or
    an FSDP mesh are collected first."""
    if dist.is_initialized():
        gc.collect()
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


def wrap(model, device, parallel="ddp"):
    """DDP or FSDP when running in a process group; the model itself in a world of one."""
    if not dist.is_initialized():
        return model
    if parallel == "fsdp":
        return shard(model, device)
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


# ----------------------------------------------------------------------------- FSDP

def shard(model, device):
    """FSDP2 in place: each block (the classes HF lists in _no_split_modules) is one unit, the root
    holds the rest. A block holding a tied weight (BERT's embeddings, tied to the MLM decoder) stays
    in the root, so a tied embedding and LM head are always gathered together.

    Works on CPU with gloo as well as on GPUs with NCCL. Parameters stay in their own dtype (no FSDP
    mixed-precision policy): bf16 comes from the loop's autocast, as under DDP, so both give the same
    numbers.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # the mesh's device type follows the run's device, not whether this machine has CUDA
    mesh = init_device_mesh(device.type, (world_size(),))
    flags = {name: dict(vars(param)) for name, param in model.named_parameters()}
    named = dict(model.named_parameters(remove_duplicate=False))
    tied = {id(named[alias]) for alias in tied_parameters(model)}
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in reversed(list(model.modules())):  # innermost first, as fully_shard requires
        if type(module).__name__ in blocks and not any(id(p) in tied for p in module.parameters()):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    # fully_shard makes new Parameter objects; keep the marks the loop reads (_no_weight_decay)
    for name, param in model.named_parameters():
        param.__dict__.update(flags[name])
    return model


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


@contextmanager
def no_sync(model, skip: bool):
    """Skip the gradient all-reduce (DDP) or reduce-scatter (FSDP) of a micro-batch that is not the
    last of a step: gradients accumulate locally and are reduced once, with the last."""
    if not skip:
        yield
    elif hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    elif is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def _full_options(**extra):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, **extra)


def full_model_state(model) -> dict | None:
    """Under FSDP, the whole model's weights gathered onto rank 0's CPU (a collective: every rank
    calls it; the others get {}). None otherwise: save_pretrained then reads the module itself."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    return get_model_state_dict(model, options=_full_options(cpu_offload=True))


def load_full_model_state(model, weights: dict):
    """Copy whole-model weights (read on every rank) into this rank's FSDP shards."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict
    set_model_state_dict(model, weights, options=_full_options())


def optimizer_state(model, optimizer) -> dict:
    """optimizer.state_dict() for the whole model, in the layout a 1-process run writes, so a
    checkpoint resumes under any world size and either parallelism. Collective under FSDP."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    state = get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))
    if "param_groups" not in state:  # ranks other than 0 get nothing
        return state
    # the full state is keyed by parameter name; torch's own numbers parameters in param_groups order
    order = [name for group in state["param_groups"] for name in group["params"]]
    index = {name: i for i, name in enumerate(order)}
    return {"state": {index[name]: value for name, value in state["state"].items()},
            "param_groups": [{**group, "params": [index[n] for n in group["params"]]}
                             for group in state["param_groups"]]}


def load_optimizer_state(model, optimizer, state: dict):
    """The inverse of optimizer_state: a whole-model optimizer.state_dict() into this rank's shards."""
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
    name_of = {id(param): name for name, param in model.named_parameters()}
    order = [name_of[id(param)] for group in optimizer.param_groups for param in group["params"]]
    named = {"state": {order[i]: value for i, value in state["state"].items()},
             "param_groups": [{**group, "params": [order[i] for i in group["params"]]}
                              for group in state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, named, options=_full_options())
