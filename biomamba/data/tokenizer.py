"""The domain tokenizer: byte-level BPE trained on the train split, or a tokenizer the user gives.

DIR/tokenizer/ loads with both `tokenizers.Tokenizer.from_file(DIR/tokenizer/tokenizer.json)` and
`transformers.PreTrainedTokenizerFast.from_pretrained(DIR/tokenizer)`. Ours has one special token,
EOS = "<|endoftext|>" at id 0, also used as BOS and PAD (the model config has eos = bos = pad = 0).
Encoding adds no special tokens: the packer appends EOS after every document itself.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from biomamba.io import atomic_open, sha256_file, write_json
from biomamba.data.errors import DataError

EOS = "<|endoftext|>"
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def new_bpe(vocab_size: int, progress: bool) -> tuple[Tokenizer, trainers.BpeTrainer]:
    """An empty GPT-2-style byte-level BPE and its trainer (EOS first, so it gets id 0)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=progress,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    return tok, trainer


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir, progress: bool = True) -> Tokenizer:
    """Train byte-level BPE on `texts` and save it as an HF tokenizer directory."""
    if vocab_size < 257:
        raise ValueError(f"vocab size {vocab_size} is below the 256 bytes + EOS a byte-level BPE needs")
    tok, trainer = new_bpe(vocab_size, progress)
    tok.train_from_iterator(texts, trainer=trainer)
    save_tokenizer(tok, out_dir, eos=EOS)
    return tok


def save_tokenizer(tok: Tokenizer, out_dir, eos: str) -> None:
    """Write tokenizer.json plus the two small files transformers reads, each atomically."""
    out_dir = Path(out_dir)
    with atomic_open(out_dir / "tokenizer.json", "w") as f:
        f.write(tok.to_str(pretty=True))
    write_json(out_dir / "special_tokens_map.json", {"bos_token": eos, "eos_token": eos, "pad_token": eos})
    write_json(out_dir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": eos, "eos_token": eos,
        "pad_token": eos, "add_bos_token": False, "add_eos_token": False,
        "clean_up_tokenization_spaces": False, "model_max_length": 1_000_000_000})


def _eos_of(src: Path, tok: Tokenizer) -> str:
    """The EOS token of a given tokenizer dir: tokenizer_config's eos_token, else <|endoftext|>."""
    config = src / "tokenizer_config.json"
    eos = None
    if config.exists():
        eos = json.loads(config.read_text()).get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
    eos = eos or EOS
    if tok.token_to_id(eos) is None:
        raise DataError(src, f"tokenizer has no EOS token ({eos!r} is not in its vocabulary)")
    return eos


def copy_tokenizer(src, out_dir) -> str:
    """Copy a user's tokenizer directory (e.g. GPT-NeoX-20B's) into DIR/tokenizer; return its EOS."""
    src = Path(src)
    if not (src / "tokenizer.json").is_file():
        raise DataError(src, "not a tokenizer directory (no tokenizer.json)")
    try:
        tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    except Exception as err:  # tokenizers raises a bare Exception for a bad file
        raise DataError(src / "tokenizer.json", f"cannot load tokenizer: {err}") from None
    eos = _eos_of(src, tok)
    out_dir = Path(out_dir)
    for name in FILES:
        if (src / name).is_file():
            with atomic_open(out_dir / name, "wb") as f, open(src / name, "rb") as g:
                shutil.copyfileobj(g, f)
    if not (src / "tokenizer_config.json").is_file():  # transformers needs to be told the EOS
        save_tokenizer(tok, out_dir, eos)
    return eos


def load_raw_tokenizer(directory) -> Tokenizer:
    """The raw `tokenizers.Tokenizer` of DIR/tokenizer (fast, no transformers import)."""
    return Tokenizer.from_file(str(Path(directory) / "tokenizer.json"))


def tokenizer_info(directory, eos: str) -> dict:
    """The manifest's tokenizer entry: vocab size, sha256 of tokenizer.json, EOS token and id."""
    tok = load_raw_tokenizer(directory)
    return {"vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "sha256": sha256_file(Path(directory) / "tokenizer.json"),
            "eos_token": eos, "eos_id": tok.token_to_id(eos)}
