"""Every result on the W&B dashboard: eval-ppl, finetune's seeds and summary, retrieval training and
eval, and bench runs, each read back from its offline files by wandb's own reader (`wandb leet
inspect`), tied to the pretraining run of the model it measured."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from biomamba.cli import main
from biomamba.eval import perplexity
from biomamba.eval import retrieval_eval
from biomamba.tracking import model_origin
from biomamba.train import finetune
from biomamba.train.config import load_config
from biomamba.train.retrieval_train import RetrievalRunConfig, check_config, train_retrieval
from tests.conftest import data_medline_xml, data_random_articles, data_write
from tests.pretrain_helpers import ROOT, run_pretrain
from tests.task_helpers import write_beir, write_separable_task

WANDB = os.path.join(os.path.dirname(sys.executable), "wandb")


@pytest.fixture(scope="module", autouse=True)
def offline(tmp_path_factory):
    """Offline W&B whatever this machine's W&B setup, with its staging files inside the test's dirs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_DATA_DIR", str(tmp_path_factory.mktemp("wandb-data")))
        patch.setenv("WANDB_CACHE_DIR", str(tmp_path_factory.mktemp("wandb-cache")))
        patch.delenv("WANDB_API_KEY", raising=False)
        yield


def wandb_run(directory) -> dict:
    """The one offline W&B run under DIR/wandb, as wandb reads it: the run record (job_type, run_group,
    run_id, config), its summary and its history rows."""
    files = list(Path(directory, "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, f"expected one W&B run under {directory}/wandb, found {files}"
    return read_wandb_file(files[0])


def read_wandb_file(path) -> dict:
    def inspect(*flags):
        return subprocess.run([WANDB, "leet", "inspect", "--json", *flags, str(path)], capture_output=True,
                              text=True, check=True).stdout

    records = [json.loads(line) for line in inspect().splitlines() if line.startswith("{")]
    run = next(r["run"] for r in records if r["type"] == "run")
    return {"run": run, "config": run["config"]["update"], "summary": json.loads(inspect("--summary"))["summary"],
            "history": [r["history"]["item"] for r in records if r["type"] == "history"], "file": Path(path)}


def logged_table(run: dict, key: str) -> dict:
    """A W&B table logged under `key`, from the media file the summary points to."""
    return json.loads((run["file"].parent / "files" / run["summary"][key]["path"]).read_text())


@pytest.fixture(scope="module")
def pretrained(data_dir, tmp_path_factory):
    """A tiny pretraining run with W&B on, in the group tiny-group: (run dir, its W&B run)."""
    run_dir = tmp_path_factory.mktemp("pretrain") / "run"
    run_pretrain(run_dir, data_dir, "train.max_steps=3", "train.eval_every=3", "train.save_every=3",
                 "logging.wandb=true", "logging.group=tiny-group", "logging.samples=0")
    return run_dir, wandb_run(run_dir)


def test_pretraining_records_its_w_and_b_identity(pretrained):
    run_dir, run = pretrained
    assert (run["run"]["job_type"], run["run"]["run_group"]) == ("pretrain", "tiny-group")
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())["resolved"]
    assert resolved["wandb"] == {"project": "biomamba", "job_type": "pretrain", "group": "tiny-group",
                                 "id": run["run"]["run_id"]}
    assert (run_dir / "wandb_id").read_text().strip() == run["run"]["run_id"]
    for given in (run_dir, run_dir / "model"):  # evaluations name the run dir or its model/
        origin = model_origin(given)
        assert (origin.group, origin.run_id, origin.run_dir) == ("tiny-group", run["run"]["run_id"], str(run_dir))


def test_a_plain_model_dir_is_grouped_by_its_name(tmp_path):
    (tmp_path / "biobert-base").mkdir()
    (tmp_path / "finetuned" / "model").mkdir(parents=True)
    assert model_origin(tmp_path / "biobert-base").group == "biobert-base"
    assert model_origin(tmp_path / "biobert-base").run_id is None
    assert model_origin(tmp_path / "finetuned" / "model").group == "finetuned"


# ----------------------------------------------------------------------------- eval-ppl

def eval_ppl(*argv) -> int:
    parser = argparse.ArgumentParser()
    perplexity.add_arguments(parser)
    return perplexity.run(parser.parse_args([str(a) for a in argv]))


def test_eval_ppl_logs_each_datasets_bits_per_byte_in_the_pretraining_group(pretrained, data_dir, tmp_path):
    run_dir, pretraining = pretrained
    (tmp_path / "notes.txt").write_text("Insulin lowers blood glucose.\n\nKinase activity increased in tumor cells.\n")
    out = tmp_path / "ppl" / "tiny.json"
    assert eval_ppl("--model", run_dir, "--data", f"prepared:{data_dir}:val", "--data", tmp_path / "notes.txt",
                    "--limit", 4, "--max-length", 32, "--out", out, "--no-progress") == 0
    results = json.loads(out.read_text())["results"]
    run = wandb_run(out.parent)
    assert run["run"]["job_type"] == "eval-ppl" and run["run"]["display_name"] == "tiny"
    assert run["run"]["run_group"] == pretraining["run"]["run_group"] == "tiny-group"
    assert run["config"]["model_origin"]["run_id"] == pretraining["run"]["run_id"]
    assert run["config"]["protocol"]["name"] == "loglikelihood_rolling"
    assert run["config"]["git_commit"] == pretraining["config"]["resolved"]["git_commit"]
    assert [r["dataset"] for r in results] == ["pubmed-val", "notes"]
    for r in results:
        for metric in ("bits_per_byte", "word_perplexity", "token_perplexity", "byte_perplexity", "tokens", "documents"):
            assert run["summary"][f"eval-ppl/{r['dataset']}/{metric}"] == pytest.approx(r[metric], rel=1e-12)
    table = logged_table(run, "eval-ppl/results")
    bpb = table["columns"].index("bits_per_byte")
    assert [(row[0], row[bpb]) for row in table["data"]] == [(r["dataset"], pytest.approx(r["bits_per_byte"]))
                                                              for r in results]


def test_no_wandb_writes_no_wandb_directory(pretrained, tmp_path):
    run_dir, _ = pretrained
    (tmp_path / "notes.txt").write_text("Insulin lowers blood glucose.\n")
    assert eval_ppl("--model", run_dir, "--data", tmp_path / "notes.txt", "--max-length", 16,
                    "--out", tmp_path / "ppl.json", "--no-progress", "--no-wandb") == 0
    assert (tmp_path / "ppl.json").is_file() and not (tmp_path / "wandb").exists()


# ----------------------------------------------------------------------------- retrieval train and eval

@pytest.fixture(scope="module")
def retriever(pretrained, data_dir, tmp_path_factory):
    """A retriever trained for 2 steps from the pretraining run's model, W&B on: (run dir, its W&B run)."""
    pretrain_dir, _ = pretrained
    cfg = load_config(None, [f"model.init_from={pretrain_dir / 'model'}", f"data.dir={data_dir}",
                             "data.kinds=[title-abstract]", "data.max_pairs=40", "data.eval_docs=20",
                             "train.max_steps=2", "train.eval_every=2", "train.save_every=2", "train.batch_size=4",
                             "optim.warmup_steps=1", "logging.wandb=true"],
                      schema=RetrievalRunConfig, check=check_config)
    run_dir = tmp_path_factory.mktemp("retrieval") / "run"
    train_retrieval(cfg, run_dir)
    return run_dir, wandb_run(run_dir)


def test_retrieval_training_joins_the_group_of_the_model_it_starts_from(pretrained, retriever):
    (_, pretraining), (run_dir, run) = pretrained, retriever
    assert (run["run"]["job_type"], run["run"]["run_group"]) == ("retrieval-train", "tiny-group")
    assert run["config"]["model_origin"]["run_id"] == pretraining["run"]["run_id"]
    origin = model_origin(run_dir / "model")
    assert (origin.group, origin.run_id) == ("tiny-group", run["run"]["run_id"])


def test_retrieval_eval_logs_ndcg_per_task_and_method(retriever, data_dir, tmp_path):
    run_dir, retrieval_train = retriever
    beir = write_beir(tmp_path / "toy", {"d1": ("Insulin", "insulin lowers glucose"), "d2": ("Kinase", "kinase in tumors"),
                                         "d3": ("Statin", "statin lowers cholesterol")},
                      {"q1": "glucose insulin", "q2": "tumor kinase"}, {"q1": {"d1": 1}, "q2": {"d2": 1}})
    parser = argparse.ArgumentParser()
    retrieval_eval.add_arguments(parser)
    out = tmp_path / "eval"
    args = parser.parse_args(["--model", str(run_dir / "model"), "--data", str(data_dir), "--kinds", "title-abstract",
                              "--max-queries", "5", "--beir", str(beir), "--out", str(out)])
    assert retrieval_eval.run(args) == 0
    saved = json.loads((out / "retrieval.json").read_text())["results"]
    run = wandb_run(out)
    assert run["run"]["job_type"] == "retrieval-eval" and run["run"]["run_group"] == "tiny-group"
    assert run["config"]["model_origin"]["run_id"] == retrieval_train["run"]["run_id"]
    # every method a task has (a BEIR dir without val judgments has no tuned hybrid) is logged as saved
    methods = [(r["task"], m) for r in saved for m in ("dense", "bm25", "rrf", "hybrid") if m in r]
    assert ("title-abstract", "hybrid") in methods and ("beir:toy", "hybrid") not in methods
    logged = {(task, m): run["summary"][f"retrieval-eval/{task}/{m}/nDCG@10"] for task, m in methods}
    saved_by_task = {r["task"]: r for r in saved}
    assert logged == {(task, m): pytest.approx(saved_by_task[task][m]["nDCG@10"], rel=1e-12) for task, m in methods}
    chosen = saved_by_task["title-abstract"]["fusion"]["dense_weight"]
    assert run["summary"]["retrieval-eval/title-abstract/hybrid/dense_weight"] == chosen
    assert [r["task"] for r in saved] == ["title-abstract", "beir:toy"]
    assert len(logged_table(run, "retrieval-eval/results")["data"]) == len(methods)


# ----------------------------------------------------------------------------- finetune

def test_finetune_seed_runs_and_summary_run_match_results_json(pretrained, tmp_path):
    run_dir, pretraining = pretrained
    out = tmp_path / "ft"
    parser = argparse.ArgumentParser()
    finetune.add_arguments(parser)
    args = parser.parse_args(["--task", f"jsonl:{write_separable_task(tmp_path / 'toy.jsonl', examples=60)}",
                              "--model", str(run_dir / "model"), "--out", str(out), "--seeds", "1,2",
                              "optim.warmup_steps=1", "train.batch_size=8", "train.max_steps=2",
                              "train.eval_every=1", "train.save_every=2", "data.val_fraction=0.2",
                              "data.test_fraction=0.2", "logging.wandb=true"])
    assert finetune.run(args) == 0
    results = json.loads((out / "results.json").read_text())

    summary = wandb_run(out)
    assert summary["run"]["job_type"] == "finetune-summary" and summary["run"]["run_group"] == "tiny-group"
    assert summary["config"]["model_origin"]["run_id"] == pretraining["run"]["run_id"]
    for stat in ("mean", "std"):
        for split in ("val", "test"):
            for metric in ("accuracy", "macro_f1", "weighted_f1"):
                assert summary["summary"][f"{stat}/{split}/{metric}"] == pytest.approx(results[stat][split][metric],
                                                                                     rel=1e-12, abs=1e-15)
    table = logged_table(summary, "finetune/per_seed")
    assert [row[0] for row in table["data"]] == [1, 2]

    for seed_result in results["per_seed"]:
        seed = wandb_run(out / f"seed_{seed_result['seed']}")
        assert seed["run"]["job_type"] == "finetune" and seed["run"]["run_group"] == "tiny-group"
        assert seed["run"]["run_id"] == summary["config"]["seed_runs"][str(seed_result["seed"])]
        assert seed["summary"]["test/macro_f1"] == pytest.approx(seed_result["test"]["macro_f1"], rel=1e-12)
        assert [h["_step"] for h in seed["history"] if "val/macro_f1" in h] == [1, 2]  # the val curve


# ----------------------------------------------------------------------------- bench

@pytest.fixture
def small_medline_gz(tmp_path) -> Path:
    return data_write(tmp_path / "in" / "small.xml.gz", data_medline_xml(data_random_articles(1000, 30, seed=1)))


def test_bench_logs_the_ratios_it_prints(small_medline_gz, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--out", str(out), "medline_parse", "--", "--repeats", "1", str(small_medline_gz)]) == 0
    assert "total" in capsys.readouterr().out
    (table,) = json.loads((out / "medline_parse.json").read_text())["tables"]
    ratios = {row[0]: row[table["columns"].index("ratio")] for row in table["rows"]}
    assert set(ratios) == {"small.xml.gz", "total"} and all(r > 0 for r in ratios.values())
    run = wandb_run(out)
    assert (run["run"]["job_type"], run["run"]["run_group"], run["run"]["display_name"]) == \
        ("bench", "bench", "medline_parse")
    assert {k: v for k, v in run["summary"].items() if k.startswith("bench/") and not isinstance(v, dict)} == \
        {f"bench/medline_parse/parse/{name}/ratio": pytest.approx(r, rel=1e-12) for name, r in ratios.items()}
    assert len(logged_table(run, "bench/medline_parse/parse")["data"]) == 2


def test_a_bench_script_run_alone_prints_and_logs_nothing(small_medline_gz, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "medline_parse.py"), "--repeats", "1",
                             str(small_medline_gz)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "total" in result.stdout and not (tmp_path / "wandb").exists() and not (tmp_path / "runs").exists()


def test_bench_no_wandb_writes_its_tables_but_no_wandb_directory(small_medline_gz, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--no-wandb", "--out", str(out), "medline_parse", "--", "--repeats", "1",
                 str(small_medline_gz)]) == 0
    assert (out / "medline_parse.json").is_file() and not (out / "wandb").exists()


def test_fastest_in_turns_warms_up_then_times_in_turns_and_keeps_the_fastest():
    """The benches' timer (bench/scan, ssd, cpu_train, decode): untimed calls first, then timed
    rounds, every name one call per round while it is owed one; a name given 0 rounds is inf;
    times_in_turns keeps every timed call (bench/decode.py's medians)."""
    from biomamba.bench_cli import fastest_in_turns, times_in_turns
    calls, times = [], {"a": [9.0, 3.0, 5.0, 4.0], "b": [7.0, 2.0, 8.0]}

    def timer(name):
        return lambda: (calls.append(name), times[name].pop(0))[1]

    best = fastest_in_turns({"a": timer("a"), "b": timer("b")}, rounds={"a": 3, "b": 2})
    assert calls == ["a", "b", "a", "b", "a", "b", "a"] and best == {"a": 3.0, "b": 2.0}
    calls.clear()
    assert fastest_in_turns({"c": lambda: (calls.append("c"), 1.0)[1]}, rounds=0, warmups=2) == {"c": float("inf")}
    assert calls == ["c", "c"]
    times = {"a": [9.0, 3.0, 5.0], "b": [7.0, 2.0]}
    assert times_in_turns({"a": timer("a"), "b": timer("b")}, rounds=1, warmups=1) == {"a": [3.0], "b": [2.0]}
