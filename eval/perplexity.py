"""Honest perplexity of any local model on the same texts, by a stated protocol.

  biomamba eval-ppl --model RUN_DIR --data prepared:data/pubmed:val --data bioasq:BioASQ-B.json \\
      --out ppl.json [--max-length 1024] [--stride N] [--batch-size 16] [--protocol P ...]

Models (--model DIR, local paths only): a `biomamba pretrain` run dir (its model/), our model dirs,
HF Mamba and state-spaces Mamba dirs (scored by BioMambaForCausalLM), any transformers causal-LM
dir (GPT-2, BioGPT, GPT-NeoX, ...), and masked LMs (BERT, BioBERT, ...) scored by
pseudo-log-likelihood (each token masked in turn; reported as pseudo-perplexity). The tokenizer
is the model dir's own, or --tokenizer DIR.

Data (--data SPEC, repeatable; one result each, in order):
  prepared:DIR[:val|test]      a `biomamba prepare` dir: the split's title + abstract texts (default val)
  bioasq:FILE.json[:PARTS]     BioASQ task B; PARTS from snippets, ideal, questions joined by '+'
                               (default snippets+ideal); each snippet / answer / question one document
  jsonl:FILE.jsonl[:FIELD]     one document per line, the FIELD string (default "text")
  text:FILE.txt                plain text, documents separated by blank lines
  hf:PATH[:FIELDS]             a Hugging Face dataset (save_to_disk dir, parquet/arrow/jsonl files)
  A bare path is inferred: a dir `prepare` wrote, *.json, *.jsonl, else plain text.
Documents are streamed and scored about 2^20 tokens at a time, so memory does not grow with the
data. --limit N scores a fixed sample: the N documents whose text hashes lowest (the same for every
model and every order of the data), not the first N.

Protocol (default): lm-eval-harness loglikelihood_rolling. Documents are encoded as lm-eval's HFLM
encodes them: with the tokenizer's own special tokens, so a tokenizer that adds BOS (or EOS) itself
has that token scored like any other (unless the text already starts with BOS);
--add-bos-token true|false forces special tokens on or off, as lm-eval's add_bos_token does
(our prepared tokenizers add none). Each document alone; the first window
conditioned on the tokenizer's BOS (EOS when it has none); windows of --max-length tokens score
disjoint spans, every token once, later windows conditioned on the --max-length tokens before
them; --stride S scores at most S new tokens per window (more overlapping context); padding is
never scored. A document that fits in --max-length is one forward pass. --pack (BioMamba) puts
several windows in one row, each its own document for the model (seq_idx resets), for the same
sums.

--protocol P (repeatable; default lm-eval) adds BioMamba's protocols beside it, each under
results[i].protocols[P] with its definition, so a reader sees how much of a figure is protocol:
  lm-eval        the rolling windows above (always scored: its bits per byte is the figure to compare by)
  biomamba-2026  their eval_ppl_domain.py: documents' tokens concatenated into non-overlapping chunks of
                 --max-length, batches of --batch-size, exp(mean of per-batch mean loss), not token-weighted
                 (eval/ppl_biomamba2026.py states how chunks are formed); bf16 autocast on CUDA, fp32 on CPU
  biomamba-2024  their 2024 code: 512 tokens per document, padding scored (eval/ppl_legacy.py)
(--legacy-padded is now --protocol biomamba-2024.)

OUT.json: {"model", "protocol", "results": [{dataset, documents, tokens, words, bytes,
sum_logprob, token_perplexity, word_perplexity, byte_perplexity, bits_per_byte, tokenizer,
windowing, protocols: {P: {protocol (its definition), perplexity, mean_loss, ...}}, ...}]}.
Compare models with different tokenizers by bits_per_byte and word_perplexity.

W&B (--no-wandb: none): a run of job_type eval-ppl named after OUT, files under OUT's directory,
offline unless W&B is configured; summary eval-ppl/DATASET/{bits_per_byte, word_perplexity,
token_perplexity, byte_perplexity, tokens, documents} (and P/perplexity for each --protocol P), a table eval-ppl/results with one row per
dataset, the model and protocol in the config. Its group is the one of the run that trained the
model (--model RUN_DIR or RUN_DIR/model; that run's W&B id is config model_origin.run_id), else the
model directory's name; --wandb-group sets another.
"""
import contextlib
import sys
import time
from pathlib import Path

from biomamba.data.errors import DataError
from biomamba.data.sampling import HashSample
from biomamba.io import write_json
from biomamba.runtime import pick_device
from biomamba import flags, tracking
from biomamba.eval.ppl_data import load_data
from biomamba.metrics.perplexity import count_bytes, count_words, perplexity_metrics
from biomamba.eval.ppl_models import ModelSpecError, default_max_length, load_model, prefix_token_id

