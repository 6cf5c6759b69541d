"""The behaviours every model must have, as one suite over the block types (BLOCKS: config.ssm_layer,
Mamba1 and Mamba2) and the heads, in the manner of transformers' ModelTesterMixin: parity with
transformers' MambaForCausalLM / Mamba2ForCausalLM on the same weights, padding, loss, the generation
cache, generate, save/load (ours, transformers' and state-spaces' layouts), export, pipelines, Trainer
and LoRA. A test here runs for every block type; what belongs to one block alone (its initialisation,
presets, config checks, dt_limit, the CPU chunking of the SSD scan) is in test_model.py, and packed
documents (seq_idx) over both block types in test_packed_documents.py.

Tiny random models (tests/model_helpers.py): the transformers peer holds non-trivial A_log, D, dt
bias and norm weights; `varied` ones do not collapse into one repeated greedy token, so a wrong token
shows. Mamba-2 runs in chunks of 8, so a few dozen tokens cross chunk boundaries.
"""
import functools
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import (GenerationMixin, StoppingCriteria, StoppingCriteriaList, Trainer, TrainingArguments,
                          pipeline)
from transformers.generation.streamers import BaseStreamer

from biomamba import BioMambaConfig, BioMambaForCausalLM, BioMambaForEmbedding, BioMambaForSequenceClassification
from biomamba.checkpoints import CheckpointError
from biomamba.cli import main
from biomamba.export import export_model
from tests.model_helpers import (BLOCKS, biomamba_twin, padded_batch, random_hf_mamba, tiny_model, word_tokenizer,
                                 write_mamba_ssm_dir)

VOCAB = 128
CHUNK = 8  # random_hf_mamba's Mamba-2 chunk
LENGTH = 37  # not a multiple of CHUNK: the last chunk is partial
# logits against transformers: its Mamba-2 torch path sums the SSD chunks in another order
PARITY = {"Mamba1": 1e-5, "Mamba2": 1e-4}
# (block type, n_groups, tied head): Mamba-2 in one and two groups of heads, tied and untied
SHAPES = [("Mamba1", 1, True), ("Mamba2", 1, True), ("Mamba2", 1, False), ("Mamba2", 2, True), ("Mamba2", 2, False)]


@pytest.fixture(scope="module", params=BLOCKS)
def layer(request):
    return request.param


@pytest.fixture(scope="module")
def hf_model(layer):
    """transformers' model of this block type, `varied`: greedy tokens do not repeat one token."""
    return random_hf_mamba(vocab_size=VOCAB, varied=True, layer=layer)


@pytest.fixture(scope="module")
def ours(hf_model):
    return biomamba_twin(hf_model)


@pytest.fixture(scope="module")
def model_dir(hf_model, tmp_path_factory):
    """Our causal LM saved with save_pretrained, a word tokenizer beside it."""
    path = tmp_path_factory.mktemp("ours")
    biomamba_twin(hf_model).save_pretrained(path)
    word_tokenizer(VOCAB, path)
    return path


@pytest.fixture(scope="module")
def prompts():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(1, VOCAB, (n,), generator=g) for n in (9, 4, 6)]


def _logits(model, ids, mask=None):
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits


def _ids(rows=2, length=LENGTH, seed=0, vocab=VOCAB):
    return torch.randint(1, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))


def _assert_same_tensors(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-5


def _real(rows, mask, row):
    """The real (unpadded) positions of `row` in a padded (b, l, ...) tensor."""
    return rows[row][mask[row].bool()]


# ----------------------------------------------------------------------------- parity with transformers

@pytest.mark.parametrize("layer, n_groups, tie", SHAPES)
def test_logits_equal_transformers_with_right_padding_and_partial_last_chunk(layer, n_groups, tie):
    theirs = random_hf_mamba(vocab_size=VOCAB, layer=layer, n_groups=n_groups, chunk_size=CHUNK, tie=tie)
    ours = biomamba_twin(theirs)
    if layer == "Mamba2":
        assert ours.config.ngroups == n_groups and ours.config.chunk_size == CHUNK
    assert (_logits(ours, _ids()) - _logits(theirs, _ids())).abs().max() <= 1e-4
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, VOCAB, (n,), generator=g) for n in (LENGTH, 21, 5)]
    ids, mask = padded_batch(prompts, "right")
    mine, reference = _logits(ours, ids, mask), _logits(theirs, ids, mask)
    for row, prompt in enumerate(prompts):  # real tokens only: what sits under padding is nobody's output
        assert (mine[row, :len(prompt)] - reference[row, :len(prompt)]).abs().max() <= 1e-4, row


