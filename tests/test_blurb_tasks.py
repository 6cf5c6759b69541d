"""The BLURB formats (ner:, pico:, re:, similarity:, multilabel:) and the silver task names are read
exactly; bad files give errors naming the file, the line and the field."""
import json

import pytest

from biomamba.data.task_loaders import TaskError, load_task
from biomamba.train.config import load_config
from biomamba.train.finetune_config import FinetuneConfig, check_finetune


def data_cfg(*overrides):
    return load_config(None, list(overrides), schema=FinetuneConfig, check=check_finetune).data


def write_splits(directory, texts: dict, suffix=".tsv"):
    directory.mkdir(parents=True, exist_ok=True)
    for stem, text in texts.items():
        (directory / f"{stem}{suffix}").write_text(text)
    return directory


def test_ner_reads_sentences_tokens_and_tags_exactly(tmp_path):
    ner = write_splits(tmp_path / "ner", {
        "train": "Aspirin\tB-Chemical\nlowers\tO\n\nsodium\tB-Chemical\nchloride\tI-Chemical\n",
        "devel": "\n\nheparin\tB-Chemical\n\n\n", "test": "a\tO\r\nb\tB-Disease\n"})
    task = load_task(f"ner:{ner}", data_cfg())
    assert task.kind == "ner" and task.labels == ["O", "B-Chemical", "B-Disease", "I-Chemical"]
    train = task.splits["train"]
    assert [e.tokens for e in train] == [["Aspirin", "lowers"], ["sodium", "chloride"]]
    assert [[task.labels[i] for i in e.label] for e in train] == [["B-Chemical", "O"], ["B-Chemical", "I-Chemical"]]
    assert train[1].text == "sodium chloride"
    assert [e.tokens for e in task.splits["val"]] == [["heparin"]]
    assert [[task.labels[i] for i in e.label] for e in task.splits["test"]] == [["O", "B-Disease"]]


def test_pico_is_the_ner_layout_scored_by_tokens(tmp_path):
    pico = write_splits(tmp_path / "pico", {s: "adults\tB-PAR\nwith\tI-PAR\n" for s in ("train", "dev", "test")})
    task = load_task(f"pico:{pico}", data_cfg())
    assert task.kind == "pico" and len(task.splits["val"]) == 1


