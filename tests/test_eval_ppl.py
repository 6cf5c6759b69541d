"""`biomamba eval-ppl`: the rolling protocol against direct transformers computations, pseudo-LL,
metrics, data specs, bad inputs, the CLI's OUT.json and `report ppl`."""
import argparse
import json
import math

import numpy as np
import pytest
import torch
from transformers import (BertConfig, BertForMaskedLM, BertTokenizerFast, GPT2Config, GPT2LMHeadModel,
                          PreTrainedTokenizerFast)

from biomamba import BioMambaConfig, BioMambaForCausalLM
from biomamba.data.errors import DataError
from biomamba.eval import perplexity, report_ppl
from biomamba.eval.ppl_data import load_data, parse_spec
from biomamba.eval.ppl_legacy import legacy_padded
from biomamba.metrics.perplexity import count_bytes, count_words, perplexity_metrics
from biomamba.eval.ppl_models import ModelSpecError, load_model
from biomamba.metrics.rolling import causal_document_scores, rolling_windows
from biomamba.eval.pseudo_ppl import masked_windows, pseudo_document_scores, row_batches
from tests import model_helpers

CORPUS = [
    "Patients with type 2 diabetes were randomised to metformin or placebo.",
    "The aim of this study was to assess renal function in elderly patients.",
    "Results: mortality fell by 12% (95% CI 4-20) over two years of follow-up.",
    "Conclusions: early treatment improves outcomes in acute myocardial infarction.",
    "Méthodes: une étude de cohorte rétrospective a été menée chez 340 patients.",
]
SHORT = "Aspirin reduces fever."
LONG = " ".join(CORPUS)  # many windows at max_length 16


def bpe_tokenizer(path):
    return model_helpers.bpe_tokenizer(path, CORPUS)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2")
    tok = bpe_tokenizer(path)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def mamba_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("mamba")
    tok = bpe_tokenizer(path)
    torch.manual_seed(0)
    config = BioMambaConfig.from_preset("debug", vocab_size=len(tok), d_state=5, eos_token_id=0,
                                        bos_token_id=0, pad_token_id=0)
    BioMambaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert")
    words = sorted({w.strip(".,:()%").lower() for text in CORPUS + [SHORT] for w in text.split()} - {""})
    chars = sorted({c for text in CORPUS + [SHORT] for c in text.lower() if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars] + words
    (path / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tok = BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    tok.save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(path)
    return path


# ----------------------------------------------------------------------------- direct references

def lm_eval_rolling_windows(token_list, prefix_token, max_seq_len, context_len):
    """lm-eval-harness utils.get_rolling_token_windows + make_disjoint_window, as published."""
    pred_len = max_seq_len - context_len + 1
    predicted = 0
    first_seq_len = min(max_seq_len, len(token_list))
    windows = [([prefix_token] + token_list[: first_seq_len - 1], token_list[:first_seq_len])]
    predicted += first_seq_len
    while predicted < len(token_list):
        window_pred_len = min(len(token_list) - predicted, pred_len)
        window_end = predicted + window_pred_len
        windows.append((token_list[window_end - max_seq_len - 1: window_end - 1],
                        token_list[window_end - window_pred_len: window_end]))
        predicted += window_pred_len
    return [(a[: len(a) - (len(b) - 1)], b) for a, b in windows]


@torch.no_grad()
def direct_rolling_loglik(model, tokenizer, text, max_length, stride=None):
    """HFLM._loglikelihood_tokens for each rolling window, one unpadded forward each."""
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    total = 0.0
    for context, continuation in lm_eval_rolling_windows(tokens, prefix, max_length,
                                                         max_length - (stride or max_length) + 1):
        inp = (context + continuation)[-(max_length + 1):][:-1]
        logits = model(torch.tensor([inp])).logits[0].double().log_softmax(-1)[-len(continuation):]
        total += logits.gather(-1, torch.tensor(continuation)[:, None]).sum().item()
    return total, len(tokens)


def direct_biomamba_2026(model, tokenizer, texts, seq_len, batch, weighted=False):
    """BioMamba's eval_ppl_domain.py written out: concatenated tokenizer.encode ids, chunks
    range(0, len - L, L), batches in order, exp(mean of per-batch mean cross-entropy); `weighted`:
    the token-weighted mean instead, for contrast."""
    all_ids = [i for text in texts for i in tokenizer.encode(text)]
    chunks = [all_ids[i:i + seq_len] for i in range(0, len(all_ids) - seq_len, seq_len)]
    losses, nats, n = [], 0.0, 0
    for k in range(0, len(chunks), batch):
        inputs = torch.tensor(chunks[k:k + batch])
        logits = model(inputs).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1, :].reshape(-1, logits.size(-1)),
                                                 inputs[:, 1:].reshape(-1))
        losses.append(loss.item())
        nats, n = nats + loss.item() * inputs[:, 1:].numel(), n + inputs[:, 1:].numel()
    return math.exp(nats / n) if weighted else math.exp(sum(losses) / len(losses))


