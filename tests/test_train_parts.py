"""Pure parts of the training stack: config validation, schedules, window batches, checkpointer."""
import numpy as np
import pytest
import torch

from biomamba.train.checkpointer import MARKER, Checkpointer
from biomamba.train.config import ConfigError, OptimConfig, load_config
from biomamba.train.schedule import lr_factor
from biomamba.train.windows import WindowBatches
from tests.model_helpers import tiny_model


def test_config_file_and_overrides_merge(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  max_steps: 40\nlogging:\n  tags: [a]\n")
    cfg = load_config(path, ["train.save_every=5", "optim.lr=1e-3", "logging.wandb=false", "seed=3",
                             "logging.tags=[x, y]"])
    assert cfg.train.max_steps == 40 and cfg.train.save_every == 5 and cfg.optim.lr == 1e-3
    assert cfg.logging.wandb is False and cfg.seed == 3 and cfg.logging.tags == ["x", "y"]


def test_config_reports_every_problem_at_once(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  max_stepz: 10\n  batch_size: eight\nmodel:\n  arch: rnn\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, ["optim.warmup_steps=500"])
    message = str(error.value)
    assert "unknown key train.max_stepz" in message
    assert "train.batch_size: expected int, got 'eight'" in message
    assert "model.arch must be one of mamba, transformer" in message
    assert "optim.warmup_steps (500) must be < train.max_steps (100)" in message
    assert str(path) in message


def test_override_syntax_error_is_clear():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.max_steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nope.yaml")


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_schedules_warm_up_then_end_at_their_floor(schedule):
    optim = OptimConfig(warmup_steps=10, schedule=schedule, min_lr_ratio=0.1, decay_fraction=0.2)
    factors = [lr_factor(i, optim, 100) for i in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:9], factors[1:10]))
    if schedule == "constant":
        assert factors[-1] == 1.0
    else:
        assert factors[-1] == pytest.approx(0.1, abs=0.02)
        assert all(a >= b - 1e-12 for a, b in zip(factors[10:], factors[11:]))
    if schedule == "wsd":
        assert factors[79] == 1.0 and factors[81] < 1.0


def test_windows_depend_only_on_seed_and_step_and_cover_each_epoch():
    tokens = np.arange(10 * 8)  # 10 windows of 8 tokens
    a = WindowBatches(tokens, 8, micro_batch=2, seed=1)
    b = WindowBatches(tokens, 8, micro_batch=2, seed=1)
    assert torch.equal(a.for_step(4)[0], b.for_step(4)[0])
    firsts = sorted(int(w[0]) for s in range(1, 6) for batch in a.for_step(s) for w in batch)
    assert firsts == list(range(0, 80, 8))  # one epoch = every window once
    assert not torch.equal(WindowBatches(tokens, 8, 2, seed=2).for_step(1)[0], a.for_step(1)[0])


def test_ranks_split_the_same_global_batch():
    tokens = np.arange(64 * 4)
    single = WindowBatches(tokens, 4, micro_batch=4, seed=0).for_step(3)[0]
    ranks = [WindowBatches(tokens, 4, micro_batch=2, world_size=2, rank=r, seed=0).for_step(3)[0] for r in (0, 1)]
    assert torch.equal(torch.cat(ranks), single)
    accum = WindowBatches(tokens, 4, micro_batch=2, grad_accum=2, seed=0).for_step(3)
    assert torch.equal(torch.cat(accum), single)


def test_checkpointer_ignores_incomplete_and_keeps_last_k(tmp_path):
    ckpt = Checkpointer(tmp_path, keep_last=2)
    model = tiny_model()
    for step in (10, 20, 30):
        ckpt.save(step, model, {"x": step})
    assert [p.name for p in ckpt.complete()] == ["step_0000020", "step_0000030"]
    # A half-written checkpoint (killed before the marker) is never taken for a complete one.
    partial = tmp_path / "checkpoints" / "step_0000040"
    (partial / "model").mkdir(parents=True)
    assert ckpt.latest().name == "step_0000030"
    assert ckpt.load(ckpt.latest())["x"] == 30 and (ckpt.latest() / MARKER).is_file()


