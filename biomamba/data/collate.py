"""Right padding: the one collator every batch of variable-length token lists goes through."""
import torch


def pad_right(rows, pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (ids, attention_mask), both (b, width) int64; width defaults to the longest row.
    Pad positions hold pad_id in ids and 0 in the mask; models never see or score them."""
    width = max(len(row) for row in rows) if width is None else width
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask
