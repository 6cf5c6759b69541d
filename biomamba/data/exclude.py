"""PMID lists for --exclude-pmids: evaluation documents that must never enter pretraining.

`read_exclusions(path)` accepts
  - a text file, one PMID per line (blank lines and "# comments" ignored),
  - a BioASQ task B JSON file (the PMIDs of its documents and snippets),
  - a BEIR dataset directory (its numeric corpus ids, i.e. PMIDs, as in BEIR's bioasq corpus).
`write_pmid_list(path, pmids)` writes the text form, sorted numerically, atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from biomamba.io import atomic_open
from biomamba.data.errors import DataError


def write_pmid_list(path, pmids: Iterable[str]) -> int:
    pmids = sorted({str(p).strip() for p in pmids if str(p).strip()}, key=lambda p: (len(p), p))
    with atomic_open(path, "w") as f:
        f.writelines(p + "\n" for p in pmids)
    return len(pmids)


def _read_text(path: Path) -> set[str]:
    out = set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            pmid = line.split("#", 1)[0].strip()
            if not pmid:
                continue
            if not pmid.isdigit():
                raise DataError(path, f"line {lineno}: {pmid[:40]!r} is not a PMID")
            out.add(pmid)
    return out


def read_exclusions(path) -> set[str]:
    """The PMIDs named by one --exclude-pmids input (text list, BioASQ JSON or BEIR directory)."""
    path = Path(path)
    if path.is_dir():
        from biomamba.data.beir import corpus_pmids, load_beir
        return corpus_pmids(load_beir(path, qrels=False))
    if not path.is_file():
        raise DataError(path, "no such file")
    if path.suffix == ".json":
        from biomamba.data.bioasq import load_bioasq, question_pmids
        return question_pmids(load_bioasq(path))
    return _read_text(path)
