"""eval-qa's loglikelihood scoring against lm-eval 0.4.13's HFLM.loglikelihood on the same model, CPU.

Items: a context of --context-words words (an abstract and a question) and --choices continuations of
--choice-words words each (1: the lettered choices of medqa/medmcqa/mmlu, " A".." D"; more: answers
scored as text). Three scorers of the same requests:
  hflm     lm-eval's HFLM (batch --batch-size); for one-token continuations its logits cache already runs
           each shared context once (Collator group_by="contexts"), so the gap there is small
  full     eval-qa's full sequences (one row per choice), what transformers models get
  shared   eval-qa's shared state: each context once, every choice from a copy of its conv/SSM cache
tokens/s = context + continuation tokens of every (item, choice) pair, / seconds of the fastest of
--repeats rounds (one warm-up), the three in turns. Random weights of the "tiny" preset (d_model 256,
4 layers) with a word-level tokenizer (one token a word); the loglikelihoods of the three are checked
equal (1e-4) before timing.

    python bench/qa_speed.py
    python bench/qa_speed.py --choice-words 1,8 --items 16 --context-words 256
"""
import argparse
import os
import time

import numpy as np
import torch

from biomamba import BioMambaConfig, BioMambaForCausalLM
from biomamba.bench_cli import fastest_in_turns, report_table


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--items", type=int, default=16)
    p.add_argument("--choices", type=int, default=4)
    p.add_argument("--context-words", type=int, default=256)
    p.add_argument("--choice-words", default="1,8", help="words per choice, one table row each")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def word_tokenizer(vocab_size):
    """Whitespace words "w1" ... as one token each; "<eos>" is BOS/EOS/pad."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = ["<eos>"] + [f"w{i}" for i in range(1, vocab_size)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<eos>", eos_token="<eos>", pad_token="<eos>")


def make_pairs(rng, items, choices, context_words, choice_words, vocab):
    words = lambda n: " ".join(f"w{w}" for w in rng.integers(1, vocab, n))  # noqa: E731
    return [(words(context_words), [" " + words(choice_words) for _ in range(choices)]) for _ in range(items)]


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from biomamba.eval.perplexity import encoder
    from biomamba.eval.qa_scoring import build_request, score_full, score_shared

    torch.manual_seed(0)
    model = BioMambaForCausalLM(BioMambaConfig.from_preset(args.preset)).eval()
    tok = word_tokenizer(model.config.vocab_size)
    hflm = HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size, max_length=4096)
    encode_one = encoder(tok)
    print(f"# {args.preset}, {args.items} items x {args.choices} choices, context {args.context_words} tokens, "
          f"{args.threads} thread(s), load average {os.getloadavg()[0]:.1f} at the start; tokens/s (x hflm)")
    rows = []
    for choice_words in (int(w) for w in args.choice_words.split(",")):
        pairs = make_pairs(np.random.default_rng(choice_words), args.items, args.choices, args.context_words,
                           choice_words, model.config.vocab_size)
        requests = [build_request(encode_one, context, [c[1:] for c in conts]) for context, conts in pairs]
        instances = [Instance("loglikelihood", {}, (context, cont), i)
                     for i, (context, conts) in enumerate(pairs) for cont in conts]
        tokens = sum((len(r.context) + len(c)) for r in requests for c in r.continuations)
        with torch.no_grad():
            scorers = {"hflm": lambda: [ll for ll, _ in hflm.loglikelihood(instances, disable_tqdm=True)],
                       "full": lambda: sum(score_full(model, requests, 4096, args.batch_size * args.choices, "cpu"), []),
                       "shared": lambda: sum(score_shared(model, requests, 4096, args.batch_size, "cpu"), [])}
            values = {name: np.array(call()) for name, call in scorers.items()}
            for name in ("full", "shared"):
                np.testing.assert_allclose(values[name], values["hflm"], atol=1e-4, err_msg=name)
            best = fastest_in_turns({name: timed(call) for name, call in scorers.items()}, args.repeats)
        speed = {name: tokens / s for name, s in best.items()}
        rows.append([choice_words, round(speed["hflm"]), round(speed["full"]), round(speed["shared"]),
                     round(speed["full"] / speed["hflm"], 2), round(speed["shared"] / speed["hflm"], 2)])
        print(f"choice of {choice_words} token(s): hflm {speed['hflm']:.0f} | full {speed['full']:.0f} "
              f"({rows[-1][4]}x) | shared {speed['shared']:.0f} ({rows[-1][5]}x)", flush=True)
    report_table("qa_speed", ["choice tokens", "hflm tok/s", "full tok/s", "shared tok/s", "full x hflm",
                              "shared x hflm"], rows, key=("choice tokens",), ratios=("full x hflm", "shared x hflm"))


def timed(call):
    def run():
        start = time.perf_counter()
        with torch.no_grad():
            call()
        return time.perf_counter() - start
    return run


if __name__ == "__main__":
    main()
