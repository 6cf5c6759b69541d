"""Question-answering test files in their upstream formats, read into one shape: `QAItem`.

A task SPEC is `KIND:FILE[:FEWSHOT_FILE]` (the few-shot pool is the FEWSHOT_FILE's items, else the
test file's own, the eval item left out, as lm-eval does without a training split):

  pubmedqa:FILE   ori_pqal.json {id: {QUESTION, CONTEXTS, final_decision, ...}}, or rows (.jsonl/.parquet)
                  of the HF layouts: question, context.contexts (or CONTEXTS), final_decision -> yes/no/maybe
  bioasq:FILE     BioASQ task B JSON: its yes/no questions with an exact answer; snippets as context
  medqa:FILE      MedQA-USMLE 4 options jsonl (question, options{A..D}, answer_idx) or lm-eval's /
                  GBaker's layout (sent1, ending0..ending3, label)
  medmcqa:FILE    MedMCQA as on the HF hub (question, opa..opd, cop 0-3)
  mmlu:FILE       MMLU subset rows (question, choices, answer 0-3 or A-D, optional subject)
  mc:FILE         generic multiple choice (question, choices, answer index or text, optional context)
  titles:DIR[:N]  made from a `biomamba prepare` dir: which of 4 titles continues this abstract, N items
                  (default 500) of the test split, few-shot examples from val (biomamba/data/qa_titles.py)

Rows are read from .jsonl (one JSON object a line), .json (a list of objects) or .parquet. Every
problem raises QAFormatError naming the file, the line (jsonl) or row (json/parquet) and the field.
QA test sets are small (PubMedQA 500, MedQA 1,273, MedMCQA 4,183, MMLU <= 1,534), so a file is read
whole: the lm-eval protocol's few-shot sampler needs the pool as a list anyway.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("pubmedqa", "bioasq", "medqa", "medmcqa", "mmlu", "mc", "titles")
TITLE_ITEMS = 500
LETTERS = "ABCDEFGHIJ"
YES_NO_MAYBE = ("yes", "no", "maybe")


class QAFormatError(ValueError):
    """A QA file or record that cannot be read; the message names the file, line/row and field."""


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    options: tuple  # answer texts, in the upstream order
    answer: int  # index into options
    contexts: tuple = ()  # abstract sections / snippets, in order
    subject: str = ""  # MMLU subject (lm-eval's description names it)


@dataclass
class QATask:
    kind: str
    path: str
    items: list
    fewshot_path: str | None = None
    fewshot_items: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.kind}:{Path(self.path).stem}"


def _where(path, number, unit) -> str:
    return f"{path}: {unit} {number}"


def _field(record, name, where, kinds=(str,)):
    """record[name], checked for presence and type."""
    if not isinstance(record, dict):
        raise QAFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if name not in record or record[name] is None:
        raise QAFormatError(f"{where}: missing field {name!r}")
    value = record[name]
    if not isinstance(value, kinds) or isinstance(value, bool):
        names = "/".join(k.__name__ for k in kinds)
        raise QAFormatError(f"{where}: field {name!r} should be {names}, got {type(value).__name__}")
    return value


def _strings(value, name, where) -> tuple:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise QAFormatError(f"{where}: field {name!r} should be a list of strings")
    return tuple(value)


def _index(value, n, name, where, options=None) -> int:
    """An answer given as an index, a letter, or (options given) the option's text."""
    if isinstance(value, str) and options is not None and value in options:
        return options.index(value)
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS[:n]:
        return LETTERS.index(value.strip().upper())
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n:
        return value
    raise QAFormatError(f"{where}: field {name!r} = {value!r} is not an answer among {n} options")


# ----------------------------------------------------------------------------- rows of a file

def read_rows(path: Path):
    """(where, record) for each record of a .jsonl, .json list or .parquet file."""
    if not path.is_file():
        raise QAFormatError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        for number, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield _where(path, number, "row"), row
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    yield _where(path, number, "line"), _json(line, _where(path, number, "line"))
    else:
        data = _json(path.read_text(encoding="utf-8"), str(path))
        if isinstance(data, dict):
            raise QAFormatError(f"{path}: expected a list of records (or .jsonl rows), got an object")
        for number, row in enumerate(data, 1):
            yield _where(path, number, "row"), row


def _json(text, where):
    try:
        return json.loads(text)
    except ValueError as err:
        raise QAFormatError(f"{where}: invalid JSON ({err})") from None


# ----------------------------------------------------------------------------- one reader per kind

def _pubmedqa_item(key, record, where) -> QAItem:
    """key: the ori_pqal.json PMID, or the row number of a row file (whose own `pubid` wins)."""
    lower = {k.lower(): v for k, v in record.items()} if isinstance(record, dict) else record
    question = _field(lower, "question", where)
    if isinstance(lower.get("context"), dict):  # HF pubmed_qa: context {contexts, labels, meshes}
        contexts = _strings(_field(lower["context"], "contexts", where, (list,)), "context.contexts", where)
    else:
        contexts = _strings(_field(lower, "contexts", where, (list, str)), "CONTEXTS", where)
    decision = _field(lower, "final_decision", where).strip().lower()
    if decision not in YES_NO_MAYBE:
        raise QAFormatError(f"{where}: field 'final_decision' = {decision!r} is not yes/no/maybe")
    item_id = str(lower.get("pubid", key))
    return QAItem(item_id, question, YES_NO_MAYBE, YES_NO_MAYBE.index(decision), contexts)


