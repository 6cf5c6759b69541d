"""Where a decoded token's time goes: batch-1 greedy decoding at a preset's shape (default the 130m
shapes of both block types), broken into parts that are each timed on their own.

    generate         ms per new token of model.generate (64 new tokens after a 16-token prompt)
    forward step     ms of one cached forward call (model(ids, cache_params=...)); generate's own
                     work per token (logits processors, stopping criteria, cache bookkeeping) is the
                     difference
    gemvs            the step's matrix-vector products alone (in_proj, x_proj, dt_proj, out_proj of
                     every layer), with the weights' bytes and the effective read bandwidth
    state update     the conv step and the SSM state step of every layer alone
    LM head          the final norm and the (vocab x d_model) gemv alone
    the rest         forward step - (gemvs + state update + LM head): norms, residuals, splits,
                     and the per-op cost of Python and the torch dispatcher
    weight floor     the model's weight bytes / the machine's read bandwidth (a sum over a tensor of
                     the same bytes): the bound on tokens/s that reading every weight once per token sets

With `--fast`, the same for our compiled decode step (biomamba/decode.py, per precision): its forward
step and generate, and their % of the fp32 weight floor.

Each figure is the median of --repeats timed calls after a warm-up. Random weights.

    python bench/decode_profile.py
    python bench/decode_profile.py --presets tiny --blocks Mamba2 --threads 1
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from biomamba import BioMambaConfig, BioMambaForCausalLM, ops


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="130m", help="comma list of preset sizes")
    p.add_argument("--blocks", default="Mamba1,Mamba2", help="comma list of block types (config.ssm_layer)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--fast", default="fp32,bf16-weights,int8,int8-dynamic",
                   help="precisions of our compiled decode step to profile too ('' skips it)")
    return p.parse_args()


def median_ms(call, repeats):
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def read_bandwidth(nbytes, repeats):
    """GB/s of summing a float32 tensor of `nbytes` (a pure read of memory)."""
    t = torch.ones(nbytes // 4)
    return nbytes / median_ms(lambda: t.sum(), repeats) / 1e6


def step_linears(mixer):
    return [mixer.in_proj, mixer.out_proj] + ([mixer.x_proj, mixer.dt_proj] if hasattr(mixer, "x_proj") else [])


def filled_cache(model, prompt_len=16):
    ids = torch.randint(1, model.config.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(ids, use_cache=True)
    return out.cache_params, ids[:, -1:]


def state_update(mixer, cache, cfg):
    """The conv step and the SSM state step of one layer, on inputs of the decoding shapes."""
    conv_state, ssm_state = cache.get_conv_state(mixer.layer_idx), cache.get_recurrent_state(mixer.layer_idx)
    if cfg.ssm_layer == "Mamba2":
        xBC, dt, A = torch.randn(1, cfg.conv_dim), torch.randn(1, cfg.nheads), -torch.exp(mixer.A_log)
        x, B, C = mixer._split(xBC)
        return lambda: (
            ops.causal_conv1d_update(xBC, conv_state, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, "silu"),
            ops.ssd_state_update(ssm_state, x, dt, A, B, C, mixer._D(), dt_bias=mixer.dt_bias, dt_softplus=True,
                                 dt_limit=cfg.dt_limit))
    x, z = torch.randn(1, cfg.d_inner), torch.randn(1, cfg.d_inner)
    dt, B, C = torch.randn(1, cfg.d_inner), torch.randn(1, cfg.d_state), torch.randn(1, cfg.d_state)
    A = -torch.exp(mixer.A_log)
    return lambda: (ops.causal_conv1d_update(x, conv_state, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, "silu"),
                    ops.selective_state_update(ssm_state, x, dt, A, B, C, mixer.D, z=z,
                                               dt_bias=mixer.dt_proj.bias, dt_softplus=True))


def profile(model, repeats, label):
    cfg = model.config
    mixers = [layer.mixer for layer in model.backbone.layers]
    cache, last = filled_cache(model)
    ids = torch.randint(1, cfg.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1))
    new = 64
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                  eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        generate = median_ms(lambda: model.generate(ids, **kwargs), max(3, repeats // 5)) / new
        step = median_ms(lambda: model(last, cache_params=cache, use_cache=True), repeats)
        rows = {"generate (per token)": generate, "forward step": step}
        if label != "torch":
            return rows, None
        inputs = [(lin, torch.randn(1, lin.in_features)) for m in mixers for lin in step_linears(m)]
        gemv = median_ms(lambda: [F.linear(x, lin.weight, lin.bias) for lin, x in inputs], repeats)
        gemv_bytes = sum(lin.weight.numel() * lin.weight.element_size() for lin, _ in inputs)
        updates = [state_update(m, cache, cfg) for m in mixers]
        update = median_ms(lambda: [u() for u in updates], repeats)
        hidden = torch.randn(1, 1, cfg.d_model)
        head = median_ms(lambda: model.lm_head(model.backbone.norm_f(hidden)), repeats)
        head_bytes = model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    rows.update({"gemvs (layers)": gemv, "state update (conv + SSM)": update, "LM head": head,
                 "the rest (Python, dispatch, norms, residuals)": step - gemv - update - head})
    return rows, dict(gemv_gbs=gemv_bytes / gemv / 1e6, head_gbs=head_bytes / head / 1e6,
                      weight_bytes=gemv_bytes + head_bytes)


def gemv_kernels(repeats):
    """GB/s of one gemv over the LM head's shape (50280 x 768) per kernel: torch's fp32 and bf16
    F.linear, torch's int8 weight-only op (aten._weight_int8pack_mm), and ours (decode_step.cpp)."""
    from biomamba.decode import quantize
    from biomamba.ops.cpu_decode import extension

    ext, weight, x = extension(), torch.randn(50280, 768), torch.randn(1, 768)
    int8, scale = quantize(weight, "int8")
    bf16 = weight.to(torch.bfloat16)
    kernels = {
        "torch F.linear fp32": (lambda: F.linear(x, weight), 4),
        "torch F.linear bf16 (bf16 input)": (lambda: F.linear(x.to(torch.bfloat16), bf16), 2),
        "torch _weight_int8pack_mm int8": (lambda: torch.ops.aten._weight_int8pack_mm(x, int8, scale), 1),
        "ours fp32": (lambda: ext.linear(x, weight, None, None), 4),
        "ours bf16 weights": (lambda: ext.linear(x, bf16, None, None), 2),
        "ours int8 weights": (lambda: ext.linear(x, int8, scale, None), 1),
    }
    print("| gemv (50280 x 768, batch 1) | ms | GB/s of weights |\n|---|---|---|")
    for name, (call, size) in kernels.items():
        try:
            ms = median_ms(call, repeats)
        except RuntimeError as error:  # an op this torch build lacks on CPU
            print(f"| {name} | - | unavailable: {str(error).splitlines()[0][:80]} |")
            continue
        print(f"| {name} | {ms:.2f} | {weight.numel() * size / ms / 1e6:.1f} |")


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    print(f"# batch 1, {args.threads} thread(s), median of {args.repeats}; uptime: "
          f"{os.popen('uptime').read().strip()}")
    for block, preset in ((b, p) for b in args.blocks.split(",") for p in args.presets.split(",")):
        torch.manual_seed(0)
        model = BioMambaForCausalLM(BioMambaConfig.from_preset(preset, ssm_layer=block)).eval()
        model.decode_kernel = "torch"  # today's torch step, the path the profile breaks down
        rows, sizes = profile(model, args.repeats, "torch")
        bandwidth = read_bandwidth(sizes["weight_bytes"], args.repeats)
        floor_ms = sizes["weight_bytes"] / bandwidth / 1e6
        print(f"\n## {preset} ({model.config.ssm_layer}), fp32 weights read per token "
              f"{sizes['weight_bytes'] / 1e6:.0f} MB, read bandwidth {bandwidth:.1f} GB/s -> weight floor "
              f"{floor_ms:.1f} ms/token ({1000 / floor_ms:.0f} tok/s)")
        print(f"| part | ms/token | share of generate |\n|---|---|---|")
        for name, ms in rows.items():
            print(f"| {name} | {ms:.2f} | {ms / rows['generate (per token)']:.0%} |")
        print(f"| generate's own work (generate - forward step) | "
              f"{rows['generate (per token)'] - rows['forward step']:.2f} | "
              f"{(rows['generate (per token)'] - rows['forward step']) / rows['generate (per token)']:.0%} |")
        print(f"gemv bandwidth: layers {sizes['gemv_gbs']:.1f} GB/s, LM head {sizes['head_gbs']:.1f} GB/s; "
              f"generate reaches {floor_ms / rows['generate (per token)']:.0%} of the weight floor")
        for precision in filter(None, args.fast.split(",")):
            from biomamba.decode import use_fast_decode
            fast_model = BioMambaForCausalLM(model.config).eval()
            fast_model.load_state_dict(model.state_dict())
            use_fast_decode(fast_model, precision, kernel="compiled")
            fast, _ = profile(fast_model, args.repeats, precision)
            print(f"compiled step {precision:5}: forward step {fast['forward step']:.2f} ms, generate "
                  f"{fast['generate (per token)']:.2f} ms/token ({1000 / fast['generate (per token)']:.1f} tok/s, "
                  f"{floor_ms / fast['generate (per token)']:.0%} of the fp32 weight floor)")
    if args.fast:
        gemv_kernels(args.repeats)
    print(f"# uptime at the end: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
