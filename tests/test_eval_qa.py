"""`biomamba eval-qa`: each QA format read exactly, lm-eval's own evaluator as the peer (prompts,
few-shot draws, per-item loglikelihoods, acc, acc_norm), shared-state scoring against full sequences,
BioMamba's protocol against a direct computation, and the command's outputs and errors."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from biomamba.data.qa_formats import QAFormatError, QAItem, parse_task_spec, read_items
from biomamba.eval import qa
from biomamba.eval.qa_prompts import build_prompts
from biomamba.eval.qa_scoring import Request, score_full, score_shared
from biomamba.metrics.qa import accuracy_summary, choice_predictions, wilson_interval
from tests.model_helpers import BLOCKS, tiny_model
from tests.qa_helpers import (corpus_of, medmcqa_rows, medqa_rows, mmlu_rows, pubmedqa_rows, tiny_qa_model_dir,
                              write_jsonl)


def cli(argv):
    parser = argparse.ArgumentParser()
    qa.add_arguments(parser)
    return qa.run(parser.parse_args(argv))


# ----------------------------------------------------------------------------- formats read exactly

def test_pubmedqa_ori_pqal_json_and_hf_rows(tmp_path):
    ori = {"123": {"QUESTION": "Does aspirin help?", "CONTEXTS": ["Background.", "Results."], "LABELS": ["B", "R"],
                   "final_decision": "yes", "LONG_ANSWER": "It does."},
           "456": {"QUESTION": "Is it safe?", "CONTEXTS": ["Methods."], "final_decision": "Maybe"}}
    (tmp_path / "ori_pqal.json").write_text(json.dumps(ori))
    assert read_items("pubmedqa", tmp_path / "ori_pqal.json") == [
        QAItem("123", "Does aspirin help?", ("yes", "no", "maybe"), 0, ("Background.", "Results.")),
        QAItem("456", "Is it safe?", ("yes", "no", "maybe"), 2, ("Methods.",))]
    rows = [{"pubid": 9, "question": "Q?", "context": {"contexts": ["C1", "C2"], "labels": ["A", "B"]},
             "long_answer": "L", "final_decision": "no"}]
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test.parquet")
    write_jsonl(tmp_path / "test.jsonl", rows)
    for name in ("test.parquet", "test.jsonl"):
        assert read_items("pubmedqa", tmp_path / name) == [QAItem("9", "Q?", ("yes", "no", "maybe"), 1, ("C1", "C2"))]


def test_bioasq_yes_no_questions_with_snippets(tmp_path):
    questions = [
        {"id": "a", "body": "Is X a gene?", "type": "yesno", "exact_answer": "Yes.",
         "snippets": [{"document": "http://www.ncbi.nlm.nih.gov/pubmed/1", "text": "X is a gene."},
                      {"document": "2", "text": "X binds Y."}]},
        {"id": "b", "body": "Which gene?", "type": "factoid", "exact_answer": [["X"]], "snippets": []},
        {"id": "c", "body": "Is Y a drug?", "type": "yesno", "exact_answer": ["no"], "snippets": []}]
    (tmp_path / "b.json").write_text(json.dumps({"questions": questions}))
    assert read_items("bioasq", tmp_path / "b.json") == [
        QAItem("a", "Is X a gene?", ("yes", "no"), 0, ("X is a gene.", "X binds Y.")),
        QAItem("c", "Is Y a drug?", ("yes", "no"), 1, ())]


def test_medqa_both_layouts_medmcqa_mmlu_and_generic_mc(tmp_path):
    write_jsonl(tmp_path / "usmle.jsonl", [{"question": "Q1?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"},
                                            "answer": "c", "answer_idx": "C", "meta_info": "step1"}])
    write_jsonl(tmp_path / "hf.jsonl", [{"id": "x", "sent1": "Q2?", "sent2": "", "ending0": "a", "ending1": "b",
                                         "ending2": "c", "ending3": "d", "label": 3}])
    assert read_items("medqa", tmp_path / "usmle.jsonl") == [QAItem("1", "Q1?", ("a", "b", "c", "d"), 2)]
    assert read_items("medqa", tmp_path / "hf.jsonl") == [QAItem("x", "Q2?", ("a", "b", "c", "d"), 3)]
    write_jsonl(tmp_path / "mcqa.jsonl", [{"id": "m", "question": "Q3?", "opa": "a", "opb": "b", "opc": "c",
                                           "opd": "d", "cop": 1, "subject_name": "Anatomy"}])
    assert read_items("medmcqa", tmp_path / "mcqa.jsonl") == [QAItem("m", "Q3?", ("a", "b", "c", "d"), 1)]
    write_jsonl(tmp_path / "mmlu.jsonl", [{"question": "Q4?", "subject": "anatomy", "choices": ["a", "b", "c", "d"],
                                           "answer": 0}, {"question": "Q5?", "choices": ["a", "b"], "answer": "B"}])
    assert read_items("mmlu", tmp_path / "mmlu.jsonl") == [QAItem("1", "Q4?", ("a", "b", "c", "d"), 0, subject="anatomy"),
                                                           QAItem("2", "Q5?", ("a", "b"), 1)]
    (tmp_path / "mc.json").write_text(json.dumps([{"id": "g", "question": "Q6?", "choices": ["x", "y", "z"],
                                                   "answer": "z", "context": "An abstract."}]))
    assert read_items("mc", tmp_path / "mc.json") == [QAItem("g", "Q6?", ("x", "y", "z"), 2, ("An abstract.",))]


@pytest.mark.parametrize("kind,row,message", [
    ("medmcqa", {"question": "Q", "opa": "a", "opb": "b", "opc": "c", "opd": "d"}, "line 2: missing field 'cop'"),
    ("medmcqa", {"question": "Q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 4}, "line 2: field 'cop' = 4"),
    ("medqa", {"question": "Q", "options": {"A": "a", "B": "b"}, "answer_idx": "E"}, "line 2: field 'answer_idx'"),
    ("mmlu", {"question": "Q", "choices": "abcd", "answer": 0}, "line 2: field 'choices' should be list"),
    ("mc", {"question": 3, "choices": ["a"], "answer": 0}, "line 2: field 'question' should be str"),
    ("pubmedqa", {"QUESTION": "Q", "CONTEXTS": ["c"], "final_decision": "perhaps"}, "line 2: field 'final_decision'"),
])
def test_a_malformed_record_names_the_file_line_and_field(tmp_path, kind, row, message):
    good = {"medmcqa": medmcqa_rows, "medqa": medqa_rows, "mmlu": mmlu_rows, "mc": lambda n, s: [
        {"question": "Q", "choices": ["a", "b"], "answer": 0}], "pubmedqa": pubmedqa_rows}[kind](1, 0)
    path = write_jsonl(tmp_path / "bad.jsonl", good + [row])
    with pytest.raises(QAFormatError, match=f"{path}: {message}"):
        read_items(kind, path)


def test_bad_json_and_unknown_kind(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"question": "Q", "choices": ["a", "b"], "answer": 1}\n{not json\n')
    with pytest.raises(QAFormatError, match="x.jsonl: line 2: invalid JSON"):
        read_items("mc", tmp_path / "x.jsonl")
    with pytest.raises(QAFormatError, match="KIND:FILE"):
        parse_task_spec(f"squad:{tmp_path / 'x.jsonl'}")


# ----------------------------------------------------------------------------- metrics

def test_metrics_follow_lm_eval_and_wilson():
    assert choice_predictions([-3.3, -4.0, -5.0], ["yes", "no", "maybe"]) == (0, 2)  # -5/5 > -3.3/3
    assert choice_predictions([-1.0, -1.0], ["A", "B"]) == (0, 0)  # ties: the first, as np.argmax
    s = accuracy_summary([1, 0, 1, 1])
    assert s["acc"] == 0.75 and s["n"] == 4 and s["stderr"] == pytest.approx(np.std([1, 0, 1, 1], ddof=1) / 2)
    for hits, n in ((75, 100), (3, 7), (81, 82)):  # Wilson's bounds solve (p_hat - p)^2 = z^2 p (1 - p) / n
        z = 1.959963984540054
        for p in wilson_interval(hits, n):
            assert (hits / n - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, rel=1e-9)
    assert wilson_interval(0, 6)[0] == 0.0 and wilson_interval(6, 6)[1] == 1.0


# ----------------------------------------------------------------------------- lm-eval itself as the peer

LM_EVAL_TASKS = {  # kind -> (lm-eval task yaml, test split key, few-shot split key, rows)
    "pubmedqa": ("pubmedqa/pubmedqa.yaml", "test", "train", pubmedqa_rows),
    "medmcqa": ("medmcqa/medmcqa.yaml", "validation", "train", medmcqa_rows),
    "medqa": ("medqa/medqa.yaml", "test", "train", medqa_rows),
    "mmlu": ("mmlu/default/mmlu_clinical_knowledge.yaml", "test", "dev", mmlu_rows),
}


@pytest.fixture(scope="module")
def qa_files(tmp_path_factory):
    """Per kind, (test file, few-shot file) in the layout lm-eval's task reads; one tiny BioMamba for all."""
    root = tmp_path_factory.mktemp("qa")
    files, texts = {}, []
    for kind, (_, _, _, rows) in LM_EVAL_TASKS.items():
        test, shots = rows(7, 1), rows(5, 2)
        files[kind] = (write_jsonl(root / f"{kind}_test.jsonl", test), write_jsonl(root / f"{kind}_shots.jsonl", shots))
        texts += corpus_of(test + shots)
    return root, files, tiny_qa_model_dir(root / "model", texts)


