"""Torch geometry shared by the 3D modules: token points, projection, 3D RoPE, Fourier encodings.

The torch twins of `vla3d_ros.geometry` (numpy), written batched and device-agnostic.
METHOD.md §1.1 (patch points, depth-bin fallback), §1.3 (continuous 3D RoPE), §2.3 (projection
with depth clamp), §3.3 (Fourier features).

Conventions:
- OpenCV cameras (x right, y down, z forward); `T_base_cam` maps camera points to the base frame.
- Pixel centres are at integer coordinates (as in `vla3d_ros.geometry.cameras`): pixel (u, v)
  covers [u-0.5, u+0.5) x [v-0.5, v+0.5).
- Image-normalised coordinates put the image's outer pixel EDGES at 0 and 1:
  `u_norm = (u + 0.5) / W`. Then `2 * u_norm - 1` is exactly the `grid_sample` coordinate with
  `align_corners=False`, for a feature map of ANY stride that tiles the image, so one projection
  samples every pyramid level consistently.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "CameraProjection",
    "FourierPositionEncoder",
    "Rope3D",
    "RopeAttention",
    "RopeTransformerBlock",
    "RotationTable",
    "depth_bin_values",
    "fourier_features",
    "fourier_frequencies",
    "image_to_grid",
    "patch_points",
    "project_points",
    "ray_bin_points",
    "workspace_box",
]


def _geometry_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input is float64, else float32: camera geometry never runs in half precision."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _full_precision(function):
    """Run camera geometry outside autocast: a pixel is ~1e-3 of an image, below fp16's resolution."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        device = next(a.device for a in (*args, *kwargs.values()) if isinstance(a, Tensor))
        with torch.autocast(device.type, enabled=False):
            return function(*args, **kwargs)

    return wrapper


# ---- workspace ---------------------------------------------------------------------------------


