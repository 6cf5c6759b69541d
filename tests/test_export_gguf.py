"""`biomamba export --to gguf`: llama.cpp's file for our causal LMs.

What a user relies on: the file holds what llama.cpp reads for a "mamba" / "mamba2" model, read back with
the gguf package's own reader (llama.cpp's gguf-py): the hyperparameters, every tensor under the name
llama.cpp's tensor map gives it with the values of transformers' model of our export (A as -exp(A_log),
the shapes llama.cpp's converter writes), and the vocabulary of transformers' tokenizer, id for id, with
its merges and llama.cpp's "gpt-2" pre-tokenizer. What cannot be written that way is refused by name.
That llama.cpp itself tokenizes as we do and decodes the same greedy tokens is bench/gguf_check.py's
(it needs llama.cpp built): 200 of 200 documents and 512 of 512 tokens on the demo model.
"""
import json

import gguf
import numpy as np
import pytest
import torch
import transformers

from biomamba.cli import main
from biomamba.export import ExportError, export_model
from tests.model_helpers import bpe_tokenizer, tiny_model, word_tokenizer

CORPUS = ["Patients with type 2 diabetes were randomised to metformin or placebo.",
          "The aim of this study was to measure serum insulin in 120 mice.",
          "Kinase activity increased significantly (p < 0.01) after treatment."] * 20
VOCAB = 320  # the tokenizer's 300 and 20 rows it has no token for


@pytest.fixture(scope="module", params=["Mamba1", "Mamba2"])
def exported(request, tmp_path_factory):
    """(our saved model directory, its transformers export, the GGUF reader of its --to gguf export)."""
    layer = request.param
    source = tmp_path_factory.mktemp(f"source-{layer}")
    tiny_model(layer=layer, vocab_size=VOCAB).save_pretrained(source)
    bpe_tokenizer(source, CORPUS)
    hf_dir = export_model(source, "transformers", tmp_path_factory.mktemp("hf") / "out")
    gguf_dir = export_model(source, "gguf", tmp_path_factory.mktemp("gguf") / "out")
    return layer, hf_dir, gguf.GGUFReader(gguf_dir / "model.gguf")


def field(reader, key):
    return reader.fields[key].contents()


def test_hyperparameters_are_llama_cpps(exported):
    layer, hf_dir, reader = exported
    config = json.loads((hf_dir / "config.json").read_text())
    arch = "mamba" if layer == "Mamba1" else "mamba2"
    assert field(reader, "general.architecture") == arch
    assert field(reader, f"{arch}.block_count") == config["num_hidden_layers"]
    assert field(reader, f"{arch}.embedding_length") == config["hidden_size"]
    assert field(reader, f"{arch}.ssm.state_size") == config["state_size"]
    assert field(reader, f"{arch}.ssm.conv_kernel") == config["conv_kernel"]
    assert field(reader, f"{arch}.ssm.inner_size") == config["expand"] * config["hidden_size"]
    assert field(reader, f"{arch}.attention.layer_norm_rms_epsilon") == pytest.approx(config["layer_norm_epsilon"])
    if layer == "Mamba1":
        assert field(reader, "mamba.ssm.time_step_rank") == config["time_step_rank"]
    else:
        assert field(reader, "mamba2.ssm.time_step_rank") == config["num_heads"]
        assert field(reader, "mamba2.ssm.group_count") == config["n_groups"]
    assert field(reader, "general.file_type") == gguf.LlamaFileType.ALL_F32