def lm_eval_task_dir(root, kind, test, shots):
    """Our YAML: lm-eval's own task config (prompt functions included) on local json files."""
    import lm_eval
    yaml_path, test_split, shot_split, _ = LM_EVAL_TASKS[kind]
    tasks = root / f"tasks_{kind}"
    tasks.mkdir(exist_ok=True)
    (tasks / f"{kind}.yaml").write_text(
        f"include: {Path(lm_eval.__file__).parent / 'tasks' / yaml_path}\n"
        f"task: biomamba_test_{kind}\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    {test_split}: {test}\n    {shot_split}: {shots}\n"
        f"  cache_dir: {root / 'hf_cache'}\n"
        + ("validation_split: null\n" if kind in ("pubmedqa", "medqa") else "")
        + "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    return tasks


def run_lm_eval(root, kind, test, shots, model_dir, k):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from biomamba import BioMambaForCausalLM
    gpt2 = json.loads((Path(model_dir) / "config.json").read_text())["model_type"] == "gpt2"
    model = (AutoModelForCausalLM if gpt2 else BioMambaForCausalLM).from_pretrained(model_dir).eval()
    lm = HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(model_dir), batch_size=3)
    manager = TaskManager(include_path=str(lm_eval_task_dir(root, kind, test, shots)), include_defaults=False)
    out = lm_eval.simple_evaluate(model=lm, tasks=[f"biomamba_test_{kind}"], num_fewshot=k, task_manager=manager,
                                  log_samples=True)
    name = f"biomamba_test_{kind}"
    return out["results"][name], sorted(out["samples"][name], key=lambda s: s["doc_id"])


