"""Faults a shared cluster produces, injected one at a time, through the CLI as a user types it.

Each checks the promise: nothing lost (what was complete stays complete, a rerun finishes the job), one
line on stderr naming what is wrong, no traceback. The faults: a second writer of an output directory,
a flipped byte in a shard, truncated or corrupt model files, a missing dataset column, a full disk
(a real tmpfs when the tests run as root, else a failing write patched in), SIGKILL while a checkpoint
is being written. Tests that train are marked slow.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from biomamba import locking
from biomamba.data.errors import DataError
from biomamba.data.verify import verify_prepared, verify_shards
from tests.conftest import first_fast
from tests.pretrain_helpers import ROOT, losses, pretrain_command, run_pretrain


def biomamba(*args, check_rc=None):
    """`python -m biomamba ARGS` as a user runs it; returns (returncode, stdout, stderr)."""
    result = subprocess.run([sys.executable, "-m", "biomamba", *map(str, args)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    if check_rc is not None:
        assert result.returncode == check_rc, result.stderr[-3000:]
    return result.returncode, result.stdout, result.stderr


def one_line_error(stderr: str) -> str:
    """The command's error: exactly one `error:` line and no traceback (warnings and bars aside)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def copy_of(data_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


def first_train_shard(data: Path) -> Path:
    manifest = json.loads((data / "manifest.json").read_text())
    return data / next(e["file"] for e in manifest["shards"] if e["split"] == "train")


# --------------------------------------------------------------------------- one owner per directory

def _second_writer_commands(data_dir, out):
    return {
        "pretrain": ["pretrain", "--out", out, f"data.dir={data_dir}", "model.preset=debug", "logging.wandb=false"],
        "prepare": ["prepare", "--out", out, "--vocab-size", "300"],
        "finetune": ["finetune", "--task", "sentence-roles", "--model", out.parent / "no-model", "--out", out,
                     f"data.dir={data_dir}", "logging.wandb=false"],
        "retrieval train": ["retrieval", "train", "--out", out, f"data.dir={data_dir}", "model.preset=debug",
                            "logging.wandb=false"],
        "retrieval index": ["retrieval", "index", "--model", out.parent / "no-model", "--corpus", data_dir,
                            "--out", out],
    }


@pytest.mark.parametrize("command", first_fast("pretrain", "prepare", "finetune", "retrieval train",
                                                "retrieval index"))
def test_a_second_writer_exits_at_once_naming_the_directory_and_pid(data_dir, tmp_path, command):
    out = tmp_path / "out"
    with locking.hold(out):  # the first writer: this test process, until the second has returned (never waited)
        rc, _, stderr = biomamba(*_second_writer_commands(data_dir, out)[command])
    line = one_line_error(stderr)
    assert rc == 1 and str(out) in line and f"PID {os.getpid()}" in line
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # it wrote nothing


def test_the_lock_dies_with_a_killed_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from biomamba import locking; "
                               "locking.acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)",
                               str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(locking.DirectoryInUse, match=f"PID {holder.pid}"):
        locking.acquire(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with locking.hold(tmp_path):  # no stale lock: the kernel released it with the process
        pass


def test_the_index_keeps_its_lock_across_the_swap_to_the_new_index(tmp_path):
    import numpy as np

    from biomamba.retrievers import IndexWriter

    out = tmp_path / "index"
    with locking.hold(out) as held:
        with IndexWriter(out, {}, lock=held) as writer:
            writer.add(["a", "b"], ["A", "B"], np.ones((2, 4), dtype=np.float32))
        assert (out / "meta.json").is_file()
        with pytest.raises(locking.DirectoryInUse):
            locking.acquire(out)
    locking.acquire(out).release()


# --------------------------------------------------------------------------- verified shards

def test_prepared_data_verifies(data_dir):
    rc, stdout, _ = biomamba("prepare", "--verify", data_dir, check_rc=0)
    assert "verified" in stdout and "shard files" in stdout


def test_a_flipped_shard_byte_is_named_before_the_first_step(data_dir, tmp_path):
    data = copy_of(data_dir, tmp_path)
    shard = first_train_shard(data)
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    shard.write_bytes(bytes(raw))

    rc, _, stderr = biomamba("prepare", "--verify", data)
    assert rc == 1 and str(shard) in one_line_error(stderr) and "sha256" in stderr

    run = tmp_path / "run"
    result = run_pretrain(run, data, "train.max_steps=3", "optim.warmup_steps=1", check=False)
    line = one_line_error(result.stderr)
    assert result.returncode == 1 and str(shard) in line
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()  # no step was taken


def test_a_truncated_shard_and_ids_outside_the_vocabulary_are_named(data_dir, tmp_path):
    data = copy_of(data_dir, tmp_path)
    with pytest.raises(DataError, match="outside the tokenizer's vocabulary of 10"):
        verify_shards(data, vocab_size=10)
    shard = first_train_shard(data)
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 2)
    with pytest.raises(DataError, match=f"{shard}: .*truncated"):
        verify_shards(data)


