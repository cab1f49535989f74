"""Execute action chunks at the controller rate, with ACT temporal ensembling.

Row h of a chunk computed from the observation stamped `s` is the action for the control interval
[s + h * step_period, s + (h + 1) * step_period). At time t every live chunk proposes its row
floor((t - s) / step_period); chunks whose horizon is exhausted or that are older than
`max_chunk_age` are dropped (expiry).

Temporal ensembling (ACT, Zhao et al. 2023): the proposals for the current time are averaged with
weights w_i = exp(-k * i), i = 0 for the OLDEST proposing chunk, as in ACT's reference code, so
with k > 0 older predictions weigh more and the executed trajectory is smooth; k = 0 is a plain
mean. `ensemble_coeff=None` switches ensembling off: the newest chunk's row is executed.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from vla3d_ros.types import ActionChunk

# Absorbs float rounding in (t - stamp) / step_period at exact row boundaries.
_ROW_EPS = 1e-9


@dataclass(frozen=True)
class ExecutedAction:
    action: np.ndarray          # (A,) float64, ensembled row for the current time
    dimension_names: tuple[str, ...]
    observation_stamp: float    # stamp of the newest contributing chunk's observation
    num_chunks: int             # chunks that contributed
    row: int                    # row index in the newest contributing chunk
    step_period: float


class ChunkExecutor:
    """Holds recent chunks and answers "which action now?".

    Args:
        ensemble_coeff: ACT's k (None = no ensembling, newest chunk wins).
        max_chunk_age: seconds after its observation a chunk stops being executed.
        max_chunks: bound on the chunks kept (oldest dropped first).
    """

    def __init__(self, ensemble_coeff: float | None = 0.01, max_chunk_age: float = 2.0, max_chunks: int = 64) -> None:
        if ensemble_coeff is not None and not math.isfinite(ensemble_coeff):
            raise ValueError(f"ensemble_coeff must be finite or None, got {ensemble_coeff}")
        if not max_chunk_age > 0:
            raise ValueError(f"max_chunk_age must be > 0 s, got {max_chunk_age}")
        self.ensemble_coeff = ensemble_coeff
        self.max_chunk_age = max_chunk_age
        self._chunks: deque[ActionChunk] = deque(maxlen=max_chunks)
        self.rejected = 0
        self.clock_resets = 0

    def __len__(self) -> int:
        return len(self._chunks)

    def clear(self) -> None:
        self._chunks.clear()

    def add(self, chunk: ActionChunk) -> str | None:
        """Queue a chunk; returns None if accepted, else the reason it was refused."""
        reason = None
        if not np.all(np.isfinite(chunk.actions)):
            reason = "chunk has non-finite actions"
        elif self._chunks and chunk.dimension_names != self._chunks[-1].dimension_names:
            reason = f"chunk dimensions {chunk.dimension_names} differ from {self._chunks[-1].dimension_names}"
        elif self._chunks and chunk.stamp < self._chunks[-1].stamp - self.max_chunk_age:
            # Far older than everything held: the clock jumped back (bag loop, sim restart).
            # The held chunks belong to the old timeline; start over on the new one.
            self.clock_resets += 1
            self._chunks.clear()
        elif self._chunks and chunk.stamp < self._chunks[-1].stamp:
            # Slightly older than the newest chunk: reordered delivery, the newer one stands.
            reason = f"chunk stamp {chunk.stamp:.3f} is older than the newest chunk's {self._chunks[-1].stamp:.3f}"
        if reason is not None:
            self.rejected += 1
            return reason
        self._chunks.append(chunk)
        return None

    def _row(self, chunk: ActionChunk, now: float) -> int | None:
        elapsed = now - chunk.stamp
        if elapsed < 0 or elapsed > self.max_chunk_age:
            return None
        row = int(math.floor(elapsed / chunk.step_period + _ROW_EPS))
        return row if row < chunk.horizon else None

    def _live(self, chunk: ActionChunk, now: float) -> bool:
        elapsed = now - chunk.stamp
        # A chunk stamped far in the future comes from before a clock jump: never executable.
        return -self.max_chunk_age <= elapsed <= self.max_chunk_age and elapsed < chunk.horizon * chunk.step_period

    def expire(self, now: float) -> None:
        """Drop chunks that can never propose a row again at or after `now`."""
        self._chunks = deque((c for c in self._chunks if self._live(c, now)), maxlen=self._chunks.maxlen)

    def action_at(self, now: float) -> ExecutedAction | None:
        """The action for time `now`, or None if no live chunk covers it."""
        self.expire(now)
        proposals = [(chunk, row) for chunk in self._chunks if (row := self._row(chunk, now)) is not None]
        if not proposals:
            return None
        newest_chunk, newest_row = proposals[-1]
        if self.ensemble_coeff is None:
            action = newest_chunk.actions[newest_row].astype(np.float64)
        else:
            rows = np.stack([chunk.actions[row] for chunk, row in proposals]).astype(np.float64)  # (N, A)
            weights = ensemble_weights(len(proposals), self.ensemble_coeff)  # (N,)
            action = weights @ rows
        return ExecutedAction(action, newest_chunk.dimension_names, newest_chunk.stamp, len(proposals),
                              newest_row, newest_chunk.step_period)


def ensemble_weights(num_chunks: int, coeff: float) -> np.ndarray:
    """(N,) normalised ACT weights exp(-coeff * i), i = 0 for the oldest chunk."""
    weights = np.exp(-coeff * np.arange(num_chunks, dtype=np.float64))
    return weights / weights.sum()


def replanning_margin(horizon: int, step_period: float, inference_period: float, latency: float) -> float:
    """Seconds a chunk stays live after the next one should have arrived.

    A chunk from the observation stamped s covers [s, s + horizon * step_period); the next chunk
    comes from an observation about `inference_period` later and is published `latency` after it.
    A negative margin means the executor runs out of rows every cycle and the arm holds (the
    command watchdog trips) until the next chunk: size the horizon to cover the inference period
    plus the p99 latency, as the soak (docs/reliability.md) shows.
    """
    if horizon < 1 or not step_period > 0 or not inference_period > 0 or not latency >= 0:
        raise ValueError(f"need horizon >= 1, step_period > 0, inference_period > 0, latency >= 0; got "
                         f"{horizon!r}, {step_period!r}, {inference_period!r}, {latency!r}")
    return horizon * step_period - inference_period - latency
