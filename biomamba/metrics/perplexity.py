"""Perplexity metrics that compare across tokenizers (lm-eval-harness definitions).

With L = summed natural-log likelihood of every scored token of every document:
    token_perplexity = exp(-L / tokens)            depends on the tokenizer: compare only within one
    word_perplexity  = exp(-L / words)             words = len(re.split(r"\\s+", doc)), summed
    byte_perplexity  = exp(-L / bytes)             bytes = len(doc.encode("utf-8")), summed
    bits_per_byte    = -L / bytes / ln 2
Words and bytes are counts of the text, not of the tokens, so these two are comparable between
models with different tokenizers scored on the same texts.
"""
import math
import re

_WHITESPACE = re.compile(r"\s+")


def count_words(text: str) -> int:
    return len(_WHITESPACE.split(text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")


def perplexity_metrics(sum_logprob: float, tokens: int, words: int, n_bytes: int) -> dict:
    nll = -float(sum_logprob)
    return {
        "sum_logprob": float(sum_logprob),
        "token_perplexity": _exp(nll / tokens),
        "word_perplexity": _exp(nll / words),
        "byte_perplexity": _exp(nll / n_bytes),
        "bits_per_byte": nll / n_bytes / math.log(2),
    }
