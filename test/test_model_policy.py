"""The assembled policy: overfitting with and without 3D, stages, plug-in by appending, numpy infer."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model_batches import HashingSentenceModel, make_policy, synthetic_batch, synthetic_observation, tiny, train_steps
from vla3d_ros import types
from vla3d_ros.model.base import InstructionEncoder
from vla3d_ros.model.config import ActionHeadConfig, InstanceConfig
from vla3d_ros.model.normalization import NormalizationStats
from vla3d_ros.model.policy import NumpyPolicy, VLA3DPolicy


@pytest.fixture
def instruction_encoder():
    return InstructionEncoder(model=HashingSentenceModel())


def test_2d_baseline_overfits_four_samples():
    config = tiny().with_3d(False)
    batch = synthetic_batch(config, 4)
    policy = make_policy(config, batch, stage=1)
    history = train_steps(policy, batch, 200, stop_below=0.1)
    assert history[-1] < history[0] / 10, history[::10]


def test_3d_policy_overfits_four_samples_through_the_3d_tokens():
    config = tiny()
    batch = synthetic_batch(config, 4)
    policy = make_policy(config, batch, stage=2)
    context, pad, _ = policy._context(batch)
    n = config.num_views * config.grid_hw[0] * config.grid_hw[1]
    points = batch[types.COMPLETION_POINTS].shape[1]
    assert context.shape[1] == 1 + n + 1 + config.instances.max_instances + points
    history = train_steps(policy, batch, 200, stop_below=0.1)
    assert history[-1] < history[0] / 10, history[::10]


def test_stage_two_trains_only_the_predictor_aggregation_and_expert():
    config = tiny()
    batch = synthetic_batch(config, 2)
    policy = make_policy(config, batch, stage=2)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    losses = policy(batch)
    assert {"action", "predictor", "loss"} <= set(losses) and not any(k.startswith("instance") for k in losses)
    assert float(losses["loss"].detach()) == pytest.approx(float((losses["action"] + losses["predictor"]).detach()), rel=1e-6)
    train_steps(policy, batch, 2)
    after = policy.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    frozen_prefixes = ("vision.", "trunk.", "fusion.", "instances.", "completion.teacher.")
    assert not {k for k in moved if k.startswith(frozen_prefixes)}
    for prefix in ("completion.blocks.", "aggregation.", "action_head.", "proprio."):
        assert any(k.startswith(prefix) for k in moved), prefix
    # the EMA teacher is a copy of the frozen fusion: its update keeps it equal
    policy.update_teacher(step=1, total_steps=10)
    for name, value in policy.fusion.state_dict().items():
        assert torch.equal(policy.completion.teacher.state_dict()[name], value)


def test_stage_one_trains_fusion_and_instances_with_their_losses():
    config = tiny()
    batch = synthetic_batch(config, 2)
    policy = make_policy(config, batch, stage=1)
    losses = policy(batch)
    terms = {"instance/focal", "instance/l1", "instance/giou", "instance/mask_bce", "instance/mask_dice",
             "instance/centroid"}
    assert terms <= set(losses) and "predictor" not in losses
    expected = losses["action"] + sum(losses[t] for t in terms)
    assert float(losses["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    losses["loss"].backward()
    for module in (policy.vision, policy.fusion, policy.instances, policy.action_head):
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())
    for module in (policy.completion, policy.aggregation):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())
    with pytest.raises(ValueError, match="3"):
        policy.set_stage(3)
    policy.freeze_stage_one()
    assert not any(p.requires_grad for m in (policy.vision, policy.trunk, policy.fusion, policy.instances)
                   for p in m.parameters())
    assert all(p.requires_grad for p in policy.action_head.parameters())


def test_instance_loss_scale_weights_the_instance_loss_in_the_stage_one_total():
    config = tiny()
    config = config.replace(instances=dataclasses.replace(config.instances, loss_scale=0.25))
    batch = synthetic_batch(config, 2)
    policy = make_policy(config, batch, stage=1)
    losses = policy(batch)
    expected = losses["action"] + 0.25 * losses["instance"]
    assert float(losses["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    with pytest.raises(ValueError, match="-1"):
        InstanceConfig(loss_scale=-1.0).validate()


def test_3d_modules_only_append_tokens_to_the_2d_baseline():
    """The 2D baseline's parameters are exactly the base part of the 3D policy (plug-and-play)."""
    torch.manual_seed(0)
    full = VLA3DPolicy(tiny()).state_dict()
    baseline = VLA3DPolicy(tiny().with_3d(False)).state_dict()
    assert set(baseline) < set(full)
    assert all(full[k].shape == v.shape for k, v in baseline.items())
    extra_prefixes = {k.split(".")[0] for k in set(full) - set(baseline)}
    assert extra_prefixes == {"fusion", "instances", "completion", "aggregation"}


