"""The same-budget BERT's masked-LM recipe: its config keys, masking at the configured rate, the head run
only at scored positions, the unigram entropy beside the val loss, and a tiny BERT that learns past the
unigram stage with the recipe."""
import math

import numpy as np
import pytest
import torch

from biomamba.train.config import ConfigError, load_config
from biomamba.train.mlm import MASK_RATE, mask_windows, unigram_entropy
from tests.pretrain_helpers import ROOT

RECIPE = ROOT / "configs" / "bert-tiny-cpu.yaml"


def test_the_recipe_config_loads_as_a_bert_on_the_mamba_budget():
    recipe, mamba = load_config(RECIPE), load_config(ROOT / "configs" / "tiny-cpu.yaml")
    assert recipe.model.arch == "bert" and recipe.mlm.mask_rate != MASK_RATE
    # the same tokens as the BioMamba it is compared with: steps x batch x sequence length
    assert (recipe.train.max_steps * recipe.train.batch_size * recipe.train.grad_accum * recipe.data.seq_len
            == mamba.train.max_steps * mamba.train.batch_size * mamba.train.grad_accum * mamba.data.seq_len)


def test_bad_mlm_values_are_all_reported_together():
    with pytest.raises(ConfigError) as error:
        load_config(RECIPE, ["mlm.mask_rate=1.0", "mlm.word_embedding_lr_ratio=2", "mlm.warmup=3", "optim.lr=0",
                             "data.seq_len=1"])
    text = str(error.value)
    assert text.startswith("5 problem(s)")
    for part in ("mlm.mask_rate must be in (0, 1), got 1.0", "mlm.word_embedding_lr_ratio must be in (0, 1], got 2",
                 "unknown key mlm.warmup", "optim.lr must be > 0", "data.seq_len must be >= 2"):
        assert part in text
    with pytest.raises(ConfigError, match=r"mlm.mask_rate: expected float, got 'a lot'"):
        load_config(RECIPE, ["mlm.mask_rate=a lot"])
    with pytest.raises(ConfigError, match=r"mlm.mask_rate must be in \(0, 1\), got 0"):
        load_config(None, ["model.arch=bert", "mlm.mask_rate=0"])


@pytest.mark.parametrize("rate", [0.15, 0.4])
def test_masking_scores_the_configured_fraction(rate):
    windows = torch.randint(0, 500, (64, 128))
    out = mask_windows(windows, 512, 514, 512, torch.Generator().manual_seed(0), rate)
    scored = out["labels"][:, 1:] != -100
    assert abs(scored.float().mean().item() - rate) < 0.02
    masked = out["input_ids"][:, 1:] == 514
    assert not (masked & ~scored).any() and 0.75 < masked.sum() / scored.sum() < 0.85


def test_unigram_entropy_by_hand_and_across_chunks():
    tokens = np.array([0, 0, 1, 2, 7, 7, 7, 7], dtype=np.uint16)
    p = np.array([2, 1, 1, 4]) / 8
    expected = float(-(p * np.log(p)).sum())
    assert unigram_entropy(tokens) == pytest.approx(expected)
    assert unigram_entropy(tokens, chunk=3) == pytest.approx(expected)  # chunks of unequal vocabulary reach
    assert unigram_entropy(np.full(10, 5, dtype=np.uint16)) == 0.0
    assert unigram_entropy(np.arange(16)) == pytest.approx(math.log(16))


def test_the_scored_only_head_gives_bert_s_loss_and_gradients():
    from transformers import BertConfig, BertForMaskedLM

    from biomamba.train.models import ScoredOnlyBertForMaskedLM
    config = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    ours = ScoredOnlyBertForMaskedLM(config)
    theirs = BertForMaskedLM(config)
    theirs.load_state_dict(ours.state_dict())
    batch = mask_windows(torch.randint(0, 94, (3, 40)), 94, 96, 94, torch.Generator().manual_seed(1), 0.3)
    loss_ours, loss_theirs = ours(**batch).loss, theirs(**batch).loss
    torch.testing.assert_close(loss_ours, loss_theirs)
    loss_ours.backward()
    loss_theirs.backward()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4, msg=name)
    # without labels it is BertForMaskedLM: logits at every position
    torch.testing.assert_close(ours(input_ids=batch["input_ids"]).logits, theirs(input_ids=batch["input_ids"]).logits)


