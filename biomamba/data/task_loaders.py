"""Fine-tuning (classification) tasks: where the examples come from, how they split, the label set.

TASK is one of
  sentence-roles          the prepared dir's tasks/sentence-roles.jsonl (data.dir=PREPARED_DIR): a
                          sentence -> its abstract section (BACKGROUND, OBJECTIVE, METHODS, RESULTS,
                          CONCLUSIONS); splits are the prepared PMID-hash splits
  publication-types       the prepared dir's tasks/publication-types.jsonl: title + abstract -> class
  bioasq-yesno:FILE.json  BioASQ task B yes/no questions: question + its snippets -> yes/no
  pubmedqa:FILE.json      PubMedQA format {id: {"QUESTION", "CONTEXTS", "final_decision"}} -> yes/no/maybe
  csv:FILE | jsonl:FILE   rows with `text`, optional `text_pair`, `label`, optional `split`
                          (train / val|validation|dev / test) and `id` (column names: data.*_field)
  hf:DIR                  a `datasets` save_to_disk directory: a DatasetDict with train and
                          validation/val/dev and test splits, or one Dataset; same columns
  ner:DIR pico:DIR re:DIR similarity:DIR multilabel:PATH chemical-ner mesh-labels
                          BLURB's formats and the silver prepared tasks: biomamba/data/blurb_tasks.py
Without a split column (BioASQ, PubMedQA, files without `split`, a single HF Dataset), an example goes
to test / val / train by a hash of its id (or its text), the prepared data's rule
(biomamba.data.splits.split_of): u < data.test_fraction -> test, then val.
Files are streamed: with data.max_train_examples / data.max_eval_examples a split keeps the examples
whose (data.subset_seed, id) hashes lowest, in a heap of at most that many, so memory is bounded by the
caps and not by the file (PubMed's publication types have ~25M rows), and the subset is the same for
every run seed and model whatever the file order.
Every problem with a task file raises TaskError naming the file.
"""
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biomamba.data.sampling import HashSample
from biomamba.data.splits import SPLITS, split_of
SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "dev": "val", "test": "test"}


class TaskError(ValueError):
    """A task spec or task file is unusable; the message names the file and the fix."""


@dataclass
class Example:
    text: str
    text_pair: str | None
    label: int | float | list  # a class id; a score (similarity); label ids (multilabel); tag ids per token
    tokens: list[str] | None = None  # token tasks: the words the tags belong to (text is them joined by spaces)
    id: str | None = None  # the file's own id when it has one (HoC's PMID_sN), written beside its prediction


@dataclass
class TaskData:
    name: str
    labels: list[str]  # class names by id
    splits: dict = field(default_factory=dict)  # split -> [Example]
    source: str = ""
    seen: dict = field(default_factory=dict)  # split -> examples in the file, before the caps
    # classification | relation | similarity | multilabel | ner | pico (biomamba.data.blurb_tasks)
    kind: str = "classification"
    negative_label: str | None = None  # relation: the class left out of micro-F1

    def counts(self) -> dict:
        """split -> {label: examples} (multilabel: label occurrences; token tasks: tokens; similarity: n)."""
        if self.kind == "similarity":
            return {s: {"examples": len(rows)} for s, rows in self.splits.items()}
        def ids(e):
            return e.label if isinstance(e.label, list) else [e.label]
        return {s: {self.labels[i]: n for i, n in enumerate(
            np.bincount([i for e in rows for i in ids(e)], minlength=len(self.labels)).tolist())}
            for s, rows in self.splits.items()}

    def size(self, split: str) -> int:
        return len(self.splits[split])


# ----------------------------------------------------------------------------- building

