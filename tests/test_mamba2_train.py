"""Training commands on Mamba-2: `pretrain model.arch=mamba2` records its ssd_scan backend, resumes
exactly after SIGKILL as Mamba-1 does (tests/test_pretrain.py), and LoRA fine-tuning adapts the
Mamba-2 mixer's projections."""
import json
import random
import shutil

import pytest
import torch
import yaml

from biomamba import BioMambaForCausalLM
from biomamba.train.config import load_config
from biomamba.train.finetune_models import ModelSpecError, build_classifier
from biomamba.train.models import preset_of
from tests.model_helpers import tiny_model
from tests.pretrain_helpers import (keep_checkpoints_up_to, kill_at_step, losses, pretrain_command, run_pretrain,
                                    run_two_processes)
from tests.task_helpers import lora_cfg

# model.preset=debug (pretrain_command's) under model.arch=mamba2 is debug-mamba2; windows of 64
# tokens cross its chunks of 16
SETTINGS = ("model.arch=mamba2", "train.max_steps=12", "train.save_every=2", "train.keep_last=10",
            "train.eval_every=6")


@pytest.fixture(scope="module")
def straight_run(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("mamba2") / "run"
    run_pretrain(run_dir, data_dir, *SETTINGS)
    return run_dir


@pytest.mark.slow  # a training run
def test_pretrain_trains_a_mamba2_model_and_records_the_ssd_scan_backend(straight_run):
    config = yaml.safe_load((straight_run / "config.yaml").read_text())
    assert config["resolved"]["backends"]["ssd_scan"] == "cpu"  # "auto" on CPU (the C++ kernel builds here)
    assert "selective_scan" not in config["resolved"]["backends"]
    model = BioMambaForCausalLM.from_pretrained(straight_run / "model")
    assert (model.config.ssm_layer, model.config.d_model, model.config.chunk_size) == ("Mamba2", 32, 16)
    results = json.loads((straight_run / "results.json").read_text())
    assert results["resolved"]["parameters"] == model.num_parameters()
    train = losses(straight_run)
    assert [step for step, _ in train] == list(range(1, 13))
    assert sum(loss for _, loss in train[-3:]) < sum(loss for _, loss in train[:3])  # it learns


@pytest.mark.slow  # a training run
def test_resume_from_a_checkpoint_gives_the_straight_losses(straight_run, data_dir, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(straight_run, resumed)
    keep_checkpoints_up_to(resumed, 6)
    run_pretrain(resumed, data_dir, *SETTINGS)
    assert losses(resumed) == losses(straight_run)


@pytest.mark.slow  # a training run
def test_sigkill_then_rerun_ends_like_the_straight_run(straight_run, data_dir, tmp_path):
    point = random.Random(0).randrange(3, 11)
    run_dir = tmp_path / f"killed_{point}"
    assert kill_at_step(pretrain_command(run_dir, data_dir, *SETTINGS), run_dir, point), \
        "the run finished before it could be killed"
    run_pretrain(run_dir, data_dir, *SETTINGS)
    assert losses(run_dir)[-1] == losses(straight_run)[-1]


def test_arch_mamba2_takes_each_mamba1_presets_peer():
    def preset(arch, name):
        return preset_of(load_config(None, [f"model.arch={arch}", f"model.preset={name}"]).model)
    assert preset("mamba2", "tiny") == "tiny-mamba2" and preset("mamba2", "130m") == "mamba2-130m"
    assert preset("mamba2", "mamba2-370m") == "mamba2-370m"
    assert preset("mamba", "tiny-mamba2") == "tiny-mamba2"  # model.arch=mamba keeps the preset's block
    with pytest.raises(ValueError, match="model.preset='bogus' has no Mamba-2 peer"):
        preset("mamba2", "bogus")


def test_lora_adapts_the_mamba2_projections_and_trains_only_them_and_the_head(tmp_path):
    pytest.importorskip("peft")
    tiny_model(layer="Mamba2").save_pretrained(tmp_path)
    model = build_classifier(str(tmp_path), "biomamba", ["a", "b", "c"], lora_cfg())
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    adapters = [name for name in trained if ".lora_" in name]
    assert {name.split(".lora_")[0].rsplit(".", 1)[1] for name in adapters} == {"in_proj", "out_proj"}
    assert len(adapters) == 2 * 2 * 2  # lora_A and lora_B on each target in both layers
    assert all(".score.modules_to_save." in name for name in trained if name not in adapters)
    assert not any(name.endswith(("A_log", "D", "dt_bias")) for name in trained)  # frozen with the backbone
    ids = torch.randint(1, 97, (2, 9))
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 2])).loss.backward()
    with pytest.raises(ModelSpecError, match="conv1d cannot take LoRA.*'in_proj', 'out_proj'"):
        build_classifier(str(tmp_path), "biomamba", ["a", "b"], lora_cfg('model.lora_target_modules=["conv1d"]'))


@pytest.mark.slow  # two torchrun runs of 2 gloo processes and one plain run
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_give_the_losses_of_one(data_dir, tmp_path, parallel):
    # FSDP wraps each MambaBlock (_no_split_modules) whatever its mixer; grad_accum=2 defers reduction
    common = ("model.arch=mamba2", "train.max_steps=4", "train.save_every=2", "train.grad_accum=2")
    run_pretrain(tmp_path / "one", data_dir, *common)
    two = tmp_path / parallel
    run_two_processes(two, data_dir, *common, f"train.parallel={parallel}")
    assert [l for _, l in losses(two)] == pytest.approx([l for _, l in losses(tmp_path / "one")], rel=1e-5)
    resolved = yaml.safe_load((two / "config.yaml").read_text())["resolved"]
    assert (resolved["parallel"], resolved["world_size"], resolved["backends"]["ssd_scan"]) == (parallel, 2, "cpu")