def read_pubmedqa(path: Path) -> list:
    if path.suffix == ".json":
        data = _json(path.read_text(encoding="utf-8"), str(path))
        if isinstance(data, dict):  # ori_pqal.json / test_set.json: {pmid: {...}}
            return [_pubmedqa_item(key, {k: v for k, v in record.items() if k != "pubid"} if isinstance(record, dict)
                                   else record, f"{path}: entry {key!r}") for key, record in data.items()]
    return [_pubmedqa_item(number, record, where) for number, (where, record) in enumerate(read_rows(path), 1)]


def read_bioasq(path: Path) -> list:
    from biomamba.data.bioasq import load_bioasq
    from biomamba.data.errors import DataError
    try:
        questions = load_bioasq(path)
    except DataError as err:
        raise QAFormatError(str(err)) from None
    return [QAItem(q.id or q.body, q.body, ("yes", "no"), ("yes", "no").index(q.exact_answer),
                   tuple(s.text for s in q.snippets if s.text))
            for q in questions if q.type == "yesno" and q.exact_answer in ("yes", "no")]


def _medqa_item(number, record, where) -> QAItem:
    if isinstance(record, dict) and "sent1" in record:  # lm-eval's / GBaker's layout
        options = tuple(_field(record, f"ending{i}", where) for i in range(4))
        return QAItem(str(record.get("id", number)), _field(record, "sent1", where), options,
                      _index(_field(record, "label", where, (int,)), 4, "label", where))
    question = _field(record, "question", where)
    raw = _field(record, "options", where, (dict,))
    letters = sorted(raw)
    if letters != list(LETTERS[:len(letters)]) or not all(isinstance(raw[k], str) for k in letters):
        raise QAFormatError(f"{where}: field 'options' should map A, B, C, ... to strings")
    answer = _index(_field(record, "answer_idx", where), len(letters), "answer_idx", where)
    return QAItem(str(record.get("id", number)), question, tuple(raw[k] for k in letters), answer)


def _medmcqa_item(number, record, where) -> QAItem:
    options = tuple(_field(record, f"op{c}", where) for c in "abcd")
    cop = _field(record, "cop", where, (int,))
    if cop == 4:
        raise QAFormatError(f"{where}: field 'cop' = 4: the HF layout (0-3, what lm-eval reads) is expected; "
                            "the original MedMCQA json counts from 1 (subtract 1)")
    return QAItem(str(record.get("id", number)), _field(record, "question", where), options,
                  _index(cop, 4, "cop", where))


def _mmlu_item(number, record, where) -> QAItem:
    options = _strings(_field(record, "choices", where, (list,)), "choices", where)
    return QAItem(str(record.get("id", number)), _field(record, "question", where), options,
                  _index(_field(record, "answer", where, (int, str)), len(options), "answer", where),
                  subject=str(record.get("subject") or ""))


def _mc_item(number, record, where) -> QAItem:
    options = _strings(_field(record, "choices", where, (list,)), "choices", where)
    context = record.get("context")
    contexts = () if context is None else _strings(context, "context", where)
    return QAItem(str(record.get("id", number)), _field(record, "question", where), options,
                  _index(_field(record, "answer", where, (int, str)), len(options), "answer", where, options),
                  contexts)


ROW_READERS = {"medqa": _medqa_item, "medmcqa": _medmcqa_item, "mmlu": _mmlu_item, "mc": _mc_item}


def read_items(kind: str, path) -> list:
    """Every item of a file of this KIND, in file order."""
    path = Path(path)
    if kind == "pubmedqa":
        items = read_pubmedqa(path)
    elif kind == "bioasq":
        items = read_bioasq(path)
    else:
        items = [ROW_READERS[kind](number, record, where)
                 for number, (where, record) in enumerate(read_rows(path), 1)]
    if not items:
        raise QAFormatError(f"{path}: no {kind} items")
    return items


def parse_task_spec(spec: str) -> QATask:
    """`KIND:FILE[:FEWSHOT_FILE]` -> a QATask with its items (and few-shot pool) read."""
    kind, _, rest = spec.partition(":")
    if kind not in KINDS or not rest:
        raise QAFormatError(f"task {spec!r}: expected KIND:FILE[:FEWSHOT_FILE] with KIND one of {', '.join(KINDS)}")
    path, _, fewshot = rest.partition(":")
    if kind == "titles":
        return titles_task(path, fewshot)
    task = QATask(kind, path, read_items(kind, path))
    if fewshot:
        task.fewshot_path, task.fewshot_items = fewshot, read_items(kind, fewshot)
    return task


def titles_task(directory: str, limit: str) -> QATask:
    """`titles:DIR[:N]`: the title task's test items and its val few-shot pool."""
    from biomamba.data.documents import read_documents
    from biomamba.data.errors import DataError
    from biomamba.data.qa_titles import title_items
    if limit and not limit.isdigit():
        raise QAFormatError(f"task titles:{directory}:{limit}: N must be a number of items")
    n = int(limit) if limit else TITLE_ITEMS
    try:
        test, val = (title_items(read_documents(directory, split), n) for split in ("test", "val"))
    except (DataError, ValueError) as err:
        raise QAFormatError(f"titles:{directory}: {err}") from None
    return QATask("titles", f"{directory}:test", test, f"{directory}:val", val)
