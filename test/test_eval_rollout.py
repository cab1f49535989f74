"""Closed-loop evaluation: deterministic given seeds, eval seeds disjoint from training seeds,
suites from the perturbation registry, summaries with Wilson CIs, PNG strips."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from train_fixtures import fake_embed
from vla3d_ros.evaluate.rollout import (
    EVAL_SEED_BASE,
    EpisodeOutcome,
    evaluate_closed_loop,
    evaluation_seed,
    object_displacement,
    run_seed_split,
    split_run_seed,
    suite_cells,
    suite_names,
    summarize_outcomes,
)
from vla3d_ros.model.checkpoint import save_checkpoint
from vla3d_ros.model.config import preset
from vla3d_ros.model.policy import VLA3DPolicy

TASK = "pick_place_bowl"
SIM_STATE_DIM = 17          # 9 joints (7 arm + 2 fingers) + ee pose (7) + gripper (1)


class FakeEncoder:
    def embed(self, text: str):
        return fake_embed(text)


def _checkpoint(path, train_seeds=(12, 3_456_789), **extra):
    torch.manual_seed(0)
    policy = VLA3DPolicy(preset("tiny").replace(state_dim=SIM_STATE_DIM))
    policy.set_stage(2)
    return save_checkpoint(path, policy, step_period=0.1,
                           extra={"camera_names": ["front", "wrist"], "tasks": [TASK],
                                  "train_episode_seeds": list(train_seeds), **extra})


def _strip_timing(result: dict) -> dict:
    return {**result, "episodes": [{k: v for k, v in e.items() if k != "seconds"} for e in result["episodes"]],
            "strips": [s.rsplit("/", 1)[-1] for s in result["strips"]]}


def test_rollouts_are_deterministic_given_the_seed(tmp_path):
    checkpoint = _checkpoint(tmp_path / "ckpt")
    kwargs = dict(suite="nominal", episodes=2, max_steps=4, instruction_encoder=FakeEncoder(), replan_every=2)
    first = evaluate_closed_loop(checkpoint, strip_dir=tmp_path / "strips_a", **kwargs)
    second = evaluate_closed_loop(checkpoint, strip_dir=tmp_path / "strips_b", **kwargs)
    assert _strip_timing(first) == _strip_timing(second)
    assert [e["seed"] for e in first["episodes"]] == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1]
    assert first["overall"]["trials"] == 2 and first["tasks"] == [TASK] and first["split"] == "val"
    assert all(e["steps"] <= 4 for e in first["episodes"])
    assert len(first["strips"]) == 1 and (tmp_path / "strips_a" / first["strips"][0].rsplit("/", 1)[-1]).is_file()
    other_seed = evaluate_closed_loop(checkpoint, run_seed=1, **{**kwargs, "episodes": 1})
    assert other_seed["episodes"][0]["seed"] == EVAL_SEED_BASE + 10_000


def test_evaluation_seeds_overlapping_training_seeds_are_refused(tmp_path):
    checkpoint = _checkpoint(tmp_path / "ckpt", train_seeds=(7, EVAL_SEED_BASE + 1))
    with pytest.raises(ValueError, match=r"seeds \[1000001\] were used by training episodes"):
        evaluate_closed_loop(checkpoint, suite="nominal", episodes=2, instruction_encoder=FakeEncoder())


def test_suites_come_from_the_perturbation_registry():
    assert suite_cells("nominal") == [()]
    assert suite_cells("camera") == [("camera_pose:1",), ("camera_pose:2",), ("camera_pose:3",)]
    assert suite_cells("occlusion:2") == [("occlusion:2",)]
    names = suite_names()
    assert "camera_train" not in names and "camera_pose" not in names   # training jitter is no suite
    every = suite_cells("all")
    assert len(every) == len(set(every)) and () in every and ("camera_pose:3",) in every
    with pytest.raises(ValueError, match="unknown suite 'cameras'"):
        suite_cells("cameras")


def test_summary_counts_and_intervals():
    def outcome(task, cell, success):
        return EpisodeOutcome(task, cell, 0, 0, success, 1, "", 0.0, (0.0, 0.0, 0.0))

    outcomes = [outcome("a", (), True), outcome("a", ("occlusion:1",), False), outcome("b", (), True),
                outcome("b", ("occlusion:1",), True)]
    summary = summarize_outcomes(outcomes)
    assert summary["overall"]["successes"] == 3 and summary["overall"]["trials"] == 4
    assert summary["per_task"]["a"]["rate"] == 0.5
    assert summary["per_perturbation"]["nominal"]["successes"] == 2
    assert summary["per_perturbation"]["occlusion:1"]["rate"] == 0.5
    assert summary["per_cell"]["b|occlusion:1"]["ci95_high"] == 1.0


def test_temporal_ensembling_can_be_switched_off_and_changes_what_is_executed(tmp_path):
    checkpoint = _checkpoint(tmp_path / "ckpt")
    kwargs = dict(suite="nominal", episodes=1, max_steps=5, instruction_encoder=FakeEncoder(), replan_every=1)
    ensembled = evaluate_closed_loop(checkpoint, **kwargs)
    newest_only = evaluate_closed_loop(checkpoint, ensemble_coeff=None, **kwargs)
    assert ensembled["settings"]["ensemble_coeff"] == 0.01 and newest_only["settings"]["ensemble_coeff"] is None
    # re-planning every step, 2+ chunks cover each step after the first: their mean != the newest
    assert ensembled["episodes"][0]["final_ee_position"] != newest_only["episodes"][0]["final_ee_position"]
    with pytest.raises(ValueError, match="ensemble_coeff must be finite or None, got nan"):
        evaluate_closed_loop(checkpoint, ensemble_coeff=float("nan"), **kwargs)


def test_the_forward_precision_is_resolved_on_this_machine_recorded_and_validated(tmp_path):
    from vla3d_ros.evaluate.rollout import RolloutSettings
    from vla3d_ros.model.precision import has_native_bf16

    checkpoint = _checkpoint(tmp_path / "ckpt")
    kwargs = dict(suite="nominal", episodes=1, max_steps=2, instruction_encoder=FakeEncoder(), replan_every=1)
    auto = evaluate_closed_loop(checkpoint, **kwargs)
    assert auto["settings"]["precision"] == ("bf16" if has_native_bf16("cpu") else "fp32")
    assert evaluate_closed_loop(checkpoint, precision="fp32", **kwargs)["settings"]["precision"] == "fp32"
    with pytest.raises(ValueError, match="precision must be one of .*got 'fp16'"):
        evaluate_closed_loop(checkpoint, precision="fp16", **kwargs)
    with pytest.raises(ValueError, match="resolved precision .*got 'auto'"):
        RolloutSettings(precision="auto")


def test_the_cli_takes_a_number_or_off_for_the_ensemble_coefficient():
    import argparse

    from vla3d_ros.commands.eval import _ensemble_coeff

    assert _ensemble_coeff("off") == "off" and _ensemble_coeff("0.1") == 0.1
    for bad in ("none", "inf"):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(bad)):
            _ensemble_coeff(bad)


def test_object_displacement_names_the_instructed_object_target():
    class MovedEnv:                      # two cans: obj1 is the target and moved 5 cm along y
        instance = types.SimpleNamespace(roles={"target": "obj1", "zone": "zone_left"})
        positions = {"obj0": np.array([0.4, 0.0, 0.035]), "obj1": np.array([0.6, 0.05, 0.035])}

        def object_position(self, slot):
            return self.positions[slot]

    start = {"obj0": np.array([0.4, 0.0]), "obj1": np.array([0.6, 0.0])}
    moved = object_displacement(MovedEnv(), start)
    assert moved.keys() == {"target", "obj0"}
    assert moved["target"] == pytest.approx(0.05) and moved["obj0"] == 0.0


def test_validation_and_test_splits_are_disjoint_seed_ranges():
    val = {evaluation_seed(split_run_seed("val", seed), i) for seed in (0, 401, 4999) for i in (0, 9999)}
    test = {evaluation_seed(split_run_seed("test", seed), i) for seed in (0, 4999) for i in (0, 9999)}
    assert not val & test
    assert max(val) < min(test)
    assert split_run_seed("val", 7) == 7 and run_seed_split(7) == "val"
    assert run_seed_split(split_run_seed("test", 0)) == "test"
    with pytest.raises(ValueError, match="--seed must be in"):
        split_run_seed("test", 5000)
    with pytest.raises(ValueError, match="unknown split 'train'"):
        split_run_seed("train", 0)


def test_pooled_suites_hold_every_level_of_their_dimensions_once():
    viewpoint = suite_cells("viewpoint")
    assert viewpoint == suite_cells("camera") + suite_cells("camera_rotation") + suite_cells("camera_fov")
    assert suite_cells("appearance") == suite_cells("light") + suite_cells("background")
    every = suite_cells("all")
    assert len(every) == len(set(every))
    assert not {"camera_wide_train", "light_train", "robot_init_train"} & set(suite_names())


def test_with_retrieval_each_episode_records_the_trained_instruction_it_acted_on(tmp_path):
    from vla3d_ros.model.instruction_retrieval import TRAINING_INSTRUCTIONS_KEY
    from vla3d_ros.sim.tasks import TASKS

    task = TASKS[TASK]
    trained = sorted({template.format(object=f"{colour} {kind}", side="left", target="bowl")
                      for template in task.templates for colour in ("red", "blue") for kind in ("cube", "can")})
    checkpoint = _checkpoint(tmp_path / "ckpt", **{TRAINING_INSTRUCTIONS_KEY: trained})
    kwargs = dict(suite="language:3", episodes=2, max_steps=2, instruction_encoder=FakeEncoder(), replan_every=1)
    retrieved = evaluate_closed_loop(checkpoint, **kwargs)
    assert retrieved["settings"]["instruction_retrieval"] is True
    for episode in retrieved["episodes"]:
        assert episode["understood_as"] in trained and episode["instruction"] not in trained
    as_given = evaluate_closed_loop(checkpoint, instruction_retrieval=False, **kwargs)
    assert as_given["settings"]["instruction_retrieval"] is False
    assert all("understood_as" not in episode for episode in as_given["episodes"])
