"""130m pretraining on a GPU: tokens/s and peak memory against transformers, and exact resume.

    python bench/gpu_pretrain.py throughput --data DIR --out OUT [--steps 200]
    python bench/gpu_pretrain.py resume --data DIR --out OUT

throughput: `biomamba pretrain` (bf16 autocast, batch 16 x 1024, no gradient accumulation) for
--steps steps on DIR (random tokens: bench/random_tokens_data.py), Mamba-1 (130m, our `cuda` scan,
document resets on) and Mamba-2 (mamba2-130m, `auto`: mamba_ssm's Triton scan when it imports),
then transformers' MambaForCausalLM / Mamba2ForCausalLM of the same shapes on the same batches in a
plain AdamW loop (transformers 5 calls mamba_ssm's and causal_conv1d's kernels when they import,
else its torch loops). tokens/s is
the median of the steps after the first 10 (warm-up, compilation); peak memory is
torch.cuda.max_memory_allocated over the run. Writes OUT/throughput.json and prints a table.

resume: a small model (preset tiny, our `cuda` scan) trained 40 steps straight, and the same run
SIGKILLed after step 25 (checkpoints every 10) then rerun to the end; prints the largest
difference between the two runs' losses at each step (0 means bit-identical).
"""
import argparse
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
WARMUP_STEPS = 10


def pretrain_args(data, out, *overrides):
    return ["pretrain", "--config", str(ROOT / "configs/paper-130m.yaml"), "--out", str(out),
            f"data.dir={data}", "train.batch_size=16", "train.grad_accum=1", "data.seq_len=1024",
            "run.precision=bf16", "train.eval_batches=2", "logging.wandb=false", "optim.warmup_steps=5",
            "logging.sample_tokens=4", *overrides]


def steady_tokens_per_s(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if r.get("split") != "val" and r["step"] > WARMUP_STEPS]
    return statistics.median(rates)


def ours(data, out, name, steps, overrides) -> dict:
    from biomamba.cli import main as biomamba

    torch.cuda.reset_peak_memory_stats()
    run_dir = out / name
    code = biomamba(pretrain_args(data, run_dir, f"train.max_steps={steps}", f"train.save_every={steps}",
                                  f"train.eval_every={steps}", *overrides))
    results = json.loads((run_dir / "results.json").read_text())
    return {"run": name, "exit": code, "tokens_per_s": steady_tokens_per_s(run_dir),
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
            "final_loss": results["final"]["loss"], "backends": results["resolved"].get("backends")}


def transformers_model(ssm_layer: str, vocab_size: int):
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    if ssm_layer == "Mamba1":
        return MambaForCausalLM(MambaConfig(vocab_size=vocab_size, hidden_size=768, num_hidden_layers=24,
                                            state_size=16, expand=2, conv_kernel=4,
                                            tie_word_embeddings=True))
    return Mamba2ForCausalLM(Mamba2Config(vocab_size=vocab_size, hidden_size=768, num_hidden_layers=24,
                                          state_size=128, expand=2, head_dim=64, num_heads=24, n_groups=1,
                                          chunk_size=256, conv_kernel=4,
                                          tie_word_embeddings=True))


