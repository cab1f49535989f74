"""Coordinate-Driven 3D Self-Supervised Predictor (METHOD §3, 3DVLA §3.3).

Shapes: B batch, V views, h x w patch grid, N = V*h*w tokens (view-major, as in fusion),
C width, Nm masked tokens per sample, P completion queries.

Training (masked feature prediction, JEPA style):
- `block_mask`: asymmetric multi-view masking. Every view independently hides exactly
  round(ratio * h * w) patches chosen in square blocks (§3.1), so a region hidden in one view is
  often visible in another.
- Student context (ours): the fusion encoder runs on the features with the masked patches
  replaced by a learned `input_mask_feature` (the fusion has no key-padding input; a replaced
  token carries no content of its patch, only its 3D position). The predictor then attends to
  the visible context tokens only (masked ones are padded out of its cross-attention).
  Visible CNN features near a block edge still see a few masked pixels through their receptive
  field; block masks keep that leak to the block border.
- Targets (§3.5): an EMA teacher, a copy of the fusion encoder (momentum 0.996 -> 1 on a cosine
  schedule, no gradient), sees the unmasked input; its outputs at the masked tokens, layer-normed
  without affine (ours, as in I-JEPA / data2vec: per-token unit scale keeps the variance term's
  gamma = 1 meaningful), are the targets. Loss: `losses.predictor_loss` (§3.6).
Encodings (§3.3): context `c = M + gamma(P) + e_v`, queries `q = m + gamma(P_q) + e_v`, completion
queries use a learned "unseen" view embedding. gamma is the Fourier PE (after mapping the
workspace box to [-1, 1], as the fusion does) followed by an MLP.
Blocks (§3.4): RoPE cross-attention (queries -> visible context), RoPE self-attention among
queries, MLP; all pre-norm with residuals.

Inference (§3.7): no masking; the predictor answers the completion queries P_comp against the
full fusion memory and returns completion tokens; the completed points are the query points.
P_comp comes from the batch (COMPLETION_POINTS, from the data engineer's geometric completion
targets) when present; otherwise `propose_completion_points` builds it in torch from the
selected instances (ours): the observed patch points within `radius` of an instance centroid
are mirrored through the instance's vertical axis (the §3.2 geometric default at patch
resolution) and the mirrored points farthest from anything observed are kept by farthest-point
sampling; the centroid itself is always a candidate, so an instance with no observed neighbour
still gets one query.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from vla3d_ros.model.fusion import MultiViewSpatialFusion
from vla3d_ros.model.geometry_ops import FourierPositionEncoder, RopeAttention, RotationTable


def block_mask(batch: int, views: int, grid_hw: tuple[int, int], ratio: float, block: int,
               generator: torch.Generator | None = None, device=None) -> Tensor:
    """(B, V, h, w) bool, True = masked: exactly round(ratio*h*w) patches per view, in blocks.

    Each view draws one random score per `block` x `block` cell and patches inherit their cell's
    score; patches are ranked by (cell score, per-patch random tie-break) and the first `count`
    are masked, so whole cells go first and only the last cell may be partly masked.
    Views and samples are independent.
    """
    h, w = grid_hw
    count = int(round(ratio * h * w))
    if not 0 < count < h * w:
        raise ValueError(f"mask ratio {ratio!r} masks {count} of {h * w} patches; need 0 < count < h*w")
    # draw on the generator's device (a CPU generator may drive a CUDA model), then move
    draw_device = generator.device if generator is not None else device
    cells = torch.rand(batch, views, -(-h // block), -(-w // block), generator=generator, device=draw_device)
    scores = cells.repeat_interleave(block, 2).repeat_interleave(block, 3)[:, :, :h, :w].flatten(2).to(device)
    tie_break = torch.rand(batch, views, h * w, generator=generator, device=draw_device).to(device)
    # lexicographic order: sort by the tie-break, then stably by the cell score
    by_tie = torch.argsort(tie_break, dim=-1, descending=True)
    by_cell = torch.argsort(torch.gather(scores, 2, by_tie), dim=-1, descending=True, stable=True)
    index = torch.gather(by_tie, 2, by_cell)[..., :count]                         # (B, V, count)
    mask = torch.zeros(batch, views, h * w, dtype=torch.bool, device=device)
    return mask.scatter_(2, index, True).reshape(batch, views, h, w)


def ema_momentum(step: int, total_steps: int, start: float, end: float) -> float:
    """Cosine schedule from `start` at step 0 to `end` at `total_steps` (BYOL)."""
    if total_steps <= 0:
        return end
    progress = min(max(step / total_steps, 0.0), 1.0)
    return end - (end - start) * (math.cos(math.pi * progress) + 1.0) / 2.0


class PredictorBlock(nn.Module):
    """Cross-attention to the visible context, self-attention among queries, MLP (all RoPE, pre-norm)."""

    def __init__(self, dim: int, num_heads: int, rope_scale: float, rope_base: float) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.cross = RopeAttention(dim, num_heads, scale=rope_scale, base=rope_base)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attention = RopeAttention(dim, num_heads, scale=rope_scale, base=rope_base)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, queries: Tensor, query_points: Tensor | RotationTable, context: Tensor,
                context_points: Tensor | RotationTable, context_pad: Tensor | None,
                query_pad: Tensor | None) -> Tensor:
        """queries (B,Nq,C), context (B,N,C); points (B,Nq|N,3) or their RotationTables."""
        queries = queries + self.cross(self.norm_query(queries), self.norm_context(context),
                                       query_points, context_points, context_pad)
        normed = self.norm_self(queries)
        queries = queries + self.self_attention(normed, normed, query_points, query_points, query_pad)
        return queries + self.mlp(self.norm_mlp(queries))


class CompletionPredictor(nn.Module):
    """The §3 predictor, its EMA teacher and the learned encodings (module docstring)."""

    def __init__(self, dim: int, num_layers: int, num_heads: int, num_views: int, fusion: MultiViewSpatialFusion,
                 *, fourier_frequencies: int = 6, mask_ratio: float = 0.5, mask_block: int = 2,
                 rope_scale: float = 100.0, rope_base: float = 100.0) -> None:
        super().__init__()
        self.num_views, self.mask_ratio, self.mask_block = num_views, mask_ratio, mask_block
        self.position = FourierPositionEncoder(fourier_frequencies, dim)
        self.view_embedding = nn.Parameter(torch.randn(num_views + 1, dim) * 0.02)  # last = "unseen"
        self.query_mask_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.input_mask_feature = nn.Parameter(torch.randn(dim) * 0.02)
        self.blocks = nn.ModuleList(PredictorBlock(dim, num_heads, rope_scale, rope_base)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, dim)
        self.teacher = copy.deepcopy(fusion)
        self.teacher.requires_grad_(False)

    # ---- teacher -----------------------------------------------------------------------------
    def predictor_parameters(self):
        """Trainable parameters (everything but the EMA teacher)."""
        return (p for name, p in self.named_parameters() if not name.startswith("teacher."))

    @torch.no_grad()
    def reset_teacher(self, fusion: nn.Module) -> None:
        """teacher <- fusion (at the start of the stage that trains the predictor)."""
        self.teacher.load_state_dict(fusion.state_dict())

    @torch.no_grad()
    def teacher_equals(self, fusion: nn.Module) -> bool:
        """True when the teacher's weights are exactly the student fusion's (then so are its outputs)."""
        pairs = zip((*self.teacher.parameters(), *self.teacher.buffers()), (*fusion.parameters(), *fusion.buffers()),
                    strict=True)
        return all(torch.equal(teacher, student) for teacher, student in pairs)

    @torch.no_grad()
    def update_teacher(self, fusion: nn.Module, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * fusion, parameter by parameter."""
        for teacher_param, student_param in zip(self.teacher.parameters(), fusion.parameters(), strict=True):
            teacher_param.lerp_(student_param.detach(), 1.0 - momentum)
        for teacher_buffer, student_buffer in zip(self.teacher.buffers(), fusion.buffers(), strict=True):
            teacher_buffer.copy_(student_buffer)

    # ---- encodings ---------------------------------------------------------------------------
    def encode_points(self, points: Tensor) -> Tensor:  # (..., 3) -> (..., C)
        return self.position(self.teacher.normalise(points))

    def token_view_ids(self, grid_hw: tuple[int, int], views: int, device) -> Tensor:
        """(N,) view index of every token (view-major order)."""
        return torch.arange(views, device=device).repeat_interleave(grid_hw[0] * grid_hw[1])

    def context_tokens(self, memory: Tensor, points: Tensor, view_ids: Tensor) -> Tensor:
        """c = M + gamma(P) + e_v: memory (B,N,C), points (B,N,3), view_ids (N,) -> (B,N,C)."""
        return memory + self.encode_points(points) + self.view_embedding[view_ids]

    def predict(self, queries: Tensor, query_points: Tensor, context: Tensor, context_points: Tensor,
                context_pad: Tensor | None = None, query_pad: Tensor | None = None) -> Tensor:
        """Predictor blocks: queries (B,Nq,C) at (B,Nq,3) against context (B,N,C) -> (B,Nq,C)."""
        if self.blocks:
            # every attention of the stack rotates by the same angles: one table per point set
            rope = self.blocks[0].cross.rope
            query_points = rope.table(query_points, queries.dtype)
            context_points = rope.table(context_points, queries.dtype)
        for block in self.blocks:
            queries = block(queries, query_points, context, context_points, context_pad, query_pad)
        return self.head(self.norm(queries))

    # ---- training: masked prediction -----------------------------------------------------------
    def masked_prediction(self, fusion: nn.Module, features: Tensor, points: Tensor, point_valid: Tensor,
                          generator: torch.Generator | None = None, *, unmasked_memory: Tensor | None = None,
                          **fusion_kwargs) -> tuple[Tensor, Tensor]:
        """Predictions and teacher targets at the masked tokens.

        features (B,V,C,h,w), points (B,V,h,w,3), point_valid (B,V,h,w); `fusion` is the student
        encoder; `fusion_kwargs` are its camera arguments (depth-bin fallback).
        `unmasked_memory` (B,N,C), optional: `fusion`'s memory on these unmasked features. While the
        teacher's weights equal the fusion's (stage 2 freezes the fusion, so the EMA teacher stays
        an exact copy of it) that IS the teacher's output, and the teacher's forward is skipped.
        Returns (prediction (B,Nm,C), target (B,Nm,C)), Nm = V * round(ratio*h*w).
        """
        batch, views, dim, h, w = features.shape
        mask = block_mask(batch, views, (h, w), self.mask_ratio, self.mask_block, generator,
                          features.device)                                             # (B, V, h, w)
        hidden = torch.where(mask[:, :, None], self.input_mask_feature[:, None, None].to(features.dtype),
                             features)
        student = fusion(hidden, points, point_valid, **fusion_kwargs)
        view_ids = self.token_view_ids((h, w), views, features.device)
        context = self.context_tokens(student.memory, student.points, view_ids)     # (B, N, C)
        flat_mask = mask.flatten(1)                                                  # (B, N)
        masked_index = flat_mask.nonzero()[:, 1].reshape(batch, -1)                  # (B, Nm)
        query_points = torch.gather(student.points, 1, masked_index[..., None].expand(-1, -1, 3))
        queries = (self.query_mask_token + self.encode_points(query_points)
                   + self.view_embedding[view_ids[masked_index]])
        prediction = self.predict(queries, query_points, context, student.points, flat_mask)
        with torch.no_grad():
            if unmasked_memory is not None and self.teacher_equals(fusion):
                teacher = unmasked_memory.detach()
            else:
                teacher = self.teacher(features, points, point_valid, **fusion_kwargs).memory
            target = nn.functional.layer_norm(teacher, (dim,))
            target = torch.gather(target, 1, masked_index[..., None].expand(-1, -1, dim))
        return prediction, target

    # ---- inference: completion -----------------------------------------------------------------
    def complete(self, memory: Tensor, token_points: Tensor, grid_hw: tuple[int, int], views: int,
                 completion_points: Tensor, completion_valid: Tensor) -> Tensor:
        """Completion tokens (B,P,C) for queries at completion_points (B,P,3), valid (B,P).

        The context is the full (unmasked) fusion memory (B,N,C) at token_points (B,N,3).
        """
        view_ids = self.token_view_ids(grid_hw, views, memory.device)
        context = self.context_tokens(memory, token_points, view_ids)
        unseen = self.view_embedding[self.num_views]
        queries = self.query_mask_token + self.encode_points(completion_points) + unseen
        return self.predict(queries, completion_points, context, token_points, None, ~completion_valid)


