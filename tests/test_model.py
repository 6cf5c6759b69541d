"""What belongs to one block type alone: its initialisation (mamba_ssm's), the presets of each block
type, config checks, Mamba-2's dt_limit and the CPU chunking of its SSD scan. The behaviours every
model has, for both block types, are in test_model_common.py."""
import math

import pytest
import torch
import torch.nn.functional as F

from biomamba import BioMambaConfig, BioMambaForCausalLM
from tests.model_helpers import biomamba_twin, random_hf_mamba, tiny_model

VOCAB = 128
CHUNK = 8


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _ids(rows=2, length=37, seed=0, vocab=VOCAB):
    return torch.randint(1, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- initialisation

def test_mamba1_initialisation_follows_mamba_ssm():
    config = BioMambaConfig.from_preset("debug", d_model=64, n_layer=3)
    model = BioMambaForCausalLM(config)
    mixer = model.backbone.layers[0].mixer
    n = config.d_state
    assert torch.allclose(mixer.A_log, torch.log(torch.arange(1, n + 1).float()).expand(config.d_inner, n))
    assert torch.equal(mixer.D, torch.ones(config.d_inner))
    dt = F.softplus(mixer.dt_proj.bias)
    assert dt.min() >= config.dt_init_floor - 1e-7 and dt.max() <= config.dt_max + 1e-6
    assert dt.min() < 0.01 and dt.max() > 0.01  # spread log-uniformly over [dt_min, dt_max]
    assert mixer.dt_proj.weight.abs().max() <= config.dt_rank ** -0.5
    assert abs(model.backbone.embedding.weight.std().item() - 0.02) < 0.002
    bound = 1 / math.sqrt(config.d_inner) / math.sqrt(config.n_layer)  # kaiming(a=sqrt 5), rescaled
    assert mixer.out_proj.weight.abs().max() <= bound + 1e-6
    assert mixer.out_proj.weight.abs().max() > 0.8 * bound
    assert model.lm_head.weight is model.backbone.embedding.weight


def test_mamba2_initialisation_follows_mamba_ssm():
    torch.manual_seed(0)
    config = BioMambaConfig.from_preset("tiny", ssm_layer="Mamba2", vocab_size=97, dt_min=0.002, dt_max=0.05)
    model = BioMambaForCausalLM(config)
    for block in model.backbone.layers:
        mixer = block.mixer
        A = torch.exp(mixer.A_log)
        assert A.shape == (config.nheads,) and A.min() >= 1.0 and A.max() <= 16.0  # A_init_range
        dt = torch.nn.functional.softplus(mixer.dt_bias)
        assert dt.min() >= 0.002 * (1 - 1e-5) and dt.max() <= 0.05 * (1 + 1e-5)
        assert torch.equal(mixer.D, torch.ones(config.nheads))
        assert torch.equal(mixer.norm.weight, torch.ones(config.d_inner))
        bound = 1 / math.sqrt(config.d_inner) / math.sqrt(config.n_layer)  # kaiming-uniform / sqrt(n_layer)
        assert mixer.out_proj.weight.abs().max() <= bound
        assert mixer.in_proj.weight.shape == (2 * config.d_inner + 2 * config.ngroups * config.d_state + config.nheads,
                                              config.d_model)
        assert mixer.conv1d.weight.shape == (config.conv_dim, 1, config.d_conv)


# ----------------------------------------------------------------------------- presets and config checks

def test_mamba1_presets_match_state_spaces_sizes():
    sizes = {"130m": 129_135_360, "370m": 371_516_416}  # mamba-130m / mamba-370m (tied head)
    for name, expected in sizes.items():
        with torch.device("meta"):
            model = BioMambaForCausalLM(BioMambaConfig.from_preset(name))
        assert model.config.ssm_layer == "Mamba1" and model.num_parameters() == expected


def test_mamba2_presets_have_the_released_sizes_and_a_tiny_peer_of_tiny():
    for name, (d_model, n_layer) in {"130m": (768, 24), "370m": (1024, 48), "780m": (1536, 48), "1.3b": (2048, 48),
                                     "2.7b": (2560, 64)}.items():
        config = BioMambaConfig.from_preset(name, ssm_layer="Mamba2")
        assert (config.ssm_layer, config.d_model, config.n_layer) == ("Mamba2", d_model, n_layer), name
        assert (config.d_state, config.headdim, config.expand, config.ngroups, config.chunk_size) == (128, 64, 2, 1, 256)
        assert config.vocab_size == 50288 and config.vocab_size % 16 == 0
    with torch.device("meta"):
        mamba2_130m = BioMambaForCausalLM(BioMambaConfig.from_preset("130m", ssm_layer="Mamba2"))
        tiny, tiny2 = (BioMambaForCausalLM(BioMambaConfig.from_preset("tiny", ssm_layer=layer))
                       for layer in ("Mamba1", "Mamba2"))
    assert 128e6 <= mamba2_130m.num_parameters() <= 131e6  # state-spaces/mamba2-130m: 129.1M
    assert abs(tiny2.num_parameters() / tiny.num_parameters() - 1) < 0.02


def test_a_preset_is_a_size_of_a_block_type_and_the_old_names_say_the_new_spelling():
    with pytest.raises(ValueError, match=r"preset=tiny-mamba2 is now preset=tiny ssm_layer=Mamba2"):
        BioMambaConfig.from_preset("tiny-mamba2")
    with pytest.raises(ValueError, match=r"preset=mamba2-130m is now preset=130m ssm_layer=Mamba2"):
        BioMambaConfig.from_preset("mamba2-130m")
    with pytest.raises(ValueError, match="unknown preset '790m' for ssm_layer=Mamba2; choose one of debug, tiny, 130m"):
        BioMambaConfig.from_preset("790m", ssm_layer="Mamba2")  # Mamba-2's sizes are its own: 780m


def test_config_reports_every_problem_at_once():
    with pytest.raises(ValueError) as error:
        BioMambaConfig(d_model=0, dt_min=0.5, dt_max=0.1, scan_backend="gpu")
    message = str(error.value)
    assert "d_model" in message and "dt_min" in message and "scan_backend" in message
    with pytest.raises(ValueError, match="unknown preset"):
        BioMambaConfig.from_preset("7b")


def test_config_reports_mamba2_problems():
    with pytest.raises(ValueError, match="divisible by headdim 48"):
        BioMambaConfig.from_preset("debug", ssm_layer="Mamba2", headdim=48)
    with pytest.raises(ValueError, match="divisible by ngroups 3"):
        BioMambaConfig.from_preset("debug", ssm_layer="Mamba2", ngroups=3)
    with pytest.raises(ValueError, match="scan_backend 'cuda' has no SSD scan"):
        BioMambaConfig.from_preset("debug", ssm_layer="Mamba2", scan_backend="cuda")


# ----------------------------------------------------------------------------- Mamba-2's own settings

def test_dt_limit_clamps_dt_as_transformers_does():
    theirs = random_hf_mamba(vocab_size=VOCAB, layer="Mamba2", chunk_size=CHUNK)
    theirs.config.time_step_limit = (0.05, 0.2)
    for layer in theirs.backbone.layers:
        layer.mixer.time_step_limit = (0.05, 0.2)
    ours = biomamba_twin(theirs)
    assert tuple(ours.config.dt_limit) == (0.05, 0.2)
    assert (_logits(ours, _ids()) - _logits(theirs, _ids())).abs().max() <= 1e-4
    unclamped = biomamba_twin(random_hf_mamba(vocab_size=VOCAB, layer="Mamba2", chunk_size=CHUNK))
    assert not torch.allclose(_logits(unclamped, _ids()), _logits(ours, _ids()), atol=1e-3)


def test_cpu_scans_in_chunks_of_at_most_64_with_the_logits_of_the_sequential_scan(monkeypatch):
    from biomamba import ops
    chunks = []
    scan = ops.ssd_scan
    monkeypatch.setattr(ops, "ssd_scan", lambda *args, **kwargs: chunks.append(args[5]) or scan(*args, **kwargs))
    model = tiny_model(layer="Mamba2", chunk_size=256).double()
    ids = _ids(rows=1, length=150, vocab=97)
    chunked = _logits(model, ids)
    assert chunks == [64, 64]  # one scan per layer
    model.config.scan_backend = "ref"
    assert (chunked - _logits(model, ids)).abs().max() <= 1e-10
