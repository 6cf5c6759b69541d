"""Pretraining: exact resume and SIGKILL recovery (both block types), non-finite losses, W&B history, DDP
and FSDP, the baselines."""
import json
import math
import os
import random
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from biomamba import BioMambaForCausalLM
from biomamba.train.config import load_config
from biomamba.train.checkpointer import Checkpointer
from biomamba.train.loop import NonFiniteLoss, Objective, Trainer
from tests.model_helpers import BLOCKS, tiny_model
from tests.pretrain_helpers import (assert_same_validation, keep_checkpoints_up_to, kill_at_step, losses, pretrain_command,
                                    run_pretrain, run_two_processes)


# block type -> the straight run's settings; model.preset=debug (pretrain_command's) is a 2-layer
# d_model 32 model of either block; Mamba-2's windows of 64 tokens cross its chunks of 16
STRAIGHT = {"Mamba1": ("train.max_steps=30", "train.save_every=2", "train.keep_last=20", "train.eval_every=10"),
            "Mamba2": ("model.ssm_layer=Mamba2", "train.max_steps=12", "train.save_every=2", "train.keep_last=10",
                       "train.eval_every=6")}
# block type -> (steps, val steps, the scan backend it records, the step a resumed run restarts after,
# SIGKILL points)
EXPECTED = {"Mamba1": (30, [10, 20, 30], "selective_scan", 12, random.Random(0).sample(range(3, 28), 2)),
            "Mamba2": (12, [6, 12], "ssd_scan", 6, [random.Random(0).randrange(3, 11)])}


@pytest.fixture(scope="module", params=BLOCKS)
def straight_run(request, data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(f"straight-{request.param}") / "run"
    run_pretrain(run_dir, data_dir, *STRAIGHT[request.param])
    return request.param, run_dir


@pytest.mark.slow  # a training run
def test_run_writes_config_metrics_and_final_model(straight_run):
    layer, run_dir = straight_run
    steps, val_steps, backend, _, _ = EXPECTED[layer]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["train"]["max_steps"] == steps and config["model"]["ssm_layer"] == layer
    assert config["resolved"]["backends"][backend] in ("cpu", "torch")
    if layer == "Mamba2":
        assert config["resolved"]["backends"]["ssd_scan"] == "cpu"  # "auto" on CPU (the C++ kernel builds here)
        assert "selective_scan" not in config["resolved"]["backends"]
    assert len(config["resolved"]["git_commit"]) >= 7
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("split") != "val"]
    assert [r["step"] for r in train] == list(range(1, steps + 1))
    assert {"loss", "lr", "grad_norm", "tokens_seen", "tokens_per_s"} <= set(train[0])
    val = [r for r in rows if r.get("split") == "val"]
    assert [r["step"] for r in val] == val_steps
    assert all(r["packed_bits_per_byte"] > 0 and math.isclose(r["ppl"], math.exp(r["loss"]), rel_tol=1e-9) for r in val)
    if layer == "Mamba1":  # 30 steps: it learns by a margin
        first, last = [r["loss"] for r in train[:5]], [r["loss"] for r in train[-5:]]
        assert sum(last) / 5 < sum(first) / 5 - 0.3
    else:
        assert sum(r["loss"] for r in train[-3:]) < sum(r["loss"] for r in train[:3])  # it learns
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert (run_dir / "model" / "tokenizer.json").is_file()
    model = BioMambaForCausalLM.from_pretrained(run_dir / "model")
    assert (model.config.ssm_layer, model.config.d_model) == (layer, 32)
    if layer == "Mamba2":
        assert model.config.chunk_size == 16
    results = json.loads((run_dir / "results.json").read_text())
    assert results["resolved"]["parameters"] == model.num_parameters()


@pytest.mark.slow  # a training run
def test_resume_from_a_checkpoint_gives_the_straight_losses(straight_run, tmp_path):
    layer, run_dir = straight_run
    resumed = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed)
    keep_checkpoints_up_to(resumed, EXPECTED[layer][3])
    run_pretrain(resumed, _data_of(run_dir), *STRAIGHT[layer])
    assert losses(resumed) == losses(run_dir)


def _data_of(run_dir):
    return yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["dir"]


