"""Properties of the torch geometry ops (METHOD §1.1, §1.3, §2.3, §3.3)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vla3d_ros.geometry import intrinsics_from_fovy
from vla3d_ros.geometry import project_points as project_points_numpy
from vla3d_ros.geometry.rotations import euler_xyz_to_matrix
from vla3d_ros.model.geometry_ops import (
    FourierPositionEncoder,
    Rope3D,
    RopeAttention,
    RopeTransformerBlock,
    depth_bin_values,
    fourier_features,
    patch_points,
    project_points,
    ray_bin_points,
)

DTYPE = torch.float64


def _camera(height=32, width=48, euler=(2.2, 0.1, -0.3), position=(0.6, -0.2, 0.9)):
    """One K (1,1,3,3) and T_base_cam (1,1,4,4) looking roughly down at the workspace."""
    K = torch.tensor(intrinsics_from_fovy(60.0, width, height), dtype=DTYPE)
    T = torch.eye(4, dtype=DTYPE)
    T[:3, :3] = torch.tensor(euler_xyz_to_matrix(*euler), dtype=DTYPE)
    T[:3, 3] = torch.tensor(position, dtype=DTYPE)
    return K[None, None], T[None, None]


def _plane_depth(K, T, height, width, normal, offset):
    """Exact z-depth image of the plane n.x = offset seen by camera (K, T)."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=DTYPE), torch.arange(width, dtype=DTYPE), indexing="ij"
    )
    pixels = torch.stack([u, v, torch.ones_like(u)], -1)
    rays = pixels @ torch.linalg.inv(K[0, 0]).T @ T[0, 0, :3, :3].T  # base-frame, z_cam = 1
    origin = T[0, 0, :3, 3]
    depth = (offset - normal @ origin) / (rays @ normal)
    return depth[None, None]


def test_median_depth_unprojection_lies_on_plane_and_flags_invalid_patches():
    height, width, patch = 32, 48, 8
    K, T = _camera(height, width, euler=(math.pi - 0.3, 0.1, -0.3))  # looking down, tilted
    normal = torch.tensor([0.0, 0.0, 1.0], dtype=DTYPE)  # the table z = 0.02
    depth = _plane_depth(K, T, height, width, normal, 0.02)
    assert bool(torch.all(depth > 0))
    depth[0, 0, :8, :8] = torch.nan  # patch (0, 0): no valid pixel
    depth[0, 0, :8, 8:16] = 0.0  # patch (0, 1): zeros are invalid
    depth[0, 0, 8:16, :8] = torch.inf  # patch (1, 0): inf is invalid
    depth[0, 0, 8, 8:16] = torch.nan  # patch (1, 1): partly invalid (first and last rows,
    depth[0, 0, 15, 8:16] = torch.nan  # symmetric about the centre), still valid

    points, valid = patch_points(depth, K, T, patch)
    assert points.shape == (1, 1, 4, 6, 3) and valid.shape == (1, 1, 4, 6)
    expected_invalid = {(0, 0), (0, 1), (1, 0)}
    for i in range(4):
        for j in range(6):
            assert bool(valid[0, 0, i, j]) == ((i, j) not in expected_invalid)
    assert torch.isfinite(points).all()
    assert torch.all(points[0, 0][~valid[0, 0]] == 0)
    on_plane = points[0, 0][valid[0, 0]] @ normal
    torch.testing.assert_close(on_plane, torch.full_like(on_plane, 0.02), atol=1e-3, rtol=0)


def test_median_ignores_outliers_in_patch():
    """A few flying pixels do not move the patch point; the exact median depth is used."""
    K, T = _camera(8, 8)
    depth = torch.full((1, 1, 8, 8), 1.0, dtype=DTYPE)
    depth[0, 0, 0, :3] = 50.0  # 3 of 64 pixels are outliers
    points, valid = patch_points(depth, K, T, 8)
    assert bool(valid.all())
    camera_point = T[0, 0, :3, :3].T @ (points[0, 0, 0, 0] - T[0, 0, :3, 3])
    assert camera_point[2].item() == pytest.approx(1.0, abs=1e-12)
    # The patch centre (3.5, 3.5) is the principal point of an 8x8 image: on the optical axis.
    torch.testing.assert_close(camera_point[:2], torch.zeros(2, dtype=DTYPE), atol=1e-12, rtol=0)


