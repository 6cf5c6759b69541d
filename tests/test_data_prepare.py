"""`prepare` on the embedded MEDLINE files: counts against an independent lxml pass, shards that decode
to the tokenizer's encoding of each document, deterministic disjoint splits, tokenizer and tasks."""
import collections
import gzip
import json
import random

import numpy as np
import pytest
from lxml import etree

from biomamba.data.documents import document_text, read_documents
from biomamba.data.errors import DataError
from biomamba.data.inputs import embedded_medline_files
from biomamba.data.prepare import load_manifest
from biomamba.data.shards import TokenShards
from biomamba.data.splits import SPLITS, split_of
from biomamba.data.tasks import ROLE_LABELS


def _blank(text) -> bool:
    return text is None or not text.strip()


def independent_counts(paths) -> dict:
    """A second, deliberately plain reading of the files (no reader code): the test's ground truth."""
    records, deleted, final = 0, set(), {}
    for path in sorted(paths, key=lambda p: p.name):
        with gzip.open(path) as f:
            for _, el in etree.iterparse(f, tag=("PubmedArticle", "DeleteCitation")):
                if el.tag == "DeleteCitation":
                    for p in el.findall("PMID"):
                        deleted.add(p.text.strip())
                        final.pop(p.text.strip(), None)
                else:
                    records += 1
                    pmid = el.find("MedlineCitation/PMID").text.strip()
                    title = el.find(".//ArticleTitle")
                    texts = el.findall(".//Abstract/AbstractText")
                    kept = [t for t in texts if not _blank("".join(t.itertext())) or t.get("Label")]
                    final[pmid] = (not _blank(None if title is None else "".join(title.itertext())),
                                   any(not _blank("".join(t.itertext())) for t in texts),
                                   [t.get("NlmCategory") for t in kept if t.get("NlmCategory")], bool(kept))
                el.clear()
    docs = [v for v in final.values() if v[0] or v[3]]
    return {"records": records, "deleted": len(deleted), "documents": len(docs),
            "with_abstract": sum(v[1] for v in docs),
            "sections": dict(collections.Counter(c for v in docs for c in v[2]))}


# the default `prepare` over the ~50k embedded citations (data_default_prepared): a long run, left to `make test`
DEFAULT_PREPARE = pytest.mark.slow


@pytest.fixture(scope="module")
def manifest(data_default_prepared):
    return load_manifest(data_default_prepared)


@DEFAULT_PREPARE
def test_counts_match_an_independent_pass(manifest):
    truth = independent_counts(embedded_medline_files())
    for key in ("records", "deleted", "documents", "with_abstract", "sections"):
        assert manifest[key] == truth[key], key
    # Figures from FACTS.md: 30,000 + 20,788 records, a DeleteCitation block of 20 PMIDs.
    assert manifest["records"] == 50788 and manifest["deleted"] == 20
    assert sum(s["documents"] for s in manifest["splits"].values()) == manifest["documents"]
    assert [i["file"] for i in manifest["inputs"]] == ["pubmed20n0014.xml.gz", "pubmed21n1298.xml.gz"]


@DEFAULT_PREPARE
def test_documents(data_default_prepared, manifest):
    docs = list(read_documents(data_default_prepared))
    assert len(docs) == manifest["documents"] == len({d["pmid"] for d in docs})
    assert all(d["title"] or d["abstract"] for d in docs)
    assert set(docs[0]) >= {"pmid", "title", "abstract", "sections", "year", "journal", "languages",
                            "publication_types", "mesh", "split"}


@DEFAULT_PREPARE
def test_splits_are_a_pure_disjoint_function_of_the_pmid(data_default_prepared, manifest):
    by_split = collections.defaultdict(set)
    for d in read_documents(data_default_prepared):
        assert d["split"] == split_of(d["pmid"], 0.05, 0.05)
        by_split[d["split"]].add(d["pmid"])
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"]
                or by_split["val"] & by_split["test"])
    n = manifest["documents"]
    for split in ("val", "test"):
        assert abs(len(by_split[split]) / n - 0.05) < 0.01
        assert manifest["splits"][split]["documents"] == len(by_split[split])
    # Changing the val fraction never moves a test document.
    assert all(split_of(p, 0.2, 0.05) == "test" for p in by_split["test"])


@DEFAULT_PREPARE
def test_shards_decode_to_the_documents(data_default_prepared, manifest):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(data_default_prepared / "tokenizer" / "tokenizer.json"))
    eos = manifest["tokenizer"]["eos_id"]
    assert eos == 0 and tok.id_to_token(0) == "<|endoftext|>"
    rng = random.Random(0)
    for split in SPLITS:
        shards = TokenShards(data_default_prepared, split)
        tokens = np.asarray(shards.tokens[0:len(shards)])
        assert shards.dtype == np.uint16 and len(shards) == manifest["splits"][split]["tokens"]
        assert tokens[-1] == eos
        bounds = np.flatnonzero(tokens == eos)
        starts = np.concatenate([[0], bounds[:-1] + 1])
        docs = list(read_documents(data_default_prepared, split, include_excluded=False))
        assert len(bounds) == len(docs)
        for i in sorted(rng.sample(range(len(docs)), 100)) + [0, len(docs) - 1]:
            ids = tokens[starts[i]:bounds[i]].tolist()
            assert ids == tok.encode(document_text(docs[i]), add_special_tokens=False).ids
            assert tok.decode(ids) == document_text(docs[i])


@DEFAULT_PREPARE
def test_shard_checksums_and_sizes(data_default_prepared, manifest):
    import hashlib
    for entry in manifest["shards"]:
        data = (data_default_prepared / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == 2 * entry["tokens"]


@DEFAULT_PREPARE
def test_tokenizer_loads_with_transformers(data_default_prepared, manifest):
    from transformers import PreTrainedTokenizerFast
    hf = PreTrainedTokenizerFast.from_pretrained(str(data_default_prepared / "tokenizer"))
    assert hf.eos_token_id == hf.bos_token_id == hf.pad_token_id == 0
    assert len(hf) == manifest["tokenizer"]["vocab_size"] == 2000
    text = "Dopamine modulates acute responses to cocaine (p < 0.05)."
    ids = hf(text)["input_ids"]
    assert hf.decode(ids) == text and 0 not in ids


@DEFAULT_PREPARE
def test_tasks(data_default_prepared, manifest):
    roles = manifest["tasks"]["sentence-roles"]
    counts = collections.Counter()
    with open(data_default_prepared / "tasks" / "sentence-roles.jsonl") as f:
        for line in f:
            row = json.loads(line)
            counts[(row["split"], row["label"])] += 1
            assert row["split"] == split_of(row["pmid"], 0.05, 0.05) and row["sentence"]
    assert {label for _, label in counts} == set(ROLE_LABELS)
    assert {(s, label): n for s, c in roles["labels"].items() for label, n in c.items()} == dict(counts)
    meta = json.loads((data_default_prepared / "tasks" / "sentence-roles.meta.json").read_text())
    assert meta == roles
    pubtypes = manifest["tasks"]["publication-types"]
    assert pubtypes["rows"] == manifest["with_abstract"]


def test_load_manifest_errors(tmp_path):
    with pytest.raises(DataError, match="manifest.json: missing"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"records": 1}')
    with pytest.raises(DataError, match="incomplete manifest"):
        load_manifest(tmp_path)