def ours(model_dir, texts, max_length, stride=None, batch_size=3):
    loaded, _ = load_model(model_dir)
    token_lists = perplexity.tokenize_texts(loaded.tokenizer, texts)
    prefix = loaded.tokenizer.bos_token_id
    return causal_document_scores(loaded.model, token_lists, prefix, max_length, stride, batch_size), loaded


# ----------------------------------------------------------------------------- the rolling protocol

@pytest.mark.parametrize("n,max_length,stride", [(1, 4, None), (4, 4, None), (5, 4, None), (23, 5, None),
                                                 (23, 5, 2), (23, 5, 1), (30, 7, 7)])
def test_rolling_windows_score_every_token_once(n, max_length, stride):
    tokens = list(range(100, 100 + n))
    windows = rolling_windows(tokens, 0, max_length, stride)
    scored = [t for w in windows for t in w.targets[len(w.targets) - w.n_scored:]]
    assert scored == tokens  # each token exactly once, in order
    for w in windows:
        assert len(w.input_ids) == len(w.targets) <= max_length
        assert w.input_ids[1:] == w.targets[:-1]  # inputs are the targets shifted by one
        assert w.n_scored <= (stride or max_length) or w is windows[0]
    assert windows[0].input_ids[0] == 0  # the first window is conditioned on the prefix token
    for w in windows[1:]:
        assert len(w.input_ids) == max_length  # later windows see max_length tokens of context
    expected = lm_eval_rolling_windows(tokens, 0, max_length, max_length - (stride or max_length) + 1)
    assert [w.targets[len(w.targets) - w.n_scored:] for w in windows] == [b for _, b in expected]


def test_bad_windowing_is_an_error():
    with pytest.raises(ValueError, match="--stride"):
        rolling_windows([1, 2, 3], 0, 4, stride=5)
    with pytest.raises(ValueError, match="--max-length"):
        rolling_windows([1, 2, 3], 0, 0)


@pytest.mark.parametrize("max_length,stride", [(512, None), (16, None), (16, 5)])
def test_gpt2_equals_direct_transformers_computation(gpt2_dir, max_length, stride):
    texts = [SHORT, LONG, CORPUS[2]]
    sums, loaded = ours(gpt2_dir, texts, max_length, stride)
    for text, got in zip(texts, sums):
        want, n = direct_rolling_loglik(loaded.model, loaded.tokenizer, text, max_length, stride)
        assert got == pytest.approx(want, rel=1e-5)
    assert len(loaded.tokenizer(LONG)["input_ids"]) > 3 * 16  # LONG really is multi-window


@pytest.mark.parametrize("max_length,stride", [(1024, None), (16, None), (16, 3)])
def test_biomamba_equals_direct_computation(mamba_dir, max_length, stride):
    texts = [SHORT, LONG, CORPUS[4]]
    sums, loaded = ours(mamba_dir, texts, max_length, stride)
    for text, got in zip(texts, sums):
        want, _ = direct_rolling_loglik(loaded.model, loaded.tokenizer, text, max_length, stride)
        assert got == pytest.approx(want, rel=1e-5)