def test_hidden_states_are_transformers_tensors_in_transformers_order(hf_model, ours):
    ids = _ids(length=11)
    with torch.no_grad():
        for mine, theirs in ((ours, hf_model), (ours.backbone, hf_model.backbone)):
            a = mine(ids, output_hidden_states=True).hidden_states
            b = theirs(ids, output_hidden_states=True).hidden_states
            assert len(a) == ours.config.n_layer + 1  # each block's output, then the final norm's
            _assert_same_tensors(a, b)


def test_return_dict_false_gives_transformers_tuples(hf_model, ours):
    ids = _ids(length=11, seed=1)
    with torch.no_grad():
        logits, cache = ours(ids, return_dict=False)  # the eval-mode default keeps a cache, as theirs
        their_logits, _ = hf_model(ids, return_dict=False)
        assert (logits - their_logits).abs().max() <= 1e-5
        step = ours(ids[:, :1], cache_params=cache, return_dict=False)[0]
        assert step.shape == (2, 1, VOCAB)
        for kwargs in (dict(labels=ids), dict(labels=ids, output_hidden_states=True, use_cache=False),
                       dict(use_cache=False)):
            mine, theirs = ours(ids, return_dict=False, **kwargs), hf_model(ids, return_dict=False, **kwargs)
            assert isinstance(mine, tuple) and len(mine) == len(theirs)
            _assert_same_tensors([t for t in mine if torch.is_tensor(t)], [t for t in theirs if torch.is_tensor(t)])
        backbone = ours.backbone(ids, return_dict=False, use_cache=False, output_hidden_states=True)
        their_backbone = hf_model.backbone(ids, return_dict=False, use_cache=False, output_hidden_states=True)
        assert len(backbone) == len(their_backbone) == 2
        _assert_same_tensors([backbone[0], *backbone[1]], [their_backbone[0], *their_backbone[1]])


def test_loss_with_num_items_in_batch_equals_transformers(hf_model, ours):
    ids = _ids(length=11, seed=2)
    labels = ids.masked_fill(torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.3, -100)
    with torch.no_grad():
        for items in (None, torch.tensor(40)):
            mine = ours(ids, labels=labels, num_items_in_batch=items).loss
            theirs = hf_model(ids, labels=labels, num_items_in_batch=items).loss
            assert torch.allclose(mine, theirs, rtol=1e-5)


# ----------------------------------------------------------------------------- the generation cache

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


@pytest.mark.parametrize("layer, n_groups", [("Mamba1", 1), ("Mamba2", 1), ("Mamba2", 2)])
def test_prefix_then_cached_one_token_steps_equal_the_full_forward_of_transformers(layer, n_groups):
    theirs = random_hf_mamba(vocab_size=VOCAB, layer=layer, n_groups=n_groups, chunk_size=CHUNK)
    ours = biomamba_twin(theirs)
    ids = _ids(length=23, seed=4)
    full = _logits(theirs, ids)
    with torch.no_grad():
        out = ours(ids[:, :13], use_cache=True)  # a prefix longer than one chunk, then single tokens
        steps = [out.logits]
        for t in range(13, ids.shape[1]):
            out = ours(ids[:, t:t + 1], cache_params=out.cache_params, use_cache=True)
            steps.append(out.logits)
    assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-4
    cache, cfg = out.cache_params, ours.config
    assert tuple(cache.get_conv_state(0).shape) == (2, cfg.conv_dim, cfg.d_conv)
    state = (cfg.nheads, cfg.headdim, cfg.d_state) if layer == "Mamba2" else (cfg.d_inner, cfg.d_state)
    assert tuple(cache.get_recurrent_state(0).shape) == (2, *state)


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


# ----------------------------------------------------------------------------- padding and the loss

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


def test_A_log_and_D_stay_fp32_and_skip_weight_decay(layer):
    model = tiny_model(layer=layer).to(torch.bfloat16)
    mixer = model.backbone.layers[0].mixer
    kept = ("A_log", "D", "dt_bias") if layer == "Mamba2" else ("A_log", "D")
    for name in kept:
        assert getattr(mixer, name).dtype == torch.float32 and getattr(mixer, name)._no_weight_decay, name
    assert mixer.in_proj.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert model(torch.randint(0, 97, (1, 5))).logits.isfinite().all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_heads_pool_the_last_real_token_and_load_from_an_lm_directory(tmp_path, side, layer):
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


# ----------------------------------------------------------------------------- generate

def _new_tokens(out, prompt_width):
    return out[:, prompt_width:]


def test_the_model_generates_through_transformers(ours):
    assert ours.can_generate()
    assert isinstance(ours, GenerationMixin)


