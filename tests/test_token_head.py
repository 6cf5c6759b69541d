"""The new heads: the token head's logits equal a per-token reference; the bidirectional head's backward
half is the forward model run on the reversed input; regression and multi-label losses; padding."""
import pytest
import torch
import torch.nn.functional as F

from biomamba import (BioMambaConfig, BioMambaForCausalLM, BioMambaForSequenceClassification,
                      BioMambaForTokenClassification)

VOCAB = 64


def config(**overrides):
    return BioMambaConfig.from_preset("debug", vocab_size=VOCAB, **{"num_labels": 3, "scan_backend": "torch", **overrides})


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("causal")
    torch.manual_seed(0)
    BioMambaForCausalLM(config()).save_pretrained(out)
    return out


def test_causal_token_logits_equal_the_head_on_each_prefix(causal_dir):
    """Position t has read tokens 0..t: its logits are the classifier on the last state of that prefix."""
    torch.manual_seed(1)
    model = BioMambaForTokenClassification.from_pretrained(causal_dir, num_labels=3).eval()
    ids = torch.randint(0, VOCAB, (1, 9))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        for t in range(ids.shape[1]):
            last = model.backbone(input_ids=ids[:, :t + 1]).last_hidden_state[:, -1]
            torch.testing.assert_close(logits[:, t], model.score(last), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_backward_half_is_the_forward_model_on_the_reversed_input(causal_dir, merge):
    """Loaded from a causal checkpoint, the reverse backbone is a copy of the pretrained forward one
    (its own weights, not shared), and what it gives at position t is the forward model's state after
    reading the row from its end back to t."""
    causal = BioMambaForCausalLM.from_pretrained(causal_dir).eval()
    model = BioMambaForTokenClassification.from_pretrained(causal_dir, num_labels=3, bidirectional=True,
                                                           bidirectional_merge=merge).eval()
    assert model.backbone_reverse.embedding.weight is not model.backbone.embedding.weight
    torch.manual_seed(2)
    ids = torch.randint(1, VOCAB, (2, 8))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # row 1: five real tokens, right padded
    with torch.no_grad():
        forward, backward = model.directional_states(ids, mask)
        for row, length in enumerate((8, 5)):
            reversed_row = ids[row, :length].flip(0)[None]
            expected = causal.backbone(input_ids=reversed_row).last_hidden_state[0].flip(0)
            torch.testing.assert_close(backward[row, :length], expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(forward[row, :length],
                                       causal.backbone(input_ids=ids[row:row + 1, :length]).last_hidden_state[0],
                                       rtol=1e-5, atol=1e-5)
        hidden = torch.cat([forward, backward], -1) if merge == "concat" else forward + backward
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, model.score(hidden))
    with torch.no_grad():
        model.backbone_reverse.embedding.weight.add_(1.0)  # not shared: the forward one is untouched
    assert torch.equal(model.backbone.embedding.weight, causal.backbone.embedding.weight)


def test_padded_rows_give_their_unpadded_logits_both_ways():
    torch.manual_seed(3)
    model = BioMambaForTokenClassification(config(bidirectional=True)).eval()
    ids = torch.randint(1, VOCAB, (2, 7))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).logits
        alone = model(input_ids=ids[:1, :4]).logits
    torch.testing.assert_close(padded[0, :4], alone[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="right-padded"):
        model(input_ids=ids, attention_mask=mask.flip(1))


def test_token_loss_scores_only_labelled_positions():
    torch.manual_seed(4)
    model = BioMambaForTokenClassification(config())
    ids = torch.randint(1, VOCAB, (2, 5))
    labels = torch.tensor([[1, -100, 2, -100, -100], [0, 1, -100, -100, -100]])
    out = model(input_ids=ids, labels=labels)
    kept = labels != -100
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits[kept], labels[kept]))


def test_regression_and_multilabel_heads_use_transformers_losses(tmp_path):
    torch.manual_seed(5)
    ids = torch.randint(1, VOCAB, (3, 6))
    regression = BioMambaForSequenceClassification(config(num_labels=1, problem_type="regression"))
    scores = torch.tensor([0.5, 2.0, -1.0])
    out = regression(input_ids=ids, labels=scores)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), scores))
    multilabel = BioMambaForSequenceClassification(config(num_labels=3, problem_type="multi_label_classification"))
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    out = multilabel(input_ids=ids, labels=targets)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, targets))
    multilabel.save_pretrained(tmp_path)
    assert BioMambaForSequenceClassification.from_pretrained(tmp_path).config.problem_type == \
        "multi_label_classification"