def test_mamba_one_pass_equals_windowed_path(mamba_dir):
    """A document that fits is one forward over the whole document; batched with right padding
    beside shorter documents it gives the numbers of scoring its windows one by one, unpadded."""
    texts = [LONG, SHORT, CORPUS[0], CORPUS[3]]
    loaded, _ = load_model(mamba_dir)
    token_lists = perplexity.tokenize_texts(loaded.tokenizer, texts)
    n = len(token_lists[0])
    one_pass = causal_document_scores(loaded.model, token_lists, 0, n, None, batch_size=4)
    assert len(rolling_windows(token_lists[0], 0, n)) == 1
    one_by_one = causal_document_scores(loaded.model, token_lists, 0, n, None, batch_size=1)
    np.testing.assert_allclose(one_pass, one_by_one, rtol=1e-5)
    # the whole document in one pass = prefix pass + the recurrent state stepped over the rest
    ids = torch.tensor([[0] + token_lists[0][:-1]])
    full = loaded.model(ids).logits
    with torch.no_grad():
        out = loaded.model(ids[:, :10], use_cache=True)
        steps = [out.logits]
        for t in range(10, ids.shape[1]):
            out = loaded.model(ids[:, t:t + 1], cache_params=out.cache_params, use_cache=True)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- pseudo-log-likelihood

@torch.no_grad()
def direct_pll(model, tokenizer, text):
    ids = tokenizer(text)["input_ids"]  # [CLS] ... [SEP]
    total = 0.0
    for i in range(1, len(ids) - 1):
        masked = list(ids)
        masked[i] = tokenizer.mask_token_id
        logp = model(torch.tensor([masked])).logits[0, i].double().log_softmax(-1)
        total += logp[ids[i]].item()
    return total


def test_pseudo_loglikelihood_equals_direct_masked_computation(bert_dir):
    loaded, _ = load_model(bert_dir)
    assert loaded.scoring == "masked"
    texts = [SHORT, CORPUS[0], CORPUS[2]]
    token_lists = perplexity.tokenize_texts(loaded.tokenizer, texts, add_special_tokens=False)
    sums = pseudo_document_scores(loaded.model, loaded.tokenizer, token_lists, 64, None, batch_size=7)
    for text, got in zip(texts, sums):
        assert got == pytest.approx(direct_pll(loaded.model, loaded.tokenizer, text), rel=1e-5)


@pytest.mark.parametrize("stride", [None, 3])
def test_pseudo_windows_mask_every_token_once(bert_dir, stride):
    loaded, _ = load_model(bert_dir)
    tokens = perplexity.tokenize_texts(loaded.tokenizer, [LONG], add_special_tokens=False)[0]
    windows = masked_windows(tokens, loaded.tokenizer, 12, stride)
    assert [w.input_ids[p] for w in windows for p in w.positions] == tokens
    for w in windows:
        assert len(w.input_ids) <= 12 and all(0 < p < len(w.input_ids) - 1 for p in w.positions)
        assert w.input_ids[0] == loaded.tokenizer.cls_token_id and w.input_ids[-1] == loaded.tokenizer.sep_token_id
    rows = [row for batch in row_batches(windows, 5) for row in batch]  # every scored position once
    assert sorted(rows) == sorted((i, p) for i, w in enumerate(windows) for p in w.positions)


# ----------------------------------------------------------------------------- metrics and legacy

def test_metric_definitions():
    assert count_words("a  b\nc\td") == 4 and count_words(" a") == 2  # re.split(r"\s+", doc), as lm-eval
    assert count_bytes("é1") == 3
    m = perplexity_metrics(-20.0, tokens=10, words=5, n_bytes=40)
    assert m["token_perplexity"] == pytest.approx(math.exp(2.0))
    assert m["word_perplexity"] == pytest.approx(math.exp(4.0))
    assert m["byte_perplexity"] == pytest.approx(math.exp(0.5))
    assert m["bits_per_byte"] == pytest.approx(0.5 / math.log(2))


def test_legacy_padded_scores_padding_like_the_2024_code(gpt2_dir):
    loaded, _ = load_model(gpt2_dir)
    texts = [SHORT, LONG]
    got = legacy_padded(loaded.model, loaded.tokenizer, texts, batch_size=1)
    enc = loaded.tokenizer(texts, padding="max_length", max_length=512, truncation=True, return_tensors="pt")
    with torch.no_grad():  # labels = input_ids: transformers' own mean loss, padding included
        want = loaded.model(input_ids=enc["input_ids"], labels=enc["input_ids"]).loss.item()
    assert got["mean_loss"] == pytest.approx(want, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(want), rel=1e-5)
    assert got["scored_positions"] == 2 * 511 and got["padding_fraction"] > 0.5


@pytest.mark.parametrize("n,length", [(12, 4), (13, 4), (3, 4), (4, 4), (5, 4)])
def test_biomamba_2026_chunks_keep_a_chunk_only_when_a_token_follows(n, length):
    from biomamba.eval.ppl_biomamba2026 import stream_chunks
    ids = list(range(n))
    docs = [ids[:2], ids[2:3], ids[3:]]  # chunks cross document boundaries: one concatenated stream
    want = [ids[i:i + length] for i in range(0, n - length, length)]
    assert list(stream_chunks(docs, length)) == want


