"""Properties of Multi-View Spatial Fusion (METHOD §1)."""
from __future__ import annotations

import pytest
import torch

from vla3d_ros.geometry import intrinsics_from_fovy
from vla3d_ros.geometry.rotations import euler_xyz_to_matrix
from vla3d_ros.model.fusion import MultiViewSpatialFusion
from vla3d_ros.model.geometry_ops import depth_bin_values, patch_points, ray_bin_points

LOW, HIGH = (-0.5, -0.5, 0.0), (0.5, 0.5, 0.6)
B, V, C, H_IMG, W_IMG, PATCH = 2, 2, 24, 16, 24, 8
H, W = H_IMG // PATCH, W_IMG // PATCH


def _cameras(dtype=torch.float32):
    K = torch.tensor(intrinsics_from_fovy(60.0, W_IMG, H_IMG), dtype=dtype).expand(B, V, 3, 3)
    T = torch.eye(4, dtype=dtype).repeat(B, V, 1, 1)
    T[:, 0, :3, :3] = torch.tensor(euler_xyz_to_matrix(2.5, 0.0, 0.0), dtype=dtype)
    T[:, 1, :3, :3] = torch.tensor(euler_xyz_to_matrix(2.5, 0.0, 1.5), dtype=dtype)
    T[:, :, :3, 3] = torch.tensor([[0.0, -0.8, 0.7], [0.8, 0.0, 0.7]], dtype=dtype)
    return K.contiguous(), T


def _fusion(depth=2, **kwargs):
    torch.manual_seed(0)
    return MultiViewSpatialFusion(
        dim=C, depth=depth, num_heads=2, workspace_low=LOW, workspace_high=HIGH, **kwargs
    )


def _inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(B, V, C, H, W, generator=generator)
    K, T = _cameras()
    depth = 0.6 + 0.5 * torch.rand(B, V, H_IMG, W_IMG, generator=generator)
    points, valid = patch_points(depth, K, T, PATCH)
    return features, points, valid, K, T


def test_token_order_is_view_row_column_and_position_is_added_per_token():
    fusion = _fusion(depth=0)  # no attention: memory = LayerNorm(F + MLP(norm(P))) per token
    features, points, valid, _, _ = _inputs()
    out = fusion(features, points, valid)
    assert out.memory.shape == (B, V * H * W, C) and out.points.shape == (B, V * H * W, 3)
    assert bool(out.point_valid.all())
    v, i, j = 1, 1, 2
    n = (v * H + i) * W + j
    expected = fusion.norm(features[:, v, :, i, j] + fusion.position_mlp(fusion.normalise(points[:, v, i, j])))
    torch.testing.assert_close(out.memory[:, n], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.points[:, n], points[:, v, i, j], atol=0, rtol=0)


def test_workspace_normalisation_maps_box_to_unit_cube_and_clamps_far_points():
    fusion = _fusion(depth=0)
    corners = torch.tensor([LOW, HIGH, [0.0, 0.0, 0.3], [9.0, -9.0, 0.3]])
    torch.testing.assert_close(
        fusion.normalise(corners),
        torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [2.0, -2.0, 0.0]]),
    )
    with pytest.raises(ValueError, match="0.6"):
        MultiViewSpatialFusion(dim=C, depth=1, num_heads=2, workspace_low=(0, 0, 0.6), workspace_high=HIGH)


def test_attention_mixes_views_jointly():
    fusion = _fusion(depth=1)
    features, points, valid, _, _ = _inputs()
    before = fusion(features, points, valid).memory
    changed = features.clone()
    changed[:, 1] = torch.randn(B, C, H, W)  # only view 1 changes
    after = fusion(changed, points, valid).memory
    assert (after[:, : H * W] - before[:, : H * W]).abs().max() > 1e-4  # view 0 tokens see view 1


def test_rgb_only_patches_use_mean_of_depth_bins():
    fusion = _fusion(depth=0, depth_bins=4, depth_range=(0.2, 1.6))
    features, points, valid, K, T = _inputs()
    valid = valid.clone()
    valid[:, 1] = False  # view 1 is an RGB-only camera
    valid[0, 0, 0, 0] = False  # and one depth hole in view 0
    garbage = points.clone()
    garbage[~valid] = 123.0  # invalid points must be ignored entirely
    out = fusion(features, garbage, valid, intrinsics=K, T_base_cam=T, image_hw=(H_IMG, W_IMG))
    assert torch.isfinite(out.memory).all()
    bins = ray_bin_points(K, T, (H_IMG, W_IMG), PATCH, depth_bin_values(4, 0.2, 1.6))  # (B,V,h,w,D,3)
    v, i, j = 1, 0, 1
    n = (v * H + i) * W + j
    torch.testing.assert_close(out.points[:, n], bins[:, v, i, j].mean(dim=1), atol=1e-6, rtol=0)
    encodings = fusion.position_mlp(fusion.normalise(bins[:, v, i, j])).mean(dim=1)
    expected = fusion.norm(features[:, v, :, i, j] + encodings)
    torch.testing.assert_close(out.memory[:, n], expected, atol=1e-6, rtol=0)
    assert not bool(out.point_valid[0, 0]) and bool(out.point_valid[1, 0])
    # Valid tokens are untouched by the fallback.
    reference = fusion(features, points, torch.ones_like(valid))
    torch.testing.assert_close(out.memory[1, 1:H * W], reference.memory[1, 1:H * W], atol=0, rtol=0)


def test_missing_depth_without_cameras_is_a_clear_error_and_gradients_stay_finite():
    fusion = _fusion(depth=1)
    features, points, valid, K, T = _inputs()
    no_depth = torch.zeros_like(valid)
    with pytest.raises(ValueError, match="depth-bin fallback"):
        fusion(features, points, no_depth)
    features.requires_grad_(True)
    out = fusion(features, torch.zeros_like(points), no_depth, intrinsics=K, T_base_cam=T, image_hw=(H_IMG, W_IMG))
    out.memory.square().mean().backward()
    assert torch.isfinite(features.grad).all()
    for parameter in fusion.parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()


def test_rejects_mismatched_shapes_quoting_them():
    fusion = _fusion(depth=0)
    features, points, valid, _, _ = _inputs()
    with pytest.raises(ValueError, match=r"\(2, 2, 2, 3, 3\)"):
        fusion(features, points[:, :, :, :2], valid[:, :, :, :2])
    with pytest.raises(ValueError, match="C=24"):
        fusion(torch.randn(B, V, 8, H, W), points, valid)


def test_half_precision_features_keep_float32_token_points():
    fusion = _fusion(depth=1).bfloat16()
    features, points, valid, K, T = _inputs()
    valid = valid.clone()
    valid[:, 1] = False
    out = fusion(features.bfloat16(), points, valid, intrinsics=K, T_base_cam=T, image_hw=(H_IMG, W_IMG))
    assert out.memory.dtype == torch.bfloat16 and out.points.dtype == torch.float32
    torch.testing.assert_close(out.points[:, : H * W], points[:, 0].reshape(B, -1, 3), atol=0, rtol=0)
    assert torch.isfinite(out.memory.float()).all()