def _build(name, source, records, labels, data_cfg) -> TaskData:
    """records (streamed): (key, split or None, text, text_pair, label name); `labels` the class names,
    or None to take the sorted names found. Unknown labels are an error."""
    caps = {"train": data_cfg.max_train_examples, "val": data_cfg.max_eval_examples,
            "test": data_cfg.max_eval_examples}
    samples = {s: HashSample(caps[s], data_cfg.subset_seed) for s in SPLITS}
    found = set()
    for key, split, text, pair, label in records:
        if labels is not None and label not in labels:
            raise TaskError(f"{source}: label {label!r} (example {key}) is not one of {list(labels)}")
        found.add(label)
        split = split or split_of(key, data_cfg.val_fraction, data_cfg.test_fraction)
        samples[split].add(key, (text, pair, label))
    labels = list(labels) if labels is not None else sorted(found)
    index = {label: i for i, label in enumerate(labels)}
    splits = {s: [Example(text, pair, index[label]) for text, pair, label in samples[s].items()] for s in SPLITS}
    task = TaskData(name, labels, splits, source, {s: samples[s].seen for s in SPLITS})
    for split, rows in splits.items():
        if not rows:
            raise TaskError(f"{source}: the {split} split of task {name} is empty "
                            f"({', '.join(f'{s} {len(r)}' for s, r in splits.items())}); use more data "
                            "or other split fractions (data.val_fraction / data.test_fraction, or "
                            "`biomamba prepare --val-fraction/--test-fraction` for prepared tasks)")
    if len({e.label for e in splits["train"]}) < 2:
        raise TaskError(f"{source}: the train split of task {name} has fewer than 2 classes")
    return task


def _read_jsonl(path: Path):
    """(line number, row) of each JSON object line, streamed."""
    rows = 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise TaskError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
            rows += 1
            yield number, row
    if not rows:
        raise TaskError(f"{path}: no rows")


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"{path}: task file not found")
    return path


# ----------------------------------------------------------------------------- prepared tasks

def _prepared_file(data_cfg, name) -> Path:
    if not data_cfg.dir:
        raise TaskError(f"task {name} reads a prepared directory: set data.dir=DIR (from `biomamba prepare`)")
    path = Path(data_cfg.dir) / "tasks" / f"{name}.jsonl"
    if not path.is_file():
        raise TaskError(f"{path}: not found; is {data_cfg.dir} a directory written by `biomamba prepare`?")
    return path


def _prepared_rows(path, text_key):
    for number, row in _read_jsonl(path):
        missing = [k for k in (text_key, "label", "split") if k not in row]
        if missing:
            raise TaskError(f"{path}:{number}: missing {', '.join(missing)}")
        yield f"{row.get('pmid')}:{row.get('position', 0)}", SPLIT_NAMES.get(row["split"]), row[text_key], None, row["label"]


def sentence_roles(spec, data_cfg) -> TaskData:
    from biomamba.data.tasks import ROLE_LABELS
    path = _prepared_file(data_cfg, "sentence-roles")
    return _build("sentence-roles", str(path), _prepared_rows(path, "sentence"), ROLE_LABELS, data_cfg)


def publication_types(spec, data_cfg) -> TaskData:
    from biomamba.data.tasks import DEFAULT_CLASS, PUBLICATION_CLASSES
    path = _prepared_file(data_cfg, "publication-types")
    return _build("publication-types", str(path), _prepared_rows(path, "text"),
                  (DEFAULT_CLASS, *PUBLICATION_CLASSES), data_cfg)


# ----------------------------------------------------------------------------- QA files

def bioasq_yesno(spec, data_cfg) -> TaskData:
    from biomamba.data.bioasq import load_bioasq
    from biomamba.data.errors import DataError
    path = _existing(spec)
    try:
        questions = load_bioasq(path)
    except DataError as error:
        raise TaskError(str(error)) from None
    records = [(q.id or q.body, None, q.body, " ".join(s.text for s in q.snippets if s.text), q.exact_answer)
               for q in questions if q.type == "yesno" and q.exact_answer in ("yes", "no")]
    if not records:
        raise TaskError(f"{path}: no yes/no questions with an exact answer")
    return _build("bioasq-yesno", str(path), records, ("no", "yes"), data_cfg)


def pubmedqa(spec, data_cfg) -> TaskData:
    path = _existing(spec)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise TaskError(f"{path}: not a JSON file ({error})") from None
    if not isinstance(data, dict) or not data:
        raise TaskError(f"{path}: expected PubMedQA format, an object {{id: {{QUESTION, CONTEXTS, final_decision}}}}")
    records = []
    for key, item in data.items():
        item = {k.lower(): v for k, v in item.items()} if isinstance(item, dict) else {}
        missing = [k for k in ("question", "contexts", "final_decision") if k not in item]
        if missing:
            raise TaskError(f"{path}: entry {key!r} lacks {', '.join(missing)} (PubMedQA format)")
        contexts = item["contexts"] if isinstance(item["contexts"], list) else [item["contexts"]]
        records.append((key, None, item["question"], " ".join(map(str, contexts)),
                        str(item["final_decision"]).strip().lower()))
    return _build("pubmedqa", str(path), records, ("yes", "no", "maybe"), data_cfg)


