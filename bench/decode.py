"""Decoding throughput on CPU: our generate against transformers' MambaForCausalLM.generate
(Mamba2ForCausalLM for the Mamba-2 blocks) on the same weights, and against our own generate as it
was at a git ref (`--before`, default main; only for presets that ref has).

Greedy decoding of --new-tokens (64) tokens after a --prompt-len (16) token prompt; EOS never stops
a row, so every row makes all of them. tokens/s = batch x new tokens / seconds of the fastest of
--repeats calls, after one warm-up call each (and of their median; against llama.cpp, the median over the
rounds of each round's ratio to llama.cpp's type of the same bits). The three run in turns (one call of each per round),
so a change in the machine's load hits all three alike. Random weights in a preset's shape (130m:
d_model 768, 24 layers, vocab 50280; tiny: 256, 4, 8000; with --blocks Mamba2, 130m: 768, 24, 50288,
d_state 128; tiny: 256, 4, 8000, d_state 64). Our prompt pass uses the "torch" scan
backend in both versions (the compiled CPU kernel would be rebuilt for the old tree; decoding
steps never use the scan). The old version runs in a subprocess that imports biomamba from
`git archive REF` and times one call per request. One thread by default: on a shared 2-core box,
two OpenMP threads wait for each other whenever another process holds a core.

Ours runs in fp32 and, with --precisions, in the rounded formats (`int8`, `int8-dynamic`, `bf16-weights`;
biomamba/decode.py), each a copy of the same weights prepared by use_fast_decode (the step's weights in huge
pages where Linux allows them: biomamba/huge_pages.py, bench/huge_pages.py), in this process with the OpenMP
wait policy that `import biomamba` sets (PASSIVE, biomamba/threads.py), as `biomamba generate` runs. The peers
run each in its own child process with the environment the user started this script with, as their users run
them: transformers (AutoModelForCausalLM on the same weights saved in its layout) and the anchor users pick
for CPU inference, llama.cpp (--llama f32,f16,q8_0): that directory converted by llama.cpp's own
convert_hf_to_gguf.py (--converter; the llama-cpp-python source distribution ships it under vendor/llama.cpp,
which must be whole: the converter imports its conversion/ and gguf-py/), decoded through llama-cpp-python
(`llama_cpp`) with its defaults (the GGUF file mapped: 4 KB pages of the page cache), one token per
llama_decode, argmax in numpy, --threads threads; absent either, its columns are skipped with the reason.
"roofline": the fp32 weights' bytes / the read bandwidth (a sum over a tensor of those bytes) bounds batch-1
fp32 decoding; each rate is printed as a % of it. Greedy agreement: the tokens of transformers and of
llama.cpp f32 against ours fp32, first prompt row.
With llama.cpp, a second table times the prompt pass alone (the time to the first token: one row of
--prompt-len tokens from empty states to the last position's logits, fastest of --repeats in turns), ours in
each precision against llama.cpp's type of the same bits (fp32 / f32, bf16-weights / f16, int8 and
int8-dynamic / q8_0).

    python bench/decode.py
    python bench/decode.py --presets tiny --blocks Mamba2 --batches 1 --before HEAD~2
    python bench/decode.py --presets 130m --blocks Mamba1,Mamba2 --batches 1 --before '' --threads 2 \
        --converter /path/to/llama.cpp/convert_hf_to_gguf.py
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# The peers run in child processes with the environment as the user gave it: `import biomamba` sets
# OMP_WAIT_POLICY=PASSIVE (biomamba/threads.py), which would also put llama.cpp's and transformers' OpenMP
# threads to sleep between parallel regions, as their users' processes do not.
USER_ENV = dict(os.environ)
import biomamba  # noqa: E402,F401  before torch: OpenMP's wait policy as `biomamba generate` runs it
import torch  # noqa: E402

from biomamba.bench_cli import fastest_in_turns, report_table, seconds, times_in_turns

REPO = Path(__file__).resolve().parent.parent


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="130m,tiny", help="comma list of preset sizes")
    p.add_argument("--blocks", default="Mamba1,Mamba2", help="comma list of block types (config.ssm_layer)")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per measurement (the fastest is kept)")
    p.add_argument("--before", default="main", help="git ref of the old generate ('' skips it)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precisions", default="int8,int8-dynamic,bf16-weights",
                   help="rounded formats of ours timed beside fp32 ('' for none)")
    p.add_argument("--llama", default="f32,f16,q8_0", help="llama.cpp GGUF types to time ('' for none)")
    p.add_argument("--converter", default=os.environ.get("LLAMA_CPP_CONVERTER", ""),
                   help="llama.cpp's convert_hf_to_gguf.py (default $LLAMA_CPP_CONVERTER)")
    return p.parse_args()


# The old version: load the saved model with that tree's biomamba and serve greedy generate like a peer
# (PEER_SCRIPT's protocol below).
BEFORE_SCRIPT = """
import json, sys, time, torch
source, model_dir, new_tokens, threads = sys.argv[1:]
sys.path.insert(0, source)
import biomamba
assert biomamba.__file__.startswith(source), biomamba.__file__
torch.set_num_threads(int(threads))
model = biomamba.BioMambaForCausalLM.from_pretrained(model_dir, scan_backend="torch").eval()
print("ready", flush=True)
for line in sys.stdin:
    ids = torch.tensor(json.loads(line))
    start = time.perf_counter()
    out = model.generate(ids, max_new_tokens=int(new_tokens), eos_token_id=None)
    elapsed = time.perf_counter() - start
    assert out.shape == (ids.shape[0], ids.shape[1] + int(new_tokens)), out.shape
    print(json.dumps({"seconds": elapsed, "tokens": out[:, ids.shape[1]:].tolist()}), flush=True)
