"""Probe (issue 16, language): how far does a new wording move what the policy reads, the *whitened*
sentence embedding? The answer sets the norm `vla3d train --instruction-noise` takes
(`vla3d_ros/train/instruction_noise.py`).

Only training data is read: every episode's `instruction_variants` (one text per training wording,
in the same order in every episode, as `16_add_instruction_variants.py` writes them; one episode's
list = one request). Leave one wording out: fit the instruction whitening (`InstructionWhitening`,
one row per distinct text) on the other wordings, and measure, in whitened space, how far each of
the left-out wording's texts lies from the nearest text of the same request. The noise is added
before whitening, so its raw norm is chosen to give the same whitened length on average:
E|W n|^2 = norm^2 / E * |W|_F^2  =>  norm = median distance * sqrt(E) / |W|_F (W fitted on all
wordings). No evaluation wording is used, so the choice is not tuned on the language suite.

Usage: python docs/experiments/instruction_noise_probe.py EPISODE_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from vla3d_ros.model.base import InstructionEncoder, InstructionWhitening


def requests(root: Path) -> list[tuple[str, ...]]:
    """Every distinct request: its texts, one per wording position, in the episodes' order."""
    found: set[tuple[str, ...]] = set()
    for meta_path in sorted(root.glob("*/meta.json")):
        variants = tuple(json.loads(meta_path.read_text()).get("instruction_variants") or ())
        if found and len(variants) != len(next(iter(found))):
            raise SystemExit(f"{meta_path}: {len(variants)} instruction_variants, other episodes have "
                             f"{len(next(iter(found)))}")
        found.add(variants)
    if not found or len(next(iter(found))) < 3:
        raise SystemExit(f"{root}: needs episodes with >= 3 instruction_variants each")
    return sorted(found)


def whitening(embeddings: np.ndarray) -> InstructionWhitening:
    fitted = InstructionWhitening(embeddings.shape[1])
    fitted.fit(torch.from_numpy(embeddings))
    return fitted


def whitened(fitted: InstructionWhitening, embeddings: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return fitted(torch.from_numpy(embeddings).float()).double().numpy()


def leave_one_wording_out_distances(embedded: np.ndarray) -> np.ndarray:
    """embedded (R requests, K wordings, E) -> (R * K,) whitened distance of each text from the nearest
    other wording of its request, the whitening fitted without that text's wording."""
    count, wordings, dim = embedded.shape
    distances = []
    for k in range(wordings):
        others = np.delete(embedded, k, axis=1)                                  # (R, K-1, E)
        fitted = whitening(others.reshape(-1, dim))
        left_out = whitened(fitted, embedded[:, k])                              # (R, E)
        kept = whitened(fitted, others.reshape(-1, dim)).reshape(count, wordings - 1, dim)
        distances.append(np.linalg.norm(kept - left_out[:, None], axis=2).min(axis=1))
    return np.concatenate(distances)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    found = requests(Path(sys.argv[1]))
    encoder = InstructionEncoder(cache_size=1 << 14)
    embedded = np.stack([[encoder.embed(text) for text in request] for request in found]).astype(np.float64)
    distances = leave_one_wording_out_distances(embedded)
    matrix = whitening(embedded.reshape(-1, embedded.shape[2])).matrix.double().numpy()
    to_raw = np.sqrt(embedded.shape[2]) / np.linalg.norm(matrix)
    quartiles = np.percentile(distances, [25, 50, 75])
    print(json.dumps({"requests": len(found), "wordings": embedded.shape[1],
                      "whitened_distance": dict(zip(("p25", "median", "p75"), np.round(quartiles, 3).tolist())),
                      "noise_norm": round(float(quartiles[1] * to_raw), 4)}))


if __name__ == "__main__":
    main()