@pytest.mark.slow  # a training run
def test_sigkill_at_random_points_then_rerun_ends_like_the_straight_run(straight_run, tmp_path):
    layer, straight = straight_run
    data, args = _data_of(straight), STRAIGHT[layer]
    for point in EXPECTED[layer][4]:
        run_dir = tmp_path / f"killed_{point}"
        killed = kill_at_step(pretrain_command(run_dir, data, *args), run_dir, point)
        assert killed, "the run finished before it could be killed"
        checkpoints = sorted((run_dir / "checkpoints").glob("step_*"))
        assert all((c / "COMPLETE").is_file() for c in checkpoints if not c.name.endswith(".tmp"))
        run_pretrain(run_dir, data, *args)
        assert losses(run_dir)[-1] == losses(straight)[-1]


@pytest.mark.slow  # a training run
def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    model = tiny_model()
    cfg = load_config(None, ["train.max_steps=6", "train.save_every=1", "optim.warmup_steps=1",
                             "logging.wandb=false"])
    batch = torch.randint(0, 97, (2, 8))

    def batches_for(step):  # a pure function of the step, as the loop requires (it prefetches)
        return [{"step": step, "ids": batch}]

    def loss_fn(m, b):  # the loss of step 3 is NaN
        loss = m(input_ids=b["ids"], labels=b["ids"]).loss
        return loss * float("nan") if b["step"] == 3 else loss

    objective = Objective(batches_for=batches_for, loss_fn=loss_fn, items_in=lambda b: b["ids"].numel())
    trainer = Trainer(model, objective, cfg, _NullLogger(), Checkpointer(tmp_path), torch.device("cpu"))
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss nan .* at step 3.*step_0000002"):
        trainer.fit()
    assert [p.name for p in trainer.checkpointer.complete()][-1] == "step_0000002"

    cfg.train.on_nonfinite = "skip"
    skipping = Trainer(tiny_model(), objective, cfg, _NullLogger(), Checkpointer(tmp_path / "skip"),
                       torch.device("cpu"))
    final = skipping.fit()
    assert skipping.skipped == 1 and final["skipped_steps"] == 1 and final["step"] == 6


class _NullLogger:
    def log(self, *a, **k): pass
    def advance(self, *a, **k): pass
    def write(self, *a, **k): pass
    def log_samples(self, *a, **k): pass


@pytest.mark.slow  # a training run
def test_nan_weights_from_init_from_fail_with_a_clear_message(data_dir, tmp_path):
    model = tiny_model(vocab_size=512)
    with torch.no_grad():
        model.backbone.norm_f.weight.fill_(float("nan"))
    model.save_pretrained(tmp_path / "nan_model")
    result = run_pretrain(tmp_path / "run", data_dir, "train.max_steps=3",
                          f"model.init_from={tmp_path / 'nan_model'}", check=False)
    assert result.returncode == 1
    assert "non-finite loss" in result.stderr and "no checkpoint was saved yet" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # a training run
def test_wandb_offline_history_matches_metrics(data_dir, tmp_path):
    run_dir = tmp_path / "wb"
    run_pretrain(run_dir, data_dir, "train.max_steps=3", "train.eval_every=3", "logging.wandb=true",
                 "logging.name=history-test", "logging.tags=[test]")
    (record_file,) = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "wandb"), "leet", "inspect", "--json",
                          str(record_file)], capture_output=True, text=True, check=True)
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    logged = {int(h["_step"]): h for h in history}
    expected = dict(losses(run_dir))
    assert {s: logged[s]["train/loss"] for s in expected} == pytest.approx(expected)
    assert {"train/lr", "train/grad_norm", "train/tokens_per_s"} <= set(logged[1])
    assert {"val/loss", "val/ppl", "val/packed_bits_per_byte"} <= set().union(*[set(h) for h in history if h["_step"] == 3])
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["config"]["update"]["train"]["max_steps"] == 3