"""


def old_tree(ref, into: Path) -> Path:
    """biomamba/ and kernels/ of git ref `ref`, unpacked under `into`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "biomamba", "kernels"],
                             check=True, capture_output=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def models(preset, block, directory: Path):
    """Ours, saved to `directory` (for the old version), and transformers' Mamba / Mamba2 on the same
    random weights, saved to `directory`/hf (for the transformers process and llama.cpp's converter)."""
    import transformers

    from biomamba import BioMambaConfig, BioMambaForCausalLM
    from biomamba.checkpoints import HF_CLASSES, hf_config_fields, map_keys
    from biomamba.decode import use_fast_decode

    torch.manual_seed(0)
    ours = BioMambaForCausalLM(BioMambaConfig.from_preset(preset, ssm_layer=block, scan_backend="torch")).eval()
    ours.save_pretrained(directory)
    use_fast_decode(ours)  # as `biomamba generate` prepares it: the step's weights in huge pages
    config_class, model_class = (getattr(transformers, name) for name in HF_CLASSES[ours.config.ssm_layer])
    theirs = model_class(config_class(**hf_config_fields(ours.config))).eval()
    theirs.load_state_dict(map_keys(ours.state_dict(), "hf", to_ours=False))
    theirs.save_pretrained(directory / "hf")
    return ours, directory / "hf"


def has_block(source: Path, block: str) -> bool:
    """Whether the old tree's biomamba knows the block type (older refs predate Mamba-2)."""
    return block == "Mamba1" or (source / "biomamba" / "mamba2.py").is_file()


def rounded_copies(ours, precisions):
    """{precision: a copy of `ours` rounded to that format}."""
    from biomamba import BioMambaForCausalLM
    from biomamba.decode import use_fast_decode

    copies = {}
    for precision in precisions:
        copy = BioMambaForCausalLM(ours.config).eval()
        copy.load_state_dict(ours.state_dict())
        copies[precision] = use_fast_decode(copy, precision)
    return copies


