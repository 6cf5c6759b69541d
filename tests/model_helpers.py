"""Builders shared by the model tests: tiny random models of either block type (ours and
transformers' on the same weights), padded batches, a word-level tokenizer, and the state-spaces
directory layout. Tests that hold for both block types parametrize over BLOCKS."""
import json

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM, PreTrainedTokenizerFast

from biomamba import BioMambaConfig, BioMambaForCausalLM
from biomamba.checkpoints import config_from_hf, map_keys

BLOCKS = ("Mamba1", "Mamba2")  # config.ssm_layer


def random_hf_mamba(vocab_size=128, hidden_size=32, layers=2, state_size=5, seed=0, varied=False, layer="Mamba1",
                    n_groups=1, chunk_size=8, tie=True):
    """A transformers MambaForCausalLM (layer "Mamba1") or Mamba2ForCausalLM ("Mamba2": heads of 16
    channels in `n_groups` groups, chunks of `chunk_size`) with non-trivial A_log, D, dt bias and
    norm weights; tie=False gives Mamba-2 an untied head (transformers' Mamba2 default).

    varied=True also makes the embeddings small and the mixer projections large: greedy decoding
    then keeps choosing different tokens instead of repeating one, so generation tests can see
    a wrong token (the plain random model repeats one token after a few steps).
    """
    torch.manual_seed(seed)
    if layer == "Mamba2":
        config = Mamba2Config(hidden_size=hidden_size, num_hidden_layers=layers, vocab_size=vocab_size,
                              state_size=state_size, head_dim=16, num_heads=2 * hidden_size // 16, n_groups=n_groups,
                              chunk_size=chunk_size, expand=2, pad_token_id=0, eos_token_id=0, bos_token_id=0,
                              tie_word_embeddings=tie)
        model = Mamba2ForCausalLM(config).eval()
    else:
        config = MambaConfig(hidden_size=hidden_size, num_hidden_layers=layers, vocab_size=vocab_size,
                             state_size=state_size, time_step_rank=3, pad_token_id=0, eos_token_id=0)
        model = MambaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "A_log" in name or name.endswith(".D") or "norm" in name or "bias" in name:
                param.add_(torch.randn_like(param) * 0.3)
            if varied and name.endswith(("in_proj.weight", "out_proj.weight")):
                param.mul_(3.0)
        if varied:
            model.backbone.embeddings.weight.normal_(0, 0.02)
    return model


def biomamba_twin(hf_model):
    """Our BioMambaForCausalLM holding the same weights as a transformers MambaForCausalLM or
    Mamba2ForCausalLM."""
    model = BioMambaForCausalLM(config_from_hf(hf_model.config.to_dict()))
    model.load_state_dict(map_keys(hf_model.state_dict(), "hf"))
    return model.train(hf_model.training)


def padded_batch(prompts, side, pad_id=0):
    """Rows of different lengths padded on `side` ("left" or "right"): (input_ids, attention_mask)."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        span = slice(width - len(prompt), width) if side == "left" else slice(0, len(prompt))
        input_ids[row, span], attention_mask[row, span] = torch.as_tensor(prompt), 1
    return input_ids, attention_mask


def word_tokenizer(vocab_size, path=None):
    """A whitespace word-level tokenizer over "<eos>", "w1" ... "w{vocab_size-1}" (saved to `path`)."""
    words = ["<eos>"] + [f"w{i}" for i in range(1, vocab_size)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>",
                                        model_input_names=["input_ids", "attention_mask"])
    if path is not None:
        tokenizer.save_pretrained(path)
    return tokenizer


def write_mamba_ssm_dir(hf_model, path, raw_vocab_size):
    """Write the state-spaces layout (config.json with ssm_cfg + pytorch_model.bin), for a Mamba-2
    model as state-spaces/mamba2-* hold it (ssm_cfg.layer "Mamba2", no MLP or attention layers)."""
    cfg = hf_model.config
    path.mkdir(parents=True, exist_ok=True)
    if cfg.model_type == "mamba2":
        layout = {"ssm_cfg": {"layer": "Mamba2", "d_state": cfg.state_size, "headdim": cfg.head_dim,
                              "ngroups": cfg.n_groups, "chunk_size": cfg.chunk_size},
                  "d_intermediate": 0, "attn_layer_idx": [], "attn_cfg": {}, "pad_vocab_size_multiple": 16}
    else:
        layout = {"ssm_cfg": {"d_state": cfg.state_size, "dt_rank": cfg.time_step_rank}, "pad_vocab_size_multiple": 8}
    (path / "config.json").write_text(json.dumps({
        "d_model": cfg.hidden_size, "n_layer": cfg.num_hidden_layers, "vocab_size": raw_vocab_size,
        "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True, "tie_embeddings": True, **layout}))
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone()
             for k, v in hf_model.state_dict().items()}
    torch.save(state, path / "pytorch_model.bin")
    return path


# layer -> the debug preset's overrides the tests use: a few heads / channels, chunks of 8 for Mamba-2
# so that a couple of dozen tokens cross chunk boundaries
TINY = {"Mamba1": dict(d_state=5), "Mamba2": dict(d_state=8, chunk_size=8)}


def tiny_model(seed=0, layer="Mamba1", **overrides):
    """A random BioMambaForCausalLM of block type `layer` (vocab 97), in eval mode."""
    torch.manual_seed(seed)
    config = BioMambaConfig.from_preset("debug", ssm_layer=layer, **{**TINY[layer], "vocab_size": 97, **overrides})
    return BioMambaForCausalLM(config).eval()


def bpe_tokenizer(path, corpus, vocab_size=300):
    """A byte-level BPE tokenizer trained on `corpus` (GPT-2 style: spaces belong to the next token),
    "<|endoftext|>" as BOS, EOS and pad, saved to `path`."""
    from tokenizers import decoders, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.save_pretrained(path)
    return fast
