"""A streaming reader of MEDLINE/PubMed XML (`.xml.gz` or `.xml`), flat in memory over any file size.

`iter_medline(path)` yields, in file order, a `MedlineRecord` per `<PubmedArticle>` and a `Deletion`
per `<DeleteCitation>` block. `read_medline(paths)` applies PubMed's update rules in memory: files in
name order, a PMID that repeats keeps its last record, a deleted PMID is removed (until a later
record brings it back). `prepare` applies the same rules file by file on disk (documents.py).

Element paths (PubMed DTD 2019+):
  MedlineCitation/PMID                                   -> pmid
  Article/ArticleTitle                                   -> title (itertext: inline <i>, <sub>, MathML kept as text)
  Article/Abstract/AbstractText[@Label, @NlmCategory]    -> sections [(label, nlm_category, text)]
  Article/Language                                       -> languages
  Article/Journal/JournalIssue/PubDate/{Year|MedlineDate} -> year (first 4-digit number of MedlineDate)
  Article/PublicationTypeList/PublicationType            -> publication_types
  MeshHeadingList/MeshHeading/DescriptorName[@UI, @MajorTopicYN] (+ QualifierName@MajorTopicYN) -> mesh
  ChemicalList/Chemical/NameOfSubstance[@UI]             -> chemicals [(ui, name)], in list order
  Article/Journal/Title (else MedlineJournalInfo/MedlineTA) -> journal
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import re
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lxml import etree

from biomamba.data.errors import DataError

_TAGS = ("PubmedArticle", "DeleteCitation", "PubmedBookArticle")
_YEAR = re.compile(r"\d{4}")


@dataclasses.dataclass
class MedlineRecord:
    """One <PubmedArticle>. sections: [(label, nlm_category, text)]; mesh: [(ui, name, major)];
    chemicals: [(ui, name)]."""

    pmid: str
    title: str = ""
    sections: list = dataclasses.field(default_factory=list)
    languages: list = dataclasses.field(default_factory=list)
    year: int | None = None
    publication_types: list = dataclasses.field(default_factory=list)
    mesh: list = dataclasses.field(default_factory=list)
    journal: str = ""
    chemicals: list = dataclasses.field(default_factory=list)

    @property
    def abstract(self) -> str:
        return join_sections(self.sections)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "MedlineRecord":
        fields = {f.name for f in dataclasses.fields(cls)}
        rec = cls(**{k: v for k, v in obj.items() if k in fields})
        rec.sections = [tuple(s) for s in rec.sections]
        rec.mesh = [tuple(m) for m in rec.mesh]
        rec.chemicals = [tuple(c) for c in rec.chemicals]
        return rec


def join_sections(sections) -> str:
    """The abstract as one string: sections on their own lines, "LABEL: " before labelled ones."""
    return "\n".join(f"{label}: {text}" if label and text else label or text for label, _, text in sections)


@dataclasses.dataclass
class Deletion:
    """One <DeleteCitation> block: these PMIDs leave the corpus."""

    pmids: list


def _text(el) -> str:
    """All text under `el`, inline markup included, whitespace collapsed (MathML adds newlines)."""
    if el is None:
        return ""
    text = "".join(el.itertext())
    if "\n" in text or "  " in text or "\t" in text:
        return " ".join(text.split())
    return text.strip()


def _year(pubdate) -> int | None:
    if pubdate is None:
        return None
    found = _YEAR.search(pubdate.findtext("Year") or pubdate.findtext("MedlineDate") or "")
    return int(found.group()) if found else None


def _mesh(citation) -> list:
    out = []
    for heading in citation.iterfind("MeshHeadingList/MeshHeading"):
        desc = heading.find("DescriptorName")
        if desc is None:
            continue
        # PubMed stars a heading as a major topic when the descriptor or any qualifier is major.
        major = desc.get("MajorTopicYN") == "Y" or any(
            q.get("MajorTopicYN") == "Y" for q in heading.iterfind("QualifierName"))
        out.append((desc.get("UI", ""), _text(desc), major))
    return out


def _chemicals(citation) -> list:
    return [(name.get("UI", ""), _text(name))
            for name in citation.iterfind("ChemicalList/Chemical/NameOfSubstance")]


def _record(article) -> MedlineRecord | None:
    citation = article.find("MedlineCitation")
    if citation is None:
        return None
    pmid = (citation.findtext("PMID") or "").strip()
    art = citation.find("Article")
    if not pmid:
        return None
    if art is None:
        return MedlineRecord(pmid=pmid, mesh=_mesh(citation), chemicals=_chemicals(citation))
    sections = [(el.get("Label") or "", el.get("NlmCategory") or "", _text(el))
                for el in art.iterfind("Abstract/AbstractText")]
    # A section may be a bare label ("LEVEL OF EVIDENCE: 4"); keep it, its label is its content.
    journal = art.findtext("Journal/Title") or citation.findtext("MedlineJournalInfo/MedlineTA") or ""
    return MedlineRecord(
        pmid=pmid,
        title=_text(art.find("ArticleTitle")),
        sections=[s for s in sections if s[2] or s[0]],
        languages=[x.text.strip() for x in art.iterfind("Language") if x.text and x.text.strip()],
        year=_year(art.find("Journal/JournalIssue/PubDate")),
        publication_types=[_text(x) for x in art.iterfind("PublicationTypeList/PublicationType")],
        mesh=_mesh(citation),
        journal=journal.strip(),
        chemicals=_chemicals(citation),
    )


def _open(path: Path, raw):
    return gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else raw


def _events(path: Path, raw, on_progress) -> Iterator[MedlineRecord | Deletion]:
    ctx = etree.iterparse(_open(path, raw), events=("end",), tag=_TAGS, remove_blank_text=True)
    last_pos, count = 0, 0
    for _, el in ctx:
        if el.tag == "PubmedArticle":
            rec = _record(el)
            if rec is not None:
                yield rec
        elif el.tag == "DeleteCitation":
            yield Deletion([p.text.strip() for p in el.iterfind("PMID") if p.text and p.text.strip()])
        # Free what we have read: this element and every earlier sibling (memory stays flat).
        el.clear(keep_tail=True)
        while el.getprevious() is not None:
            del el.getparent()[0]
        count += 1
        if on_progress is not None and count % 500 == 0:
            pos = raw.tell()
            on_progress(pos - last_pos)
            last_pos = pos
    if ctx.root is None or ctx.root.tag != "PubmedArticleSet":
        tag = "no root element" if ctx.root is None else f"root element <{ctx.root.tag}>"
        raise DataError(path, f"not a MEDLINE file ({tag}, expected <PubmedArticleSet>)")
    if on_progress is not None:
        on_progress(os.fstat(raw.fileno()).st_size - last_pos)


def iter_medline(path, on_progress: Callable[[int], None] | None = None) -> Iterator[MedlineRecord | Deletion]:
    """Yield MedlineRecord / Deletion items of one file, in file order.

    on_progress(n) is called with the number of (compressed) bytes read since the last call.
    Raises DataError naming the file (and lxml's line) for truncated gzip, malformed XML or a file
    whose root is not <PubmedArticleSet>.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            yield from _events(path, raw, on_progress)
    except etree.XMLSyntaxError as err:
        raise DataError(path, f"malformed XML: {err.msg} (line {err.lineno})") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(path, f"bad or truncated gzip: {err}") from None
    except OSError as err:
        raise DataError(path, f"cannot read: {err.strerror or err}") from None


def read_medline(paths: Iterable) -> dict[str, MedlineRecord]:
    """Final records of several files (sorted by name): last record per PMID wins, deletions applied.

    In-memory; for a full baseline use `biomamba prepare`, which does the same on disk.
    """
    out: dict[str, MedlineRecord] = {}
    for path in sorted(map(Path, paths), key=lambda p: (p.name, str(p))):
        for item in iter_medline(path):
            if isinstance(item, Deletion):
                for pmid in item.pmids:
                    out.pop(pmid, None)
            else:
                out.pop(item.pmid, None)  # re-insert so dict order is the order of last records
                out[item.pmid] = item
    return out
