"""`prepare` on small synthetic MEDLINE files: byte-identical reruns, resumption after a kill,
one-line errors for bad inputs, --skip-bad-files, --exclude-pmids and a given tokenizer."""
import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from biomamba.cli import main
from biomamba.data.documents import is_prepared, read_documents
from biomamba.data.prepare import load_manifest, prepare
from biomamba.data.shards import TokenShards
from tests.conftest import data_article_xml, data_medline_xml, data_random_articles, data_write

SMALL = dict(vocab_size=300, shard_tokens=1000, val_fraction=0.1, test_fraction=0.1)


def _outputs(directory: Path) -> dict:
    """Every output file that is not a stamp or unfinished work, as bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and not str(p.relative_to(directory)).startswith((".stages", ".work"))}


def _looks_complete(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name == "manifest.json" or p.suffix == ".bin")


def test_same_inputs_give_byte_identical_outputs(tmp_path, data_small_medline):
    m1 = prepare(tmp_path / "one", data_small_medline, **SMALL)
    prepare(tmp_path / "two", data_small_medline, workers=2, **SMALL)
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert one == two and "manifest.json" in one
    assert {"shards/train/medline_a.xml.gz.26e9891376c0b546.0001.bin", "shards/train/medline_b.xml.31e746d5934d7357.0000.bin"} <= set(one)
    # Update rules: 120 + 80 records, 20 PMIDs repeat, 2 deleted, every third article has no abstract.
    assert m1["records"] == 200 and m1["deleted"] == 2 and m1["documents"] == 200 - 20 - 2
    assert len(m1["shards"]) > 3 and m1["dtype"] == "uint16"


def test_splits_do_not_move_when_files_are_added(tmp_path, data_small_medline):
    prepare(tmp_path / "a", data_small_medline[:1], **SMALL)
    prepare(tmp_path / "ab", data_small_medline, **SMALL)
    before = {d["pmid"]: d["split"] for d in read_documents(tmp_path / "a")}
    after = {d["pmid"]: d["split"] for d in read_documents(tmp_path / "ab")}
    assert all(after[p] == s for p, s in before.items() if p in after)


KILL_SCRIPT = """
import contextlib, os, signal, sys
import biomamba.data.shards as shards
from biomamba.data.prepare import prepare
real_open, calls = shards.atomic_open, []