def roofline_tokens_per_s(model, threads):
    """Batch-1 tokens/s if each step only read the fp32 weights once at this machine's read bandwidth."""
    nbytes = sum(p.numel() * 4 for p in model.parameters())  # the tied embedding / LM head once
    block = torch.ones(nbytes // 4)
    block.sum()
    best = min(seconds(block.sum) for _ in range(5))
    return 1 / best


def llama_cpp_missing(args) -> str:
    """Why llama.cpp cannot be timed here ('' when it can)."""
    if not args.llama:
        return "not asked for"
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "llama-cpp-python is not installed (pip install llama-cpp-python: it builds llama.cpp)"
    if not args.converter or not Path(args.converter).is_file():
        return "no converter: pass --converter PATH/convert_hf_to_gguf.py (llama.cpp's sources)"
    return ""


def gguf_files(hf_dir, types, converter, directory: Path) -> dict:
    """{type: GGUF path}: transformers' layout of the weights, converted by llama.cpp's own converter."""
    env = dict(os.environ, PYTHONPATH=str(Path(converter).parent / "gguf-py"))
    files = {}
    for kind in types:
        files[kind] = directory / f"model-{kind}.gguf"
        done = subprocess.run([sys.executable, converter, str(hf_dir), "--outtype", kind, "--outfile",
                               str(files[kind])], capture_output=True, text=True, env=env)
        if done.returncode:  # the converter needs its whole llama.cpp tree (gguf-py/, conversion/) beside it
            raise RuntimeError(f"{converter} --outtype {kind} failed:\n{done.stderr[-2000:]}")
    return files


# A peer decoder in its own process: "transformers" (AutoModelForCausalLM on an HF directory) or
# "llama.cpp" (a GGUF file through llama-cpp-python: one llama_decode per token, argmax in numpy). Each
# stdin line is a JSON list of prompt rows; the reply is {"seconds": of the greedy decoding, "tokens": the new
# tokens per row}.
PEER_SCRIPT = """
import json, sys, time
kind, path, new_tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if kind == "transformers":
    import torch, transformers
    torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()

    def prompt_pass(rows):
        with torch.no_grad():
            model(torch.tensor(rows), use_cache=True)

    def greedy(rows):
        ids = torch.tensor(rows)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[:, ids.shape[1]:].tolist()
else:
    import numpy as np
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=256, n_batch=256, verbose=False)

    def last_logits():  # without logits_all, llama-cpp-python 0.3 leaves Llama.scores unfilled (zeros)
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))

    def prompt_pass(rows):
        llm.reset()
        llm.eval(rows[0])

    def greedy(rows):
        assert len(rows) == 1, "this loop decodes one sequence"
        llm.reset()  # for a recurrent model this clears its states too (llama_memory_clear)
        llm.eval(rows[0])
        tokens = []
        for i in range(new_tokens):
            tokens.append(int(np.argmax(last_logits())))
            if i + 1 < new_tokens:
                llm.eval(tokens[-1:])
        return [tokens]
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    start = time.perf_counter()
    if isinstance(request, dict):  # {"prompt": rows}: the prompt pass alone, its last position's logits
        prompt_pass(request["prompt"])
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
        continue
    tokens = greedy(request)
    print(json.dumps({"seconds": time.perf_counter() - start, "tokens": tokens}), flush=True)
"""


class Peer:
    """A decoder in a child process with the user's own environment (USER_ENV), speaking PEER_SCRIPT's protocol."""

    def __init__(self, name, script, argv, cwd=None):
        self.name = name
        self.errors = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty child never blocks on it
        self.process = subprocess.Popen([sys.executable, "-c", script, *map(str, argv)], cwd=cwd, env=USER_ENV,
                                        text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors)
        self._reply()  # "ready": the model is loaded

    @classmethod
    def of_kind(cls, kind, path, args):
        """transformers or llama.cpp on `path` (PEER_SCRIPT)."""
        return cls(kind, PEER_SCRIPT, [kind, path, args.new_tokens, args.threads])

    @classmethod
    def before(cls, source, model_dir, args):
        """Our generate as it was at `source` (a git archive) on the saved model (BEFORE_SCRIPT)."""
        return cls("biomamba before", BEFORE_SCRIPT, [source, model_dir, args.new_tokens, args.threads], cwd=source)

    def _reply(self):
        line = self.process.stdout.readline()
        if not line:
            self.errors.seek(0)
            code = self.process.wait()
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            if code == -signal.SIGILL:  # seen with a llama.cpp built with GGML_NATIVE=ON on a Xeon VM (AMX)
                how += ("; an instruction this machine does not run: rebuild llama-cpp-python with "
                        "-DGGML_NATIVE=OFF and the instruction sets named, AMX off (bench/RESULTS.md)")
            raise RuntimeError(f"the {self.name} process died ({how}):\n{self.errors.read()[-2000:]}")
        return line

    def prompt_pass(self, ids):
        """Seconds of the prompt pass over the rows `ids` alone (from empty states, logits out)."""
        self.process.stdin.write(json.dumps({"prompt": ids.tolist()}) + "\n")
        self.process.stdin.flush()
        return json.loads(self._reply())["seconds"]

    def greedy(self, ids):
        """(seconds, new tokens per row) of one greedy decoding of the prompt rows `ids`."""
        self.process.stdin.write(json.dumps(ids.tolist()) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self._reply())
        return reply["seconds"], reply["tokens"]

    def close(self):
        self.process.stdin.close()
        self.process.wait()
        self.errors.close()


def timers_for(ours, copies, peers, old, ids, args):
    batch = ids.shape[0]
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                  min_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    timers = {"transformers": lambda: peers["transformers"].greedy(ids)[0],
              "ours fp32": lambda: seconds(lambda: ours.generate(ids, **kwargs))}
    for precision, model in copies.items():
        timers[f"ours {precision}"] = lambda model=model: seconds(lambda: model.generate(ids, **kwargs))
    if batch == 1:  # llama.cpp's loop here decodes one sequence
        for name, peer in peers.items():
            if name != "transformers":
                timers[name] = lambda peer=peer: peer.greedy(ids)[0]
    if old is not None:
        timers["biomamba before"] = lambda: old.greedy(ids)[0]
    return timers, kwargs


# The llama.cpp type of the same bits as each of our precisions (what both tables compare ours with).
SAME_BITS = {"fp32": "f32", "bf16-weights": "f16", "int8": "q8_0", "int8-dynamic": "q8_0"}


def same_bits_peer(name):
    """"llama.cpp <type>" for a decoder "ours <precision>", else None."""
    kind = SAME_BITS.get(name.removeprefix("ours ")) if name.startswith("ours ") else None
    return None if kind is None else f"llama.cpp {kind}"


def paired_ratio(times, name):
    """The median over rounds of llama.cpp's seconds (its type of the same bits) over ours `name`'s in that
    round: each round's two calls ran a moment apart, so a machine whose bandwidth moves from minute to
    minute weighs on both alike. None for decoders without such a pair."""
    anchor = same_bits_peer(name)
    if anchor not in times:
        return None
    return statistics.median(theirs / mine for theirs, mine in zip(times[anchor], times[name]))


def prompt_passes(ours, copies, peers, ids, args):
    """{decoder: ms of its prompt pass over the one row `ids`} (the time to the first token): ours in each
    precision (generate's first call: the cache filled, the last position's logits) and every llama.cpp type."""
    def ours_call(model):
        with torch.no_grad():
            return seconds(lambda: model(ids, use_cache=True, logits_to_keep=1))
    timers = {f"ours {name}": lambda model=model: ours_call(model) for name, model in {"fp32": ours, **copies}.items()}
    timers.update({name: lambda peer=peer: peer.prompt_pass(ids) for name, peer in peers.items()
                   if name.startswith("llama.cpp")})
    return {name: 1000 * elapsed for name, elapsed in fastest_in_turns(timers, args.repeats).items()}


def print_prompt_passes(preset, passes, reported):
    print(f"| preset | decoder | prompt pass, ms | x llama.cpp, same bits |\n|---|---|---|---|")
    for name, ms in passes.items():
        anchor = passes.get(same_bits_peer(name))
        ratio = None if anchor is None else anchor / ms
        print(f"| {preset} | {name} | {ms:.1f} | {'' if ratio is None else f'{ratio:.2f}x'} |", flush=True)
        reported.append([preset, name, ms, ratio])


def agreement(ours, peer, ids, kwargs):
    """How many of the peer's greedy tokens equal ours fp32, first prompt row."""
    row = ids[:1]
    mine = ours.generate(row, **{**kwargs, "attention_mask": torch.ones_like(row)})[0, row.shape[1]:].tolist()
    theirs = peer.greedy(row)[1][0]
    return sum(a == b for a, b in zip(mine, theirs))


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    missing = llama_cpp_missing(args)
    print(f"# greedy, prompt {args.prompt_len} + {args.new_tokens} new tokens, {args.threads} thread(s), "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; uptime: {os.popen('uptime').read().strip()}")
    if missing:
        print(f"# llama.cpp skipped: {missing}")
    print("| preset | batch | decoder | tokens/s | median tokens/s | x transformers | x llama.cpp same bits, "
          "median of rounds | % of fp32 roofline |\n|---|---|---|---|---|---|---|---|", flush=True)
    reported, prompt_rows = [], []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        source = old_tree(args.before, scratch / "before") if args.before else None
        for block, size in ((b, p) for b in args.blocks.split(",") for p in args.presets.split(",")):
            preset = f"{block}/{size}"
            ours, hf_dir = models(size, block, scratch / block / size)
            copies = rounded_copies(ours, [p for p in args.precisions.split(",") if p])
            peers = {"transformers": Peer.of_kind("transformers", hf_dir, args)}
            if not missing:
                files = gguf_files(hf_dir, args.llama.split(","), args.converter, scratch / block / size)
                peers.update({f"llama.cpp {kind}": Peer.of_kind("llama.cpp", path, args)
                              for kind, path in files.items()})
            roofline = roofline_tokens_per_s(ours, args.threads)
            known = source is not None and has_block(source, block)
            old = Peer.before(source, scratch / block / size, args) if known else None
            for batch in (int(b) for b in args.batches.split(",")):
                ids = torch.randint(1, ours.config.vocab_size, (batch, args.prompt_len),
                                    generator=torch.Generator().manual_seed(0))
                timers, kwargs = timers_for(ours, copies, peers, old, ids, args)
                times = times_in_turns(timers, args.repeats)
                rates = {name: batch * args.new_tokens / min(elapsed) for name, elapsed in times.items()}
                for name, rate in rates.items():
                    share, median = rate / (roofline * batch), batch * args.new_tokens / statistics.median(times[name])
                    paired, vs = paired_ratio(times, name), rate / rates["transformers"]
                    print(f"| {preset} | {batch} | {name} | {rate:.1f} | {median:.1f} | {vs:.2f}x | "
                          f"{'' if paired is None else f'{paired:.2f}x'} | {share:.0%} |", flush=True)
                    reported.append([preset, batch, name, rate, median, vs, paired, share])
            if not missing:
                row = torch.randint(1, ours.config.vocab_size, (1, args.prompt_len),
                                    generator=torch.Generator().manual_seed(0))
                print_prompt_passes(preset, prompt_passes(ours, copies, peers, row, args), prompt_rows)
            for name in ("transformers", "llama.cpp f32"):
                if name in peers:
                    same = agreement(ours, peers[name], ids, kwargs)
                    print(f"# {preset}: {name} greedy tokens equal ours fp32 for {same} of {args.new_tokens}")
            print(f"# {preset}: fp32 roofline {roofline:.1f} tok/s at batch 1", flush=True)
            for peer in [*peers.values(), *([old] if old is not None else [])]:
                peer.close()
            del ours, copies, peers
    print(f"# uptime at the end: {os.popen('uptime').read().strip()}")
    report_table("decode", ["preset", "batch", "decoder", "tokens/s", "median tokens/s", "x transformers",
                            "x llama.cpp same bits", "share of roofline"], reported, key=("preset", "batch", "decoder"),
                 ratios=("x transformers", "x llama.cpp same bits", "share of roofline"))
    if prompt_rows:
        report_table("prompt pass", ["preset", "decoder", "ms", "x llama.cpp same bits"], prompt_rows,
                     key=("preset", "decoder"), ratios=("x llama.cpp same bits",))


if __name__ == "__main__":
    main()
