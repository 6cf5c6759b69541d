"""A fixed subset of a stream, whatever its order: the `cap` items whose (seed, key) hash is lowest.

Memory is bounded by the cap, not by the stream, so a subset of PubMed's 25M abstracts (or of a task
file's 10^8 rows) costs what the subset costs; the same key is chosen in every run, by every model,
whatever else the stream holds around it.
"""
import heapq

from biomamba.data.splits import unit_hash


class HashSample:
    """add(key, item) over a stream; items() -> the kept items in stream order (all when cap is None)."""

    def __init__(self, cap: int | None, seed: int = 0):
        self.cap, self.seed, self.kept, self.seen = cap, seed, [], 0

    def add(self, key, item):
        self.seen += 1
        if self.cap is None:
            self.kept.append((0.0, self.seen, item))
            return
        entry = (-unit_hash(f"{self.seed}:{key}"), self.seen, item)  # a max-heap of the lowest hashes
        if len(self.kept) < self.cap:
            heapq.heappush(self.kept, entry)
        elif entry[:2] > self.kept[0][:2]:
            heapq.heapreplace(self.kept, entry)

    def items(self) -> list:
        return [item for _, _, item in sorted(self.kept, key=lambda entry: entry[1])]
