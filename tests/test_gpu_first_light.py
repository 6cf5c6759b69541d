"""bench/gpu_first_light.sh without a GPU: its options, folder layout, step records and summary, and the
random-token data its pretraining steps read (the GPU steps themselves run on a GPU machine only)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_first_light.sh"
STEPS = ["env", "install", "build-ours", "pytest-gpu", "build-mamba_ssm", "pytest-mamba-ssm", "scan-gpu",
         "ssd", "data", "build-causal_conv1d", "pretrain", "resume"]


def summary(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "bench/gpu_summary.py", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, check=True)


def test_dry_run_lays_out_every_step_with_its_command(tmp_path):
    out = tmp_path / "first_light"
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out), "--bundle", str(tmp_path / "b")],
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == STEPS
    assert {r["status"] for r in rows} == {"dry run"}
    assert "pytest" in (out / "logs" / "pytest-gpu.log").read_text()
    assert "gpu_pretrain.py throughput" in (out / "logs" / "pretrain.log").read_text()
    assert json.loads((out / "header.json").read_text())["dry_run"] is True
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["logs.tar.gz", "summary.json", "summary.md"]


def test_bad_options_are_refused_by_name(tmp_path):
    bad_budget = subprocess.run(["bash", str(SCRIPT), "--budget", "soon", "--out", str(tmp_path)],
                                capture_output=True, text=True)
    assert bad_budget.returncode == 2 and "--budget takes whole seconds, got 'soon'" in bad_budget.stderr
    unknown = subprocess.run(["bash", str(SCRIPT), "--gpus", "8"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown option --gpus" in unknown.stderr


def test_summary_counts_each_status_and_shows_each_log_tail(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "scan.log").write_text("\n".join(f"line {i}" for i in range(40)))
    (tmp_path / "logs" / "pretrain.log").write_text("CUDA out of memory\n")
    summary("record", "--out", tmp_path, "--name", "scan", "--rc", 0, "--seconds", 12.34, "--limit", 150)
    summary("record", "--out", tmp_path, "--name", "pytest", "--rc", 139, "--seconds", 19.8, "--limit", 200)
    summary("record", "--out", tmp_path, "--name", "pretrain", "--rc", 124, "--seconds", 59.2, "--limit", 59)
    summary("record", "--out", tmp_path, "--name", "resume", "--rc", 0, "--seconds", 0, "--limit", 150, "--skipped")
    printed = summary("write", "--out", tmp_path).stdout
    assert "1 of 4 steps ok" in printed
    result = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["step"], r["status"]) for r in result["steps"]] == [
        ("scan", "ok"), ("pytest", "failed"), ("pretrain", "timed out"), ("resume", "skipped (out of time)")]
    markdown = (tmp_path / "summary.md").read_text()
    assert "| pytest | failed | 139 | 19.8 | 200 |" in markdown
    assert "line 39" in markdown and "line 14" not in markdown  # the last 25 lines of a log
    assert "CUDA out of memory" in markdown and "(no log)" in markdown  # pytest wrote no log here


def test_random_token_data_reads_as_a_prepared_directory(tmp_path):
    from biomamba.data.shards import TokenShards
    from biomamba.resolve import load_tokenizer

    subprocess.run([sys.executable, "bench/random_tokens_data.py", str(tmp_path / "d"), "--vocab-size", "300",
                    "--train-tokens", "5000", "--val-tokens", "800"], cwd=ROOT, check=True, capture_output=True)
    train, val = TokenShards(tmp_path / "d", "train"), TokenShards(tmp_path / "d", "val")
    tokenizer = load_tokenizer(tmp_path / "d" / "tokenizer")
    assert (len(train), len(val)) == (5000, 800)
    assert len(tokenizer) == 301 and tokenizer.eos_token_id == train.eos_id == 300
    tokens = np.asarray(train.tokens[:])
    assert tokens.max() <= 300 and 3 <= int((tokens == 300).sum()) <= 34  # documents of 150-1500 tokens
    assert tokenizer.decode([5, 7]) == "t5 t7"