def farthest_point_sample(points: Tensor, valid: Tensor, start: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Farthest point sampling. points (M,K,3), valid (M,K), start (M,) index of the first pick.

    Returns index (M,count) and picked (M,count) bool; a pick is False once every remaining
    valid candidate coincides with an already picked one (fewer distinct points than `count`).
    """
    rows = torch.arange(points.shape[0], device=points.device)
    nearest = torch.full(valid.shape, math.inf, dtype=points.dtype, device=points.device)
    nearest = nearest.masked_fill(~valid, -1.0)
    index, picked = [start], [valid[rows, start]]
    current = start
    for _ in range(count - 1):
        distance = ((points - points[rows, current][:, None]) ** 2).sum(-1)
        nearest = torch.where(valid, torch.minimum(nearest, distance), nearest)
        best, current = nearest.max(dim=1)
        index.append(current)
        picked.append(best > 0)
    return torch.stack(index, 1), torch.stack(picked, 1)


def propose_completion_points(refs: Tensor, scores: Tensor, instance_valid: Tensor, observed: Tensor,
                              observed_valid: Tensor, max_instances: int, points_per_instance: int,
                              radius: float) -> tuple[Tensor, Tensor, Tensor]:
    """Completion queries around the most confident instances (module docstring).

    refs (B,Q,3), scores (B,Q), instance_valid (B,Q), observed (B,N,3) patch points with
    observed_valid (B,N) (measured depth only). Returns points (B,P,3), valid (B,P) and
    instance (B,P) index into Q, P = max_instances * points_per_instance.
    """
    batch, num_queries = scores.shape
    chosen_count = min(max_instances, num_queries)
    ranked = torch.where(instance_valid, scores, torch.full_like(scores, -math.inf))
    top_scores, chosen = torch.topk(ranked, chosen_count, dim=1)                      # (B, I)
    chosen_valid = torch.isfinite(top_scores)
    centre = torch.gather(refs, 1, chosen[..., None].expand(-1, -1, 3))                # (B, I, 3)
    offset = observed[:, None] - centre[:, :, None]                                     # (B, I, N, 3)
    near = observed_valid[:, None] & (offset.norm(dim=-1) <= radius)                    # (B, I, N)
    # Only the n observed points near some instance can be a candidate or a neighbour: the rest
    # are dropped here (a few of the N patch points), keeping their order, so every pick, tie
    # and distance below is what the full (B, I, 1+N, N) computation gives, at a fraction of it.
    kept = near.any(dim=1).any(dim=0).nonzero()[:, 0]                                   # (n,)
    near, offset, observed = near[:, :, kept], offset[:, :, kept], observed[:, kept]
    mirrored = torch.cat([centre[:, :, None, :2] - offset[..., :2], observed[:, None, :, 2:].expand(
        -1, chosen_count, -1, -1)], dim=-1)                                             # (B, I, n, 3)
    candidates = torch.cat([centre[:, :, None], mirrored], dim=2)                       # (B, I, 1+n, 3)
    candidate_valid = torch.cat([chosen_valid[..., None], near & chosen_valid[..., None]], dim=2)
    # distance of each candidate to the nearest observed point of the instance: the hidden side
    if kept.numel():
        gap = ((candidates[:, :, :, None] - observed[:, None, None]) ** 2).sum(-1)      # (B, I, 1+n, n)
        gap = gap.masked_fill(~near[:, :, None], math.inf).amin(-1)
        gap = torch.where(torch.isfinite(gap), gap, torch.zeros_like(gap))
    else:                                                # no observed point near any instance
        gap = candidates.new_zeros(candidates.shape[:3])
    start = torch.where(candidate_valid, gap, torch.full_like(gap, -1.0)).argmax(-1)     # (B, I)
    flat_candidates = candidates.flatten(0, 1)
    index, picked = farthest_point_sample(flat_candidates, candidate_valid.flatten(0, 1), start.flatten(),
                                          points_per_instance)
    rows = torch.arange(flat_candidates.shape[0], device=refs.device)[:, None]
    points = flat_candidates[rows, index].reshape(batch, chosen_count * points_per_instance, 3)
    valid = picked.reshape(batch, -1)
    instance = chosen[..., None].expand(-1, -1, points_per_instance).reshape(batch, -1)
    return points, valid, instance