@pytest.mark.parametrize("k", [0, 2])
@pytest.mark.parametrize("kind", list(LM_EVAL_TASKS))
def test_lm_eval_protocol_equals_lm_eval_itself(qa_files, kind, k):
    """lm-eval 0.4.13's simple_evaluate with HFLM on its own task configs (pointed at our files): the same
    contexts, per-item loglikelihoods (1e-4), acc and acc_norm as eval-qa (shared-state scoring)."""
    root, files, model_dir = qa_files
    test, shots = files[kind]
    theirs, samples = run_lm_eval(root, kind, test, shots, model_dir, k)
    out = root / f"{kind}_{k}.json"
    assert cli(["--model", str(model_dir), "--task", f"{kind}:{test}:{shots}", "--out", str(out), "--num-fewshot",
                str(k), "--protocol", "lm-eval", "--batch-size", "3", "--device", "cpu", "--no-wandb"]) == 0
    ours = json.loads(out.read_text())
    row = ours["results"][0]
    assert ours["model"]["scoring"] == "shared state" and row["n"] == len(samples) == 7
    task = parse_task_spec(f"{kind}:{test}:{shots}")
    prompts = build_prompts(kind, task.items, task.fewshot_items, k, pool_is_test=False)
    assert [p.context for p in prompts] == [s["arguments"][0][0] for s in samples]
    predictions = [json.loads(line) for line in out.with_suffix(".predictions.jsonl").read_text().splitlines()]
    for mine, sample in zip(predictions, samples):
        np.testing.assert_allclose(mine["loglikelihoods"], [r[0][0] for r in sample["resps"]], atol=1e-4)
    assert row["acc"] == pytest.approx(theirs["acc,none"]) and row["acc_norm"] == pytest.approx(theirs["acc_norm,none"])
    lls = np.array([m["loglikelihoods"] for m in predictions])
    assert np.ptp(lls, axis=1).min() > 1e-3  # the choices are told apart, so a wrong pick would show


