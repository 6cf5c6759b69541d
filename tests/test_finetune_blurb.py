"""`biomamba finetune` on BLURB's task shapes: end to end per kind, the predictions file recomputes the
reported metric, subword alignment, a BERT NER run equals transformers' Trainer, exact resume per head,
LoRA on every new head (adapters + head trained, the merged seed_N/model reloads with the same logits),
the multi-label threshold in seed_N/model, and `report finetune`'s BLURB-style average."""
import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.scheme import IOB2
from sklearn.metrics import f1_score

from biomamba.data.task_loaders import load_task
from biomamba.train import finetune
from biomamba.train.config import load_config
from biomamba.train.finetune_config import FinetuneConfig, check_finetune
from biomamba.train.finetune_kinds import encode_tokens
from biomamba.train.finetune_models import (HEADS, LORA_TARGETS, THRESHOLD, build_classifier,
                                            load_classifier_tokenizer, save_selected, save_trainable)
from tests.blurb_task_helpers import (CHEMICALS, WORDS, ner_sentences, write_multilabel_jsonl, write_ner_dir,
                                      write_relation_dir, write_similarity_dir)
from tests.model_helpers import bpe_tokenizer

FAST = ["logging.wandb=false", "optim.warmup_steps=1", "train.batch_size=8", "data.eval_batch_size=32",
        "model.scan_backend=torch", "optim.lr=3e-3"]


def run_finetune(*argv) -> int:
    parser = argparse.ArgumentParser()
    finetune.add_arguments(parser)
    return finetune.run(parser.parse_args([str(a) for a in argv]))


def cfg_of(*overrides):
    return load_config(None, [*FAST, *overrides], schema=FinetuneConfig, check=check_finetune)


def corpus():
    return [" ".join(w for w, _ in s) for s in ner_sentences(200, 9)] + [" ".join(CHEMICALS + WORDS)] * 5


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    work = tmp_path_factory.mktemp("blurb-tasks")
    return {"ner": f"ner:{write_ner_dir(work / 'ner')}", "multilabel": f"multilabel:{write_multilabel_jsonl(work / 'ml.jsonl')}",
            "relation": f"re:{write_relation_dir(work / 're')}", "similarity": f"similarity:{write_similarity_dir(work / 'sim')}"}


