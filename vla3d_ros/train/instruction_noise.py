"""`--instruction-noise NORM` (ours): isotropic Gaussian noise on each training sample's frozen
instruction embedding, before the policy whitens it.

Why: a wording the policy never trained on moves the sentence embedding partly along directions
no training wording varied along. The instruction whitening (`base.InstructionWhitening`)
amplifies exactly those directions the most (their training variance is ~0, so they are scaled by
~1/sqrt(WHITENING_EPS)), and every weight reading them (FiLM, the instruction token, the action
head's direct path) was never trained against variation there. Validation failures of the
language cell were mostly a degraded push on the *named* side, not the wrong side (session 9,
docs/results.md): the request was understood, the motion was disturbed. Noise of the size a new
wording adds teaches the policy that those directions carry nothing.

The size is measured on the training wordings alone (no evaluation wording is used):
`docs/experiments/instruction_noise_probe.py` renders every training wording for the training
objects and sides and reports how far each lies outside the span of the *other* wordings
(leave-one-wording-out); the median is the NORM to give. A direction drawn isotropically in 384
dimensions puts ~1/384 of its energy on any one direction, so the side and colour directions (the
largest of the training variance) move by a few percent of their separation.

The noise is drawn from the trainer's masking generator, so a resumed run stays bit-identical.
"""
from __future__ import annotations

import torch
from torch import Tensor

from vla3d_ros.types import INSTRUCTION_EMBEDDING


def with_instruction_noise(batch: dict[str, Tensor], norm: float, generator: torch.Generator) -> dict[str, Tensor]:
    """`batch` with `norm`-sized isotropic noise added to its (B, E) instruction embeddings.

    Each row gets N(0, norm^2 / E * I), whose length concentrates at `norm` (E = 384: within ~4 %).
    norm = 0 returns `batch` itself; other keys are shared, not copied.
    """
    if not norm > 0:
        return batch
    embedding = batch[INSTRUCTION_EMBEDDING]
    noise = torch.randn(embedding.shape, generator=generator, device=embedding.device, dtype=torch.float32)
    scale = norm / embedding.shape[-1] ** 0.5
    return {**batch, INSTRUCTION_EMBEDDING: embedding + (scale * noise).to(embedding.dtype)}
