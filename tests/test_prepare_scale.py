"""`prepare` at scale, on small corpora: worker counts and reruns give byte-identical outputs, a
failure or a kill in any stage then a rerun gives a clean run's outputs, an added update file redoes
only what it changes, the capped tokenizer sample, HF dataset inputs equal to the same records in
XML (and eval-ppl's hf: texts), input discovery, the update rules and the shard reader."""
import hashlib
import random
import shutil
import subprocess
import sys
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest

from biomamba.data import corpus, parsing, shards, tasks, tokenizer_sample
from biomamba.data import tokenizer as tk
from biomamba.data.documents import document_text, read_documents
from biomamba.data.errors import DataError
from biomamba.data.inputs import resolve_inputs
from biomamba.data.medline import Deletion, read_medline
from biomamba.data.prepare import load_manifest, prepare, summary
from biomamba.data.shards import ConcatTokens, TokenShards
from biomamba.data.updates import PmidSet, file_events, file_survivors, keep_masks
from biomamba.locking import LOCK_FILE
from tests.conftest import data_article_xml, data_medline_xml, data_random_articles, data_write

SMALL = dict(vocab_size=300, shard_tokens=2000, val_fraction=0.1, test_fraction=0.1)
ROOT = Path(__file__).resolve().parent.parent


def _outputs(directory: Path) -> dict:
    """Every output file (not stamps, not unfinished work), as bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and not str(p.relative_to(directory)).startswith((".stages", ".work"))}


def _write_corpus(directory: Path) -> list[Path]:
    """Three inputs: a (PMIDs 1000-1059), a2 (3000-3039, touched by nothing else), b (1050-1099,
    revising 1050-1059 and deleting 1003)."""
    return [data_write(directory / "medline_a.xml.gz", data_medline_xml(data_random_articles(1000, 60, seed=1))),
            data_write(directory / "medline_a2.xml.gz", data_medline_xml(data_random_articles(3000, 40, seed=3))),
            data_write(directory / "medline_b.xml", data_medline_xml(data_random_articles(1050, 50, seed=2),
                                                                      deleted=["1003"]))]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """The three inputs and a clean one-worker run on them (shared, read-only)."""
    files = _write_corpus(tmp_path_factory.mktemp("in"))
    clean = tmp_path_factory.mktemp("clean") / "out"
    prepare(clean, files, **SMALL)
    return files, clean


def test_worker_counts_and_reruns_give_byte_identical_outputs(tmp_path, small_corpus):
    files, clean = small_corpus
    m = prepare(tmp_path / "two", files, workers=2, **SMALL)
    assert _outputs(tmp_path / "two") == _outputs(clean)  # 1 and 2 workers: the same bytes
    assert m["records"] == 150 and m["deleted"] == 1 and m["documents"] == 150 - 10 - 1
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "two").rglob("*") if p.is_file()}
    prepare(tmp_path / "two", files, workers=2, **SMALL)
    assert _outputs(tmp_path / "two") == _outputs(clean)
    # .lock: the writer's PID, written by every run that takes the directory (biomamba/locking.py)
    rewritten = [p.name for p, t in before.items() if p.stat().st_mtime_ns != t
                 and p.name not in ("manifest.json", "timings.json", "catalog.json", LOCK_FILE)]
    assert rewritten == [], "a rerun on the same inputs rewrites nothing but manifest, catalog, timings and the lock"


# stage -> (module, function, the call that fails)
FAILURES = {
    "parse": (parsing, "parse_unit", 2),
    "documents": (corpus, "_documents_job", 2),
    "tokenizer sample": (tokenizer_sample, "_sample_job", 2),
    "tokenizer training": (tk, "train_tokenizer", 1),
    "shards": (shards, "_write_unit", 2),
    "task rows": (tasks, "_fragment_job", 2),
    "task files": (tasks, "_assemble", 2),
}


def _count_calls(monkeypatch, module, name, fail_at=None) -> list:
    real, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == fail_at:
            raise KeyboardInterrupt(f"injected into {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.mark.parametrize("stage", FAILURES)
def test_a_failure_in_any_stage_then_a_rerun_gives_a_clean_runs_outputs(tmp_path, small_corpus, monkeypatch, stage):
    files, clean = small_corpus
    module, name, fail_at = FAILURES[stage]
    _count_calls(monkeypatch, module, name, fail_at)
    with pytest.raises((KeyboardInterrupt, RuntimeError), match="injected"):  # RuntimeError: from a child
        prepare(tmp_path / "out", files, **SMALL)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").rglob(".*.tmp-*")), "an exception leaves no temporary file"
    monkeypatch.undo()
    calls = _count_calls(monkeypatch, module, name)
    prepare(tmp_path / "out", files, **SMALL)
    assert _outputs(tmp_path / "out") == _outputs(clean)
    if stage in ("parse", "shards"):  # per file: the finished unit is not redone
        assert len(calls) == 2


KILL_IN_A_WORKER = """
import os, signal, sys
import biomamba.data.shards as shards
from biomamba.data.prepare import prepare
real = shards._write_unit