def test_tensors_are_transformers_values_under_llama_cpps_names(exported):
    layer, hf_dir, reader = exported
    arch = gguf.MODEL_ARCH.MAMBA if layer == "Mamba1" else gguf.MODEL_ARCH.MAMBA2
    theirs = getattr(transformers, json.loads((hf_dir / "config.json").read_text())["architectures"][0])
    state = theirs.from_pretrained(hf_dir).state_dict()
    blocks = len({k.split(".")[2] for k in state if k.startswith("backbone.layers.")})
    allowed = {gguf.TENSOR_NAMES[t].format(bid=b) for t in gguf.MODEL_TENSORS[arch] for b in range(blocks)}
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert {name.rsplit(".", 1)[0] if name.endswith((".weight", ".bias")) else name for name in tensors} <= allowed
    # tied: llama.cpp reads token_embd.weight for the missing output.weight
    assert "output.weight" not in tensors and "lm_head.weight" in state
    np.testing.assert_array_equal(tensors["token_embd.weight"], state["backbone.embeddings.weight"].numpy())
    np.testing.assert_array_equal(tensors["output_norm.weight"], state["backbone.norm_f.weight"].numpy())
    for b in range(blocks):
        mixer = f"backbone.layers.{b}.mixer."
        A = -state[mixer + "A_log"].exp()
        expected = {
            "attn_norm.weight": state[f"backbone.layers.{b}.norm.weight"],
            "ssm_in.weight": state[mixer + "in_proj.weight"],
            "ssm_conv1d.weight": state[mixer + "conv1d.weight"].squeeze(1),
            "ssm_conv1d.bias": state[mixer + "conv1d.bias"],
            "ssm_out.weight": state[mixer + "out_proj.weight"],
        }
        if layer == "Mamba1":
            expected.update({"ssm_a": A, "ssm_d": state[mixer + "D"], "ssm_x.weight": state[mixer + "x_proj.weight"],
                             "ssm_dt.weight": state[mixer + "dt_proj.weight"],
                             "ssm_dt.bias": state[mixer + "dt_proj.bias"]})
        else:  # A and D as (heads, 1), the gated norm's weight as (groups, d_inner / groups)
            groups = json.loads((hf_dir / "config.json").read_text())["n_groups"]
            expected.update({"ssm_a": A[:, None], "ssm_d": state[mixer + "D"][:, None],
                             "ssm_dt.bias": state[mixer + "dt_bias"],
                             "ssm_norm.weight": state[mixer + "norm.weight"].reshape(groups, -1)})
        for name, value in expected.items():
            np.testing.assert_allclose(tensors[f"blk.{b}.{name}"], value.numpy(), rtol=1e-6, atol=0, err_msg=name)
        assert len([n for n in tensors if n.startswith(f"blk.{b}.")]) == len(expected)


def test_vocabulary_is_transformers_tokenizer_id_for_id(exported):
    _, hf_dir, reader = exported
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == VOCAB
    assert tokens[:len(tokenizer)] == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert tokens[len(tokenizer):] == [f"[PAD{i}]" for i in range(len(tokenizer), VOCAB)]
    eos = tokenizer.eos_token_id
    assert types[eos] == gguf.TokenType.CONTROL and field(reader, "tokenizer.ggml.eos_token_id") == eos
    assert {types[i] for i in range(len(tokenizer)) if i != eos} == {gguf.TokenType.NORMAL}
    assert set(types[len(tokenizer):]) == {gguf.TokenType.UNUSED}
    merges = json.loads((hf_dir / "tokenizer.json").read_text())["model"]["merges"]
    assert field(reader, "tokenizer.ggml.merges") == [m if isinstance(m, str) else " ".join(m) for m in merges]
    assert field(reader, "tokenizer.ggml.model") == "gpt2" and field(reader, "tokenizer.ggml.pre") == "gpt-2"


def test_what_llama_cpp_cannot_run_is_refused_by_name(tmp_path):
    words = tmp_path / "words"
    tiny_model().save_pretrained(words)
    word_tokenizer(97, words)
    with pytest.raises(ExportError, match=r"tokenizer\.json.*'gpt-2' pre-tokenizer.*model 'WordLevel'"):
        export_model(words, "gguf", tmp_path / "out")
    with pytest.raises(ExportError, match="no tokenizer found"):
        export_model(tiny_model(), "gguf", tmp_path / "out")
    gated = tmp_path / "gated"
    tiny_model(layer="Mamba2", norm_before_gate=True, vocab_size=VOCAB).save_pretrained(gated)
    bpe_tokenizer(gated, CORPUS)
    with pytest.raises(ExportError, match="norm_before_gate=True.*llama.cpp's Mamba2 graph"):
        export_model(gated, "gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_command_writes_the_file(tmp_path, capsys):
    source = tmp_path / "source"
    tiny_model(vocab_size=VOCAB).save_pretrained(source)
    bpe_tokenizer(source, CORPUS)
    assert main(["export", "--model", str(source), "--to", "gguf", "--out", str(tmp_path / "out")]) == 0
    assert f"wrote {tmp_path / 'out' / 'model.gguf'}" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model.gguf"]
    embedding = {t.name: t for t in gguf.GGUFReader(tmp_path / "out" / "model.gguf").tensors}["token_embd.weight"]
    assert torch.equal(torch.from_numpy(np.array(embedding.data)),
                       tiny_model(vocab_size=VOCAB).get_input_embeddings().weight.detach())
