"""The texts `biomamba eval-ppl` scores: a data SPEC -> a named stream of documents.

    prepared:DIR[:val|test]            a `biomamba prepare` directory: the split's documents (default
                                       val, excluded PMIDs left out, as in the token shards), each
                                       document = title + newline + abstract, the training text
    bioasq:FILE.json[:PARTS]           BioASQ task B JSON; PARTS joined by '+' from snippets, ideal,
                                       questions (default snippets+ideal): each snippet, each ideal
                                       answer and each question body is one document
    jsonl:FILE.jsonl[:FIELD]           one JSON object a line; the document is its FIELD (default text)
    text:FILE.txt                      plain text; documents are separated by blank lines
    hf:PATH[:FIELDS]                   a Hugging Face dataset (a save_to_disk dir, parquet/arrow/jsonl
                                       files or a dir of them), streamed with `datasets`: FIELDS is
                                       one column (the document is its text) or a `prepare --hf-fields`
                                       mapping (default pmid=pmid,title=title,abstract=abstract): the
                                       document is title + newline + abstract, as `prepare` makes it;
                                       rows with no text are skipped and counted
A SPEC without a KIND: prefix is inferred: a directory `prepare` wrote -> prepared (val),
*.json -> bioasq, *.jsonl -> jsonl, anything else -> text.

Documents are streamed: `EvalData.stream()` reads them from the start each time it is called, so
memory does not grow with the dataset (a BioASQ JSON file, which must be parsed whole, is the one
exception). An empty document (whitespace only) in a text or JSONL file is an error naming the line;
BioASQ snippets and HF rows with empty text are skipped and counted (real task files have a few).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterator

from biomamba.data.documents import document_text, is_prepared, read_documents
from biomamba.data.errors import DataError

BIOASQ_PARTS = ("snippets", "ideal", "questions")
DEFAULT_BIOASQ_PARTS = ("snippets", "ideal")
KINDS = ("prepared", "bioasq", "jsonl", "text", "hf")


@dataclasses.dataclass
class EvalData:
    name: str  # readable dataset name in results, e.g. "pubmed-val", "bioasq-b-snippets+ideal"
    spec: str  # the SPEC as given
    read: Callable  # read(on_empty) -> an iterator of the texts; on_empty() counts a skipped record
    skipped_empty: int = 0  # counted by the last stream() that ran to the end

    def stream(self) -> Iterator[str]:
        """The documents, read from the start."""
        self.skipped_empty = 0

        def count_empty():
            self.skipped_empty += 1
        yield from self.read(count_empty)


def parse_spec(spec: str) -> tuple[str, Path, str | None]:
    """'KIND:PATH[:OPTION]' or a bare PATH -> (kind, path, option)."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        path, option = rest, None
        if kind != "text" and ":" in rest:
            path, _, option = rest.rpartition(":")
        return kind, Path(path), option or None
    path = Path(spec)
    if path.is_dir() and is_prepared(path):
        return "prepared", path, None
    if path.suffix == ".json":
        return "bioasq", path, None
    if path.suffix == ".jsonl":
        return "jsonl", path, None
    return "text", path, None


def prepared_split(spec: str, split: str | None, default_split: str, option: str = "--data") -> tuple[Path, str]:
    """(DIR, split) of a data SPEC that must name a prepared directory (`DIR` or `prepared:DIR[:SPLIT]`),
    for the commands that read a prepared directory's splits (retrieval eval); `split` is the command's
    own --split, which must agree with a SPLIT in the SPEC. DataError for any other SPEC."""
    kind, path, option_split = parse_spec(spec)
    if kind == "text" and path.is_dir():  # a bare directory that `prepare` did not write
        kind = "prepared"
    if kind != "prepared":
        raise DataError(path, f"{option} {spec!r} is a {kind} SPEC; this command reads a prepared data "
                              f"directory: {option} DIR or {option} prepared:DIR[:SPLIT]")
    if not path.is_dir() or not is_prepared(path):
        raise DataError(path, f"{option}: not a directory written by `biomamba prepare`")
    if option_split and split and option_split != split:
        raise DataError(path, f"{option} {spec!r} names split {option_split!r} but --split is {split!r}; give one")
    return path, option_split or split or default_split