@pytest.fixture(scope="module")
def mamba_dir(tmp_path_factory):
    """A random debug-size BioMamba with a byte-level BPE tokenizer (spaces belong to the next token)."""
    from biomamba import BioMambaConfig, BioMambaForCausalLM
    out = tmp_path_factory.mktemp("mamba")
    tokenizer = bpe_tokenizer(out, corpus())
    torch.manual_seed(0)
    BioMambaForCausalLM(BioMambaConfig.from_preset("debug", vocab_size=len(tokenizer))).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny BERT without dropout (so Trainer and our loop draw no random numbers while training)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
    out = tmp_path_factory.mktemp("bert")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(corpus(), trainers.WordPieceTrainer(
        vocab_size=60, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))  # small: words split
    tok.save(str(out / "tokenizer.json"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertForSequenceClassification(config).save_pretrained(out)
    BertTokenizerFast(tokenizer_file=str(out / "tokenizer.json")).save_pretrained(out)
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- alignment

@pytest.mark.parametrize("family", ["biomamba", "bert"])
def test_a_words_tag_labels_its_first_subword_and_the_rest_are_ignored(family, mamba_dir, bert_dir, tasks):
    model_dir = mamba_dir if family == "biomamba" else bert_dir
    cfg = cfg_of()
    tokenizer = load_classifier_tokenizer(str(model_dir), family, cfg)
    task = load_task(tasks["ner"], cfg.data)
    examples = task.splits["train"][:20]
    for example, item in zip(examples, encode_tokens(examples, tokenizer, family, 128)):
        labelled = [i for i, x in enumerate(item["labels"]) if x != -100]
        assert labelled == item["word_starts"]  # one label per word, at its first subword
        assert [item["labels"][i] for i in labelled] == example.label
        for word, start in zip(example.tokens, item["word_starts"]):  # the subword there begins the word
            piece = tokenizer.decode([item["input_ids"][start]]).strip().lower().replace("##", "")
            assert word.lower().startswith(piece) and piece
    if family == "biomamba":
        assert item["input_ids"][-1] == tokenizer.eos_token_id


def test_words_cut_off_by_max_length_are_predicted_o(mamba_dir, tasks):
    cfg = cfg_of()
    tokenizer = load_classifier_tokenizer(str(mamba_dir), "biomamba", cfg)
    example = load_task(tasks["ner"], cfg.data).splits["train"][0]
    (item,) = encode_tokens([example], tokenizer, "biomamba", 4)
    assert len(item["input_ids"]) == 4 and item["word_starts"][-1] == -1


# ----------------------------------------------------------------------------- end to end

def recomputed(kind: str, rows: list[dict], labels: list[str]) -> float:
    """The test metric from seed_N/test_predictions.jsonl with seqeval / scikit-learn / scipy."""
    gold, pred = [r["gold"] for r in rows], [r["pred"] for r in rows]
    if kind == "ner":
        return seqeval_f1(gold, pred, mode="strict", scheme=IOB2)
    if kind == "similarity":
        return pearsonr(gold, pred)[0]
    if kind == "multilabel":
        hot = lambda rows: np.array([[name in r for name in labels] for r in rows])  # noqa: E731
        return f1_score(hot(gold), hot(pred), average="micro")
    return f1_score(gold, pred, labels=[n for n in labels if n != "false"], average="micro")


@pytest.mark.slow  # four short training runs
@pytest.mark.parametrize("kind, extra", [("ner", ["model.bidirectional=true"]), ("multilabel", []),
                                         ("relation", []), ("similarity", [])])
def test_each_kind_trains_and_its_predictions_recompute_the_reported_metric(kind, extra, tasks, mamba_dir, tmp_path):
    out = tmp_path / kind
    assert run_finetune("--task", tasks[kind], "--model", mamba_dir, "--out", out, "--seeds", "1", *FAST,
                        "train.max_steps=4", "train.eval_every=2", *extra) == 0
    results = json.loads((out / "results.json").read_text())
    metric = results["metric"]
    rows = read_jsonl(out / "seed_1" / "test_predictions.jsonl")
    assert len(rows) == results["split_sizes"]["test"]
    assert recomputed(kind, rows, results["labels"]) == pytest.approx(results["per_seed"][0]["test"][metric], abs=1e-9)
    if kind == "multilabel":  # the test threshold is the one chosen on val, and seed_N/model carries it
        threshold = results["per_seed"][0]["val"]["threshold"]
        assert results["per_seed"][0]["test"]["threshold"] == threshold
        assert_model_threshold(out / "seed_1" / "model", threshold)


def assert_model_threshold(model_dir: Path, threshold: float):
    """The saved config.json names the val-chosen threshold, and from_pretrained gives it back."""
    from transformers import AutoConfig
    assert json.loads((model_dir / "config.json").read_text())[THRESHOLD] == threshold
    assert getattr(AutoConfig.from_pretrained(model_dir), THRESHOLD) == threshold


def test_a_bert_ner_run_equals_transformers_trainer(tasks, bert_dir, tmp_path):
    """3 full-batch steps, constant lr, no weight decay: our loop and Trainer end at the same weights."""
    from safetensors.torch import load_file
    from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments
    settings = ["train.max_steps=3", "train.eval_every=3", "train.save_every=3", "optim.warmup_steps=0",
                "optim.schedule=constant", "optim.weight_decay=0", "optim.lr=1e-2", "optim.beta2=0.999"]
    cfg = cfg_of(*settings)
    task = load_task(tasks["ner"], cfg.data)
    train = task.splits["train"]
    out = tmp_path / "ours"
    assert run_finetune("--task", tasks["ner"], "--model", bert_dir, "--out", out, "--seeds", "1", *FAST,
                        *settings, f"train.batch_size={len(train)}") == 0
    ours = load_file(out / "seed_1" / "checkpoints" / "step_0000003" / "model" / "model.safetensors")

    tokenizer = load_classifier_tokenizer(str(bert_dir), "bert", cfg)
    dataset = [{k: v for k, v in item.items() if k != "word_starts"}
               for item in encode_tokens(train, tokenizer, "bert", cfg.data.max_length)]
    torch.manual_seed(1)  # as finetune seeds the head's initialisation
    model = build_classifier(str(bert_dir), "bert", task.labels, cfg, "ner")
    args = TrainingArguments(output_dir=str(tmp_path / "theirs"), per_device_train_batch_size=len(train),
                             max_steps=3, learning_rate=1e-2, lr_scheduler_type="constant", weight_decay=0.0,
                             max_grad_norm=1.0, adam_beta2=0.999, report_to=[], save_strategy="no", use_cpu=True,
                             seed=1, dataloader_num_workers=0, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=dataset,
            data_collator=DataCollatorForTokenClassification(tokenizer)).train()
    theirs = model.state_dict()
    assert ours.keys() == theirs.keys()
    for name, weight in ours.items():
        assert (weight - theirs[name]).abs().max() <= 1e-5, name


# ----------------------------------------------------------------------------- LoRA on the new heads

LORA_HEADS = [("biomamba", "ner", []), ("biomamba", "ner", ["model.bidirectional=true"]), ("bert", "ner", []),
              ("biomamba", "multilabel", []), ("biomamba", "similarity", []), ("bert", "multilabel", [])]
HEAD_LABELS = {"ner": ["O", "B-Chemical", "I-Chemical"], "multilabel": ["drug", "gene", "cell"],
               "similarity": ["score"]}


def lora_head_model(family, kind, extra, model_dir):
    torch.manual_seed(0)
    return build_classifier(str(model_dir), family, HEAD_LABELS[kind], cfg_of("model.lora=true", *extra), kind)


def auto_class(kind):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification
    return AutoModelForTokenClassification if kind == "ner" else AutoModelForSequenceClassification


@pytest.mark.parametrize("family, kind, extra", LORA_HEADS)
def test_lora_on_each_new_head_trains_only_the_adapters_and_the_head(family, kind, extra, mamba_dir, bert_dir):
    pytest.importorskip("peft")
    model = lora_head_model(family, kind, extra, mamba_dir if family == "biomamba" else bert_dir)
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
    adapters = [name for name in trained if ".lora_A." in name or ".lora_B." in name]
    heads = [name for name in trained if f".{HEADS[family][0]}.modules_to_save." in name]
    assert sorted(adapters + heads) == sorted(trained) and len(heads) == 2  # head weight and bias
    assert sum(p.numel() for p in trained.values()) == model.peft_model.get_nb_trainable_parameters()[0]
    targets = {"bert": {"query", "value"}, "biomamba": set(LORA_TARGETS["biomamba"]["Mamba1"])}[family]
    assert {name.split(".lora_")[0].rsplit(".", 1)[1] for name in adapters} == targets
    reverse = [name for name in adapters if ".backbone_reverse." in name]
    if "model.bidirectional=true" in extra:  # the reverse backbone is adapted on the same projections
        assert len(reverse) == len(adapters) / 2 == 2 * len(targets) * 2  # lora_A, lora_B; two layers
    else:
        assert not reverse and len(adapters) == 2 * len(targets) * 2


@pytest.mark.parametrize("family, kind, extra", LORA_HEADS)
def test_a_merged_lora_head_reloads_with_the_wrapped_models_logits(family, kind, extra, mamba_dir, bert_dir,
                                                                    tmp_path):
    """save_selected merges the adapters into a plain model dir; the usual from_pretrained of that dir
    gives the LoRA-wrapped model's logits (on right-padded rows)."""
    pytest.importorskip("peft")
    model = lora_head_model(family, kind, extra, mamba_dir if family == "biomamba" else bert_dir).eval()
    with torch.no_grad():  # lora_B starts at zero: move every trained tensor so that the merge changes weights
        for p in (p for p in model.parameters() if p.requires_grad):
            p.normal_(0, 0.2)
    ids = torch.randint(5, model.peft_model.config.vocab_size, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    with torch.no_grad():
        wrapped = model(input_ids=ids, attention_mask=mask).logits
    save_trainable(model, tmp_path / "trained.safetensors")
    save_selected(model, None, tmp_path / "model", 3, tmp_path / "trained.safetensors")
    loaded = auto_class(kind).from_pretrained(tmp_path / "model").eval()
    assert not any("lora" in name for name in loaded.state_dict())
    assert loaded.config.problem_type == model.peft_model.config.problem_type
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits, wrapped, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # five short training runs
@pytest.mark.parametrize("family, kind, extra", [("biomamba", "ner", []),
                                                 ("biomamba", "ner", ["model.bidirectional=true"]),
                                                 ("bert", "ner", []), ("bert", "multilabel", []),
                                                 ("biomamba", "similarity", [])])
def test_a_lora_run_of_a_new_head_saves_a_model_that_scores_what_it_reported(family, kind, extra, tasks, mamba_dir,
                                                                             bert_dir, tmp_path):
    """The reported test scores come from the LoRA-wrapped model at the val-selected step; seed_1/model
    (its adapters merged) loaded by transformers' Auto class scores the test split the same, at the
    threshold its config carries for a multi-label head."""
    pytest.importorskip("peft")
    model_dir, out = mamba_dir if family == "biomamba" else bert_dir, tmp_path / "run"
    settings = [*FAST, "model.lora=true", "train.max_steps=4", "train.eval_every=2", *extra]
    assert run_finetune("--task", tasks[kind], "--model", model_dir, "--out", out, "--seeds", "1", *settings) == 0
    results = json.loads((out / "results.json").read_text())
    assert 0 < results["trainable_parameters"] < results["parameters"] / 4
    reported = results["per_seed"][0]["test"]
    saved = out / "seed_1" / "model"
    loaded = auto_class(kind).from_pretrained(saved).eval()
    cfg = cfg_of(f"task={json.dumps(tasks[kind])}", f"model.path={json.dumps(str(saved))}", *settings)
    tokenizer = load_classifier_tokenizer(str(saved), family, cfg)
    _, data = finetune.prepare_data(cfg, tokenizer, family)
    threshold = getattr(loaded.config, THRESHOLD, None)
    if kind == "multilabel":
        assert threshold == results["per_seed"][0]["val"]["threshold"]
        assert_model_threshold(saved, threshold)
    rescored = finetune.score(loaded, data["test"], 32, tokenizer.pad_token_id, results["labels"], threshold)
    metric = results["metric"]
    assert rescored[metric] == pytest.approx(reported[metric], abs=1e-6)
    assert rescored["loss"] == pytest.approx(reported["loss"], rel=1e-4)


# ----------------------------------------------------------------------------- resume

@pytest.mark.slow  # two short runs per head
@pytest.mark.parametrize("kind, extra", [("ner", ["model.bidirectional=true"]), ("ner", []),
                                         ("multilabel", []), ("similarity", []),
                                         ("ner", ["model.bidirectional=true", "model.lora=true",
                                                  "model.lora_dropout=0.1"])])
def test_resume_is_exact_for_each_new_head(kind, extra, tasks, mamba_dir, tmp_path):
    from safetensors.torch import load_file
    args = ["--task", tasks[kind], "--model", mamba_dir, "--seeds", "1", *FAST, "train.max_steps=4",
            "train.eval_every=2", "train.save_every=2", "train.keep_last=2", *extra]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_finetune(*args, "--out", straight) == 0
    shutil.copytree(straight, resumed)
    (resumed / "seed_1" / "results.json").unlink()  # it "died" after its step-2 checkpoint
    shutil.rmtree(resumed / "seed_1" / "checkpoints" / "step_0000004")
    if "model.lora=true" in extra:  # LoRA writes seed_1/model when the seed ends, from the best step's adapters
        shutil.rmtree(resumed / "seed_1" / "model")
        (resumed / "seed_1" / "lora_best" / "step_0000004.safetensors").unlink(missing_ok=True)
    assert run_finetune(*args, "--out", resumed) == 0
    a, b = (load_file(r / "seed_1" / "checkpoints" / "step_0000004" / "model" / "model.safetensors")
            for r in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
    a, b = (json.loads((r / "results.json").read_text())["per_seed"][0] for r in (straight, resumed))
    scalars = lambda scores: {k: v for k, v in scores.items() if not isinstance(v, dict)}  # noqa: E731
    assert a["best_step"] == b["best_step"] and scalars(a["test"]) == pytest.approx(scalars(b["test"]), rel=1e-5)
    a, b = (load_file(r / "seed_1" / "model" / "model.safetensors") for r in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
    assert (straight / "seed_1" / "test_predictions.jsonl").read_text() == \
        (resumed / "seed_1" / "test_predictions.jsonl").read_text()


# ----------------------------------------------------------------------------- report

def fake_results(run_dir: Path, task, kind, blurb_type, metric, values, bidirectional=False):
    run_dir.mkdir(parents=True)
    per_seed = [{"seed": i, "best_step": 1, "val": {metric: v}, "test": {metric: v}, "wall_s": 1.0, "steps": 1}
                for i, v in enumerate(values, 1)]
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1))
    results = {"task": task, "kind": kind, "metric": metric, "blurb_type": blurb_type, "blurb_metric": metric,
               "bidirectional": bidirectional, "model": "/m/tiny", "model_family": "biomamba", "init": "pretrained",
               "parameters": 1e6, "seeds": [1, 2], "per_seed": per_seed,
               "mean": {"val": {metric: mean}, "test": {metric: mean}, "wall_s": 1.0},
               "std": {"val": {metric: std}, "test": {metric: std}, "wall_s": 0.0}}
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def test_report_gives_each_task_types_metric_and_the_macro_average(tmp_path, capsys):
    from biomamba.eval import report_finetune
    runs = [fake_results(tmp_path / "ner", "chemical-ner", "ner", "ner", "entity_f1", [0.8, 0.6]),
            fake_results(tmp_path / "mesh", "mesh-labels", "multilabel", "document", "micro_f1", [0.4, 0.4]),
            fake_results(tmp_path / "ner-bi", "chemical-ner", "ner", "ner", "entity_f1", [0.9, 0.9], True)]
    parser = argparse.ArgumentParser()
    report_finetune.add_arguments(parser)
    assert report_finetune.run(parser.parse_args([*map(str, runs), "--out", str(tmp_path / "report")])) == 0
    report = json.loads((tmp_path / "report" / "finetune_report.json").read_text())
    causal, bidirectional = report["blurb"]
    assert causal["blurb_average"] == pytest.approx((0.7 + 0.4) / 2)
    assert causal["types_included"] == ["document", "ner"] and bidirectional["types_included"] == ["ner"]
    text = (tmp_path / "report" / "finetune_report.md").read_text()
    assert "| model | document (micro-F1) | ner (entity F1) | BLURB-style average | over |" in text
    assert "0.5500 | document, ner |" in text
