"""Probe (issue 16, language): how often does instruction retrieval (`model/instruction_retrieval.py`)
map a wording the policy never trained on onto a trained instruction with the same request (object
and side)? No policy involved: only the frozen sentence encoder and cosine similarity.

Leave-one-wording-out on push_to_zone's training wordings only (the first 11 = what experiment 18
trained on, all 31 = experiment 22): each wording x 6 colours x {left, right} is matched against
the other wordings' renderings. This is the estimate for new wordings that chose nothing on the
evaluation suites. For reference it also prints the same accuracy on the language suite's held-out
levels 1-3 (shared by the val and test splits, so it was not used for any choice).

Usage: python docs/experiments/instruction_retrieval_probe.py
"""
from __future__ import annotations

import json

import numpy as np

from vla3d_ros.model.base import InstructionEncoder
from vla3d_ros.sim.tasks import PushToZone

COLOURS = ("red", "green", "blue", "yellow", "orange", "purple")
SIDES = ("left", "right")
REQUESTS = [(colour, side) for colour in COLOURS for side in SIDES]


def rendered(encoder: InstructionEncoder, wording: str) -> np.ndarray:
    """(12, E) unit embeddings of `wording` for every request, in REQUESTS order."""
    return np.stack([encoder.embed(wording.format(object=f"{colour} can", side=side)) for colour, side in REQUESTS])


def accuracy(queries: np.ndarray, bank: list[np.ndarray]) -> float:
    """Share of query rows whose highest-cosine bank row has the same request."""
    rows = np.concatenate(bank)
    labels = np.tile(np.arange(len(REQUESTS)), len(bank))
    best = labels[(queries @ rows.T).argmax(1)]
    return float(np.mean(best == np.arange(len(REQUESTS))))


def main() -> None:
    task = PushToZone()
    encoder = InstructionEncoder(cache_size=20_000)
    wordings = task.templates + task.training_paraphrases
    embedded = [rendered(encoder, wording) for wording in wordings]
    held_out = {level: [rendered(encoder, wording) for wording in task.paraphrases[level]]
                for level in sorted(task.paraphrases)}
    report = {}
    for count in (11, len(wordings)):
        left_out = [accuracy(embedded[i], embedded[:i] + embedded[i + 1:count]) for i in range(count)]
        report[f"{count} training wordings"] = {
            "leave_one_wording_out": round(float(np.mean(left_out)), 3),
            "worst_wording": round(float(np.min(left_out)), 3),
            "language_suite_levels": [round(float(np.mean([accuracy(q, embedded[:count]) for q in held_out[level]])), 3)
                                      for level in held_out]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
