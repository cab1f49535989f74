"""Properties of the Object-Centric 3D Instance Module (METHOD §2.1-2.7, §2.11)."""
from __future__ import annotations

import pytest
import torch

from vla3d_ros.geometry import intrinsics_from_fovy
from vla3d_ros.geometry.rotations import euler_xyz_to_matrix
from vla3d_ros.model.geometry_ops import patch_points, project_points
from vla3d_ros.model.instances import (
    FeaturePyramid,
    InstanceModule,
    MultiScaleDeformableAttention,
    ViewGate,
)

DTYPE = torch.float64
IMAGE_HW = (64, 64)
PATCH = 16
GRID = (IMAGE_HW[0] // PATCH, IMAGE_HW[1] // PATCH)
LOW, HIGH = (-0.3, -0.3, 0.0), (0.3, 0.3, 0.3)


def _rig(batch=1, dtype=DTYPE):
    """Three cameras: 0 and 1 look at the workspace from two sides, 2 looks away from it."""
    K = torch.tensor(intrinsics_from_fovy(70.0, IMAGE_HW[1], IMAGE_HW[0]), dtype=dtype)
    poses = [
        ((-2.4, 0.0, 0.0), (0.0, -0.8, 0.7)),
        ((-2.4, 0.0, 1.57), (0.8, 0.0, 0.7)),
        ((2.4, 0.0, 0.0), (0.0, -0.8, 0.7)),
    ]
    T = torch.eye(4, dtype=dtype).repeat(len(poses), 1, 1)
    for v, (euler, position) in enumerate(poses):
        T[v, :3, :3] = torch.tensor(euler_xyz_to_matrix(*euler), dtype=dtype)
        T[v, :3, 3] = torch.tensor(position, dtype=dtype)
    return K.expand(batch, len(poses), 3, 3).contiguous(), T.expand(batch, -1, -1, -1).contiguous()


def _module(**kwargs):
    torch.manual_seed(0)
    settings = dict(dim=24, num_probes=8, num_layers=2, num_heads=2, num_levels=3, num_points=2,
                    workspace_low=LOW, workspace_high=HIGH, max_instances=4, patch_size=PATCH)
    settings.update(kwargs)
    return InstanceModule(**settings).to(DTYPE)


def test_rig_sees_the_workspace_from_views_0_and_1_only():
    K, T = _rig()
    centre = torch.tensor([[[0.0, 0.0, 0.1]]], dtype=DTYPE)
    _, in_front, in_image = project_points(centre, K, T, IMAGE_HW)
    assert in_image[0, 0].tolist() == [True, True, False]
    assert in_front[0, 0].tolist() == [True, True, False]


def test_deformable_attention_with_zero_offsets_returns_feature_at_projected_pixel():
    torch.manual_seed(0)
    dim, stride = 8, 8
    attention = MultiScaleDeformableAttention(dim, num_heads=2, num_levels=1, num_points=3).to(DTYPE)
    with torch.no_grad():  # bypass the learned layers: zero offsets, uniform weights, identities
        attention.sampling_offsets.weight.zero_()
        attention.sampling_offsets.bias.zero_()
        attention.value_proj.weight.copy_(torch.eye(dim))
        attention.value_proj.bias.zero_()
        attention.output_proj.weight.copy_(torch.eye(dim))
        attention.output_proj.bias.zero_()
    K, T = _rig()
    feature_map = torch.randn(3, dim, IMAGE_HW[0] // stride, IMAGE_HW[1] // stride, dtype=DTYPE)
    # The 3D point seen at the centre of feature cell (row 2, col 5) of view 0 at depth 0.9 m.
    depth = torch.full((1, 3, IMAGE_HW[0], IMAGE_HW[1]), 0.9, dtype=DTYPE)
    cell_points, _ = patch_points(depth, K, T, stride)  # one point per stride-8 cell centre
    point = cell_points[:, 0, 2, 5][:, None]  # (1, 1, 3)
    uv, _, in_image = project_points(point, K, T, IMAGE_HW)
    assert bool(in_image[0, 0, 0])
    query = torch.randn(1, 1, dim, dtype=DTYPE)
    out = attention(query, uv, [feature_map])  # (1, 1, 3, dim)
    torch.testing.assert_close(out[0, 0, 0], feature_map[0, :, 2, 5], atol=1e-12, rtol=0)
    # With the directional offsets of the default init, the sample moves off that pixel.
    fresh = MultiScaleDeformableAttention(dim, num_heads=2, num_levels=1, num_points=3).to(DTYPE)
    fresh.load_state_dict({**attention.state_dict(), "sampling_offsets.bias": fresh.sampling_offsets.bias})
    assert not torch.allclose(fresh(query, uv, [feature_map])[0, 0, 0], feature_map[0, :, 2, 5])


def test_gating_zeroes_views_behind_or_outside_and_is_safe_when_none_valid():
    torch.manual_seed(1)
    gate = ViewGate(dim=6).to(DTYPE)
    K, T = _rig(batch=1)
    points = torch.tensor([[[0.0, 0.0, 0.1], [0.1, -0.1, 0.05], [30.0, 30.0, -5.0]]], dtype=DTYPE)
    _, in_front, visible = project_points(points, K, T, IMAGE_HW)
    assert visible[0, :2].tolist() == [[True, True, False]] * 2 and not bool(visible[0, 2].any())
    state = torch.randn(1, 3, 6, dtype=DTYPE, requires_grad=True)
    view_features = (1e3 * torch.randn(1, 3, 3, 6, dtype=DTYPE)).requires_grad_(True)
    gates, update = gate(state, view_features, visible)
    assert torch.all(gates[~visible] == 0.0)  # exactly zero, not just small
    torch.testing.assert_close(gates[0, :2].sum(-1), torch.ones(2, dtype=DTYPE))
    expected = gates[0, 0, 0] * view_features[0, 0, 0] + gates[0, 0, 1] * view_features[0, 0, 1]
    torch.testing.assert_close(update[0, 0], expected)
    assert torch.all(update[0, 2] == 0.0)  # no valid view: zero update
    update.sum().backward()
    assert torch.isfinite(state.grad).all() and torch.isfinite(view_features.grad).all()
    assert torch.isfinite(gate.log_temperature.grad)
    # The temperature sharpens the softmax: tau -> small makes the gate one-hot on the best view.
    with torch.no_grad():
        gate.log_temperature.fill_(-20.0)
    sharp, _ = gate(state, view_features, visible)
    assert sorted(sharp[0, 0].tolist()) == pytest.approx([0.0, 0.0, 1.0])


def test_forward_outputs_are_consistent_and_gates_follow_visibility():
    module = _module()
    K, T = _rig(batch=2)
    memory = torch.randn(2, 3 * GRID[0] * GRID[1], 24, dtype=DTYPE)
    out = module(memory, GRID, 3, K, T, IMAGE_HW)
    assert out.mask_logits.shape == (2, 8, 3, IMAGE_HW[0] // 4, IMAGE_HW[1] // 4)
    assert len(out.aux) == 1 and out.aux[0].boxes.shape == (2, 8, 3, 4)
    uv, _, visible = project_points(out.refs.detach(), K, T, IMAGE_HW)
    assert torch.equal(out.visible, visible) and torch.equal(out.uv, uv)
    assert not bool(out.visible[..., 2].any())  # view 2 looks away from the workspace
    assert bool(out.visible[..., :2].any())
    assert torch.all(out.gates[~out.visible] == 0.0)
    assert torch.all((out.boxes >= 0) & (out.boxes <= 1))
    for tensor in (out.tokens, out.refs, out.logits, out.boxes, out.mask_logits):
        assert torch.isfinite(tensor).all()
    # without masks (stage 2, inference) every other output is exactly the same
    maskless = module(memory, GRID, 3, K, T, IMAGE_HW, with_masks=False)
    assert maskless.mask_logits is None
    for name in ("tokens", "refs", "logits", "boxes", "visible", "gates", "uv"):
        assert torch.equal(getattr(maskless, name), getattr(out, name)), name


def test_box_centre_is_anchored_at_the_projected_reference_point():
    module = _module()
    with torch.no_grad():
        module.box_head[-1].weight.zero_()
        module.box_head[-1].bias.zero_()
    K, T = _rig()
    out = module(torch.randn(1, 3 * GRID[0] * GRID[1], 24, dtype=DTYPE), GRID, 3, K, T, IMAGE_HW)
    visible = out.visible[0]
    torch.testing.assert_close(out.boxes[0][visible][:, :2], out.uv[0][visible], atol=1e-12, rtol=0)
    torch.testing.assert_close(out.boxes[0][..., 2:], torch.full_like(out.boxes[0][..., 2:], 0.5))


def test_refinement_moves_each_reference_at_most_lambda_per_layer_even_with_huge_outputs():
    module = _module(num_layers=3, max_step=0.05)
    with torch.no_grad():
        for layer in module.layers:
            layer.refine[-1].weight.normal_(0.0, 1e6)
            layer.refine[-1].bias.normal_(0.0, 1e6)
    K, T = _rig()
    out = module(torch.randn(1, 3 * GRID[0] * GRID[1], 24, dtype=DTYPE), GRID, 3, K, T, IMAGE_HW)
    trajectory = [module.probe_points[None]] + [layer.refs for layer in out.aux] + [out.refs]
    steps = torch.stack([(b - a).abs().amax() for a, b in zip(trajectory, trajectory[1:])])
    assert bool(torch.all(steps <= 0.05 + 1e-12)), steps
    assert bool(torch.all(steps > 0.049))  # saturated tanh: the bound is reached, not exceeded


def test_stop_gradient_between_layers():
    module = _module(num_layers=2)
    with torch.no_grad():
        for layer in module.layers:
            layer.refine[-1].weight.normal_(0.0, 0.1)
    K, T = _rig()
    out = module(torch.randn(1, 3 * GRID[0] * GRID[1], 24, dtype=DTYPE), GRID, 3, K, T, IMAGE_HW)
    (grad_final,) = torch.autograd.grad(out.refs.sum(), module.probe_points, allow_unused=True, retain_graph=True)
    assert grad_final is None or torch.all(grad_final == 0)  # final refs do not reach back
    (grad_first,) = torch.autograd.grad(out.aux[0].refs.sum(), module.probe_points)
    assert torch.all(grad_first == 1.0)  # layer 0 keeps the learnable initial r_j in the graph


def test_select_returns_top_scoring_probes_with_uncertainty_and_valid_mask():
    module = _module()
    K, T = _rig(batch=2)
    out = module(torch.randn(2, 3 * GRID[0] * GRID[1], 24, dtype=DTYPE), GRID, 3, K, T, IMAGE_HW)
    out.logits = torch.tensor([[3.0, -1.0, 0.5, 2.0, -3.0, 0.0, 1.0, -2.0]] * 2, dtype=DTYPE)
    out.logits[1] = -5.0  # nothing above threshold in sample 1
    selected = module.select(out, threshold=0.5)
    assert selected.indices[0].tolist() == [0, 3, 6, 2]
    assert selected.valid[0].tolist() == [True, True, True, True] and not bool(selected.valid[1].any())
    torch.testing.assert_close(selected.uncertainty[0], 1 - torch.sigmoid(out.logits[0, [0, 3, 6, 2]]))
    torch.testing.assert_close(selected.tokens[0, 1], out.tokens[0, 3])
    torch.testing.assert_close(selected.refs[0, 2], out.refs[0, 6])
    assert torch.all(selected.tokens[1] == 0)
    with pytest.raises(ValueError, match="1.5"):
        module.select(out, threshold=1.5)


def test_pyramid_levels_follow_the_patch_size_and_bad_sizes_are_rejected():
    pyramid = FeaturePyramid(dim=4, patch_size=16, num_levels=3)
    levels, mask_map = pyramid(torch.randn(2, 4, 4, 6))  # 64 x 96 image
    assert [tuple(level.shape[-2:]) for level in levels] == [(8, 12), (4, 6), (2, 3)]
    assert tuple(mask_map.shape[-2:]) == (16, 24)
    with pytest.raises(ValueError, match="stride 32"):
        pyramid(torch.randn(1, 4, 3, 3))  # 48 x 48 image: not a multiple of 32
    with pytest.raises(ValueError, match="3/8|8/3"):
        FeaturePyramid(dim=4, patch_size=3)
    with pytest.raises(ValueError, match="max_instances"):
        _module(num_probes=4, max_instances=8)
    module = _module()
    K, T = _rig()
    with pytest.raises(ValueError, match="patch_size=16"):
        module(torch.randn(1, 3 * 16, 24, dtype=DTYPE), GRID, 3, K, T, (60, 64))
