"""Builders shared by the model tests: tiny random models (ours and transformers' on the same
weights), padded batches, a word-level tokenizer, and the state-spaces directory layout."""
import json

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import MambaConfig, MambaForCausalLM, PreTrainedTokenizerFast

from biomamba import BioMambaConfig, BioMambaForCausalLM
from biomamba.checkpoints import config_from_hf, map_keys


def random_hf_mamba(vocab_size=128, hidden_size=32, layers=2, state_size=5, seed=0, varied=False):
    """A transformers MambaForCausalLM with non-trivial A_log, D and norm weights.

    varied=True also makes the embeddings small and the mixer projections large: greedy decoding
    then keeps choosing different tokens instead of repeating one, so generation tests can see
    a wrong token (the plain random model repeats one token after a few steps).
    """
    torch.manual_seed(seed)
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
    """Our BioMambaForCausalLM holding the same weights as a transformers MambaForCausalLM."""
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
    """Write the state-spaces layout (config.json with ssm_cfg + pytorch_model.bin)."""
    cfg = hf_model.config
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({
        "d_model": cfg.hidden_size, "n_layer": cfg.num_hidden_layers, "vocab_size": raw_vocab_size,
        "ssm_cfg": {"d_state": cfg.state_size, "dt_rank": cfg.time_step_rank},
        "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
        "pad_vocab_size_multiple": 8, "tie_embeddings": True}))
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone()
             for k, v in hf_model.state_dict().items()}
    torch.save(state, path / "pytorch_model.bin")
    return path


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    config = BioMambaConfig.from_preset("debug", **{"d_state": 5, "vocab_size": 97, **overrides})
    return BioMambaForCausalLM(config).eval()
