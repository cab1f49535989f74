"""Checkpoints: safetensors + JSON, bit-identical round trip, pickle refused, tampering detected."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from model_batches import make_policy, synthetic_batch, tiny, train_steps
from vla3d_ros import types
from vla3d_ros.model.checkpoint import (CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, CheckpointError, load_checkpoint,
                                        save_checkpoint)


@pytest.fixture
def trained(tmp_path):
    """A tiny 3D policy after one stage-2 step (so no weight is at its initial value), saved."""
    config = tiny()
    batch = synthetic_batch(config, 2)
    policy = make_policy(config, batch, stage=2)
    train_steps(policy, batch, 1)
    policy.eval()
    directory = save_checkpoint(tmp_path / "ckpt", policy, step_period=0.1, extra={"steps": 1})
    return policy, batch, directory


def _prediction_batch(batch):
    return {k: v for k, v in batch.items() if k not in (types.ACTION, types.ACTION_IS_PAD)}


def test_save_load_gives_identical_outputs(trained):
    policy, batch, directory = trained
    loaded, meta = load_checkpoint(directory)
    assert meta["format_version"] == FORMAT_VERSION and meta["step_period"] == 0.1 and meta["extra"] == {"steps": 1}
    assert meta["action_names"] == list(types.EE_DELTA_ACTION_NAMES) and loaded.stage == 2
    assert loaded.config == policy.config
    np.testing.assert_array_equal(loaded.normalizer.stats.action_std, policy.normalizer.stats.action_std)
    with torch.no_grad():
        expected = policy.predict(_prediction_batch(batch))
        actual = loaded.predict(_prediction_batch(batch))
    assert torch.equal(actual.actions, expected.actions)                    # atol 0
    assert torch.equal(actual.completion_points, expected.completion_points)
    assert torch.equal(actual.instance_refs, expected.instance_refs)
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
def test_pickle_files_are_refused_without_unpickling(tmp_path, suffix, monkeypatch):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must never be called"))
    path = tmp_path / f"policy{suffix}"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)


def test_pickle_bytes_behind_a_safetensors_name_are_refused(trained):
    _, _, directory = trained
    (directory / WEIGHTS_FILE).write_bytes(pickle.dumps({"x": 1}, protocol=4))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(directory)


def test_truncated_or_tampered_weights_are_reported(trained):
    _, _, directory = trained
    weights = directory / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or was modified"):
        load_checkpoint(directory)
    tampered = bytearray(data)
    tampered[-1] ^= 0xFF
    weights.write_bytes(bytes(tampered))
    with pytest.raises(CheckpointError, match="truncated or was modified"):
        load_checkpoint(directory)


def test_bad_config_json_is_reported_with_the_file(trained):
    _, _, directory = trained
    config_path = directory / CONFIG_FILE
    meta = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(directory)
    meta["config"]["dim"] = 0
    config_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="dim must be a positive integer, got 0"):
        load_checkpoint(directory)
    config_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(directory)
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(directory / "missing")


def test_saving_replaces_atomically_and_validates_the_step_period(trained, tmp_path):
    policy, _, directory = trained
    save_checkpoint(directory, policy, step_period=0.05)
    assert json.loads((directory / CONFIG_FILE).read_text())["step_period"] == 0.05
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]                  # no temporary left behind
    with pytest.raises(ValueError, match="-1"):
        save_checkpoint(tmp_path / "other", policy, step_period=-1)
