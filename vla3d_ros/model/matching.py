"""Global 3D Hungarian matching and the 6-term instance loss (METHOD.md §2.9-2.10, 3DVLA eqs. 5-6).

Matching (eq. 5): the cost between probe j and target t is averaged over the views where t is
visible, `lambda_cls*C_focal + lambda_L1*|box - box_t|_1 + lambda_giou*(1 - GIoU)`, plus
`lambda_3d*|r_j - c_t|_1`; one `scipy.optimize.linear_sum_assignment` per sample gives one
assignment shared by all views (no cross-view ID conflicts). A target visible in no view is
matched on objectness and 3D distance alone.

Loss (eq. 6), weights (ours, DETR-like) focal 2, L1 5, GIoU 2, mask BCE 5, Dice 5, centroid 5:
- focal over all probes (matched = 1), summed and divided by the number of targets (DETR);
- L1 and GIoU of boxes over (matched pair, visible view), averaged;
- BCE and Dice of masks on sampled points (Mask2Former): `num_mask_points` per mask, a share
  `importance_sample_ratio` of them the most uncertain of `oversample_ratio` x as many random
  points, the rest uniform; target masks of any resolution are sampled at the same normalised
  points (`grid_sample`, align_corners=False, as the projection);
- L1 of the 3D reference point against the pseudo-label centroid, per target.
Deep supervision (`aux=True`, default): every intermediate layer gets its own matching and the
focal/box/centroid terms. It is on by default because the stop-gradient between layers (§2.6)
leaves the earlier layers' refinement and the learnable initial r_j without any other gradient.

The returned dict holds the six WEIGHTED terms (aux layers folded in): their sum is the loss.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from vla3d_ros.model.geometry_ops import image_to_grid
from vla3d_ros.model.instances import InstanceOutput
from vla3d_ros.types import (
    TARGET_BOX_VALID,
    TARGET_BOXES,
    TARGET_CENTROIDS,
    TARGET_MASKS,
    TARGET_VALID,
)

__all__ = [
    "InstanceLossWeights",
    "box_cxcywh_to_xyxy",
    "generalized_box_iou",
    "hungarian_match",
    "instance_loss",
    "point_sample",
]

LOSS_TERMS = ("focal", "l1", "giou", "mask_bce", "mask_dice", "centroid")
_EPS = 1e-7


@dataclass(frozen=True)
class InstanceLossWeights:
    """Loss and matching-cost weights (the same lambdas serve eq. 5 and eq. 6) and sampling."""

    focal: float = 2.0
    l1: float = 5.0
    giou: float = 2.0
    mask_bce: float = 5.0
    mask_dice: float = 5.0
    centroid: float = 5.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    num_mask_points: int = 112
    importance_sample_ratio: float = 0.75
    oversample_ratio: float = 3.0

    def __post_init__(self) -> None:
        for name in LOSS_TERMS + ("focal_gamma",):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"InstanceLossWeights.{name} must be a finite number >= 0, got {value!r}")
        if not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"InstanceLossWeights.focal_alpha must be in [0, 1], got {self.focal_alpha!r}")
        if not (isinstance(self.num_mask_points, int) and self.num_mask_points >= 1):
            raise ValueError(f"InstanceLossWeights.num_mask_points must be an int >= 1, got {self.num_mask_points!r}")
        if not 0.0 <= self.importance_sample_ratio <= 1.0:
            raise ValueError(
                f"InstanceLossWeights.importance_sample_ratio must be in [0, 1], got {self.importance_sample_ratio!r}"
            )
        if not self.oversample_ratio >= 1.0:
            raise ValueError(f"InstanceLossWeights.oversample_ratio must be >= 1, got {self.oversample_ratio!r}")

    @classmethod
    def from_dict(cls, values: Mapping) -> "InstanceLossWeights":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown InstanceLossWeights fields {unknown}; known: {sorted(known)}")
        return cls(**values)


# ---- boxes --------------------------------------------------------------------------------------


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def generalized_box_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """GIoU of (..., 4) cx, cy, w, h boxes, broadcast over the leading dims -> (...)."""
    a, b = box_cxcywh_to_xyxy(boxes_a), box_cxcywh_to_xyxy(boxes_b)
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    inter_wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = area_a + area_b - inter
    hull_wh = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(min=0)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return inter / union.clamp(min=_EPS) - (hull - union) / hull.clamp(min=_EPS)


# ---- targets ------------------------------------------------------------------------------------


def _check_targets(targets: Mapping[str, Tensor], batch: int, views: int) -> int:
    required = (TARGET_BOXES, TARGET_BOX_VALID, TARGET_MASKS, TARGET_CENTROIDS, TARGET_VALID)
    missing = [key for key in required if key not in targets]
    if missing:
        raise ValueError(f"instance targets are missing keys {missing}")
    boxes = targets[TARGET_BOXES]
    if boxes.ndim != 4 or boxes.shape[0] != batch or boxes.shape[2:] != (views, 4):
        raise ValueError(f"{TARGET_BOXES} must be (B={batch}, T, V={views}, 4), got {tuple(boxes.shape)}")
    num_targets = boxes.shape[1]
    expected = {
        TARGET_BOX_VALID: (batch, num_targets, views),
        TARGET_CENTROIDS: (batch, num_targets, 3),
        TARGET_VALID: (batch, num_targets),
    }
    for key, shape in expected.items():
        if tuple(targets[key].shape) != shape:
            raise ValueError(f"{key} must be {shape}, got {tuple(targets[key].shape)}")
    masks = targets[TARGET_MASKS]
    if masks.ndim != 5 or masks.shape[:3] != (batch, num_targets, views):
        raise ValueError(
            f"{TARGET_MASKS} must be (B={batch}, T={num_targets}, V={views}, Hm, Wm), got {tuple(masks.shape)}"
        )
    return num_targets


# ---- matching -----------------------------------------------------------------------------------


def _focal_cost(logits: Tensor, weights: InstanceLossWeights) -> Tensor:
    """(B, Q) cost of calling each probe an object (deformable DETR's focal matching cost)."""
    p = torch.sigmoid(logits)
    alpha, gamma = weights.focal_alpha, weights.focal_gamma
    positive = alpha * (1 - p) ** gamma * -torch.log(p + 1e-8)
    negative = (1 - alpha) * p**gamma * -torch.log(1 - p + 1e-8)
    return positive - negative


@torch.no_grad()
def _match(logits, boxes, refs, targets, weights) -> list[tuple[Tensor, Tensor]]:
    batch, _, views, _ = boxes.shape
    _check_targets(targets, batch, views)
    cost_cls = _focal_cost(logits.float(), weights)  # (B, Q)
    matches = []
    for b in range(batch):
        target_index = torch.nonzero(targets[TARGET_VALID][b], as_tuple=False).squeeze(-1)
        if target_index.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long, device=logits.device)
            matches.append((empty, empty.clone()))
            continue
        target_boxes = targets[TARGET_BOXES][b, target_index].to(boxes.device, torch.float32)  # (T, V, 4)
        visible = targets[TARGET_BOX_VALID][b, target_index].to(boxes.device, torch.float32)  # (T, V)
        centroids = targets[TARGET_CENTROIDS][b, target_index].to(refs.device, torch.float32)  # (T, 3)
        pred = boxes[b].float()[:, None]  # (Q, 1, V, 4)
        l1 = (pred - target_boxes[None]).abs().sum(-1)  # (Q, T, V)
        giou = generalized_box_iou(pred, target_boxes[None])  # (Q, T, V)
        per_view = weights.l1 * l1 + weights.giou * (1.0 - giou)
        view_cost = (per_view * visible[None]).sum(-1) / visible.sum(-1).clamp(min=1.0)[None]
        cost_3d = (refs[b].float()[:, None] - centroids[None]).abs().sum(-1)  # (Q, T)
        cost = weights.focal * cost_cls[b][:, None] + view_cost + weights.centroid * cost_3d
        if not bool(torch.isfinite(cost).all()):
            raise ValueError(f"non-finite matching cost in sample {b}: predictions or targets hold NaN/inf")
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        matches.append(
            (
                torch.as_tensor(rows, dtype=torch.long, device=logits.device),
                target_index[torch.as_tensor(cols, dtype=torch.long, device=target_index.device)].to(logits.device),
            )
        )
    return matches


