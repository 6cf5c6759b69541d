"""Directories the loader resolves or refuses; loading transformers', state-spaces' and our own
directories with transformers' logits runs for both block types in test_model_common.py."""
import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from biomamba import BioMambaConfig, BioMambaForCausalLM, BioMambaModel
from biomamba.checkpoints import CheckpointError
from biomamba.resolve import ModelSpecError
from tests.model_helpers import tiny_model


def test_auto_classes_resolve_our_directories(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), BioMambaConfig)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), BioMambaForCausalLM)
    assert isinstance(BioMambaModel.from_pretrained(tmp_path), BioMambaModel)


def test_bad_directories_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        BioMambaForCausalLM.from_pretrained(tmp_path / "missing")
    with pytest.raises(ModelSpecError, match="no config.json"):  # resolve.read_config's one error type
        BioMambaForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="not a Mamba checkpoint"):
        BioMambaForCausalLM.from_pretrained(tmp_path)


def test_generation_config_round_trips(tmp_path):
    model = tiny_model()
    model.generation_config.max_new_tokens = 7
    model.generation_config.repetition_penalty = 1.3
    model.save_pretrained(tmp_path)
    loaded = BioMambaForCausalLM.from_pretrained(tmp_path).generation_config
    assert (loaded.max_new_tokens, loaded.repetition_penalty) == (7, 1.3)
