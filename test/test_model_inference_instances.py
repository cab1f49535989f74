"""Inference path of the instance module: training-only heads are skipped, the outputs are not changed.

The masks (M_mask + mask logits) and the per-layer deep-supervision heads (`aux`) are read only
by the stage-1 instance loss; `predict` and stage-2 training must not compute them, stage-1
training must, and the last layer's outputs must be bit-identical either way.
"""
from __future__ import annotations

import pytest
import torch

from model_batches import make_policy, synthetic_batch, tiny
from vla3d_ros import types
from vla3d_ros.model.config import InstanceConfig
from vla3d_ros.model.instances import InstanceModule

_FINAL_FIELDS = ("tokens", "refs", "logits", "boxes", "visible", "gates", "uv")


@pytest.mark.parametrize("num_layers", [1, 3])
def test_skipping_aux_heads_leaves_the_last_layer_bit_identical(num_layers):
    torch.manual_seed(0)
    module = InstanceModule(24, num_probes=8, num_layers=num_layers, num_heads=2, num_levels=2, num_points=2,
                            max_instances=4, patch_size=8).double()
    batch = synthetic_batch(tiny(), 2)
    K, T = batch[types.INTRINSICS].double(), batch[types.T_BASE_CAM].double()
    memory = torch.randn(2, 2 * 4 * 4, 24, dtype=torch.float64)
    full = module(memory, (4, 4), 2, K, T, (32, 32))
    lean = module(memory, (4, 4), 2, K, T, (32, 32), with_masks=False, with_aux=False)
    assert len(full.aux) == num_layers - 1 and lean.aux == [] and lean.mask_logits is None
    for field in _FINAL_FIELDS:
        assert torch.equal(getattr(full, field), getattr(lean, field)), field
    # the skipped aux heads are real predictions (not copies of the last layer's) when there are any
    if num_layers > 1:
        assert not torch.equal(full.aux[-1].logits, full.logits)


def _record_instance_calls(policy):
    calls = []
    forward = policy.instances.forward

    def recording(*args, **kwargs):
        out = forward(*args, **kwargs)
        calls.append((kwargs, len(out.aux), out.mask_logits is not None))
        return out
    policy.instances.forward = recording        # instance attribute: only this policy object
    return calls


def test_only_stage_one_training_computes_masks_and_aux_heads():
    config = tiny(instances=InstanceConfig(num_probes=8, layers=2, num_heads=2, num_levels=2, num_points=2,
                                           max_instances=4))
    batch = synthetic_batch(config, 2)
    policy = make_policy(config, batch, stage=1)
    calls = _record_instance_calls(policy)
    assert "instance" in policy(batch)
    policy.start_stage(2)
    policy(batch)
    policy.eval()
    with torch.inference_mode():
        policy.predict({k: v for k, v in batch.items() if k != types.COMPLETION_POINTS})
    flags = [(kwargs["with_masks"], kwargs["with_aux"]) for kwargs, _, _ in calls]
    assert flags == [(True, True), (False, False), (False, False)]       # stage 1, stage 2, predict
    assert [(aux, masks) for _, aux, masks in calls] == [(1, True), (0, False), (0, False)]
