"""`biomamba export`: what it refuses, how it replaces a directory, the command's errors. That its
directories load in transformers (without biomamba) and back through our loader, for both block types
and both layouts, is in test_model_common.py."""
import subprocess
import sys

import pytest

from biomamba import BioMambaForEmbedding
from biomamba.cli import main
from biomamba.export import ExportError, export_model
from tests.model_helpers import tiny_model, word_tokenizer

VOCAB = 97  # not a multiple of pad_vocab_size_multiple (8)


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    """Our saved causal LM with a tokenizer beside it."""
    path = tmp_path_factory.mktemp("source")
    tiny_model(vocab_size=VOCAB).save_pretrained(path)
    word_tokenizer(VOCAB, path)
    return path


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




def test_export_refuses_what_transformers_mamba2_cannot_hold(tmp_path):
    with pytest.raises(ExportError, match="norm_before_gate=True.*transformers' Mamba2 cannot hold"):
        export_model(tiny_model(layer="Mamba2", norm_before_gate=True), "transformers", tmp_path / "out")
    assert not (tmp_path / "out").exists()