def test_flow_matching_head_trains_with_the_3d_modules_attached():
    """Swapping the head touches nothing else: same policy, same batch, same training loop."""
    config = tiny(action_head=ActionHeadConfig(kind="flow_matching", layers=1, num_heads=2, flow_steps=4))
    batch = synthetic_batch(config, 2)
    policy = make_policy(config, batch, stage=2)

    def chunk_error() -> float:
        with torch.no_grad():
            chunk = policy.predict(batch, generator=torch.Generator().manual_seed(0)).actions
        keep = ~batch[types.ACTION_IS_PAD]
        return float((chunk - batch[types.ACTION]).abs()[keep].mean())

    before = chunk_error()
    for _ in range(6):                       # up to 120 steps, checked every 20
        train_steps(policy, batch, 20)
        if chunk_error() < 0.6 * before:
            break
    assert chunk_error() < 0.6 * before


def _runner_policy(threshold: float = 0.3) -> tuple[VLA3DPolicy, NormalizationStats]:
    torch.manual_seed(0)
    config = tiny(instances=dataclasses.replace(InstanceConfig(num_probes=8, layers=1, num_heads=2, num_levels=2,
                                                               num_points=2, max_instances=4),
                                                score_threshold=threshold))
    stats = NormalizationStats(np.zeros(15), np.ones(15), np.arange(7) * 0.1, np.full(7, 0.02))
    return VLA3DPolicy(config, stats), stats


def test_runner_infers_numpy_chunks_and_3d_beliefs(instruction_encoder):
    policy, stats = _runner_policy(threshold=1e-4)     # every selected probe counts as an instance
    runner = NumpyPolicy(policy, instruction_encoder=instruction_encoder)
    obs = synthetic_observation(policy.config)
    result = runner.infer(obs)
    again = runner.infer(obs)
    assert instruction_encoder.calls == 1                           # the instruction is embedded once
    np.testing.assert_array_equal(result["actions"], again["actions"])
    actions = result["actions"]
    assert actions.shape == (policy.config.horizon, 7) and actions.dtype == np.float32
    instances = result["instances"]
    assert isinstance(instances, types.Instances) and len(instances.ids) == 4
    assert instances.centroids.shape == (4, 3) and bool(np.all((instances.scores > 0) & (instances.scores < 1)))
    completed = result["completed_points"]
    assert completed.ndim == 2 and completed.shape[1] == 3 and len(completed) >= 2
    assert set(instances.completed_instance.tolist()) <= set(instances.ids.tolist())
    assert set(result["timing_ms"]) >= {"preprocess", "vision", "trunk", "fusion", "instances", "completion",
                                        "aggregation", "action_head", "total"}
    # actions come out unnormalised with the checkpoint's statistics
    with torch.inference_mode():
        raw = policy.predict(runner.batch_from_observation(obs)).actions[0].numpy()
    np.testing.assert_allclose(actions, raw, rtol=0, atol=0)
    policy.normalizer.action_std.fill_(1.0)
    policy.normalizer.action_mean.zero_()
    np.testing.assert_allclose(runner.infer(obs)["actions"] * stats.action_std + stats.action_mean, actions,
                               atol=1e-5)


def test_runner_handles_other_image_sizes_and_rgb_only_cameras(instruction_encoder):
    policy, _ = _runner_policy()
    runner = NumpyPolicy(policy, instruction_encoder=instruction_encoder)
    config = policy.config
    big = synthetic_observation(dataclasses.replace(config, image_size=(64, 64)))
    small = synthetic_observation(config)
    assert big.rgb.shape[1:3] == (64, 64)
    out_big = runner.infer(big)
    assert out_big["actions"].shape == (config.horizon, 7) and np.all(np.isfinite(out_big["actions"]))
    # intrinsics are rescaled with the image: the resized scene projects like the native one
    batch_big = runner.batch_from_observation(big)
    np.testing.assert_allclose(batch_big[types.INTRINSICS][0].numpy(), small.intrinsics, atol=1e-5)
    rgb_only = dataclasses.replace(small, depth=None)
    assert np.all(np.isfinite(runner.infer(rgb_only)["actions"]))
    with pytest.raises(ValueError, match="expects 2 cameras"):
        runner.infer(synthetic_observation(dataclasses.replace(config, num_views=3)))


@pytest.mark.parametrize("switches", [
    {"instances": True},                                               # "w/o Spatial Fusion" (3DVLA Table 4a)
    {"instances": True, "fusion": True},                               # model A: instances
    {"instances": True, "fusion": True, "completion": True},           # model B: + predictor
    {"instances": True, "fusion": True, "completion": True, "routing": True, "ee_relative_pe": True},  # C
])
def test_ablation_configs_train_in_both_stages(switches):
    base = tiny().with_3d(False)
    config = base.replace(
        fusion=dataclasses.replace(base.fusion, enabled=switches.get("fusion", False)),
        instances=dataclasses.replace(base.instances, enabled=switches.get("instances", False)),
        completion=dataclasses.replace(base.completion, enabled=switches.get("completion", False)),
        aggregation=dataclasses.replace(base.aggregation, routing=switches.get("routing", False),
                                        ee_relative_pe=switches.get("ee_relative_pe", False)))
    batch = synthetic_batch(config, 2)
    policy = make_policy(config, batch, stage=1)
    assert "instance" in policy(batch)
    policy.start_stage(2)
    losses = policy(batch)
    assert ("predictor" in losses) == switches.get("completion", False)
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    with torch.no_grad():
        assert policy.predict({k: v for k, v in batch.items() if k != types.COMPLETION_POINTS}).actions.shape[1:] == (
            config.horizon, config.action_dim)
