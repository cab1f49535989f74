"""Load-independent cost of a call: aten operations dispatched and FLOPs (matmul, conv, attention).

On a shared CPU, times move with the machine's load; these counts do not. Together they say
whether a model is compute-bound (FLOPs / time near the matmul peak) or dispatch-bound (many small
ops: a few microseconds each whatever their size), which is where the 3D add-on's time goes.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from vla3d_ros.model.precision import autocast


class _OpCounter(TorchDispatchMode):
    """Counts every aten operation dispatched inside it (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops_and_flops(call: Callable[[], object]) -> dict[str, int]:
    """{"aten_ops", "flops"} of one `call()`.

    FLOPs are counted by torch's FlopCounterMode, whose module tracking needs autograd: `call`
    must not run under `torch.inference_mode` / `no_grad` itself (eval-mode modules are fine).
    """
    flops, ops = FlopCounterMode(display=False), _OpCounter()
    with flops, ops:
        call()
    return {"aten_ops": ops.count, "flops": int(flops.get_total_flops())}


def training_step_counts(policy, batch: dict, stage: int) -> dict[str, int]:
    """`count_ops_and_flops` of one training step's forward + backward of `stage` (grads dropped)."""
    policy.start_stage(stage)
    policy.train()
    result = count_ops_and_flops(
        lambda: policy(batch, generator=torch.Generator().manual_seed(0))["loss"].backward())
    policy.zero_grad(set_to_none=True)
    return result


def inference_counts(runner, obs) -> dict[str, int]:
    """`count_ops_and_flops` of the runner's policy forward on `obs` (input conversion excluded),
    at the runner's precision."""
    with torch.inference_mode():
        batch = runner.batch_from_observation(obs)
    batch = {key: value.clone() for key, value in batch.items()}     # plain tensors, usable with autograd
    with autocast(runner.precision, runner.device):
        return count_ops_and_flops(lambda: runner.policy.predict(batch, generator=runner.generator))