@pytest.mark.parametrize("layer, n_groups", [("Mamba1", 1), ("Mamba2", 2)])
def test_greedy_generation_of_20_tokens_equals_transformers(layer, n_groups):
    theirs = random_hf_mamba(vocab_size=VOCAB, layer=layer, n_groups=n_groups, chunk_size=CHUNK, varied=True)
    ours = biomamba_twin(theirs)
    prompt = _ids(rows=2, length=11, seed=3)
    kwargs = dict(max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = theirs.generate(prompt, **kwargs)
    assert expected.shape[1] == 31 and len(set(expected[0, 11:].tolist())) > 5  # not one repeated token
    assert torch.equal(ours.generate(prompt, **kwargs), expected)


def test_greedy_generation_from_a_transformers_directory_equals_transformers(layer, tmp_path):
    hf_model = random_hf_mamba(vocab_size=VOCAB, layer=layer)
    hf_model.save_pretrained(tmp_path)
    ours = BioMambaForCausalLM.from_pretrained(tmp_path)
    prompt = torch.randint(1, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    theirs = hf_model.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ours.generate(prompt, max_new_tokens=12), theirs)  # the directory's generation defaults


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_generates_what_each_prompt_generates_alone(ours, prompts, side):
    ids, mask = padded_batch(prompts, side, pad_id=7)
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=None, pad_token_id=0)
    assert torch.equal(out[:, : ids.shape[1]], ids)  # the prompt columns as given, either side
    for row, prompt in enumerate(prompts):
        alone = ours.generate(prompt[None], max_new_tokens=8, eos_token_id=None, pad_token_id=0)
        assert torch.equal(_new_tokens(out, ids.shape[1])[row], _new_tokens(alone, len(prompt))[0])
    assert len(set(_new_tokens(out, ids.shape[1])[0].tolist())) > 3  # the model does not repeat one token


def test_left_padded_batch_matches_transformers(ours, hf_model, prompts):
    ids, mask = padded_batch(prompts, "left")
    kwargs = dict(attention_mask=mask, max_new_tokens=8, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ours.generate(ids, **kwargs), hf_model.generate(ids, **kwargs))


ARGUMENTS = {
    "max_length": dict(max_length=12),
    "min_new_tokens": dict(max_new_tokens=6, min_new_tokens=6),
    "beam_search": dict(max_new_tokens=7, num_beams=3),
    "beams_return_several": dict(max_new_tokens=5, num_beams=3, num_return_sequences=2),
    "repetition_penalty": dict(max_new_tokens=10, repetition_penalty=1.8),
    # size 1 (no token twice): the random Mamba-2 model's greedy tokens never repeat a pair
    "no_repeat_ngram": dict(max_new_tokens=10, no_repeat_ngram_size=1),
}


@pytest.mark.parametrize("name", ARGUMENTS)
def test_generate_arguments_give_transformers_tokens(ours, hf_model, prompts, name):
    ids, mask = padded_batch(prompts, "left")
    kwargs = dict(attention_mask=mask, pad_token_id=0, **ARGUMENTS[name])
    theirs = hf_model.generate(ids, **kwargs)
    assert torch.equal(ours.generate(ids, **kwargs), theirs)
    if name == "max_length":
        assert theirs.shape[1] == 12
    greedy = hf_model.generate(ids, attention_mask=mask, pad_token_id=0, max_new_tokens=theirs.shape[1] - ids.shape[1])
    if name in ("beam_search", "repetition_penalty", "no_repeat_ngram"):
        assert not torch.equal(theirs, greedy), f"{name} changed nothing: the test cannot see it honoured"


STEP_MODES = {
    "greedy": dict(max_new_tokens=6),
    "sampling": dict(max_new_tokens=6, do_sample=True, top_k=20),
    "beam_search": dict(max_new_tokens=5, num_beams=3),
    "greedy_callers_positions": dict(max_new_tokens=6),  # position ids passed to generate (it makes none itself)
}


