"""`biomamba export` writes directories that transformers (without biomamba) and our loader read back."""
import json
import subprocess
import sys

import pytest
import torch

from biomamba import BioMambaForCausalLM, BioMambaForEmbedding
from biomamba.cli import main
from biomamba.export import ExportError, export_model
from tests.model_helpers import biomamba_twin, random_hf_mamba, tiny_model, word_tokenizer, write_mamba_ssm_dir

VOCAB = 97  # not a multiple of pad_vocab_size_multiple (8)

# Runs in a fresh interpreter: loads the export with plain transformers, proves biomamba never loaded.
LOAD_WITH_TRANSFORMERS = """
import sys, torch
from transformers import AutoTokenizer, MambaForCausalLM
model = MambaForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(ids).logits, sys.argv[3])
AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)
assert not any(name == "biomamba" or name.startswith("biomamba.") for name in sys.modules), "biomamba imported"
"""


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    """Our saved causal LM with a tokenizer beside it."""
    path = tmp_path_factory.mktemp("source")
    tiny_model(vocab_size=VOCAB).save_pretrained(path)
    word_tokenizer(VOCAB, path)
    return path


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _ids():
    return torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(0))


def test_transformers_export_loads_without_biomamba_with_equal_logits(source_dir, tmp_path):
    out = export_model(source_dir, "transformers", tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["model_type"] == "mamba"
    assert (out / "tokenizer.json").is_file()
    torch.save(_ids(), tmp_path / "ids.pt")
    run = subprocess.run([sys.executable, "-c", LOAD_WITH_TRANSFORMERS, str(out), str(tmp_path / "ids.pt"),
                          str(tmp_path / "logits.pt")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    theirs = torch.load(tmp_path / "logits.pt")
    ours = _logits(BioMambaForCausalLM.from_pretrained(source_dir), _ids())
    assert (theirs - ours).abs().max() <= 1e-5


def test_transformers_export_reads_back_through_our_loader(source_dir, tmp_path):
    out = export_model(BioMambaForCausalLM.from_pretrained(source_dir), "transformers", tmp_path / "hf")
    assert (out / "tokenizer.json").is_file()  # found through the model's name_or_path
    again = BioMambaForCausalLM.from_pretrained(out)
    assert torch.equal(_logits(again, _ids()), _logits(BioMambaForCausalLM.from_pretrained(source_dir), _ids()))


def test_state_spaces_export_loads_back_with_equal_logits(source_dir, tmp_path):
    out = export_model(source_dir, "state-spaces", tmp_path / "ssm")
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == VOCAB and config["pad_vocab_size_multiple"] == 1  # 97 must not grow to 104
    model = BioMambaForCausalLM.from_pretrained(source_dir)
    assert torch.equal(_logits(BioMambaForCausalLM.from_pretrained(out), _ids()), _logits(model, _ids()))


def test_state_spaces_export_has_the_layout_of_its_checkpoints(tmp_path):
    hf = random_hf_mamba(vocab_size=128)
    reference = write_mamba_ssm_dir(hf, tmp_path / "reference", raw_vocab_size=128)
    out = export_model(biomamba_twin(hf), "state-spaces", tmp_path / "ssm")
    config, expected = (json.loads((d / "config.json").read_text()) for d in (out, reference))
    assert set(config) == set(expected)
    for key in ("d_model", "n_layer", "vocab_size", "rms_norm", "residual_in_fp32", "fused_add_norm", "tie_embeddings"):
        assert config[key] == expected[key], key
    assert {k: config["ssm_cfg"][k] for k in expected["ssm_cfg"]} == expected["ssm_cfg"]
    tensors, expected_tensors = (torch.load(d / "pytorch_model.bin", weights_only=True) for d in (out, reference))
    assert set(tensors) == set(expected_tensors)  # lm_head.weight included: mamba_ssm loads strictly
    for name, tensor in expected_tensors.items():
        assert torch.equal(tensors[name], tensor), name


def test_heads_without_a_peer_class_are_refused_and_nothing_is_written(source_dir, tmp_path):
    head_dir = tmp_path / "embedding"
    BioMambaForEmbedding.from_pretrained(source_dir).save_pretrained(head_dir)
    with pytest.raises(ExportError, match="BioMambaForEmbedding.*only a causal LM"):
        export_model(head_dir, "transformers", tmp_path / "out")
    with pytest.raises(ExportError, match="BioMambaForEmbedding"):
        export_model(BioMambaForEmbedding.from_pretrained(source_dir), "state-spaces", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_export_replaces_an_old_directory_whole(source_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"old")
    export_model(source_dir, "state-spaces", out)
    assert not (out / "stale.bin").exists() and (out / "pytorch_model.bin").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_export_refuses_what_mamba_ssm_cannot_hold(tmp_path):
    model = tiny_model(rms_norm_eps=1e-6)
    with pytest.raises(ExportError, match="rms_norm_eps"):
        export_model(model, "state-spaces", tmp_path / "out")
    with pytest.raises(ExportError, match="choose one of transformers, state-spaces"):
        export_model(model, "onnx", tmp_path / "out")


def test_export_command(source_dir, tmp_path, capsys):
    help_run = subprocess.run([sys.executable, "-m", "biomamba", "export", "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0 and "--to" in help_run.stdout
    assert main(["export", "--model", str(source_dir), "--to", "transformers", "--out", str(tmp_path / "hf")]) == 0
    assert "MambaForCausalLM.from_pretrained" in capsys.readouterr().out
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert main(["export", "--model", str(tmp_path / "missing"), "--to", "transformers",
                 "--out", str(tmp_path / "x")]) == 1
    assert "no such model directory" in capsys.readouterr().err


@pytest.mark.parametrize("layer", ["Mamba1", "Mamba2"])
@pytest.mark.parametrize("to", ["transformers", "state-spaces"])
def test_export_command_writes_both_layouts_for_both_block_types(to, layer, tmp_path, capsys):
    # The command, not export_model: the state-spaces CLI path once read an architectures key after writing.
    source = tmp_path / "source"
    tiny_model(layer=layer, vocab_size=VOCAB).save_pretrained(source)
    assert main(["export", "--model", str(source), "--to", to, "--out", str(tmp_path / "out")]) == 0
    loader = {"transformers": "ForCausalLM.from_pretrained", "state-spaces": "MambaLMHeadModel.from_pretrained"}[to]
    assert loader in capsys.readouterr().out
    ours = _logits(BioMambaForCausalLM.from_pretrained(source), _ids())
    again = BioMambaForCausalLM.from_pretrained(tmp_path / "out")
    assert again.config.ssm_layer == layer
    assert (_logits(again, _ids()) - ours).abs().max() <= 1e-5
