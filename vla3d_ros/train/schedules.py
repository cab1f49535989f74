"""Learning-rate schedule of the training recipe (METHOD.md §6).

A pure function of the optimisation step, so a resumed run recomputes it from the step counter
alone: there is no scheduler object whose state could drift from the optimiser's.

`warmup_cosine_lr`: linear warm-up to the base rate, then a half cosine down to
`min_ratio * base_lr` at `total_steps` (paper: 1200 warm-up steps of 5k; we keep that 24 % share).
Warm-up is `(step + 1) / warmup_steps` so the very first update already moves the weights.

The EMA teacher's momentum schedule (0.996 -> 1, METHOD §3.5) is the model's own
(`model.completion.ema_momentum`, applied by `VLA3DPolicy.update_teacher(step, total_steps)`);
the trainer calls it after every optimiser step.
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


@dataclass(frozen=True)
class OptimizationSchedule:
    """The learning-rate schedule of one training stage, evaluated per step."""

    base_lr: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        # Validate eagerly so a bad CLI value fails before any data is loaded.
        warmup_cosine_lr(0, base_lr=self.base_lr, warmup_steps=self.warmup_steps,
                         total_steps=self.total_steps, min_ratio=self.min_lr_ratio)

    def lr(self, step: int) -> float:
        return warmup_cosine_lr(step, base_lr=self.base_lr, warmup_steps=self.warmup_steps,
                                total_steps=self.total_steps, min_ratio=self.min_lr_ratio)
