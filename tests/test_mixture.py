"""data.mixture: the schedule follows the weights within one window per step, each source in its own
order, a pure function of the step; bad mixtures refused; a killed mixture run resumes exactly."""
import json
import random

import numpy as np
import pytest
import torch
import yaml

from biomamba.data.errors import DataError
from biomamba.data.prepare import prepare
from biomamba.train.config import ConfigError, load_config
from biomamba.train.mixture import MixtureBatches
from biomamba.train.windows import WindowBatches
from tests.pretrain_helpers import (assert_same_validation, kill_at_step, losses, pretrain_command, run_pretrain,
                                    run_two_processes, val_losses)

SEQ = 4


def streams(sizes):
    """Source k's tokens are 1000*k + position: a window tells its source and place."""
    return [np.arange(n * SEQ, dtype=np.int64) + 1000 * k for k, n in enumerate(sizes)]


@pytest.mark.parametrize("weights,batch,accum", [([0.5, 0.3, 0.2], 4, 2), ([0.8, 0.1, 0.1], 3, 1), ([1, 7], 5, 2)])
def test_tokens_per_source_follow_the_weights_within_one_window(weights, batch, accum):
    mix = MixtureBatches(streams([7, 5, 3][:len(weights)]), weights, SEQ, batch, accum)
    share = np.array(weights) / sum(weights)
    seen = np.zeros(len(weights))
    for step in range(1, 60):
        for micro in mix.for_step(step):
            seen += np.bincount(micro[:, 0].numpy() // 1000, minlength=len(weights))
        assert (seen == mix.counts_after(step)).all()
        assert np.abs(seen - step * mix.global_batch * share).max() < 1  # within one window, at every step
    assert seen.sum() == 59 * batch * accum


def test_each_source_keeps_its_own_order_and_epochs():
    mix = MixtureBatches(streams([7, 5]), [0.6, 0.4], SEQ, 2, 1, seed=3)
    order = {0: [], 1: []}
    for step in range(1, 30):
        for row in torch.cat(mix.for_step(step)):
            k = int(row[0]) // 1000
            order[k].append((int(row[0]) - 1000 * k) // SEQ)
    for k, n in ((0, 7), (1, 5)):
        alone = WindowBatches(streams([7, 5])[k], SEQ, 1, seed=3)
        assert order[k] == [alone._window_index(p) for p in range(len(order[k]))]  # its own permutations
        assert sorted(order[k][:n]) == list(range(n))  # every window once per epoch
    assert mix.epochs_after(29) == pytest.approx(mix.counts_after(29) / np.array([7, 5]))


def test_the_batch_is_a_pure_function_of_the_step_and_ranks_share_it():
    walked = MixtureBatches(streams([7, 5, 3]), [2, 1, 1], SEQ, 2, 2)
    for step in range(1, 40):
        walked.for_step(step)
    fresh = MixtureBatches(streams([7, 5, 3]), [2, 1, 1], SEQ, 2, 2)
    assert all(torch.equal(a, b) for a, b in zip(fresh.for_step(37), walked.for_step(37)))
    ranks = [MixtureBatches(streams([7, 5, 3]), [2, 1, 1], SEQ, 1, 2, world_size=2, rank=r) for r in (0, 1)]
    one = torch.cat(fresh.for_step(37))
    assert torch.equal(torch.cat([torch.cat(r.for_step(37)) for r in ranks]), one)


@pytest.mark.parametrize("entry,message", [
    ({"dir": "a", "weight": 0}, r"data.mixture\[1\]: weight must be > 0, got 0"),
    ({"dir": "a", "weight": -0.5}, r"data.mixture\[1\]: weight must be > 0, got -0.5"),
    ({"dir": "a"}, r"data.mixture\[1\]: weight must be a number > 0, got None"),
    ({"weight": 1}, r"data.mixture\[1\]: dir .* is required"),
    ({"dir": "x/pubmed", "weight": 1}, "repeated: pubmed"),
    ({"dir": "a", "weight": 1, "share": 2}, r"unknown key\(s\) share"),
])
def test_bad_mixtures_are_refused(entry, message):
    mixture = json.dumps([{"dir": "data/pubmed", "weight": 1}, entry])
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"data.mixture={mixture}"])


