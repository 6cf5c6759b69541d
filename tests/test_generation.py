"""generate is transformers' own: every argument works, and gives transformers' Mamba's tokens.

Ours and transformers' MambaForCausalLM (Mamba2ForCausalLM for the Mamba-2 block) hold the same
random weights (`varied`: greedy decoding does not collapse into one repeated token, so a wrong
token shows). Every test runs for both block types.
"""
import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from tests.model_helpers import BLOCKS, biomamba_twin, padded_batch, random_hf_mamba

VOCAB = 128


@pytest.fixture(scope="module", params=BLOCKS)
def hf_model(request):
    return random_hf_mamba(vocab_size=VOCAB, varied=True, layer=request.param)


@pytest.fixture(scope="module")
def ours(hf_model):
    return biomamba_twin(hf_model)


@pytest.fixture(scope="module")
def prompts():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(1, VOCAB, (n,), generator=g) for n in (9, 4, 6)]


def _new_tokens(out, prompt_width):
    return out[:, prompt_width:]


def test_the_model_generates_through_transformers(ours):
    assert ours.can_generate()
    from transformers import GenerationMixin
    assert isinstance(ours, GenerationMixin)


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
