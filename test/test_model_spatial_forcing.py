"""Spatial Forcing (METHOD §7): depth-geometry teacher known answers, masked alignment loss."""
from __future__ import annotations

import pytest
import torch

from model_batches import make_policy, synthetic_batch, tiny
from vla3d_ros import types
from vla3d_ros.model.config import SpatialForcingConfig
from vla3d_ros.model.spatial_forcing import DepthGeometryTeacher, SpatialForcingAligner


def _top_down_batch(height=1.0, size=16):
    """One camera 1 m above the plane z = 0 looking straight down (OpenCV: z_cam = -z_base)."""
    K = torch.tensor([[20.0, 0, (size - 1) / 2], [0, 20.0, (size - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = torch.tensor([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]], dtype=torch.float64)
    T[2, 3] = height
    return {types.DEPTH: torch.full((1, 1, size, size), height, dtype=torch.float64),
            types.INTRINSICS: K[None, None], types.T_BASE_CAM: T[None, None]}


def test_flat_table_gives_upward_normals_and_the_patch_mean_points():
    teacher = DepthGeometryTeacher((-1, -1, -1), (1, 1, 1), num_frequencies=2)
    batch = _top_down_batch()
    features, valid = teacher(batch, patch_size=4)
    assert features.shape == (1, 16, teacher.feature_dim) and bool(valid.all())
    normals = features[..., -3:]
    assert torch.allclose(normals, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(normals), atol=1e-9)
    # the first patch covers pixels 0..3: mean u = 1.5 -> x = (1.5 - 7.5) / 20 at 1 m; y flips sign
    x, y = (1.5 - 7.5) / 20.0, -(1.5 - 7.5) / 20.0
    point = torch.tensor([x, y, 0.0], dtype=torch.float64)   # normalised box [-1, 1]^3 is the identity here
    expected = torch.cat([torch.sin(torch.pi * torch.stack([point, 2 * point]).flatten()),
                          torch.cos(torch.pi * torch.stack([point, 2 * point]).flatten())])
    assert torch.allclose(features[0, 0, :-3], expected, atol=1e-9)


def test_patches_without_depth_are_masked():
    teacher = DepthGeometryTeacher((-1, -1, -1), (1, 1, 1))
    batch = _top_down_batch()
    batch[types.DEPTH][0, 0, :4, :4] = float("nan")          # patch 0 has no depth at all
    # a pixel has geometry when it and its right and lower neighbours have depth (normals)
    batch[types.DEPTH][0, 0, 4:8, 4:8] = 0.0                 # patch 5: a 1x4 strip -> no normals
    batch[types.DEPTH][0, 0, 4, 4:8] = 1.0
    batch[types.DEPTH][0, 0, 8:12, 4:8] = 0.0                # patch 9: a 3x3 block -> 4 of 16 = 25 %
    batch[types.DEPTH][0, 0, 8:11, 4:7] = 1.0
    features, valid = teacher(batch, patch_size=4)
    assert not bool(valid[0, 0]) and not bool(valid[0, 5]) and bool(valid[0, 9])
    assert bool(valid[0, 15]) and bool(torch.isfinite(features).all())


def test_alignment_loss_is_minus_one_when_aligned_and_ignores_invalid_patches():
    torch.manual_seed(0)
    aligner = SpatialForcingAligner(8, 5).requires_grad_(False)
    hidden, valid = torch.randn(2, 6, 8), torch.tensor([[True] * 4 + [False] * 2] * 2)
    teacher = aligner.project(hidden).detach() * 3.0           # same directions
    assert float(aligner(hidden, teacher, valid)) == pytest.approx(-1.0, abs=1e-6)
    scrambled = hidden.clone()
    scrambled[:, 4:] = torch.randn(2, 2, 8)
    assert float(aligner(scrambled, teacher, valid)) == pytest.approx(-1.0, abs=1e-6)
    assert float(aligner(hidden, -teacher, valid)) == pytest.approx(1.0, abs=1e-6)
    assert float(aligner(hidden, teacher, torch.zeros_like(valid))) == 0.0


def test_policy_adds_the_alignment_only_in_stage_one_and_learns_it():
    config = tiny(spatial_forcing=SpatialForcingConfig(weight=0.5, layer=1, fourier_frequencies=2)).with_3d(False)
    batch = synthetic_batch(config, 2)
    policy = make_policy(config, batch, stage=1)
    optimiser = torch.optim.AdamW(policy.trainable_parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        losses = policy(batch)
        optimiser.zero_grad()
        losses["loss"].backward()
        optimiser.step()
        history.append(float(losses["align"].detach()))
    losses = {k: v.detach() for k, v in losses.items()}
    assert float(losses["loss"]) == pytest.approx(float(losses["action"]) + 0.5 * float(losses["align"]), rel=1e-5)
    assert history[-1] < history[0] - 0.2, history[::5]
    policy.set_stage(2)
    assert "align" not in policy(batch)
    # nothing 3D at inference: the policy acts without a depth image
    no_depth = {k: v for k, v in batch.items() if k != types.DEPTH}
    with torch.no_grad():
        assert policy.predict(no_depth).actions.shape == (2, config.horizon, config.action_dim)
