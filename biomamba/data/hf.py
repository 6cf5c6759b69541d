"""Hugging Face dataset files (parquet, arrow, jsonl) as PubMed records, read with `datasets` in
streaming mode: one row at a time, whatever the file size.

Fields map dataset columns to a record's parts; a dotted name reaches into nested structs:
    --hf-fields pmid=PMID,title=ArticleTitle,abstract=AbstractText
    --hf-fields ncbi-pubmed      (the nested layout of the ncbi/pubmed dataset, see PRESETS)
pmid, title and abstract are the parts every row has (DEFAULT_FIELDS names them as flat columns);
year, journal, languages and publication_types are optional. An abstract that is a list of strings
becomes one unlabelled section per string. A row without a PMID is an error naming the file and row.
A column that a field names but the dataset lacks (a typo in --hf-fields, another dataset's layout) is an
error naming the field and the columns the file has, checked on its first row: otherwise every row would
quietly lose that part. An empty or null value in a column that exists is allowed (a citation without an
abstract); the manifest counts those documents (documents - with_abstract).

General-domain text (`prepare --text`; C4's url/timestamp/text, Wikipedia's id/url/title/text, any
dataset with a text column): each row is one document, its text exactly as stored (no whitespace
change; the title of a Wikipedia row is not added), keyed by its `id`, else its `url`, else
"sha256:" + the text's sha256, and that key's hash draws its split. No PubMed update rules: every
row is a document, a repeated key included. A row whose text is missing or not a string is an error
naming the file and row; a blank text is a record that is not a document, as an empty citation.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterator

from biomamba.data.errors import DataError
from biomamba.data.medline import MedlineRecord, join_sections

PARTS = ("pmid", "title", "abstract", "year", "journal", "languages", "publication_types")
REQUIRED = ("pmid", "title", "abstract")
DEFAULT_FIELDS = {"pmid": "pmid", "title": "title", "abstract": "abstract"}
PRESETS = {
    "ncbi-pubmed": {"pmid": "MedlineCitation.PMID", "title": "MedlineCitation.Article.ArticleTitle",
                    "abstract": "MedlineCitation.Article.Abstract.AbstractText",
                    "languages": "MedlineCitation.Article.Language",
                    "publication_types": "MedlineCitation.Article.PublicationTypeList.PublicationType"},
}
BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".jsonl.gz": "json", ".json.gz": "json"}
_YEAR = re.compile(r"\d{4}")
TEXT_KEYS = ("id", "url")  # a general-text row's key: the first of these it has, else its text's hash


def parse_fields(spec: str | None) -> dict[str, str]:
    """'part=column,...' or a preset name -> {part: column}; unnamed required parts keep their default."""
    if not spec:
        return dict(DEFAULT_FIELDS)
    if spec in PRESETS:
        return dict(PRESETS[spec])
    fields = dict(DEFAULT_FIELDS)
    for item in spec.split(","):
        part, sep, column = (s.strip() for s in item.partition("="))
        if not sep or not column:
            raise DataError("--hf-fields", f"{item!r} is not PART=COLUMN (or a preset: {', '.join(PRESETS)})")
        if part not in PARTS:
            raise DataError("--hf-fields", f"unknown part {part!r}; parts are {', '.join(PARTS)}")
        fields[part] = column
    return fields


def _get(row: dict, column: str):
    """row[column], following dots into nested structs; None when any step is missing."""
    value = row
    for key in column.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _has_column(row: dict, column: str) -> bool:
    """Whether the dataset has `column` (dots into nested structs); a null struct on the way counts as
    present (its row has no value, the schema has the column)."""
    value = row
    for key in column.split("."):
        if value is None:
            return True
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True


def _columns(row: dict, prefix: str = "") -> list[str]:
    """The row's column names, nested struct fields dotted."""
    names = []
    for key, value in row.items():
        names += _columns(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [f"{prefix}{key}"]
    return names


def check_columns(row: dict, fields: dict[str, str], path) -> None:
    """DataError naming the first part whose column `row` (a file's first row) lacks, and the columns it has."""
    for part, column in fields.items():
        if not _has_column(row, column):
            have = ", ".join(_columns(row))
            raise DataError(path, f"no column {column!r} for the {part} field (--hf-fields {part}={column}); "
                                  f"its columns: {have}")


def _strings(value) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [" ".join(str(v).split()) for v in items if v is not None and str(v).strip()]


def _year(value) -> int | None:
    found = _YEAR.search(str(value)) if value is not None else None
    return int(found.group()) if found else None


def row_record(row: dict, fields: dict[str, str], where: str) -> MedlineRecord:
    """One dataset row as a MedlineRecord (text whitespace collapsed, as the XML reader does)."""
    pmid = _get(row, fields["pmid"])
    if pmid is None or not str(pmid).strip():
        raise DataError(where, f"no PMID in column {fields['pmid']!r}")
    get = lambda part: _get(row, fields[part]) if part in fields else None  # noqa: E731
    return MedlineRecord(
        pmid=str(pmid).strip(),
        title=" ".join(_strings(get("title"))),
        sections=[("", "", text) for text in _strings(get("abstract"))],
        languages=_strings(get("languages")),
        year=_year(get("year")),
        publication_types=_strings(get("publication_types")),
        journal=" ".join(_strings(get("journal"))),
    )


def iter_rows(path) -> Iterator[dict]:
    """The rows of one parquet/arrow/jsonl file, streamed through `datasets`."""
    import datasets

    path = Path(path)
    builder = next((b for suffix, b in BUILDERS.items() if path.name.endswith(suffix)), None)
    if builder is None:
        raise DataError(path, f"not a dataset file (expected {', '.join(BUILDERS)})")
    try:
        yield from datasets.load_dataset(builder, data_files=[str(path)], split="train", streaming=True)
    except (OSError, ValueError, datasets.exceptions.DatasetGenerationError) as err:
        raise DataError(path, f"cannot read as {builder}: {err}") from None


def text_key(row: dict, text: str) -> str:
    """The key a general-text document is split by: its id, else its url, else its text's hash."""
    for column in TEXT_KEYS:
        value = row.get(column)
        if value is not None and str(value).strip():
            return str(value).strip()
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def text_record(row: dict, column: str, where: str) -> MedlineRecord:
    """One general-text row as a record: the key in `pmid`, the text unchanged as its one section."""
    text = _get(row, column)
    if not isinstance(text, str):
        found = "no" if text is None else f"a {type(text).__name__}, not a string, in"
        raise DataError(where, f"{found} text column {column!r}")
    return MedlineRecord(pmid=text_key(row, text), sections=[("", "", text)] if text.strip() else [])


def iter_text_records(path, column: str = "text") -> Iterator[MedlineRecord]:
    for number, row in enumerate(iter_rows(path), 1):
        yield text_record(row, column, f"{path} row {number}")


def iter_records(path, fields: dict[str, str]) -> Iterator[MedlineRecord]:
    for number, row in enumerate(iter_rows(path), 1):
        if number == 1:
            check_columns(row, fields, path)
        yield row_record(row, fields, f"{path} row {number}")


def dataset_texts(path, spec: str | None = None, on_empty=lambda: None) -> Iterator[str]:
    """The documents of a dataset, streamed (its files as `prepare --hf PATH` finds them, in that
    order): with `spec` a single column, that column's text; else (a --hf-fields spec, or none for the
    default) title + newline + abstract, the text `prepare` makes of the row. A row without text is
    skipped and reported to `on_empty()`."""
    from biomamba.data.inputs import resolve_inputs

    column = spec if spec and "=" not in spec and spec not in PRESETS else None
    fields = None if column else parse_fields(spec)
    for item in resolve_inputs(hf=[path]):
        for number, row in enumerate(iter_rows(item.path), 1):
            if number == 1:
                check_columns(row, {"text": column} if column is not None else fields, item.path)
            if column is not None:
                text = " ".join(_strings(_get(row, column)))
            else:
                rec = row_record(row, fields, f"{item.path} row {number}")
                text = "\n".join(part for part in (rec.title, join_sections(rec.sections)) if part)
            if text:
                yield text
            else:
                on_empty()
