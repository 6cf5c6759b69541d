"""Prompts of `biomamba eval-qa`: lm-eval 0.4.x's doc_to_text / doc_to_choice per task, and its few-shot
context, rebuilt from `QAItem`s so that lm-eval's own task code gives the same strings (tests check it).

    pubmedqa  lm_eval/tasks/pubmedqa: "Abstract: {CONTEXTS joined by \\n}\\nQuestion: {QUESTION}\\nAnswer:",
              choices yes / no / maybe
    bioasq    the pubmedqa template with the snippets as the abstract, choices yes / no (lm-eval has no task)
    medmcqa   lm_eval/tasks/medmcqa/utils_medmcqa.py: "Question: q\\nChoices:\\nA. a\\n...D. d\\nAnswer:", A-D
    medqa     lm_eval/tasks/medqa/preprocess_medqa.py: "Question: q\\nA. a\\n...D. d\\nAnswer:", A-D
    mmlu      lm_eval/tasks/mmlu/default/_default_template_yaml: "{question.strip()}\\nA. a\\n...Answer:",
              A-D, description "The following are multiple choice questions (with answers) about SUBJECT.\\n\\n"
    mc        the medmcqa template, "Abstract: ...\\n" before it when the item has a context; one letter an option
    titles    "Abstract: {abstract}\\nTitle:", the 4 titles themselves as the choices (a small LM knows
              no letters; acc_norm then matters, as in lm-eval's hellaswag)

The continuation of each choice is target_delimiter " " + the choice. Few-shot (lm-eval's
ConfigurableTask.fewshot_context): description + per example "{text} {choice of its answer}\\n\\n" + text.
Examples are drawn as lm-eval's samplers draw them: one random.Random(1234) per task (the evaluator's
default fewshot_random_seed) shared by the items in order, `rnd.sample(pool, k)` per item; when the pool
is the test file itself (no FEWSHOT_FILE: lm-eval's fewshot_split == test_split) it draws k + 1 and
drops the item itself; MMLU takes the first k (its first_n sampler).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from biomamba.data.qa_formats import LETTERS

FEWSHOT_SEED = 1234  # lm_eval.defaults.DEFAULT_OTHER_SEED, the evaluator's fewshot_random_seed
TARGET_DELIMITER, FEWSHOT_DELIMITER = " ", "\n\n"
PROMPT_NAMES = {"pubmedqa": "lm-eval pubmedqa", "bioasq": "lm-eval pubmedqa (snippets as abstract)",
                "medmcqa": "lm-eval medmcqa", "medqa": "lm-eval medqa_4options", "mmlu": "lm-eval mmlu default",
                "mc": "lm-eval medmcqa (+ abstract)", "titles": "abstract -> title (choices as text)"}


@dataclass(frozen=True)
class Prompt:
    context: str  # description + few-shot examples + the item's question text
    choices: tuple  # doc_to_choice: the answers as scored (" " + choice is the continuation)
    answer: int


def _abstract(contexts) -> str:
    return "Abstract: " + "\n".join(contexts) + "\n"


def _lettered(options) -> str:
    return "".join(f"{LETTERS[i]}. {option}\n" for i, option in enumerate(options))


def doc_to_text(kind: str, item) -> str:
    if kind in ("pubmedqa", "bioasq"):
        return _abstract(item.contexts) + f"Question: {item.question}\nAnswer:"
    if kind == "medqa":
        return f"Question: {item.question}\n" + _lettered(item.options) + "Answer:"
    if kind == "titles":
        return _abstract(item.contexts) + "Title:"
    if kind == "mmlu":
        return item.question.strip() + "\n" + _lettered(item.options) + "Answer:"
    head = _abstract(item.contexts) if item.contexts else ""
    return head + f"Question: {item.question}\nChoices:\n" + _lettered(item.options) + "Answer:"


def doc_to_choice(kind: str, item) -> tuple:
    if kind in ("pubmedqa", "bioasq", "titles"):
        return item.options
    return tuple(LETTERS[:len(item.options)])


def description(kind: str, item) -> str:
    if kind == "mmlu" and item.subject:
        return f"The following are multiple choice questions (with answers) about {item.subject.replace('_', ' ')}.\n\n"
    return ""


def fewshot_examples(kind: str, items, pool, k: int, pool_is_test: bool):
    """For each item, in order, the k pool items lm-eval's sampler gives it."""
    if k == 0:
        return [[] for _ in items]
    if kind == "mmlu":  # first_n
        return [[p for p in pool if not (pool_is_test and p == item)][:k] for item in items]
    rnd = random.Random(FEWSHOT_SEED)
    chosen = []
    for item in items:
        if not pool_is_test:
            chosen.append(rnd.sample(pool, k))
            continue
        drawn = [p for p in rnd.sample(pool, k + 1) if p != item][:k]
        if len(drawn) < k:  # duplicates of the item were drawn: lm-eval redraws from the rest
            drawn = rnd.sample([p for p in pool if p != item], k)
        chosen.append(drawn)
    return chosen


def build_prompts(kind: str, items, pool, k: int, pool_is_test: bool) -> list:
    """One Prompt per item: lm-eval's context for k shots, its choices and the gold index."""
    if k > len(pool) - (1 if pool_is_test else 0):
        raise ValueError(f"--num-fewshot {k} needs at least {k} few-shot items; the pool has {len(pool)}")
    prompts = []
    for item, shots in zip(items, fewshot_examples(kind, items, pool, k, pool_is_test)):
        text = description(kind, item)
        for shot in shots:
            text += doc_to_text(kind, shot) + TARGET_DELIMITER + doc_to_choice(kind, shot)[shot.answer] + FEWSHOT_DELIMITER
        prompts.append(Prompt(text + doc_to_text(kind, item), doc_to_choice(kind, item), item.answer))
    return prompts
