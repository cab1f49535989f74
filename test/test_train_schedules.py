"""Warm-up + cosine learning rate: exact values at known steps."""
from __future__ import annotations

import math

import pytest

from vla3d_ros.train.schedules import OptimizationSchedule, warmup_cosine_lr


def test_warmup_is_linear_and_reaches_base_lr():
    lrs = [warmup_cosine_lr(s, base_lr=1e-3, warmup_steps=4, total_steps=12) for s in range(4)]
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3], abs=1e-15)


def test_cosine_decay_exact_values():
    kwargs = dict(base_lr=1.0, warmup_steps=2, total_steps=10)
    assert warmup_cosine_lr(2, **kwargs) == 1.0                      # progress 0
    assert warmup_cosine_lr(6, **kwargs) == pytest.approx(0.5)       # progress 1/2
    assert warmup_cosine_lr(4, **kwargs) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert warmup_cosine_lr(10, **kwargs) == pytest.approx(0.0, abs=1e-15)
    assert warmup_cosine_lr(50, **kwargs) == pytest.approx(0.0, abs=1e-15)   # clamped past the end
    floor = dict(kwargs, min_ratio=0.1)
    assert warmup_cosine_lr(6, **floor) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine_lr(10, **floor) == pytest.approx(0.1)


def test_schedule_is_monotone_after_warmup():
    lrs = [warmup_cosine_lr(s, base_lr=3e-4, warmup_steps=5, total_steps=40) for s in range(41)]
    assert all(a <= b for a, b in zip(lrs[:5], lrs[1:6]))
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(base_lr=0.0, warmup_steps=1, total_steps=2), "base_lr"),
    (dict(base_lr=1.0, warmup_steps=5, total_steps=2), "warmup_steps=5"),
    (dict(base_lr=1.0, warmup_steps=1, total_steps=2, min_lr_ratio=1.5), "min_ratio"),
])
def test_bad_schedule_values_are_quoted(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        OptimizationSchedule(**kwargs)
