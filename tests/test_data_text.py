"""`prepare --text`: general-domain text (C4- and Wikipedia-shaped datasets) read exactly, split by a
hash of the id (else the text), no PubMed update rules, identical outputs whatever the worker count."""
import hashlib
import json
import random

import pytest

from biomamba.cli import main
from biomamba.data.documents import document_text, read_documents
from biomamba.data.errors import DataError
from biomamba.data.prepare import load_manifest, prepare
from biomamba.data.shards import TokenShards
from biomamba.data.splits import split_of

SMALL = dict(vocab_size=300, shard_tokens=500, val_fraction=0.2, test_fraction=0.2)
WORDS = ("the river city council voted to extend the tram line north of the old harbour in spring; "
         "critics say the budget ignores bus routes Überlingen café naïve 東京 music album released").split()


def paragraph(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def c4_rows(n=40, seed=0):
    """C4's columns: url, timestamp, text (paragraphs separated by newlines)."""
    rng = random.Random(seed)
    return [{"url": f"https://example.org/page/{i}", "timestamp": f"2019-04-{1 + i % 28:02d}T12:00:00Z",
             "text": "\n".join(paragraph(rng, rng.randint(4, 30)) for _ in range(rng.randint(1, 3)))}
            for i in range(n)]


def wiki_rows(n=30, seed=1):
    """Wikipedia's columns: id, url, title, text (sections separated by blank lines)."""
    rng = random.Random(seed)
    return [{"id": str(1000 + i), "url": f"https://en.wikipedia.org/wiki?curid={1000 + i}", "title": f"Article {i}",
             "text": "\n\n".join(paragraph(rng, rng.randint(5, 25)) for _ in range(rng.randint(1, 4)))}
            for i in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path, rows):
    import datasets
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


def _outputs(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and not str(p.relative_to(directory)).startswith((".stages", ".work"))}


@pytest.fixture(scope="module")
def text_inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("text")
    import datasets
    c4, wiki = c4_rows(), wiki_rows()
    plain = [{"text": "  Leading and trailing space kept. \n"}, {"text": "Ein zweites Dokument, ohne Kennung."},
             {"text": "   "}]  # a blank text is a record, not a document
    datasets.Dataset.from_list(plain).save_to_disk(str(base / "plain"))
    return {"c4": write_jsonl(base / "c4-validation.jsonl", c4), "wiki": write_parquet(base / "wiki.parquet", wiki),
            "plain": base / "plain", "c4_rows": c4, "wiki_rows": wiki, "plain_rows": plain}


@pytest.fixture(scope="module")
def prepared(text_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    m = prepare(out, text_inputs=[text_inputs["c4"], text_inputs["wiki"], text_inputs["plain"]], **SMALL)
    return out, m


def expected_key(row):
    if row.get("id"):
        return row["id"]
    if row.get("url"):
        return row["url"]
    return "sha256:" + hashlib.sha256(row["text"].encode()).hexdigest()


def test_c4_and_wikipedia_rows_are_read_exactly(text_inputs, prepared):
    out, m = prepared
    docs = list(read_documents(out))
    rows = text_inputs["c4_rows"] + text_inputs["plain_rows"][:2] + text_inputs["wiki_rows"]  # inputs by name
    assert [(d["pmid"], document_text(d)) for d in docs] == [(expected_key(r), r["text"]) for r in rows]
    assert docs[40]["pmid"].startswith("sha256:") and document_text(docs[40]) == "  Leading and trailing space kept. \n"
    assert m["source_kind"] == "text" and {i["kind"] for i in m["inputs"]} == {"text"}
    assert m["records"] == 73 and m["documents"] == 72 and m["deleted"] == 0
    assert m["options"]["text_column"] == "text" and m["options"]["hf_fields"] is None
    assert all(t["rows"] == 0 for t in m["tasks"].values())  # no task rows from general text


def test_splits_are_the_hash_of_the_key_and_shards_decode_to_the_texts(prepared):
    out, m = prepared
    docs = list(read_documents(out))
    assert all(d["split"] == split_of(d["pmid"], 0.2, 0.2) for d in docs)
    assert {d["split"] for d in docs} == {"train", "val", "test"}
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer" / "tokenizer.json"))
    shards = TokenShards(out, "val")
    decoded = tok.decode(shards.tokens[:]).split("<|endoftext|>")[:-1]
    assert decoded == [document_text(d) for d in docs if d["split"] == "val"]


def test_split_is_stable_under_reordering(tmp_path, text_inputs):
    rows = text_inputs["c4_rows"] + [r for r in text_inputs["plain_rows"] if r["text"].strip()]
    a = prepare(tmp_path / "a", text_inputs=[write_jsonl(tmp_path / "a.jsonl", rows)], **SMALL)
    b = prepare(tmp_path / "b", text_inputs=[write_jsonl(tmp_path / "b.jsonl", rows[::-1])], **SMALL)
    split_a = {d["pmid"]: d["split"] for d in read_documents(tmp_path / "a")}
    split_b = {d["pmid"]: d["split"] for d in read_documents(tmp_path / "b")}
    assert split_a == split_b and len(split_a) == len(rows) == a["documents"] == b["documents"]


def test_workers_give_byte_identical_outputs(tmp_path, text_inputs):
    given = [text_inputs["c4"], text_inputs["wiki"], text_inputs["plain"]]
    prepare(tmp_path / "one", text_inputs=given, workers=1, **SMALL)
    prepare(tmp_path / "two", text_inputs=given, workers=2, **SMALL)
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert one == two and "manifest.json" in one and any(k.startswith("shards/train/") for k in one)


def test_c4s_own_json_gz_files_read_as_their_jsonl(tmp_path, text_inputs, prepared):
    import gzip
    (tmp_path / "in").mkdir()
    gz = tmp_path / "in" / "c4-validation.00000-of-00008.json.gz"
    gz.write_bytes(gzip.compress(text_inputs["c4"].read_bytes()))
    prepare(tmp_path / "out", text_inputs=[tmp_path / "in"], tokenizer=prepared[0] / "tokenizer",
            **{k: v for k, v in SMALL.items() if k != "vocab_size"})
    assert [document_text(d) for d in read_documents(tmp_path / "out")] == [r["text"] for r in text_inputs["c4_rows"]]


def test_no_update_rules_a_repeated_id_stays(tmp_path):
    rows = [{"id": "7", "text": "First version of the page."}, {"id": "7", "text": "Second page, same id."}] * 10
    m = prepare(tmp_path / "out", text_inputs=[write_jsonl(tmp_path / "r.jsonl", rows)], **SMALL)
    assert m["documents"] == 20 and [document_text(d) for d in read_documents(tmp_path / "out")] == \
        [r["text"] for r in rows]


def test_given_tokenizer_applies_and_medline_mixes_in(tmp_path, prepared, text_inputs, data_small_medline):
    out, m = prepared
    again = prepare(tmp_path / "out", data_small_medline, text_inputs=[text_inputs["wiki"]],
                    tokenizer=out / "tokenizer", **{k: v for k, v in SMALL.items() if k != "vocab_size"})
    assert again["tokenizer"]["sha256"] == m["tokenizer"]["sha256"] and again["source_kind"] == "medline+text"
    texts = {document_text(d) for d in read_documents(tmp_path / "out")}
    assert {r["text"] for r in text_inputs["wiki_rows"]} <= texts
    assert load_manifest(tmp_path / "out")["tasks"]["sentence-roles"]["rows"] > 0  # the MEDLINE part's


def test_a_row_without_text_is_a_one_line_error(tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"id": "1", "text": "fine"}, {"id": "2", "body": "no text"}])
    assert main(["prepare", "--out", str(tmp_path / "out"), "--vocab-size", "300", "--text", str(path)]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl row 2" in err and "no text column 'text'" in err
    with pytest.raises(DataError, match="row 1: no text column 'body'"):
        prepare(tmp_path / "out2", text_inputs=[write_jsonl(tmp_path / "b.jsonl", [{"text": "x"}])],
                text_column="body", **SMALL)
