"""The Mamba-2 block computes what transformers' Mamba2ForCausalLM (its torch path) computes, on the
same tiny random weights in fp32, and its checkpoints move between our, transformers' and
state-spaces' layouts unchanged; plus its own initialisation, presets and config checks.

The block-type-independent contract (caching, padding, loss, heads, packed documents, generate
arguments, pipelines, Trainer) runs for both block types in test_model.py, test_generation.py,
test_hf_compat.py and test_packed_documents.py.
"""
import json
import math
import subprocess
import sys

import pytest
import torch

from biomamba import BioMambaConfig, BioMambaForCausalLM
from biomamba.checkpoints import CheckpointError
from biomamba.cli import main
from biomamba.export import ExportError, export_model
from tests.model_helpers import biomamba_twin, padded_batch, random_hf_mamba, tiny_model, write_mamba_ssm_dir

VOCAB = 128
CHUNK = 8
LENGTH = 37  # not a multiple of CHUNK: the last chunk is partial


def _logits(model, ids, mask=None):
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits


def _ids(rows=2, length=LENGTH, seed=0, vocab=VOCAB):
    return torch.randint(1, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n_groups", [1, 2])
@pytest.mark.parametrize("tie", [True, False])
def test_logits_equal_transformers_with_right_padding_and_partial_last_chunk(n_groups, tie):
    theirs = random_hf_mamba(vocab_size=VOCAB, layer="Mamba2", n_groups=n_groups, chunk_size=CHUNK, tie=tie)
    ours = biomamba_twin(theirs)
    assert ours.config.ngroups == n_groups and ours.config.chunk_size == CHUNK
    assert (_logits(ours, _ids()) - _logits(theirs, _ids())).abs().max() <= 1e-4
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, VOCAB, (n,), generator=g) for n in (LENGTH, 21, 5)]
    ids, mask = padded_batch(prompts, "right")
    mine, reference = _logits(ours, ids, mask), _logits(theirs, ids, mask)
    for row, prompt in enumerate(prompts):  # real tokens only: what sits under padding is nobody's output
        assert (mine[row, :len(prompt)] - reference[row, :len(prompt)]).abs().max() <= 1e-4, row


