"""Shared fixtures. Data-pipeline fixtures carry a `data_` prefix (tests/test_data_*.py)."""
from __future__ import annotations

import fcntl
import gzip
import os
import random
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

_WORDS = ("patients cells protein expression levels increased decreased significantly treatment group "
          "control mice tumor gene receptor activity response clinical study analysis blood serum "
          "therapy cancer risk dose effect compared observed associated mutation kinase insulin").split()


def first_fast(*values) -> list:
    """Parameters of a family of like checks (one per command, one per damaged file): `make test-fast`
    runs the first, `make test` every one. Each is a CLI subprocess that imports torch (~4 s)."""
    def param(value, **marks):
        return pytest.param(*value, **marks) if isinstance(value, tuple) else pytest.param(value, **marks)
    return [param(values[0]), *(param(v, marks=pytest.mark.slow) for v in values[1:])]


def data_article_xml(pmid, title="", sections=(), year=None, medline_date=None, languages=("eng",),
                     publication_types=("Journal Article",), mesh=(), journal="Journal of Tests") -> str:
    """One <PubmedArticle>; sections are (label, nlm_category, inner XML) with the XML used verbatim."""
    date = f"<Year>{year}</Year>" if year else f"<MedlineDate>{medline_date}</MedlineDate>" if medline_date else ""
    abstract = "".join(
        f'<AbstractText{f" Label={chr(34)}{label}{chr(34)}" if label else ""}'
        f'{f" NlmCategory={chr(34)}{cat}{chr(34)}" if cat else ""}>{xml}</AbstractText>'
        for label, cat, xml in sections)
    heads = "".join(f'<MeshHeading><DescriptorName UI="{ui}" MajorTopicYN="{"Y" if major else "N"}">{name}'
                    f"</DescriptorName></MeshHeading>" for ui, name, major in mesh)
    return (
        f'<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">{pmid}</PMID>'
        f"<Article><Journal><JournalIssue><PubDate>{date}</PubDate></JournalIssue><Title>{journal}</Title></Journal>"
        f"<ArticleTitle>{title}</ArticleTitle>"
        + (f"<Abstract>{abstract}</Abstract>" if sections else "")
        + "".join(f"<Language>{lang}</Language>" for lang in languages)
        + "<PublicationTypeList>"
        + "".join(f"<PublicationType>{t}</PublicationType>" for t in publication_types)
        + "</PublicationTypeList></Article>"
        + (f"<MeshHeadingList>{heads}</MeshHeadingList>" if mesh else "")
        + "</MedlineCitation><PubmedData/></PubmedArticle>\n")


def data_medline_xml(articles, deleted=()) -> str:
    """A whole MEDLINE file: article XML strings, then a DeleteCitation block if any."""
    dels = "".join(f'<PMID Version="1">{p}</PMID>' for p in deleted)
    return ('<?xml version="1.0" encoding="utf-8"?>\n<PubmedArticleSet>\n' + "".join(articles)
            + (f"<DeleteCitation>{dels}</DeleteCitation>\n" if deleted else "") + "</PubmedArticleSet>\n")


def data_write(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def data_random_articles(first_pmid: int, n: int, seed: int) -> list[str]:
    """n synthetic articles with structured and plain abstracts, PMIDs first_pmid..first_pmid+n-1."""
    rng = random.Random(seed)

    def sentence():
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."

    out = []
    for i in range(n):
        pmid = first_pmid + i
        if i % 3 == 0:
            sections = [(cat, cat, " ".join(sentence() for _ in range(rng.randint(1, 3))))
                        for cat in ("BACKGROUND", "METHODS", "RESULTS", "CONCLUSIONS")]
        elif i % 3 == 1:
            sections = [("", "", " ".join(sentence() for _ in range(3)))]
        else:
            sections = []
        out.append(data_article_xml(pmid, escape(sentence()), sections, year=1990 + i % 30,
                                    publication_types=rng.choice([("Journal Article",), ("Review",),
                                                                  ("Journal Article", "Randomized Controlled Trial")])))
    return out


@pytest.fixture
def data_small_medline(tmp_path) -> list[Path]:
    """Two small synthetic MEDLINE files (.xml.gz and .xml): 120 + 80 citations, a repeat, a deletion."""
    a = data_random_articles(1000, 120, seed=1)
    b = data_random_articles(1100, 80, seed=2)  # PMIDs 1100-1119 repeat across files: b's wins
    return [data_write(tmp_path / "in" / "medline_a.xml.gz", data_medline_xml(a)),
            data_write(tmp_path / "in" / "medline_b.xml", data_medline_xml(b, deleted=["1003", "1004"]))]


@pytest.fixture(scope="session")
def data_default_prepared(tmp_path_factory) -> Path:
    """The default `prepare` on the embedded MEDLINE files (vocab 2000 for speed), run once per test run:
    under pytest-xdist the first worker that needs it prepares it in the run's shared temporary directory
    while the others wait on a lock (two files use it, and two workers each preparing it took 41 s and 37 s
    of a 6-minute suite). Read-only for the tests; manifest.json, written last, says it is complete."""
    from biomamba.data.prepare import prepare
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's directory, above each worker's own
    out = shared / "prepared-default"
    with open(shared / "prepared-default.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "manifest.json").is_file():
            prepare(out, vocab_size=2000, workers=2)
    return out


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A small prepared directory (vocab 512) from 400 real MEDLINE records, shared read-only by the
    pretraining, FSDP and retrieval tests."""
    from tests.pretrain_helpers import prepare_small
    return prepare_small(tmp_path_factory.mktemp("data") / "prepared", tmp_path_factory.mktemp("xml"))