@pytest.mark.parametrize("model_name", ["gpt2", "mamba"])
def test_biomamba_2026_equals_their_formula_not_the_token_weighted_one(model_name, gpt2_dir, mamba_dir):
    from biomamba.eval.ppl_biomamba2026 import biomamba_2026
    loaded, _ = load_model({"gpt2": gpt2_dir, "mamba": mamba_dir}[model_name])
    texts = CORPUS * 3  # 7 chunks of 16 at batch 3: a last batch of one chunk
    tokens = [loaded.tokenizer.encode(t) for t in texts]
    with torch.no_grad():
        want = direct_biomamba_2026(loaded.model, loaded.tokenizer, texts, 16, 3)
        weighted = direct_biomamba_2026(loaded.model, loaded.tokenizer, texts, 16, 3, weighted=True)
        got = biomamba_2026(loaded.model, tokens, 16, 3, max_rows=2)  # 2 rows a forward: the same batch mean
    assert got["chunks"] % 3 != 0 and got["batches"] == math.ceil(got["chunks"] / 3)
    assert got["perplexity"] == pytest.approx(want, rel=1e-5)
    assert got["token_weighted_perplexity"] == pytest.approx(weighted, rel=1e-5)
    assert abs(want - weighted) > 1e-4 * want  # the short last batch weighs as much as a full one


# ----------------------------------------------------------------------------- data specs

def bioasq_file(path):
    path.write_text(json.dumps({"questions": [
        {"id": "q1", "body": "Is aspirin an NSAID?", "type": "yesno", "exact_answer": "yes",
         "ideal_answer": ["Yes, aspirin is an NSAID."], "documents": ["http://www.ncbi.nlm.nih.gov/pubmed/1"],
         "snippets": [{"document": "http://www.ncbi.nlm.nih.gov/pubmed/1", "text": "Aspirin is an NSAID."},
                      {"document": "http://www.ncbi.nlm.nih.gov/pubmed/2", "text": "  "}]},
        {"id": "q2", "body": "What does metformin treat?", "type": "summary",
         "ideal_answer": "Type 2 diabetes.", "documents": ["3"],
         "snippets": [{"document": "3", "text": "Metformin treats type 2 diabetes."}]}]}))
    return path


def test_bioasq_text_selection(tmp_path):
    path = bioasq_file(tmp_path / "BioASQ-b.json")
    data = load_data(f"bioasq:{path}")
    assert list(data.stream()) == ["Aspirin is an NSAID.", "Yes, aspirin is an NSAID.",
                          "Metformin treats type 2 diabetes.", "Type 2 diabetes."]
    assert data.skipped_empty == 1 and data.name == "BioASQ-b-snippets+ideal"
    assert list(load_data(f"bioasq:{path}:questions").stream()) == ["Is aspirin an NSAID?", "What does metformin treat?"]
    assert list(load_data(f"bioasq:{path}:ideal").stream()) == ["Yes, aspirin is an NSAID.", "Type 2 diabetes."]
    assert list(load_data(str(path)).stream()) == list(data.stream())  # *.json is inferred as BioASQ
    with pytest.raises(DataError, match="unknown BioASQ text part"):
        load_data(f"bioasq:{path}:answers")


