"""BioMambaForTokenClassification: a label per token (NER, PICO), causal or bidirectional.

Causal (config.bidirectional=False): the backbone reads left to right, so the logits at position t
have seen tokens 0..t only; a word's label is read at its first subword.

Bidirectional (config.bidirectional=True), as sequence-labelling state-space models do it (Caduceus,
BiMamba encoders): a second backbone, `backbone_reverse`, scans each row's real tokens right to left
(padding stays on the right, unread); its states are put back in reading order and concatenated with
(config.bidirectional_merge="concat", a head of width 2 d_model) or added to ("sum") the forward ones,
so position t has read the whole sequence.
- Weights are NOT shared: the two directions are two backbones (twice the backbone parameters).
- Initialisation: loaded from a causal checkpoint (from_pretrained), the reverse backbone starts as a
  copy of the pretrained forward one (biomamba.checkpoints.load_pretrained), so both directions start
  from the same language model, which has only ever read left to right; a model built from a config
  (model.init=random) draws both afresh.
Inputs must be right padded (real tokens first), as finetune collates them.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from biomamba.modeling import BioMambaModel, BioMambaPreTrainedModel, _returned

IGNORE = -100  # labels of subwords after a word's first, of special tokens and of padding


def reversal_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(b, l) gather index that reverses each row's real tokens and leaves its right padding in place;
    applying it twice is the identity."""
    b, l = attention_mask.shape
    positions = torch.arange(l, device=attention_mask.device).expand(b, l)
    lengths = attention_mask.sum(1, keepdim=True)  # (b, 1)
    if not bool((attention_mask.bool() == (positions < lengths)).all()):
        raise ValueError("bidirectional token classification needs right-padded rows (real tokens first)")
    return torch.where(positions < lengths, lengths - 1 - positions, positions)


@dataclass
class BioMambaTokenClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class BioMambaForTokenClassification(BioMambaPreTrainedModel):
    """Backbone (+ a reverse backbone when config.bidirectional) + a linear classifier per token."""

    accepts_loss_kwargs = False  # the loss is a mean over labelled tokens

    def __init__(self, config):
        super().__init__(config)
        self.backbone = BioMambaModel(config)
        self.backbone_reverse = BioMambaModel(config) if config.bidirectional else None
        width = config.d_model * (2 if config.bidirectional and config.bidirectional_merge == "concat" else 1)
        self.score = nn.Linear(width, config.num_labels, bias=True)
        self.post_init()

    def directional_states(self, input_ids, attention_mask=None):
        """(forward, backward) hidden states (b, l, d_model), both in reading order; backward is None
        for a causal model. backward[:, t] has read tokens t..end of its row."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        forward = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                                return_dict=True).last_hidden_state
        if self.backbone_reverse is None:
            return forward, None
        index = reversal_index(attention_mask)  # (b, l)
        reversed_ids = torch.gather(input_ids, 1, index)
        backward = self.backbone_reverse(input_ids=reversed_ids, attention_mask=attention_mask, use_cache=False,
                                         return_dict=True).last_hidden_state
        backward = torch.gather(backward, 1, index[..., None].expand_as(backward))  # back in reading order
        return forward, backward

    def forward(self, input_ids=None, attention_mask=None, labels=None, return_dict=None):
        forward, backward = self.directional_states(input_ids, attention_mask)
        if backward is None:
            hidden = forward
        elif self.config.bidirectional_merge == "concat":
            hidden = torch.cat([forward, backward], dim=-1)  # (b, l, 2 d_model)
        else:
            hidden = forward + backward
        logits = self.score(hidden.to(self.score.weight.dtype)).float()  # (b, l, num_labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        return _returned(BioMambaTokenClassifierOutput(loss=loss, logits=logits), return_dict, self.config)
