"""Parse MEDLINE files into per-file caches, in parallel over files, with a progress bar in MB.

For each input `NAME` with content hash `SHA`, a worker writes (atomically, JSONL first, meta last):
  parsed/NAME.SHA16.jsonl      one MedlineRecord.to_json() per line, in file order
  parsed/NAME.SHA16.meta.json  {"file", "sha256", "records", "pmids": [...], "deletions": [[k, [pmids]]]}
where a deletion [k, pmids] came after the file's first k records. A rerun reuses every cache whose
meta exists and matches the input's sha256 and READER_VERSION, so a killed `prepare` resumes here.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
from pathlib import Path

from tqdm import tqdm

from biomamba.io import atomic_open, sha256_file, write_json
from biomamba.data.errors import DataError
from biomamba.data.medline import Deletion, iter_medline

READER_VERSION = 1  # bump when MedlineRecord's fields or their extraction change


@dataclasses.dataclass
class ParsedFile:
    """An input file and its cache (or the error that stopped its parse)."""

    path: Path
    sha256: str
    records_path: Path | None = None
    meta: dict | None = None
    error: str | None = None


def cache_paths(cache_dir: Path, path: Path, sha: str) -> tuple[Path, Path]:
    stem = f"{path.name}.{sha[:16]}"
    return cache_dir / f"{stem}.jsonl", cache_dir / f"{stem}.meta.json"


def _load_meta(meta_path: Path, sha: str) -> dict | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    ok = meta.get("sha256") == sha and meta.get("reader_version") == READER_VERSION
    return meta if ok else None


def parse_to_cache(path: Path, sha: str, cache_dir: Path, on_progress=None) -> dict:
    """Parse one file into its cache; return the meta dict. Raises DataError for a bad file."""
    records_path, meta_path = cache_paths(cache_dir, path, sha)
    pmids, deletions = [], []
    with atomic_open(records_path, "w") as out:
        for item in iter_medline(path, on_progress):
            if isinstance(item, Deletion):
                deletions.append([len(pmids), item.pmids])
            else:
                pmids.append(item.pmid)
                out.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
    meta = {"file": path.name, "sha256": sha, "reader_version": READER_VERSION,
            "records": len(pmids), "pmids": pmids, "deletions": deletions}
    write_json(meta_path, meta)
    return meta


# Worker side of the pool: a shared byte counter feeds the parent's progress bar.
_progress_counter = None


def _init_worker(counter) -> None:
    global _progress_counter
    _progress_counter = counter


def _bump(n: int) -> None:
    with _progress_counter.get_lock():
        _progress_counter.value += n


def _work(job, on_progress=_bump) -> tuple[int, dict | None, DataError | None]:
    index, path, sha, cache_dir = job
    try:
        return index, parse_to_cache(path, sha, cache_dir, on_progress), None
    except DataError as err:
        return index, None, err


def _pending(paths, cache_dir, done: list[ParsedFile]):
    """Hash every input; fill `done` with reusable caches; return jobs for the rest."""
    jobs = []
    for i, path in enumerate(paths):
        try:
            sha = sha256_file(path)
        except OSError as err:
            raise DataError(path, f"cannot read: {err.strerror or err}") from None
        records_path, meta_path = cache_paths(cache_dir, path, sha)
        meta = _load_meta(meta_path, sha) if records_path.exists() else None
        done.append(ParsedFile(path, sha, records_path if meta else None, meta))
        if meta is None:
            jobs.append((i, path, sha, cache_dir))
    return jobs


def parse_files(paths: list[Path], cache_dir: Path, workers: int = 1, progress: bool = True,
                skip_bad_files: bool = False) -> list[ParsedFile]:
    """Parse (or reuse) every input; return ParsedFile per input in the given order.

    A bad file raises DataError, unless skip_bad_files, in which case its ParsedFile carries `error`.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    results: list[ParsedFile] = []
    jobs = _pending(paths, cache_dir, results)
    total = sum(os.path.getsize(job[1]) for job in jobs)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="parse MEDLINE", disable=not progress or not jobs)
    try:
        for index, meta, error in _run_jobs(jobs, workers, bar):
            if error is not None and not skip_bad_files:
                raise error
            pf = results[index]
            pf.meta, pf.error = meta, None if error is None else str(error)
            pf.records_path = None if meta is None else cache_paths(cache_dir, pf.path, pf.sha256)[0]
    finally:
        bar.close()
    return results


def _run_jobs(jobs, workers: int, bar):
    """Yield (index, meta, error) per job; in-process for one worker, else a process pool."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _work(job, bar.update)
        return
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    counter = ctx.Value("q", 0)
    with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(counter,)) as pool:
        pending = [pool.apply_async(_work, (job,)) for job in jobs]
        for res in pending:
            while not res.ready():
                res.wait(0.2)
                bar.update(counter.value - bar.n)
            yield res.get()
        bar.update(counter.value - bar.n)