LOGITS_BUDGET = 2 ** 27  # fp32 logits per batch (512 MiB): caps rows x length x vocab
CHUNK_TOKENS = 2 ** 20  # documents are encoded, windowed and scored about this many tokens at a time


PROTOCOLS = {
    "lm-eval": "lm-eval-harness loglikelihood_rolling (every token once, padding never scored)",
    "biomamba-2026": "BioMamba 2026 eval_ppl_domain.py: non-overlapping --max-length chunks of the "
                     "concatenated documents, exp(mean of per-batch mean loss)",
    "biomamba-2024": "BioMamba 2024 code: 512 tokens per document, padding scored",
}


def protocols_of(args) -> list[str]:
    """The protocols asked for, lm-eval first, each once."""
    return list(dict.fromkeys(["lm-eval", *(args.protocol or [])]))


def add_arguments(parser):
    flags.add_scored_model(parser)  # --model, --tokenizer, --device, --precision (recorded as model.dtype)
    parser.add_argument("--data", required=True, action="append", metavar="SPEC",
                        help="data to score (repeatable); see the SPEC forms above")
    parser.add_argument("--out", required=True, metavar="OUT.json", help="results JSON")
    parser.add_argument("--max-length", type=int, metavar="N",
                        help="tokens per window (default 1024 for causal LMs, 512 for masked LMs, "
                             "capped at the model's positions)")
    parser.add_argument("--stride", type=int, metavar="N",
                        help="new tokens scored per window (default --max-length: disjoint spans)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default 16)")
    flags.renamed(parser, "--dtype", "--precision", " (fp32, bf16, fp16)")
    parser.add_argument("--protocol", action="append", choices=list(PROTOCOLS), metavar="P",
                        help="repeatable: " + "; ".join(f"{k}: {v}" for k, v in PROTOCOLS.items())
                             + " (default lm-eval, which is always scored)")
    flags.renamed(parser, "--legacy-padded", "--protocol biomamba-2024")
    parser.add_argument("--pack", action="store_true",
                        help="BioMamba models: several short documents per row of --max-length tokens, isolated "
                             "by document resets (seq_idx); the same sums as one document per row, faster")
    parser.add_argument("--add-bos-token", choices=["true", "false"],
                        help="special tokens when encoding documents, as lm-eval's add_bos_token: default the "
                             "tokenizer's own (a tokenizer that adds BOS/EOS has them scored); false: none")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="score a fixed sample of N documents of each dataset: those whose text hashes "
                             "lowest (reproducible, the same for every model, spread over the whole data)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    tracking.add_arguments(parser, files_in="OUT.json's directory")


def encoder(tokenizer, add_special_tokens: bool | None = None):
    """text -> token ids as lm-eval's HFLM.tok_encode makes them: the tokenizer's own special tokens
    unless `add_special_tokens` forces them on or off (lm-eval's add_bos_token), and none for a text
    that already starts with the BOS token's text."""
    bos = tokenizer.decode(prefix_token_id(tokenizer)[0]) if add_special_tokens is None else None

    def encode_one(text):
        return tokenizer.encode(text, add_special_tokens=add_special_tokens if bos is None
                                else not (bos and text.startswith(bos)))
    return encode_one


def tokenize_texts(tokenizer, texts, add_special_tokens: bool | None = None) -> list:
    """Token ids of each text (see `encoder`)."""
    encode_one = encoder(tokenizer, add_special_tokens)
    with quiet_length_warnings():
        return [encode_one(text) for text in texts]


@contextlib.contextmanager
def quiet_length_warnings():
    """"longer than model_max_length" does not apply: we window."""
    from transformers.utils import logging
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def progress_bar(total, desc, disable):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="tok", unit_scale=True, disable=True if disable else None,
                file=sys.stderr, dynamic_ncols=True)


