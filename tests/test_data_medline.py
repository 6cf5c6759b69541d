"""The streaming MEDLINE reader on synthetic files: fields, update rules, bad inputs."""
import gzip

import pytest

from biomamba.data.errors import DataError
from biomamba.data.medline import Deletion, MedlineRecord, iter_medline, read_medline
from tests.conftest import data_article_xml, data_medline_xml, data_write


def test_fields_markup_year_mesh(tmp_path):
    art = data_article_xml(
        "42", title="Effect of CO<sub>2</sub> on <i>E. coli</i>",
        sections=[("BACKGROUND", "BACKGROUND", "We study <b>x</b><sup>2</sup> and <i>y<sub>1</sub></i>."),
                  ("LEVEL OF EVIDENCE: 4", "", ""),
                  ("", "", "")],
        medline_date="1998 Dec-1999 Jan", languages=("eng", "fre"),
        publication_types=("Journal Article", "Review"),
        mesh=[("D000001", "Animals", False), ("D000002", "Cocaine", True)], journal="Curr Biol")
    path = data_write(tmp_path / "f.xml", data_medline_xml([art]))
    (rec,) = list(iter_medline(path))
    assert rec.pmid == "42"
    assert rec.title == "Effect of CO2 on E. coli"
    assert rec.sections == [("BACKGROUND", "BACKGROUND", "We study x2 and y1."), ("LEVEL OF EVIDENCE: 4", "", "")]
    assert rec.abstract == "BACKGROUND: We study x2 and y1.\nLEVEL OF EVIDENCE: 4"
    assert rec.year == 1998 and rec.languages == ["eng", "fre"] and rec.journal == "Curr Biol"
    assert rec.publication_types == ["Journal Article", "Review"]
    assert rec.mesh == [("D000001", "Animals", False), ("D000002", "Cocaine", True)]
    assert MedlineRecord.from_json(rec.to_json()) == rec


def test_deletions_and_last_record_wins_across_files(tmp_path):
    a = data_medline_xml([data_article_xml(1, "one"), data_article_xml(2, "two"), data_article_xml(1, "one bis")],
                         deleted=["2"])
    b = data_medline_xml([data_article_xml(3, "three"), data_article_xml(2, "two again")], deleted=["3"])
    # Name order, not argument order: a_ is read before b_.
    paths = [data_write(tmp_path / "b_2.xml", b), data_write(tmp_path / "a_1.xml.gz", a)]
    items = list(iter_medline(paths[1]))
    assert [type(i) for i in items] == [MedlineRecord] * 3 + [Deletion] and items[-1].pmids == ["2"]
    final = read_medline(paths)
    assert {k: v.title for k, v in final.items()} == {"1": "one bis", "2": "two again"}


def _expect_error(path, *fragments):
    with pytest.raises(DataError) as info:
        list(iter_medline(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for frag in fragments:
        assert frag in message


def test_truncated_gzip(tmp_path):
    xml = data_medline_xml([data_article_xml(i, f"title {i}") for i in range(1, 2000)])
    data = gzip.compress(xml.encode())
    path = tmp_path / "trunc.xml.gz"
    path.write_bytes(data[: len(data) // 2])
    _expect_error(path, "truncated gzip")


def test_not_gzip(tmp_path):
    path = tmp_path / "fake.xml.gz"
    path.write_bytes(b"<PubmedArticleSet></PubmedArticleSet>")
    _expect_error(path, "gzip")


def test_malformed_xml_names_the_line(tmp_path):
    path = data_write(tmp_path / "bad.xml", '<?xml version="1.0"?>\n<PubmedArticleSet>\n<PubmedArticle>\n'
                      "<MedlineCitation><PMID>1</PMID>\n<oops></MedlineCitation>\n</PubmedArticleSet>\n")
    _expect_error(path, "malformed XML", "line 5")


def test_non_medline_xml(tmp_path):
    path = data_write(tmp_path / "page.xml", '<?xml version="1.0"?>\n<html><body><p>hi</p></body></html>\n')
    _expect_error(path, "not a MEDLINE file", "<html>")


def test_empty_file(tmp_path):
    path = data_write(tmp_path / "empty.xml", "")
    _expect_error(path, "malformed XML")


def test_progress_reports_every_byte(tmp_path):
    xml = data_medline_xml([data_article_xml(i, f"title {i}") for i in range(1, 3000)])
    path = data_write(tmp_path / "p.xml.gz", xml)
    seen = []
    n = sum(1 for _ in iter_medline(path, on_progress=seen.append))
    assert n == 2999 and sum(seen) == path.stat().st_size and len(seen) > 1
