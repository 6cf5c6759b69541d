"""`biomamba finetune`: learning, end to end runs on the embedded data, seeds, resume, task files, errors."""
import argparse
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from biomamba.io import discard
from tests.pretrain_helpers import ROOT, write_small_medline
from biomamba.train import finetune
from biomamba.train.config import ConfigError, load_config
from biomamba.train.finetune_config import FinetuneConfig, check_finetune
from biomamba.train.finetune_models import (ModelSpecError, build_classifier, collate, load_classifier_tokenizer,
                                            selected_step, tokenize_examples)
from biomamba.data.task_loaders import Example, TaskError, load_task
from tests.task_helpers import lora_cfg, write_separable_task

FAST = ["logging.wandb=false", "optim.warmup_steps=1", "train.batch_size=8", "data.eval_batch_size=32"]
TOY = [*FAST, "data.val_fraction=0.2", "data.test_fraction=0.2"]  # for write_separable_task files


def finetune_args(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    finetune.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def run_finetune(*argv) -> int:
    return finetune.run(finetune_args(*argv))


def data_cfg(**overrides):
    return load_config(None, [f"data.{k}={v}" for k, v in overrides.items()], schema=FinetuneConfig,
                       check=check_finetune).data


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """400 real MEDLINE records prepared with 15% val / 15% test so every sentence-role split has rows."""
    work = tmp_path_factory.mktemp("ft-data")
    xml = write_small_medline(work / "small.xml")
    subprocess.run([sys.executable, "-m", "biomamba", "prepare", "--out", str(work / "prepared"), "--medline",
                    str(xml), "--vocab-size", "512", "--val-fraction", "0.15", "--test-fraction", "0.15",
                    "--no-progress"], check=True, cwd=ROOT, capture_output=True)
    return work / "prepared"


@pytest.fixture(scope="module")
def mamba_dir(prepared, tmp_path_factory):
    """A random debug-size BioMamba (d 32, 2 layers) with the prepared tokenizer, like RUN_DIR/model."""
    from transformers import PreTrainedTokenizerFast

    from biomamba import BioMambaConfig, BioMambaForCausalLM
    out = tmp_path_factory.mktemp("mamba") / "model"
    torch.manual_seed(0)
    BioMambaForCausalLM(BioMambaConfig.from_preset("debug", vocab_size=512)).save_pretrained(out)
    PreTrainedTokenizerFast.from_pretrained(prepared / "tokenizer").save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bert_dir(prepared, tmp_path_factory):
    """A tiny random BERT (hidden 32, 2 layers) with a WordPiece tokenizer trained on the sentences."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
    out = tmp_path_factory.mktemp("bert") / "model"
    texts = [json.loads(line)["sentence"] for line in (prepared / "tasks" / "sentence-roles.jsonl").open()]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=500, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.save(str(out.parent / "tokenizer.json"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    BertForSequenceClassification(config).save_pretrained(out)
    BertTokenizerFast(tokenizer_file=str(out.parent / "tokenizer.json")).save_pretrained(out)
    return out


# ----------------------------------------------------------------------------- learning

def assert_saved_model_reproduces_test_scores(args, loader, kind):
    """RUN/seed_1/model, loaded by `loader` with its own tokenizer, scores the test split exactly as
    the run reported for its val-selected step. Returns the loaded model."""
    cfg = finetune.config_from_args(finetune_args(*args))
    run = Path(args[args.index("--out") + 1])
    results = json.loads((run / "results.json").read_text())
    model_dir = run / "seed_1" / "model"
    assert json.loads((model_dir / "selected.json").read_text())["step"] == results["per_seed"][0]["best_step"]
    model = loader.from_pretrained(model_dir).eval()
    tokenizer = load_classifier_tokenizer(str(model_dir), kind, cfg)
    _, data = finetune.prepare_data(cfg, tokenizer, kind)
    rescored = finetune.score(model, data["test"], 32, tokenizer.pad_token_id, results["labels"])
    reported = results["per_seed"][0]["test"]
    assert rescored["accuracy"] == reported["accuracy"]
    assert rescored["loss"] == pytest.approx(reported["loss"], rel=1e-4)
    return model


def assert_same_tensors(a: dict, b: dict):
    """Two state dicts with the same keys and equal tensors (to float32 round-off)."""
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)


@pytest.mark.parametrize("kind", ["biomamba", "bert"])
@pytest.mark.slow  # a training run
def test_learns_a_separable_task_to_near_perfect_accuracy_and_saves_the_selected_model(kind, mamba_dir, bert_dir,
                                                                                        tmp_path):
    from transformers import AutoModelForSequenceClassification

    from biomamba import BioMambaForSequenceClassification
    model, loader = {"biomamba": (mamba_dir, BioMambaForSequenceClassification),
                     "bert": (bert_dir, AutoModelForSequenceClassification)}[kind]
    path = write_separable_task(tmp_path / "toy.jsonl")
    out = tmp_path / "run"
    args = ["--task", f"jsonl:{path}", "--model", model, "--out", out, "--seeds", "1", *TOY,
            "train.batch_size=16", "train.max_steps=60", "train.eval_every=20", "optim.lr=3e-3"]
    assert run_finetune(*args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["labels"] == ["drug", "gene"] and results["model_family"] == kind
    # every run records the backend of every op it used (BERTs have no selective-scan ops)
    assert set(results["backends"]) == ({"selective_scan", "causal_conv1d"} if kind == "biomamba" else set())
    assert results["mean"]["test"]["accuracy"] >= 0.95
    assert results["mean"]["test"]["macro_f1"] >= 0.95
    assert_saved_model_reproduces_test_scores(args, loader, kind)
    assert sorted(p.name for p in (out / "seed_1").glob("model*")) == ["model"]  # no .tmp / .checkpointed left


# ----------------------------------------------------------------------------- end to end

def test_a_training_run_directory_fine_tunes_as_its_model_directory(mamba_dir, tmp_path):
    """--model RUN (a pretraining run: config.yaml + model/) is RUN/model, as for eval-ppl (biomamba/resolve.py)."""
    run_dir = tmp_path / "pretrain-run"
    shutil.copytree(mamba_dir, run_dir / "model")
    (run_dir / "config.yaml").write_text("logging: {group: pretraining}\n")
    task = write_separable_task(tmp_path / "toy.jsonl", 60)
    results = []
    for model in (run_dir, run_dir / "model"):
        out = tmp_path / f"ft-{model.name}"
        assert run_finetune("--task", f"jsonl:{task}", "--model", model, "--out", out, "--seeds", "1", *TOY,
                            "train.max_steps=2", "train.eval_every=2") == 0
        results.append(json.loads((out / "results.json").read_text()))
    assert results[0]["model_family"] == "biomamba"
    assert results[0]["per_seed"][0]["test"] == results[1]["per_seed"][0]["test"]


@pytest.fixture(scope="module")
def sentence_role_runs(prepared, mamba_dir, bert_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, model in (("mamba", mamba_dir), ("bert", bert_dir)):
        assert run_finetune("--task", "sentence-roles", "--model", model, "--out", root / name, "--seeds", "1,2",
                            f"data.dir={prepared}", *FAST, "train.max_steps=6", "train.eval_every=3",
                            "train.save_every=3", "train.keep_last=2", "optim.lr=1e-3") == 0
    return root


@pytest.mark.parametrize("name, kind", [("mamba", "biomamba"), ("bert", "bert")])
@pytest.mark.slow  # a training run
def test_sentence_roles_end_to_end(sentence_role_runs, name, kind):
    run = sentence_role_runs / name
    results = json.loads((run / "results.json").read_text())
    assert results["model_family"] == kind and results["task"] == "sentence-roles"
    assert results["labels"] == ["BACKGROUND", "OBJECTIVE", "METHODS", "RESULTS", "CONCLUSIONS"]
    assert [s["seed"] for s in results["per_seed"]] == [1, 2]
    for seed in results["per_seed"]:
        assert seed["best_step"] in (3, 6) and seed["wall_s"] > 0
        assert set(seed["test"]["per_class"]) == set(results["labels"])
        assert sum(c["support"] for c in seed["test"]["per_class"].values()) == seed["test"]["examples"]
    for split in ("val", "test"):
        assert set(results["mean"][split]) == set(results["std"][split]) == {"accuracy", "macro_f1", "weighted_f1"}
    rows = [json.loads(line) for line in (run / "seed_1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "split" not in r] == list(range(1, 7))
    assert [r["step"] for r in rows if r.get("split") == "val"] == [3, 6]
    assert "± " in (run / "results.md").read_text()


def first_losses(run, seed):
    rows = [json.loads(line) for line in (run / f"seed_{seed}" / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "split" not in r]


@pytest.mark.slow  # a training run
def test_seeds_give_different_runs_and_the_spread_is_reported(sentence_role_runs):
    run = sentence_role_runs / "mamba"
    assert first_losses(run, 1) != first_losses(run, 2)
    results = json.loads((run / "results.json").read_text())
    test = [s["test"]["macro_f1"] for s in results["per_seed"]]
    import numpy as np
    assert results["std"]["test"]["macro_f1"] == pytest.approx(np.std(test, ddof=1))
    assert results["mean"]["test"]["macro_f1"] == pytest.approx(np.mean(test))


@pytest.mark.slow  # a training run
def test_rerun_skips_finished_seeds_and_resume_is_exact(sentence_role_runs, prepared, mamba_dir, tmp_path, capsys):
    from safetensors.torch import load_file
    straight = sentence_role_runs / "mamba"
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    (resumed / "seed_2" / "results.json").unlink()  # seed 2 "died" after its step-3 checkpoint
    shutil.rmtree(resumed / "seed_2" / "checkpoints" / "step_0000006")
    args = ["--task", "sentence-roles", "--model", mamba_dir, "--out", resumed, "--seeds", "1,2",
            f"data.dir={prepared}", *FAST, "train.max_steps=6", "train.eval_every=3", "train.save_every=3",
            "train.keep_last=2", "optim.lr=1e-3"]
    assert run_finetune(*args) == 0
    assert "seed 1: already done" in capsys.readouterr().err
    assert first_losses(resumed, 2) == pytest.approx(first_losses(straight, 2), rel=1e-5)
    a, b = (json.loads((r / "results.json").read_text()) for r in (straight, resumed))
    assert a["per_seed"][1]["best_step"] == b["per_seed"][1]["best_step"]
    assert a["mean"]["test"] == pytest.approx(b["mean"]["test"], rel=1e-5)
    a, b = (load_file(r / "seed_2" / "model" / "model.safetensors") for r in (straight, resumed))
    assert_same_tensors(a, b)
    assert run_finetune(*args, "train.max_steps=7") == 1  # another budget in the same --out
    assert "another config" in capsys.readouterr().err


@pytest.mark.slow  # a training run
def test_the_selected_model_survives_interruption_and_resume(mamba_dir, tmp_path):
    """seed_N/model after a resume is the best as of the resumed checkpoint, even when the run had
    written a newer best (which the resume forgets) or was killed between two renames."""
    from safetensors.torch import load_file

    from biomamba.train.checkpointer import Checkpointer
    cfg = load_config(None, [], schema=FinetuneConfig, check=check_finetune)
    model = build_classifier(str(mamba_dir), "biomamba", ["a", "b"], cfg).eval()
    checkpointer = Checkpointer(tmp_path)
    best = finetune.BestModel(tmp_path, load_classifier_tokenizer(str(mamba_dir), "biomamba", cfg))

    def improve(step):
        with torch.no_grad():
            model.score.bias.fill_(step)
        best.save(model, step)

    def saved_bias():
        return load_file(best.path / "model.safetensors")["score.bias"][0].item()

    improve(3)
    checkpointer.save(3, model, {})
    improve(6)
    improve(9)  # both after the step-3 checkpoint; then the run dies
    assert best.step == 9 and selected_step(best.kept) == 3
    best.reconcile(3)
    assert best.step == 3 and saved_bias() == 3 and not best.kept.exists()

    improve(6)
    discard(best.path)  # killed after model/ went to model.checkpointed/, before the new one came in
    best.reconcile(3)
    assert best.step == 3 and saved_bias() == 3
    from biomamba import BioMambaForSequenceClassification
    assert BioMambaForSequenceClassification.from_pretrained(best.path).score.bias.tolist() == [3.0, 3.0]

    best.reconcile(0)  # no checkpoint: a fresh start keeps no model
    assert not best.path.exists()


@pytest.mark.slow  # a training run
def test_report_finetune_compares_runs(sentence_role_runs, capsys):
    from biomamba.eval import report_finetune
    parser = argparse.ArgumentParser()
    report_finetune.add_arguments(parser)
    out = sentence_role_runs / "report"
    runs = [sentence_role_runs / "mamba", sentence_role_runs / "bert"]
    assert report_finetune.run(parser.parse_args([*map(str, runs), "--out", str(out)])) == 0
    text = (out / "finetune_report.md").read_text()
    assert "| mamba | sentence-roles | biomamba" in text and "| bert | sentence-roles | bert" in text
    assert "is better than" in text
    report = json.loads((out / "finetune_report.json").read_text())
    assert report["runs"][1]["delta_vs_first"]["macro_f1"] == pytest.approx(
        report["runs"][1]["mean"]["test"]["macro_f1"] - report["runs"][0]["mean"]["test"]["macro_f1"])


# ----------------------------------------------------------------------------- inputs

def test_mamba_inputs_end_with_eos_and_are_right_padded(mamba_dir):
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast.from_pretrained(mamba_dir)
    examples = [Example("Cells were grown in culture.", None, 0), Example("A question?", "A long context " * 20, 1)]
    single, pair = tokenize_examples(examples, tok, "biomamba", max_length=16)
    assert single["input_ids"][-1] == tok.eos_token_id
    assert single["input_ids"][:-1] == tok("Cells were grown in culture.", add_special_tokens=False)["input_ids"]
    assert len(pair["input_ids"]) == 16 and pair["input_ids"][-1] == tok.eos_token_id
    assert pair["input_ids"].count(tok.eos_token_id) == 2  # text EOS pair EOS
    batch = collate([single, pair], [0, 1], tok.pad_token_id)
    assert batch["attention_mask"][0].tolist() == [1] * len(single["input_ids"]) + [0] * (16 - len(single["input_ids"]))
    assert batch["labels"].tolist() == [0, 1]


def test_bert_inputs_use_its_own_tokenizer(bert_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(bert_dir)
    (item,) = tokenize_examples([Example("cells were grown", "in culture", 0)], tok, "bert", max_length=32)
    assert item["input_ids"][0] == tok.cls_token_id and item["input_ids"][-1] == tok.sep_token_id
    assert set(item["token_type_ids"]) == {0, 1}


# ----------------------------------------------------------------------------- LoRA

def test_lora_without_peft_says_how_to_get_it(mamba_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(ModelSpecError, match="pip install peft"):
        build_classifier(str(mamba_dir), "biomamba", ["a", "b"], lora_cfg())


def test_lora_on_bert_trains_only_adapters_and_the_head(bert_dir):
    # BioMamba's, for both block types: test_model_common.py
    pytest.importorskip("peft")
    targets, head = {"query", "value"}, "classifier"
    model = build_classifier(str(bert_dir), "bert", ["a", "b", "c"], lora_cfg())
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    adapters = [name for name in trained if ".lora_" in name]
    heads = [name for name in trained if f".{head}.modules_to_save." in name]
    assert sorted(adapters + heads) == sorted(trained) and len(heads) == 2  # head weight and bias
    assert {name.split(".lora_")[0].rsplit(".", 1)[1] for name in adapters} == targets
    assert len(adapters) == 2 * len(targets) * 2  # lora_A and lora_B on each target in both layers


def lora_checkpoint_weights(run, step) -> dict:
    from safetensors.torch import load_file
    return load_file(run / "seed_1" / "checkpoints" / f"step_{step:07d}" / "model" / "model.safetensors")


@pytest.mark.slow  # a training run
def test_lora_on_biomamba_learns_with_a_frozen_backbone_and_saves_the_selected_model(mamba_dir, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification
    args = ["--task", f"jsonl:{write_separable_task(tmp_path / 'toy.jsonl')}", "--model", mamba_dir, "--out",
            tmp_path / "run", "--seeds", "1", *TOY, "model.lora=true", "train.batch_size=16", "train.max_steps=20",
            "train.eval_every=10", "optim.lr=1e-2"]
    assert run_finetune(*args) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["mean"]["test"]["accuracy"] >= 0.95 and results["mean"]["test"]["macro_f1"] >= 0.95
    assert 0 < results["trainable_parameters"] < results["parameters"] / 4

    base = {k: v for k, v in load_file(mamba_dir / "model.safetensors").items() if k.startswith("backbone.")}
    saved = {k.removeprefix("peft_model.base_model.model.").replace(".base_layer.", "."): v
             for k, v in lora_checkpoint_weights(tmp_path / "run", 20).items()}
    assert {k for k in saved if k.startswith("backbone.") and ".lora_" not in k} == base.keys()
    assert all(torch.equal(saved[k], v) for k, v in base.items())  # the backbone did not move
    assert all(v.abs().max() > 0 for k, v in saved.items() if ".lora_B." in k)  # the adapters did (from 0)

    model = assert_saved_model_reproduces_test_scores(args, AutoModelForSequenceClassification, "biomamba")
    assert type(model).__name__ == "BioMambaForSequenceClassification"  # a plain model: adapters merged


@pytest.mark.slow  # a training run
def test_lora_on_a_tiny_bert_runs_and_merges(bert_dir, tmp_path, capsys):
    pytest.importorskip("peft")
    from transformers import AutoModelForSequenceClassification
    out = tmp_path / "run"
    assert run_finetune("--task", f"jsonl:{write_separable_task(tmp_path / 'toy.jsonl', 120)}", "--model", bert_dir,
                        "--out", out, "--seeds", "1", *TOY, "model.lora=true", "train.max_steps=4",
                        "train.eval_every=2") == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model_family"] == "bert" and 0 < results["trainable_parameters"] < results["parameters"] / 4
    header = capsys.readouterr().out
    assert "LoRA" in header and f"({results['trainable_parameters'] / 1e6:.3f}M trained)" in header
    model = AutoModelForSequenceClassification.from_pretrained(out / "seed_1" / "model")
    assert type(model).__name__ == "BertForSequenceClassification"
    assert not any("lora" in name for name in model.state_dict())


@pytest.mark.slow  # a training run
def test_lora_resume_equals_a_straight_run(mamba_dir, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file
    task = write_separable_task(tmp_path / "toy.jsonl", 120)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = ["--task", f"jsonl:{task}", "--model", mamba_dir, "--seeds", "1", *TOY, "model.lora=true",
            "model.lora_dropout=0.1", "train.max_steps=6", "train.eval_every=3", "train.save_every=3",
            "train.keep_last=2", "optim.lr=1e-2"]
    assert run_finetune(*args, "--out", straight) == 0
    shutil.copytree(straight, resumed)
    (resumed / "seed_1" / "results.json").unlink()  # it "died" after its step-3 checkpoint
    shutil.rmtree(resumed / "seed_1" / "checkpoints" / "step_0000006")
    shutil.rmtree(resumed / "seed_1" / "model")
    assert run_finetune(*args, "--out", resumed) == 0
    assert json.loads((resumed / "seed_1" / "results.json").read_text())["resumed_from"] == 3
    assert first_losses(resumed, 1) == pytest.approx(first_losses(straight, 1), rel=1e-5)
    a, b = (lora_checkpoint_weights(run, 6) for run in (straight, resumed))
    assert_same_tensors(a, b)
    a, b = (load_file(run / "seed_1" / "model" / "model.safetensors") for run in (straight, resumed))
    assert_same_tensors(a, b)
    a, b = (json.loads((run / "results.json").read_text()) for run in (straight, resumed))
    assert a["per_seed"][0]["best_step"] == b["per_seed"][0]["best_step"]
    assert a["mean"]["test"] == pytest.approx(b["mean"]["test"], rel=1e-5)


# ----------------------------------------------------------------------------- task files

def test_bioasq_yesno_and_pubmedqa_files(tmp_path):
    questions = [{"id": f"q{i}", "body": f"Is drug {i} effective?", "type": "yesno",
                  "snippets": [{"document": "http://www.ncbi.nlm.nih.gov/pubmed/1", "text": f"Drug {i} works."}],
                  "exact_answer": "Yes." if i % 2 else ["no"]} for i in range(60)]
    questions.append({"id": "f", "body": "Which gene?", "type": "factoid", "exact_answer": ["BRCA1"]})
    (tmp_path / "bioasq.json").write_text(json.dumps({"questions": questions}))
    task = load_task(f"bioasq-yesno:{tmp_path / 'bioasq.json'}", data_cfg(val_fraction=0.2, test_fraction=0.2))
    assert task.labels == ["no", "yes"]
    every = [e for rows in task.splits.values() for e in rows]
    assert len(every) == 60 and all(e.text_pair.startswith("Drug") for e in every)
    assert {task.labels[e.label] for e in every if e.text == "Is drug 1 effective?"} == {"yes"}

    pubmedqa = {str(100 + i): {"QUESTION": f"Does x{i} help?", "CONTEXTS": ["First.", "Second."],
                               "final_decision": ["yes", "no", "maybe"][i % 3]} for i in range(60)}
    (tmp_path / "pqa.json").write_text(json.dumps(pubmedqa))
    task = load_task(f"pubmedqa:{tmp_path / 'pqa.json'}", data_cfg(val_fraction=0.2, test_fraction=0.2))
    assert task.labels == ["yes", "no", "maybe"]
    assert sum(len(r) for r in task.splits.values()) == 60
    assert task.splits["train"][0].text_pair == "First. Second."


def test_csv_with_split_column_and_hf_directory(tmp_path):
    import datasets
    lines = ["text,text_pair,label,split"] + [f"sentence {i},pair {i},{'ab'[i % 2]},{['train', 'dev', 'test'][i % 3]}"
                                              for i in range(30)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    task = load_task(f"csv:{tmp_path / 't.csv'}", data_cfg())
    assert task.labels == ["a", "b"] and [len(task.splits[s]) for s in ("train", "val", "test")] == [10, 10, 10]
    assert task.splits["val"][0].text_pair == "pair 1"

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    parts = {split: datasets.Dataset.from_dict({"text": [f"{split} {i}" for i in range(8)], "label": [0, 1] * 4},
                                               features=features) for split in ("train", "validation", "test")}
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "hf"))
    task = load_task(f"hf:{tmp_path / 'hf'}", data_cfg())
    assert task.labels == ["neg", "pos"] and task.splits["val"][1].label == 1
    assert task.splits["test"][0].text == "test 0"


BAD_FILES = [
    ("jsonl", '{"text": "a", "label": "x"}\n{not json}\n', r"bad\.jsonl:2: not valid JSON"),
    ("jsonl", '{"text": "a"}\n', r"row 1 has no label"),
    ("jsonl", "", r"no rows"),
    ("jsonl", '{"text": "a", "label": "x", "split": "holdout"}\n', r"split 'holdout'"),
    ("csv", "sentence,label\nhello,x\n", r"row 1 has no text .*columns: sentence, label"),
    ("bioasq-yesno", "[1, 2", r"not a BioASQ task B JSON file"),
    ("pubmedqa", '{"1": {"QUESTION": "q?", "CONTEXTS": []}}', r"lacks final_decision"),
]


@pytest.mark.parametrize("kind, text, message", BAD_FILES)
def test_bad_task_files_give_clear_errors(tmp_path, kind, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(TaskError, match=message):
        load_task(f"{kind}:{path}", data_cfg())


def test_task_errors_name_the_fix(tmp_path, prepared):
    with pytest.raises(TaskError, match="task file not found"):
        load_task(f"jsonl:{tmp_path / 'missing.jsonl'}", data_cfg())
    with pytest.raises(TaskError, match="unknown task 'sentence-role'"):
        load_task("sentence-role", data_cfg())
    with pytest.raises(TaskError, match="set data.dir=DIR"):
        load_task("sentence-roles", data_cfg())
    rows = [{"text": f"t{i}", "label": "ab"[i % 2], "split": "train"} for i in range(6)]
    (tmp_path / "nosplit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TaskError, match="the val split of task .* is empty"):
        load_task(f"jsonl:{tmp_path / 'nosplit.jsonl'}", data_cfg())
    (tmp_path / "pqa.json").write_text('{"1": {"question": "q?", "contexts": ["c"], "final_decision": "perhaps"}}')
    with pytest.raises(TaskError, match="label 'perhaps' .* is not one of"):
        load_task(f"pubmedqa:{tmp_path / 'pqa.json'}", data_cfg())


def test_cli_errors_exit_1_with_one_line(tmp_path, capsys, mamba_dir):
    assert run_finetune("--task", "sentence-roles", "--model", mamba_dir, "--out", tmp_path / "r",
                        "logging.wandb=false") == 1
    assert "error: task sentence-roles reads a prepared directory" in capsys.readouterr().err
    assert run_finetune("--task", "csv:x.csv", "--out", tmp_path / "r") == 1
    assert "--model required" in capsys.readouterr().err
    assert run_finetune("--task", "csv:x.csv", "--model", tmp_path, "--out", tmp_path / "r") == 1
    assert "no config.json" in capsys.readouterr().err


def test_under_torchrun_finetune_refuses_and_writes_nothing(tmp_path, capsys, mamba_dir, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run_finetune("--task", "sentence-roles", "--model", mamba_dir, "--out", tmp_path / "r") == 1
    assert "cannot run under torchrun (WORLD_SIZE=2)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_config_problems_are_reported_together():
    with pytest.raises(ConfigError) as error:
        load_config(None, ["model.pooling=max", "seeds=[1,1]", "data.max_length=2", "train.max_steps=0",
                           "data.nope=1", "model.lora_dropout=1.0"], schema=FinetuneConfig, check=check_finetune)
    text = str(error.value)
    for part in ("model.pooling must be one of last, mean", "seeds must be distinct", "data.max_length must be >= 4",
                 "train.max_steps must be >= 1", "unknown key data.nope", "model.lora_dropout must be in [0, 1)"):
        assert part in text


@pytest.mark.parametrize("kind", ["biomamba", "bert"])
def test_random_init_keeps_the_architecture_and_draws_every_weight_from_the_seed(kind, mamba_dir, bert_dir):
    """model.init=random: the control row of a pretraining comparison. Same modules and shapes as the
    pretrained classifier, no pretrained tensor kept, and the draw is the seed's (so each seed is a
    different random model, and a rerun of a seed the same one)."""
    path = str(mamba_dir if kind == "biomamba" else bert_dir)
    random_cfg = load_config(None, ["model.init=random"], schema=FinetuneConfig, check=check_finetune)
    plain_cfg = load_config(None, [], schema=FinetuneConfig, check=check_finetune)

    def weights(cfg, seed):
        torch.manual_seed(seed)
        return {n: p.detach().clone() for n, p in build_classifier(path, kind, ["a", "b"], cfg).state_dict().items()}

    pretrained, fresh, again, other = (weights(plain_cfg, 1), weights(random_cfg, 1), weights(random_cfg, 1),
                                       weights(random_cfg, 2))
    assert {n: t.shape for n, t in fresh.items()} == {n: t.shape for n, t in pretrained.items()}
    assert_same_tensors(fresh, again)
    # drawn from the seed: all but the init's constants (LayerNorm's ones, zero biases, Mamba's A_log)
    drawn = [n for n in fresh if not torch.equal(fresh[n], other[n])]
    embedding = "backbone.embedding.weight" if kind == "biomamba" else "bert.embeddings.word_embeddings.weight"
    assert embedding in drawn and len(drawn) > len(fresh) // 3
    assert not [n for n in drawn if torch.equal(fresh[n], pretrained[n])]


# ----------------------------------------------------------------------------- same-budget BERT

def test_masking_is_deterministic_per_step_and_bert_like():
    from biomamba.train.mlm import mask_windows
    windows = torch.randint(0, 500, (64, 128))
    a = mask_windows(windows, 512, 514, 512, torch.Generator().manual_seed(3))
    b = mask_windows(windows, 512, 514, 512, torch.Generator().manual_seed(3))
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert (a["input_ids"][:, 0] == 512).all() and (a["labels"][:, 0] == -100).all()
    scored = a["labels"][:, 1:] != -100
    assert 0.13 < scored.float().mean() < 0.17
    assert torch.equal(a["labels"][:, 1:][scored], windows[scored])
    masked = (a["input_ids"][:, 1:] == 514)
    assert not (masked & ~scored).any() and 0.75 < masked.sum() / scored.sum() < 0.85


@pytest.mark.slow  # a training run
def test_pretrain_bert_matches_size_and_loads_for_finetuning(prepared, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tests.pretrain_helpers import pretrain_command
    run = tmp_path / "bert"
    result = subprocess.run(pretrain_command(run, prepared, "model.arch=bert", "train.max_steps=4",
                                             "train.eval_every=2"), cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["final"]["tokens_seen"] == 4 * 4 * 64  # the Mamba's token budget: steps x batch x seq_len
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("split") == "val"] == [2, 4]
    from biomamba import BioMambaConfig, BioMambaForCausalLM
    mamba = sum(p.numel() for p in BioMambaForCausalLM(BioMambaConfig.from_preset("debug", vocab_size=512)).parameters())
    assert abs(results["resolved"]["parameters"] - mamba) / mamba < 0.35  # whole layers at width 32
    tok = AutoTokenizer.from_pretrained(run / "model")
    ids = tok("cells were grown", "in culture")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids.count(tok.sep_token_id) == 2 and tok.mask_token_id is not None
    model = AutoModelForSequenceClassification.from_pretrained(run / "model", num_labels=5)
    assert type(model).__name__ == "BertForSequenceClassification"
    out = tmp_path / "ft"
    assert run_finetune("--task", "sentence-roles", "--model", run / "model", "--out", out, "--seeds", "1",
                        f"data.dir={prepared}", *FAST, "train.max_steps=2", "train.eval_every=2") == 0
    assert json.loads((out / "results.json").read_text())["model_family"] == "bert"


def test_capped_splits_keep_a_hash_subset_whatever_the_file_order(tmp_path):
    """data.max_*_examples stream the file and keep the examples whose (seed, id) hash is lowest."""
    import random
    rows = [{"id": f"ex{i}", "text": f"text {i}", "label": "ab"[i % 2], "split": ("train", "val", "test")[i % 3]}
            for i in range(300)]
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    for name, part in (("a.jsonl", rows), ("b.jsonl", shuffled)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    caps = dict(max_train_examples=20, max_eval_examples=7)
    a = load_task(f"jsonl:{tmp_path / 'a.jsonl'}", data_cfg(**caps))
    b = load_task(f"jsonl:{tmp_path / 'b.jsonl'}", data_cfg(**caps))
    assert [len(a.splits[s]) for s in ("train", "val", "test")] == [20, 7, 7] and a.seen["train"] == 100
    assert {s: {e.text for e in a.splits[s]} for s in a.splits} == {s: {e.text for e in b.splits[s]} for s in b.splits}
    other = load_task(f"jsonl:{tmp_path / 'a.jsonl'}", data_cfg(**caps, subset_seed=1))
    assert {e.text for e in other.splits["train"]} != {e.text for e in a.splits["train"]}