@contextlib.contextmanager
def dying_open(path, mode="wb"):
    with real_open(path, mode) as f:
        calls.append(path)
        if len(calls) == 3:  # half of the third shard reaches the disk, then the process dies
            real_write = f.write
            f.write = lambda data: (real_write(data[: len(data) // 2]), f.flush(), os.kill(os.getpid(), signal.SIGKILL))
        yield f

shards.atomic_open = dying_open
prepare(sys.argv[1], sys.argv[2:], vocab_size=300, shard_tokens=1000, val_fraction=0.1, test_fraction=0.1)
"""


def test_killed_prepare_leaves_nothing_complete_and_a_rerun_finishes(tmp_path, data_small_medline):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out), *map(str, data_small_medline)],
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    unit = "medline_a.xml.gz.26e9891376c0b546"
    assert _looks_complete(out) == [f"{unit}.0000.bin", f"{unit}.0001.bin"]  # the two finished ones
    assert list(out.glob(f"shards/train/.{unit}.0002.bin.tmp-*")), "the partial shard stays under its temporary name"
    with pytest.raises(Exception, match="manifest.json"):
        load_manifest(out)
    prepare(out, data_small_medline, **SMALL)
    prepare(tmp_path / "clean", data_small_medline, **SMALL)
    assert _outputs(out) == _outputs(tmp_path / "clean")
    assert not list(out.rglob(".*.tmp-*"))
    assert len(TokenShards(out, "train")) == load_manifest(out)["splits"]["train"]["tokens"]


def test_failure_in_a_stage_leaves_no_manifest_and_rerun_completes(tmp_path, data_small_medline, monkeypatch):
    import biomamba.data.prepare as prep
    monkeypatch.setattr(prep, "write_tasks", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        prepare(tmp_path / "out", data_small_medline, **SMALL)
    assert not (tmp_path / "out" / "manifest.json").exists()
    monkeypatch.undo()
    assert prepare(tmp_path / "out", data_small_medline, **SMALL)["documents"] == 178


def _cli_error(capsys, out: Path, *medline) -> str:
    rc = main(["prepare", "--out", str(out), "--vocab-size", "300", "--medline", *map(str, medline)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("error: ") and "\n" not in err, err
    assert not _looks_complete(out) and not is_prepared(out)
    return err


def test_truncated_gzip_is_one_line_error(tmp_path, capsys, data_small_medline):
    data = data_small_medline[0].read_bytes()
    bad = tmp_path / "cut.xml.gz"
    bad.write_bytes(data[: len(data) // 2])
    err = _cli_error(capsys, tmp_path / "out", data_small_medline[1], bad)
    assert str(bad) in err and "truncated gzip" in err


def test_malformed_xml_is_one_line_error_with_line(tmp_path, capsys):
    bad = data_write(tmp_path / "bad.xml", data_medline_xml([data_article_xml(1, "a")]).replace("</Article>", "", 1))
    err = _cli_error(capsys, tmp_path / "out", bad)
    assert str(bad) in err and "malformed XML" in err and "(line 3)" in err


def test_non_medline_xml_is_one_line_error(tmp_path, capsys):
    bad = data_write(tmp_path / "feed.xml.gz", '<?xml version="1.0"?>\n<rss><channel/></rss>\n')
    err = _cli_error(capsys, tmp_path / "out", bad)
    assert str(bad) in err and "not a MEDLINE file" in err


def test_empty_input_list_is_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = _cli_error(capsys, tmp_path / "out", tmp_path / "empty")
    assert str(tmp_path / "empty") in err
    err = _cli_error(capsys, tmp_path / "out2")
    assert "empty input list" in err


def test_skip_bad_files_lists_them(tmp_path, capsys, data_small_medline):
    bad = data_write(tmp_path / "zzz.xml", "<PubmedArticleSet><PubmedArticle>")
    rc = main(["prepare", "--out", str(tmp_path / "out"), "--vocab-size", "300", "--skip-bad-files",
               "--medline", *map(str, data_small_medline), str(bad)])
    assert rc == 0
    manifest = load_manifest(tmp_path / "out")
    assert [s["file"] for s in manifest["skipped_files"]] == ["zzz.xml"]
    assert "malformed XML" in manifest["skipped_files"][0]["error"]
    assert [i["file"] for i in manifest["inputs"]] == ["medline_a.xml.gz", "medline_b.xml"]


def test_exclude_pmids_keeps_them_out_of_pretraining(tmp_path, data_small_medline):
    excluded = {str(p) for p in range(1000, 1060)}
    (tmp_path / "ex.txt").write_text("# evaluation PMIDs\n" + "\n".join(sorted(excluded)) + "\n")
    m = prepare(tmp_path / "out", data_small_medline, exclude_pmids=[tmp_path / "ex.txt"], **SMALL)
    docs = list(read_documents(tmp_path / "out"))
    flagged = {d["pmid"] for d in docs if d["excluded"]}
    assert flagged == excluded - {"1003", "1004"} and m["excluded"] == len(flagged)
    assert sum(s["documents"] for s in m["splits"].values()) == m["documents"] - m["excluded"]


def test_given_tokenizer_is_copied_and_used(tmp_path, data_small_medline):
    first = prepare(tmp_path / "first", data_small_medline, **SMALL)
    second = prepare(tmp_path / "second", data_small_medline, tokenizer=tmp_path / "first" / "tokenizer",
                     **{k: v for k, v in SMALL.items() if k != "vocab_size"})
    assert second["tokenizer"]["sha256"] == first["tokenizer"]["sha256"]
    assert second["tokenizer"]["source"] == "given" and second["shards"] == first["shards"]


def test_gzip_and_plain_inputs_parse_alike(tmp_path):
    xml = data_medline_xml(data_random_articles(5000, 30, seed=3))
    a = prepare(tmp_path / "gz", [data_write(tmp_path / "x" / "f.xml.gz", xml)], **SMALL)
    b = prepare(tmp_path / "plain", [data_write(tmp_path / "y" / "f.xml", xml)], **SMALL)
    assert a["splits"] == b["splits"] and a["documents"] == 30  # every article has a title
    assert gzip.decompress((tmp_path / "x" / "f.xml.gz").read_bytes()).decode() == xml
