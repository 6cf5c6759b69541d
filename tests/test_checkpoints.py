"""Loading HF, state-spaces and our own directories gives transformers' logits."""
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from biomamba import BioMambaConfig, BioMambaForCausalLM, BioMambaModel
from biomamba.checkpoints import CheckpointError
from biomamba.resolve import ModelSpecError
from tests.model_helpers import random_hf_mamba, tiny_model, write_mamba_ssm_dir


@pytest.fixture(scope="module")
def hf_model():
    return random_hf_mamba(vocab_size=128)


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(path)
    return path


def _logits(model, ids, mask=None):
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits


def test_hf_directory_gives_transformers_logits(hf_model, hf_dir):
    ours = BioMambaForCausalLM.from_pretrained(hf_dir)
    ids = torch.randint(0, 128, (3, 37), generator=torch.Generator().manual_seed(1))
    assert (_logits(ours, ids) - _logits(hf_model, ids)).abs().max() <= 1e-4
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    assert (_logits(ours, ids, mask) - _logits(hf_model, ids, mask)).abs().max() <= 1e-4


def test_mamba_ssm_directory_gives_transformers_logits(hf_model, tmp_path):
    # 123 tokens padded to a multiple of 8 = 128 rows, as the released checkpoints store 50277 -> 50280.
    path = write_mamba_ssm_dir(hf_model, tmp_path / "ssm", raw_vocab_size=123)
    ours = BioMambaForCausalLM.from_pretrained(path)
    assert ours.config.vocab_size == 128
    ids = torch.randint(0, 123, (2, 29), generator=torch.Generator().manual_seed(2))
    assert (_logits(ours, ids) - _logits(hf_model, ids)).abs().max() <= 1e-4


def test_save_load_round_trip_is_exact(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    loaded = BioMambaForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(0, 97, (2, 11))
    assert torch.equal(_logits(model, ids), _logits(loaded, ids))
    assert loaded.lm_head.weight.data_ptr() == loaded.backbone.embedding.weight.data_ptr()


def test_auto_classes_resolve_our_directories(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), BioMambaConfig)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), BioMambaForCausalLM)
    assert isinstance(BioMambaModel.from_pretrained(tmp_path), BioMambaModel)


def test_shape_mismatch_names_tensor_and_both_shapes(hf_dir):
    config = BioMambaForCausalLM.from_pretrained(hf_dir).config
    wrong = BioMambaConfig.from_dict({**config.to_dict(), "d_state": 7})
    with pytest.raises(CheckpointError, match=r"A_log.*\(64, 5\).*\(64, 7\)"):
        BioMambaForCausalLM.from_pretrained(hf_dir, config=wrong)


def test_bad_directories_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        BioMambaForCausalLM.from_pretrained(tmp_path / "missing")
    with pytest.raises(ModelSpecError, match="no config.json"):  # resolve.read_config's one error type
        BioMambaForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="not a Mamba checkpoint"):
        BioMambaForCausalLM.from_pretrained(tmp_path)


def test_greedy_generation_equals_transformers(hf_model, hf_dir):
    ours = BioMambaForCausalLM.from_pretrained(hf_dir)
    prompt = torch.randint(1, 128, (2, 9), generator=torch.Generator().manual_seed(3))
    theirs = hf_model.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None,
                               pad_token_id=0)
    assert torch.equal(ours.generate(prompt, max_new_tokens=12), theirs)


def test_generation_config_round_trips(tmp_path):
    model = tiny_model()
    model.generation_config.max_new_tokens = 7
    model.generation_config.repetition_penalty = 1.3
    model.save_pretrained(tmp_path)
    loaded = BioMambaForCausalLM.from_pretrained(tmp_path).generation_config
    assert (loaded.max_new_tokens, loaded.repetition_penalty) == (7, 1.3)
