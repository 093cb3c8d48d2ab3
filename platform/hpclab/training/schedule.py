"""Learning-rate scaling for large global batches and its warm-up schedule (pure functions, no torch)."""

from __future__ import annotations

import math


def peak_lr(base_lr: float, global_batch: int, reference_batch: int = 256, scaling: str = "linear") -> float:
    """``base_lr`` (tuned for ``reference_batch`` images) scaled to ``global_batch``.

    linear: × global/reference (Goyal et al., "Accurate, Large Minibatch SGD", 2017);
    sqrt: × sqrt(global/reference); none: unchanged.
    """
    ratio = global_batch / reference_batch
    if scaling == "linear":
        return base_lr * ratio
    if scaling == "sqrt":
        return base_lr * math.sqrt(ratio)
    if scaling == "none":
        return base_lr
    raise ValueError(f"unknown lr scaling {scaling!r}")


def lr_at(step: int, total_steps: int, peak: float, warmup_steps: int = 0, schedule: str = "cosine") -> float:
    """The learning rate of (0-based) ``step`` of ``total_steps``.

    Warm-up: linear from peak/warmup_steps to peak over the first ``warmup_steps`` steps. Then
    cosine (to 0 at the end), step (× 0.1 at 50 % and again at 75 % of the steps after warm-up)
    or constant.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return peak * (0.1 ** ((progress >= 0.5) + (progress >= 0.75)))
    if schedule == "constant":
        return peak
    raise ValueError(f"unknown schedule {schedule!r}")