def workspace_box(low: Sequence[float], high: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Validated (3,) float32 corners of the axis-aligned workspace box (base frame, metres)."""
    low_t = torch.as_tensor(low, dtype=torch.float32).reshape(-1)
    high_t = torch.as_tensor(high, dtype=torch.float32).reshape(-1)
    if low_t.shape != (3,) or high_t.shape != (3,):
        raise ValueError(f"workspace corners must be 3 values each, got low={low}, high={high}")
    if not bool(torch.isfinite(low_t).all() and torch.isfinite(high_t).all() and (low_t < high_t).all()):
        raise ValueError(f"workspace needs finite low < high on every axis, got low={low}, high={high}")
    return low_t, high_t


# ---- cameras -----------------------------------------------------------------------------------


def _check_camera_shapes(K: Tensor, T_base_cam: Tensor) -> None:
    if K.ndim != 4 or K.shape[-2:] != (3, 3):
        raise ValueError(f"K must be (B, V, 3, 3), got {tuple(K.shape)}")
    if T_base_cam.shape != (*K.shape[:2], 4, 4):
        raise ValueError(
            f"T_base_cam must be {(*K.shape[:2], 4, 4)} to match K, got {tuple(T_base_cam.shape)}"
        )


def _grid_shape(image_hw: Sequence[int], patch_size: int) -> tuple[int, int]:
    height, width = int(image_hw[0]), int(image_hw[1])
    if patch_size <= 0 or height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} must be a positive multiple of patch_size={patch_size}"
        )
    return height // patch_size, width // patch_size


def _patch_centre_rays(K: Tensor, T_base_cam: Tensor, grid_hw: tuple[int, int], patch_size: int):
    """Camera origins (B,V,1,1,3) in the base frame and base-frame rays (B,V,h,w,3) with z_cam = 1.

    Scaling a ray by a metric z-depth and adding the origin gives the base-frame point.
    """
    h, w = grid_hw
    dtype, device = K.dtype, K.device
    # Patch (i, j) covers pixels [j*p, (j+1)*p); its centre in integer-centred pixel coordinates.
    centre_offset = (patch_size - 1) / 2.0
    v = torch.arange(h, dtype=dtype, device=device) * patch_size + centre_offset
    u = torch.arange(w, dtype=dtype, device=device) * patch_size + centre_offset
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    pixels = torch.stack([uu, vv, torch.ones_like(uu)], dim=-1)  # (h, w, 3)
    # Full inverse of K (not just fx, fy, cx, cy) so skewed intrinsics stay consistent with
    # project_points, which multiplies by the full K.
    rays_cam = torch.einsum("bvij,hwj->bvhwi", torch.linalg.inv(K), pixels)  # (B, V, h, w, 3)
    rotation = T_base_cam[..., :3, :3]
    rays_base = torch.einsum("bvij,bvhwj->bvhwi", rotation, rays_cam)
    origins = T_base_cam[..., None, None, :3, 3]  # (B, V, 1, 1, 3)
    return origins, rays_base


@_full_precision
def patch_points(
    depth: Tensor, K: Tensor, T_base_cam: Tensor, patch_size: int
) -> tuple[Tensor, Tensor]:
    """Base-frame 3D point of every patch token (METHOD §1.1).

    The patch centre is unprojected with the median of the VALID depths inside the patch
    (robust to holes and edge pixels straddling two surfaces). Depth values that are NaN, inf or
    <= 0 are invalid. For an even count of valid pixels the lower of the two middle values is
    used (torch's median), which is always a depth that was actually measured.

    Args:
        depth: (B, V, H, W) metres.
        K: (B, V, 3, 3) intrinsics of the (H, W) images.
        T_base_cam: (B, V, 4, 4).
        patch_size: p; H and W must be multiples of p.
    Returns:
        points (B, V, h, w, 3) in the base frame (float32, or float64 for float64 cameras), zero
        where invalid (never NaN), and
        valid (B, V, h, w) bool: the patch holds at least one valid depth.
    """
    if depth.ndim != 4:
        raise ValueError(f"depth must be (B, V, H, W), got {tuple(depth.shape)}")
    _check_camera_shapes(K, T_base_cam)
    if depth.shape[:2] != K.shape[:2]:
        raise ValueError(f"depth is {tuple(depth.shape)} but K is for {tuple(K.shape[:2])} views")
    grid_hw = _grid_shape(depth.shape[-2:], patch_size)
    h, w = grid_hw
    dtype = _geometry_dtype(K.dtype, T_base_cam.dtype)
    depth, K, T_base_cam = depth.to(dtype), K.to(dtype), T_base_cam.to(dtype)
    valid_pixel = torch.isfinite(depth) & (depth > 0)
    # (B, V, h, p, w, p) -> (B, V, h, w, p*p)
    patches = torch.where(valid_pixel, depth, torch.nan)
    patches = patches.reshape(*depth.shape[:2], h, patch_size, w, patch_size)
    patches = patches.permute(0, 1, 2, 4, 3, 5).reshape(*depth.shape[:2], h, w, -1)
    median = torch.nanmedian(patches, dim=-1).values  # (B, V, h, w), NaN when no valid pixel
    valid = torch.isfinite(median)
    median = torch.where(valid, median, torch.zeros_like(median))
    origins, rays = _patch_centre_rays(K, T_base_cam, grid_hw, patch_size)
    points = origins + rays * median[..., None]
    points = torch.where(valid[..., None], points, torch.zeros_like(points))
    return points, valid


def depth_bin_values(
    num_bins: int, near: float, far: float, *, dtype=torch.float32, device=None
) -> Tensor:
    """(D,) depths in [near, far] with linear-increasing spacing (LID, as in PETR).

    Bins get wider with depth, matching how depth uncertainty grows along a camera ray.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if not 0.0 < near < far:
        raise ValueError(f"depth bins need 0 < near < far, got near={near}, far={far}")
    if num_bins == 1:
        return torch.tensor([(near + far) / 2.0], dtype=dtype, device=device)
    index = torch.arange(num_bins, dtype=dtype, device=device)
    fraction = index * (index + 1) / ((num_bins - 1) * num_bins)
    return near + (far - near) * fraction


@_full_precision
def ray_bin_points(
    K: Tensor,
    T_base_cam: Tensor,
    image_hw: Sequence[int],
    patch_size: int,
    depth_bins: Tensor | Sequence[float],
) -> Tensor:
    """Points at D candidate depths along each patch-centre ray (METHOD §1.1 RGB-only fallback).

    Args:
        K: (B, V, 3, 3); T_base_cam: (B, V, 4, 4); image_hw: (H, W); patch_size: p.
        depth_bins: (D,) z-depths in metres (e.g. from `depth_bin_values`).
    Returns:
        (B, V, h, w, D, 3) base-frame points.
    """
    _check_camera_shapes(K, T_base_cam)
    grid_hw = _grid_shape(image_hw, patch_size)
    dtype = _geometry_dtype(K.dtype, T_base_cam.dtype)
    K, T_base_cam = K.to(dtype), T_base_cam.to(dtype)
    bins = torch.as_tensor(depth_bins, dtype=dtype, device=K.device)
    if bins.ndim != 1 or bins.numel() == 0 or not bool(torch.all(bins > 0)):
        raise ValueError(f"depth_bins must be a non-empty 1-D set of depths > 0, got {bins.tolist()}")
    origins, rays = _patch_centre_rays(K, T_base_cam, grid_hw, patch_size)
    return origins[..., None, :] + rays[..., None, :] * bins[:, None]  # (B, V, h, w, D, 3)


class CameraProjection(NamedTuple):
    """The cameras of a batch ready to project points (METHOD §2.3 eq. 2), built once per forward.

    A decoder projecting its reference points after every layer reuses it, so the camera
    slicing, dtype promotion and image-size constant are not redone per projection.
    """

    rotation: Tensor     # (B, V, 3, 3) of T_base_cam, geometry dtype
    translation: Tensor  # (B, V, 3)
    K: Tensor            # (B, V, 3, 3)
    size: Tensor         # (2,) image (W, H)
    eps: float           # depth clamp, metres

    @classmethod
    def of(cls, K: Tensor, T_base_cam: Tensor, image_hw: Sequence[int], eps: float = 0.05) -> "CameraProjection":
        """K (B, V, 3, 3), T_base_cam (B, V, 4, 4), image_hw (H, W), eps (m) -> CameraProjection."""
        _check_camera_shapes(K, T_base_cam)
        if eps <= 0:
            raise ValueError(f"eps must be > 0 m, got {eps}")
        height, width = float(image_hw[0]), float(image_hw[1])
        if not (height > 0 and width > 0):
            raise ValueError(f"image_hw must be positive (H, W), got {tuple(image_hw)}")
        dtype = _geometry_dtype(K.dtype, T_base_cam.dtype)
        T_base_cam = T_base_cam.to(dtype)
        return cls(T_base_cam[..., :3, :3], T_base_cam[..., :3, 3], K.to(dtype),
                   torch.tensor([width, height], dtype=dtype, device=K.device), eps)

    @_full_precision
    def __call__(self, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """points (B, Q, 3) base frame -> uv_norm (B, Q, V, 2), in_front (B, Q, V), in_image (B, Q, V)
        (`project_points`)."""
        if points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] != self.K.shape[0]:
            raise ValueError(f"points must be (B={self.K.shape[0]}, Q, 3), got {tuple(points.shape)}")
        dtype = _geometry_dtype(points.dtype, self.K.dtype)
        if dtype != self.K.dtype:
            return self._replace(rotation=self.rotation.to(dtype), translation=self.translation.to(dtype),
                                 K=self.K.to(dtype), size=self.size.to(dtype))(points)
        # Rigid inverse: p_cam = R^T (p - t).
        relative = points.to(dtype)[:, :, None, :] - self.translation[:, None, :, :]  # (B, Q, V, 3)
        points_cam = torch.einsum("bvji,bqvj->bqvi", self.rotation, relative)
        homogeneous = torch.einsum("bvij,bqvj->bqvi", self.K, points_cam)  # (B, Q, V, 3)
        z = homogeneous[..., 2]
        pixels = homogeneous[..., :2] / z.clamp(min=self.eps)[..., None]
        uv_norm = (pixels + 0.5) / self.size
        in_front = z > self.eps
        inside = (uv_norm >= 0).all(dim=-1) & (uv_norm <= 1).all(dim=-1)
        return uv_norm, in_front, in_front & inside


def project_points(
    points: Tensor,
    K: Tensor,
    T_base_cam: Tensor,
    image_hw: Sequence[int],
    eps: float = 0.05,
) -> tuple[Tensor, Tensor, Tensor]:
    """Project base-frame points into every view with the depth clamp of METHOD §2.3 (eq. 2).

    `[u', v', z] = K (T_cam_base p)`, `(u, v) = (u', v') / max(z, eps)`, then normalised by the
    image size so that the image spans [0, 1] (module docstring).

    Args:
        points: (B, Q, 3) base frame; K: (B, V, 3, 3); T_base_cam: (B, V, 4, 4); image_hw: (H, W).
        eps: depth clamp in metres.
    Returns:
        uv_norm (B, Q, V, 2) image-normalised, float32 (float64 if an input is), finite
        everywhere, meaningful where in_front,
        in_front (B, Q, V) bool: z > eps,
        in_image (B, Q, V) bool: in_front AND the projection lies inside the image.
    """
    return CameraProjection.of(K, T_base_cam, image_hw, eps)(points)


def image_to_grid(uv_norm: Tensor) -> Tensor:
    """Image-normalised [0, 1] coordinates -> `grid_sample` coordinates (align_corners=False)."""
    return 2.0 * uv_norm - 1.0


# ---- Fourier features (§3.3) -------------------------------------------------------------------


def fourier_frequencies(num_frequencies: int, dtype=torch.float32, device=None) -> Tensor:
    """(K,) angular frequencies 2^k pi, k = 0..K-1, of `fourier_features`."""
    if num_frequencies < 1:
        raise ValueError(f"num_frequencies must be >= 1, got {num_frequencies}")
    return math.pi * 2.0 ** torch.arange(num_frequencies, dtype=dtype, device=device)


def fourier_features(p: Tensor, num_frequencies: int, frequencies: Tensor | None = None) -> Tensor:
    """gamma(p) = [sin(2^k pi p), cos(2^k pi p)] for k = 0..K-1.

    Args:
        p: (..., D) coordinates (D = 3 for points; any D works).
        frequencies: `fourier_frequencies(num_frequencies)` made once by the caller (saves three
            ops per call); cast to p's dtype. Its values are exact in any float dtype, being pi
            rounded and scaled by powers of two.
    Returns:
        (..., 2 * D * K): all sines (frequency-major) then all cosines.
    """
    if frequencies is None:
        frequencies = fourier_frequencies(num_frequencies, p.dtype, p.device)
    elif frequencies.shape != (num_frequencies,):
        raise ValueError(f"expected {num_frequencies} frequencies, got {tuple(frequencies.shape)}")
    elif frequencies.dtype != p.dtype:
        frequencies = frequencies.to(p.dtype)
    angles = (p[..., None, :] * frequencies[:, None]).flatten(-2)  # (..., K * D)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class FourierPositionEncoder(nn.Module):
    """gamma(p) -> 2-layer MLP -> out_dim (METHOD §3.3 eq. 7)."""

    def __init__(self, num_frequencies: int, out_dim: int, *, in_dim: int = 3, hidden_dim=None):
        super().__init__()
        if num_frequencies < 1 or out_dim < 1 or in_dim < 1:
            raise ValueError(
                f"need num_frequencies, out_dim, in_dim >= 1, got {num_frequencies}, {out_dim}, {in_dim}"
            )
        self.num_frequencies = num_frequencies
        self.in_dim = in_dim
        # a pure function of num_frequencies: not persistent, checkpoints are unchanged
        self.register_buffer("frequencies", fourier_frequencies(num_frequencies), persistent=False)
        hidden_dim = hidden_dim or out_dim
        self.mlp = nn.Sequential(
            nn.Linear(2 * in_dim * num_frequencies, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, p: Tensor) -> Tensor:  # (..., in_dim) -> (..., out_dim)
        if p.shape[-1] != self.in_dim:
            raise ValueError(f"expected (..., {self.in_dim}) coordinates, got {tuple(p.shape)}")
        return self.mlp(fourier_features(p, self.num_frequencies, self.frequencies))


# ---- continuous 3D RoPE (§1.3) -----------------------------------------------------------------


class RotationTable(NamedTuple):
    """The 3D RoPE rotations of one set of token points, built once and shared.

    Every attention over the same points with an equally configured `Rope3D` (q and k of a
    self-attention, every layer of a stack) rotates by the same angles, so the table is made
    once per forward (`Rope3D.table`) and passed down instead of the points.
    """

    rotation: Tensor  # (B, N, 1, head_dim // 2) complex e^{i theta}; 1 on the unrotated pairs
    rope_key: tuple   # (head_dim, scale, base) of the Rope3D that built it


class Rope3D(nn.Module):
    """Continuous 3D rotary position embedding.

    The head dim d is split into three equal parts, one per axis; each part has
    d_a = d // 3 rounded down to even channels, i.e. d_a / 2 rotation pairs (adjacent channels
    2i, 2i+1). Pair i of axis a rotates by `theta = scale * p_a * omega_i`,
    `omega_i = base^(-2i / d_a)`. Channels beyond 3 * d_a are left unrotated.
    Rotating queries and keys this way makes q_m . k_n depend on p_m - p_n only.
    The rotation is one complex multiplication of the channel pairs by e^{i theta} (`table`).
    """

    def __init__(self, head_dim: int, scale: float = 100.0, base: float = 100.0):
        super().__init__()
        axis_dim = (head_dim // 3) // 2 * 2
        if axis_dim < 2:
            raise ValueError(f"head_dim must be >= 6 for 3D RoPE (2 channels per axis), got {head_dim}")
        if not scale > 0 or not base > 1:
            raise ValueError(f"RoPE needs scale > 0 and base > 1, got scale={scale}, base={base}")
        self.head_dim = head_dim
        self.axis_dim = axis_dim
        self.scale = float(scale)
        self.key = (head_dim, float(scale), float(base))
        pair = torch.arange(axis_dim // 2, dtype=torch.float64)
        # Precomputed once; not persistent: it is a pure function of the constructor arguments.
        self.register_buffer("omega", (base ** (-2.0 * pair / axis_dim)).float(), persistent=False)

    def table(self, points: Tensor, dtype: torch.dtype = torch.float32) -> RotationTable:
        """points (B, N, 3) -> the RotationTable for features of `dtype`."""
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
        # Angles reach s * |p| ~ 100 rad: in half precision (autocast, .half()) a token's angle
        # would be off by ~0.1 rad, so angles and the rotation use at least float32.
        dtype = _geometry_dtype(dtype, points.dtype)
        theta = self.scale * points.to(dtype)[..., None] * self.omega.to(dtype)  # (B, N, 3, d_a/2)
        theta = theta.flatten(-2)
        # zero angles (rotation 1, exact) on the pairs beyond 3 * d_a
        theta = nn.functional.pad(theta, (0, self.head_dim // 2 - theta.shape[-1]))
        rotation = torch.polar(torch.ones_like(theta), theta)                    # (B, N, d/2)
        return RotationTable(rotation[:, :, None], self.key)

    def apply(self, x: Tensor, table: RotationTable) -> Tensor:
        """x (B, N, heads, d) rotated by `table` (B, N, 1, d/2) -> (B, N, heads, d); norms preserved."""
        if table.rope_key != self.key:
            raise ValueError(f"rotation table built by a Rope3D with (head_dim, scale, base)={table.rope_key}, "
                             f"this one has {self.key}")
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"expected head dim {self.head_dim}, got {tuple(x.shape)}")
        if table.rotation.shape[:2] != x.shape[:2]:
            raise ValueError(f"points must be {(x.shape[0], x.shape[1], 3)}, "
                             f"got a table for {tuple(table.rotation.shape[:2])}")
        paired = 2 * (self.head_dim // 2)
        dtype = table.rotation.real.dtype
        # each skipped no-op (full-width slice, same-dtype cast, contiguous copy) is one op less per call
        pairs = x if paired == self.head_dim else x[..., :paired]
        pairs = (pairs if pairs.dtype == dtype else pairs.to(dtype)).unflatten(-1, (-1, 2))
        pairs = torch.view_as_complex(pairs if pairs.is_contiguous() else pairs.contiguous())
        rotated = torch.view_as_real(pairs * table.rotation).flatten(-2)
        rotated = rotated if rotated.dtype == x.dtype else rotated.to(x.dtype)
        if paired == self.head_dim:
            return rotated
        return torch.cat([rotated, x[..., paired:]], dim=-1)

    def rotate(self, x: Tensor, points: Tensor) -> Tensor:
        """x (B, heads, N, d), points (B, N, 3) -> (B, heads, N, d) rotated; norms preserved."""
        if points.shape != (x.shape[0], x.shape[2], 3):
            raise ValueError(f"points must be {(x.shape[0], x.shape[2], 3)}, got {tuple(points.shape)}")
        return self.apply(x.transpose(1, 2), self.table(points, x.dtype)).transpose(1, 2)

    def forward(self, x: Tensor, points: Tensor) -> Tensor:
        return self.rotate(x, points)


class RopeAttention(nn.Module):
    """Multi-head attention with continuous 3D RoPE on queries and keys only (values untouched).

    Points are (B, N, 3) tensors or the `RotationTable`s of them (`rope.table`), which callers
    attending several times over the same points build once. The product runs in
    `scaled_dot_product_attention`; `attention_logits` spells the scores out.
    Rows whose keys are all padded return zeros (never NaN).
    """

    def __init__(
        self, dim: int, num_heads: int, scale: float = 100.0, base: float = 100.0, *, bias: bool = True
    ):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"dim={dim} must be a positive multiple of num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.rope = Rope3D(self.head_dim, scale=scale, base=base)
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:  # (B, N, C) -> (B, N, heads, d)
        return x.unflatten(-1, (self.num_heads, self.head_dim))

    def _tables(self, query_points, key_points, dtype) -> tuple[RotationTable, RotationTable]:
        def as_table(points):
            return points if isinstance(points, RotationTable) else self.rope.table(points, dtype)

        query_table = as_table(query_points)
        return query_table, (query_table if key_points is query_points else as_table(key_points))

    def _rotated_qk(self, query, key_value, query_points, key_points) -> tuple[Tensor, Tensor]:
        """rope(q), rope(k) as (B, heads, Nq|Nk, d)."""
        query_table, key_table = self._tables(query_points, key_points, query.dtype)
        q = self.rope.apply(self._heads(self.q_proj(query)), query_table)
        k = self.rope.apply(self._heads(self.k_proj(key_value)), key_table)
        return q.transpose(1, 2), k.transpose(1, 2)

    def attention_logits(
        self, query: Tensor, key_value: Tensor, query_points: Tensor, key_points: Tensor
    ) -> Tensor:
        """Pre-softmax logits (B, heads, Nq, Nk) = rope(q) . rope(k) / sqrt(d)."""
        q, k = self._rotated_qk(query, key_value, query_points, key_points)
        return q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)

    def forward(
        self,
        query: Tensor,
        key_value: Tensor,
        query_points: Tensor | RotationTable,
        key_points: Tensor | RotationTable,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """query (B,Nq,C), key_value (B,Nk,C), points (B,Nq,3)/(B,Nk,3), mask (B,Nk) True=ignore."""
        q, k = self._rotated_qk(query, key_value, query_points, key_points)
        v = self._heads(self.v_proj(key_value)).transpose(1, 2)                  # (B, heads, Nk, d)
        attend, empty_rows = None, None
        if key_padding_mask is not None:
            if key_padding_mask.shape != key_value.shape[:2]:
                raise ValueError(
                    f"key_padding_mask must be {tuple(key_value.shape[:2])}, got {tuple(key_padding_mask.shape)}"
                )
            empty_rows = key_padding_mask.all(dim=-1)                              # (B,)
            # A row with every key padded would be NaN: it attends to all keys and is zeroed below.
            attend = (~key_padding_mask | empty_rows[:, None])[:, None, None, :]   # (B, 1, 1, Nk)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attend)  # (B, heads, Nq, d)
        out = out.transpose(1, 2).flatten(-2)                                        # (B, Nq, C)
        if empty_rows is not None:
            out = out.masked_fill(empty_rows[:, None, None], 0.0)
        return self.out_proj(out)


class RopeTransformerBlock(nn.Module):
    """Pre-norm transformer encoder block: x + RopeAttention(norm(x)), then x + MLP(norm(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        scale: float = 100.0,
        base: float = 100.0,
        *,
        dropout: float = 0.0,
    ):
        super().__init__()
        if mlp_ratio <= 0 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"need mlp_ratio > 0 and dropout in [0, 1), got {mlp_ratio}, {dropout}")
        self.norm_attention = nn.LayerNorm(dim)
        self.attention = RopeAttention(dim, num_heads, scale=scale, base=base)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, points: Tensor | RotationTable, pad_mask: Tensor | None = None) -> Tensor:
        """x (B, N, C), points (B, N, 3) or their RotationTable, pad_mask (B, N) True = ignore -> (B, N, C)."""
        normed = self.norm_attention(x)
        x = x + self.dropout(self.attention(normed, normed, points, points, pad_mask))
        return x + self.dropout(self.mlp(self.norm_mlp(x)))
