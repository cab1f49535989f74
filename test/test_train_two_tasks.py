"""Two tasks in one checkpoint (issue 16, item 5): `vla3d train --data A --data B` trains on both
directories, fits the statistics on both, records both tasks for `vla3d eval`, and refuses a set
that cannot be one policy's data with a one-line reason."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from train_fixtures import fake_embed, train_tiny_stage1, write_synthetic_episodes
from vla3d_ros.cli import main
from vla3d_ros.data.dataset import DatasetConfig, EpisodeDataset
from vla3d_ros.data.episodes import list_episodes
from vla3d_ros.model.checkpoint import read_checkpoint_meta
from vla3d_ros.train.trainer import TrainConfig

PUSH = ("push the red box left", "slide the red box to the left")
PICK = ("put the red box in the bowl", "pick up the red box and drop it in the bowl", "place the red box in the bowl")


@pytest.fixture()
def two_tasks(tmp_path):
    """(push_dir, pick_dir): episodes of two tasks with different instructions and step counts."""
    push, pick = tmp_path / "push_to_zone", tmp_path / "pick_place_bowl"
    write_synthetic_episodes(push, num_episodes=2, num_steps=5, seed_offset=100, task="push_to_zone",
                             instructions=PUSH)
    write_synthetic_episodes(pick, num_episodes=3, num_steps=7, seed_offset=200, task="pick_place_bowl",
                             instructions=PICK)
    return push, pick


def _union_dataset(*roots):
    config = DatasetConfig(horizon=4, image_size=(32, 32), num_views=2, with_targets=False)
    episodes = [path for root in roots for path in list_episodes(root)]
    return EpisodeDataset(roots[0], config, embed=fake_embed, encoder_name="fake", episodes=episodes)


def _whitening(policy) -> dict[str, torch.Tensor]:
    module = policy.trunk.instruction_whitening
    return {"mean": module.mean.clone(), "matrix": module.matrix.clone()}


def test_one_policy_trains_on_both_directories_and_records_both_tasks(two_tasks, tmp_path):
    push, pick = two_tasks
    policy, results = train_tiny_stage1((push, pick), tmp_path / "both", steps=2, whiten_instructions=True,
                                        precision="fp32")
    extra = read_checkpoint_meta(tmp_path / "both" / "final")["extra"]
    assert extra["tasks"] == ["pick_place_bowl", "push_to_zone"]       # vla3d eval runs each by default
    assert extra["data"] == [str(push), str(pick)]
    assert extra["episodes"] == 5 and extra["samples"] == 2 * 5 + 3 * 7
    assert extra["train_episode_seeds"] == [100, 101, 200, 201, 202]
    union = _union_dataset(push, pick)
    assert policy.normalizer.stats.to_dict() == union.normalization_stats().to_dict()
    # the whitening is fitted on both tasks' instructions: each task's mean embedding is centred
    # by the one mean, and the training embeddings have mean squared norm 1 after whitening
    embeddings = torch.as_tensor(np.stack([fake_embed(text) for text in PUSH + PICK[:3]]))
    whitened = policy.trunk.instruction_whitening(embeddings)
    assert torch.allclose(whitened.mean(0), torch.zeros(384), atol=1e-5)
    assert whitened.pow(2).sum(1).mean() == pytest.approx(1.0, rel=1e-4)


def test_a_continued_single_task_policy_refits_its_statistics_on_both_tasks(two_tasks, tmp_path):
    push, pick = two_tasks
    init, _ = train_tiny_stage1(push, tmp_path / "push_only", whiten_instructions=True, precision="fp32")
    init_ckpt = tmp_path / "push_only" / "final"
    fresh, _ = train_tiny_stage1((push, pick), tmp_path / "fresh", whiten_instructions=True, precision="fp32")
    kept, _ = train_tiny_stage1((push, pick), tmp_path / "kept", init=init_ckpt, precision="fp32")
    refit, _ = train_tiny_stage1((push, pick), tmp_path / "refit", init=init_ckpt, renormalize=True,
                                 refit_whitening=True, precision="fp32")
    assert refit.normalizer.stats.to_dict() == fresh.normalizer.stats.to_dict()
    for name, value in _whitening(refit).items():
        assert torch.allclose(value, _whitening(fresh)[name], atol=1e-6), name
    for name, value in _whitening(kept).items():
        assert torch.equal(value, _whitening(init)[name]), name           # without the flag: push's only
    # what the flag fixes: the pick instructions lie far outside push's whitening, not outside both tasks'
    pick_embeddings = torch.as_tensor(np.stack([fake_embed(text) for text in PICK]))
    assert kept.trunk.instruction_whitening(pick_embeddings).norm(dim=1).min() > 3.0
    assert refit.trunk.instruction_whitening(pick_embeddings).norm(dim=1).max() < 1.5
    extra = read_checkpoint_meta(tmp_path / "refit" / "final")["extra"]
    assert extra["tasks"] == ["pick_place_bowl", "push_to_zone"] and extra["init"] == str(init_ckpt)


def test_a_continued_policy_keeps_its_init_tasks_and_seeds_through_a_resume(two_tasks, tmp_path):
    push, pick = two_tasks
    train_tiny_stage1(push, tmp_path / "push_only", precision="fp32")
    out = tmp_path / "pick_run"
    options = dict(init=tmp_path / "push_only" / "final", precision="fp32", checkpoint_every=1, keep_checkpoints=3)
    train_tiny_stage1(pick, out, steps=2, **options)
    straight = read_checkpoint_meta(out / "final")["extra"]
    assert straight["tasks"] == ["pick_place_bowl", "push_to_zone"]
    assert straight["train_episode_seeds"] == [100, 101, 200, 201, 202]
    shutil.rmtree(out / "stage1" / "checkpoints" / "step_000002")        # a crash after the step-1 checkpoint
    shutil.rmtree(out / "stage1" / "final")
    shutil.rmtree(out / "final")
    train_tiny_stage1(pick, out, steps=2, resume=True, **options)
    resumed = read_checkpoint_meta(out / "final")["extra"]
    for key in ("tasks", "train_episode_seeds", "init", "init_stage"):
        assert resumed[key] == straight[key], key


def test_a_new_task_without_refitted_statistics_is_pointed_out(two_tasks, tmp_path, capsys):
    push, pick = two_tasks
    train_tiny_stage1(push, tmp_path / "push_only", whiten_instructions=True, precision="fp32")
    capsys.readouterr()
    train_tiny_stage1((push, pick), tmp_path / "kept", init=tmp_path / "push_only" / "final", renormalize=True,
                      precision="fp32")
    out = capsys.readouterr().out
    assert "adds task(s) ['pick_place_bowl']" in out and "without them: --refit-whitening would refit them" in out
    train_tiny_stage1((push, pick), tmp_path / "refit", init=tmp_path / "push_only" / "final", renormalize=True,
                      refit_whitening=True, precision="fp32")
    assert "adds task" not in capsys.readouterr().out


class FakeEncoder:
    """The sentence encoder's interface without its ~10 s load."""

    def __init__(self, device: str = "cpu") -> None:
        self.embed = fake_embed


