"""Properties of global 3D Hungarian matching and the instance loss (METHOD §2.9-2.10)."""
from __future__ import annotations

import pytest
import torch

from vla3d_ros.geometry import intrinsics_from_fovy
from vla3d_ros.geometry.rotations import euler_xyz_to_matrix
from vla3d_ros.model.geometry_ops import project_points
from vla3d_ros.model.instances import InstanceModule, InstanceOutput
from vla3d_ros.model.matching import (
    LOSS_TERMS,
    InstanceLossWeights,
    generalized_box_iou,
    hungarian_match,
    instance_loss,
    point_sample,
)
from vla3d_ros.types import (
    TARGET_BOX_VALID,
    TARGET_BOXES,
    TARGET_CENTROIDS,
    TARGET_MASKS,
    TARGET_VALID,
)


def _targets(boxes, box_valid, centroids, valid, mask_hw=(8, 8)):
    batch, num_targets, views = box_valid.shape
    return {
        TARGET_BOXES: boxes,
        TARGET_BOX_VALID: box_valid,
        TARGET_MASKS: torch.zeros(batch, num_targets, views, *mask_hw, dtype=torch.bool),
        TARGET_CENTROIDS: centroids,
        TARGET_VALID: valid,
    }


def _output(logits, boxes, refs, mask_hw=(8, 8)):
    batch, probes, views, _ = boxes.shape
    return InstanceOutput(
        tokens=torch.zeros(batch, probes, 4),
        refs=refs,
        logits=logits,
        boxes=boxes,
        mask_logits=torch.zeros(batch, probes, views, *mask_hw),
        visible=torch.ones(batch, probes, views, dtype=torch.bool),
        aux=[],
        gates=torch.zeros(batch, probes, views),
        uv=torch.zeros(batch, probes, views, 2),
    )


def test_hungarian_matching_recovers_a_known_permutation():
    generator = torch.Generator().manual_seed(0)
    probes, views, num_targets = 7, 2, 5
    target_boxes = 0.2 + 0.6 * torch.rand(1, num_targets + 1, views, 4, generator=generator)
    centroids = torch.rand(1, num_targets + 1, 3, generator=generator)
    box_valid = torch.ones(1, num_targets + 1, views, dtype=torch.bool)
    box_valid[0, 2] = False  # target 2 is seen by no camera: matched by 3D distance alone
    box_valid[0, 3, 1] = False  # target 3 only in view 0; its view-1 box is garbage
    target_boxes[0, 3, 1] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    valid = torch.ones(1, num_targets + 1, dtype=torch.bool)
    valid[0, -1] = False  # padding row, a perfect copy of probe 0 must not attract it
    permutation = torch.tensor([4, 0, 6, 2, 5])  # target t <- probe permutation[t]
    pred_boxes = torch.rand(1, probes, views, 4, generator=generator)
    refs = 5.0 + torch.rand(1, probes, 3, generator=generator)  # unmatched probes far away
    pred_boxes[0, permutation] = target_boxes[0, :num_targets] + 0.01
    refs[0, permutation] = centroids[0, :num_targets] + 0.01
    pred_boxes[0, permutation[3], 1] = torch.rand(4, generator=generator)  # invisible view: free
    pred_boxes[0, 1] = target_boxes[0, -1]
    refs[0, 1] = centroids[0, -1]
    out = _output(torch.zeros(1, probes), pred_boxes, refs)
    targets = _targets(target_boxes, box_valid, centroids, valid)
    [(probe_index, target_index)] = hungarian_match(out, targets)
    assignment = dict(zip(target_index.tolist(), probe_index.tolist()))
    assert assignment == {t: int(permutation[t]) for t in range(num_targets)}


def test_generalized_iou_known_values():
    a = torch.tensor([0.5, 0.5, 0.2, 0.2])
    assert generalized_box_iou(a, a).item() == pytest.approx(1.0, abs=1e-6)
    half = torch.tensor([0.6, 0.5, 0.2, 0.2])  # shifted by half a width: IoU 1/3, hull = union
    assert generalized_box_iou(a, half).item() == pytest.approx(1 / 3, abs=1e-6)
    far = torch.tensor([0.9, 0.5, 0.2, 0.2])  # disjoint: 0 - (0.12 - 0.08) / 0.12
    assert generalized_box_iou(a, far).item() == pytest.approx(-1 / 3, abs=1e-6)
    pairwise = generalized_box_iou(torch.stack([a, far])[:, None], torch.stack([a, half, far])[None])
    assert pairwise.shape == (2, 3)