def hungarian_match(
    out: InstanceOutput, targets: Mapping[str, Tensor], weights: InstanceLossWeights | None = None
) -> list[tuple[Tensor, Tensor]]:
    """One assignment per sample (METHOD §2.9) for the final layer of `out`.

    Returns, per sample, (probe_idx (M,), target_idx (M,)) long tensors; target_idx indexes the
    T axis of the targets (padding excluded); M = min(Q, number of valid targets).
    """
    weights = weights or InstanceLossWeights()
    return _match(out.logits, out.boxes, out.refs, targets, weights)


# ---- losses -------------------------------------------------------------------------------------


def point_sample(maps: Tensor, coords: Tensor) -> Tensor:
    """Bilinear values of (N, H, W) maps at (N, P, 2) image-normalised [0, 1] points -> (N, P)."""
    grid = image_to_grid(coords)[:, :, None]  # (N, P, 1, 2)
    return F.grid_sample(maps[:, None], grid, mode="bilinear", align_corners=False)[:, 0, :, 0]


def _mask_points(mask_logits: Tensor, weights: InstanceLossWeights) -> Tensor:
    """(N, Hm, Wm) logits -> (N, P, 2) points: most uncertain of an oversampled set + uniform."""
    count, num_points = mask_logits.shape[0], weights.num_mask_points
    num_candidates = int(num_points * weights.oversample_ratio)
    num_uncertain = int(num_points * weights.importance_sample_ratio)
    candidates = torch.rand(count, num_candidates, 2, device=mask_logits.device, dtype=mask_logits.dtype)
    uncertainty = -point_sample(mask_logits, candidates).abs()
    chosen = uncertainty.topk(num_uncertain, dim=1).indices
    uncertain = torch.gather(candidates, 1, chosen[..., None].expand(-1, -1, 2))
    uniform = torch.rand(count, num_points - num_uncertain, 2, device=mask_logits.device, dtype=mask_logits.dtype)
    return torch.cat([uncertain, uniform], dim=1)


