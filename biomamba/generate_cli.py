"""Generate text from a checkpoint with the recurrent state cache (transformers' `generate`).

Examples:
  biomamba generate --model runs/tiny/final --prompt "The patients were randomised to"
  biomamba generate --model DIR --prompt "..." --do-sample --top-p 0.9 --seed 1
  biomamba generate --model DIR --prompt "..." --num-beams 4 --repetition-penalty 1.2
  biomamba generate --model DIR --prompt "..." --precision int8     (weight-only int8, faster on CPU)

The model is any directory BioMambaForCausalLM loads (ours, HF Mamba, state-spaces). The tokenizer
comes from --tokenizer, else the model directory, else the `tokenizer/` directory of a prepared
data directory recorded next to a training run.
"""
import sys


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--prompt", action="append", required=True,
                        help="prompt text (repeat for a batch)")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: the model's own)")
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams")
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling RNG")
    parser.add_argument("--device", default="auto", help="auto (cuda when available; the default), cpu, cuda, cuda:1")
    from biomamba.flags import EVAL_DTYPES, PRECISION_HELP
    parser.add_argument("--precision", default="fp32", choices=list(EVAL_DTYPES), help=PRECISION_HELP)


def run(args):
    import torch

    from biomamba import BioMambaForCausalLM
    from biomamba.checkpoints import CheckpointError
    from biomamba.decode import quantize_weights, use_fast_decode
    from biomamba.flags import EVAL_DTYPES, ROUNDED
    from biomamba.resolve import ModelSpecError, find_tokenizer_dir, load_tokenizer, model_dir_of
    from biomamba.runtime import pick_device

    try:
        device = pick_device(args.device)
        model_dir = model_dir_of(args.model)
        tokenizer = load_tokenizer(find_tokenizer_dir(model_dir, args.tokenizer, [model_dir.parent / "tokenizer"],
                                                      hint="pass --tokenizer DIR"))
        model = BioMambaForCausalLM.from_pretrained(model_dir).to(device, getattr(torch, EVAL_DTYPES[args.precision]))
        if device.type == "cpu" and args.precision in ("fp32", *ROUNDED):
            use_fast_decode(model, args.precision)  # rounded as asked, the step's weights in huge pages
        elif args.precision in ROUNDED:
            quantize_weights(model, args.precision)
    except (CheckpointError, ModelSpecError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    batch = tokenizer(args.prompt, return_tensors="pt", padding=True).to(device)
    torch.manual_seed(args.seed)  # transformers' sampling draws from the global RNG
    # sampling options only with --do-sample: transformers warns about them on greedy or beam search
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p) if args.do_sample else {}
    out = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"],
                         max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, **sampling,
                         num_beams=args.num_beams, repetition_penalty=args.repetition_penalty,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    for row in out:
        print(tokenizer.decode(row, skip_special_tokens=True))
        print("---")
    return 0