def test_a_manifest_without_checksums_is_not_passed_silently(data_dir, tmp_path):
    data = copy_of(data_dir, tmp_path)
    manifest = json.loads((data / "manifest.json").read_text())
    for entry in manifest["shards"]:
        del entry["sha256"]
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert len(verify_shards(data)["unverified"]) == len(manifest["shards"])
    with pytest.raises(DataError, match="records no checksum"):
        verify_prepared(data)


# --------------------------------------------------------------------------- model files

@pytest.fixture(scope="module")
def model_dir(data_dir, tmp_path_factory):
    """A small BioMamba model directory with the prepared data's tokenizer."""
    from biomamba import BioMambaConfig, BioMambaForCausalLM

    out = tmp_path_factory.mktemp("model") / "model"
    BioMambaForCausalLM(BioMambaConfig.from_preset("debug")).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (data_dir / "tokenizer" / name).is_file():
            shutil.copy(data_dir / "tokenizer" / name, out / name)
    return out


def _damaged(model_dir, tmp_path, name, keep_bytes):
    damaged = tmp_path / "damaged"
    shutil.copytree(model_dir, damaged)
    with open(damaged / name, "r+b") as f:
        f.truncate(keep_bytes)
    return damaged


def _model_commands(model, data_dir, tmp_path):
    return {
        "eval-ppl": ["eval-ppl", "--model", model, "--data", data_dir, "--out", tmp_path / "ppl.json"],
        "generate": ["generate", "--model", model, "--prompt", "the patients"],
        "export": ["export", "--model", model, "--to", "transformers", "--out", tmp_path / "exported"],
        "retrieval index": ["retrieval", "index", "--model", model, "--corpus", data_dir, "--out", tmp_path / "index"],
        "pretrain init_from": pretrain_command(tmp_path / "run", data_dir, f"model.init_from={model}")[3:],
    }


@pytest.mark.parametrize("command", first_fast("eval-ppl", "generate", "export", "retrieval index",
                                                "pretrain init_from"))
