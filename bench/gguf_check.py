"""Does llama.cpp run our `export --to gguf` file as we run the model? Two checks, on a trained model and
its own tokenizer (needs llama-cpp-python, which builds llama.cpp; bench/RESULTS.md has the recipe):

    tokens      llama.cpp's tokenization of N texts (a prepared split's documents, as eval-ppl reads
                them) against our tokenizer's ids: how many texts agree id for id
    greedy      64 greedy tokens after each prompt: llama.cpp (the GGUF file, float32) against ours fp32
                (biomamba's generate), how many of the 64 agree, and each side's tokens/s

    python bench/gguf_check.py --model demo_out/tiny --data demo_out/data
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model or run directory (with its tokenizer)")
    p.add_argument("--data", required=True, help="a prepared directory (biomamba prepare --out DIR)")
    p.add_argument("--split", default="val")
    p.add_argument("--texts", type=int, default=200, help="documents whose tokenization is compared")
    p.add_argument("--prompts", type=int, default=8, help="prompts (document openings) decoded greedily")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def main():
    args = parse_args()
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    from biomamba import BioMambaForCausalLM
    from biomamba.data.documents import document_text, read_documents
    from biomamba.export import export_model
    from biomamba.resolve import find_tokenizer_dir, model_dir_of

    torch.set_num_threads(args.threads)
    model_dir = model_dir_of(args.model)
    ours = BioMambaForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(find_tokenizer_dir(model_dir))
    texts = [document_text(d) for _, d in zip(range(args.texts), read_documents(args.data, args.split))]
    with tempfile.TemporaryDirectory() as scratch:
        path = export_model(args.model, "gguf", Path(scratch) / "gguf") / "model.gguf"
        llm = Llama(model_path=str(path), n_threads=args.threads, n_threads_batch=args.threads, n_ctx=4096,
                    n_batch=512, verbose=False)
        same = sum(llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)
                   == tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts)
        print(f"tokens: llama.cpp's ids equal ours for {same} of {len(texts)} {args.split} documents "
              f"({sum(len(t) for t in texts):,} characters)")
        agree, ours_s, theirs_s = [], 0.0, 0.0
        for text in texts[:args.prompts]:
            prompt = tokenizer(text, add_special_tokens=False)["input_ids"][:16]
            ids = torch.tensor([prompt])
            start = time.perf_counter()
            with torch.no_grad():
                mine = ours.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                                     min_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None,
                                     pad_token_id=0)[0, len(prompt):].tolist()
            ours_s += time.perf_counter() - start
            start = time.perf_counter()
            theirs = greedy(llm, prompt, args.new_tokens)
            theirs_s += time.perf_counter() - start
            agree.append(sum(a == b for a, b in zip(mine, theirs)))
        n = args.new_tokens * len(agree)
        print(f"greedy: llama.cpp's tokens equal ours fp32 for {sum(agree)} of {n} ({agree} per prompt); "
              f"tokens/s ours {n / ours_s:.1f}, llama.cpp {n / theirs_s:.1f} (prompt pass included)")


def greedy(llm, prompt, new_tokens):
    """llama.cpp's greedy continuation: one llama_decode per token, argmax of the last logits."""
    llm.reset()
    llm.eval(prompt)
    tokens = []
    for i in range(new_tokens):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        tokens.append(int(np.argmax(logits)))
        if i + 1 < new_tokens:
            llm.eval(tokens[-1:])
    return tokens


if __name__ == "__main__":
    main()