def score_documents(loaded, token_lists, max_length, stride, batch_size, device, progress, pack=False):
    if loaded.scoring == "masked":
        from biomamba.eval.pseudo_ppl import pseudo_document_scores
        return pseudo_document_scores(loaded.model, loaded.tokenizer, token_lists, max_length, stride,
                                      batch_size, device, progress)
    from biomamba.metrics.rolling import causal_document_scores  # torch: not for `--help`

    prefix_id, _ = prefix_token_id(loaded.tokenizer)
    max_tokens = max(max_length, LOGITS_BUDGET // max(len(loaded.tokenizer), 1))
    return causal_document_scores(loaded.model, token_lists, prefix_id, max_length, stride, batch_size,
                                  device, progress, max_tokens, pack=max_length if pack else None)


def documents_of(data, limit: int | None):
    """A function giving the documents scored, from the start at each call: all of them, streamed, or
    with --limit N the N whose text hashes lowest (a fixed sample whatever the order or size of the
    data, the same for every model), in data order, drawn once and kept (N texts)."""
    if limit is None:
        return data.stream
    sample = HashSample(limit, seed=0)
    for text in data.stream():
        sample.add(text, text)
    kept = sample.items()
    return lambda: iter(kept)


def encoded_chunks(texts, encode_one, spec: str, chunk_tokens: int):
    """(texts, token lists) of consecutive documents, about `chunk_tokens` tokens at a time: what is
    held in memory at once, whatever the size of the data."""
    chunk, tokens, held, number = [], [], 0, 0
    for text in texts:
        ids = encode_one(text)
        if not ids:
            raise DataError(spec, f"document {number} encodes to no tokens")
        number += 1
        chunk.append(text)
        tokens.append(ids)
        held += len(ids)
        if held >= chunk_tokens:
            yield chunk, tokens
            chunk, tokens, held = [], [], 0
    if chunk:
        yield chunk, tokens


def evaluate_dataset(loaded, data, tokenizer_id, windowing, args, device, chunk_tokens: int = CHUNK_TOKENS) -> dict:
    # masked LMs: pseudo_ppl adds the model's own [CLS]/[SEP] template around each window
    special = False if loaded.scoring == "masked" else {"true": True, "false": False, None: None}[args.add_bos_token]
    encode_one = encoder(loaded.tokenizer, special)
    counts = {"documents": 0, "tokens": 0, "words": 0, "bytes": 0}
    sum_logprob = 0.0
    start = time.perf_counter()
    with progress_bar(None, data.name, args.no_progress) as bar, quiet_length_warnings():
        documents = documents_of(data, args.limit)
        for texts, token_lists in encoded_chunks(documents(), encode_one, data.spec, chunk_tokens):
            sums = score_documents(loaded, token_lists, windowing["max_length"], windowing["stride"],
                                   args.batch_size, device, bar, args.pack)
            sum_logprob += float(sums.sum())
            counts["documents"] += len(texts)
            counts["tokens"] += sum(len(t) for t in token_lists)
            counts["words"] += sum(count_words(t) for t in texts)
            counts["bytes"] += sum(count_bytes(t) for t in texts)
    seconds = time.perf_counter() - start
    if not counts["documents"]:
        raise DataError(data.spec, "no documents to score")
    result = {"dataset": data.name, "spec": data.spec, **counts}
    result.update(perplexity_metrics(sum_logprob, counts["tokens"], counts["words"], counts["bytes"]))
    result.update({"perplexity_kind": "pseudo-perplexity" if loaded.scoring == "masked" else "perplexity",
                   "tokenizer": tokenizer_id, "windowing": windowing, "skipped_empty": data.skipped_empty,
                   "limit": args.limit, "sample": "all documents" if args.limit is None else
                   f"the {args.limit} documents whose text hashes lowest (seed 0), in data order",
                   "seconds": round(seconds, 2), "tokens_per_s": round(counts["tokens"] / max(seconds, 1e-9), 1)})
    result["protocols"] = {"lm-eval": lm_eval_entry(result, sum_logprob)}
    for name in protocols_of(args)[1:]:
        result["protocols"][name] = biomamba_result(name, loaded, documents, encode_one, windowing, args, device)
    return result


def lm_eval_entry(result: dict, sum_logprob: float) -> dict:
    mean_loss = -sum_logprob / result["tokens"]
    return {"protocol": PROTOCOLS["lm-eval"] + f", windows of {result['windowing']['max_length']} tokens",
            "mean_loss": mean_loss, "perplexity": result["token_perplexity"],
            "bits_per_byte": result["bits_per_byte"], "scored_positions": result["tokens"]}


def biomamba_result(name, loaded, documents, encode_one, windowing, args, device) -> dict:
    """BioMamba's 2026 or 2024 protocol over the same documents (streamed again)."""
    if loaded.scoring == "masked":
        return {"protocol": PROTOCOLS[name],
                "not_applicable": f"{name} is a causal next-token loss; masked LMs have none"}
    with progress_bar(None, name, args.no_progress) as bar, quiet_length_warnings():
        if name == "biomamba-2024":
            from biomamba.eval.ppl_legacy import legacy_padded
            return legacy_padded(loaded.model, loaded.tokenizer, documents(), args.batch_size, device, progress=bar)
        from biomamba.eval.ppl_biomamba2026 import biomamba_2026
        length = windowing["max_length"]
        max_rows = max(1, LOGITS_BUDGET // (length * max(len(loaded.tokenizer), 1)))
        return biomamba_2026(loaded.model, (encode_one(t) for t in documents()), length, args.batch_size,
                             device, max_rows=max_rows, progress=bar)


def protocol_of(loaded, max_length, stride, note, protocols) -> dict:
    from biomamba.metrics.rolling import windowing_description  # torch: not for `--help`

    if loaded.scoring == "masked":
        desc = {"name": "pseudo_loglikelihood", "max_length": max_length,
                "stride": stride, "description": "Salazar et al. 2020: each token masked in turn, "
                "disjoint spans centred in windows of max_length (special tokens included); "
                "reported as pseudo-perplexity, not comparable with causal perplexity"}
    else:
        desc = windowing_description(max_length, stride, prefix_token_id(loaded.tokenizer)[1])
    if note:
        desc["note"] = note
    desc["protocols"] = {name: PROTOCOLS[name] for name in protocols}
    return desc


def model_entry(loaded, device, dtype) -> dict:
    return {"name": loaded.name, "path": loaded.path, "family": loaded.family, "scoring": loaded.scoring,
            "class": type(loaded.model).__name__, "parameters": sum(p.numel() for p in loaded.model.parameters()),
            "device": device, "dtype": dtype, "weights": getattr(loaded.model, "decode_precision", dtype)}


def summary_line(r: dict) -> str:
    kind = "pseudo-ppl" if r["perplexity_kind"] == "pseudo-perplexity" else "ppl"
    line = (f"{r['dataset']}: {r['documents']} docs, {r['tokens']} tokens | token {kind} "
            f"{r['token_perplexity']:.3f} | word {kind} {r['word_perplexity']:.3f} | bits/byte "
            f"{r['bits_per_byte']:.4f} | {r['tokens_per_s']:.0f} tok/s")
    for name, p in r.get("protocols", {}).items():
        if name != "lm-eval" and "perplexity" in p:
            line += f" | {name} ppl {p['perplexity']:.3f}"
    return line


def run(args) -> int:
    import torch
    with torch.no_grad():  # scoped: `run` is also called in-process (tests, notebooks)
        return _run(args)


def _run(args) -> int:
    from biomamba.metrics.rolling import check_windowing  # torch: not for `--help`

    try:
        device = str(pick_device(args.device))
        datasets = [load_data(spec) for spec in args.data]  # cheap checks before the model loads
        loaded, tokenizer_id = load_model(args.model, args.tokenizer, device, flags.EVAL_DTYPES[args.precision],
                                          rounded=args.precision if args.precision in flags.ROUNDED else None)
        max_length, note = default_max_length(loaded, args.max_length)
        stride = check_windowing(max_length, args.stride)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.pack and not loaded.is_mamba:
            raise ModelSpecError(f"{args.model}: --pack needs a model whose forward resets at document "
                                 "boundaries (BioMamba's seq_idx); this model would read across packed documents")
        protocol = protocol_of(loaded, max_length, stride, note, protocols_of(args))
        protocol["special_tokens"] = ("the model's masking template" if loaded.scoring == "masked" else
                                      {None: "the tokenizer's own (lm-eval default)", "true": "added (add_bos_token=true)",
                                       "false": "none (add_bos_token=false)"}[args.add_bos_token])
        protocol["packed"] = bool(args.pack)
        windowing = {k: protocol[k] for k in ("name", "max_length", "stride", "packed")}
        results = []
        for data in datasets:
            results.append(evaluate_dataset(loaded, data, tokenizer_id, windowing, args, device))
            print(summary_line(results[-1]), flush=True)
    except (DataError, ModelSpecError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    payload = {"model": model_entry(loaded, device, flags.EVAL_DTYPES[args.precision]), "protocol": protocol, "results": results}
    write_json(Path(args.out), payload, sort_keys=False)
    print(f"wrote {args.out}")
    track(args, payload)
    return 0


PPL_METRICS = ("bits_per_byte", "word_perplexity", "token_perplexity", "byte_perplexity", "tokens", "documents")


def track(args, payload: dict):
    """OUT.json's results as a W&B run (job_type eval-ppl) in the group of the model's training run."""
    config = {"model": payload["model"], "protocol": payload["protocol"], "data": args.data, "limit": args.limit}
    per_dataset = {r["dataset"]: {k: r[k] for k in PPL_METRICS} for r in payload["results"]}
    for r in payload["results"]:
        for name, p in r["protocols"].items():
            if name != "lm-eval" and "perplexity" in p:
                per_dataset[r["dataset"]][f"{name}/perplexity"] = p["perplexity"]
    rows = [[r["dataset"], *(r[k] for k in PPL_METRICS), r["perplexity_kind"]] for r in payload["results"]]
    with tracking.start_for_command(args, job_type="eval-ppl", name=Path(args.out).stem,
                                    directory=Path(args.out).parent, config=config,
                                    origin=tracking.model_origin(args.model)) as tracker:
        tracker.summarize(per_dataset, prefix="eval-ppl/")
        tracker.log_table("eval-ppl/results", ["dataset", *PPL_METRICS, "perplexity_kind"], rows)
