"""The model's contract: caching, padding, loss, initialisation, presets, generation."""
import math

import pytest
import torch
import torch.nn.functional as F

from biomamba import BioMambaConfig, BioMambaForCausalLM
from tests.model_helpers import tiny_model


def test_full_forward_equals_prefix_then_cached_steps():
    model = tiny_model().double()
    ids = torch.randint(0, 97, (2, 23), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids).logits
        prefix = model(ids[:, :10], use_cache=True)
        cache, steps = prefix.cache_params, [prefix.logits]
        for t in range(10, 23):
            steps.append(model(ids[:, t:t + 1], cache_params=cache, use_cache=True).logits)
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-5


def test_right_padded_batch_equals_each_sequence_alone():
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    a, b = torch.randint(1, 97, (1, 17), generator=g), torch.randint(1, 97, (1, 9), generator=g)
    batch = torch.zeros(2, 17, dtype=torch.long)
    batch[0], batch[1, :9] = a[0], b[0]
    mask = (torch.arange(17) < torch.tensor([[17], [9]])).long()
    with torch.no_grad():
        logits = model(batch, attention_mask=mask).logits
        assert (logits[0] - model(a).logits[0]).abs().max() <= 1e-5
        assert (logits[1, :9] - model(b).logits[0]).abs().max() <= 1e-5


def test_loss_shifts_labels_and_never_scores_padding_or_ignored():
    model = tiny_model()
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


def test_A_log_and_D_stay_fp32_and_skip_weight_decay():
    model = tiny_model().to(torch.bfloat16)
    mixer = model.backbone.layers[0].mixer
    assert mixer.A_log.dtype == torch.float32 and mixer.D.dtype == torch.float32
    assert mixer.in_proj.weight.dtype == torch.bfloat16
    assert mixer.A_log._no_weight_decay and mixer.D._no_weight_decay
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


def test_generation_of_a_padded_batch_equals_each_prompt_alone():
    model = tiny_model()
    g = torch.Generator().manual_seed(3)
    long, short = torch.randint(1, 97, (1, 8), generator=g), torch.randint(1, 97, (1, 5), generator=g)
    batch = torch.zeros(2, 8, dtype=torch.long)
    batch[0], batch[1, :5] = long[0], short[0]
    mask = (torch.arange(8) < torch.tensor([[8], [5]])).long()
    out = model.generate(batch, attention_mask=mask, max_new_tokens=6)
    alone_long = model.generate(long, max_new_tokens=6)[0]
    alone_short = model.generate(short, max_new_tokens=6)[0]
    assert torch.equal(out[0, :14], alone_long)
    assert torch.equal(out[1, :11], alone_short)
    assert (out[1, 11:] == model.config.pad_token_id).all()


def test_generation_stops_at_eos_and_sampling_is_reproducible():
    model = tiny_model()
    prompt = torch.randint(1, 97, (2, 4), generator=torch.Generator().manual_seed(4))
    greedy = model.generate(prompt, max_new_tokens=8)
    eos = int(greedy[0, 4])  # the first generated token of row 0
    stopped = model.generate(prompt, max_new_tokens=8, eos_token_id=eos, pad_token_id=96)
    assert torch.equal(stopped[0, :5], greedy[0, :5])
    assert (stopped[0, 5:] == 96).all()
    draws = [model.generate(prompt, max_new_tokens=8, do_sample=True, top_k=10, top_p=0.9,
                            temperature=0.8, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(draws[0], draws[1])


def test_heads_pool_the_last_real_token_and_load_from_an_lm_directory(tmp_path):
    from biomamba import BioMambaForEmbedding, BioMambaForSequenceClassification
    tiny_model().save_pretrained(tmp_path)
    classifier = BioMambaForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    lm = BioMambaForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(classifier.backbone.embedding.weight, lm.backbone.embedding.weight)
    g = torch.Generator().manual_seed(5)
    a, b = torch.randint(1, 97, (1, 9), generator=g), torch.randint(1, 97, (1, 4), generator=g)
    batch = torch.zeros(2, 9, dtype=torch.long)
    batch[0], batch[1, :4] = a[0], b[0]
    mask = (torch.arange(9) < torch.tensor([[9], [4]])).long()
    with torch.no_grad():
        padded = classifier(batch, attention_mask=mask).logits
        assert torch.allclose(padded[1], classifier(b).logits[0], atol=1e-5)
        assert torch.allclose(padded[0], classifier(a).logits[0], atol=1e-5)
        encoder = BioMambaForEmbedding.from_pretrained(tmp_path, pooling="mean")
        emb = encoder(batch, attention_mask=mask).embeddings
        assert torch.allclose(emb[1], encoder(b).embeddings[0], atol=1e-5)
        assert torch.allclose(emb.norm(dim=-1), torch.ones(2))
