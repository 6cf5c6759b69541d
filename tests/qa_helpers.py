"""Small QA files in each upstream format and tiny model directories for the eval-qa tests."""
import json
import random

import torch

from biomamba import BioMambaConfig, BioMambaForCausalLM
from tests.model_helpers import TINY, bpe_tokenizer

WORDS = ("patients cells protein expression levels increased decreased treatment group control mice tumor gene "
         "receptor activity response clinical study blood serum therapy cancer risk dose effect insulin").split()


def sentence(rng, low=4, high=9) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize()


def pubmedqa_rows(n, seed):
    """Rows in the bigbio 'source' layout lm-eval's pubmedqa task reads (QUESTION, CONTEXTS, final_decision)."""
    rng = random.Random(seed)
    return [{"QUESTION": sentence(rng) + "?", "CONTEXTS": [sentence(rng) + "." for _ in range(rng.randint(1, 3))],
             "final_decision": rng.choice(["yes", "no", "maybe"]), "pubid": str(1000 + seed * 100 + i)}
            for i in range(n)]


def medmcqa_rows(n, seed):
    rng = random.Random(seed)
    return [{"id": f"m{seed}-{i}", "question": sentence(rng) + "?", "opa": sentence(rng, 1, 3),
             "opb": sentence(rng, 1, 3), "opc": sentence(rng, 1, 3), "opd": sentence(rng, 1, 3),
             "cop": rng.randrange(4)} for i in range(n)]


def medqa_rows(n, seed):
    """lm-eval's medqa_4options layout (GBaker/MedQA-USMLE-4-options-hf)."""
    rng = random.Random(seed)
    return [{"id": f"q{seed}-{i}", "sent1": sentence(rng, 8, 14) + "?",
             **{f"ending{j}": sentence(rng, 1, 4) for j in range(4)}, "label": rng.randrange(4)} for i in range(n)]


def mmlu_rows(n, seed, subject="clinical_knowledge"):
    rng = random.Random(seed)
    return [{"question": " " + sentence(rng) + "? ", "subject": subject,
             "choices": [sentence(rng, 1, 3) for _ in range(4)], "answer": rng.randrange(4)} for i in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def corpus_of(rows) -> list:
    texts = []
    for row in rows:
        for value in row.values():
            texts += value if isinstance(value, list) else [str(value)]
    return texts + ["Abstract: Question: Answer: Choices: A. B. C. D. yes no maybe The following are multiple"] * 20


def tiny_qa_model_dir(path, corpus, layer="Mamba1", seed=0):
    """A random tiny BioMamba (block type `layer`) with a BPE tokenizer trained on `corpus`, saved to `path`."""
    tok = bpe_tokenizer(path, corpus, vocab_size=400)
    torch.manual_seed(seed)
    config = BioMambaConfig.from_preset("debug", ssm_layer=layer, vocab_size=len(tok), eos_token_id=0, bos_token_id=0,
                                        pad_token_id=0, **TINY[layer])
    model = BioMambaForCausalLM(config)
    with torch.no_grad():  # tied head: larger embeddings give a less flat next-token distribution
        model.get_input_embeddings().weight.mul_(8.0)
    model.save_pretrained(path)
    return path
