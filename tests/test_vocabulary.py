"""One name per setting in every command: the shared flags are the config keys, old spellings are refused."""
import argparse
import subprocess
import sys

import pytest

from biomamba import flags
from biomamba.train.config import ConfigError, RunConfig, load_config
from biomamba.train.finetune_config import FinetuneConfig, check_finetune
from biomamba.train.retrieval_train import RetrievalRunConfig, check_config

SCHEMAS = [(RunConfig, None), (FinetuneConfig, check_finetune), (RetrievalRunConfig, check_config)]
RETRIEVAL_BASE = ["model.init_from=M"]  # retrieval train needs a starting model


def _load(schema, check, overrides):
    base = RETRIEVAL_BASE if schema is RetrievalRunConfig else []
    return load_config(None, [*base, *overrides], schema=schema, check=check)


@pytest.mark.parametrize("old, new", [("train.init_from", "model.init_from"), ("train.device", "run.device"),
                                      ("train.precision", "run.precision"), ("data.tokenizer", "model.tokenizer")])
@pytest.mark.parametrize("schema, check", SCHEMAS)
def test_an_old_spelling_is_refused_with_the_new_name(schema, check, old, new):
    with pytest.raises(ConfigError, match=rf"{old} is now {new}"):
        _load(schema, check, [f"{old}=cpu"])


@pytest.mark.parametrize("schema, check", SCHEMAS)
def test_device_and_precision_live_in_run_with_the_same_defaults_everywhere(schema, check):
    cfg = _load(schema, check, [])
    assert (cfg.run.device, cfg.run.precision) == ("auto", "auto")
    assert _load(schema, check, ["run.device=cpu", "run.precision=bf16"]).run.precision == "bf16"


def test_the_shared_flags_are_shorthands_for_the_config_keys():
    parser = argparse.ArgumentParser()
    flags.add_arguments(parser, list(flags.FLAGS))
    args = parser.parse_args(["--init-from", "RUN", "--tokenizer", "TOK", "--device", "cpu", "--precision", "bf16",
                              "--no-wandb", "--wandb-project", "p", "--wandb-group", "g"])
    cfg = load_config(None, flags.overrides(args), schema=RetrievalRunConfig, check=check_config)
    assert (cfg.model.init_from, cfg.model.tokenizer, cfg.run.device, cfg.run.precision) == ("RUN", "TOK", "cpu", "bf16")
    assert (cfg.logging.wandb, cfg.logging.project, cfg.logging.group) == (False, "p", "g")
    assert flags.overrides(parser.parse_args([])) == []  # an unset flag leaves the config's value


@pytest.mark.parametrize("command", [["pretrain"], ["finetune"], ["retrieval", "train"], ["eval-ppl"],
                                     ["retrieval", "eval"]])
def test_every_logging_command_has_the_same_wandb_flags(command):
    out = subprocess.run([sys.executable, "-m", "biomamba", *command, "--help"], capture_output=True, text=True).stdout
    for flag in ("--wandb", "--no-wandb", "--wandb-project", "--wandb-group"):
        assert flag in out, (command, flag)


def test_eval_ppl_dtype_is_refused_naming_precision(tmp_path):
    run = subprocess.run([sys.executable, "-m", "biomamba", "eval-ppl", "--model", str(tmp_path), "--data", "x",
                          "--out", str(tmp_path / "o.json"), "--dtype", "bfloat16"], capture_output=True, text=True)
    assert run.returncode == 2 and "--dtype is now --precision" in run.stderr


def test_eval_ppl_legacy_padded_is_refused_naming_protocol(tmp_path):
    run = subprocess.run([sys.executable, "-m", "biomamba", "eval-ppl", "--model", str(tmp_path), "--data", "x",
                          "--out", str(tmp_path / "o.json"), "--legacy-padded"], capture_output=True, text=True)
    assert run.returncode == 2 and "--legacy-padded is now --protocol biomamba-2024" in run.stderr
    bad = subprocess.run([sys.executable, "-m", "biomamba", "eval-ppl", "--model", str(tmp_path), "--data", "x",
                          "--out", str(tmp_path / "o.json"), "--protocol", "biomamba-2025"], capture_output=True, text=True)
    assert bad.returncode == 2 and "biomamba-2026" in bad.stderr


def test_the_block_type_is_model_ssm_layer_and_a_preset_is_a_size_of_it():
    from biomamba.train.models import mamba_config

    def built(*overrides):
        return mamba_config(load_config(None, list(overrides)).model, 512, 0)
    tiny = built("model.preset=tiny")
    assert (tiny.ssm_layer, tiny.d_model, tiny.d_state) == ("Mamba1", 256, 16)  # the default block
    tiny2 = built("model.preset=tiny", "model.ssm_layer=Mamba2")
    assert (tiny2.ssm_layer, tiny2.d_model, tiny2.d_state) == ("Mamba2", 256, 64)
    big = built("model.preset=130m", "model.ssm_layer=Mamba2")
    assert (big.ssm_layer, big.d_model, big.n_layer, big.d_state) == ("Mamba2", 768, 24, 128)
    for old, new in (("model.arch=mamba2", "model.arch=mamba model.ssm_layer=Mamba2"),
                     ("model.preset=tiny-mamba2", "model.preset=tiny model.ssm_layer=Mamba2"),
                     ("model.preset=mamba2-370m", "model.preset=370m model.ssm_layer=Mamba2")):
        with pytest.raises(ConfigError, match=rf"{old} is now {new}"):
            load_config(None, [old])
    with pytest.raises(ConfigError, match="unknown model.preset 'bogus' for model.ssm_layer=Mamba2; choose one of"):
        load_config(None, ["model.ssm_layer=Mamba2", "model.preset=bogus"])
    retrieval = _load(RetrievalRunConfig, check_config, ["model.preset=debug", "model.ssm_layer=Mamba2"])
    assert (retrieval.model.preset, retrieval.model.ssm_layer) == ("debug", "Mamba2")
    with pytest.raises(ConfigError, match="model.preset=debug-mamba2 is now model.preset=debug model.ssm_layer=Mamba2"):
        _load(RetrievalRunConfig, check_config, ["model.preset=debug-mamba2"])
