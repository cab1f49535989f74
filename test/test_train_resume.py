"""`vla3d train --resume` continues bit-exactly: 4 steps straight == 2 steps, crash, resume 2.

Stage 2 is the demanding case: besides weights and AdamW moments it has the EMA teacher, the
predictor's random block masks (trainer generator) and the momentum schedule.
"""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from train_fixtures import fake_embed, write_synthetic_episodes
from vla3d_ros.train.metrics import read_metrics
from vla3d_ros.train.state import load_training_state, save_training_state
from vla3d_ros.train.trainer import TrainConfig, TrainingError, checkpoint_dirs, train


def _config(data, out, **overrides) -> TrainConfig:
    values = dict(data=data, out=out, preset="tiny", stage="2", steps=4, batch_size=2, checkpoint_every=2,
                  keep_checkpoints=5, log_every=1, num_workers=1, threads=1, progress_bar=False, seed=5)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    write_synthetic_episodes(root, num_episodes=2, num_steps=5)
    return root


def test_resume_reproduces_the_uninterrupted_run_exactly(data, tmp_path):
    out = tmp_path / "run"
    train(_config(data, out), embed=fake_embed, encoder_name="fake")
    straight = load_file(str(out / "final" / "model.safetensors"))
    straight_rows = read_metrics(out / "stage2" / "metrics.csv")
    assert [p.name for p in checkpoint_dirs(out, 2)] == ["step_000002", "step_000004"]

    # simulate a crash right after the step-2 checkpoint
    shutil.rmtree(out / "stage2" / "checkpoints" / "step_000004")
    shutil.rmtree(out / "stage2" / "final")
    shutil.rmtree(out / "final")
    train(_config(data, out, resume=True), embed=fake_embed, encoder_name="fake")
    resumed = load_file(str(out / "final" / "model.safetensors"))

    assert straight.keys() == resumed.keys()
    assert any(key.startswith("completion.teacher.") for key in resumed)   # the EMA teacher is covered
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    resumed_rows = read_metrics(out / "stage2" / "metrics.csv")
    assert [r["step"] for r in resumed_rows] == list(range(1, 5))            # no duplicated steps
    for before, after in zip(straight_rows, resumed_rows):
        for key in ("loss", "loss/predictor", "lr", "grad_norm", "ema_momentum"):
            assert before[key] == after[key], (before["step"], key)


def test_resume_of_a_finished_run_does_nothing_and_of_nothing_fails(data, tmp_path):
    out = tmp_path / "run"
    train(_config(data, out, steps=2, checkpoint_every=2), embed=fake_embed, encoder_name="fake")
    stamp = (out / "final" / "model.safetensors").stat().st_mtime_ns
    assert train(_config(data, out, steps=2, resume=True), embed=fake_embed, encoder_name="fake") == []
    assert (out / "final" / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(TrainingError, match="holds no run"):
        train(_config(data, tmp_path / "empty", resume=True), embed=fake_embed, encoder_name="fake")


def test_training_state_round_trip_restores_optimizer_and_generators(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.9))
    model(torch.randn(5, 3)).square().sum().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(11)
    torch.rand(2, generator=generator)
    save_training_state(tmp_path, optimizer, {"step": 1}, generators={"masking": generator})
    expected_global, expected_gen = torch.rand(4), torch.rand(4, generator=generator)

    other = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=5.0)
    restored = torch.Generator().manual_seed(0)
    torch.rand(7)                                              # move the global RNG on
    assert load_training_state(tmp_path, other, generators={"masking": restored}) == {"step": 1}
    assert torch.equal(torch.rand(4), expected_global)
    assert torch.equal(torch.rand(4, generator=restored), expected_gen)
    saved, loaded = optimizer.state_dict(), other.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for index, state in saved["state"].items():
        for name, value in state.items():
            assert torch.equal(value, loaded["state"][index][name]), name
