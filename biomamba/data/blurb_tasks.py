"""Fine-tuning tasks in the formats BLURB and BioBERT distribute, and the silver tasks `prepare` writes.

  ner:DIR         BLURB/CoNLL NER (BC5-chem, NCBI-disease, ...): DIR/train.tsv, DIR/devel.tsv (or dev.tsv),
                  DIR/test.tsv; one `token<TAB>tag` per line, IOB2 tags (O, B-X, I-X), a blank line
                  between sentences. Scored by entity-level F1 (seqeval strict IOB2).
  pico:DIR        EBM-NLP PICO spans in the same layout; scored by token-level F1.
  re:DIR          relation sentences with the entities masked (ChemProt, DDI, GAD: @CHEMICAL$, @GENE$,
                  @DRUG$, @DISEASE$ stay in the text as written): DIR/train.tsv, dev.tsv (or devel.tsv),
                  test.tsv; lines `sentence<TAB>label` or `id<TAB>sentence<TAB>label`, an optional header
                  (index|id, sentence, label). The negative class (false, DDI-false, 0) is left out of
                  the micro-F1, as BLURB scores them.
  similarity:DIR  BIOSSES sentence pairs: DIR/train.tsv, dev.tsv, test.tsv with a header naming
                  sentence1, sentence2 and score (other columns ignored); regression, scored by Pearson.
  multilabel:PATH documents with a set of labels (HoC style): a jsonl file of {"text", "labels": [...],
                  "split": train|val|test} (split by id/text hash when absent), or a DIR with
                  train.jsonl, devel.jsonl (or dev.jsonl / val.jsonl), test.jsonl of {"text", "labels"},
                  or a DIR with train.tsv, dev.tsv (or devel.tsv), test.tsv in HoC's own layout as BLUE
                  distributes it (hoc_rows). Sigmoid per label, the threshold chosen on val; scored by
                  micro-F1 over the rows as given (HoC: per sentence, see hoc_rows).
  chemical-ner    the silver chemical mentions `prepare` writes (PREPARED/tasks/chemical-ner/, ner layout;
                  data.dir=PREPARED)
  mesh-labels     the silver MeSH task (PREPARED/tasks/mesh-labels.jsonl, multilabel rows; data.dir=PREPARED)
Every problem names the file, the line and the field. data.max_*_examples keep the same hash subset
as the other tasks (biomamba.data.sampling.HashSample).
"""
import csv
import json
from pathlib import Path

from biomamba.data.sampling import HashSample
from biomamba.data.splits import SPLITS, split_of
from biomamba.data.task_loaders import SPLIT_NAMES, Example, TaskData, TaskError

SPLIT_FILES = {"train": ("train",), "val": ("devel", "dev", "val", "validation"), "test": ("test",)}
NEGATIVE_RELATIONS = ("false", "DDI-false", "0", "none", "negative")
# task kind -> the metric that selects the step and heads the report, and BLURB's task type
KINDS = {"ner": ("entity_f1", "ner"), "pico": ("token_f1", "pico"), "relation": ("micro_f1", "relation"),
         "similarity": ("pearson", "similarity"), "multilabel": ("micro_f1", "document")}


def split_file(directory: Path, split: str, suffix: str) -> Path:
    for stem in SPLIT_FILES[split]:
        path = directory / f"{stem}{suffix}"
        if path.is_file():
            return path
    names = " or ".join(f"{s}{suffix}" for s in SPLIT_FILES[split])
    raise TaskError(f"{directory}: no {split} file ({names} expected)")


def _directory(spec) -> Path:
    path = Path(spec)
    if not path.is_dir():
        raise TaskError(f"{path}: not a directory (expected train / devel / test files in it)")
    return path


def _sampled(data_cfg, records):
    """records: (split, key, item) -> {split: [item]}, capped to the hash subset of data.max_*_examples."""
    caps = {"train": data_cfg.max_train_examples, "val": data_cfg.max_eval_examples,
            "test": data_cfg.max_eval_examples}
    samples = {s: HashSample(caps[s], data_cfg.subset_seed) for s in SPLITS}
    for split, key, item in records:
        samples[split].add(key, item)
    return {s: samples[s].items() for s in SPLITS}, {s: samples[s].seen for s in SPLITS}


def _nonempty(task: TaskData) -> TaskData:
    for split, rows in task.splits.items():
        if not rows:
            raise TaskError(f"{task.source}: the {split} split of task {task.name} is empty")
    return task


# ----------------------------------------------------------------------------- token tasks

def read_conll(path: Path) -> list[tuple[int, list[str], list[str]]]:
    """(first line number, tokens, tags) per sentence of a `token<TAB>tag` file."""
    sentences, tokens, tags, first = [], [], [], None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                if tokens:
                    sentences.append((first, tokens, tags))
                tokens, tags, first = [], [], None
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0]:
                raise TaskError(f"{path}:{number}: expected `token<TAB>tag`, got {len(fields)} field(s): {line!r}")
            tag = fields[1].strip()
            if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
                raise TaskError(f"{path}:{number}: tag {tag!r} (field 2) is not IOB2 (O, B-TYPE or I-TYPE)")
            first = first or number
            tokens.append(fields[0])
            tags.append(tag)
    if tokens:
        sentences.append((first, tokens, tags))
    if not sentences:
        raise TaskError(f"{path}: no sentences")
    return sentences


