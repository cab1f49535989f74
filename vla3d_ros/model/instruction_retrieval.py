"""(ours) Instruction retrieval: the policy acts on the trained instruction most similar to the one given.

Why: a policy reads its instruction through linear maps of the (whitened) sentence embedding, and
an embedding unlike any it trained on perturbs the whole motion, not only the choice of goal.
Measured on validation (docs/results.md, session 9): of the language suite's failures, about two in
three pushed the named can toward the named side and then overshot, toppled it or stopped short;
more training wordings (experiment 22) and noise on the instruction (experiment 23) removed the
wrong-side failures but not those. The frozen sentence encoder is trained for exactly one thing,
semantic similarity by cosine, so it is used for that: the instruction is replaced by the trained
instruction (one a demonstration was paired with, stored in the checkpoint) of highest cosine
similarity, and the policy sees an input it was trained on. A trained instruction maps to itself,
so nothing changes for them.

What it cannot do: act on a request no demonstration made (an object or goal never trained on is
mapped to the nearest trained one). `match` returns the chosen instruction and its similarity so a
node can show the operator what the robot understood. Measured without the language suite:
leaving each of push_to_zone's 31 training wordings out of the bank in turn, the nearest of the
other 30 names the same object and side for 85 % of its 12 requests
(`docs/experiments/instruction_retrieval_probe.py`); wordings unlike every trained one fare worst.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

TRAINING_INSTRUCTIONS_KEY = "training_instructions"   # checkpoint config.json "extra": sorted trained texts


class InstructionMatch(NamedTuple):
    instruction: str          # the trained instruction the policy acts on
    similarity: float         # its cosine similarity to the given one (1.0: the given one was trained)


class RetrievingInstructionEncoder:
    """An instruction encoder (same `embed(text) -> (E,) float32` interface) that returns the
    embedding of the most similar trained instruction.

    `encoder`: the sentence encoder the policy trained with (`base.InstructionEncoder` or any
    object with its `embed`). `trained`: the trained instructions (non-empty strings); they are
    embedded once, here (in one `embed_batch` call when the encoder has it: one call per text
    costs ~10x more), so the first control step pays nothing for them. Those embeddings only rank;
    what the policy gets is `encoder.embed` of the chosen instruction, exactly what it trained on.
    """

    def __init__(self, encoder, trained: Sequence[str]) -> None:
        texts = sorted(set(trained))
        if not texts:
            raise ValueError("instruction retrieval needs the trained instructions; got none "
                             f"(the checkpoint's {TRAINING_INSTRUCTIONS_KEY!r})")
        bad = [text for text in texts if not isinstance(text, str) or not text.strip()]
        if bad:
            raise ValueError(f"trained instructions must be non-empty strings, got {bad[:3]!r}")
        self.encoder = encoder
        self.trained = tuple(texts)
        self._trained = frozenset(texts)
        embed_batch = getattr(encoder, "embed_batch", None)
        embeddings = (embed_batch(list(texts)) if embed_batch is not None
                      else np.stack([encoder.embed(text) for text in texts]))
        embeddings = np.asarray(embeddings, np.float64)                                          # (M, E)
        self._unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)

    def match(self, instruction: str) -> InstructionMatch:
        """The trained instruction of highest cosine similarity (itself when it was trained)."""
        if instruction in self._trained:
            return InstructionMatch(instruction, 1.0)
        query = np.asarray(self.encoder.embed(instruction), np.float64)
        similarities = self._unit @ (query / np.linalg.norm(query))
        best = int(np.argmax(similarities))
        return InstructionMatch(self.trained[best], float(similarities[best]))

    def embed(self, instruction: str) -> np.ndarray:
        """(E,) float32: the encoder's embedding of `match(instruction).instruction`."""
        return self.encoder.embed(self.match(instruction).instruction)


def checkpoint_instruction_encoder(meta: dict, encoder=None, *, retrieval: bool = True, device: str = "cpu"):
    """The instruction encoder a checkpoint (its config.json contents `meta`) runs with: `encoder`
    (default: the bundled sentence encoder on `device`), wrapped in retrieval when `retrieval` is on
    and the checkpoint lists its trained instructions (checkpoints saved before they were recorded
    run without)."""
    from vla3d_ros.model.base import InstructionEncoder

    encoder = encoder or InstructionEncoder(device=device)
    trained = (meta.get("extra") or {}).get(TRAINING_INSTRUCTIONS_KEY)
    return RetrievingInstructionEncoder(encoder, trained) if retrieval and trained else encoder
