"""Object-Centric 3D Instance Module (METHOD.md §2.1-2.7, §2.11; 3DVLA §3.2).

Q probes (s_j in R^C, r_j in R^3) live in the base frame. Each decoder layer:
1. self-attention among probes, with 3D RoPE at the reference points (ours: lets probes that sit
   on the same object see each other, as the self-attention of DETR decoders does);
2. projects r_j into every view with the depth clamp (§2.3) and samples the per-view pyramid with
   multi-scale deformable cross-attention (§2.4) -> one feature f_jv per view;
3. occlusion-aware gating over views (§2.5): `s_j += sum_v g_jv f_jv`, invalid views masked out;
4. a pre-norm MLP on s_j;
5. bounded refinement (§2.6): `r_j <- sg(r_j) + lambda * tanh(MLP(s_j))`.
Heads (§2.7), shared by all layers: objectness logit; per view, from s_j plus a view-specific
encoding of the projected point, a 2D box and a mask embedding (mask logits = dot product with
the stride-4 map M_mask).

Conventions and choices (ours):
- Image-normalised coordinates and `grid_sample(align_corners=False)` as in `geometry_ops`:
  every pyramid level tiles the image exactly, so one projection addresses all levels.
- Offsets Δp are in units of the sampled level's cells (deformable DETR), initialised to the
  directional pattern of deformable DETR; attention weights start uniform.
- The box centre is predicted relative to the projected reference point:
  `(cx, cy) = sigmoid(logit(clamp(uv)) + Δ)` (deformable DETR's box refinement in the image),
  w, h = sigmoid(.). All four stay in [0, 1].
- The refinement bound is per axis: tanh is element-wise, so each coordinate moves at most
  lambda per layer. The last refinement layer is zero-initialised (training starts with r_j
  fixed) and the objectness bias starts at the focal-loss prior 0.01.
- Gradient paths: sampling pivots and the head's view encodings use detached reference points;
  the L1(r, c) loss reaches each layer's refinement MLP through that layer's output refs and the
  learnable initial r_j through layer 0 (its input is not detached).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vla3d_ros.model.geometry_ops import (
    CameraProjection,
    FourierPositionEncoder,
    RopeAttention,
    image_to_grid,
    workspace_box,
)

__all__ = [
    "FeaturePyramid",
    "FlatPyramid",
    "InstanceLayerOutput",
    "InstanceModule",
    "InstanceOutput",
    "MultiScaleDeformableAttention",
    "SelectedInstances",
    "ViewGate",
]

# Keeps logit(uv) finite for reference points projected onto or beyond the image border.
_UV_LOGIT_EPS = 1e-4
# Objectness prior: sigma(bias) = 0.01 at initialisation (RetinaNet / deformable DETR).
_OBJECTNESS_PRIOR = 0.01
_MASK_STRIDE = 4
_FIRST_LEVEL_STRIDE = 8


class InstanceLayerOutput(NamedTuple):
    """Predictions of one decoder layer (deep supervision)."""

    logits: Tensor  # (B, Q)
    boxes: Tensor  # (B, Q, V, 4) cx, cy, w, h in [0, 1]
    refs: Tensor  # (B, Q, 3)


@dataclass
class InstanceOutput:
    tokens: Tensor  # (B, Q, C) final probe states s_j
    refs: Tensor  # (B, Q, 3) final reference points r_j, base frame
    logits: Tensor  # (B, Q) objectness logits
    boxes: Tensor  # (B, Q, V, 4) cx, cy, w, h in [0, 1]
    mask_logits: Tensor | None  # (B, Q, V, Hm, Wm) at stride 4; None when not asked for (`with_masks`)
    visible: Tensor  # (B, Q, V) bool: r_j in front of camera v and inside its image
    aux: list[InstanceLayerOutput]  # layers 0..L-2 (the last layer is the fields above); [] without `with_aux`
    gates: Tensor  # (B, Q, V) gating weights of the last layer (0 on invalid views)
    uv: Tensor  # (B, Q, V, 2) image-normalised projection of `refs`


@dataclass
class SelectedInstances:
    """The instance tokens that leave the module (METHOD §2.11), K = max_instances."""

    tokens: Tensor  # (B, K, C) s_j, zero where not valid
    refs: Tensor  # (B, K, 3) r_j
    uncertainty: Tensor  # (B, K) u_j = 1 - sigma(l_j)
    valid: Tensor  # (B, K) bool: sigma(l_j) > threshold (use as the key padding mask)
    indices: Tensor  # (B, K) probe index j of each row, sorted by decreasing score


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))


def _resampler(dim: int, ratio: Fraction) -> nn.Module:
    """Map a patch-grid feature map to `ratio` times its stride with one learned conv."""
    if ratio == 1:
        return nn.Conv2d(dim, dim, kernel_size=1)
    if ratio > 1 and ratio.denominator == 1:
        factor = int(ratio)
        return nn.Conv2d(dim, dim, kernel_size=factor, stride=factor)
    if ratio < 1 and ratio.numerator == 1:
        factor = ratio.denominator
        return nn.ConvTranspose2d(dim, dim, kernel_size=factor, stride=factor)
    raise ValueError(f"cannot resample a patch grid by a stride ratio of {ratio}")


class FeaturePyramid(nn.Module):
    """Per-view pyramid from the memory (METHOD §2.2).

    Levels at image strides 8, 16, 32, ... (`num_levels` of them), each made from the patch grid
    (stride `patch_size`) by a strided conv (coarser), a transposed conv (finer) or a 1x1 conv
    (same stride), and a stride-4 map M_mask made from the stride-8 level by a transposed conv.
    Kernel = stride, so cell k of every level covers exactly image pixels [k*s, (k+1)*s): the
    levels stay aligned with `grid_sample`.
    """

    def __init__(self, dim: int, patch_size: int, num_levels: int = 3):
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        self.patch_size = patch_size
        self.level_strides = tuple(_FIRST_LEVEL_STRIDE * 2**level for level in range(num_levels))
        self.levels = nn.ModuleList(_resampler(dim, Fraction(s, patch_size)) for s in self.level_strides)
        # M_mask comes from the finest level (one 2x transposed conv for 8 -> 4), not straight from
        # the patch grid: a 16 -> 4 transposed conv would hold 16 C^2 weights (a quarter of the module).
        self.mask = _resampler(dim, Fraction(_MASK_STRIDE, self.level_strides[0]))

    def forward(self, maps: Tensor, with_mask: bool = True) -> tuple[list[Tensor], Tensor | None]:
        """maps (B*V, C, h, w) -> levels [(B*V, C, H/s, W/s)], M_mask (B*V, C, H/4, W/4) or None."""
        h, w = maps.shape[-2:]
        image_hw = (h * self.patch_size, w * self.patch_size)
        for stride in self.level_strides:
            if image_hw[0] % stride or image_hw[1] % stride:
                raise ValueError(
                    f"image {image_hw[0]}x{image_hw[1]} must be a multiple of the coarsest pyramid "
                    f"stride {stride} (levels {self.level_strides})"
                )
        levels = [level(maps) for level in self.levels]
        return levels, (self.mask(levels[0]) if with_mask else None)


class FlatPyramid(NamedTuple):
    """The pyramid levels as one token set, built once per forward for every layer that reads it."""

    tokens: Tensor                         # (B*V, S, C) every level's cells, level-major, row-major
    shapes: tuple[tuple[int, int], ...]    # (H_l, W_l) per level; S = sum of H_l * W_l
    cells: Tensor                          # (L, 1, 2) float: (W_l, H_l), level cells per image width / height

    @property
    def sizes(self) -> list[int]:
        return [height * width for height, width in self.shapes]

    @classmethod
    def of(cls, levels: Sequence[Tensor]) -> "FlatPyramid":
        """levels [(B*V, C, H_l, W_l)] -> FlatPyramid."""
        if len({level.shape[:2] for level in levels}) != 1:
            raise ValueError(f"pyramid levels must share (B*V, C), got {[tuple(level.shape) for level in levels]}")
        shapes = tuple((int(level.shape[-2]), int(level.shape[-1])) for level in levels)
        tokens = torch.cat([level.flatten(2) for level in levels], dim=2).transpose(1, 2)
        cells = torch.tensor([[[width, height]] for height, width in shapes], dtype=torch.float32,
                             device=tokens.device)
        return cls(tokens, shapes, cells)


class MultiScaleDeformableAttention(nn.Module):
    """Deformable cross-attention of METHOD §2.4 (eq. 3), pure PyTorch with `grid_sample`.

    Offsets (heads x levels x points x 2) and weights (softmax over levels x points, per head)
    come from the query; each view is sampled around its own projected reference point.
    """

    def __init__(self, dim: int, num_heads: int = 8, num_levels: int = 3, num_points: int = 4):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"dim={dim} must be a positive multiple of num_heads={num_heads}")
        if num_levels < 1 or num_points < 1:
            raise ValueError(f"need num_levels, num_points >= 1, got {num_levels}, {num_points}")
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.head_dim = dim // num_heads
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Deformable DETR: head h looks in direction 2*pi*h/heads, point k at distance k+1 cells.
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        distances = torch.arange(1, self.num_points + 1, dtype=torch.float32)
        bias = directions[:, None, None, :] * distances[None, None, :, None]
        bias = bias.expand(self.num_heads, self.num_levels, self.num_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)

    def forward(self, query: Tensor, reference_uv: Tensor, levels: Sequence[Tensor] | FlatPyramid) -> Tensor:
        """query (B,Q,C), reference_uv (B,Q,V,2) image-normalised, levels [(B*V,C,H_l,W_l)] or their
        `FlatPyramid` (what callers attending several times to one pyramid build once) -> (B,Q,V,C).

        Every level is projected by one `value_proj` call and sampled at locations computed for
        all levels at once: a fixed number of ops per call whatever the number of levels.
        """
        batch, num_queries, views = reference_uv.shape[:3]
        pyramid = levels if isinstance(levels, FlatPyramid) else FlatPyramid.of(levels)
        if len(pyramid.shapes) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} pyramid levels, got {len(pyramid.shapes)}")
        if pyramid.tokens.shape[0] != batch * views:
            raise ValueError(f"pyramid holds {pyramid.tokens.shape[0]} maps per level, expected B*V={batch * views}")
        heads, points = self.num_heads, self.num_points
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, self.num_levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, self.num_levels * points)
        weights = weights.softmax(dim=-1)
        value = self.value_proj(pyramid.tokens)                                     # (B*V, S, C)
        value = value.view(batch * views, -1, heads, self.head_dim).permute(0, 2, 3, 1)
        value = value.reshape(batch * views * heads, self.head_dim, -1)              # (B*V*heads, d, S)
        # (B, Q, V, heads, L, P, 2): the same query offsets around each view's own pivot, in level cells.
        location = reference_uv[:, :, :, None, None, None, :] + offsets[:, :, None] / pyramid.cells.to(offsets.dtype)
        grid = image_to_grid(location).permute(0, 2, 3, 1, 4, 5, 6)                 # (B, V, heads, Q, L, P, 2)
        grid = grid.reshape(batch * views * heads, num_queries, self.num_levels, points, 2)
        sampled = [F.grid_sample(level_value.unflatten(-1, shape), grid[:, :, index], mode="bilinear",
                                 padding_mode="zeros", align_corners=False)
                   for index, (level_value, shape) in enumerate(zip(value.split(pyramid.sizes, -1), pyramid.shapes))]
        stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B*V*heads, d, Q, L*P)
        weights = weights.permute(0, 2, 1, 3)[:, None].expand(batch, views, heads, num_queries, -1)
        weights = weights.reshape(batch * views * heads, 1, num_queries, -1)
        out = (stacked * weights).sum(dim=-1)  # (B*V*heads, d, Q)
        out = out.view(batch, views, heads, self.head_dim, num_queries).permute(0, 4, 1, 2, 3)
        return self.output_proj(out.flatten(-2))  # (B, Q, V, C)


class ViewGate(nn.Module):
    """Occlusion-aware gating over views (METHOD §2.5).

    `g_jv = softmax_v(score_jv / tau)`, `score_jv = MLP([s_j, f_jv])`, tau = exp(log_tau)
    learnable (> 0 by construction). Invalid views get exactly zero weight; a probe with no
    valid view gets an all-zero gate, hence a zero update.
    """

    def __init__(self, dim: int, initial_temperature: float = 1.0):
        super().__init__()
        if not initial_temperature > 0:
            raise ValueError(f"initial_temperature must be > 0, got {initial_temperature}")
        self.score = _mlp(2 * dim, dim, 1)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(initial_temperature)))

    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.exp()

    def forward(self, state: Tensor, view_features: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """state (B,Q,C), view_features (B,Q,V,C), valid (B,Q,V) -> gates (B,Q,V), update (B,Q,C)."""
        expanded = state[:, :, None].expand_as(view_features)
        scores = self.score(torch.cat([expanded, view_features], dim=-1)).squeeze(-1) / self.temperature
        # finfo.min, not -inf: an all-invalid row becomes a finite uniform softmax, zeroed next.
        scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
        gates = scores.softmax(dim=-1) * valid.to(scores.dtype)
        update = torch.einsum("bqv,bqvc->bqc", gates, view_features)
        return gates, update


class _DecoderLayer(nn.Module):
    def __init__(
        self, dim: int, num_heads: int, num_levels: int, num_points: int, max_step: float,
        rope_scale: float, rope_base: float,
    ):
        super().__init__()
        self.max_step = max_step
        self.norm_self = nn.LayerNorm(dim)
        self.self_attention = RopeAttention(dim, num_heads, scale=rope_scale, base=rope_base)
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attention = MultiScaleDeformableAttention(dim, num_heads, num_levels, num_points)
        self.gate = ViewGate(dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, 4 * dim, dim)
        self.refine = _mlp(dim, dim, 3)
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)

    def forward(self, state, refs, uv, visible, levels):
        """state (B,Q,C), refs (B,Q,3) layer input, uv (B,Q,V,2), visible (B,Q,V) of sg(refs)."""
        normed = self.norm_self(state)
        pivots = refs.detach()
        state = state + self.self_attention(normed, normed, pivots, pivots)
        normed = self.norm_cross(state)
        view_features = self.cross_attention(normed, uv, levels)  # (B, Q, V, C)
        gates, update = self.gate(normed, view_features, visible)
        state = state + update
        state = state + self.mlp(self.norm_mlp(state))
        refs = refs + self.max_step * torch.tanh(self.refine(state))
        return state, refs, gates


class InstanceModule(nn.Module):
    """3D instance probes decoded from the fused memory (METHOD §2).

    Args:
        dim: C.
        num_probes: Q (METHOD: 32).
        num_layers: decoder layers.
        num_heads: heads of the probe self-attention and the deformable attention.
        num_levels: pyramid levels (strides 8, 16, 32, ...).
        num_points: sampling points per head and level.
        max_step: lambda, largest move of r_j per layer and axis, metres.
        workspace_low, workspace_high: box over which the initial r_j are drawn uniformly.
        max_instances: K, rows returned by `select` (METHOD: 16).
        patch_size: image pixels per memory cell (the backbone's patch size).
        projection_eps: depth clamp of the projection, metres.
        view_frequencies: Fourier frequencies of the view-specific encoding of the projected point.
        rope_scale, rope_base: 3D RoPE of the probe self-attention.
    """

    def __init__(
        self,
        dim: int,
        num_probes: int = 32,
        num_layers: int = 3,
        num_heads: int = 8,
        num_levels: int = 3,
        num_points: int = 4,
        max_step: float = 0.05,
        workspace_low: Sequence[float] = (-0.5, -0.5, 0.0),
        workspace_high: Sequence[float] = (0.5, 0.5, 0.5),
        max_instances: int = 16,
        *,
        patch_size: int = 16,
        projection_eps: float = 0.05,
        view_frequencies: int = 6,
        rope_scale: float = 100.0,
        rope_base: float = 100.0,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 1 <= max_instances <= num_probes:
            raise ValueError(f"need 1 <= max_instances <= num_probes={num_probes}, got {max_instances}")
        if not max_step > 0:
            raise ValueError(f"max_step (lambda) must be > 0 m, got {max_step}")
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        low, high = workspace_box(workspace_low, workspace_high)
        self.dim = dim
        self.num_probes = num_probes
        self.max_instances = max_instances
        self.patch_size = patch_size
        self.projection_eps = projection_eps
        self.probe_states = nn.Parameter(torch.randn(num_probes, dim))
        self.probe_points = nn.Parameter(low + torch.rand(num_probes, 3) * (high - low))
        self.pyramid = FeaturePyramid(dim, patch_size, num_levels)
        self.layers = nn.ModuleList(
            _DecoderLayer(dim, num_heads, num_levels, num_points, max_step, rope_scale, rope_base)
            for _ in range(num_layers)
        )
        self.norm_head = nn.LayerNorm(dim)
        self.objectness = nn.Linear(dim, 1)
        nn.init.constant_(self.objectness.bias, -math.log((1.0 - _OBJECTNESS_PRIOR) / _OBJECTNESS_PRIOR))
        self.view_encoder = FourierPositionEncoder(view_frequencies, dim, in_dim=2)
        self.box_head = _mlp(dim, dim, 4)
        self.mask_embedding = _mlp(dim, dim, dim)

    @staticmethod
    def _project(refs: Tensor, cameras: CameraProjection) -> tuple[Tensor, Tensor]:
        """Projection in full precision (geometry_ops); uv then joins the features' dtype."""
        uv, _, in_image = cameras(refs.detach())
        return uv.to(refs.dtype), in_image

    def _view_conditioned(self, state: Tensor, uv: Tensor) -> Tensor:
        """(B,Q,C), (B,Q,V,2) -> (B,Q,V,C): s_j plus the view-specific encoding of its projection."""
        return self.norm_head(state)[:, :, None] + self.view_encoder(uv)

    def _boxes(self, conditioned: Tensor, uv: Tensor) -> Tensor:
        raw = self.box_head(conditioned)  # (B, Q, V, 4)
        anchor = torch.logit(uv.clamp(_UV_LOGIT_EPS, 1.0 - _UV_LOGIT_EPS))
        return torch.cat([torch.sigmoid(anchor + raw[..., :2]), torch.sigmoid(raw[..., 2:])], dim=-1)

    def forward(
        self,
        memory: Tensor,
        grid_hw: Sequence[int],
        num_views: int,
        K: Tensor,
        T_base_cam: Tensor,
        image_hw: Sequence[int],
        *,
        with_masks: bool = True,
        with_aux: bool = True,
    ) -> InstanceOutput:
        """memory (B, N=V*h*w, C) in view-row-column order (fusion.py) -> InstanceOutput.

        `with_masks=False` skips M_mask and the mask logits (only the instance loss reads them;
        they are the module's largest tensors): `mask_logits` is then None.
        `with_aux=False` skips the heads of layers 0..L-2 (deep supervision only): `aux` is then
        empty; the last layer's outputs are the same either way.
        """
        h, w = int(grid_hw[0]), int(grid_hw[1])
        batch = memory.shape[0]
        if memory.ndim != 3 or memory.shape[1:] != (num_views * h * w, self.dim):
            raise ValueError(
                f"memory must be (B, V*h*w={num_views * h * w}, C={self.dim}), got {tuple(memory.shape)}"
            )
        if (h * self.patch_size, w * self.patch_size) != (int(image_hw[0]), int(image_hw[1])):
            raise ValueError(
                f"image_hw {tuple(image_hw)} is not the {h}x{w} grid times patch_size={self.patch_size}"
            )
        if K.shape[:2] != (batch, num_views):
            raise ValueError(f"K must be (B={batch}, V={num_views}, 3, 3), got {tuple(K.shape)}")
        maps = memory.reshape(batch, num_views, h, w, self.dim).permute(0, 1, 4, 2, 3)
        levels, mask_map = self.pyramid(maps.reshape(batch * num_views, self.dim, h, w), with_masks)
        levels = FlatPyramid.of(levels)

        state = self.probe_states.to(memory.dtype).expand(batch, -1, -1)
        refs = self.probe_points.to(memory.dtype).expand(batch, -1, -1)
        cameras = CameraProjection.of(K, T_base_cam, image_hw, eps=self.projection_eps)
        uv, visible = self._project(refs, cameras)
        aux: list[InstanceLayerOutput] = []
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            # Stop-gradient between layers (METHOD §2.6); layer 0 keeps the learnable init in the graph.
            layer_input = refs if index == 0 else refs.detach()
            state, refs, gates = layer(state, layer_input, uv, visible, levels)
            uv, visible = self._project(refs, cameras)
            if with_aux or index == last:
                conditioned = self._view_conditioned(state, uv)
                logits = self.objectness(self.norm_head(state)).squeeze(-1)
                boxes = self._boxes(conditioned, uv)
                aux.append(InstanceLayerOutput(logits, boxes, refs))
        final = aux.pop()
        mask_logits = None
        if with_masks:
            masks = mask_map.view(batch, num_views, self.dim, *mask_map.shape[-2:])
            mask_logits = torch.einsum("bqvc,bvchw->bqvhw", self.mask_embedding(conditioned), masks)
        return InstanceOutput(
            tokens=state,
            refs=final.refs,
            logits=final.logits,
            boxes=final.boxes,
            mask_logits=mask_logits,
            visible=visible,
            aux=aux,
            gates=gates,
            uv=uv,
        )

    def select(self, out: InstanceOutput, threshold: float = 0.5) -> SelectedInstances:
        """Top-K probes by sigma(l) (METHOD §2.11); rows at or below `threshold` are not valid."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        scores = torch.sigmoid(out.logits)  # (B, Q)
        top_scores, indices = scores.topk(self.max_instances, dim=1)  # sorted, decreasing
        valid = top_scores > threshold
        tokens = torch.gather(out.tokens, 1, indices[..., None].expand(-1, -1, out.tokens.shape[-1]))
        refs = torch.gather(out.refs, 1, indices[..., None].expand(-1, -1, 3))
        return SelectedInstances(
            tokens=tokens * valid[..., None].to(tokens.dtype),
            refs=refs,
            uncertainty=1.0 - top_scores,
            valid=valid,
            indices=indices,
        )
