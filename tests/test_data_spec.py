"""One meaning of --data in every command: a data SPEC (eval-ppl's grammar). A command that reads a
prepared directory's splits (retrieval eval) takes a bare DIR or prepared:DIR[:SPLIT], and refuses any
other SPEC naming what it expects."""
import json

import pytest

from biomamba.cli import main
from biomamba.data.errors import DataError
from biomamba.eval.ppl_data import parse_spec, prepared_split


def test_a_bare_prepared_dir_and_its_prepared_spec_name_the_same_data(data_dir):
    assert parse_spec(str(data_dir)) == ("prepared", data_dir, None)  # eval-ppl: a bare DIR is prepared:DIR
    assert prepared_split(str(data_dir), None, "test") == (data_dir, "test")
    assert prepared_split(f"prepared:{data_dir}", None, "test") == (data_dir, "test")
    assert prepared_split(f"prepared:{data_dir}:val", None, "test") == (data_dir, "val")
    assert prepared_split(f"prepared:{data_dir}:val", "val", "test") == (data_dir, "val")
    assert prepared_split(str(data_dir), "train", "test") == (data_dir, "train")


def test_other_specs_and_two_splits_are_refused_with_what_is_expected(data_dir, tmp_path):
    (tmp_path / "q.json").write_text("{}")
    with pytest.raises(DataError, match=r"is a bioasq SPEC; this command reads a prepared data directory: "
                                        r"--data DIR or --data prepared:DIR\[:SPLIT\]"):
        prepared_split(f"bioasq:{tmp_path / 'q.json'}", None, "test")
    with pytest.raises(DataError, match="not a directory written by `biomamba prepare`"):
        prepared_split(str(tmp_path), None, "test")
    with pytest.raises(DataError, match="names split 'val' but --split is 'test'; give one"):
        prepared_split(f"prepared:{data_dir}:val", "test", "test")


def test_retrieval_eval_takes_the_prepared_spec_as_eval_ppl_does(data_dir, tmp_path, capsys):
    common = ["--kinds", "title-abstract", "--max-queries", "8"]
    assert main(["retrieval", "eval", "--data", str(data_dir), *common, "--out", str(tmp_path / "bare")]) == 0
    assert main(["retrieval", "eval", "--data", f"prepared:{data_dir}:test", *common,
                 "--out", str(tmp_path / "spec")]) == 0
    bare, spec = (json.loads((tmp_path / name / "retrieval.json").read_text()) for name in ("bare", "spec"))
    assert bare["results"] == spec["results"]  # BM25 only: the same tasks, the same scores
    capsys.readouterr()
    assert main(["retrieval", "eval", "--data", f"jsonl:{tmp_path / 'x.jsonl'}", "--out", str(tmp_path / "o")]) == 1
    assert "is a jsonl SPEC; this command reads a prepared data directory" in capsys.readouterr().err
