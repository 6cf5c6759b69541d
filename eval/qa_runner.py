"""One (task, protocol) of `biomamba eval-qa`: prompts -> tokens -> scores -> a result row and per-item
predictions. The model is loaded once (`Scorer.load`), as eval-ppl loads it."""
from __future__ import annotations

import time
from dataclasses import dataclass

from biomamba.eval.qa_prompts import PROMPT_NAMES, TARGET_DELIMITER, build_prompts
from biomamba.eval.qa_scoring import build_request, restricted_softmax, score_full, score_shared
from biomamba.metrics.qa import accuracy_summary, choice_predictions


@dataclass
class Scorer:
    model: object
    tokenizer: object
    encode_one: object  # text -> ids, as lm-eval's HFLM.tok_encode
    max_length: int
    shared: bool  # shared-state scoring (BioMamba models)
    batch_size: int
    device: str
    pad_id: int
    model_entry: dict

    @classmethod
    def load(cls, args) -> "Scorer":
        from biomamba.eval.perplexity import encoder, model_entry
        from biomamba.eval.ppl_models import ModelSpecError, load_model
        from biomamba.eval.qa import DEFAULT_MAX_LENGTH
        from biomamba.flags import EVAL_DTYPES, ROUNDED
        from biomamba.resolve import model_dir_of, trained_by
        from biomamba.runtime import pick_device
        device = str(pick_device(args.device))
        loaded, tokenizer_id = load_model(args.model, args.tokenizer, device, EVAL_DTYPES[args.precision],
                                          rounded=args.precision if args.precision in ROUNDED else None)
        if loaded.scoring != "causal":
            raise ModelSpecError(f"{args.model}: a masked LM has no next-token loglikelihood; eval-qa scores causal LMs")
        if args.scoring == "shared" and not loaded.is_mamba:
            raise ModelSpecError(f"{args.model}: --scoring shared needs a recurrent (BioMamba) model")
        max_length = args.max_length or loaded.max_positions or DEFAULT_MAX_LENGTH
        shared = loaded.is_mamba and args.scoring != "full"
        tok = loaded.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        entry = {**model_entry(loaded, device, EVAL_DTYPES[args.precision]), "tokenizer": tokenizer_id,
                 "max_length": max_length, "scoring": "shared state" if shared else "full sequences",
                 "trained_by": trained_by(model_dir_of(args.model))}  # which (fine-tuning) run made it
        return cls(loaded.model, tok, encoder(tok), max_length, shared, args.batch_size, device, pad_id, entry)

    def loglikelihoods(self, requests) -> list:
        score = score_shared if self.shared else score_full
        return score(self.model, requests, self.max_length, self.batch_size, self.device, self.pad_id)


def answer_token_ids(scorer, choices) -> list:
    """The first token of " " + each choice: what BioMamba's protocol compares."""
    ids = [scorer.tokenizer.encode(TARGET_DELIMITER + c, add_special_tokens=False)[0] for c in choices]
    if len(set(ids)) < len(ids):
        raise ValueError(f"answers {list(choices)} share a first token; the biomamba protocol cannot tell them apart")
    return ids


def lm_eval_protocol(scorer, prompts):
    """(per-item records, tokens scored) by lm-eval's loglikelihood of each choice."""
    from biomamba.eval.perplexity import quiet_length_warnings
    with quiet_length_warnings():
        requests = [build_request(scorer.encode_one, p.context, p.choices) for p in prompts]
    lls = scorer.loglikelihoods(requests)
    records = []
    for p, ll in zip(prompts, lls):
        pred, pred_norm = choice_predictions(ll, p.choices)
        records.append({"gold": p.answer, "pred": pred, "pred_norm": pred_norm, "loglikelihoods": ll})
    tokens = sum(len(r.context) + sum(len(c) for c in r.continuations) for r in requests)
    return records, tokens


def biomamba_protocol(scorer, prompts):
    """(per-item records, tokens scored) by the restricted next-token softmax."""
    from biomamba.eval.perplexity import quiet_length_warnings
    with quiet_length_warnings():
        contexts = [scorer.encode_one(p.context.rstrip()) for p in prompts]
    records, by_choices = [None] * len(prompts), {}
    for i, p in enumerate(prompts):  # items with the same answers share one set of answer tokens
        by_choices.setdefault(p.choices, []).append(i)
    for choices, members in by_choices.items():
        probs = restricted_softmax(scorer.model, [contexts[i] for i in members], answer_token_ids(scorer, choices),
                                   scorer.max_length, scorer.batch_size, scorer.device, scorer.pad_id)
        for i, pr in zip(members, probs):
            records[i] = {"gold": prompts[i].answer, "pred": max(range(len(pr)), key=pr.__getitem__),
                          "probabilities": pr}
    return records, sum(len(c) for c in contexts)


def evaluate_task(scorer, task, protocol: str, k: int):
    """The result row of one task by one protocol, and its per-item predictions."""
    pool, pool_is_test = (task.fewshot_items, False) if task.fewshot_items else (task.items, True)
    prompts = build_prompts(task.kind, task.items, pool, k, pool_is_test)
    start = time.perf_counter()
    run = lm_eval_protocol if protocol == "lm-eval" else biomamba_protocol
    records, tokens = run(scorer, prompts)
    seconds = time.perf_counter() - start
    row = {"task": task.name, "kind": task.kind, "protocol": protocol, "prompt": PROMPT_NAMES[task.kind],
           "split": task.path, "fewshot_from": (task.fewshot_path or task.path) if k else None, "num_fewshot": k,
           **accuracy_summary([r["pred"] == r["gold"] for r in records])}
    row["acc_norm"] = (accuracy_summary([r["pred_norm"] == r["gold"] for r in records])["acc"]
                       if protocol == "lm-eval" else None)
    row["scoring"] = ("restricted next-token softmax" if protocol == "biomamba" else scorer.model_entry["scoring"])
    row.update({"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / max(seconds, 1e-9), 1)})
    predictions = [{"task": task.name, "protocol": protocol, "num_fewshot": k, "id": item.id, **r}
                   for item, r in zip(task.items, records)]
    return row, predictions
