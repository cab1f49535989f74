"""Learning-rate and EMA-momentum schedules of the training recipe (METHOD.md §6, §3.5).

Both are pure functions of the optimisation step, so a resumed run recomputes them from the
step counter alone: there is no scheduler object whose state could drift from the optimiser's.

- `warmup_cosine_lr`: linear warm-up to the base rate, then a half cosine down to
  `min_ratio * base_lr` at `total_steps` (paper: 1200 warm-up steps of 5k; our presets scale it).
  Warm-up is `(step + 1) / warmup_steps` so the very first update already moves the weights.
- `ema_momentum`: the predictor's EMA teacher momentum, 0.996 -> 1 along a half cosine
  (BYOL/I-JEPA style, METHOD §3.5 (ours)), so the teacher freezes as the student converges.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def warmup_cosine_lr(step: int, *, base_lr: float, warmup_steps: int, total_steps: int,
                     min_ratio: float = 0.0) -> float:
    """Learning rate to use for update number `step` (0-based).

    lr = base_lr * (step + 1) / warmup_steps                                  for step < warmup_steps
    lr = base_lr * (min_ratio + (1 - min_ratio) * (1 + cos(pi * progress)) / 2) afterwards,
    progress = (step - warmup_steps) / (total_steps - warmup_steps), clamped to [0, 1].
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not base_lr > 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    if warmup_steps < 0 or total_steps <= 0 or warmup_steps > total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps <= total_steps and total_steps > 0, got warmup_steps="
            f"{warmup_steps}, total_steps={total_steps}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    progress = 1.0 if decay_steps == 0 else min(1.0, (step - warmup_steps) / decay_steps)
    return base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def ema_momentum(step: int, *, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Teacher momentum m at `step`: teacher <- m * teacher + (1 - m) * student.

    m = end - (end - start) * (1 + cos(pi * step / total_steps)) / 2, step clamped to total_steps.
    """
    if step < 0 or total_steps <= 0:
        raise ValueError(f"need step >= 0 and total_steps > 0, got step={step}, total_steps={total_steps}")
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"need 0 <= start <= end <= 1, got start={start}, end={end}")
    progress = min(1.0, step / total_steps)
    return end - (end - start) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class OptimizationSchedule:
    """The schedules of one training stage, evaluated per step."""

    base_lr: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.0
    ema_start: float = 0.996
    ema_end: float = 1.0

    def __post_init__(self) -> None:
        # Validate eagerly so a bad CLI value fails before any data is loaded.
        warmup_cosine_lr(0, base_lr=self.base_lr, warmup_steps=self.warmup_steps,
                         total_steps=self.total_steps, min_ratio=self.min_lr_ratio)
        ema_momentum(0, total_steps=self.total_steps, start=self.ema_start, end=self.ema_end)

    def lr(self, step: int) -> float:
        return warmup_cosine_lr(step, base_lr=self.base_lr, warmup_steps=self.warmup_steps,
                                total_steps=self.total_steps, min_ratio=self.min_lr_ratio)

    def momentum(self, step: int) -> float:
        return ema_momentum(step, total_steps=self.total_steps, start=self.ema_start, end=self.ema_end)
