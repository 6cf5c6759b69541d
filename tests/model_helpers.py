"""Builders shared by the model tests: tiny random HF Mamba models and their directories."""
import json

import torch
from transformers import MambaConfig, MambaForCausalLM

from biomamba import BioMambaConfig, BioMambaForCausalLM


def random_hf_mamba(vocab_size=128, hidden_size=32, layers=2, state_size=5, seed=0):
    """A transformers MambaForCausalLM with non-trivial A_log, D and norm weights."""
    torch.manual_seed(seed)
    config = MambaConfig(hidden_size=hidden_size, num_hidden_layers=layers, vocab_size=vocab_size,
                         state_size=state_size, time_step_rank=3, pad_token_id=0, eos_token_id=0)
    model = MambaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "A_log" in name or name.endswith(".D") or "norm" in name or "bias" in name:
                param.add_(torch.randn_like(param) * 0.3)
    return model


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
