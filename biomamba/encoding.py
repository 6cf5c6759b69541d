"""Texts -> L2-normalised embeddings with a BioMambaForEmbedding: the one encode path.

BMRetriever's recipe (a decoder LM as a dense retriever):
    query    "{instruction}\\nQuery: {q}"                    (QUERY_TEMPLATE)
    passage  "Represent this passage\\npassage: {title} {text}" (PASSAGE_TEMPLATE)
    an EOS token appended to every text, right padding, the hidden state of the last real token
    (config.pooling "last"; "mean" is the option), an optional projection, L2 normalisation.

`BioMambaForEmbedding.encode` (sentence-transformers style) and biomamba.retrievers.Encoder both call
`encode` here; this module imports no model class, so the model can import it.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from biomamba.data.collate import pad_right
from biomamba.data.pairs import DEFAULT_INSTRUCTION  # noqa: F401  (re-exported: the query default)

QUERY_TEMPLATE = "{instruction}\nQuery: {q}"
PASSAGE_TEMPLATE = "Represent this passage\npassage: {title} {text}"
_SPACES = re.compile(" {2,}")


class EncodingError(ValueError):
    """Texts that cannot be encoded as asked (e.g. a tokenizer without an EOS token)."""


def format_query(query: str, instruction: str | None, template: str = QUERY_TEMPLATE) -> str:
    return template.format(instruction=instruction, q=query) if instruction is not None else query


def format_passage(title: str, text: str, template: str = PASSAGE_TEMPLATE) -> str:
    """The passage template; an empty title leaves no double space."""
    return _SPACES.sub(" ", template.format(title=title or "", text=text or "")).strip()


def tokenize_batch(tokenizer, texts, max_length: int, eos_id: int, pad_id: int):
    """Token ids with EOS appended (text truncated to max_length - 1 first), right-padded.

    Returns input_ids, attention_mask: (b, l) int64, l = the longest row.
    """
    rows = [ids[: max_length - 1] + [eos_id]
            for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    return pad_right(rows, pad_id)


def special_ids(tokenizer, model=None) -> tuple[int, int]:
    """(eos, pad) ids: the tokenizer's, else the model config's."""
    eos = tokenizer.eos_token_id
    if eos is None and model is not None:
        eos = model.config.eos_token_id
    if eos is None:
        raise EncodingError("the tokenizer has no EOS token (last-token pooling appends one)")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return int(eos), int(pad)


@torch.no_grad()
def encode(model, tokenizer, texts, batch_size: int = 32, instruction: str | None = None,
           max_length: int = 256, progress: bool = False, query_template: str = QUERY_TEMPLATE,
           convert_to_numpy: bool = True):
    """Embed texts: (n, dim) float32, rows L2-normalised, in the order of `texts`.

    With `instruction`, each text is a query and gets QUERY_TEMPLATE; otherwise texts are used as
    given (format passages with `format_passage`, or call `encode_corpus`). Texts are batched by
    token length (longest first) so padding is small; the model runs in eval mode.
    """
    from tqdm.auto import tqdm

    texts = [format_query(t, instruction, query_template) for t in texts]
    eos_id, pad_id = special_ids(tokenizer, model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    order = np.argsort(-np.asarray(lengths), kind="stable")
    out = torch.empty((len(texts), _output_dim(model)), dtype=torch.float32)
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="encode", unit="batch", disable=not progress):
        index = order[start:start + batch_size]
        ids, mask = tokenize_batch(tokenizer, [texts[i] for i in index], max_length, eos_id, pad_id)
        out[torch.from_numpy(index)] = model(input_ids=ids.to(device),
                                             attention_mask=mask.to(device)).embeddings.float().cpu()
    model.train(was_training)
    return out.numpy() if convert_to_numpy else out


def _output_dim(model) -> int:
    return model.config.embedding_dim or model.config.d_model