def transformers_peer(data, name, ssm_layer, steps, seconds) -> dict:
    """transformers' own class of the same shapes, AdamW, bf16 autocast, the same batch size; at most
    `steps` steps or `seconds` (its torch fallback, without mamba_ssm, is a slow sequential loop)."""
    from biomamba.data.shards import TokenShards

    tokens = TokenShards(data, "train").tokens
    vocab = json.loads((Path(data) / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    torch.manual_seed(0)
    model = transformers_model(ssm_layer, vocab).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    torch.cuda.reset_peak_memory_stats()
    rates, losses = [], []
    batch, length = 16, 1024
    deadline = time.perf_counter() + seconds
    for step in range(steps):
        if time.perf_counter() > deadline and step >= 4:
            break
        start = step * batch * length
        ids = torch.from_numpy(tokens[start:start + batch * length].astype("int64")).view(batch, length).cuda()
        torch.cuda.synchronize()
        began = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())  # synchronizes
        rates.append(batch * length / (time.perf_counter() - began))
    warm = min(WARMUP_STEPS, len(rates) // 2)
    return {"run": name, "exit": 0, "tokens_per_s": statistics.median(rates[warm:]),
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "final_loss": losses[-1],
            "backends": {"mamba_ssm kernels": _mamba_ssm_imports()}, "steps": len(rates)}


def _mamba_ssm_imports() -> bool:
    """transformers 5 uses mamba_ssm's and causal_conv1d's functions when they import, else torch loops."""
    try:
        import causal_conv1d  # noqa: F401
        import mamba_ssm  # noqa: F401
        return True
    except Exception:
        return False


def throughput(args):
    runs = [("mamba1-130m ours (cuda scan)", lambda: ours(args.data, args.out, "mamba1_cuda", args.steps,
                                                           ["model.scan_backend=cuda"])),
            ("mamba2-130m ours (auto)", lambda: ours(args.data, args.out, "mamba2_auto", args.steps,
                                                      ["model.ssm_layer=Mamba2", "model.preset=130m"])),
            ("mamba1-130m transformers", lambda: transformers_peer(args.data, "hf_mamba", "Mamba1", args.peer_steps,
                                                                               args.peer_seconds)),
            ("mamba2-130m transformers", lambda: transformers_peer(args.data, "hf_mamba2", "Mamba2", args.peer_steps,
                                                                                args.peer_seconds))]
    rows = []
    for label, run in runs:
        try:
            row = run()
        except Exception as error:  # one failing row (say, out of memory) must not hide the others
            row = {"run": label, "exit": 1, "error": f"{type(error).__name__}: {error}"[:500]}
        gc.collect()  # the failed row's tensors, held by its traceback, go before the next row
        torch.cuda.empty_cache()
        row["label"] = label
        rows.append(row)
        print(json.dumps(row), flush=True)
    (args.out / "throughput.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{'run':32s} {'tokens/s':>10s} {'peak GiB':>9s} {'final loss':>10s}  backends")
    for r in rows:
        if "error" in r:
            print(f"{r['label']:32s} failed: {r['error'][:120]}")
        else:
            print(f"{r['label']:32s} {r['tokens_per_s']:10.0f} {r['peak_memory_gib']:9.2f} "
                  f"{r['final_loss']:10.4f}  {r['backends']}")


def run_to_end(command, cwd):
    """Run a pretraining command; on failure, show why (the end of its stderr) and stop."""
    # Not from the repository root: there `python -m biomamba` would import ./biomamba, the source
    # folder without its train/ and eval/ subpackages (they are mapped in at install; 2026-12-04).
    result = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"gpu_pretrain resume: {' '.join(command[3:6])} exited {result.returncode}:\n"
                         f"{result.stderr[-3000:]}")


def resume(args):
    command = [sys.executable, "-m", "biomamba", *pretrain_args(
        args.data, "RUN", "model.preset=tiny", "model.scan_backend=cuda", "train.max_steps=40",
        "train.save_every=10", "train.keep_last=10", "train.eval_every=40", "data.seq_len=512",
        "train.batch_size=8")]
    straight, killed = args.out / "resume_straight", args.out / "resume_killed"

    def for_run(run_dir):
        return [str(run_dir) if part == "RUN" else part for part in command]

    run_to_end(for_run(straight), args.out)
    process = subprocess.Popen(for_run(killed), cwd=args.out, stdout=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"
    while process.poll() is None:
        if metrics.is_file() and sum(1 for _ in metrics.open()) >= 25:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    was_killed = process.returncode == -signal.SIGKILL
    run_to_end(for_run(killed), args.out)

    def train_losses(run_dir):
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if r.get("split") != "val"}

    a, b = train_losses(straight), train_losses(killed)
    diff = max(abs(a[s] - b[s]) for s in a)
    result = {"killed": was_killed, "steps": len(a), "max_abs_loss_difference": diff,
              "final_loss_straight": a[max(a)], "final_loss_resumed": b[max(b)]}
    (args.out / "resume.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("throughput", "resume"))
    parser.add_argument("--data", required=True, type=Path, help="a prepared dir (bench/random_tokens_data.py)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=200, help="our pretraining steps per run")
    parser.add_argument("--peer-steps", type=int, default=40, help="transformers' steps per run (at most)")
    parser.add_argument("--peer-seconds", type=float, default=40, help="transformers' time per run (at most)")
    args = parser.parse_args(argv)
    args.data, args.out = args.data.resolve(), args.out.resolve()  # the resume runs start elsewhere
    args.out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_pretrain: needs a CUDA device")
    throughput(args) if args.mode == "throughput" else resume(args)


if __name__ == "__main__":
    main()
