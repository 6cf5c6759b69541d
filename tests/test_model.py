"""The model's contract: caching, padding, loss, initialisation, presets (generation: test_generation).

Tests of the contract run for both block types (BLOCKS); Mamba-2's own initialisation, presets and
settings are in test_mamba2.py."""
import math

import pytest
import torch
import torch.nn.functional as F

from biomamba import BioMambaConfig, BioMambaForCausalLM
from tests.model_helpers import BLOCKS, padded_batch, tiny_model


@pytest.mark.parametrize("layer", BLOCKS)
def test_full_forward_equals_prefix_then_cached_steps(layer):
    model = tiny_model(layer=layer).double()
    ids = torch.randint(0, 97, (2, 23), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids).logits
        prefix = model(ids[:, :10], use_cache=True)
        cache, steps = prefix.cache_params, [prefix.logits]
        for t in range(10, 23):
            steps.append(model(ids[:, t:t + 1], cache_params=cache, use_cache=True).logits)
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-5


def _real(rows, mask, row):
    """The real (unpadded) positions of `row` in a padded (b, l, ...) tensor."""
    return rows[row][mask[row].bool()]


@pytest.mark.parametrize("layer", BLOCKS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_gives_each_sequence_its_own_logits_and_loss(side, layer):
    model = tiny_model(layer=layer, conv_bias=True, bias=True)  # biases would leak into pads if masked too late
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 97, (n,), generator=g) for n in (17, 9, 3)]
    ids, mask = padded_batch(prompts, side, pad_id=5)
    with torch.no_grad():
        batch = model(ids, attention_mask=mask, labels=ids, num_items_in_batch=1)
        alone = [model(p[None], labels=p[None], num_items_in_batch=1) for p in prompts]
    for row, single in enumerate(alone):
        assert (_real(batch.logits, mask, row) - single.logits[0]).abs().max() <= 1e-5
    # num_items_in_batch=1 makes the loss a sum over scored targets: the rows' own sums add up.
    assert torch.allclose(batch.loss, sum(single.loss for single in alone), rtol=1e-5)


@pytest.mark.parametrize("layer", BLOCKS)
def test_left_padded_cache_continues_as_each_sequence_alone(layer):
    model = tiny_model(layer=layer)
    g = torch.Generator().manual_seed(6)
    prompts = [torch.randint(1, 97, (n,), generator=g) for n in (8, 3)]
    ids, mask = padded_batch(prompts, "left")
    nxt = torch.randint(1, 97, (2, 1), generator=g)
    with torch.no_grad():
        batch = model(ids, attention_mask=mask, use_cache=True)
        stepped = model(nxt, cache_params=batch.cache_params).logits[:, -1]
        for row, prompt in enumerate(prompts):
            full = model(torch.cat([prompt, nxt[row]])[None]).logits[0, -1]
            assert (stepped[row] - full).abs().max() <= 1e-5


@pytest.mark.parametrize("layer", BLOCKS)
def test_loss_shifts_labels_and_never_scores_padding_or_ignored(layer):
    model = tiny_model(layer=layer)
    ids = torch.randint(1, 97, (2, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    labels = ids.clone()
    labels[0, 3] = -100
    out = model(ids, attention_mask=mask, labels=labels)
    logits = out.logits
    scored = [(0, t) for t in range(1, 12) if t != 3] + [(1, t) for t in range(1, 7)]
    expected = torch.stack([F.cross_entropy(logits[b, t - 1], ids[b, t]) for b, t in scored]).mean()
    assert torch.allclose(out.loss, expected, atol=1e-6)
    # Changing what sits under padding cannot change the loss.
    changed = ids.clone()
    changed[1, 7:] = 5
    assert torch.allclose(model(changed, attention_mask=mask, labels=changed).loss,
                          model(ids, attention_mask=mask, labels=ids).loss, atol=1e-6)


def test_initialisation_follows_mamba_ssm():
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


@pytest.mark.parametrize("layer", BLOCKS)
def test_A_log_and_D_stay_fp32_and_skip_weight_decay(layer):
    model = tiny_model(layer=layer).to(torch.bfloat16)
    mixer = model.backbone.layers[0].mixer
    kept = ("A_log", "D", "dt_bias") if layer == "Mamba2" else ("A_log", "D")
    for name in kept:
        assert getattr(mixer, name).dtype == torch.float32 and getattr(mixer, name)._no_weight_decay, name
    assert mixer.in_proj.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert model(torch.randint(0, 97, (1, 5))).logits.isfinite().all()


def test_presets_match_state_spaces_sizes():
    sizes = {"130m": 129_135_360, "370m": 371_516_416}  # mamba-130m / mamba-370m (tied head)
    for name, expected in sizes.items():
        with torch.device("meta"):
            model = BioMambaForCausalLM(BioMambaConfig.from_preset(name))
        assert model.num_parameters() == expected


def test_config_reports_every_problem_at_once():
    with pytest.raises(ValueError) as error:
        BioMambaConfig(d_model=0, dt_min=0.5, dt_max=0.1, scan_backend="gpu")
    message = str(error.value)
    assert "d_model" in message and "dt_min" in message and "scan_backend" in message
    with pytest.raises(ValueError, match="unknown preset"):
        BioMambaConfig.from_preset("7b")


@pytest.mark.parametrize("layer", BLOCKS)
def test_loss_is_a_mean_or_a_sum_over_num_items_in_batch(layer):
    model = tiny_model(layer=layer)
    ids = torch.randint(1, 97, (2, 12), generator=torch.Generator().manual_seed(7))
    labels = ids.clone()
    labels[0, :5] = -100
    scored = int((labels[:, 1:] != -100).sum())
    with torch.no_grad():
        mean = model(input_ids=ids, labels=labels).loss  # what our training loop calls
        summed = model(input_ids=ids, labels=labels, num_items_in_batch=torch.tensor(1)).loss
        over_all = model(input_ids=ids, labels=labels, num_items_in_batch=3 * scored).loss
    assert torch.allclose(summed, mean * scored, rtol=1e-5)
    assert torch.allclose(over_all, mean / 3, rtol=1e-5)


@pytest.mark.parametrize("layer", BLOCKS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_heads_pool_the_last_real_token_and_load_from_an_lm_directory(tmp_path, side, layer):
    from biomamba import BioMambaForEmbedding, BioMambaForSequenceClassification
    tiny_model(layer=layer).save_pretrained(tmp_path)
    classifier = BioMambaForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    lm = BioMambaForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(classifier.backbone.embedding.weight, lm.backbone.embedding.weight)
    g = torch.Generator().manual_seed(5)
    a, b = torch.randint(1, 97, (1, 9), generator=g), torch.randint(1, 97, (1, 4), generator=g)
    batch, mask = padded_batch([a[0], b[0]], side)
    with torch.no_grad():
        padded = classifier(batch, attention_mask=mask).logits
        assert torch.allclose(padded[1], classifier(b).logits[0], atol=1e-5)
        assert torch.allclose(padded[0], classifier(a).logits[0], atol=1e-5)
        for pooling in ("mean", "last"):
            encoder = BioMambaForEmbedding.from_pretrained(tmp_path, pooling=pooling)
            emb = encoder(batch, attention_mask=mask).embeddings
            assert torch.allclose(emb[1], encoder(b).embeddings[0], atol=1e-5)
            assert torch.allclose(emb.norm(dim=-1), torch.ones(2))
