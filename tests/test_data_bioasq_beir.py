"""BioASQ task B (several years' formats) and BEIR loaders on fixtures written here, and the
--exclude-pmids inputs built from them."""
import json

import pytest

from biomamba.data.beir import check_ids, corpus_pmids, load_beir
from biomamba.data.bioasq import load_bioasq, pmid_of, question_pmids
from biomamba.data.errors import DataError
from biomamba.data.exclude import read_exclusions, write_pmid_list

# Shapes seen across BioASQ years: 2013-era http URLs and flat answers, 2020s https URLs and nested ones.
OLD_YEAR = {"questions": [
    {"id": "q1", "type": "yesno", "body": "Is Hirschsprung disease a mendelian disorder? ",
     "documents": ["http://www.ncbi.nlm.nih.gov/pubmed/15829955", "http://www.ncbi.nlm.nih.gov/pubmed/15617541"],
     "snippets": [{"document": "http://www.ncbi.nlm.nih.gov/pubmed/15829955", "text": "Coding sequence mutations...",
                   "beginSection": "abstract", "endSection": "abstract",
                   "offsetInBeginSection": 10, "offsetInEndSection": 40}],
     "ideal_answer": "No, it is multifactorial.", "exact_answer": "Yes."},
    {"id": "q2", "type": "factoid", "body": "Which gene is mutated?",
     "documents": ["http://www.ncbi.nlm.nih.gov/pubmed/111"], "snippets": [],
     "ideal_answer": ["RET."], "exact_answer": ["RET", "RET proto-oncogene"]},
    {"id": "q3", "type": "list", "body": "List drugs.", "documents": [],
     "snippets": [{"document": "http://www.ncbi.nlm.nih.gov/pubmed/222", "text": "x"}],
     "ideal_answer": ["A and B."], "exact_answer": ["aspirin", "heparin"]},
]}
NEW_YEAR = [  # a bare list, https URLs with trailing slash, nested answers, no exact answer for summary
    {"id": "q4", "type": "Factoid", "body": "What causes X?",
     "documents": ["https://pubmed.ncbi.nlm.nih.gov/333/", "333"], "snippets": [],
     "ideal_answer": ["One.", "Two."], "exact_answer": [["tau", "MAPT"]]},
    {"id": "q5", "type": "list", "body": "Which?", "documents": ["https://pubmed.ncbi.nlm.nih.gov/444"],
     "snippets": [], "ideal_answer": "Both.", "exact_answer": [["a", "alpha"], ["b"]]},
    {"id": "q6", "type": "summary", "body": "Describe Y.", "documents": [], "snippets": [],
     "ideal_answer": ["Y is Z."]},
    {"id": "q7", "type": "yesno", "body": "Is it?", "documents": [], "snippets": [],
     "ideal_answer": ["No."], "exact_answer": ["no"]},
]


def _write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_bioasq_years_normalise_alike(tmp_path):
    old = {q.id: q for q in load_bioasq(_write(tmp_path, "BioASQ-trainingDataset2b.json", OLD_YEAR))}
    new = {q.id: q for q in load_bioasq(_write(tmp_path, "training12b.json", NEW_YEAR))}
    assert old["q1"].documents == ["15829955", "15617541"] and old["q1"].exact_answer == "yes"
    assert old["q1"].body == "Is Hirschsprung disease a mendelian disorder?"
    assert old["q1"].ideal_answer == ["No, it is multifactorial."]
    assert old["q1"].snippets[0].pmid == "15829955" and old["q1"].snippets[0].offset_end == 40
    assert old["q2"].exact_answer == [["RET", "RET proto-oncogene"]]  # flat factoid = synonyms
    assert old["q3"].exact_answer == [["aspirin"], ["heparin"]]  # flat list = one answer each
    assert new["q4"].type == "factoid" and new["q4"].documents == ["333"]
    assert new["q4"].exact_answer == [["tau", "MAPT"]] and new["q4"].ideal_answer == ["One.", "Two."]
    assert new["q5"].exact_answer == [["a", "alpha"], ["b"]] and new["q5"].ideal_answer == ["Both."]
    assert new["q6"].exact_answer is None and new["q7"].exact_answer == "no"
    assert question_pmids(old.values()) == {"15829955", "15617541", "111", "222"}


def test_pmid_of_urls():
    assert pmid_of("http://www.ncbi.nlm.nih.gov/pubmed/123") == "123"
    assert pmid_of("https://pubmed.ncbi.nlm.nih.gov/456/") == "456"
    with pytest.raises(ValueError):
        pmid_of("https://example.org/abc")


def test_bad_bioasq_file_names_it(tmp_path):
    path = _write(tmp_path, "x.json", {"data": []})
    with pytest.raises(DataError, match="x.json: not a BioASQ"):
        load_bioasq(path)


def _write_beir(d, qrels_rows, header=True):
    (d / "qrels").mkdir(parents=True)
    (d / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"_id": "101", "title": "Aspirin", "text": "Aspirin reduces risk.", "metadata": {}},
        {"_id": "MED-7", "title": "", "text": "Not a PMID id."},
        {"_id": "303", "text": "No title field."}]) + "\n")
    (d / "queries.jsonl").write_text(json.dumps({"_id": "PLAIN-1", "text": "does aspirin help"}) + "\n")
    lines = (["query-id\tcorpus-id\tscore"] if header else []) + ["\t".join(map(str, r)) for r in qrels_rows]
    (d / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")


def test_beir_loader(tmp_path):
    _write_beir(tmp_path / "nf", [("PLAIN-1", "101", 2), ("PLAIN-1", "MED-7", 1)])
    ds = load_beir(tmp_path / "nf")
    assert ds.corpus["303"] == {"title": "", "text": "No title field."}
    assert ds.queries == {"PLAIN-1": "does aspirin help"}
    assert ds.qrels == {"test": {"PLAIN-1": {"101": 2, "MED-7": 1}}}
    assert corpus_pmids(ds) == {"101", "303"}
    check_ids(ds)


def test_beir_refuses_query_sharing_a_doc_id(tmp_path):
    _write_beir(tmp_path / "d", [("101", "101", 1)], header=False)
    with pytest.raises(DataError, match="shares its id"):
        check_ids(load_beir(tmp_path / "d"))


def test_exclusion_inputs(tmp_path):
    _write_beir(tmp_path / "beir", [("PLAIN-1", "101", 1)])
    bioasq = _write(tmp_path, "b.json", NEW_YEAR)
    listed = tmp_path / "pmids.txt"
    assert write_pmid_list(listed, ["20", "3", "100", "3"]) == 3
    assert listed.read_text() == "3\n20\n100\n"
    assert read_exclusions(listed) == {"3", "20", "100"}
    assert read_exclusions(bioasq) == {"333", "444"}
    assert read_exclusions(tmp_path / "beir") == {"101", "303"}
    (tmp_path / "bad.txt").write_text("123\nPMC999\n")
    with pytest.raises(DataError, match="bad.txt: line 2"):
        read_exclusions(tmp_path / "bad.txt")