@pytest.mark.slow  # a training run
def test_two_gloo_processes_equal_one_with_the_same_global_batch(data_dir, tmp_path):
    common = ("train.max_steps=4", "train.save_every=4", "model.scan_backend=torch")
    run_pretrain(tmp_path / "one", data_dir, "train.batch_size=4", *common)
    run_two_processes(tmp_path / "two", data_dir, *common)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _ in one] == [s for s, _ in two]
    assert [l for _, l in two] == pytest.approx([l for _, l in one], rel=1e-5)
    assert_same_validation(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow  # two torchrun runs of 2 gloo processes and one plain run
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_mamba2_processes_give_the_losses_of_one(data_dir, tmp_path, parallel):
    # FSDP wraps each MambaBlock (_no_split_modules) whatever its mixer; grad_accum=2 defers reduction.
    # Mamba-1 under DDP: the test above; under FSDP: test_fsdp.py
    common = ("model.ssm_layer=Mamba2", "train.max_steps=4", "train.save_every=2", "train.grad_accum=2")
    run_pretrain(tmp_path / "one", data_dir, *common)
    two = tmp_path / parallel
    run_two_processes(two, data_dir, *common, f"train.parallel={parallel}")
    assert [l for _, l in losses(two)] == pytest.approx([l for _, l in losses(tmp_path / "one")], rel=1e-5)
    resolved = yaml.safe_load((two / "config.yaml").read_text())["resolved"]
    assert (resolved["parallel"], resolved["world_size"], resolved["backends"]["ssd_scan"]) == (parallel, 2, "cpu")


@pytest.mark.slow  # a training run
def test_transformer_baseline_is_parameter_matched_and_learns(data_dir, tmp_path):
    from biomamba.train.models import count_parameters, mamba_config
    run_pretrain(tmp_path / "gpt", data_dir, "train.max_steps=30", "model.arch=transformer")
    # the BioMamba a plain run of pretrain_command's settings builds (the data's 512-token vocabulary)
    mamba = count_parameters(BioMambaForCausalLM(mamba_config(load_config(None, ["model.preset=debug"]).model, 512, 0)))
    gpt = yaml.safe_load((tmp_path / "gpt" / "config.yaml").read_text())["resolved"]["parameters"]
    assert abs(gpt - mamba) / mamba < 0.25
    trace = [loss for _, loss in losses(tmp_path / "gpt")]
    assert sum(trace[-5:]) / 5 < sum(trace[:5]) / 5 - 0.3


@pytest.mark.slow  # a training run
def test_bf16_autocast_on_cpu_trains_and_resumes_exactly(data_dir, tmp_path):
    """The path a GPU user takes first (run.precision=bf16), exercised on CPU with autocast."""
    settings = ("train.max_steps=6", "train.save_every=3", "train.keep_last=5", "train.eval_every=6")
    straight, fp32 = tmp_path / "bf16", tmp_path / "fp32"
    run_pretrain(straight, data_dir, "run.precision=bf16", *settings)
    run_pretrain(fp32, data_dir, "run.precision=fp32", *settings)
    resolved = yaml.safe_load((straight / "config.yaml").read_text())["resolved"]
    assert resolved["precision"] == "bf16 autocast"
    bf16_losses = [loss for _, loss in losses(straight)]
    assert all(math.isfinite(loss) for loss in bf16_losses)
    assert bf16_losses != [loss for _, loss in losses(fp32)]  # autocast really ran in bf16
    assert bf16_losses == pytest.approx([loss for _, loss in losses(fp32)], rel=0.05)
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    keep_checkpoints_up_to(resumed, 3)
    run_pretrain(resumed, data_dir, "run.precision=bf16", *settings)
    assert losses(resumed) == losses(straight)


def test_a_data_dir_never_prepared_is_one_line_without_a_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_pretrain(tmp_path / "run", tmp_path / "empty", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and "biomamba prepare" in result.stderr


def test_each_eos_starts_the_next_packed_document():
    from biomamba.train.pretrain import document_ids
    windows = torch.tensor([[5, 6, 0, 7, 0, 0, 8], [0, 1, 2, 3, 4, 5, 6]])
    assert document_ids(windows, eos_id=0).tolist() == [[0, 0, 1, 1, 2, 3, 3], [1, 1, 1, 1, 1, 1, 1]]


@pytest.mark.slow  # a training run
def test_document_resets_train_differently_and_resume_exactly(data_dir, tmp_path):
    # windows of 256 tokens: these steps' windows hold document boundaries (the small data's
    # abstracts average ~770 tokens with its 512-token vocabulary)
    settings = ("train.max_steps=6", "train.save_every=3", "train.keep_last=5", "train.eval_every=6",
                "data.seq_len=256")
    straight = tmp_path / "resets"
    run_pretrain(straight, data_dir, "data.document_resets=true", *settings)
    run_pretrain(tmp_path / "plain", data_dir, "data.document_resets=false", *settings)
    assert losses(straight) != losses(tmp_path / "plain")
    run_pretrain(tmp_path / "default", data_dir, *settings)  # on by default for a state-space model
    assert losses(tmp_path / "default") == losses(straight)
    resolved = yaml.safe_load((tmp_path / "default" / "config.yaml").read_text())["resolved"]
    assert resolved["document_resets"] is True
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    keep_checkpoints_up_to(resumed, 3)
    run_pretrain(resumed, data_dir, "data.document_resets=true", *settings)
    assert losses(resumed) == losses(straight)
