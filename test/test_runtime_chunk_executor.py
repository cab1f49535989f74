"""Chunk execution: row selection by time, ACT temporal ensembling with known weights, expiry."""
from __future__ import annotations

import numpy as np
import pytest

from vla3d_ros.runtime.chunk_executor import ChunkExecutor, ensemble_weights, replanning_margin
from vla3d_ros.types import ActionChunk

NAMES = ("a", "b")


def chunk(values, stamp, period=0.1) -> ActionChunk:
    """Chunk whose row h is (values[h], 10 * values[h])."""
    values = np.asarray(values, np.float32)
    return ActionChunk(np.stack([values, 10 * values], axis=1), NAMES, period, stamp)


def test_row_follows_time_since_the_observation():
    executor = ChunkExecutor(ensemble_coeff=None)
    executor.add(chunk([0, 1, 2, 3], stamp=5.0))
    for now, row in [(5.0, 0), (5.0999, 0), (5.1, 1), (5.3, 3), (5.35, 3)]:
        executed = executor.action_at(now)
        assert executed.row == row and executed.action[0] == row
    assert executor.action_at(5.4) is None  # horizon exhausted
    assert executor.action_at(4.9) is None  # before the observation


def test_act_ensembling_matches_hand_computed_weights():
    k = 0.5
    executor = ChunkExecutor(ensemble_coeff=k)
    executor.add(chunk([10, 11, 12, 13, 14], stamp=0.0))
    executor.add(chunk([20, 21, 22, 23, 24], stamp=0.1))
    executor.add(chunk([30, 31, 32, 33, 34], stamp=0.2))
    executed = executor.action_at(0.25)
    # Proposals at t = 0.25: row 2 of chunk 0 (12), row 1 of chunk 1 (21), row 0 of chunk 2 (30);
    # ACT weights exp(-k * i) with i = 0 for the oldest.
    w = np.exp(-k * np.arange(3))
    expected = (w @ [12.0, 21.0, 30.0]) / w.sum()
    assert executed.num_chunks == 3 and executed.observation_stamp == 0.2 and executed.row == 0
    np.testing.assert_allclose(executed.action, [expected, 10 * expected], rtol=1e-6)


def test_ensembling_off_executes_the_newest_chunk_and_zero_coeff_is_a_mean():
    newest = ChunkExecutor(ensemble_coeff=None)
    mean = ChunkExecutor(ensemble_coeff=0.0)
    for executor in (newest, mean):
        executor.add(chunk([1, 1, 1], stamp=0.0))
        executor.add(chunk([4, 4, 4], stamp=0.1))
    assert newest.action_at(0.15).action[0] == 4
    assert mean.action_at(0.15).action[0] == pytest.approx(2.5)


@pytest.mark.parametrize("n, k", [(1, 0.01), (5, 0.01), (7, -0.3), (4, 2.0)])
def test_ensemble_weights_are_normalised_and_ordered(n, k):
    w = ensemble_weights(n, k)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(np.diff(w) <= 0) if k >= 0 else np.all(np.diff(w) > 0)


def test_chunks_expire_by_horizon_and_by_age():
    executor = ChunkExecutor(ensemble_coeff=0.01, max_chunk_age=0.25)
    executor.add(chunk(np.arange(10), stamp=0.0))
    assert executor.action_at(0.2).row == 2
    assert executor.action_at(0.3) is None and len(executor) == 0   # older than max_chunk_age
    executor.add(chunk([7, 8], stamp=1.0))
    executor.add(chunk([1, 2, 3, 4], stamp=1.05))
    executed = executor.action_at(1.21)  # the first chunk's 2 rows end at 1.2: only one proposal
    assert executed.num_chunks == 1 and executed.action[0] == 2 and len(executor) == 1


def test_bad_chunks_are_refused_and_a_clock_jump_starts_over():
    executor = ChunkExecutor(ensemble_coeff=0.01, max_chunk_age=1.0)
    assert executor.add(chunk([1, 2], stamp=10.0)) is None
    assert "older than the newest" in executor.add(chunk([1, 2], stamp=9.9))
    nan = chunk([1, 2], stamp=10.1)
    nan.actions[0, 0] = np.nan
    assert "non-finite" in executor.add(nan)
    other = ActionChunk(np.zeros((2, 3), np.float32), ("x", "y", "z"), 0.1, 10.2)
    assert "differ" in executor.add(other)
    assert executor.rejected == 3
    assert executor.add(chunk([5, 6], stamp=0.5)) is None  # bag looped: new timeline
    assert executor.clock_resets == 1 and len(executor) == 1
    assert executor.action_at(0.5).action[0] == 5


def test_replanning_margin_is_the_chunk_left_when_the_next_one_arrives():
    # 8 rows x 0.1 s from stamp s; the next observation at s + 0.2 is answered 0.15 s later.
    assert replanning_margin(8, 0.1, 0.2, 0.15) == pytest.approx(0.45)
    # The tiny preset's 4 rows at 5 Hz run out once inference takes longer than 0.2 s.
    assert replanning_margin(4, 0.1, 0.2, 0.25) < 0 < replanning_margin(4, 0.1, 0.2, 0.15)
    for bad in ((0, 0.1, 0.2, 0.0), (4, 0.0, 0.2, 0.0), (4, 0.1, 0.0, 0.0), (4, 0.1, 0.2, -1.0)):
        with pytest.raises(ValueError, match="horizon >= 1"):
            replanning_margin(*bad)