def test_projection_of_unprojected_pixels_returns_those_pixels_and_matches_numpy():
    height, width, patch = 32, 48, 8
    K, T = _camera(height, width)
    depth = torch.rand(1, 1, height, width, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    depth = 0.5 + depth
    points, valid = patch_points(depth, K, T, patch)
    assert bool(valid.all())
    uv, in_front, in_image = project_points(points.reshape(1, -1, 3), K, T, (height, width))
    assert bool(in_front.all()) and bool(in_image.all())
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(6), indexing="ij")
    centres = torch.stack([cols * patch + (patch - 1) / 2, rows * patch + (patch - 1) / 2], -1)
    expected = (centres.reshape(-1, 2).to(DTYPE) + 0.5) / torch.tensor([width, height], dtype=DTYPE)
    torch.testing.assert_close(uv[0, :, 0], expected, atol=1e-9, rtol=0)
    # Same pixels as the numpy projection of vla3d_ros.geometry.
    uv_np, _, _ = project_points_numpy(points.reshape(-1, 3).numpy(), K[0, 0].numpy(), T[0, 0].numpy())
    np.testing.assert_allclose((uv_np + 0.5) / [width, height], uv[0, :, 0].numpy(), atol=1e-9)


def test_projection_flags_and_depth_clamp():
    K, T = _camera(32, 48, euler=(0.0, 0.0, 0.0), position=(0.0, 0.0, 0.0))  # camera = base frame
    points = torch.tensor(
        [[[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [5.0, 0.0, 1.0], [0.001, 0.0, 0.01], [0, 0, 0.0]]],
        dtype=DTYPE,
    )
    uv, in_front, in_image = project_points(points, K, T, (32, 48), eps=0.05)
    assert in_front[0, :, 0].tolist() == [True, False, True, False, False]
    assert in_image[0, :, 0].tolist() == [True, False, False, False, False]
    assert torch.isfinite(uv).all()
    with pytest.raises(ValueError, match=r"\(0, 48\)"):
        project_points(points, K, T, (0, 48))
    fx, cx = K[0, 0, 0, 0].item(), K[0, 0, 0, 2].item()
    # [u', v', z] = K p, u = u' / max(z, eps): a point at z=0.01 is divided by eps=0.05.
    assert uv[0, 3, 0, 0].item() == pytest.approx((fx * 0.001 + cx * 0.01) / 0.05 / 48 + 0.5 / 48)


def test_ray_bins_lie_on_patch_rays_at_their_depths():
    height, width, patch = 32, 48, 8
    K, T = _camera(height, width)
    bins = depth_bin_values(5, 0.2, 2.0, dtype=DTYPE)
    assert bins[0].item() == pytest.approx(0.2) and bins[-1].item() == pytest.approx(2.0)
    assert bool(torch.all(torch.diff(torch.diff(bins)) > 0))  # linear-increasing spacing
    ray_points = ray_bin_points(K, T, (height, width), patch, bins)
    assert ray_points.shape == (1, 1, 4, 6, 5, 3)
    # Every bin point projects to its patch centre, at the bin's depth.
    uv, in_front, _ = project_points(ray_points.reshape(1, -1, 3), K, T, (height, width))
    assert bool(in_front.all())
    for d in range(5):
        constant = torch.full((1, 1, height, width), bins[d].item(), dtype=DTYPE)
        plane_points, _ = patch_points(constant, K, T, patch)
        torch.testing.assert_close(ray_points[..., d, :], plane_points, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="-1.0"):
        ray_bin_points(K, T, (height, width), patch, [0.5, -1.0])
    with pytest.raises(ValueError, match="patch_size=7"):
        patch_points(torch.ones(1, 1, height, width, dtype=DTYPE), K, T, 7)


def _rope_attention():
    torch.manual_seed(0)
    return RopeAttention(dim=36, num_heads=2).to(DTYPE)  # head dim 18: 3 axes x 6 channels


def test_rope_attention_logits_invariant_to_common_translation():
    attention = _rope_attention()
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(2, 5, 36, dtype=DTYPE, generator=generator)
    key = torch.randn(2, 7, 36, dtype=DTYPE, generator=generator)
    q_points = torch.rand(2, 5, 3, dtype=DTYPE, generator=generator)
    k_points = torch.rand(2, 7, 3, dtype=DTYPE, generator=generator)
    shift = torch.tensor([0.37, -1.21, 0.05], dtype=DTYPE)
    with torch.no_grad():
        logits = attention.attention_logits(query, key, q_points, k_points)
        shifted = attention.attention_logits(query, key, q_points + shift, k_points + shift)
        torch.testing.assert_close(shifted, logits, atol=1e-6, rtol=0)
        out = attention(query, key, q_points, k_points)
        torch.testing.assert_close(attention(query, key, q_points + shift, k_points + shift), out, atol=1e-6, rtol=0)
        # Moving ONE key point by 2 cm changes that key's logits (centimetres matter: s = 100).
        moved = k_points.clone()
        moved[:, 3] += torch.tensor([0.02, 0.0, 0.0], dtype=DTYPE)
        changed = attention.attention_logits(query, key, q_points, moved)
    difference = (changed - logits).abs()
    assert difference[..., 3].min() > 1e-6
    torch.testing.assert_close(changed[..., [0, 1, 2, 4, 5, 6]], logits[..., [0, 1, 2, 4, 5, 6]], atol=1e-12, rtol=0)


def test_rope_preserves_norms_and_leaves_extra_channels():
    rope = Rope3D(head_dim=20)  # d_a = 6: channels 18, 19 are not rotated
    assert rope.axis_dim == 6
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 11, 20, dtype=DTYPE, generator=generator)
    points = torch.randn(2, 11, 3, dtype=DTYPE, generator=generator)
    rotated = rope.rotate(x, points)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-12, rtol=0)
    torch.testing.assert_close(rotated[..., 18:], x[..., 18:], atol=0, rtol=0)
    torch.testing.assert_close(rope.rotate(x, torch.zeros_like(points)), x, atol=0, rtol=0)
    # Pair i of axis a rotates by exactly s * p_a * omega_i with omega_i = base^(-2i/d_a).
    e = torch.zeros(1, 1, 1, 20, dtype=DTYPE)
    e[..., 6 + 2] = 1.0  # axis y, pair 1
    p = torch.tensor([[[0.3, 0.01, -0.2]]], dtype=DTYPE)
    angle = 100.0 * 0.01 * 100.0 ** (-2.0 * 1 / 6)
    out = rope.rotate(e, p)[0, 0, 0]
    assert out[8].item() == pytest.approx(math.cos(angle), abs=1e-7)
    assert out[9].item() == pytest.approx(math.sin(angle), abs=1e-7)
    with pytest.raises(ValueError, match="head_dim must be >= 6"):
        Rope3D(head_dim=5)