def _focal_loss(logits: Tensor, is_object: Tensor, weights: InstanceLossWeights) -> Tensor:
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, is_object, reduction="none")
    p_t = p * is_object + (1 - p) * (1 - is_object)
    alpha_t = weights.focal_alpha * is_object + (1 - weights.focal_alpha) * (1 - is_object)
    return (alpha_t * ce * (1 - p_t) ** weights.focal_gamma).sum()


def _flat_pairs(matches: list[tuple[Tensor, Tensor]], device) -> tuple[Tensor, Tensor, Tensor]:
    batch_index = torch.cat([torch.full_like(p, b) for b, (p, _) in enumerate(matches)]).to(device)
    probe_index = torch.cat([p for p, _ in matches]).to(device)
    target_index = torch.cat([t for _, t in matches]).to(device)
    return batch_index, probe_index, target_index


def _layer_losses(logits, boxes, refs, targets, matches, num_targets, weights) -> dict[str, Tensor]:
    """Weighted focal, L1, GIoU and centroid terms of one layer."""
    batch_index, probe_index, target_index = _flat_pairs(matches, logits.device)
    is_object = torch.zeros_like(logits)
    is_object[batch_index, probe_index] = 1.0
    pred_boxes = boxes[batch_index, probe_index]  # (M, V, 4)
    target_boxes = targets[TARGET_BOXES][batch_index, target_index].to(boxes.dtype)
    visible = targets[TARGET_BOX_VALID][batch_index, target_index].to(boxes.dtype)  # (M, V)
    num_visible = visible.sum().clamp(min=1.0)
    l1 = ((pred_boxes - target_boxes).abs().sum(-1) * visible).sum() / num_visible
    giou = ((1.0 - generalized_box_iou(pred_boxes, target_boxes)) * visible).sum() / num_visible
    centroids = targets[TARGET_CENTROIDS][batch_index, target_index].to(refs.dtype)
    centroid = (refs[batch_index, probe_index] - centroids).abs().sum() / num_targets
    return {
        "focal": weights.focal * _focal_loss(logits, is_object, weights) / num_targets,
        "l1": weights.l1 * l1,
        "giou": weights.giou * giou,
        "centroid": weights.centroid * centroid,
    }