def test_sets_that_cannot_be_one_policys_data_are_refused_in_one_line(two_tasks, tmp_path, capsys, monkeypatch):
    push, pick = two_tasks
    monkeypatch.setattr("vla3d_ros.model.base.InstructionEncoder", FakeEncoder)
    other_cameras = tmp_path / "other_cameras"
    write_synthetic_episodes(other_cameras, num_episodes=1, num_steps=3, seed_offset=300,
                             camera_names=("front", "wrist"))
    (tmp_path / "empty").mkdir()
    combined = tmp_path / "combined"                     # a directory of links, as 14_*.sh builds them
    combined.mkdir()
    (combined / "episode_000000").symlink_to(list_episodes(pick)[0])
    cases = [([push, tmp_path / "empty"], f"no episodes under {tmp_path / 'empty'}"),
             ([push, other_cameras], "has camera_names ['front', 'wrist']"),
             ([pick, combined], "is in the data twice")]
    for roots, message in cases:
        args = ["train", "--out", str(tmp_path / "run"), "--preset", "tiny", "--no-progress", "--steps", "1"]
        code = main([*args, *[word for root in roots for word in ("--data", str(root))]])
        err = capsys.readouterr().err
        assert code == 1 and message in err and err.startswith("vla3d train: error:"), (roots, err)
        assert err.count("\n") == 1
    with pytest.raises(ValueError, match="at least one episode directory"):
        TrainConfig(data=(), out="o")