def test_samples_without_targets_give_background_only_loss():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, generator=generator, requires_grad=True)
    boxes = torch.rand(2, 5, 2, 4, generator=generator, requires_grad=True)
    refs = torch.rand(2, 5, 3, generator=generator, requires_grad=True)
    out = _output(logits, boxes, refs)
    targets = _targets(
        torch.rand(2, 1, 2, 4), torch.ones(2, 1, 2, dtype=torch.bool), torch.rand(2, 1, 3),
        torch.tensor([[False], [True]]),
    )
    matches = hungarian_match(out, targets)
    assert matches[0][0].numel() == 0 and matches[1][0].numel() == 1
    empty = _targets(
        torch.zeros(2, 0, 2, 4), torch.zeros(2, 0, 2, dtype=torch.bool), torch.zeros(2, 0, 3),
        torch.zeros(2, 0, dtype=torch.bool),
    )
    matches = hungarian_match(out, empty)
    losses = instance_loss(out, empty, matches)
    assert set(losses) == set(LOSS_TERMS)
    for key in ("l1", "giou", "mask_bce", "mask_dice", "centroid"):
        assert losses[key].item() == 0.0
    assert losses["focal"].item() > 0.0
    sum(losses.values()).backward()
    assert torch.isfinite(logits.grad).all() and torch.all(boxes.grad == 0)


def test_point_sample_reads_pixel_centres_exactly():
    maps = torch.arange(12.0).reshape(1, 3, 4)
    coords = torch.tensor([[[(2 + 0.5) / 4, (1 + 0.5) / 3], [0.5 / 4, 0.5 / 3]]])
    torch.testing.assert_close(point_sample(maps, coords), torch.tensor([[6.0, 0.0]]))


def test_weights_are_validated_with_the_bad_value_quoted():
    with pytest.raises(ValueError, match="-1.0"):
        InstanceLossWeights(giou=-1.0)
    with pytest.raises(ValueError, match="nan"):
        InstanceLossWeights(l1=float("nan"))
    with pytest.raises(ValueError, match="giuo"):
        InstanceLossWeights.from_dict({"giuo": 1.0})
    assert InstanceLossWeights.from_dict({"focal": 1.0}).focal == 1.0


IMAGE_HW, PATCH = (32, 32), 8


def _scene():
    """Two views of two objects with consistent boxes, masks and centroids (pseudo-labels)."""
    K = torch.tensor(intrinsics_from_fovy(70.0, IMAGE_HW[1], IMAGE_HW[0]), dtype=torch.float32)
    T = torch.eye(4).repeat(2, 1, 1)
    for v, (euler, position) in enumerate([((-2.4, 0.0, 0.0), (0.0, -0.8, 0.7)), ((-2.4, 0.0, 1.57), (0.8, 0.0, 0.7))]):
        T[v, :3, :3] = torch.tensor(euler_xyz_to_matrix(*euler), dtype=torch.float32)
        T[v, :3, 3] = torch.tensor(position)
    K, T = K.expand(1, 2, 3, 3).contiguous(), T[None]
    centroids = torch.tensor([[[0.1, 0.05, 0.05], [-0.1, -0.05, 0.08]]])
    uv, _, visible = project_points(centroids, K, T, IMAGE_HW)  # (1, 2, V, 2)
    assert bool(visible.all())
    size = torch.tensor([0.25, 0.3])
    boxes = torch.cat([uv, size.expand_as(uv)], dim=-1)
    mask_hw = (IMAGE_HW[0] // 4, IMAGE_HW[1] // 4)
    ys = (torch.arange(mask_hw[0]) + 0.5) / mask_hw[0]
    xs = (torch.arange(mask_hw[1]) + 0.5) / mask_hw[1]
    inside_x = (xs - uv[..., 0:1]).abs() <= size[0] / 2  # (1, T, V, W)
    inside_y = (ys - uv[..., 1:2]).abs() <= size[1] / 2
    masks = inside_y[..., :, None] & inside_x[..., None, :]
    targets = {
        TARGET_BOXES: boxes,
        TARGET_BOX_VALID: visible,
        TARGET_MASKS: masks,
        TARGET_CENTROIDS: centroids,
        TARGET_VALID: torch.ones(1, 2, dtype=torch.bool),
    }
    return K, T, targets


@pytest.fixture
def single_thread():
    """Tiny tensors gain nothing from intra-op threads; on a loaded 2-core machine they cost ~5x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_instance_loss_falls_when_overfitting_one_tiny_sample(single_thread):
    torch.manual_seed(0)
    K, T, targets = _scene()
    module = InstanceModule(dim=16, num_probes=6, num_layers=2, num_heads=2, num_levels=1, num_points=2,
                            workspace_low=(-0.3, -0.3, 0.0), workspace_high=(0.3, 0.3, 0.3),
                            max_instances=4, patch_size=PATCH)
    grid = (IMAGE_HW[0] // PATCH, IMAGE_HW[1] // PATCH)
    memory = torch.randn(1, 2 * grid[0] * grid[1], 16)
    weights = InstanceLossWeights(num_mask_points=48)  # masks are 8x8 here
    optimiser = torch.optim.Adam(module.parameters(), lr=3e-3)
    history = []
    for _ in range(50):
        out = module(memory, grid, 2, K, T, IMAGE_HW)
        losses = instance_loss(out, targets, hungarian_match(out, targets, weights), weights)
        loss = sum(losses.values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(loss.item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5, history
    final = module(memory, grid, 2, K, T, IMAGE_HW)
    probe_index, target_index = hungarian_match(final, targets)[0]
    assert (final.refs[0, probe_index] - targets[TARGET_CENTROIDS][0, target_index]).abs().max() < 0.1