@pytest.mark.parametrize("mode", STEP_MODES)
def test_cached_steps_get_the_inputs_transformers_prepares(ours, prompts, mode, monkeypatch):
    """Our prepare_inputs_for_generation builds a plain cached step's inputs itself (modeling._step_inputs):
    on every step of a greedy, sampled and beam generate they equal what GenerationMixin's prepares (with the
    prompt's mask dropped, as for every step), and the plain path served every step."""
    from biomamba import modeling

    original, plain, compared = BioMambaForCausalLM.prepare_inputs_for_generation, [], []
    judge = modeling._plain_step

    def judged(*args):
        plain.append(judge(*args))
        return plain[-1]

    def prepare(self, input_ids, inputs_embeds=None, use_cache=None, cache_params=None, attention_mask=None,
                is_first_iteration=False, **kwargs):
        arguments = dict(inputs_embeds=inputs_embeds, use_cache=use_cache, cache_params=cache_params,
                         attention_mask=attention_mask, is_first_iteration=is_first_iteration)
        got = original(self, input_ids, **arguments, **kwargs)
        if use_cache and not is_first_iteration:
            expected = GenerationMixin.prepare_inputs_for_generation(self, input_ids, **arguments, **kwargs)
            expected["attention_mask"] = None
            assert got.keys() == expected.keys()
            for key, value in expected.items():
                assert torch.equal(got[key], value) if torch.is_tensor(value) else got[key] is value or got[key] == value
            compared.append(input_ids.shape[1])
        return got

    monkeypatch.setattr(modeling, "_plain_step", judged)
    monkeypatch.setattr(BioMambaForCausalLM, "prepare_inputs_for_generation", prepare)
    ids, mask = padded_batch(prompts, "left")
    positions = {"position_ids": (mask.long().cumsum(-1) - 1).clamp(min=0)} if "positions" in mode else {}
    ours.generate(ids, attention_mask=mask, pad_token_id=0, eos_token_id=None, **positions, **STEP_MODES[mode])
    assert len(compared) == STEP_MODES[mode]["max_new_tokens"] - 1  # the first new token is the prompt pass's
    assert plain == [True] * len(compared)


def test_generate_makes_no_position_ids_and_passes_a_callers_on(ours, prompts, monkeypatch):
    """The model reads position ids only to find packed documents (where they restart at 0), which generate's
    own never mark: generate makes none (they were grown and sliced every token), while position ids a
    caller passes still reach the forward. Two documents packed in one prompt row then continue as the last
    one alone."""
    seen, forward = [], BioMambaForCausalLM.forward

    @functools.wraps(forward)  # generate reads the forward's signature
    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("position_ids"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(BioMambaForCausalLM, "forward", spy)
    first, last = prompts[1], prompts[2]
    alone = ours.generate(last[None], max_new_tokens=4, eos_token_id=None, pad_token_id=0)
    assert len(seen) == 4 and all(positions is None for positions in seen)
    seen.clear()
    packed = torch.cat([first, last])[None]
    positions = torch.cat([torch.arange(len(first)), torch.arange(len(last))])[None]
    got = ours.generate(packed, position_ids=positions, max_new_tokens=4, eos_token_id=None, pad_token_id=0)
    assert torch.equal(seen[0], positions) and len(seen) == 4
    assert torch.equal(got[:, packed.shape[1]:], alone[:, last.shape[0]:])


def test_min_new_tokens_holds_back_eos(ours, prompts):
    prompt = prompts[0][None]
    first = int(ours.generate(prompt, max_new_tokens=1, eos_token_id=None, pad_token_id=0)[0, -1])
    stopped = ours.generate(prompt, max_new_tokens=6, eos_token_id=first, pad_token_id=0)
    assert stopped.shape[1] == prompt.shape[1] + 1  # EOS first, so generation ends at once
    held = ours.generate(prompt, max_new_tokens=6, min_new_tokens=4, eos_token_id=first, pad_token_id=0)
    assert held.shape[1] >= prompt.shape[1] + 4 and first not in held[0, prompt.shape[1]:prompt.shape[1] + 4]


def test_sampling_with_a_seed_gives_transformers_tokens(ours, hf_model, prompts):
    ids, mask = padded_batch(prompts, "left")
    kwargs = dict(attention_mask=mask, max_new_tokens=10, do_sample=True, temperature=0.8, top_k=20, top_p=0.9,
                  eos_token_id=None, pad_token_id=0)
    torch.manual_seed(11)
    theirs = hf_model.generate(ids, **kwargs)
    torch.manual_seed(11)
    assert torch.equal(ours.generate(ids, **kwargs), theirs)
    torch.manual_seed(12)
    assert not torch.equal(ours.generate(ids, **kwargs), theirs)  # the seed, not greedy, decides


def test_a_list_of_eos_ids_stops_each_row_at_its_first(ours, hf_model, prompts):
    ids, mask = padded_batch(prompts, "left")
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=None, pad_token_id=0)
    new = _new_tokens(free, ids.shape[1])
    eos = [int(new[0, 2]), int(new[1, 4])]
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(out, hf_model.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=eos,
                                              pad_token_id=0))
    stop = [next(i for i, t in enumerate(row.tolist()) if t in eos) for row in new[:2]]
    for row in range(2):
        got = _new_tokens(out, ids.shape[1])[row]
        assert torch.equal(got[: stop[row] + 1], new[row, : stop[row] + 1])
        assert (got[stop[row] + 1:] == 0).all()  # padded after its EOS