# ----------------------------------------------------------------------------- generic tables

def _table_records(rows, source, data_cfg, to_name=str):
    """(key, split, text, pair, label) from (number, dict row) pairs, streamed; labels as names."""
    f = data_cfg
    for number, row in rows:
        missing = [k for k in (f.text_field, f.label_field) if row.get(k) in (None, "")]
        if missing:
            raise TaskError(f"{source}: row {number} has no {' / '.join(missing)} "
                            f"(columns: {', '.join(map(str, row))}; rename with data.text_field / data.label_field)")
        split = row.get("split")
        if split not in (None, "") and split not in SPLIT_NAMES:
            raise TaskError(f"{source}: row {number} has split {split!r}; use train, val (validation, dev) or test")
        pair = row.get(f.text_pair_field)
        yield (str(row.get(f.id_field) or row[f.text_field]), SPLIT_NAMES.get(split),
               str(row[f.text_field]), None if pair in (None, "") else str(pair), to_name(row[f.label_field]))


def jsonl_task(spec, data_cfg) -> TaskData:
    path = _existing(spec)
    return _build(f"jsonl:{path.name}", str(path), _table_records(_read_jsonl(path), str(path), data_cfg),
                  None, data_cfg)


def _csv_rows(path: Path):
    """(row number, row) of a CSV/TSV file, streamed."""
    rows = 0
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for number, row in enumerate(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","), 1):
                rows += 1
                yield number, row
    except (csv.Error, UnicodeDecodeError) as error:
        raise TaskError(f"{path}: not a readable CSV file ({error})") from None
    if not rows:
        raise TaskError(f"{path}: no rows (a header line and one row per example expected)")


def csv_task(spec, data_cfg) -> TaskData:
    path = _existing(spec)
    return _build(f"csv:{path.name}", str(path), _table_records(_csv_rows(path), str(path), data_cfg),
                  None, data_cfg)


def hf_task(spec, data_cfg) -> TaskData:
    import datasets
    path = Path(spec)
    if not path.is_dir():
        raise TaskError(f"{path}: not a directory (hf: takes a `datasets` save_to_disk directory)")
    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise TaskError(f"{path}: not a datasets directory ({error})") from None
    parts = {s: d for s, d in (dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {None: loaded}).items()
             if s is None or s in SPLIT_NAMES}
    if not parts:
        raise TaskError(f"{path}: no train/validation/test splits")
    features = [d.features.get(data_cfg.label_field) for d in parts.values()]
    class_names = next((f.names for f in features if isinstance(f, datasets.ClassLabel)), None)

    def records():  # memory-mapped Arrow rows, streamed; ClassLabel ids -> the dataset's class names
        for split, dataset in parts.items():
            feature = dataset.features.get(data_cfg.label_field)
            to_name = feature.int2str if isinstance(feature, datasets.ClassLabel) else str
            rows = ((n, {**row, "split": split}) for n, row in enumerate(dataset, 1))
            yield from _table_records(rows, f"{path} ({split or 'all'})", data_cfg,
                                      lambda v, to_name=to_name: None if v is None else to_name(v))

    return _build(f"hf:{path.name}", str(path), records(), class_names, data_cfg)


TASKS = {"sentence-roles": sentence_roles, "publication-types": publication_types}
FILE_TASKS = {"bioasq-yesno": bioasq_yesno, "pubmedqa": pubmedqa, "csv": csv_task, "jsonl": jsonl_task,
              "hf": hf_task}


def load_task(spec: str, data_cfg) -> TaskData:
    """A TaskData from a TASK spec (see the module docstring, and biomamba.data.blurb_tasks for the
    BLURB formats ner:, pico:, re:, similarity:, multilabel: and the silver chemical-ner, mesh-labels)."""
    from biomamba.data import blurb_tasks
    named = {**TASKS, **blurb_tasks.NAMED}
    if spec in named:
        return named[spec](spec, data_cfg)
    files = {**FILE_TASKS, **blurb_tasks.FILES}
    kind, sep, path = spec.partition(":")
    if sep and kind in files and path:
        return files[kind](path, data_cfg)
    raise TaskError(f"unknown task {spec!r}; use {' or '.join(named)} (with data.dir=PREPARED_DIR), or "
                    + ", ".join(f"{k}:PATH" for k in files))