def token_task(spec, data_cfg, kind="ner", name=None) -> TaskData:
    directory = _directory(spec)
    files = {split: split_file(directory, split, ".tsv") for split in SPLITS}
    records = ((split, f"{split}:{line}", Example(" ".join(tokens), None, tags, tokens=tokens))
               for split, path in files.items() for line, tokens, tags in read_conll(path))
    splits, seen = _sampled(data_cfg, records)
    tags = sorted({t for rows in splits.values() for e in rows for t in e.label} - {"O"})
    labels = ["O", *tags]
    index = {t: i for i, t in enumerate(labels)}
    for rows in splits.values():
        for e in rows:
            e.label = [index[t] for t in e.label]
    return _nonempty(TaskData(name or f"{kind}:{directory.name}", labels, splits, str(directory), seen, kind=kind))


def chemical_ner(spec, data_cfg) -> TaskData:
    return token_task(_prepared(data_cfg, "chemical-ner", ""), data_cfg, "ner", "chemical-ner")


# ----------------------------------------------------------------------------- relations, similarity

def _tsv_rows(path: Path):
    """(line number, fields) of a TSV file (quotes are text: sentences hold them)."""
    with open(path, encoding="utf-8", newline="") as f:
        for number, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if fields and any(x.strip() for x in fields):
                yield number, fields


def relation_rows(path: Path):
    """(line, id, sentence, label) of a ChemProt/DDI/GAD-style TSV."""
    for number, fields in _tsv_rows(path):
        if number == 1 and [x.strip().lower() for x in fields[-2:]] == ["sentence", "label"]:
            continue  # the header
        if len(fields) not in (2, 3):
            raise TaskError(f"{path}:{number}: expected `sentence<TAB>label` or `id<TAB>sentence<TAB>label`, "
                            f"got {len(fields)} fields")
        if not fields[-1].strip():
            raise TaskError(f"{path}:{number}: the label field is empty")
        yield number, (fields[0] if len(fields) == 3 else str(number)), fields[-2], fields[-1].strip()


def relation_task(spec, data_cfg) -> TaskData:
    directory = _directory(spec)
    records = ((split, f"{split}:{key}", Example(text, None, label))
               for split in SPLITS
               for _, key, text, label in relation_rows(split_file(directory, split, ".tsv")))
    splits, seen = _sampled(data_cfg, records)
    labels = sorted({e.label for rows in splits.values() for e in rows})
    index = {t: i for i, t in enumerate(labels)}
    for rows in splits.values():
        for e in rows:
            e.label = index[e.label]
    negative = next((n for n in NEGATIVE_RELATIONS if n in labels), None)
    return _nonempty(TaskData(f"re:{directory.name}", labels, splits, str(directory), seen, kind="relation",
                              negative_label=negative))


def headed_tsv_rows(path: Path, required: tuple, layout: str = ""):
    """(line, {column: field}) of a TSV whose first line names its columns (any order, any case); every
    `required` column must be there and every row must have the header's number of fields."""
    rows = _tsv_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise TaskError(f"{path}: empty (a header with {', '.join(required)} expected)") from None
    columns = [h.strip().lower() for h in header]
    missing = [c for c in required if c not in columns]
    if missing:
        raise TaskError(f"{path}:1: the header lacks {', '.join(missing)} (has {', '.join(columns)}){layout}")
    for number, fields in rows:
        if len(fields) != len(columns):
            raise TaskError(f"{path}:{number}: {len(fields)} fields, the header has {len(columns)}")
        yield number, dict(zip(columns, fields))


def similarity_rows(path: Path):
    for number, at in headed_tsv_rows(path, ("sentence1", "sentence2", "score")):
        try:
            score = float(at["score"])
        except ValueError:
            raise TaskError(f"{path}:{number}: field score {at['score']!r} is not a number") from None
        yield number, at["sentence1"], at["sentence2"], score


def similarity_task(spec, data_cfg) -> TaskData:
    directory = _directory(spec)
    records = ((split, f"{split}:{n}", Example(a, b, score))
               for split in SPLITS for n, a, b, score in similarity_rows(split_file(directory, split, ".tsv")))
    splits, seen = _sampled(data_cfg, records)
    return _nonempty(TaskData(f"similarity:{directory.name}", ["score"], splits, str(directory), seen,
                              kind="similarity"))


# ----------------------------------------------------------------------------- multi-label documents

def _jsonl_rows(path: Path):
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise TaskError(f"{path}:{number}: field text: expected a string")
            labels = row.get("labels")
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise TaskError(f"{path}:{number}: field labels: expected a list of strings, got {labels!r}")
            yield number, row


HOC_COLUMNS = ("labels", "sentence", "index")


