"""Pretraining on a weighted mixture of prepared corpora (data.mixture), as BioMamba v3 mixes PubMed
with 10% C4 and 10% Wikipedia.

    data:
      mixture:
        - {name: pubmed, dir: data/pubmed, weight: 0.8}
        - {name: c4, dir: data/c4, weight: 0.1}
        - {name: wiki, dir: data/wiki, weight: 0.1}

The schedule. Step s (1-based) takes G = micro_batch x grad_accum x world_size windows. Source i's
target after step s is s x G x w_i / sum(w); the step's G windows go one at a time to the source
whose count is furthest below its target (ties: the earlier source), so after every step each
source's count is within one window of its target: the tokens per source follow the weights within
one batch. The counts after step s depend only on s (they are computed forward from step 0, and kept),
so the batch of a step is a pure function of the step: exact resume, and every rank (DDP, FSDP)
computes the same global batch and takes its own slice, as WindowBatches does for one source.
Each source keeps its own window order and epoch count: its k-th window is WindowBatches' k-th of
that source (a permutation per (seed, epoch) of its own windows).
All sources must share one tokenizer (the manifests' tokenizer sha256): a model has one vocabulary.
"""
import threading

import numpy as np
import torch

from biomamba.train.windows import WindowBatches


def step_picks(before: np.ndarray, weights: np.ndarray, step: int, global_batch: int) -> list[int]:
    """The source of each of step `step`'s windows, given each source's count after step - 1."""
    target = step * global_batch * weights / weights.sum()
    counts = before.astype(np.float64).copy()
    picks = []
    for _ in range(global_batch):
        i = int(np.argmax(target - counts))  # argmax: the first of equal deficits
        picks.append(i)
        counts[i] += 1
    return picks


class MixtureBatches:
    """WindowBatches' interface (for_step, global_batch, epoch_of) over several token streams."""

    def __init__(self, sources, weights, seq_len, micro_batch, grad_accum=1, world_size=1, rank=0, seed=0):
        self.sources = [WindowBatches(tokens, seq_len, micro_batch, grad_accum, world_size, rank, seed)
                        for tokens in sources]
        self.weights = np.asarray(weights, dtype=np.float64)
        self.micro_batch, self.grad_accum, self.world_size, self.rank = micro_batch, grad_accum, world_size, rank
        self._counts = [np.zeros(len(sources), dtype=np.int64)]  # _counts[s]: windows per source after step s
        self._lock = threading.Lock()  # the loop prefetches step s+1 in a thread

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    def counts_after(self, step: int) -> np.ndarray:
        """Windows drawn from each source by the end of `step` (0: none)."""
        with self._lock:
            while len(self._counts) <= step:
                s = len(self._counts)
                picks = step_picks(self._counts[-1], self.weights, s, self.global_batch)
                self._counts.append(self._counts[-1] + np.bincount(picks, minlength=len(self.sources)))
            return self._counts[step].copy()

    def global_windows(self, step: int) -> list[tuple[int, int]]:
        """(source, window index in that source) of each of the step's global windows, in batch order."""
        before = self.counts_after(step - 1)
        nth = before.copy()
        out = []
        for i in step_picks(before, self.weights, step, self.global_batch):
            out.append((i, self.sources[i]._window_index(int(nth[i]))))
            nth[i] += 1
        return out

    def for_step(self, step: int) -> list[torch.Tensor]:
        """This rank's micro-batches for `step`: grad_accum x (B, seq_len), its slice of the global batch."""
        per_rank = self.micro_batch * self.grad_accum
        mine = self.global_windows(step)[self.rank * per_rank:(self.rank + 1) * per_rank]
        windows = [self.sources[i].window(index) for i, index in mine]
        return [torch.stack(windows[k:k + self.micro_batch]) for k in range(0, per_rank, self.micro_batch)]

    def epochs_after(self, step: int) -> np.ndarray:
        return self.counts_after(step) / np.array([s.n_windows for s in self.sources])

    def epoch_of(self, step: int) -> float:
        """Epochs of the first source (the one-source meaning of WindowBatches.epoch_of)."""
        return float(self.epochs_after(step)[0])
