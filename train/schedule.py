"""Learning-rate schedules as a factor of optim.lr, by the number of optimizer steps taken (i)."""
import math


def lr_factor(i: int, optim, max_steps: int) -> float:
    """Linear warmup over warmup_steps, then cosine / warmup-stable-decay / constant."""
    warmup = optim.warmup_steps
    if i < warmup:
        return (i + 1) / warmup
    floor = optim.min_lr_ratio
    if optim.schedule == "constant":
        return 1.0
    if optim.schedule == "cosine":
        progress = min(1.0, (i - warmup) / max(1, max_steps - 1 - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    # wsd: stable at the peak, then a linear decay over the last decay_fraction of the steps
    decay_start = max_steps * (1 - optim.decay_fraction)
    if i < decay_start:
        return 1.0
    progress = min(1.0, (i - decay_start) / max(1.0, max_steps - 1 - decay_start))
    return 1.0 - (1 - floor) * progress