def test_greedy_generation_of_20_tokens_equals_transformers():
    theirs = random_hf_mamba(vocab_size=VOCAB, layer="Mamba2", n_groups=2, chunk_size=CHUNK, varied=True)
    ours = biomamba_twin(theirs)
    prompt = _ids(rows=2, length=11, seed=3)
    kwargs = dict(max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = theirs.generate(prompt, **kwargs)
    assert expected.shape[1] == 31 and len(set(expected[0, 11:].tolist())) > 5  # not one repeated token
    assert torch.equal(ours.generate(prompt, **kwargs), expected)


@pytest.mark.parametrize("n_groups", [1, 2])
def test_prefix_then_cached_one_token_steps_equal_the_full_forward_of_transformers(n_groups):
    theirs = random_hf_mamba(vocab_size=VOCAB, layer="Mamba2", n_groups=n_groups, chunk_size=CHUNK)
    ours = biomamba_twin(theirs)
    ids = _ids(length=23, seed=4)
    full = _logits(theirs, ids)
    with torch.no_grad():
        out = ours(ids[:, :13], use_cache=True)  # a prefix longer than one chunk, then single tokens
        steps = [out.logits]
        for t in range(13, ids.shape[1]):
            out = ours(ids[:, t:t + 1], cache_params=out.cache_params, use_cache=True)
            steps.append(out.logits)
    assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-4
    cache, cfg = out.cache_params, ours.config
    assert tuple(cache.get_conv_state(0).shape) == (2, cfg.conv_dim, cfg.d_conv)
    assert tuple(cache.get_recurrent_state(0).shape) == (2, cfg.nheads, cfg.headdim, cfg.d_state)


def test_state_spaces_directory_loads_with_the_same_logits(tmp_path):
    theirs = random_hf_mamba(vocab_size=VOCAB, layer="Mamba2", n_groups=2, chunk_size=CHUNK)
    # 123 tokens padded to a multiple of 16 = 128 rows, as state-spaces/mamba2-* store 50277 -> 50288
    path = write_mamba_ssm_dir(theirs, tmp_path / "ssm", raw_vocab_size=123)
    ours = BioMambaForCausalLM.from_pretrained(path)
    cfg = ours.config
    assert (cfg.ssm_layer, cfg.vocab_size, cfg.ngroups, cfg.headdim, cfg.chunk_size) == ("Mamba2", 128, 2, 16, CHUNK)
    ids = _ids(vocab=123)
    assert (_logits(ours, ids) - _logits(theirs, ids)).abs().max() <= 1e-4


def test_transformers_directory_loads_with_the_same_logits(tmp_path):
    theirs = random_hf_mamba(vocab_size=VOCAB, layer="Mamba2", chunk_size=CHUNK, tie=False)
    theirs.save_pretrained(tmp_path)
    ours = BioMambaForCausalLM.from_pretrained(tmp_path)
    assert not ours.config.tie_word_embeddings
    assert (_logits(ours, _ids()) - _logits(theirs, _ids())).abs().max() <= 1e-4


# Runs in a fresh interpreter: loads the export with plain transformers, proves biomamba never loaded.
LOAD_WITH_TRANSFORMERS = """
import sys, torch
from transformers import Mamba2ForCausalLM
model = Mamba2ForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[2])).logits, sys.argv[3])
assert not any(name == "biomamba" or name.startswith("biomamba.") for name in sys.modules), "biomamba imported"
"""


@pytest.mark.parametrize("n_groups, tie", [(1, True), (2, False)])
def test_our_transformers_export_loads_in_transformers_with_the_same_logits(n_groups, tie, tmp_path, capsys):
    model = tiny_model(layer="Mamba2", ngroups=n_groups, tie_word_embeddings=tie, seed=5)
    assert (model.lm_head.weight is model.backbone.embedding.weight) == tie
    model.save_pretrained(tmp_path / "ours")
    out = tmp_path / "hf"
    assert main(["export", "--model", str(tmp_path / "ours"), "--to", "transformers", "--out", str(out)]) == 0
    assert "transformers.Mamba2ForCausalLM.from_pretrained" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["architectures"], config["n_groups"]) == ("mamba2", ["Mamba2ForCausalLM"],
                                                                                  n_groups)
    torch.save(_ids(vocab=97), tmp_path / "ids.pt")
    run = subprocess.run([sys.executable, "-c", LOAD_WITH_TRANSFORMERS, str(out), str(tmp_path / "ids.pt"),
                          str(tmp_path / "logits.pt")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (torch.load(tmp_path / "logits.pt") - _logits(model, _ids(vocab=97))).abs().max() <= 1e-4


def test_state_spaces_export_has_the_layout_of_its_checkpoints_and_loads_back(tmp_path):
    hf = random_hf_mamba(vocab_size=VOCAB, layer="Mamba2", n_groups=2, chunk_size=CHUNK)
    reference = write_mamba_ssm_dir(hf, tmp_path / "reference", raw_vocab_size=VOCAB)
    ours = biomamba_twin(hf)
    out = export_model(ours, "state-spaces", tmp_path / "ssm")
    config, expected = (json.loads((d / "config.json").read_text()) for d in (out, reference))
    assert set(config) == set(expected)
    assert {k: config["ssm_cfg"][k] for k in expected["ssm_cfg"]} == expected["ssm_cfg"]
    tensors, expected_tensors = (torch.load(d / "pytorch_model.bin", weights_only=True) for d in (out, reference))
    assert set(tensors) == set(expected_tensors)
    for name, tensor in expected_tensors.items():
        assert torch.equal(tensors[name], tensor), name
    assert torch.equal(_logits(BioMambaForCausalLM.from_pretrained(out), _ids()), _logits(ours, _ids()))


def test_export_refuses_what_transformers_mamba2_cannot_hold(tmp_path):
    with pytest.raises(ExportError, match="norm_before_gate=True.*transformers' Mamba2 cannot hold"):
        export_model(tiny_model(layer="Mamba2", norm_before_gate=True), "transformers", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    tiny_model(layer="Mamba2").save_pretrained(tmp_path)
    wrong = BioMambaConfig.from_pretrained(tmp_path)
    wrong.headdim = 32  # 2 heads instead of 4
    with pytest.raises(CheckpointError, match=r"A_log: checkpoint shape \(4,\) does not fit the config's \(2,\)"):
        BioMambaForCausalLM.from_pretrained(tmp_path, config=wrong)


def test_initialisation_follows_mamba_ssm():
    torch.manual_seed(0)
    config = BioMambaConfig.from_preset("tiny-mamba2", vocab_size=97, dt_min=0.002, dt_max=0.05)
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


def test_presets_have_the_released_sizes_and_a_tiny_peer_of_tiny():
    for name, (d_model, n_layer) in {"mamba2-130m": (768, 24), "mamba2-370m": (1024, 48),
                                     "mamba2-780m": (1536, 48), "mamba2-1.3b": (2048, 48),
                                     "mamba2-2.7b": (2560, 64)}.items():
        config = BioMambaConfig.from_preset(name)
        assert (config.ssm_layer, config.d_model, config.n_layer) == ("Mamba2", d_model, n_layer), name
        assert (config.d_state, config.headdim, config.expand, config.ngroups, config.chunk_size) == (128, 64, 2, 1, 256)
        assert config.vocab_size == 50288 and config.vocab_size % 16 == 0
    with torch.device("meta"):
        mamba2_130m = BioMambaForCausalLM(BioMambaConfig.from_preset("mamba2-130m"))
        tiny, tiny2 = (BioMambaForCausalLM(BioMambaConfig.from_preset(name)) for name in ("tiny", "tiny-mamba2"))
    assert 128e6 <= mamba2_130m.num_parameters() <= 131e6  # state-spaces/mamba2-130m: 129.1M
    assert abs(tiny2.num_parameters() / tiny.num_parameters() - 1) < 0.02


def test_config_reports_mamba2_problems():
    with pytest.raises(ValueError, match="divisible by headdim 48"):
        BioMambaConfig.from_preset("debug-mamba2", headdim=48)
    with pytest.raises(ValueError, match="divisible by ngroups 3"):
        BioMambaConfig.from_preset("debug-mamba2", ngroups=3)
    with pytest.raises(ValueError, match="scan_backend 'cuda' has no SSD scan"):
        BioMambaConfig.from_preset("debug-mamba2", scan_backend="cuda")


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