def test_a_streamer_receives_every_new_token(ours, prompts):
    class Collect(BaseStreamer):
        def __init__(self):
            self.chunks, self.ended = [], False

        def put(self, value):
            self.chunks.append(value.reshape(-1).tolist())

        def end(self):
            self.ended = True

    streamer = Collect()
    prompt = prompts[0][None]
    out = ours.generate(prompt, max_new_tokens=5, eos_token_id=None, pad_token_id=0, streamer=streamer)
    assert streamer.chunks[0] == prompt[0].tolist() and streamer.ended
    assert sum(streamer.chunks[1:], []) == out[0, prompt.shape[1]:].tolist()


def test_a_stopping_criterion_is_honoured(ours, prompts):
    class AfterThree(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= prompt.shape[1] + 3)

    prompt = prompts[0][None]
    out = ours.generate(prompt, max_new_tokens=10, eos_token_id=None, pad_token_id=0,
                        stopping_criteria=StoppingCriteriaList([AfterThree()]))
    assert out.shape[1] == prompt.shape[1] + 3


def test_return_dict_in_generate_keeps_right_padded_prompts_as_given(ours, prompts):
    ids, mask = padded_batch(prompts, "right")
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=3, eos_token_id=None, pad_token_id=0,
                        num_beams=2, num_return_sequences=2, return_dict_in_generate=True, output_scores=True)
    assert torch.equal(out.sequences[:, : ids.shape[1]], ids.repeat_interleave(2, dim=0))


# ----------------------------------------------------------------------------- save and load

HEADS = {"causal-lm": (BioMambaForCausalLM, "logits"), "classification": (BioMambaForSequenceClassification, "logits"),
         "embedding": (BioMambaForEmbedding, "embeddings")}


@pytest.mark.parametrize("head", HEADS)
def test_save_load_round_trip_is_exact(layer, head, tmp_path):
    model_class, output = HEADS[head]
    torch.manual_seed(0)
    model = model_class(tiny_model(layer=layer).config).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    loaded = model_class.from_pretrained(tmp_path).eval()
    assert loaded.config.ssm_layer == layer
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        assert torch.equal(getattr(model(ids), output), getattr(loaded(ids), output))
    if head == "causal-lm":
        assert loaded.lm_head.weight.data_ptr() == loaded.backbone.embedding.weight.data_ptr()


def test_transformers_directory_loads_with_transformers_logits(layer, tmp_path):
    tie = layer == "Mamba1"  # transformers' Mamba2 default: an untied head
    theirs = random_hf_mamba(vocab_size=VOCAB, layer=layer, chunk_size=CHUNK, tie=tie)
    theirs.save_pretrained(tmp_path)
    ours = BioMambaForCausalLM.from_pretrained(tmp_path)
    assert ours.config.tie_word_embeddings == tie
    ids = torch.randint(0, VOCAB, (3, LENGTH), generator=torch.Generator().manual_seed(1))
    assert (_logits(ours, ids) - _logits(theirs, ids)).abs().max() <= 1e-4
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    mine, reference = _logits(ours, ids, mask), _logits(theirs, ids, mask)
    real = slice(None) if layer == "Mamba1" else slice(0, 20)  # Mamba-2: what sits under padding is nobody's
    assert (mine[0] - reference[0]).abs().max() <= 1e-4 and (mine[1, real] - reference[1, real]).abs().max() <= 1e-4


def test_state_spaces_directory_loads_with_transformers_logits(layer, tmp_path):
    theirs = random_hf_mamba(vocab_size=VOCAB, layer=layer, n_groups=2, chunk_size=CHUNK)
    # 123 tokens padded to 128 rows, as the released checkpoints store 50277 -> 50280 (Mamba-1, a
    # multiple of 8) or 50288 (state-spaces/mamba2-*, a multiple of 16)
    path = write_mamba_ssm_dir(theirs, tmp_path / "ssm", raw_vocab_size=123)
    ours = BioMambaForCausalLM.from_pretrained(path)
    cfg = ours.config
    assert (cfg.ssm_layer, cfg.vocab_size) == (layer, 128)
    if layer == "Mamba2":
        assert (cfg.ngroups, cfg.headdim, cfg.chunk_size) == (2, 16, CHUNK)
    ids = torch.randint(0, 123, (2, 29), generator=torch.Generator().manual_seed(2))
    assert (_logits(ours, ids) - _logits(theirs, ids)).abs().max() <= 1e-4


