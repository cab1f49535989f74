"""Reasoning anchor (METHOD.md §8, from 3DThinkVLA), in our directly supervised form.

3DThinkVLA places an anchor token between the instruction and the action queries; a teacher
branch that is given explicit 3D facts (object centroids, relations) trains it to summarise
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
"""
from __future__ import annotations

from torch import Tensor, nn

FACT_SCALE = 0.05   # m: a 5 cm centroid error costs 1, the size of a normalised action error


class ReasoningAnchor(nn.Module):
    """One instruction-conditioned token that cross-attends to the context (module docstring)."""

    def __init__(self, dim: int, instruction_dim: int, heads: int) -> None:
        super().__init__()
        self.query = nn.Linear(instruction_dim, dim)
        self.attend = nn.TransformerDecoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu",
                                                 batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(dim)
        self.fact_head = nn.Linear(dim, 3)
        self.to_query = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_query.weight)
        nn.init.zeros_(self.to_query.bias)

    def forward(self, instruction: Tensor, context: Tensor, context_pad: Tensor) -> tuple[Tensor, Tensor]:
        """instruction (B,E), context (B,M,C), context_pad (B,M) True=ignore ->
        (action-query offset (B,C), instructed object's centroid (B,3) in metres)."""
        query = self.query(instruction)[:, None]                                  # (B, 1, C)
        anchor = self.norm(self.attend(query, context, memory_key_padding_mask=context_pad))[:, 0]   # (B, C)
        return self.to_query(anchor), self.fact_head(anchor)


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
