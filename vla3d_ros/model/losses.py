"""Losses of the policy side: action chunks (METHOD §5) and the completion predictor (§3.6).

The instance loss (§2.10) lives with the matching in `vla3d_ros.model.matching`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_mean(error: Tensor, is_pad: Tensor) -> Tensor:
    """Mean of an elementwise error (B,H,A) over the steps (B,H) that are not padding."""
    keep = (~is_pad).to(error.dtype)[..., None]
    return (error * keep).sum() / (keep.sum() * error.shape[-1]).clamp(min=1.0)


def action_l1(prediction: Tensor, target: Tensor, is_pad: Tensor) -> Tensor:
    """L1 on action chunks (B,H,A), padded steps (B,H) excluded."""
    return masked_mean((prediction - target).abs(), is_pad)


def action_mse(prediction: Tensor, target: Tensor, is_pad: Tensor) -> Tensor:
    """Squared error on chunks (flow-matching velocities), padded steps excluded."""
    return masked_mean((prediction - target) ** 2, is_pad)


def predictor_loss(prediction: Tensor, target: Tensor, *, weight_cos: float = 1.0, weight_var: float = 1.0,
                   gamma: float = 1.0) -> dict[str, Tensor]:
    """METHOD §3.6 (eqs. 11-13) on predictions / targets (B, Nm, C).

    SmoothL1(y_hat, y) + weight_cos * (1 - cos(y_hat, y)) + weight_var * mean_c max(0, gamma - std_c(y_hat)),
    std over all predicted tokens of the batch, per channel.
    Returns the three terms and their weighted sum under "total".
    """
    smooth_l1 = F.smooth_l1_loss(prediction, target)
    cosine = (1.0 - F.cosine_similarity(prediction, target, dim=-1)).mean()
    std = prediction.flatten(0, -2).std(dim=0)                               # (C,)
    variance = torch.relu(gamma - std).mean()
    total = smooth_l1 + weight_cos * cosine + weight_var * variance
    return {"smooth_l1": smooth_l1, "cosine": cosine, "variance": variance, "total": total}