# the block's change to a loaded config that no longer fits the checkpoint, and the error it gives
MISFITS = {"Mamba1": ({"d_state": 7}, r"A_log: checkpoint shape \(64, 5\) does not fit the config's \(64, 7\)"),
           "Mamba2": ({"headdim": 32}, r"A_log: checkpoint shape \(4,\) does not fit the config's \(2,\)")}  # 2 heads


def test_shape_mismatch_names_the_tensor_and_both_shapes(layer, tmp_path):
    random_hf_mamba(vocab_size=VOCAB, layer=layer).save_pretrained(tmp_path)
    change, message = MISFITS[layer]
    wrong = BioMambaConfig.from_dict({**BioMambaForCausalLM.from_pretrained(tmp_path).config.to_dict(), **change})
    with pytest.raises(CheckpointError, match=message):
        BioMambaForCausalLM.from_pretrained(tmp_path, config=wrong)


# ----------------------------------------------------------------------------- export

# Runs in a fresh interpreter: loads the export with plain transformers, proves biomamba never loaded.
LOAD_WITH_TRANSFORMERS = """
import sys, torch
import transformers
model = getattr(transformers, sys.argv[1]).from_pretrained(sys.argv[2]).eval()
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[3])).logits, sys.argv[4])
transformers.AutoTokenizer.from_pretrained(sys.argv[2], local_files_only=True)
assert not any(name == "biomamba" or name.startswith("biomamba.") for name in sys.modules), "biomamba imported"
"""
EXPORT_VOCAB = 97  # not a multiple of pad_vocab_size_multiple (8, 16)


