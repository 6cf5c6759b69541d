"""Throughput on a quiet machine and with one competing busy process, per thread setting.

    python bench/loaded.py                  # every setting, both workloads (about 5 minutes on 2 cores)
    python bench/loaded.py --quick          # fewer seconds per measurement
    python bench/loaded.py --workloads generate --settings biomamba --precision int8-dynamic

Two workloads of the demo's shapes (the tiny preset: d_model 256, 4 layers, vocab 8000, both block
types): "eval-ppl", a no-grad forward of (1, 1024) tokens, as eval-ppl scores a window, and
"pretrain", one optimizer step (forward, backward, AdamW) on (8, 256) tokens, as configs/tiny-cpu.yaml
trains; and "generate" at the 130m shape (--generate-preset), as `biomamba generate` decodes: greedy,
batch 1, 64 new tokens after a 16-token prompt, through the compiled step in --precision (fp32, int8,
int8-dynamic, bf16-weights). Each (setting, workload) runs in a fresh child process, because OpenMP reads its settings
once, when it starts: first on the machine as it is ("quiet"), then with one `python -c "while True:
pass"` started by this script beside it ("loaded"). A child runs its workload for --seconds after a
warm-up and reports tokens/s over that time (wall clock: what a user waits for). "kept" = loaded /
quiet; one competitor takes one core of this process's CPUs, so on 2 cores 50% is the fair share.
The load average is printed beside every figure: other processes on a shared machine make "quiet"
less than quiet.

Settings (environment of the child; threads by torch.set_num_threads, as biomamba.threads does):
    torch default      what torch does unconfigured: a thread per core, OpenMP's default wait policy
    passive            OMP_WAIT_POLICY=PASSIVE: a thread that finds no work sleeps at once
    spin 10k           GOMP_SPINCOUNT=10000: spins ~10k iterations, then sleeps
    1 thread           one thread, nothing shared to wait for
    biomamba           what `biomamba <command>` sets (biomamba.threads.configure, no --threads)
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "torch default": ({}, None),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "spin 10k": ({"GOMP_SPINCOUNT": "10000"}, None),
    "1 thread": ({}, 1),
    "biomamba": ({}, "biomamba"),  # import biomamba sets PASSIVE, configure() the threads
}
WORKLOADS = ("eval-ppl", "pretrain", "generate")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measurement")
    p.add_argument("--quick", action="store_true", help="2 s per measurement")
    p.add_argument("--blocks", default="Mamba1,Mamba2")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma list of " + ", ".join(SETTINGS))
    p.add_argument("--workloads", default="eval-ppl,pretrain", help="comma list of " + ", ".join(WORKLOADS))
    p.add_argument("--generate-preset", default="130m", help="the generate workload's model shape")
    p.add_argument("--precision", default="fp32", help="the generate workload's precision (biomamba/decode.py)")
    p.add_argument("--child", nargs=3, metavar=("WORKLOAD", "BLOCK", "THREADS"), help=argparse.SUPPRESS)
    return p.parse_args()


def load_average():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------- child: one measurement

def child(workload, block, threads, seconds, preset="tiny", precision="fp32"):
    if threads == "biomamba":
        from biomamba import threads as biomamba_threads
        count = biomamba_threads.configure(None)
    import torch
    if threads not in ("biomamba", "None"):
        torch.set_num_threads(int(threads))
    from biomamba import BioMambaConfig, BioMambaForCausalLM
    torch.manual_seed(0)
    if workload == "generate":
        model = BioMambaForCausalLM(BioMambaConfig.from_preset(preset, ssm_layer=block))
        ids = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1))
        step, tokens_per_step = generate_step(model, ids, precision), 64
    else:
        model = BioMambaForCausalLM(BioMambaConfig.from_preset("tiny", ssm_layer=block, vocab_size=8000))
        shape = (1, 1024) if workload == "eval-ppl" else (8, 256)
        ids = torch.randint(0, 8000, shape, generator=torch.Generator().manual_seed(1))
        step = eval_step(model, ids) if workload == "eval-ppl" else train_step(model, ids)
        tokens_per_step = ids.numel()
    step()  # warm-up (and the kernels' first build/load)
    start, tokens = time.perf_counter(), 0
    while time.perf_counter() - start < seconds or tokens == 0:
        step()
        tokens += tokens_per_step
    print(json.dumps({"tokens_per_s": tokens / (time.perf_counter() - start), "threads": torch.get_num_threads(),
                      "wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}))


def eval_step(model, ids):
    import torch
    model.eval()

    def step():
        with torch.no_grad():
            model(ids, labels=ids)
    return step


def generate_step(model, ids, precision):
    from biomamba.decode import use_fast_decode
    model = use_fast_decode(model.eval(), precision)

    def step():
        model.generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False)
    return step


def train_step(model, ids):
    import torch
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


# ----------------------------------------------------------------------------- parent: the table

def measure(setting, workload, block, seconds, args):
    env_extra, threads = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(env_extra)
    command = [sys.executable, str(Path(__file__).resolve()), "--seconds", str(seconds),
               "--generate-preset", args.generate_preset, "--precision", args.precision,
               "--child", workload, block, str(threads)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{setting} {workload} {block} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    args = parse_args()
    if args.child:
        return child(*args.child, args.seconds, args.generate_preset, args.precision)
    seconds = 2.0 if args.quick else args.seconds
    print(f"CPUs this process may use: {len(os.sched_getaffinity(0))}; {seconds:g} s per measurement")
    rows = []
    for block in args.blocks.split(","):
        for workload in args.workloads.split(","):
            for setting in args.settings.split(","):
                quiet_load = load_average()
                quiet = measure(setting, workload, block, seconds, args)
                competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                try:
                    time.sleep(0.5)
                    loaded_load = load_average()
                    loaded = measure(setting, workload, block, seconds, args)
                finally:
                    competitor.kill()
                    competitor.wait()
                kept = loaded["tokens_per_s"] / quiet["tokens_per_s"]
                rows.append((block, workload, setting, quiet["threads"], quiet["tokens_per_s"], quiet_load,
                             loaded["tokens_per_s"], loaded_load, kept))
                print(f"{block} {workload} {setting}: quiet {quiet['tokens_per_s']:,.0f} tok/s (load {quiet_load}), "
                      f"loaded {loaded['tokens_per_s']:,.0f} (load {loaded_load}), kept {kept:.0%}", flush=True)
    print("\n| block | workload | setting | threads | quiet tok/s | load | loaded tok/s | load | kept |")
    print("|---|---|---|---|---|---|---|---|---|")
    for block, workload, setting, threads, quiet, ql, loaded, ll, kept in rows:
        print(f"| {block} | {workload} | {setting} | {threads} | {quiet:,.0f} | {ql} | {loaded:,.0f} | {ll} | {kept:.0%} |")


if __name__ == "__main__":
    main()
