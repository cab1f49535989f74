"""Spatially-Conditioned Geometry Aggregation (METHOD §4, 3DVLA §3.4).

Shapes: B batch, Q instance tokens, P completion points, C width, k neighbours.

1. End-effector-relative PE (eq. 14): `gamma(p - p_ee)` -> MLP -> C, added to every instance and
   completion token. Offsets are in metres (no workspace normalisation: they are small and
   centred on the gripper by construction).
2. Local context (eq. 15): instance j attends to its k nearest completion points with logits
   `q_j . k_i / sqrt(d) - beta * |r_j - p_i|^2`, beta = softplus(raw) >= 0, one per head.
3. Routing (eq. 16): `g_j = sigma(MLP([s_j, z_j, u_j]))`, `s_j <- s_j + g_j * z_j`.

Identity at initialisation (ours, METHOD §4.3): the gate MLP's last layer is zero with bias −4,
the local attention's output projection is zero (so z_j = 0), and the EE-PE MLP's last layer is
zero too, so a stage-2 model starts as exactly its stage-1 self.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vla3d_ros.model.geometry_ops import FourierPositionEncoder


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


class EndEffectorPositionEncoding(nn.Module):
    """gamma(p - p_ee) -> MLP -> C; zero at initialisation (last layer zeroed)."""

    def __init__(self, dim: int, num_frequencies: int) -> None:
        super().__init__()
        self.encoder = FourierPositionEncoder(num_frequencies, dim)
        last = self.encoder.mlp[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, points: Tensor, ee_position: Tensor) -> Tensor:
        """points (B,M,3), ee_position (B,3) -> (B,M,C)."""
        return self.encoder(points - ee_position[:, None, :])


class KnnLocalAttention(nn.Module):
    """Distance-biased attention of each instance over its k nearest completion points (eq. 15)."""

    def __init__(self, dim: int, num_heads: int, k: int, beta_init: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.k = num_heads, dim // num_heads, k
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)
        self.beta_raw = nn.Parameter(torch.full((num_heads,), _inverse_softplus(beta_init)))

    @property
    def beta(self) -> Tensor:
        return F.softplus(self.beta_raw)  # (heads,) >= 0

    def neighbours(self, refs: Tensor, points: Tensor, points_valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The k nearest valid points of every ref.

        refs (B,Q,3), points (B,P,3), points_valid (B,P) ->
        index (B,Q,k) into P, squared distance (B,Q,k), valid (B,Q,k) (False past the valid points).
        """
        squared = ((refs[:, :, None] - points[:, None]) ** 2).sum(-1)             # (B, Q, P)
        squared = squared.masked_fill(~points_valid[:, None], math.inf)
        k = min(self.k, points.shape[1])
        distance, index = torch.topk(squared, k, dim=-1, largest=False)          # (B, Q, k)
        valid = torch.isfinite(distance)
        return index, torch.where(valid, distance, torch.zeros_like(distance)), valid

    def forward(self, tokens: Tensor, refs: Tensor, point_tokens: Tensor, points: Tensor,
                points_valid: Tensor) -> Tensor:
        """tokens (B,Q,C), refs (B,Q,3), point_tokens (B,P,C), points (B,P,3), valid (B,P) -> z (B,Q,C).

        An instance with no valid neighbour gets z = 0.
        """
        batch, num_queries, dim = tokens.shape
        if points.shape[1] == 0:
            return torch.zeros_like(tokens)
        index, squared, valid = self.neighbours(refs, points, points_valid)
        gathered = torch.gather(point_tokens[:, None].expand(-1, num_queries, -1, -1), 2,
                                index[..., None].expand(-1, -1, -1, dim))           # (B, Q, k, C)
        heads = (self.num_heads, self.head_dim)
        q = self.q_proj(tokens).unflatten(-1, heads)                                 # (B, Q, h, d)
        keys = self.k_proj(gathered).unflatten(-1, heads)                            # (B, Q, k, h, d)
        values = self.v_proj(gathered).unflatten(-1, heads)
        logits = torch.einsum("bqhd,bqkhd->bqhk", q, keys) / math.sqrt(self.head_dim)
        logits = logits - self.beta.to(logits.dtype)[:, None] * squared[:, :, None]  # (B, Q, h, k)
        logits = logits.masked_fill(~valid[:, :, None], torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=-1).masked_fill(~valid[:, :, None], 0.0)
        context = torch.einsum("bqhk,bqkhd->bqhd", weights, values).flatten(-2)      # (B, Q, C)
        return self.out_proj(context)


class RoutingGate(nn.Module):
    """g = sigma(MLP([s, z, u])) with the last layer zero and bias `gate_bias` (eq. 16)."""

    def __init__(self, dim: int, gate_bias: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * dim + 1, dim), nn.GELU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.constant_(self.mlp[-1].bias, gate_bias)

    def forward(self, tokens: Tensor, context: Tensor, uncertainty: Tensor) -> Tensor:
        """s (B,Q,C), z (B,Q,C), u (B,Q) -> s + g * z."""
        gate = torch.sigmoid(self.mlp(torch.cat([tokens, context, uncertainty[..., None]], dim=-1)))
        return tokens + gate * context


class GeometryAggregation(nn.Module):
    """EE-relative PE on instance and completion tokens, then uncertainty-guided routing."""

    def __init__(self, dim: int, *, ee_relative_pe: bool = True, routing: bool = True,
                 fourier_frequencies: int = 6, knn: int = 8, num_heads: int = 4,
                 distance_beta_init: float = 100.0, gate_bias: float = -4.0) -> None:
        super().__init__()
        self.ee_pe = EndEffectorPositionEncoding(dim, fourier_frequencies) if ee_relative_pe else None
        self.local = KnnLocalAttention(dim, num_heads, knn, distance_beta_init) if routing else None
        self.gate = RoutingGate(dim, gate_bias) if routing else None

    def forward(self, instance_tokens: Tensor, instance_refs: Tensor, uncertainty: Tensor,
                ee_position: Tensor, completion_tokens: Tensor | None = None,
                completion_points: Tensor | None = None,
                completion_valid: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """instance tokens (B,Q,C), refs (B,Q,3), u (B,Q), p_ee (B,3), completion tokens (B,P,C),
        points (B,P,3), valid (B,P) -> (instance tokens (B,Q,C), completion tokens (B,P,C) or None)."""
        if self.ee_pe is not None:
            instance_tokens = instance_tokens + self.ee_pe(instance_refs, ee_position)
            if completion_tokens is not None:
                completion_tokens = completion_tokens + self.ee_pe(completion_points, ee_position)
        if self.local is not None and completion_tokens is not None:
            context = self.local(instance_tokens, instance_refs, completion_tokens, completion_points,
                                 completion_valid)
            instance_tokens = self.gate(instance_tokens, context, uncertainty)
        return instance_tokens, completion_tokens