def test_fully_padded_attention_rows_are_zero_not_nan():
    attention = _rope_attention()
    query = torch.randn(2, 4, 36, dtype=DTYPE)
    points = torch.rand(2, 4, 3, dtype=DTYPE)
    padding = torch.tensor([[True] * 4, [False, True, True, True]])
    out = attention(query, query, points, points, padding)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], attention.out_proj.bias.expand(4, -1), atol=0, rtol=0)
    # Sample 1 attends only to key 0, whatever the padded keys hold.
    keys_changed = query.clone()
    keys_changed[1, 1:] = torch.randn(3, 36, dtype=DTYPE)
    torch.testing.assert_close(
        attention(query, keys_changed, points, points, padding)[1], out[1], atol=1e-12, rtol=0
    )


def test_attention_equals_the_softmax_of_its_logits_and_shared_tables_change_nothing():
    attention = _rope_attention()
    generator = torch.Generator().manual_seed(4)
    query = torch.randn(2, 5, 36, dtype=DTYPE, generator=generator)
    key = torch.randn(2, 7, 36, dtype=DTYPE, generator=generator)
    q_points = torch.rand(2, 5, 3, dtype=DTYPE, generator=generator)
    k_points = torch.rand(2, 7, 3, dtype=DTYPE, generator=generator)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, 2:5] = True
    with torch.no_grad():
        logits = attention.attention_logits(query, key, q_points, k_points).masked_fill(padding[:, None, None], -math.inf)
        values = attention.v_proj(key).unflatten(-1, (2, 18)).transpose(1, 2)
        expected = attention.out_proj((torch.softmax(logits, -1) @ values).transpose(1, 2).flatten(-2))
        out = attention(query, key, q_points, k_points, padding)
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
        tables = attention.rope.table(q_points, DTYPE), attention.rope.table(k_points, DTYPE)
        torch.testing.assert_close(attention(query, key, *tables, padding), out, atol=0, rtol=0)
    with pytest.raises(ValueError, match="head_dim, scale, base"):
        attention(query, key, Rope3D(18, scale=10.0).table(q_points), k_points)


