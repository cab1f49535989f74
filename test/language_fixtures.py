"""A deterministic stand-in for the sentence encoder whose similarity means something."""
from __future__ import annotations

import hashlib

import numpy as np


class BagOfWordsEncoder:
    """Cosine similarity is word overlap: each word a fixed random vector, a sentence the
    normalised sum of its words'. Same `embed` / `embed_batch` contract as `base.InstructionEncoder`;
    counts encoder calls (a batch is one)."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls = 0

    def embed(self, instruction: str) -> np.ndarray:
        self.calls += 1
        return self._vector(instruction)

    def embed_batch(self, instructions: list[str]) -> np.ndarray:
        self.calls += 1
        return np.stack([self._vector(text) for text in instructions])

    def _vector(self, instruction: str) -> np.ndarray:
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        total = np.zeros(self.dim)
        for word in instruction.lower().split():
            seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
            total += np.random.default_rng(seed).normal(size=self.dim)
        return (total / np.linalg.norm(total)).astype(np.float32)