def general_text(path, n=150, seed=0):
    rng = random.Random(seed)
    words = "the city council voted to extend a tram line north of the harbour river music album".split()
    rows = [{"id": str(i), "text": " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def second_source(data_dir, tmp_path_factory):
    """General text prepared with the first source's tokenizer."""
    base = tmp_path_factory.mktemp("general")
    prepare(base / "prepared", text_inputs=[general_text(base / "web.jsonl")], tokenizer=data_dir / "tokenizer",
            val_fraction=0.1, test_fraction=0.05)
    return base / "prepared"


def test_a_source_with_another_tokenizer_is_refused_naming_it(data_dir, tmp_path):
    from biomamba.train.pretrain import load_mixture
    prepare(tmp_path / "other", text_inputs=[general_text(tmp_path / "web.jsonl")], vocab_size=300,
            val_fraction=0.1, test_fraction=0.05)
    with pytest.raises(DataError, match="source 'web' has another tokenizer .* than source 'pubmed'"):
        load_mixture([{"name": "pubmed", "dir": str(data_dir), "weight": 0.9},
                      {"name": "web", "dir": str(tmp_path / "other"), "weight": 0.1}])


def mixture_override(data_dir, second):
    return "data.mixture=" + json.dumps([{"name": "pubmed", "dir": str(data_dir), "weight": 0.75},
                                         {"name": "web", "dir": str(second), "weight": 0.25}])


ARGS = ("train.max_steps=16", "train.save_every=2", "train.keep_last=20", "train.eval_every=8")


@pytest.fixture(scope="module")
def straight_mixture(data_dir, second_source, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("mix") / "run"
    run_pretrain(run_dir, data_dir, mixture_override(data_dir, second_source), *ARGS)
    return run_dir


@pytest.mark.slow  # a training run
def test_mixture_run_logs_per_source_and_records_the_mixture(straight_mixture, data_dir, second_source):
    resolved = yaml.safe_load((straight_mixture / "config.yaml").read_text())["resolved"]["data_mixture"]
    assert [(s["name"], s["weight"], len(s["manifest_sha256"])) for s in resolved] == [("pubmed", 0.75, 64),
                                                                                       ("web", 0.25, 64)]
    assert resolved[1]["source_kind"] == "text" and resolved[0]["tokenizer_sha256"] == resolved[1]["tokenizer_sha256"]
    rows = [json.loads(line) for line in (straight_mixture / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("split") == "val"]
    assert [r["step"] for r in val] == [8, 16]
    last = val[-1]
    assert last["pubmed/train_tokens"] == 16 * 4 * 64 * 3 // 4 and last["web/train_tokens"] == 16 * 4 * 64 // 4
    assert last["loss"] == pytest.approx(0.75 * last["pubmed/loss"] + 0.25 * last["web/loss"])
    assert last["packed_bits_per_byte"] == pytest.approx(0.75 * last["pubmed/packed_bits_per_byte"]
                                                         + 0.25 * last["web/packed_bits_per_byte"])
    assert last["web/loss"] != last["pubmed/loss"] and last["web/train_epochs"] > 0


@pytest.mark.slow  # a training run
def test_sigkill_then_rerun_gives_the_uninterrupted_mixture_run(straight_mixture, data_dir, second_source, tmp_path):
    run_dir = tmp_path / "killed"
    command = pretrain_command(run_dir, data_dir, mixture_override(data_dir, second_source), *ARGS)
    assert kill_at_step(command, run_dir, 7), "the run finished before it could be killed"
    run_pretrain(run_dir, data_dir, mixture_override(data_dir, second_source), *ARGS)
    assert losses(run_dir)[-1] == losses(straight_mixture)[-1]
    assert val_losses(run_dir)[-1] == val_losses(straight_mixture)[-1]


@pytest.mark.slow  # two training processes
def test_two_gloo_processes_give_the_one_process_mixture_run(straight_mixture, data_dir, second_source, tmp_path):
    run_two_processes(tmp_path / "two", data_dir, mixture_override(data_dir, second_source), *ARGS)
    one, two = losses(straight_mixture), losses(tmp_path / "two")
    assert [s for s, _ in two] == [s for s, _ in one]
    assert [l for _, l in two] == pytest.approx([l for _, l in one], rel=1e-5)
    assert_same_validation(straight_mixture, tmp_path / "two")


def test_the_biomamba_v3_recipe_config():
    from pathlib import Path
    from biomamba.train.config import mixture_sources
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "biomamba2-130m-mix.yaml")
    assert [(s["name"], s["weight"]) for s in mixture_sources(cfg.data.mixture)] == [
        ("pubmed", 0.8), ("c4", 0.1), ("wiki", 0.1)]
    assert (cfg.data.seq_len, cfg.optim.lr, cfg.optim.schedule, cfg.train.max_steps) == (1024, 1.5e-6, "cosine", 6000)
    assert cfg.train.batch_size * cfg.train.grad_accum == 32
    assert (cfg.model.arch, cfg.model.ssm_layer, cfg.model.preset) == ("mamba", "Mamba2", "130m")