def test_transformer_block_is_translation_equivariant_in_points():
    torch.manual_seed(3)
    block = RopeTransformerBlock(dim=24, num_heads=2).to(DTYPE)
    x = torch.randn(1, 6, 24, dtype=DTYPE)
    points = torch.rand(1, 6, 3, dtype=DTYPE)
    with torch.no_grad():
        torch.testing.assert_close(block(x, points + 0.5), block(x, points), atol=1e-9, rtol=0)
        assert not torch.allclose(block(x, points * 2.0), block(x, points), atol=1e-6)


def test_fourier_features_values_and_encoder_shape():
    p = torch.tensor([[0.25, -0.5, 1.0]], dtype=DTYPE)
    features = fourier_features(p, 2)
    assert features.shape == (1, 12)
    expected_sin = [math.sin(math.pi * 2**k * x) for k in range(2) for x in (0.25, -0.5, 1.0)]
    expected_cos = [math.cos(math.pi * 2**k * x) for k in range(2) for x in (0.25, -0.5, 1.0)]
    torch.testing.assert_close(features[0], torch.tensor(expected_sin + expected_cos, dtype=DTYPE))
    encoder = FourierPositionEncoder(num_frequencies=4, out_dim=16)
    assert encoder(torch.rand(2, 5, 3)).shape == (2, 5, 16)
    with pytest.raises(ValueError, match=r"\(2, 5, 2\)"):
        encoder(torch.rand(2, 5, 2))


def test_geometry_stays_full_precision_under_autocast_and_half_inputs():
    K, T = _camera(32, 48)
    K, T = K.float(), T.float()
    points = torch.tensor([[[0.1, 0.05, 0.02], [0.3, -0.2, 0.1]]])
    reference = project_points(points, K, T, (32, 48))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = project_points(points, K, T, (32, 48))
    assert autocast[0].dtype == torch.float32
    torch.testing.assert_close(autocast[0], reference[0], atol=0, rtol=0)
    # RoPE angles reach ~90 rad here; bf16 coordinates alone would shift them by ~0.2 rad.
    rope = Rope3D(head_dim=12)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(1, 1, 4, 12, generator=generator).bfloat16()
    far = torch.tensor([[[0.9, -0.93, 0.91], [0.87, 0.95, -0.9], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]])
    rotated = rope.rotate(x, far)
    assert rotated.dtype == torch.bfloat16
    torch.testing.assert_close(rotated.float(), rope.rotate(x.float(), far), atol=2e-2, rtol=0)