@pytest.mark.parametrize("layer, n_groups, tie", [("Mamba1", 1, True), ("Mamba2", 1, True), ("Mamba2", 2, False)])
def test_transformers_export_loads_without_biomamba_with_equal_logits(layer, n_groups, tie, tmp_path, capsys):
    model = tiny_model(layer=layer, ngroups=n_groups, tie_word_embeddings=tie, seed=5, vocab_size=EXPORT_VOCAB)
    assert (model.lm_head.weight is model.backbone.embedding.weight) == tie
    model.save_pretrained(tmp_path / "ours")
    word_tokenizer(EXPORT_VOCAB, tmp_path / "ours")
    out = tmp_path / "hf"
    assert main(["export", "--model", str(tmp_path / "ours"), "--to", "transformers", "--out", str(out)]) == 0
    peer = {"Mamba1": "MambaForCausalLM", "Mamba2": "Mamba2ForCausalLM"}[layer]
    assert f"transformers.{peer}.from_pretrained" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ({"Mamba1": "mamba", "Mamba2": "mamba2"}[layer], [peer])
    if layer == "Mamba2":
        assert config["n_groups"] == n_groups
    assert (out / "tokenizer.json").is_file()
    ids = _ids(vocab=EXPORT_VOCAB)
    torch.save(ids, tmp_path / "ids.pt")
    run = subprocess.run([sys.executable, "-c", LOAD_WITH_TRANSFORMERS, peer, str(out), str(tmp_path / "ids.pt"),
                          str(tmp_path / "logits.pt")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (torch.load(tmp_path / "logits.pt") - _logits(model, ids)).abs().max() <= PARITY[layer]


@pytest.fixture(scope="module")
def source_dir(layer, tmp_path_factory):
    """Our saved causal LM of this block type with a tokenizer beside it."""
    path = tmp_path_factory.mktemp("source")
    tiny_model(layer=layer, vocab_size=EXPORT_VOCAB).save_pretrained(path)
    word_tokenizer(EXPORT_VOCAB, path)
    return path


def test_transformers_export_reads_back_through_our_loader(source_dir, tmp_path):
    out = export_model(BioMambaForCausalLM.from_pretrained(source_dir), "transformers", tmp_path / "hf")
    assert (out / "tokenizer.json").is_file()  # found through the model's name_or_path
    again = BioMambaForCausalLM.from_pretrained(out)
    ids = _ids(vocab=EXPORT_VOCAB)
    assert torch.equal(_logits(again, ids), _logits(BioMambaForCausalLM.from_pretrained(source_dir), ids))


def test_state_spaces_export_loads_back_with_equal_logits(source_dir, tmp_path):
    out = export_model(source_dir, "state-spaces", tmp_path / "ssm")
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == EXPORT_VOCAB and config["pad_vocab_size_multiple"] == 1  # 97 must not grow
    model, ids = BioMambaForCausalLM.from_pretrained(source_dir), _ids(vocab=EXPORT_VOCAB)
    assert torch.equal(_logits(BioMambaForCausalLM.from_pretrained(out), ids), _logits(model, ids))


def test_state_spaces_export_has_the_layout_of_its_checkpoints_and_loads_back(layer, tmp_path):
    hf = random_hf_mamba(vocab_size=VOCAB, layer=layer, n_groups=2, chunk_size=CHUNK)
    reference = write_mamba_ssm_dir(hf, tmp_path / "reference", raw_vocab_size=VOCAB)
    ours = biomamba_twin(hf)
    out = export_model(ours, "state-spaces", tmp_path / "ssm")
    config, expected = (json.loads((d / "config.json").read_text()) for d in (out, reference))
    assert set(config) == set(expected)
    for key in ("d_model", "n_layer", "vocab_size", "rms_norm", "residual_in_fp32", "fused_add_norm", "tie_embeddings"):
        assert config[key] == expected[key], key
    assert {k: config["ssm_cfg"][k] for k in expected["ssm_cfg"]} == expected["ssm_cfg"]
    tensors, expected_tensors = (torch.load(d / "pytorch_model.bin", weights_only=True) for d in (out, reference))
    assert set(tensors) == set(expected_tensors)  # lm_head.weight included: mamba_ssm loads strictly
    for name, tensor in expected_tensors.items():
        assert torch.equal(tensors[name], tensor), name
    assert torch.equal(_logits(BioMambaForCausalLM.from_pretrained(out), _ids()), _logits(ours, _ids()))


@pytest.mark.parametrize("to", ["transformers", "state-spaces"])
def test_export_command_writes_both_layouts(to, layer, tmp_path, capsys):
    # The command, not export_model: the state-spaces CLI path once read an architectures key after writing.
    source = tmp_path / "source"
    tiny_model(layer=layer, vocab_size=EXPORT_VOCAB).save_pretrained(source)
    assert main(["export", "--model", str(source), "--to", to, "--out", str(tmp_path / "out")]) == 0
    loader = {"transformers": "ForCausalLM.from_pretrained", "state-spaces": "MambaLMHeadModel.from_pretrained"}[to]
    assert loader in capsys.readouterr().out
    ids = _ids(vocab=EXPORT_VOCAB)
    ours = _logits(BioMambaForCausalLM.from_pretrained(source), ids)
    again = BioMambaForCausalLM.from_pretrained(tmp_path / "out")
    assert again.config.ssm_layer == layer
    assert (_logits(again, ids) - ours).abs().max() <= 1e-5


# ----------------------------------------------------------------------------- pipelines

def test_text_generation_pipeline_from_a_saved_directory(model_dir):
    generator = pipeline("text-generation", model=str(model_dir))  # AutoModelForCausalLM -> ours
    assert isinstance(generator.model, BioMambaForCausalLM)
    prompts = ["w5 w9 w17", "w3"]
    batched = generator(prompts, max_new_tokens=5, do_sample=False, batch_size=2, return_full_text=False)
    one_by_one = [generator(p, max_new_tokens=5, do_sample=False, return_full_text=False) for p in prompts]
    assert batched == one_by_one
    tokenizer = generator.tokenizer
    direct = generator.model.generate(**tokenizer("w5 w9 w17", return_tensors="pt"), max_new_tokens=5)
    assert one_by_one[0][0]["generated_text"] == tokenizer.decode(direct[0, 3:], skip_special_tokens=True)


def test_feature_extraction_pipeline_returns_the_embedding(model_dir):
    encoder = BioMambaForEmbedding.from_pretrained(model_dir)
    tokenizer = word_tokenizer(VOCAB)
    features = pipeline("feature-extraction", model=encoder, tokenizer=tokenizer)
    got = torch.tensor(features("w5 w9 w17 w2"))
    with torch.no_grad():
        expected = encoder(**tokenizer("w5 w9 w17 w2", return_tensors="pt")).embeddings
    assert got.shape == expected.shape and (got - expected).abs().max() <= 1e-6


def test_text_classification_pipeline_scores_the_classifier(model_dir):
    classifier = BioMambaForSequenceClassification.from_pretrained(
        model_dir, num_labels=3, id2label={0: "no", 1: "maybe", 2: "yes"}, label2id={"no": 0, "maybe": 1, "yes": 2})
    tokenizer = word_tokenizer(VOCAB)
    classify = pipeline("text-classification", model=classifier, tokenizer=tokenizer)
    texts = ["w5 w9 w17", "w3 w4"]
    results = classify(texts, top_k=None)
    with torch.no_grad():
        for text, result in zip(texts, results):
            probs = classifier(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
            by_label = {r["label"]: r["score"] for r in result}
            assert by_label == pytest.approx({"no": probs[0].item(), "maybe": probs[1].item(), "yes": probs[2].item()})


# ----------------------------------------------------------------------------- Trainer

def _tiny_dataset(rows=8, length=10):
    """Rows whose labels mask different numbers of tokens, so mean-of-means != mean over tokens."""
    g = torch.Generator().manual_seed(0)
    data = []
    for i in range(rows):
        ids = torch.randint(1, VOCAB, (length,), generator=g)
        labels = ids.clone()
        labels[: 1 + (3 * i) % 7] = -100
        data.append({"input_ids": ids, "labels": labels})
    return data


def _train(model, accumulation, out_dir):
    args = TrainingArguments(output_dir=str(out_dir), per_device_train_batch_size=2,
                             gradient_accumulation_steps=accumulation, max_steps=3, learning_rate=1e-2,
                             lr_scheduler_type="constant", weight_decay=0.0, logging_steps=1, report_to=[],
                             save_strategy="no", use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=_tiny_dataset())
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_gives_transformers_losses_and_weights(accumulation, layer, tmp_path):
    theirs = random_hf_mamba(vocab_size=VOCAB, layer=layer).train()
    ours = biomamba_twin(theirs).train()
    their_losses = _train(theirs, accumulation, tmp_path / "theirs")
    our_losses = _train(ours, accumulation, tmp_path / "ours")
    assert len(our_losses) == 3 and our_losses == pytest.approx(their_losses, rel=1e-5)
    their_weights = {k.replace("embeddings", "embedding"): v for k, v in theirs.state_dict().items()}
    # Adam divides each gradient by its own magnitude, so where a gradient is near Adam's eps the
    # float32 differences of two op orders (our scan, theirs) move that update by a small part of
    # lr = 1e-2: 1.6e-5 was seen on an Intel Xeon (2026-12-04). A real difference moves weights by ~lr.
    for name, weight in ours.state_dict().items():
        assert (weight - their_weights[name]).abs().max() <= 5e-5, name


def test_trainer_averages_the_heads_losses_over_accumulation(layer, tmp_path):
    # The heads' losses are per-example means: Trainer must divide them by the accumulation steps
    # itself rather than pass num_items_in_batch (which they would ignore); the causal LM takes it.
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    lm = biomamba_twin(random_hf_mamba(vocab_size=VOCAB, layer=layer))
    assert Trainer(model=lm, args=args).model_accepts_loss_kwargs
    for head in (BioMambaForSequenceClassification(lm.config), BioMambaForEmbedding(lm.config)):
        assert not Trainer(model=head, args=args).model_accepts_loss_kwargs


# ----------------------------------------------------------------------------- LoRA

# block type -> the projections LoRA adapts by default, and a module it must refuse: its weight is
# read directly by the fused scan (Mamba-1's dt_proj) or by the conv (Mamba-2's conv1d), bypassing
# the adapter (peft raises the same for transformers' Mamba models)
LORA = {"Mamba1": ({"in_proj", "x_proj", "out_proj"}, "dt_proj", "dt_proj cannot take LoRA"),
        "Mamba2": ({"in_proj", "out_proj"}, "conv1d", r"conv1d cannot take LoRA.*'in_proj', 'out_proj'")}


def test_lora_adapts_the_projections_and_trains_only_them_and_the_head(layer, tmp_path):
    pytest.importorskip("peft")
    from biomamba.resolve import ModelSpecError
    from biomamba.train.finetune_models import build_classifier
    from tests.task_helpers import lora_cfg
    targets, refused, message = LORA[layer]
    tiny_model(layer=layer).save_pretrained(tmp_path)
    model = build_classifier(str(tmp_path), "biomamba", ["a", "b", "c"], lora_cfg())
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    adapters = [name for name in trained if ".lora_" in name]
    heads = [name for name in trained if ".score.modules_to_save." in name]
    assert sorted(adapters + heads) == sorted(trained) and len(heads) == 2  # head weight and bias
    assert {name.split(".lora_")[0].rsplit(".", 1)[1] for name in adapters} == targets
    assert len(adapters) == 2 * len(targets) * 2  # lora_A and lora_B on each target in both layers
    assert not any(name.endswith(("A_log", "D", "dt_bias")) for name in trained)  # frozen with the backbone
    ids = torch.randint(1, 97, (2, 9))
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 2])).loss.backward()
    with pytest.raises(ModelSpecError, match=message):
        build_classifier(str(tmp_path), "biomamba", ["a", "b"], lora_cfg(f'model.lora_target_modules=["{refused}"]'))