def test_a_section_keeps_its_schemas_defaults_for_keys_a_file_does_not_name(tmp_path):
    """retrieval's optim defaults (lr 1e-4) hold when a YAML optim section sets only warmup."""
    from biomamba.train.retrieval_train import RetrievalRunConfig, check_config
    path = tmp_path / "ret.yaml"
    path.write_text("model:\n  preset: debug\noptim:\n  warmup_steps: 3\n")
    cfg = load_config(path, ["data.dir=x"], schema=RetrievalRunConfig, check=check_config)
    assert cfg.optim.lr == 1e-4 and cfg.optim.warmup_steps == 3 and cfg.optim.weight_decay == 0.01


def test_choices_and_bounds_are_declared_once_on_the_field_and_checked_everywhere():
    from biomamba.train.finetune_config import FinetuneConfig, check_finetune
    with pytest.raises(ConfigError) as error:
        load_config(None, ["train.grad_accum=0", "model.pooling=max", "data.max_length=2"],
                    schema=FinetuneConfig, check=check_finetune)
    message = str(error.value)
    assert "train.grad_accum must be >= 1, got 0" in message
    assert "model.pooling must be one of last, mean; got 'max'" in message
    assert "data.max_length must be >= 4, got 2" in message


def test_trainer_state_holds_only_tensors_and_plain_data(tmp_path):
    """trainer.pt loads with weights_only=True and restores every RNG exactly."""
    import random
    ckpt = Checkpointer(tmp_path)
    path = ckpt.save(1, tiny_model(), {"items_seen": 5})
    state = torch.load(path / "trainer.pt", weights_only=True)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    from biomamba.train.checkpointer import set_rng_state
    set_rng_state(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_checkpoint_that_needs_unpickling_is_refused_naming_the_file(tmp_path):
    from biomamba.checkpoints import CheckpointError
    ckpt = Checkpointer(tmp_path)
    path = ckpt.save(1, tiny_model(), {})
    torch.save({"optimizer": np.zeros(3)}, path / "trainer.pt")  # a pickled numpy array: arbitrary code
    with pytest.raises(CheckpointError, match=r"trainer\.pt: refused to load"):
        ckpt.load(path)


def test_checkpoint_files_reach_the_disk_before_the_complete_marker(tmp_path, monkeypatch):
    from biomamba.train import checkpointer
    flushed = []

    def record(directory):
        flushed.append((sorted(p.name for p in directory.rglob("*") if p.is_file()), (directory / MARKER).exists()))

    monkeypatch.setattr(checkpointer, "fsync_tree", record)
    Checkpointer(tmp_path).save(1, tiny_model(), {})
    files, marker_present = flushed[0]
    assert {"trainer.pt", "model.safetensors", "config.json"} <= set(files) and not marker_present


def test_auto_chooses_only_backends_a_test_on_that_device_has_shown(monkeypatch):
    """On CUDA: mamba_ssm if it imports, else our CUDA kernel (its scan tests passed on an H200,
    2026-12-04), else torch; with seq_idx mamba_ssm (no document resets) is skipped."""
    from biomamba import ops
    available = {"mamba_ssm": True, "cuda": True, "torch": True}
    monkeypatch.setattr(ops, "_is_available", lambda name: available.get(name, False))
    cuda = torch.device("cuda")
    assert ops.resolve_backend("auto", cuda) == "mamba_ssm"
    with pytest.warns(UserWarning, match="'mamba_ssm' cannot honour seq_idx, using 'cuda'"):
        assert ops.resolve_backend("auto", cuda, seq_idx=True) == "cuda"
    available["mamba_ssm"] = False
    with pytest.warns(UserWarning, match="'mamba_ssm' unavailable, using 'cuda'"):
        assert ops.resolve_backend("auto", cuda) == "cuda"
    available["cuda"] = False
    with pytest.warns(UserWarning, match="'mamba_ssm' unavailable, using 'torch'"):
        assert ops.resolve_backend("auto", cuda) == "torch"
    assert ops.resolve_backend("cpu", torch.device("cpu")) == "cpu"  # by name, as asked


def test_document_resets_are_on_by_default_for_the_state_space_models_only():
    from biomamba.train.config import ConfigError, document_resets
    assert [document_resets(load_config(None, ["model.arch=mamba", f"model.ssm_layer={layer}"]))
            for layer in ("Mamba1", "Mamba2")] == [True, True]
    assert [document_resets(load_config(None, [f"model.arch={arch}"])) for arch in ("transformer", "bert")] == [False, False]
    assert document_resets(load_config(None, ["data.document_resets=false"])) is False
    with pytest.raises(ConfigError, match="data.document_resets .*model.arch=transformer"):
        load_config(None, ["model.arch=transformer", "data.document_resets=true"])
