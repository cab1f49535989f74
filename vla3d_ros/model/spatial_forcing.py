"""Spatial Forcing alignment (METHOD §7, seed spatial_forcing).

`L = L_action + alpha * L_align`, `L_align = -mean_i cos(MLP(h_i^(l)), f_i)` over valid patches:
h^(l) are the policy's visual tokens after trunk layer l (B, N, C), f the 3D teacher's features
on the same patch grid (B, N, Ct). Training only: nothing 3D is needed at inference.

Teachers implement `SpatialTeacher`: given a batch, per-patch features and a validity mask.
A VGGT-style model can implement it; the default `DepthGeometryTeacher` (ours) uses the exact
geometry of the depth image: the per-patch mean of the pixel point map in the base frame
(Fourier-encoded after mapping the workspace box to [-1, 1]) and the per-patch mean surface
normal (from the point map's finite differences, oriented towards the camera). A patch is valid
when at least a quarter of its pixels have depth and a normal.
"""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vla3d_ros import types
from vla3d_ros.model.geometry_ops import fourier_features, patch_points

# A patch is a valid teacher target when at least this fraction of its pixels has geometry.
MIN_VALID_FRACTION = 0.25


class SpatialTeacher(Protocol):
    """Per-patch 3D features for the patch grid of the policy's visual tokens."""

    feature_dim: int

    def __call__(self, batch: dict[str, Tensor], patch_size: int) -> tuple[Tensor, Tensor]:
        """-> features (B, N, feature_dim), valid (B, N) bool; N = V*h*w, view-major order."""
        ...


class DepthGeometryTeacher:
    """Exact depth geometry per patch: [gamma(norm(point)), normal] (module docstring)."""

    def __init__(self, workspace_low, workspace_high, num_frequencies: int = 4) -> None:
        self.workspace_low = torch.as_tensor(workspace_low, dtype=torch.float64)
        self.workspace_high = torch.as_tensor(workspace_high, dtype=torch.float64)
        self.num_frequencies = num_frequencies
        self.feature_dim = 6 * num_frequencies + 3

    @torch.no_grad()
    def __call__(self, batch: dict[str, Tensor], patch_size: int) -> tuple[Tensor, Tensor]:
        depth, K, T = batch[types.DEPTH], batch[types.INTRINSICS], batch[types.T_BASE_CAM]
        dtype = K.dtype if K.is_floating_point() else torch.float32
        points, valid = patch_points(depth.to(dtype), K.to(dtype), T.to(dtype), 1)  # (B,V,H,W,3)
        normals, normal_valid = _normals(points, valid, T[..., :3, 3].to(dtype))
        valid = valid & normal_valid
        weight = valid.to(dtype)[:, :, None]                                        # (B,V,1,H,W)
        count = _pool_sum(weight, patch_size)                                       # (B,V,1,h,w)
        mean_point = _pool_sum(points.permute(0, 1, 4, 2, 3) * weight, patch_size) / count.clamp(min=1)
        mean_normal = F.normalize(_pool_sum(normals.permute(0, 1, 4, 2, 3) * weight, patch_size), dim=2)
        low, high = self.workspace_low.to(mean_point), self.workspace_high.to(mean_point)
        normalised = 2 * (mean_point.permute(0, 1, 3, 4, 2) - low) / (high - low) - 1   # (B,V,h,w,3)
        features = torch.cat([fourier_features(normalised, self.num_frequencies),
                              mean_normal.permute(0, 1, 3, 4, 2)], dim=-1)          # (B,V,h,w,Ct)
        patch_valid = count[:, :, 0] >= MIN_VALID_FRACTION * patch_size ** 2        # (B,V,h,w)
        return features.flatten(1, 3), patch_valid.flatten(1)


def _pool_sum(x: Tensor, patch_size: int) -> Tensor:
    """(B,V,c,H,W) -> (B,V,c,h,w) sums over each patch."""
    pooled = F.avg_pool2d(x.flatten(0, 1), patch_size) * patch_size ** 2
    return pooled.unflatten(0, x.shape[:2])


def _normals(points: Tensor, valid: Tensor, camera_origin: Tensor) -> tuple[Tensor, Tensor]:
    """Unit normals (B,V,H,W,3) from forward differences of the point map, facing the camera.

    The last row/column reuse their neighbour's difference direction via replicate padding.
    """
    du = points[:, :, :, 1:] - points[:, :, :, :-1]            # (B,V,H,W-1,3)
    dv = points[:, :, 1:] - points[:, :, :-1]                  # (B,V,H-1,W,3)
    du_valid = valid[:, :, :, 1:] & valid[:, :, :, :-1]
    dv_valid = valid[:, :, 1:] & valid[:, :, :-1]
    du = torch.cat([du, du[:, :, :, -1:]], dim=3)
    dv = torch.cat([dv, dv[:, :, -1:]], dim=2)
    du_valid = torch.cat([du_valid, du_valid[:, :, :, -1:]], dim=3)
    dv_valid = torch.cat([dv_valid, dv_valid[:, :, -1:]], dim=2)
    normal = torch.cross(du, dv, dim=-1)
    length = normal.norm(dim=-1, keepdim=True)
    normal_valid = du_valid & dv_valid & (length[..., 0] > 0)
    normal = normal / length.clamp(min=torch.finfo(normal.dtype).tiny)
    towards_camera = camera_origin[:, :, None, None] - points
    sign = torch.where((normal * towards_camera).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(normal)
    return torch.where(normal_valid[..., None], normal * sign, torch.zeros_like(normal)), normal_valid


class SpatialForcingAligner(nn.Module):
    """MLP from trunk visual tokens to teacher features and the alignment loss."""

    def __init__(self, dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, teacher_dim))

    def forward(self, hidden: Tensor, teacher: Tensor, valid: Tensor) -> Tensor:
        """hidden (B,N,C), teacher (B,N,Ct), valid (B,N) -> -mean cos over valid patches (0 if none)."""
        cosine = F.cosine_similarity(self.project(hidden), teacher.to(hidden.dtype), dim=-1)  # (B, N)
        weight = valid.to(cosine.dtype)
        return -(cosine * weight).sum() / weight.sum().clamp(min=1.0)