def test_truncated_weights_are_one_line_naming_the_file(model_dir, data_dir, tmp_path, command):
    damaged = _damaged(model_dir, tmp_path, "model.safetensors", (model_dir / "model.safetensors").stat().st_size // 2)
    rc, _, stderr = biomamba(*_model_commands(damaged, data_dir, tmp_path)[command])
    line = one_line_error(stderr)
    assert rc == 1 and str(damaged / "model.safetensors") in line and "truncated" in line


@pytest.mark.parametrize("name,keep_bytes,says", first_fast(("model.safetensors", 5, "too short"),
                                                            ("tokenizer.json", 200, "invalid JSON"),
                                                            ("config.json", 40, "invalid JSON")))
def test_corrupt_model_files_are_one_line_naming_the_file(model_dir, data_dir, tmp_path, name, keep_bytes, says):
    damaged = _damaged(model_dir, tmp_path, name, keep_bytes)
    rc, _, stderr = biomamba(*_model_commands(damaged, data_dir, tmp_path)["generate"])
    line = one_line_error(stderr)
    assert rc == 1 and str(damaged / name) in line and says in line


# --------------------------------------------------------------------------- missing columns

def test_a_missing_column_is_refused_naming_it_and_the_columns(tmp_path):
    data = tmp_path / "rows.jsonl"
    rows = [{"pmid": str(i), "title": f"Title {i}", "abstract_text": "An abstract." if i % 2 else ""} for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, _, stderr = biomamba("prepare", "--hf", data, "--out", tmp_path / "out", "--vocab-size", "300")
    line = one_line_error(stderr)
    assert rc == 1 and "'abstract'" in line and "pmid, title, abstract_text" in line
    assert not (tmp_path / "out" / "manifest.json").exists()
    # the right mapping: empty values in a present column are allowed and counted
    biomamba("prepare", "--hf", data, "--out", tmp_path / "out", "--vocab-size", "300",
             "--hf-fields", "abstract=abstract_text", check_rc=0)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["documents"] == 6 and manifest["with_abstract"] == 3


# --------------------------------------------------------------------------- full disk

def test_a_full_disk_during_a_checkpoint_names_it_and_the_safe_checkpoint(tmp_path, monkeypatch):
    import torch

    from biomamba import BioMambaConfig, BioMambaForCausalLM
    from biomamba.io import WriteFailed
    from biomamba.train.checkpointer import Checkpointer

    model = BioMambaForCausalLM(BioMambaConfig.from_preset("debug"))
    checkpointer = Checkpointer(tmp_path, keep_last=5)
    safe = checkpointer.save(2, model, {"optimizer": {}})
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(WriteFailed) as failure:
        checkpointer.save(4, model, {"optimizer": {}})
    message = str(failure.value)
    assert "\n" not in message and "step_0000004" in message and "ENOSPC" in message and str(safe) in message
    assert checkpointer.latest() == safe and not list(checkpointer.root.glob("*.tmp"))
    monkeypatch.setattr(torch, "save", real_save)
    assert checkpointer.latest_step() == 2 and checkpointer.load(safe)["step"] == 2


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 700 KiB tmpfs (root only): room for one checkpoint of pretrain_command's debug model on the
    small data (~490 KiB), not for a second beside it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; test_a_full_disk_during_a_checkpoint_... patches the write instead")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_during_pretraining_keeps_the_last_checkpoint_and_resumes(data_dir, small_tmpfs):
    run = small_tmpfs / "run"
    args = ("train.max_steps=8", "train.save_every=2", "train.keep_last=1", "train.eval_every=8",
            "optim.warmup_steps=1")
    result = run_pretrain(run, data_dir, *args, check=False)
    line = one_line_error(result.stderr)
    assert result.returncode == 1 and "No space left on device (ENOSPC)" in line, line
    complete = sorted(p.name for p in (run / "checkpoints").glob("step_*") if (p / "COMPLETE").is_file())
    assert complete and complete[-1] in line  # the message names the checkpoint that is safe
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    resumed = run_pretrain(run, data_dir, *args)
    assert f"resuming after step {int(complete[-1].split('_')[1])}" in resumed.stdout + resumed.stderr
    assert losses(run)[-1][0] == 8 and not list((run / "checkpoints").glob("*.tmp"))


# --------------------------------------------------------------------------- SIGKILL while checkpointing

@pytest.mark.slow
def test_sigkill_while_a_checkpoint_is_written_then_rerun_ends_like_an_unbroken_run(data_dir, tmp_path):
    args = ("train.max_steps=8", "train.save_every=2", "train.keep_last=5", "train.eval_every=8",
            "optim.warmup_steps=1")
    straight = tmp_path / "straight"
    run_pretrain(straight, data_dir, *args)
    run = tmp_path / "killed"
    process = subprocess.Popen(pretrain_command(run, data_dir, *args), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    killed = False
    while process.poll() is None and not killed:
        if list((run / "checkpoints").glob("step_0000004.tmp")):  # the second checkpoint is being written
            process.send_signal(signal.SIGKILL)
            killed = True
        time.sleep(0.002)
    process.wait()
    assert killed, "the run finished before it could be killed"
    for checkpoint in (run / "checkpoints").glob("step_*"):  # nothing partial looks complete
        assert checkpoint.name.endswith(".tmp") or (checkpoint / "COMPLETE").is_file()
    run_pretrain(run, data_dir, *args)  # the dead process's lock does not block this
    assert losses(run)[-1] == losses(straight)[-1]
    assert not list((run / "checkpoints").glob("*.tmp"))


# --------------------------------------------------------------------------- overrides around flags

def test_overrides_before_and_after_flags_all_apply(tmp_path):
    rc, _, stderr = biomamba("pretrain", "--config", ROOT / "configs" / "tiny-cpu.yaml", "train.max_steps=abc",
                             "--out", tmp_path / "run", "optim.lr=xyz")
    assert rc == 1 and "Traceback" not in stderr
    assert "train.max_steps" in stderr and "optim.lr" in stderr  # both reached the config (2 problems)
