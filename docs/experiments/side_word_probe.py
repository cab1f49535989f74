"""Probe (issue 16, language): can the side word of the language suite's held-out paraphrases be read
linearly from the frozen sentence embedding, given the training wordings?

For each set of training wordings (the first 11 = templates + the 8 paraphrases of session 8, and
all of them), embed every wording x 10 colours x {left, right}, fit a ridge read-out of the side
(lambda 1.0, centred on the training mean) and report its accuracy on each held-out paraphrase
level of push_to_zone, rendered the same way. A read-out that fails here cannot be learned by the
policy from those wordings either; one that succeeds says the information is there to learn.

Usage: python docs/experiments/side_word_probe.py
"""
from __future__ import annotations

import json

import numpy as np

from vla3d_ros.model.base import InstructionEncoder
from vla3d_ros.sim.tasks import PushToZone

COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black", "pink", "cyan")
SESSION_8_WORDINGS = 11
RIDGE = 1.0


def embedded(encoder: InstructionEncoder, wordings) -> tuple[np.ndarray, np.ndarray]:
    """-> (M, E) embeddings and (M,) True for "left"."""
    rows = [(encoder.embed(w.format(object=f"{c} can", side=s)), s == "left")
            for w in wordings for c in COLOURS for s in ("left", "right")]
    return np.stack([r[0] for r in rows]), np.array([r[1] for r in rows])


def side_readout_accuracy(train_wordings, held_out_levels, encoder) -> list[float]:
    x, left = embedded(encoder, train_wordings)
    mean = x.mean(0)
    design = np.c_[x - mean, np.ones(len(x))]
    weights = np.linalg.solve(design.T @ design + RIDGE * np.eye(design.shape[1]), design.T @ (2.0 * left - 1.0))
    accuracies = []
    for wordings in held_out_levels:
        x_test, left_test = embedded(encoder, wordings)
        predicted = np.c_[x_test - mean, np.ones(len(x_test))] @ weights > 0
        accuracies.append(round(float(np.mean(predicted == left_test)), 3))
    return accuracies


def main() -> None:
    task = PushToZone()
    encoder = InstructionEncoder(cache_size=4096)
    every = task.templates + task.training_paraphrases
    levels = [task.paraphrases[level] for level in sorted(task.paraphrases)]
    print(json.dumps({f"{n} training wordings": side_readout_accuracy(every[:n], levels, encoder)
                      for n in (SESSION_8_WORDINGS, len(every))}))


if __name__ == "__main__":
    main()
