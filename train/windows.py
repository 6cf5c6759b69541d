"""Deterministic batches of fixed-length windows from a packed token stream.

The train stream is cut into non-overlapping windows of seq_len tokens. Each epoch visits every
window once, in a permutation drawn from (seed, epoch). Optimizer step s (1-based) takes the
global windows [(s-1)*G, s*G) of that endless sequence, G = micro_batch * grad_accum * world_size;
rank r takes its own micro-batches of them. So the batch of a step depends only on the seed and
the step (the data position is the step), and 1 process or N processes see the same global batch.
"""
import heapq

import numpy as np
import torch

from biomamba.data.splits import unit_hash


class WindowBatches:
    def __init__(self, tokens, seq_len, micro_batch, grad_accum=1, world_size=1, rank=0, seed=0):
        self.tokens, self.seq_len = tokens, seq_len
        self.n_windows = len(tokens) // seq_len
        if self.n_windows == 0:
            raise ValueError(f"the token stream ({len(tokens)} tokens) is shorter than one window "
                             f"of data.seq_len={seq_len}")
        self.micro_batch, self.grad_accum = micro_batch, grad_accum
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self._perm_epoch, self._perm = None, None

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    def _window_index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n_windows)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            self._perm_epoch = epoch
        return int(self._perm[offset])

    def window(self, index: int) -> torch.Tensor:
        start = index * self.seq_len
        return torch.from_numpy(np.asarray(self.tokens[start:start + self.seq_len], dtype=np.int64))

    def for_step(self, step: int) -> list[torch.Tensor]:
        """This rank's micro-batches for optimizer step `step` (1-based): grad_accum x (B, seq_len)."""
        first = (step - 1) * self.global_batch
        per_rank = self.micro_batch * self.grad_accum
        mine = range(first + self.rank * per_rank, first + (self.rank + 1) * per_rank)
        windows = [self.window(self._window_index(p)) for p in mine]
        return [torch.stack(windows[i:i + self.micro_batch]) for i in range(0, per_rank, self.micro_batch)]

    def epoch_of(self, step: int) -> float:
        return step * self.global_batch / self.n_windows


def val_windows(val_tokens, seq_len: int, eval_batches: int, micro_batch: int, world_size: int = 1) -> torch.Tensor:
    """The validation set: eval_batches x micro_batch x world_size windows spread over the whole val
    split (the windows whose index hashes lowest, read in split order), not its first, oldest
    documents. Counted in global micro-batches, so 1 process at batch 2B and 2 processes at batch B
    score the same windows and report the same val loss."""
    total = len(val_tokens) // seq_len
    wanted = min(total, eval_batches * micro_batch * world_size)
    if wanted == 0:
        raise ValueError(f"the val split ({len(val_tokens)} tokens) is shorter than data.seq_len={seq_len}")
    chosen = sorted(heapq.nsmallest(wanted, range(total), key=lambda i: unit_hash(f"val-window-{i}")))
    rows = [np.asarray(val_tokens[i * seq_len:(i + 1) * seq_len], dtype=np.int64) for i in chosen]
    return torch.from_numpy(np.stack(rows))