def test_word_embedding_lr_ratio_gives_the_tied_embeddings_their_own_lr():
    from biomamba.train.loop import param_groups
    from biomamba.train.models import build_model
    from biomamba.train.schedule import lr_factor
    cfg = load_config(None, ["model.arch=bert", "model.preset=debug", "mlm.word_embedding_lr_ratio=0.1",
                             "optim.lr=0.002", "optim.warmup_steps=2", "train.max_steps=10"])
    model = build_model(cfg, 515, 0)
    embeddings = model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.weight is embeddings  # tied: one parameter, one lr
    optimizer = torch.optim.AdamW(param_groups(model, 0.1, cfg.optim.lr), lr=cfg.optim.lr)
    (group,) = [g for g in optimizer.param_groups if any(p is embeddings for p in g["params"])]
    assert group["params"] == [embeddings] and group["weight_decay"] == 0.1
    assert group["lr"] == pytest.approx(0.0002) and optimizer.param_groups[0]["lr"] == 0.002
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, cfg.optim, 10))
    for _ in range(4):
        optimizer.step()
        schedule.step()
    assert group["lr"] == pytest.approx(0.1 * optimizer.param_groups[0]["lr"])
    # without the ratio (and for the Mamba) the groups are the usual two: decay and no decay
    plain = build_model(load_config(None, ["model.arch=bert", "model.preset=debug"]), 515, 0)
    assert [g["weight_decay"] for g in param_groups(plain, 0.1, 0.002)] == [0.1, 0.0]


@pytest.mark.slow  # a training run
def test_a_tiny_bert_with_the_recipe_learns_past_the_unigram_stage(data_dir, tmp_path):
    """The recipe's masking and schedule at 64 wide (1 head, 2 layers) on the small fixture: val MLM
    loss well under the unigram entropy of the train tokens within 200 steps. A model this narrow
    takes a higher peak lr than the recipe's 256-wide one (3e-3: at 1e-3 it gets 0.06 nats under)."""
    import json

    from biomamba.train.pretrain import pretrain
    cfg = load_config(RECIPE, [f"data.dir={data_dir}", "model.preset=debug", "model.d_model=64", "data.seq_len=64",
                               "train.batch_size=16", "train.eval_batches=4", "train.max_steps=200",
                               "train.eval_every=50", "train.save_every=200", "optim.warmup_steps=10",
                               "optim.lr=3e-3", "logging.wandb=false", "logging.samples=0"])
    assert cfg.mlm.mask_rate == 0.4
    pretrain(cfg, tmp_path / "run")
    val = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
           if '"split": "val"' in line]
    losses, floor = [row["loss"] for row in val], val[-1]["unigram_entropy"]
    assert [row["step"] for row in val] == [50, 100, 150, 200]
    assert losses == sorted(losses, reverse=True)  # falls at every validation
    assert losses[-1] < floor - 0.15, (losses, floor)  # measured: 5.16 against 5.40


def test_cls_spread_reads_one_state_for_every_input_as_collapsed():
    """bench/cls_spread.py's figures: the same [CLS] state for every input is cosine 1 and spread 0;
    orthogonal states are cosine 0."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("cls_spread", ROOT / "bench" / "cls_spread.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    same = bench.spread(torch.tensor([[1.0, 2.0, 3.0]]).repeat(4, 1))
    assert same["mean_cos"] == pytest.approx(1.0) and same["min_cos"] == pytest.approx(1.0)
    assert same["spread"] == pytest.approx(0.0, abs=1e-7)
    apart = bench.spread(torch.eye(3))
    assert apart["mean_cos"] == pytest.approx(0.0) and apart["min_cos"] == pytest.approx(0.0)
    assert apart["spread"] > 1.0
