"""`biomamba finetune --objective causal-lm`: the loss is on the answer tokens only, a LoRA run resumes
exactly, and its run directory is scored by `biomamba eval-qa`, whose results name the run."""
import argparse
import json
import shutil

import pytest
import torch
import yaml
import torch.nn.functional as F
from safetensors.torch import load_file

from biomamba.data.qa_formats import read_items
from biomamba.eval import qa
from biomamba.eval.perplexity import encoder
from biomamba.eval.qa_prompts import doc_to_text
from biomamba.resolve import ModelSpecError, model_dir_of
from biomamba.train import finetune
from biomamba.train.finetune_causal_lm import IGNORE, answer_loss, collate_answers, encode_item
from tests.qa_helpers import corpus_of, pubmedqa_rows, tiny_qa_model_dir, write_jsonl

FAST = ["logging.wandb=false", "optim.warmup_steps=1", "train.batch_size=4", "data.max_length=96",
        "data.val_fraction=0.2", "data.eval_batch_size=16"]


def run_finetune(*argv) -> int:
    parser = argparse.ArgumentParser()
    finetune.add_arguments(parser)
    return finetune.run(parser.parse_args([str(a) for a in argv]))


def run_eval_qa(*argv) -> int:
    parser = argparse.ArgumentParser()
    qa.add_arguments(parser)
    return qa.run(parser.parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A small pubmedqa training file (HF rows) and a test file, and a tiny BioMamba with their tokenizer."""
    root = tmp_path_factory.mktemp("sft")
    train, test = pubmedqa_rows(24, seed=1), pubmedqa_rows(8, seed=2)
    model = tiny_qa_model_dir(root / "model", corpus_of(train + test))
    return {"train": write_jsonl(root / "train.jsonl", train), "test": write_jsonl(root / "test.jsonl", test),
            "model": model}


def test_labels_mask_the_prompt_and_the_loss_is_cross_entropy_over_the_answer_only(task):
    from transformers import AutoTokenizer

    from biomamba import BioMambaForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(task["model"])
    encode_one = encoder(tokenizer)
    items = read_items("pubmedqa", task["train"])[:3]
    encoded = [encode_item(encode_one, "pubmedqa", item, 512) for item in items]
    for item, e in zip(items, encoded):
        prompt_ids = encode_one(doc_to_text("pubmedqa", item))
        answer = item.options[item.answer]
        assert e["input_ids"] == encode_one(doc_to_text("pubmedqa", item) + " " + answer)
        assert e["labels"][:len(prompt_ids)] == [IGNORE] * len(prompt_ids)  # exactly the prompt, no more
        assert e["labels"][len(prompt_ids):] == e["input_ids"][len(prompt_ids):] != []
    batch = collate_answers(encoded, [e["labels"] for e in encoded], pad_id=0)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()  # padding is never scored
    model = BioMambaForCausalLM.from_pretrained(task["model"]).eval()
    with torch.no_grad():
        loss = answer_loss(model, batch)
        terms = []  # by hand: -log p(answer token | everything before it), each item alone, unpadded
        for e in encoded:
            logprobs = F.log_softmax(model(torch.tensor([e["input_ids"]])).logits[0].double(), -1)
            terms += [-logprobs[t - 1, e["input_ids"][t]] for t, label in enumerate(e["labels"]) if label != IGNORE]
    assert float(loss) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-5)


def test_truncation_keeps_the_answer_and_drops_the_prompt_on_the_left(task):
    from transformers import AutoTokenizer
    encode_one = encoder(AutoTokenizer.from_pretrained(task["model"]))
    item = read_items("pubmedqa", task["train"])[0]
    whole, cut = (encode_item(encode_one, "pubmedqa", item, n) for n in (10_000, 12))
    assert cut["input_ids"] == whole["input_ids"][-12:] and cut["labels"] == whole["labels"][-12:]
    assert cut["truncated"] and not whole["truncated"]


@pytest.mark.slow
def test_lora_sft_resume_equals_a_straight_run(task, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = ["--objective", "causal-lm", "--task", f"pubmedqa:{task['train']}", "--model", task["model"],
            "--seeds", "1", *FAST, "model.lora=true", "model.lora_dropout=0.1", "train.max_steps=6",
            "train.eval_every=3", "train.save_every=3", "train.keep_last=2"]
    assert run_finetune(*args, "--out", straight) == 0
    shutil.copytree(straight, resumed)
    (resumed / "seed_1" / "results.json").unlink()  # it "died" after its step-3 checkpoint
    shutil.rmtree(resumed / "seed_1" / "checkpoints" / "step_0000006")
    shutil.rmtree(resumed / "seed_1" / "model")
    assert run_finetune(*args, "--out", resumed) == 0
    assert json.loads((resumed / "seed_1" / "results.json").read_text())["resumed_from"] == 3

    def losses(run):
        rows = [json.loads(line) for line in (run / "seed_1" / "metrics.jsonl").open()]
        return [r["loss"] for r in rows if "split" not in r]
    assert losses(resumed) == losses(straight) and len(losses(straight)) == 6  # bit-identical, every step
    for name in ("checkpoints/step_0000006/model/model.safetensors", "model/model.safetensors"):
        a, b = (load_file(run / "seed_1" / name) for run in (straight, resumed))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    merged = load_file(straight / "seed_1" / "model" / "model.safetensors")
    assert not any("lora" in k for k in merged)  # seed_1/model is a plain model: the adapters merged in
    base = load_file(task["model"] / "model.safetensors")
    assert any(not torch.equal(merged[k], base[k]) for k in base if "in_proj" in k)  # and they changed it


@pytest.mark.slow
def test_an_sft_run_directory_is_scored_by_eval_qa_which_records_the_run(task, tmp_path):
    run = tmp_path / "sft"
    assert run_finetune("--objective", "causal-lm", "--task", f"pubmedqa:{task['train']}", "--model", task["model"],
                        "--out", run, "--seeds", "3", *FAST, "train.max_steps=4", "train.eval_every=2") == 0
    results = json.loads((run / "results.json").read_text())
    assert results["objective"] == "causal-lm" and results["examples"]["train"] + results["examples"]["val"] == 24
    assert model_dir_of(run) == run / "seed_3" / "model"  # one seed: RUN names it
    for given in (run, run / "seed_3"):
        out = tmp_path / f"qa-{given.name}.json"
        assert run_eval_qa("--model", given, "--task", f"pubmedqa:{task['test']}", "--out", out, "--no-wandb") == 0
        payload = json.loads(out.read_text())
        assert payload["model"]["trained_by"] == {
            "run_dir": str(run / "seed_3"), "job": "finetune", "objective": "causal-lm",
            "task": f"pubmedqa:{task['train']}", "seed": 3, "lora": False, "init": "pretrained",
            "from_model": str(task["model"]), "steps": 4, "git_commit": payload["model"]["trained_by"]["git_commit"]}
        assert {r["protocol"] for r in payload["results"]} == {"lm-eval", "biomamba"}
        assert "Fine-tuned by" in out.with_suffix(".md").read_text()
    from biomamba.eval import report_qa
    assert report_qa.run(argparse.Namespace(results=[str(out)], out=str(tmp_path / "report"))) == 0
    assert f"(causal-lm full, seed 3, {run / 'seed_3'})" in (tmp_path / "report" / "qa_report.md").read_text()
    (run / "seed_4" / "model").mkdir(parents=True)
    shutil.copy(run / "seed_3" / "model" / "config.json", run / "seed_4" / "model")
    with pytest.raises(ModelSpecError, match="2 seeds; pass one"):
        model_dir_of(run)


def test_the_title_task_and_masked_lms_are_refused_with_the_fix(task, tmp_path, capsys):
    assert run_finetune("--objective", "causal-lm", "--task", "titles:somewhere", "--model", task["model"],
                        "--out", tmp_path / "x", *FAST) == 1
    assert "bench/title_yesno.py" in capsys.readouterr().err


@pytest.mark.slow
def test_the_same_command_fine_tunes_a_gpt_neox_baseline_with_lora(task, tmp_path):
    """model.arch=transformer runs leave a GPTNeoXForCausalLM directory: peft's own LoRA targets for it
    (query_key_value), merged into a plain transformers model that eval-qa scores by full sequences."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(task["model"])
    torch.manual_seed(0)
    neox = tmp_path / "neox"
    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                     eos_token_id=0, bos_token_id=0)).save_pretrained(neox)
    tokenizer.save_pretrained(neox)
    run = tmp_path / "sft"
    assert run_finetune("--objective", "causal-lm", "--task", f"pubmedqa:{task['train']}", "--model", neox,
                        "--out", run, "--seeds", "1", *FAST, "model.lora=true", "data.max_length=512",
                        "train.max_steps=2", "train.eval_every=2") == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["resolved"]["max_length"] == 128  # its positions
    merged = AutoModelForCausalLM.from_pretrained(run / "seed_1" / "model")
    assert type(merged).__name__ == "GPTNeoXForCausalLM" and not any("lora" in k for k in merged.state_dict())
    out = tmp_path / "qa.json"
    assert run_eval_qa("--model", run, "--task", f"pubmedqa:{task['test']}", "--out", out, "--no-wandb") == 0
    payload = json.loads(out.read_text())
    assert payload["model"]["scoring"] == "full sequences" and payload["model"]["trained_by"]["lora"] is True
