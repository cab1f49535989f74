"""Reasoning anchor (METHOD.md §8, from 3DThinkVLA), in our directly supervised form.

3DThinkVLA places an anchor token between the instruction and the action queries; a teacher
branch that is given explicit 3D facts (object centroids, relations) trains it to summarize
them, and the student's anchor is distilled from the teacher. Ours: the explicit fact is the
one the task turns on, the 3D centroid of the object the instruction names (base frame,
metres), and the anchor regresses it directly from the same context the action queries see; the
"teacher" is the pseudo-label itself (METHOD §2.8), so no second branch is trained. Training only
needs the fact; at inference the anchor runs without it.

    instruction (B,E) --query--> (B,1,C) --cross-attends to context (B,M,C)--> anchor (B,C)
    anchor --fact_head--> instructed object's centroid (B,3)          (supervised, training only)
    anchor --to_query (zero-initialised)--> offset added to every action query (B,C)

Why (docs/results.md, session 5): with every goal of one layout in the data, our policies came
to follow the side word but none followed the colour word (goal_variant_probe.py: colour gain
0.00); which can to push is decided by the first ~20 steps of a straight approach, and the
action loss alone never taught the policy to find the named object. The fact loss asks for
exactly that on every frame. `to_query` starts at zero, so a head gaining the anchor predicts
what it did before.

Grounding (ours, `action_head.grounding_weight` > 0): the fact alone was learned as "the can near
the tool" (session 5: the anchor picked the named can on the first frame 50 % of the time). Which
object the instruction names is itself a fact the pseudo-labels give densely, per visual token:

    logits_i = <W_q e, W_k v_i + W_c c_i> / sqrt(C) over the N trunk visual tokens v (B,N,C)
               and their patches' cell-mean colours c (B,N,K)                     (ObjectGrounding)
    target_i = share of the instructed object's mask pixels inside token i's patch (sums to 1)
    grounding loss = cross-entropy(softmax(logits), target)

and the anchor's query gains the grounded features sum_i softmax(logits)_i W_v v_i, so the token
that regresses the centroid and offsets the actions starts from the named object. The scores also
locate it in 3D without parameters: the named point p = sum_i w_i x_i over the tokens' base-frame
points x (METHOD §1.1, depth-valid tokens, w = softmax renormalised over them); the fact is p plus
a learned correction, and p - p_ee (the way from the tool to the named object) offsets every
action query through the end-effector-relative encoding of METHOD §4 (zero at init). Why: with
the grounding right 0.97 of the time, an anchor that had to learn the centroid from the grounded
features still picked the named can 0.51 of the time after 650 steps, and the actions ignored
the colour word (gain 0.00). A bilinear
score of text and token is the simplest form in which "red" can select red patches. Why it also
reads the raw patch colours c: trained jointly, a score on the trunk tokens alone stopped at "one
of the two cans" (its top token on the named can 0.42-0.53 on first frames over 550-1,300
steps); fitted offline on one checkpoint's frozen tokens it reached 0.53-0.85 depending on the
checkpoint, on the raw colours alone 0.84, on both 0.97 (session 6, docs/results.md). With all
of it (experiment 12, the shipped checkpoint) the actions follow the colour word (probe gain
0.41, direction right in every layout) and push_to_zone succeeds in 82 % of held-out episodes,
against 44 % for the previous checkpoint and 14 % for the anchor without grounding.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from vla3d_ros.model.aggregation import EndEffectorPositionEncoding

FACT_SCALE = 0.05   # m: a 5 cm centroid error costs 1, the size of a normalised action error


class GroundingInputs(NamedTuple):
    """What the grounding reads besides the context, per visual token in the trunk's order."""
    colours: Tensor                # (B, N, K) cell-mean colours of each token's patch
    points: Tensor                 # (B, N, 3) base-frame point of each token (metres)
    point_valid: Tensor            # (B, N) bool: the token's depth was valid
    ee_position: Tensor            # (B, 3) end-effector position, base frame


class AnchorOutput(NamedTuple):
    offset: Tensor                 # (B, C) added to every action query
    fact: Tensor                   # (B, 3) instructed object's centroid, metres, base frame
    grounding: Tensor | None       # (B, N) logits over the visual tokens, None without grounding


