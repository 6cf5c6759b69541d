"""FSDP pretraining (train.parallel=fsdp): 2 gloo processes match 1 process, and their whole-model
checkpoints load with from_pretrained, resume under FSDP and resume in a plain 1-process run."""
import shutil

import pytest
import torch
import yaml

from biomamba import BioMambaForCausalLM
from tests.pretrain_helpers import (assert_same_validation, keep_checkpoints_up_to, losses, run_pretrain,
                                    run_two_processes)

pytestmark = pytest.mark.slow  # about a minute on 2 CPU cores: four short runs, two of them torchrun

# grad_accum=2 exercises FSDP's deferred gradient reduction; step 4 ends with a validation, which
# under FSDP runs on every rank
COMMON = ("train.max_steps=4", "train.save_every=2", "train.keep_last=5", "train.grad_accum=2",
          "model.scan_backend=torch")


def run_fsdp(run_dir, data_dir, *overrides):
    return run_two_processes(run_dir, data_dir, *COMMON, "train.parallel=fsdp", *overrides)


def train_losses(run_dir):
    return [loss for _, loss in losses(run_dir)]


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("one") / "run"
    run_pretrain(run_dir, data_dir, *COMMON)
    return run_dir


@pytest.fixture(scope="module")
def fsdp_run(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fsdp") / "run"
    run_fsdp(run_dir, data_dir)
    return run_dir


def test_two_fsdp_processes_give_the_losses_of_one(one_process, fsdp_run):
    assert [s for s, _ in losses(fsdp_run)] == [1, 2, 3, 4]
    assert train_losses(fsdp_run) == pytest.approx(train_losses(one_process), rel=1e-5)
    assert_same_validation(one_process, fsdp_run)
    resolved = yaml.safe_load((fsdp_run / "config.yaml").read_text())["resolved"]
    assert (resolved["parallel"], resolved["world_size"]) == ("fsdp", 2)


@pytest.mark.parametrize("model_dir", ["model", "checkpoints/step_0000004/model"])
def test_fsdp_checkpoint_loads_with_from_pretrained_and_equals_one_process(one_process, fsdp_run, model_dir):
    fsdp = BioMambaForCausalLM.from_pretrained(fsdp_run / model_dir)
    one = BioMambaForCausalLM.from_pretrained(one_process / model_dir)
    assert fsdp.lm_head.weight is fsdp.backbone.embedding.weight
    fsdp_state, one_state = fsdp.state_dict(), one.state_dict()
    assert fsdp_state.keys() == one_state.keys()
    for name, value in one_state.items():
        torch.testing.assert_close(fsdp_state[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_fsdp_optimizer_checkpoint_has_the_one_process_layout(one_process, fsdp_run):
    fsdp, one = (torch.load(run / "checkpoints/step_0000004/trainer.pt", weights_only=False)["optimizer"]
                 for run in (fsdp_run, one_process))
    assert fsdp["param_groups"] == one["param_groups"]  # same order, groups (no decay on A_log, D), lr
    assert fsdp["state"].keys() == one["state"].keys()
    for index, slots in one["state"].items():
        for slot, value in slots.items():
            torch.testing.assert_close(fsdp["state"][index][slot], value, rtol=1e-4, atol=1e-8)


def test_fsdp_resume_gives_the_straight_losses(data_dir, fsdp_run, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(fsdp_run, resumed)
    keep_checkpoints_up_to(resumed, 2)
    result = run_fsdp(resumed, data_dir)
    assert "resuming after step 2" in result.stdout + result.stderr
    assert train_losses(resumed) == train_losses(fsdp_run)


def test_fsdp_checkpoint_resumes_in_one_process(data_dir, one_process, fsdp_run, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(fsdp_run, resumed)
    keep_checkpoints_up_to(resumed, 2)
    result = run_pretrain(resumed, data_dir, *COMMON)
    assert "resuming after step 2" in result.stdout + result.stderr
    assert train_losses(resumed) == pytest.approx(train_losses(one_process), rel=1e-5)