def load_data(spec: str) -> EvalData:
    """The documents a data SPEC names; DataError (naming the file) for anything unusable. Reads as far
    as the first document, so that a wrong path, option or format fails before any model loads."""
    kind, path, option = parse_spec(spec)
    if not path.exists():
        raise DataError(path, f"no such file or directory (data spec {spec!r})")
    loader = {"prepared": load_prepared, "bioasq": load_bioasq_texts, "jsonl": load_jsonl, "text": load_text,
              "hf": load_hf}[kind]
    data = loader(path, option)
    data.spec = spec
    if next(data.stream(), None) is None:
        raise DataError(path, "no documents to score")
    return data


def load_prepared(path: Path, split: str | None) -> EvalData:
    split = split or "val"
    if split not in ("val", "test", "train"):
        raise DataError(path, f"unknown split {split!r} (expected val or test)")

    def read(on_empty):
        try:
            for doc in read_documents(path, split=split, include_excluded=False):
                yield document_text(doc)
        except (ValueError, KeyError) as err:
            raise DataError(path, f"unreadable documents ({type(err).__name__}: {err})") from None
    return EvalData(name=f"pubmed-{split}", spec="", read=read)


def bioasq_texts(questions, parts=DEFAULT_BIOASQ_PARTS) -> tuple[list[str], int]:
    """One document per snippet / ideal answer / question body, question by question; (texts, empty)."""
    unknown = [p for p in parts if p not in BIOASQ_PARTS]
    if unknown or not parts:
        raise ValueError(f"unknown BioASQ text part(s) {unknown or parts}; choose from {'+'.join(BIOASQ_PARTS)}")
    texts, empty = [], 0
    for q in questions:
        candidates = []
        if "questions" in parts:
            candidates.append(q.body)
        if "snippets" in parts:
            candidates += [s.text for s in q.snippets]
        if "ideal" in parts:
            candidates += q.ideal_answer
        for text in candidates:
            if text.strip():
                texts.append(text)
            else:
                empty += 1
    return texts, empty


def load_bioasq_texts(path: Path, option: str | None) -> EvalData:
    from biomamba.data.bioasq import load_bioasq

    parts = tuple(option.split("+")) if option else DEFAULT_BIOASQ_PARTS
    try:  # one JSON document: parsed whole, once
        texts, empty = bioasq_texts(load_bioasq(path), parts)
    except ValueError as err:
        raise DataError(path, str(err)) from None

    def read(on_empty):
        for _ in range(empty):
            on_empty()
        yield from texts
    return EvalData(name=f"{path.stem}-{'+'.join(parts)}", spec="", read=read)


def load_jsonl(path: Path, field: str | None) -> EvalData:
    field = field or "text"

    def read(on_empty):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{number}", f"invalid JSON ({err})") from None
                text = record.get(field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise DataError(f"{path}:{number}", f"no string field {field!r}")
                if not text.strip():
                    raise DataError(f"{path}:{number}", f"empty document (field {field!r} is blank)")
                yield text
    return EvalData(name=path.stem, spec="", read=read)


def load_hf(path: Path, option: str | None) -> EvalData:
    from biomamba.data.hf import dataset_texts

    return EvalData(name=path.stem if path.is_file() else path.name, spec="",
                    read=lambda on_empty: dataset_texts(path, option, on_empty))


def load_text(path: Path, option: str | None = None) -> EvalData:
    def read(on_empty):
        block = []
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        block.append(line.rstrip("\r\n"))
                    elif block:
                        yield "\n".join(block)
                        block = []
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(path, f"cannot read as UTF-8 text ({err})") from None
        if block:
            yield "\n".join(block)
    return EvalData(name=path.stem, spec="", read=read)
