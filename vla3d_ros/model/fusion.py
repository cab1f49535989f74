"""Multi-View Spatial Fusion (METHOD.md §1, 3DVLA §3.1).

Every patch token of every view gets a 3D point in the base frame (§1.1), is made position-aware
with `F' = F + MLP(norm(P))` (§1.2), and all N = V*h*w tokens of all views go through L_f
pre-norm transformer blocks whose attention uses continuous 3D RoPE on Q and K (§1.3). The result
is the memory M (B, N, C) that the instance module and the completion predictor read.

Token order is view-major, then patch row, then patch column: token n = (v*h + i)*w + j. The
instance module relies on it to reshape M back to per-view maps.

Choices (ours), as allowed by METHOD.md:
- norm(P) maps the workspace box to [-1, 1] and is clamped to [-2, 2], so far-away background
  points (a wall 5 m away) saturate instead of dominating the position MLP.
- Patches without any valid depth (holes, RGB-only cameras) use the PETR-style fallback: their
  position encoding is the AVERAGE of the encodings of D points along the patch ray (depth bins
  with linear-increasing spacing over `depth_range`), and their token point, used by the 3D RoPE
  and returned in `FusionOutput.points`, is the MEAN of those D bin points (the ray point at the
  mean bin depth): a single point is needed for RoPE and the mean is the expected position under
  a uniform prior over the bins. `FusionOutput.point_valid` says which tokens have measured points.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vla3d_ros.model.geometry_ops import (
    RopeTransformerBlock,
    depth_bin_values,
    ray_bin_points,
    workspace_box,
)

__all__ = ["FusionOutput", "MultiViewSpatialFusion"]

# norm(P) beyond the workspace is clamped to this magnitude (module docstring).
_NORMALISED_POINT_LIMIT = 2.0


@dataclass
class FusionOutput:
    memory: Tensor  # (B, N, C) globally consistent memory M
    points: Tensor  # (B, N, 3) token points, base frame (fallback tokens: mean of the depth bins)
    point_valid: Tensor  # (B, N) bool, True where the point comes from measured depth


class MultiViewSpatialFusion(nn.Module):
    """Lift per-view patch features into one 3D-consistent token set (METHOD §1).

    Args:
        dim: C, the feature width.
        depth: L_f, number of RopeTransformerBlocks.
        num_heads: attention heads (dim / num_heads >= 6 for the 3D RoPE).
        workspace_low, workspace_high: (3,) corners of the workspace box, metres, base frame.
        depth_bins: D, points per ray for the RGB-only fallback.
        depth_range: (near, far) metres covered by the depth bins.
        mlp_ratio, rope_scale, rope_base, dropout: transformer block settings (§1.3 defaults).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        workspace_low: Sequence[float],
        workspace_high: Sequence[float],
        depth_bins: int = 8,
        depth_range: tuple[float, float] = (0.1, 2.0),
        *,
        mlp_ratio: float = 4.0,
        rope_scale: float = 100.0,
        rope_base: float = 100.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if depth < 0:
            raise ValueError(f"depth (number of fusion layers) must be >= 0, got {depth}")
        low, high = workspace_box(workspace_low, workspace_high)
        self.register_buffer("workspace_low", low, persistent=False)
        self.register_buffer("workspace_high", high, persistent=False)
        # Validates the bins now rather than at the first RGB-only batch.
        self.register_buffer("bin_depths", depth_bin_values(depth_bins, *depth_range), persistent=False)
        self.dim = dim
        self.position_mlp = nn.Sequential(nn.Linear(3, dim), nn.GELU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(
            RopeTransformerBlock(
                dim, num_heads, mlp_ratio, scale=rope_scale, base=rope_base, dropout=dropout
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def normalise(self, points: Tensor) -> Tensor:
        """(..., 3) base-frame points -> workspace box at [-1, 1], clamped to [-2, 2]."""
        low = self.workspace_low.to(points.dtype)
        high = self.workspace_high.to(points.dtype)
        scaled = 2.0 * (points - low) / (high - low) - 1.0
        return scaled.clamp(-_NORMALISED_POINT_LIMIT, _NORMALISED_POINT_LIMIT)

    def _encode(self, points: Tensor, dtype: torch.dtype) -> Tensor:
        """MLP(norm(P)) (METHOD §1.2 eq. 1): (..., 3) -> (..., C) in the features' dtype."""
        return self.position_mlp(self.normalise(points).to(dtype))

    def forward(
        self,
        features: Tensor,
        points: Tensor,
        point_valid: Tensor,
        *,
        intrinsics: Tensor | None = None,
        T_base_cam: Tensor | None = None,
        image_hw: Sequence[int] | None = None,
    ) -> FusionOutput:
        """features (B,V,C,h,w), points (B,V,h,w,3), point_valid (B,V,h,w) -> FusionOutput.

        intrinsics (B,V,3,3), T_base_cam (B,V,4,4) and image_hw (H, W) are needed only when some
        patch has no valid point (the depth-bin fallback); a clear error says so otherwise.
        """
        if features.ndim != 5 or features.shape[2] != self.dim:
            raise ValueError(f"features must be (B, V, C={self.dim}, h, w), got {tuple(features.shape)}")
        batch, views, _, h, w = features.shape
        if points.shape != (batch, views, h, w, 3) or point_valid.shape != (batch, views, h, w):
            raise ValueError(
                f"points {tuple(points.shape)} / point_valid {tuple(point_valid.shape)} must be "
                f"{(batch, views, h, w, 3)} / {(batch, views, h, w)} to match features"
            )
        # Token points stay in at least float32 even for half-precision features: the 3D RoPE
        # resolves centimetres, which fp16/bf16 coordinates do not.
        points = points.to(torch.promote_types(points.dtype, torch.float32))
        point_valid = point_valid.bool()
        position = self._encode(points, features.dtype)  # (B, V, h, w, C)
        if not bool(point_valid.all()):
            bin_points = self._bin_points(intrinsics, T_base_cam, image_hw, (h, w))
            bin_points = bin_points.to(points.dtype)  # (B, V, h, w, D, 3)
            bin_position = self._encode(bin_points, features.dtype).mean(dim=-2)
            position = torch.where(point_valid[..., None], position, bin_position)
            points = torch.where(point_valid[..., None], points, bin_points.mean(dim=-2))
        tokens = features.permute(0, 1, 3, 4, 2) + position  # (B, V, h, w, C)
        tokens = tokens.reshape(batch, views * h * w, self.dim)  # (B, N, C)
        token_points = points.reshape(batch, views * h * w, 3)
        if self.blocks:
            # every block rotates by the same angles: one table for the stack
            rotation = self.blocks[0].attention.rope.table(token_points, tokens.dtype)
            for block in self.blocks:
                tokens = block(tokens, rotation)
        return FusionOutput(
            memory=self.norm(tokens),
            points=token_points,
            point_valid=point_valid.reshape(batch, views * h * w),
        )

    def _bin_points(self, intrinsics, T_base_cam, image_hw, grid_hw: tuple[int, int]) -> Tensor:
        if intrinsics is None or T_base_cam is None or image_hw is None:
            raise ValueError(
                "some patches have no valid depth: pass intrinsics, T_base_cam and image_hw so "
                "the depth-bin fallback (METHOD §1.1) can place them along their camera rays"
            )
        height, width = int(image_hw[0]), int(image_hw[1])
        patch_size = height // grid_hw[0]
        if (grid_hw[0] * patch_size, grid_hw[1] * patch_size) != (height, width):
            raise ValueError(
                f"image {height}x{width} is not the {grid_hw[0]}x{grid_hw[1]} patch grid times one patch size"
            )
        return ray_bin_points(intrinsics, T_base_cam, (height, width), patch_size, self.bin_depths)