def hoc_rows(path: Path):
    """(line, index, sentence, hallmarks) of a HoC TSV as BLUE distributes it (bluebert's HoC data, read by
    BLUE's eval_hoc.py): a header naming labels, sentence and index (any order); labels lists every
    hallmark as HALLMARK_0 or HALLMARK_1 ("0_0,1_1,...,9_0"), the label names are the hallmark numbers
    of the `_1`s; index is PMID_sN, one row per sentence of an abstract.

    Rows stay sentences: we train and score per sentence. BLUE's eval_hoc.py scores abstracts instead
    (the union of a PMID's sentence labels, gold and predicted, then precision and recall averaged over
    abstracts), so our micro-F1 is not BLUE's or BLURB's HoC number; the predictions file carries each
    row's index so that abstract-level scores can be computed from it."""
    for number, at in headed_tsv_rows(path, HOC_COLUMNS, "; HoC's layout is labels<TAB>sentence<TAB>index"):
        index = at["index"].strip()
        if not index:
            raise TaskError(f"{path}:{number}: field index is empty (PMID_sN expected)")
        yield number, index, at["sentence"], hallmarks(path, number, at["labels"])


def hallmarks(path: Path, number: int, field: str) -> list[str]:
    """'0_0,1_1,2_1' -> ['1', '2']: the hallmarks marked 1."""
    chosen = []
    for item in field.split(","):
        hallmark, _, value = item.strip().rpartition("_")
        if not hallmark.isdigit() or value not in ("0", "1"):
            raise TaskError(f"{path}:{number}: field labels: {item.strip()!r} is not HALLMARK_0 or HALLMARK_1 "
                            f"(e.g. 3_1)")
        if value == "1":
            chosen.append(hallmark)
    return chosen


def _hoc_records(path: Path, split):
    for _, index, sentence, labels in hoc_rows(path):
        yield split, f"{split}:{index}", Example(sentence, None, labels, id=index)


def _split_suffix(directory: Path) -> str:
    """.jsonl or .tsv (HoC's layout): the one the directory's train file has."""
    found = [suffix for suffix in (".jsonl", ".tsv")
             if any((directory / f"{stem}{suffix}").is_file() for stem in SPLIT_FILES["train"])]
    if len(found) != 1:
        raise TaskError(f"{directory}: expected train.jsonl or train.tsv (HoC's layout) with its dev and test "
                        f"files, found {'both' if found else 'neither'}")
    return found[0]


def _multilabel_records(path: Path, split, data_cfg):
    for number, row in _jsonl_rows(path):
        key = str(row.get("pmid") or row.get("id") or row["text"])
        where = split
        if where is None:
            given = row.get("split")
            if given not in (None, "") and given not in SPLIT_NAMES:
                raise TaskError(f"{path}:{number}: field split: {given!r}; use train, val (dev) or test")
            where = SPLIT_NAMES.get(given) or split_of(key, data_cfg.val_fraction, data_cfg.test_fraction)
        yield where, key, Example(row["text"], None, sorted(set(row["labels"])))


def multilabel_task(spec, data_cfg, name=None) -> TaskData:
    path = Path(spec)
    if path.is_dir():
        suffix = _split_suffix(path)
        read = _hoc_records if suffix == ".tsv" else lambda p, split: _multilabel_records(p, split, data_cfg)
        records = (r for split in SPLITS for r in read(split_file(path, split, suffix), split))
    elif path.is_file():
        records = _multilabel_records(path, None, data_cfg)
    else:
        raise TaskError(f"{path}: not found (a jsonl file or a directory of train/devel/test.jsonl or .tsv)")
    splits, seen = _sampled(data_cfg, records)
    labels = sorted({x for rows in splits.values() for e in rows for x in e.label})
    index = {t: i for i, t in enumerate(labels)}
    for rows in splits.values():
        for e in rows:
            e.label = [index[x] for x in e.label]
    if not labels:
        raise TaskError(f"{path}: no example has a label")
    return _nonempty(TaskData(name or f"multilabel:{path.name}", labels, splits, str(path), seen, kind="multilabel"))


def mesh_labels(spec, data_cfg) -> TaskData:
    return multilabel_task(_prepared(data_cfg, "mesh-labels", ".jsonl"), data_cfg, "mesh-labels")


def _prepared(data_cfg, name, suffix) -> Path:
    if not data_cfg.dir:
        raise TaskError(f"task {name} reads a prepared directory: set data.dir=DIR (from `biomamba prepare`)")
    path = Path(data_cfg.dir) / "tasks" / f"{name}{suffix}"
    if not path.exists():
        raise TaskError(f"{path}: not found; was {data_cfg.dir} prepared by a `biomamba prepare` that writes "
                        f"the {name} task?")
    return path


NAMED = {"chemical-ner": chemical_ner, "mesh-labels": mesh_labels}
FILES = {"ner": lambda p, c: token_task(p, c, "ner"), "pico": lambda p, c: token_task(p, c, "pico"),
         "re": relation_task, "similarity": similarity_task, "multilabel": multilabel_task}