class ObjectGrounding(nn.Module):
    """Bilinear instruction-to-token score and the features it selects (module docstring)."""

    def __init__(self, dim: int, instruction_dim: int, colour_dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(instruction_dim, dim)
        self.key = nn.Linear(dim, dim)
        self.colour_key = nn.Linear(colour_dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)

    def forward(self, instruction: Tensor, visual: Tensor, colours: Tensor) -> tuple[Tensor, Tensor]:
        """instruction (B,E), visual (B,N,C), colours (B,N,K) -> logits (B,N), grounded features (B,C)."""
        query = self.query(instruction)                                              # (B, C)
        keys = self.key(visual) + self.colour_key(colours)                           # (B, N, C)
        logits = torch.einsum("bc,bnc->bn", query, keys) / math.sqrt(visual.shape[-1])
        grounded = torch.einsum("bn,bnc->bc", logits.softmax(dim=-1), self.value(visual))
        return logits, grounded


class ReasoningAnchor(nn.Module):
    """One instruction-conditioned token that cross-attends to the context (module docstring).

    `visual_tokens` > 0 adds ObjectGrounding over context[:, 1:1+visual_tokens], the trunk's
    visual tokens (`policy.VLA3DPolicy._context` puts them right after the instruction token),
    and their `colour_dim` patch colours."""

    def __init__(self, dim: int, instruction_dim: int, heads: int, visual_tokens: int = 0, colour_dim: int = 0,
                 fourier_frequencies: int = 6) -> None:
        super().__init__()
        self.visual_tokens = visual_tokens
        self.grounding = ObjectGrounding(dim, instruction_dim, colour_dim) if visual_tokens else None
        self.point_to_query = EndEffectorPositionEncoding(dim, fourier_frequencies) if visual_tokens else None
        self.query = nn.Linear(instruction_dim, dim)
        self.attend = nn.TransformerDecoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu",
                                                 batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(dim)
        self.fact_head = nn.Linear(dim, 3)
        self.to_query = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_query.weight)
        nn.init.zeros_(self.to_query.bias)

    def forward(self, instruction: Tensor, context: Tensor, context_pad: Tensor,
                grounding_inputs: GroundingInputs | None = None) -> AnchorOutput:
        """instruction (B,E), context (B,M,C), context_pad (B,M) True=ignore, grounding_inputs
        (with grounding only) -> AnchorOutput."""
        query = self.query(instruction)[:, None]                                  # (B, 1, C)
        if self.grounding is None:
            anchor = self.norm(self.attend(query, context, memory_key_padding_mask=context_pad))[:, 0]   # (B, C)
            return AnchorOutput(self.to_query(anchor), self.fact_head(anchor), None)
        if grounding_inputs is None or grounding_inputs.colours.shape[1] != self.visual_tokens:
            got = None if grounding_inputs is None else tuple(grounding_inputs.colours.shape)
            raise ValueError(f"the anchor's grounding needs GroundingInputs over {self.visual_tokens} visual tokens, "
                             f"got colours {got}")
        logits, grounded = self.grounding(instruction, context[:, 1:1 + self.visual_tokens], grounding_inputs.colours)
        named_point = grounded_point(logits, grounding_inputs.points, grounding_inputs.point_valid)   # (B, 3)
        anchor = self.norm(self.attend(query + grounded[:, None], context, memory_key_padding_mask=context_pad))[:, 0]
        offset = self.to_query(anchor) + self.point_to_query(named_point[:, None], grounding_inputs.ee_position)[:, 0]
        return AnchorOutput(offset, named_point + self.fact_head(anchor), logits)


def grounded_point(logits: Tensor, points: Tensor, point_valid: Tensor) -> Tensor:
    """logits (B,N), points (B,N,3), point_valid (B,N) -> (B,3): the points averaged with the
    softmax of the logits over the valid tokens; the origin where no token is valid."""
    weights = logits.masked_fill(~point_valid, float("-inf")).softmax(dim=-1).nan_to_num(0.0)   # (B, N)
    return torch.einsum("bn,bnk->bk", weights, points.to(weights.dtype))


def grounding_target(masks: Tensor, object_row: Tensor, grid_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Where the instructed object is, per visual token.

    masks (B,T,V,Hm,Wm) bool pseudo-label masks; object_row (B,) its row, -1 unknown ->
    target (B, V*h*w) each token's share of the object's mask pixels (rows sum to 1 where known),
    known (B,) bool: the row is known and the object is visible in some view.
    """
    rows = object_row.clamp(min=0)
    mask = masks.gather(1, rows[:, None, None, None, None].expand(-1, 1, *masks.shape[2:]))[:, 0]   # (B, V, Hm, Wm)
    cover = nn.functional.interpolate(mask.float(), size=grid_hw, mode="area").flatten(1)           # (B, V*h*w)
    total = cover.sum(dim=1)
    known = (object_row >= 0) & (total > 0)
    return cover / total.clamp(min=1e-12)[:, None], known


def grounding_loss(logits: Tensor, target: Tensor, known: Tensor) -> Tensor:
    """Cross-entropy of softmax(logits) (B,N) against the target shares (B,N) over the known
    samples (B,); zero (with a gradient path) when none is known."""
    if not bool(known.any()):
        return logits.sum() * 0.0
    cross_entropy = -(target.to(logits.dtype) * logits.log_softmax(dim=-1)).sum(dim=-1)                # (B,)
    return cross_entropy[known].mean()


def anchor_fact_loss(predicted: Tensor, centroids: Tensor, centroid_valid: Tensor, object_row: Tensor) -> Tensor:
    """L1 (in FACT_SCALE units, summed over xyz) between the predicted and labelled centroid of the
    instructed object, over the samples where it is known.

    predicted (B,3); centroids (B,T,3) and centroid_valid (B,T): the pseudo-labels' instance axis;
    object_row (B,) int: the instructed object's row in it, -1 where the data cannot say.
    Zero (with a gradient path) when no sample in the batch has the fact.
    """
    rows = object_row.clamp(min=0)
    target = centroids.gather(1, rows[:, None, None].expand(-1, 1, 3))[:, 0]             # (B, 3)
    known = (object_row >= 0) & centroid_valid.gather(1, rows[:, None])[:, 0]             # (B,)
    if not bool(known.any()):
        return predicted.sum() * 0.0
    error = (predicted - target.to(predicted.dtype)).abs().sum(dim=-1) / FACT_SCALE       # (B,)
    return error[known].mean()


def instructed_object_row(instruction: str, object_ids: dict[str, int]) -> int:
    """Row of the object the instruction names first in the pseudo-labels' instance axis, which
    lists an episode's objects by ascending segmentation id (`dataset._make_labeler`); -1 if it
    names none. Our training templates name the manipulated object first ("push the red can ...",
    "stack the red cube on the blue cube", "put the red cube in the bowl")."""
    text = instruction.lower()
    found = [(text.find(name.lower()), -len(name), int(ident)) for name, ident in object_ids.items()
             if name.lower() in text]
    if not found:
        return -1
    first = min(found)[2]        # earliest mention; the longer name wins a tie ("red cube" vs "cube")
    return sorted(int(i) for i in object_ids.values()).index(first)