def test_a_transformers_model_scores_full_sequences_as_lm_eval_does(qa_files, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    root, files, model_dir = qa_files
    gpt2_dir = tmp_path / "gpt2"
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=400, n_positions=1024, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(gpt2_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (gpt2_dir / name).write_bytes((Path(model_dir) / name).read_bytes())
    test, shots = files["medqa"]
    theirs, samples = run_lm_eval(root, "medqa", test, shots, gpt2_dir, 2)
    out = tmp_path / "gpt2.json"
    assert cli(["--model", str(gpt2_dir), "--task", f"medqa:{test}:{shots}", "--out", str(out), "--num-fewshot", "2",
                "--protocol", "lm-eval", "--no-wandb"]) == 0
    assert json.loads(out.read_text())["model"]["scoring"] == "full sequences"
    predictions = [json.loads(line) for line in out.with_suffix(".predictions.jsonl").read_text().splitlines()]
    for mine, sample in zip(predictions, samples, strict=True):
        np.testing.assert_allclose(mine["loglikelihoods"], [r[0][0] for r in sample["resps"]], atol=1e-4)
    assert cli(["--model", str(gpt2_dir), "--task", f"medqa:{test}", "--out", str(out), "--scoring", "shared",
                "--no-wandb"]) == 1


def test_fewshot_from_the_test_file_leaves_the_item_out(qa_files):
    """Without a few-shot file the pool is the test file; lm-eval (fewshot_split == test_split) draws k + 1
    and drops the item itself, from one Random(1234)."""
    import random
    _, files, _ = qa_files
    task = parse_task_spec(f"pubmedqa:{files['pubmedqa'][0]}")
    prompts = build_prompts("pubmedqa", task.items, task.items, 2, pool_is_test=True)
    rnd = random.Random(1234)
    for item, prompt in zip(task.items, prompts):
        drawn = [p for p in rnd.sample(task.items, 3) if p != item][:2]
        assert prompt.context.startswith(f"Abstract: {chr(10).join(drawn[0].contexts)}")
        assert f"Question: {item.question}" not in prompt.context[:-len(item.question) - 30]


# ----------------------------------------------------------------------------- shared state

def random_requests(seed, n, vocab=97):
    g = torch.Generator().manual_seed(seed)
    rand = lambda low, high: torch.randint(low, high, (1,), generator=g).item()  # noqa: E731
    return [Request([rand(1, vocab) for _ in range(rand(1, 30))],
                    [[rand(1, vocab) for _ in range(rand(1, 6))] for _ in range(rand(2, 5))]) for _ in range(n)]


@pytest.mark.parametrize("layer", BLOCKS)
@pytest.mark.parametrize("max_length", [64, 12])
def test_shared_state_equals_full_sequences(layer, max_length):
    """Contexts of 1-29 tokens batched with left padding, 2-4 choices of 1-5 tokens continued from copies of
    the cache; at max_length 12 some items are truncated and go by full sequences."""
    model = tiny_model(seed=1, layer=layer)
    requests = random_requests(seed=2, n=7)
    with torch.no_grad():
        shared = score_shared(model, requests, max_length, batch_size=3, device="cpu")
        full = score_full(model, requests, max_length, batch_size=5, device="cpu")
        one_by_one = [score_full(model, [r], max_length, batch_size=1, device="cpu")[0] for r in requests]
    for s, f, o in zip(shared, full, one_by_one):
        np.testing.assert_allclose(s, o, atol=1e-4)
        np.testing.assert_allclose(f, o, atol=1e-4)


# ----------------------------------------------------------------------------- BioMamba's protocol

def test_biomamba_protocol_equals_a_direct_computation(qa_files, tmp_path):
    """The next-token distribution after the prompt, renormalised over the answers' first tokens."""
    from transformers import AutoTokenizer
    from biomamba import BioMambaForCausalLM
    _, files, model_dir = qa_files
    out = tmp_path / "b.json"
    specs = [f"pubmedqa:{files['pubmedqa'][0]}", f"medqa:{files['medqa'][0]}"]
    assert cli(["--model", str(model_dir), "--task", specs[0], "--task", specs[1], "--out", str(out),
                "--protocol", "biomamba", "--batch-size", "4", "--no-wandb"]) == 0
    predictions = [json.loads(line) for line in out.with_suffix(".predictions.jsonl").read_text().splitlines()]
    model, tok = BioMambaForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    direct = []
    for kind, spec in zip(("pubmedqa", "medqa"), specs):
        task = parse_task_spec(spec)
        for prompt in build_prompts(kind, task.items, task.items, 0, pool_is_test=True):
            answers = [tok.encode(" " + c)[0] for c in prompt.choices]
            with torch.no_grad():
                logits = model(torch.tensor([tok.encode(prompt.context)])).logits[0, -1]
            direct.append(torch.softmax(logits[answers], -1).tolist())
    assert len(predictions) == len(direct) == 14
    for mine, want in zip(predictions, direct):
        np.testing.assert_allclose(mine["probabilities"], want, atol=1e-5)
        assert mine["pred"] == int(np.argmax(want))
    rows = json.loads(out.read_text())["results"]
    assert [r["acc"] for r in rows] == [np.mean([p["pred"] == p["gold"] for p in predictions[i * 7:(i + 1) * 7]])
                                        for i in range(2)]


# ----------------------------------------------------------------------------- the command

def test_cli_writes_results_table_and_predictions(qa_files, tmp_path, capsys):
    _, files, model_dir = qa_files
    out = tmp_path / "qa.json"
    assert cli(["--model", str(model_dir), "--task", f"medmcqa:{files['medmcqa'][0]}", "--out", str(out),
                "--num-fewshot", "1"]) == 0  # W&B on: offline, files beside OUT.json
    payload = json.loads(out.read_text())
    lm, bio = payload["results"]
    assert [lm["protocol"], bio["protocol"]] == ["lm-eval", "biomamba"]
    for r in (lm, bio):
        assert r["n"] == 7 and r["num_fewshot"] == 1 and r["prompt"] == "lm-eval medmcqa"
        assert r["split"] == str(files["medmcqa"][0]) and r["ci95"][0] <= r["acc"] <= r["ci95"][1]
    assert lm["acc_norm"] is not None and bio["acc_norm"] is None
    lines = out.with_suffix(".predictions.jsonl").read_text().splitlines()
    assert len(lines) == 14 and json.loads(lines[0])["protocol"] == "lm-eval"
    table = out.with_suffix(".md").read_text()
    assert "| medmcqa:medmcqa_test | lm-eval | lm-eval medmcqa |" in table and table in capsys.readouterr().out + table
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    from biomamba.eval import report_qa
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": {"name": "other"}, "results": [{**lm, "acc": 0.5, "ci95": [0.2, 0.8]}]}))
    assert report_qa.run(argparse.Namespace(results=[str(out), str(other)], out=str(tmp_path / "rep"))) == 0
    md = (tmp_path / "rep" / "qa_report.md").read_text()
    lm_table, bio_table = md.split("### ")[1:]
    assert lm_table.startswith("medmcqa:medmcqa_test: lm-eval protocol, 1-shot") and "| other | 7 | 0.5000 |" in lm_table
    assert f"| model | 7 | {lm['acc']:.4f} |" in lm_table and "other" not in bio_table


def test_cli_errors_are_one_line(qa_files, tmp_path, capsys):
    _, files, model_dir = qa_files
    bad = write_jsonl(tmp_path / "bad.jsonl", medmcqa_rows(2, 0) + [{"question": "Q", "opa": "a"}])
    assert cli(["--model", str(model_dir), "--task", f"medmcqa:{bad}", "--out", str(tmp_path / "o.json"),
                "--no-wandb"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {bad}: line 3: missing field 'opb'" and not (tmp_path / "o.json").exists()
    assert cli(["--model", str(model_dir), "--task", f"mc:{bad}", "--out", str(tmp_path / "o.json"),
                "--protocol", "lm-eval", "--protocol", "helm", "--no-wandb"]) == 1
    assert "--protocol: unknown helm" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the title task from PubMed itself

def test_title_task_is_drawn_by_hash_whatever_the_order():
    from biomamba.data.qa_titles import QUESTION, title_items
    docs = [{"pmid": str(100 + i), "title": f"Title {i}", "abstract": f"Abstract {i}."} for i in range(40)]
    docs.append({"pmid": "999", "title": "No abstract", "abstract": ""})
    items = title_items(docs, limit=12)
    assert items == title_items(docs[::-1], limit=12) and len(items) == 12
    pool_titles = {item.options[item.answer] for item in items}
    for item in items:
        assert item.question == QUESTION and item.contexts == (f"Abstract {int(item.id) - 100}.",)
        assert item.options[item.answer] == f"Title {int(item.id) - 100}"
        assert len(set(item.options)) == 4 and set(item.options) <= pool_titles  # distractors from the pool
    assert len({item.answer for item in items}) > 1  # the gold position varies


def test_titles_spec_reads_a_prepared_dir(data_dir):
    from biomamba.data.documents import read_documents
    task = parse_task_spec(f"titles:{data_dir}:10")
    assert task.kind == "titles" and len(task.items) == 10 and len(task.fewshot_items) == 10
    test_pmids = {str(d["pmid"]) for d in read_documents(data_dir, "test")}
    assert {item.id for item in task.items} <= test_pmids
    assert not {item.id for item in task.fewshot_items} & test_pmids
    prompt = build_prompts("titles", task.items, task.fewshot_items, 1, pool_is_test=False)[0]
    item = task.items[0]
    assert prompt.context.endswith(f"Abstract: {item.contexts[0]}\nTitle:") and prompt.choices == item.options
    assert prompt.context.count("\nTitle: ") == 1 and prompt.context.startswith("Abstract: ")  # the one shot