def test_prepared_split_uses_the_training_text(tmp_path):
    from biomamba.data.documents import document_text
    docs = [{"pmid": "1", "title": "T1", "abstract": "A1", "split": "val", "excluded": False},
            {"pmid": "2", "title": "T2", "abstract": "", "split": "val", "excluded": False},
            {"pmid": "3", "title": "T3", "abstract": "A3", "split": "train", "excluded": False},
            {"pmid": "4", "title": "T4", "abstract": "A4", "split": "val", "excluded": True},
            {"pmid": "5", "title": "T5", "abstract": "A5", "split": "test", "excluded": False}]
    (tmp_path / "documents.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    val = load_data(str(tmp_path))
    assert val.name == "pubmed-val" and list(val.stream()) == [document_text(docs[0]), document_text(docs[1])]
    assert list(val.stream())[0] == "T1\nA1"
    assert list(load_data(f"prepared:{tmp_path}:test").stream()) == ["T5\nA5"]


def test_text_and_jsonl_specs(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nline two\n\n\nsecond doc\n")
    assert list(load_data(f"text:{tmp_path / 'a.txt'}").stream()) == ["first doc\nline two", "second doc"]
    (tmp_path / "b.jsonl").write_text('{"text": "x y"}\n\n{"text": "z", "other": 1}\n')
    assert list(load_data(str(tmp_path / "b.jsonl")).stream()) == ["x y", "z"]
    (tmp_path / "c.jsonl").write_text('{"body": "x y"}\n')
    assert list(load_data(f"jsonl:{tmp_path / 'c.jsonl'}:body").stream()) == ["x y"]
    assert parse_spec("prepared:d:test")[::2] == ("prepared", "test")


def test_bad_inputs_give_clear_errors(tmp_path, gpt2_dir):
    with pytest.raises(DataError, match="no such file"):
        load_data(str(tmp_path / "missing.jsonl"))
    # documents stream: a bad first line fails at load_data, a later one when the stream reaches it
    (tmp_path / "empty.jsonl").write_text('{"text": "   "}\n')
    with pytest.raises(DataError, match=r"empty.jsonl:1: empty document"):
        load_data(str(tmp_path / "empty.jsonl"))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        list(load_data(str(tmp_path / "bad.jsonl")).stream())
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not a BioASQ task B JSON"):
        load_data(str(tmp_path / "bad.json"))
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no documents"):
        load_data(str(tmp_path / "blank.txt"))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((gpt2_dir / "config.json").read_text())
    with pytest.raises(ModelSpecError, match=r"bare: no tokenizer files .*--tokenizer"):
        load_model(bare)
    with pytest.raises(ModelSpecError, match="no such model directory"):
        load_model(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- CLI and report

def cli(argv):
    parser = argparse.ArgumentParser()
    perplexity.add_arguments(parser)
    return perplexity.run(parser.parse_args(argv))


def test_cli_writes_out_json_and_report(tmp_path, gpt2_dir, mamba_dir, capsys):
    (tmp_path / "docs.txt").write_text(f"{SHORT}\n\n{LONG}\n")
    bioasq = bioasq_file(tmp_path / "bioasq.json")
    out = tmp_path / "gpt2.json"
    assert cli(["--model", str(gpt2_dir), "--data", str(tmp_path / "docs.txt"), "--data", f"bioasq:{bioasq}",
                "--out", str(out), "--max-length", "16", "--protocol", "biomamba-2024", "--protocol", "biomamba-2026",
                "--no-progress"]) == 0
    payload = json.loads(out.read_text())
    assert payload["model"]["family"] == "transformers" and payload["protocol"]["name"] == "loglikelihood_rolling"
    docs, qa = payload["results"]
    assert [docs["dataset"], qa["dataset"]] == ["docs", "bioasq-snippets+ideal"]
    loaded, _ = load_model(gpt2_dir)
    want = sum(direct_rolling_loglik(loaded.model, loaded.tokenizer, t, 16)[0] for t in [SHORT, LONG])
    assert docs["sum_logprob"] == pytest.approx(want, rel=1e-5)
    assert docs["words"] == count_words(SHORT) + count_words(LONG)
    assert docs["bytes"] == count_bytes(SHORT) + count_bytes(LONG)
    assert docs["bits_per_byte"] == pytest.approx(-want / docs["bytes"] / math.log(2), rel=1e-6)
    assert docs["tokenizer"]["sha256"] and docs["windowing"] == {"name": "loglikelihood_rolling",
                                                                 "max_length": 16, "stride": 16, "packed": False}
    assert list(docs["protocols"]) == ["lm-eval", "biomamba-2024", "biomamba-2026"]
    assert docs["protocols"]["lm-eval"]["perplexity"] == docs["token_perplexity"]
    assert docs["protocols"]["biomamba-2024"]["perplexity"] > 0
    assert "padding scored" in docs["protocols"]["biomamba-2024"]["protocol"]
    want_2026 = direct_biomamba_2026(loaded.model, loaded.tokenizer, [SHORT, LONG], 16, 16)
    assert docs["protocols"]["biomamba-2026"]["perplexity"] == pytest.approx(want_2026, rel=1e-5)
    assert "not token-weighted" in docs["protocols"]["biomamba-2026"]["protocol"]
    assert cli(["--model", str(mamba_dir), "--data", str(tmp_path / "docs.txt"), "--out",
                str(tmp_path / "mamba.json"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "mamba.json").read_text())["protocol"]["max_length"] == 1024
    capsys.readouterr()
    args = argparse.Namespace(results=[str(out), str(tmp_path / "mamba.json")], out=str(tmp_path / "rep"))
    assert report_ppl.run(args) == 0
    md = (tmp_path / "rep" / "ppl_report.md").read_text()
    assert md.index("Bits per byte") < md.index("Word perplexity") < md.index("Token perplexity")
    assert "BioMamba 2024 protocol" in md and "BioMamba 2026 protocol" in md and "Definition: biomamba-2026" in md
    assert f"{docs['bits_per_byte']:.4f}" in md and f"{docs['protocols']['biomamba-2026']['perplexity']:.2f}" in md
    assert (tmp_path / "rep" / "ppl.png").stat().st_size > 1000
    old = json.loads(out.read_text())  # an OUT.json written before --protocol: its legacy figure still reported
    for r in old["results"]:
        r["legacy_padded"] = r.pop("protocols")["biomamba-2024"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    rows = report_ppl.load_results([str(tmp_path / "old.json")])
    assert rows[0]["biomamba-2024_perplexity"] == docs["protocols"]["biomamba-2024"]["perplexity"]


def test_cli_errors_are_one_line(tmp_path, gpt2_dir, capsys):
    assert cli(["--model", str(gpt2_dir), "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o.json")]) == 1
    assert "error:" in capsys.readouterr().err and not (tmp_path / "o.json").exists()
    (tmp_path / "d.txt").write_text("hello\n")
    assert cli(["--model", str(gpt2_dir), "--data", str(tmp_path / "d.txt"), "--out", str(tmp_path / "o.json"),
                "--max-length", "8", "--stride", "9"]) == 1
    assert "--stride" in capsys.readouterr().err


# ----------------------------------------------------------------------------- streaming and --limit

def parsed(argv):
    parser = argparse.ArgumentParser()
    perplexity.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("model", ["mamba", "gpt2", "bert"])
def test_streamed_chunks_give_the_results_of_one_pass(tmp_path, mamba_dir, gpt2_dir, bert_dir, model):
    """Memory is bounded by scoring a chunk of documents at a time; the figures do not depend on it."""
    model_dir = {"mamba": mamba_dir, "gpt2": gpt2_dir, "bert": bert_dir}[model]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS * 3 + [LONG, SHORT]))
    args = parsed(["--model", str(model_dir), "--data", str(path), "--out", str(tmp_path / "o.json"),
                   "--no-progress", "--no-wandb"])
    loaded, _ = load_model(model_dir)
    windowing = {"name": "any", "max_length": 16, "stride": 16, "packed": False}
    one = perplexity.evaluate_dataset(loaded, load_data(str(path)), "tok", windowing, args, "cpu", chunk_tokens=10 ** 9)
    chunked = perplexity.evaluate_dataset(loaded, load_data(str(path)), "tok", windowing, args, "cpu", chunk_tokens=20)
    # The same windows in other batches: a masked LM's pseudo-perplexity batches masked copies of
    # several documents, so float32 matmuls of other shapes round differently (2e-9 relative on an
    # Intel Xeon, 2026-12-04); the causal models' windows keep their batches and agree closer.
    rel = 1e-7 if model == "bert" else 1e-9
    assert chunked["sum_logprob"] == pytest.approx(one["sum_logprob"], rel=rel)
    assert [chunked[k] for k in ("documents", "tokens", "words", "bytes")] == \
           [one[k] for k in ("documents", "tokens", "words", "bytes")] == [17, one["tokens"], one["words"], one["bytes"]]


def test_limit_scores_the_documents_whose_text_hashes_lowest_whatever_the_order(tmp_path, mamba_dir):
    from biomamba.data.splits import unit_hash
    texts = [f"{text} (case {i})" for i, text in enumerate(CORPUS * 3)]
    for name, order in (("forward", texts), ("reversed", texts[::-1])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in order))
        assert cli(["--model", str(mamba_dir), "--data", str(tmp_path / f"{name}.jsonl"), "--limit", "4",
                    "--out", str(tmp_path / f"{name}.json"), "--no-progress", "--no-wandb"]) == 0
    forward, backward = (json.loads((tmp_path / f"{n}.json").read_text())["results"][0] for n in ("forward", "reversed"))
    assert forward["documents"] == backward["documents"] == 4
    assert forward["sum_logprob"] == pytest.approx(backward["sum_logprob"], rel=1e-9)
    lowest = sorted(texts, key=lambda t: unit_hash(f"0:{t}"))[:4]
    assert lowest != texts[:4]  # a sample, not the first documents
    loaded, _ = load_model(mamba_dir)
    want = sum(direct_rolling_loglik(loaded.model, loaded.tokenizer, t, 1024)[0] for t in lowest)
    assert forward["sum_logprob"] == pytest.approx(want, rel=1e-5)
    assert forward["words"] == sum(count_words(t) for t in lowest)


# ----------------------------------------------------------------------------- lm-eval itself as the peer

@pytest.fixture(scope="module")
def bos_mamba_dir(tmp_path_factory, mamba_dir):
    """mamba_dir's model with a tokenizer whose post-processor prepends BOS, as Llama's does."""
    from tokenizers.processors import TemplateProcessing
    path = tmp_path_factory.mktemp("bos_mamba")
    tok = PreTrainedTokenizerFast.from_pretrained(str(mamba_dir))
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A",
                                                              special_tokens=[("<|endoftext|>", 0)])
    tok.save_pretrained(path)
    BioMambaForCausalLM.from_pretrained(mamba_dir).save_pretrained(path)
    return path


