"""The weights a CPU decoding step streams, in huge pages (biomamba/huge_pages.py, decode.use_fast_decode).

What a user relies on: the copies hold the same values as the tensors they copy; use_fast_decode leaves the
model as it was in every other respect (its outputs, tied weights, save_pretrained / from_pretrained) while
the step's weights sit in memory that Linux is asked to back with 2 MB pages; BIOMAMBA_HUGE_PAGES=0 turns it
off. Whether 2 MB pages were free at that moment is Linux's business, so the tests read what was asked for
(the mapping's VmFlags), which does not depend on the machine's free memory. They say nothing of memory they
did not map: once, deep in a full `make test`, a plain torch allocation also sat in a mapping marked huge.
"""
import pytest
import torch

from biomamba import BioMambaConfig, BioMambaForCausalLM, huge_pages
from biomamba.decode import _weight, use_fast_decode

needs_thp = pytest.mark.skipif(not huge_pages.available(), reason="no transparent huge pages on this system")
MB = 1 << 20


def sources():
    """Tensors of several dtypes and sizes: above and below one huge page, odd byte counts, empty."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1100, 700, generator=g),  # 3.08 MB: one whole huge page and a part page
            torch.randint(-127, 128, (37, 83), generator=g).to(torch.int8),
            torch.randn(5, 3, generator=g).to(torch.bfloat16),
            torch.randn(0, 4, generator=g),
            torch.randn(3, 4, generator=g).T]  # not contiguous


def test_copies_hold_the_values_and_leave_the_sources_alone():
    originals = sources()
    kept = [t.clone() for t in originals]
    copied = huge_pages.copies(originals)
    for original, copy, before in zip(originals, copied, kept):
        assert copy.dtype == original.dtype and copy.shape == original.shape and copy.is_contiguous()
        assert torch.equal(copy, original)
        if copy.numel():
            copy.view(-1)[0] = 1  # a write to the copy must not reach the source
            assert torch.equal(original, before)
    assert all(copy.data_ptr() % huge_pages.ALIGN == 0 for copy in copied if copy.numel())
    # each copy owns exactly its bytes: torch.save writes no more than before, and no two share storage
    assert all(copy.untyped_storage().nbytes() == copy.numel() * copy.element_size() for copy in copied)
    filled = [copy for copy in copied if copy.numel()]
    assert len({copy.untyped_storage().data_ptr() for copy in filled}) == len(filled)


def no_mapping(nbytes):
    raise AssertionError("BIOMAMBA_HUGE_PAGES=0, yet a huge-page mapping was made")


@needs_thp
def test_copies_of_a_huge_page_or_more_are_advised_huge(monkeypatch):
    big = torch.randn(3 * MB // 4)  # 3 MB
    assert huge_pages.is_advised(huge_pages.copies([big])[0])
    monkeypatch.setenv("BIOMAMBA_HUGE_PAGES", "0")
    monkeypatch.setattr(huge_pages, "_mapping", no_mapping)
    assert torch.equal(huge_pages.copies([big])[0], big)


def model_with_a_big_head(layer):
    """A tiny model whose tied embedding / LM head (32768 x 64: 8 MB in fp32, 2 MB in int8) spans huge pages."""
    torch.manual_seed(0)
    config = BioMambaConfig.from_preset("tiny", ssm_layer=layer, d_model=64, n_layer=2, vocab_size=32768)
    return BioMambaForCausalLM(config).eval()


@needs_thp
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("layer", ["Mamba1", "Mamba2"])
def test_use_fast_decode_moves_the_step_weights_and_changes_nothing_else(layer, precision, tmp_path, monkeypatch):
    plain, paged = model_with_a_big_head(layer), model_with_a_big_head(layer)
    with monkeypatch.context() as off:
        off.setenv("BIOMAMBA_HUGE_PAGES", "0")
        off.setattr(huge_pages, "_mapping", no_mapping)
        use_fast_decode(plain, precision, kernel="compiled")
    head = paged.lm_head.weight
    use_fast_decode(paged, precision, kernel="compiled")
    assert paged.lm_head.weight is head is paged.backbone.embedding.weight  # the same tied parameter
    assert huge_pages.is_advised(_weight(paged.lm_head)[0])
    for name, value in plain.state_dict().items():
        assert torch.equal(paged.state_dict()[name], value), name
    ids = torch.randint(1, 32768, (2, 5), generator=torch.Generator().manual_seed(1))
    greedy = dict(attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False, eos_token_id=None,
                  pad_token_id=0)
    assert torch.equal(paged.generate(ids, **greedy), plain.generate(ids, **greedy))
    streamed = _weight(paged.lm_head)[0]
    assert streamed.untyped_storage().nbytes() == streamed.numel() * streamed.element_size()  # torch.save: no more
    paged.save_pretrained(tmp_path)  # no two parameters share storage
    reloaded = BioMambaForCausalLM.from_pretrained(tmp_path).eval()
    for name, value in paged.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name