def dying(out, entry, *args):
    if entry["unit"].startswith("medline_a2"):  # the second unit: the parent dies mid-stage
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(out, entry, *args)

shards._write_unit = dying
prepare(sys.argv[1], sys.argv[2:], workers=2, vocab_size=300, shard_tokens=2000, val_fraction=0.1, test_fraction=0.1)
"""


def test_killed_with_two_workers_then_rerun_gives_a_clean_runs_outputs(tmp_path, small_corpus):
    files, clean = small_corpus
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILL_IN_A_WORKER, str(out), *map(str, files)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == -9, proc.stderr
    assert not (out / "manifest.json").exists() and not list((out / "shards").rglob("medline_a2*.bin"))
    prepare(out, files, workers=2, **SMALL)
    assert _outputs(out) == _outputs(clean)
    assert not list(out.rglob(".*.tmp-*"))


def _update_file(directory: Path) -> Path:
    """An update file: revises 1005 (of a) and 1080 (of b), deletes 1010 (a) and 1090 (b), adds 5000-5009."""
    revised = [data_article_xml(1005, "Revised title one"), data_article_xml(1080, "Revised title two")]
    return data_write(directory / "medline_c.xml", data_medline_xml(
        revised + data_random_articles(5000, 10, seed=4), deleted=["1010", "1090"]))


def _mtimes(directory: Path, pattern: str) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in directory.rglob(pattern)}


def test_an_added_update_file_changes_only_what_it_must(tmp_path, small_corpus):
    files, _ = small_corpus
    out = tmp_path / "out"
    first = prepare(out, files, **SMALL)
    shutil.copytree(out / "tokenizer", tmp_path / "first_tokenizer")
    untouched = _mtimes(out, "medline_a2*")  # a2's record store, table, documents and shards
    touched = _mtimes(out / "shards", "medline_a.*.bin")
    update = _update_file(tmp_path / "in")
    second = prepare(out, files + [update], **SMALL)

    assert second["tokenizer"] == first["tokenizer"] and second["tokenizer"]["sample"]["inputs"] == 3
    assert "tokenizer kept from an earlier run on other inputs" in summary(second, 0.0)
    assert _mtimes(out, "medline_a2*") == untouched
    assert all(_mtimes(out / "shards", "medline_a.*.bin")[n] != t for n, t in touched.items())
    docs = {d["pmid"]: d for d in read_documents(out)}
    assert docs["1005"]["title"] == "Revised title one" and docs["1080"]["title"] == "Revised title two"
    assert not {"1003", "1010", "1090"} & set(docs) and {str(p) for p in range(5000, 5010)} <= set(docs)
    assert list(docs).index("1005") > list(docs).index("1099")  # a revision sits where its record is
    assert second["documents"] == first["documents"] - 2 + 10 and second["deleted"] == 3

    # The same as a clean run on all four files with the first run's tokenizer.
    clean = prepare(tmp_path / "clean", files + [update], tokenizer=tmp_path / "first_tokenizer",
                    **{k: v for k, v in SMALL.items() if k != "vocab_size"})
    assert list(read_documents(tmp_path / "clean")) == list(docs.values())
    assert second["shards"] == clean["shards"] and second["tasks"] == clean["tasks"]
    for name in ("sentence-roles", "publication-types"):
        assert (out / "tasks" / f"{name}.jsonl").read_bytes() == (tmp_path / "clean" / "tasks" / f"{name}.jsonl").read_bytes()

    # --retrain-tokenizer: now byte-identical to a clean run that trains on all four.
    prepare(out, files + [update], retrain_tokenizer=True, **SMALL)
    prepare(tmp_path / "clean4", files + [update], **SMALL)
    assert _outputs(out) == _outputs(tmp_path / "clean4")


def test_the_tokenizer_sample_is_a_capped_hash_sample(tmp_path, small_corpus):
    files, clean = small_corpus
    full = load_manifest(clean)["tokenizer"]["sample"]
    assert full["bytes"] == full["train_text_bytes"] and full["buckets"] == tokenizer_sample.SAMPLE_BUCKETS
    cap = full["train_text_bytes"] // 3
    m = prepare(tmp_path / "out", files, tokenizer_sample_bytes=cap, **SMALL)
    capped = m["tokenizer"]["sample"]
    assert capped["cap_bytes"] == cap and 0 < capped["bytes"] <= cap
    assert capped["buckets"] < tokenizer_sample.SAMPLE_BUCKETS
    # Independently: the train documents whose sha256("tokenizer-sample:" + PMID) lands below the cut.
    chosen = [d for d in read_documents(tmp_path / "out", "train", include_excluded=False)
              if int.from_bytes(hashlib.sha256(f"tokenizer-sample:{d['pmid']}".encode()).digest()[:8], "big")
              * tokenizer_sample.SAMPLE_BUCKETS >> 64 < capped["buckets"]]
    assert capped["documents"] == len(chosen)
    assert capped["bytes"] == sum(len(document_text(d).encode()) for d in chosen)
    assert m["tokenizer"]["sha256"] != load_manifest(clean)["tokenizer"]["sha256"]


# --------------------------------------------------------------------------- HF dataset inputs

def _records(n=40, seed=7) -> list[dict]:
    rng = random.Random(seed)
    words = "cells protein patients increased tumor gene dose mice response therapy levels".split()
    text = lambda k: " ".join(rng.choice(words) for _ in range(k)).capitalize() + "."  # noqa: E731
    return [{"pmid": 7000 + i, "title": text(6) if i % 7 else "", "abstract": text(30) if i % 5 else "",
             "year": 1990 + i % 20, "journal": "J Tests", "languages": ["eng"],
             "publication_types": ["Journal Article", "Review"][: 1 + i % 2]} for i in range(n)]


def _as_xml(records, path: Path) -> Path:
    articles = [data_article_xml(r["pmid"], escape(r["title"]), [("", "", escape(r["abstract"]))] if r["abstract"] else [],
                                 year=r["year"], journal=r["journal"], publication_types=r["publication_types"])
                for r in records]
    return data_write(path, data_medline_xml(articles))


@pytest.fixture(scope="module")
def hf_inputs(tmp_path_factory):
    """The same 40 records as MEDLINE XML, a save_to_disk dataset (2 shards), parquet files and a
    nested (ncbi/pubmed-style) parquet file."""
    import datasets
    base = tmp_path_factory.mktemp("hf")
    records = _records()
    ds = datasets.Dataset.from_list(records)
    ds.save_to_disk(str(base / "saved"), num_shards=2)
    (base / "parquet").mkdir()
    ds.select(range(20)).to_parquet(str(base / "parquet" / "part-0.parquet"))
    ds.select(range(20, 40)).to_parquet(str(base / "parquet" / "part-1.parquet"))
    nested = datasets.Dataset.from_list([{"MedlineCitation": {"PMID": r["pmid"], "Article": {
        "ArticleTitle": r["title"], "Abstract": {"AbstractText": r["abstract"]}, "Language": "eng",
        "PublicationTypeList": {"PublicationType": r["publication_types"]}}}} for r in records])
    nested.to_parquet(str(base / "nested.parquet"))
    return {"records": records, "xml": _as_xml(records, base / "xml" / "records.xml"), "saved": base / "saved",
            "parquet": base / "parquet", "nested": base / "nested.parquet"}


@pytest.fixture(scope="module")
def xml_prepared(hf_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("xml") / "out"
    prepare(out, [hf_inputs["xml"]], **SMALL)
    return out


@pytest.mark.parametrize("source, fields", [("saved", None), ("parquet", "pmid=pmid,title=title,abstract=abstract,"
                                            "year=year,journal=journal,languages=languages,publication_types=publication_types"),
                                            ("nested", "ncbi-pubmed")])
def test_hf_inputs_give_the_same_documents_as_the_records_in_xml(tmp_path, hf_inputs, xml_prepared, source, fields):
    m = prepare(tmp_path / "out", hf_inputs=[hf_inputs[source]], hf_fields=fields, **SMALL)
    assert [i["kind"] for i in m["inputs"]] == ["hf"] * (1 if source == "nested" else 2)
    from_xml, from_hf = list(read_documents(xml_prepared)), list(read_documents(tmp_path / "out"))
    compared = ("pmid", "title", "abstract", "sections", "split", "excluded")  # the default fields
    compared += {"saved": (), "parquet": ("year", "journal", "languages", "publication_types"),
                 "nested": ("languages", "publication_types")}[source]
    assert [{k: d[k] for k in compared} for d in from_hf] == [{k: d[k] for k in compared} for d in from_xml]
    assert len(from_hf) == sum(1 for r in hf_inputs["records"] if r["title"] or r["abstract"]) == 38
    for split in ("train", "val", "test"):
        assert np.array_equal(TokenShards(tmp_path / "out", split).tokens[:], TokenShards(xml_prepared, split).tokens[:])


def test_eval_ppl_hf_data_gives_the_prepared_texts(hf_inputs, xml_prepared):
    from biomamba.eval.ppl_data import load_data
    prepared = [document_text(d) for d in read_documents(xml_prepared)]
    data = load_data(f"hf:{hf_inputs['saved']}")
    assert list(data.stream()) == prepared and data.skipped_empty == 2  # rows with neither title nor abstract
    assert list(load_data(f"hf:{hf_inputs['nested']}:ncbi-pubmed").stream()) == prepared
    assert list(load_data(f"hf:{hf_inputs['parquet']}:title").stream()) == [r["title"] for r in hf_inputs["records"] if r["title"]]


def test_hf_row_without_pmid_is_a_one_line_error(tmp_path):
    import datasets
    datasets.Dataset.from_list([{"pmid": "1", "title": "a", "abstract": "b"},
                                {"pmid": None, "title": "c", "abstract": "d"}]).to_parquet(str(tmp_path / "x.parquet"))
    with pytest.raises(DataError, match="x.parquet row 2: no PMID in column 'pmid'"):
        prepare(tmp_path / "out", hf_inputs=[tmp_path / "x.parquet"], **SMALL)
    with pytest.raises(DataError, match="--hf-fields"):
        prepare(tmp_path / "out", hf_inputs=[tmp_path / "x.parquet"], hf_fields="pmid", **SMALL)


# --------------------------------------------------------------------------- inputs, updates, reader

def test_inputs_from_recursive_directories_and_globs(tmp_path, hf_inputs):
    xml = data_medline_xml([data_article_xml(1, "a")])
    for rel in ("base/pubmed0001.xml.gz", "base/deep/pubmed0002.xml.gz", "upd/pubmed0003.xml", "base/notes.txt"):
        data_write(tmp_path / rel, xml)
    names = lambda found: [i.name for i in found]  # noqa: E731
    assert names(resolve_inputs([tmp_path / "base"])) == ["pubmed0001.xml.gz", "pubmed0002.xml.gz"]
    both = resolve_inputs([tmp_path / "**" / "pubmed*.xml*", tmp_path / "base" / "pubmed0001.xml.gz"])
    assert names(both) == ["pubmed0001.xml.gz", "pubmed0002.xml.gz", "pubmed0003.xml"]  # each once
    saved = resolve_inputs(hf=[hf_inputs["saved"].parent])  # a directory holding a save_to_disk dir
    assert [i.name for i in saved if i.name.startswith("saved")] == ["saved-data-00000-of-00002.arrow",
                                                                     "saved-data-00001-of-00002.arrow"]
    with pytest.raises(DataError, match="no file matches"):
        resolve_inputs([tmp_path / "nothing" / "*.xml.gz"])


def _naive_survivors(files) -> list[list[bool]]:
    """The update rules by brute force: replay every event, remember (file, record) of each PMID."""
    final = {}
    for f, events in enumerate(files):
        k = 0
        for event in events:
            if isinstance(event, Deletion):
                for pmid in event.pmids:
                    final.pop(pmid, None)
            else:
                final[event] = (f, k)
                k += 1
    kept = {v for v in final.values()}
    return [[(f, k) in kept for k in range(sum(not isinstance(e, Deletion) for e in events))]
            for f, events in enumerate(files)]


def test_update_rules_match_a_brute_force_replay():
    rng = random.Random(0)
    for _ in range(50):
        files = [[Deletion([rng.randrange(40) for _ in range(3)]) if rng.random() < 0.15 else rng.randrange(40)
                  for _ in range(rng.randrange(0, 30))] for _ in range(rng.randrange(1, 5))]

        def load(f):
            records = [e for e in files[f] if not isinstance(e, Deletion)]
            deleted, before, k = [], [], 0
            for e in files[f]:
                if isinstance(e, Deletion):
                    deleted += e.pmids
                    before += [k] * len(e.pmids)
                else:
                    k += 1
            return (np.array(records, dtype=np.int64), np.array(deleted, dtype=np.int64),
                    np.array(before, dtype=np.int64))

        masks, _ = keep_masks(list(range(len(files))), load)
        unpacked = [np.unpackbits(m, count=len(n)).astype(bool).tolist() for m, n in zip(masks, _naive_survivors(files))]
        assert unpacked == _naive_survivors(files)


def test_pmid_set_and_file_survivors_on_large_pmids():
    seen = PmidSet()
    seen.add(np.array([5, 40_000_000, 2**32 - 1], dtype=np.int64))
    assert seen.contains(np.array([5, 6, 40_000_000, 2**32 - 1, 2**32 + 8], dtype=np.int64)).tolist() == \
        [True, False, True, True, False]
    events, record_of = file_events(np.array([7, 8, 7]), np.array([8]), np.array([3]))  # 7, 8, 7, del 8
    assert file_survivors(events, record_of, 3, PmidSet()).tolist() == [False, False, True]


def test_documents_follow_the_in_memory_reader(small_corpus):
    """read_medline applies the same rules in one dict: the documents are its records, in its order."""
    files, clean = small_corpus
    final = [r for r in read_medline(files).values() if r.title or r.abstract]
    docs = list(read_documents(clean))
    assert [(d["pmid"], d["title"], d["abstract"]) for d in docs] == [(r.pmid, r.title, r.abstract) for r in final]


def test_concat_tokens_across_many_files(tmp_path, monkeypatch):
    monkeypatch.setattr(ConcatTokens, "MAX_OPEN", 3)
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 60000, size=int(n), dtype=np.uint16) for n in rng.integers(1, 50, size=40)]
    for i, p in enumerate(parts):
        p.tofile(tmp_path / f"{i}.bin")
    view = ConcatTokens([tmp_path / f"{i}.bin" for i in range(len(parts))], [p.size for p in parts], np.uint16)
    whole = np.concatenate(parts)
    assert len(view) == whole.size and len(view._open) == 0
    for a, b in [(0, whole.size), (3, 97), (whole.size - 5, whole.size + 10), (10, 10)] + [
            tuple(sorted(rng.integers(0, whole.size, size=2))) for _ in range(30)]:
        assert np.array_equal(view[a:b], whole[a:b])
    assert view[-1] == whole[-1] and len(view._open) <= 3
    with pytest.raises(IndexError):
        view[whole.size]