@pytest.mark.parametrize("add_bos_token", [None, "false"])
def test_eval_ppl_equals_lm_eval_loglikelihood_rolling_with_a_bos_adding_tokenizer(bos_mamba_dir, tmp_path,
                                                                                    add_bos_token):
    """lm-eval 0.4.13's HFLM on the same model and tokenizer: by default both encode with the
    tokenizer's own BOS (and score it); --add-bos-token false is its add_bos_token=False."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    texts = [SHORT, CORPUS[0], LONG, CORPUS[4]]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "ppl.json"
    args = ["--model", str(bos_mamba_dir), "--data", f"jsonl:{tmp_path / 'docs.jsonl'}", "--out", str(out),
            "--max-length", "16", "--batch-size", "3", "--device", "cpu", "--no-progress"]
    assert cli(args + (["--add-bos-token", add_bos_token] if add_bos_token else [])) == 0
    ours = json.loads(out.read_text())["results"][0]

    loaded, _ = load_model(bos_mamba_dir)
    assert loaded.tokenizer(SHORT)["input_ids"][0] == 0  # the tokenizer adds BOS itself
    flag = {None: None, "false": False}[add_bos_token]
    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, max_length=16, batch_size=3,
              add_bos_token=flag)
    requests = [Instance("loglikelihood_rolling", {}, (text,), i) for i, text in enumerate(texts)]
    theirs = lm.loglikelihood_rolling(requests, disable_tqdm=True)
    assert ours["sum_logprob"] == pytest.approx(sum(theirs), rel=1e-5)
    assert ours["tokens"] == sum(len(lm.tok_encode(t)) for t in texts)


def test_pack_is_refused_for_models_that_would_read_across_documents(tmp_path, gpt2_dir, capsys):
    (tmp_path / "docs.txt").write_text(f"{SHORT}\n\n{LONG}\n")
    assert cli(["--model", str(gpt2_dir), "--data", str(tmp_path / "docs.txt"), "--out", str(tmp_path / "o.json"),
                "--pack", "--no-progress"]) == 1
    assert "--pack needs a model whose forward resets at document boundaries" in capsys.readouterr().err


@pytest.mark.parametrize("max_length,stride", [(64, None), (16, None), (16, 5)])
def test_packed_documents_score_as_they_do_alone(mamba_dir, max_length, stride):
    """Several windows per row, isolated by seq_idx: every document's sum equals the one-per-row sum."""
    loaded, _ = load_model(mamba_dir)
    texts = [SHORT, CORPUS[0], LONG, CORPUS[4], "Aspirin.", CORPUS[2]]
    token_lists = perplexity.tokenize_texts(loaded.tokenizer, texts)
    alone = causal_document_scores(loaded.model, token_lists, 0, max_length, stride, batch_size=2)
    packed = causal_document_scores(loaded.model, token_lists, 0, max_length, stride, batch_size=2, pack=max_length)
    np.testing.assert_allclose(packed, alone, rtol=1e-5)
