"""Fast-path probes of `vla3d_ros.bench.fastpath`: they count what the model really does."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from vla3d_ros.bench.fastpath import _rope_cost, _rope_probe
from vla3d_ros.bench.model_latency import build_runner, deploy_observation
from vla3d_ros.model.config import preset
from vla3d_ros.model.geometry_ops import Rope3D, RopeAttention


def _config():
    config = preset("tiny")
    return config.replace(fusion=dataclasses.replace(config.fusion, layers=2),
                          instances=dataclasses.replace(config.instances, layers=2),
                          completion=dataclasses.replace(config.completion, layers=2))


def test_rope_probe_counts_one_table_per_point_set_and_two_applies_per_attention():
    torch.set_num_threads(1)
    config = _config()
    runner = build_runner(config, seed=0)
    obs = deploy_observation(config, (48, 64))
    expected = runner.infer(obs)["actions"]
    attentions = []
    hooks = [m.register_forward_hook(lambda module, args, out: attentions.append(module))
             for m in runner.policy.modules() if isinstance(m, RopeAttention)]
    try:
        with torch.inference_mode(), _rope_probe(runner.policy) as calls:
            actions = runner.infer(obs)["actions"]
    finally:
        for hook in hooks:
            hook.remove()
    np.testing.assert_array_equal(actions, expected)            # measuring changes nothing
    # q and k of every attention are rotated once each
    assert len(calls["apply"]) == 2 * len(attentions) > 0
    # tables: one for the fusion stack, one per instance layer (its probes move), two for the
    # completion stack (query points, context points)
    assert len(calls["table"]) == 1 + config.instances.layers + 2
    tokens = config.num_views * config.grid_hw[0] * config.grid_hw[1]
    assert {rows for _, rows in calls["table"]} >= {tokens, config.instances.num_probes}
    ropes = [m for m in runner.policy.modules() if isinstance(m, Rope3D)]
    assert ropes and not any({"table", "apply"} & vars(rope).keys() for rope in ropes)   # methods restored


def test_rope_cost_reports_sharing_per_inference():
    torch.set_num_threads(1)
    config = _config()
    runner = build_runner(config, seed=0)
    cost = _rope_cost(runner, deploy_observation(config, (48, 64)), runs=2)
    assert cost["table_calls_per_inference"] == 1 + config.instances.layers + 2
    assert cost["applies_per_table"] > 1.0
    assert cost["table_ms_per_inference"] > 0 and cost["apply_ms_per_inference"] > 0