def _mask_losses(mask_logits, targets, matches, weights) -> dict[str, Tensor]:
    """Weighted BCE and Dice on sampled points over (matched pair, visible view)."""
    batch_index, probe_index, target_index = _flat_pairs(matches, mask_logits.device)
    visible = targets[TARGET_BOX_VALID][batch_index, target_index].to(mask_logits.device).bool()  # (M, V)
    pred = mask_logits[batch_index, probe_index][visible]  # (Mv, Hm, Wm)
    target = targets[TARGET_MASKS][batch_index, target_index][visible].to(mask_logits.dtype)  # (Mv, Ht, Wt)
    if pred.shape[0] == 0:
        zero = mask_logits.sum() * 0.0  # keeps the mask head in the graph
        return {"mask_bce": zero, "mask_dice": zero}
    with torch.no_grad():
        coords = _mask_points(pred.detach(), weights)
    pred_points = point_sample(pred, coords)  # (Mv, P)
    target_points = point_sample(target, coords)
    bce = F.binary_cross_entropy_with_logits(pred_points, target_points, reduction="none").mean(1)
    probability = torch.sigmoid(pred_points)
    dice = 1.0 - (2.0 * (probability * target_points).sum(1) + 1.0) / (probability.sum(1) + target_points.sum(1) + 1.0)
    count = pred.shape[0]
    return {"mask_bce": weights.mask_bce * bce.sum() / count, "mask_dice": weights.mask_dice * dice.sum() / count}


def instance_loss(
    out: InstanceOutput,
    targets: Mapping[str, Tensor],
    matches: list[tuple[Tensor, Tensor]],
    weights: InstanceLossWeights | None = None,
    *,
    aux: bool = True,
) -> dict[str, Tensor]:
    """The 6 weighted terms of METHOD §2.10 (keys `LOSS_TERMS`); their sum is the loss.

    `matches` comes from `hungarian_match(out, targets, weights)`. With `aux`, every layer in
    `out.aux` is matched on its own predictions and adds its focal/L1/GIoU/centroid terms.
    Samples without targets contribute only the focal term (every probe is background).
    """
    weights = weights or InstanceLossWeights()
    batch, _, views, _ = out.boxes.shape
    _check_targets(targets, batch, views)
    if len(matches) != batch:
        raise ValueError(f"expected one match per sample ({batch}), got {len(matches)}")
    num_targets = targets[TARGET_VALID].sum().to(out.logits.dtype).clamp(min=1.0)
    losses = _layer_losses(out.logits, out.boxes, out.refs, targets, matches, num_targets, weights)
    losses.update(_mask_losses(out.mask_logits, targets, matches, weights))
    if aux:
        for layer in out.aux:
            layer_matches = _match(layer.logits, layer.boxes, layer.refs, targets, weights)
            layer_losses = _layer_losses(
                layer.logits, layer.boxes, layer.refs, targets, layer_matches, num_targets, weights
            )
            for key, value in layer_losses.items():
                losses[key] = losses[key] + value
    return {key: losses[key] for key in LOSS_TERMS}
