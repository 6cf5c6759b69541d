"""Packed documents never see each other: the model's seq_idx (or restarting position ids) resets the
scan and the conv, so a document packed behind another gives what it gives alone (both block types:
Mamba-1's selective scan, Mamba-2's SSD scan)."""
import pytest
import torch

from tests.model_helpers import BLOCKS, tiny_model

A = [5, 17, 3, 9, 44, 2, 60]
B = [8, 1, 33, 70, 12]


def packed(a, b):
    ids = torch.tensor([a + b])
    seq_idx = torch.tensor([[0] * len(a) + [1] * len(b)])
    return ids, seq_idx


# (block type, scan backend): Mamba-2's ssd_scan has no compiled CPU backend
BACKENDS = [("Mamba1", "ref"), ("Mamba1", "torch"), ("Mamba1", "cpu"), ("Mamba2", "ref"), ("Mamba2", "torch")]


@pytest.mark.parametrize("layer,backend", BACKENDS)
def test_a_document_packed_behind_another_gives_what_it_gives_alone(layer, backend):
    model = tiny_model(layer=layer, scan_backend=backend).double()
    ids, seq_idx = packed(A, B)
    together = model(ids, seq_idx=seq_idx).logits[0, len(A):]
    alone = model(torch.tensor([B])).logits[0]
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(model(ids).logits[0, len(A):], alone)  # without resets A leaks into B


@pytest.mark.parametrize("layer", BLOCKS)
def test_changing_the_first_document_changes_nothing_in_the_second_forward_or_gradients(layer):
    model = tiny_model(layer=layer).double()
    outputs, grads = [], []
    for first in (A, A[:-1] + [90]):
        ids, seq_idx = packed(first, B)
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
        logits = model(inputs_embeds=embeds, seq_idx=seq_idx).logits[0, len(first):]
        logits.pow(2).sum().backward()
        outputs.append(logits.detach())
        grads.append(embeds.grad[0, len(first):])
        assert embeds.grad[0, :len(first)].abs().max() == 0  # B's outputs send nothing back into A
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


@pytest.mark.parametrize("layer", BLOCKS)
def test_restarting_position_ids_mean_packed_documents_as_transformers_padding_free_batches_do(layer):
    model = tiny_model(layer=layer).double()
    ids, seq_idx = packed(A, B)
    positions = torch.tensor([list(range(len(A))) + list(range(len(B)))])
    torch.testing.assert_close(model(ids, position_ids=positions).logits, model(ids, seq_idx=seq_idx).logits)
    ordinary = torch.arange(ids.shape[1])[None]  # one document: nothing resets
    torch.testing.assert_close(model(ids, position_ids=ordinary).logits, model(ids).logits)


@pytest.mark.parametrize("layer", BLOCKS)
def test_every_head_takes_seq_idx(layer):
    from biomamba import BioMambaForEmbedding, BioMambaForSequenceClassification
    causal = tiny_model(layer=layer).double()
    ids, seq_idx = packed(A, B)
    for cls in (BioMambaForEmbedding, BioMambaForSequenceClassification):
        head = cls(causal.config).double().eval()
        head.backbone.load_state_dict(causal.backbone.state_dict())
        together = head(ids, seq_idx=seq_idx)[0]
        last_of_b = head(torch.tensor([B]))[0]  # "last" pooling reads B's last token
        torch.testing.assert_close(together, last_of_b, rtol=1e-10, atol=1e-10)