@pytest.mark.parametrize("text, message", [
    ("Aspirin B-Chemical\n", "train.tsv:1: expected `token<TAB>tag`"),
    ("a\tO\nb\tB-Chem\tx\n", "train.tsv:2: expected `token<TAB>tag`, got 3 field(s)"),
    ("a\tO\n\nb\tChemical\n", "train.tsv:3: tag 'Chemical' (field 2) is not IOB2"),
])
def test_ner_errors_name_file_line_and_field(tmp_path, text, message):
    ner = write_splits(tmp_path / "ner", {"train": text, "devel": "a\tO\n", "test": "a\tO\n"})
    with pytest.raises(TaskError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_task(f"ner:{ner}", data_cfg())


def test_missing_split_file_is_named(tmp_path):
    ner = write_splits(tmp_path / "ner", {"train": "a\tO\n", "test": "a\tO\n"})
    with pytest.raises(TaskError, match="no val file.*devel.tsv or dev.tsv"):
        load_task(f"ner:{ner}", data_cfg())


def test_relation_tsvs_with_and_without_ids_and_the_negative_class(tmp_path):
    re_dir = write_splits(tmp_path / "re", {
        "train": "index\tsentence\tlabel\nx1\t@CHEMICAL$ inhibits @GENE$ .\tCPR:4\nx2\t@CHEMICAL$ and @GENE$ \"q\"\tfalse\n",
        "dev": "@CHEMICAL$ binds @GENE$\tCPR:3\n", "test": "t1\t@CHEMICAL$ x @GENE$\tfalse\n"})
    task = load_task(f"re:{re_dir}", data_cfg())
    assert task.kind == "relation" and task.labels == ["CPR:3", "CPR:4", "false"] and task.negative_label == "false"
    assert [(e.text, task.labels[e.label]) for e in task.splits["train"]] == [
        ("@CHEMICAL$ inhibits @GENE$ .", "CPR:4"), ('@CHEMICAL$ and @GENE$ "q"', "false")]
    assert task.splits["val"][0].text == "@CHEMICAL$ binds @GENE$"


def test_relation_errors_name_the_line(tmp_path):
    re_dir = write_splits(tmp_path / "re", {"train": "a\tb\tc\td\n", "dev": "s\tx\n", "test": "s\tx\n"})
    with pytest.raises(TaskError, match=r"train.tsv:1: expected .* got 4 fields"):
        load_task(f"re:{re_dir}", data_cfg())


def test_similarity_pairs_and_scores(tmp_path):
    sim = write_splits(tmp_path / "sim", {s: "index\tsentence1\tsentence2\tscore\n0\ta b\tc d\t2.5\n"
                                          for s in ("train", "dev", "test")})
    task = load_task(f"similarity:{sim}", data_cfg())
    e = task.splits["test"][0]
    assert task.kind == "similarity" and (e.text, e.text_pair, e.label) == ("a b", "c d", 2.5)
    (sim / "test.tsv").write_text("index\tsentence1\tsentence2\tscore\n0\ta\tb\thigh\n")
    with pytest.raises(TaskError, match=r"test.tsv:2: field score 'high' is not a number"):
        load_task(f"similarity:{sim}", data_cfg())
    (sim / "test.tsv").write_text("index\tsentence1\tsentence2\n")
    with pytest.raises(TaskError, match=r"test.tsv:1: the header lacks score"):
        load_task(f"similarity:{sim}", data_cfg())


def test_multilabel_file_with_splits_and_directory(tmp_path):
    rows = [{"pmid": "1", "text": "a", "labels": ["x", "y"], "split": "train"},
            {"pmid": "2", "text": "b", "labels": [], "split": "val"},
            {"pmid": "3", "text": "c", "labels": ["y"], "split": "test"}]
    path = tmp_path / "ml.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(f"multilabel:{path}", data_cfg())
    assert task.kind == "multilabel" and task.labels == ["x", "y"]
    assert [(e.text, e.label) for s in ("train", "val", "test") for e in task.splits[s]] == [
        ("a", [0, 1]), ("b", []), ("c", [1])]
    directory = write_splits(tmp_path / "hoc", {s: json.dumps({"text": s, "labels": ["z"]}) + "\n"
                                                for s in ("train", "devel", "test")}, ".jsonl")
    assert load_task(f"multilabel:{directory}", data_cfg()).splits["val"][0].text == "devel"
    path.write_text('{"text": "a", "labels": "x"}\n')
    with pytest.raises(TaskError, match=r"ml.jsonl:1: field labels: expected a list of strings"):
        load_task(f"multilabel:{path}", data_cfg())


HOC_HEADER = "labels\tsentence\tindex\n"


def test_hoc_tsv_layout_reads_sentences_hallmarks_and_ids_exactly(tmp_path):
    hoc = write_splits(tmp_path / "hoc", {
        "train": HOC_HEADER + "0_0,1_1,2_1\tCells \"escape\" apoptosis .\t1234_s0\n"
                              "0_0,1_0,2_0\tNo hallmark here .\t1234_s1\n",
        "dev": HOC_HEADER + "0_1,1_0,2_0\tTumours invade .\t77_s0\n",
        "test": "index\tlabels\tsentence\n99_s3\t0_0,1_0,2_1\tGenomes mutate .\n"})  # columns by name
    task = load_task(f"multilabel:{hoc}", data_cfg())
    assert task.kind == "multilabel" and task.labels == ["0", "1", "2"]
    rows = {s: [(e.id, e.text, [task.labels[i] for i in e.label]) for e in task.splits[s]] for s in task.splits}
    assert rows == {"train": [("1234_s0", 'Cells "escape" apoptosis .', ["1", "2"]),
                              ("1234_s1", "No hallmark here .", [])],
                    "val": [("77_s0", "Tumours invade .", ["0"])],
                    "test": [("99_s3", "Genomes mutate .", ["2"])]}


@pytest.mark.parametrize("text, message", [
    (HOC_HEADER + "0_0,1_2\ta\t1_s0\n", r"train.tsv:2: field labels: '1_2' is not HALLMARK_0 or HALLMARK_1"),
    (HOC_HEADER + "0_0,x_1\ta\t1_s0\n", r"train.tsv:2: field labels: 'x_1' is not HALLMARK_0"),
    (HOC_HEADER + "0_1\ta\t1_s0\n0_1\tb\n", r"train.tsv:3: 2 fields, the header has 3"),
    (HOC_HEADER + "0_1\ta\t \n", r"train.tsv:2: field index is empty"),
    ("labels\ttext\tindex\n0_1\ta\t1_s0\n", r"train.tsv:1: the header lacks sentence"),
])
def test_hoc_tsv_errors_name_file_line_and_field(tmp_path, text, message):
    good = HOC_HEADER + "0_1\ta\t1_s0\n"
    hoc = write_splits(tmp_path / "hoc", {"train": text, "dev": good, "test": good})
    with pytest.raises(TaskError, match=message):
        load_task(f"multilabel:{hoc}", data_cfg())


def test_a_multilabel_directory_with_both_layouts_is_refused(tmp_path):
    hoc = write_splits(tmp_path / "hoc", {s: HOC_HEADER + "0_1\ta\t1_s0\n" for s in ("train", "dev", "test")})
    (hoc / "train.jsonl").write_text(json.dumps({"text": "a", "labels": ["z"]}) + "\n")
    with pytest.raises(TaskError, match="expected train.jsonl or train.tsv .* found both"):
        load_task(f"multilabel:{hoc}", data_cfg())


def test_silver_task_names_read_the_prepared_directory(tmp_path):
    tasks = tmp_path / "prepared" / "tasks"
    write_splits(tasks / "chemical-ner", {s: "a\tO\nb\tB-Chemical\n" for s in ("train", "devel", "test")})
    rows = [{"pmid": str(i), "text": "t", "labels": ["D1"], "split": s} for i, s in enumerate(("train", "val", "test"))]
    (tasks / "mesh-labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = data_cfg(f"data.dir={tmp_path / 'prepared'}")
    assert load_task("chemical-ner", cfg).kind == "ner"
    assert load_task("mesh-labels", cfg).labels == ["D1"]
    with pytest.raises(TaskError, match="mesh-labels.jsonl: not found"):
        load_task("mesh-labels", data_cfg(f"data.dir={tmp_path}"))
