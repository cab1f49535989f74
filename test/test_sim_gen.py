"""`vla3d gen`: writes readable successful episodes, is resumable/idempotent, lists tasks/perturbations."""
from __future__ import annotations

import numpy as np

from vla3d_ros.cli import main
from vla3d_ros.data.episodes import EpisodeReader, list_episodes
from vla3d_ros.sim.perturbations import PERTURBATIONS
from vla3d_ros.sim.tasks import TASKS

ARGS = ["gen", "--task", "stack_cubes", "--image-size", "24", "32", "--seed", "3", "--cameras", "front"]


def test_gen_writes_resumes_and_is_deterministic(tmp_path, capsys):
    out = tmp_path / "episodes"
    assert main([*ARGS, "--episodes", "1", "--out", str(out), "--perturb", "light:1"]) == 0
    first = list_episodes(out)
    assert [p.name for p in first] == ["episode_000000"]
    stamp = (first[0] / "meta.json").stat().st_mtime_ns
    # resuming with more episodes only adds the missing index; episode 0 is untouched
    assert main([*ARGS, "--episodes", "2", "--out", str(out), "--perturb", "light:1"]) == 0
    assert "1 already present" in capsys.readouterr().out
    episodes = list_episodes(out)
    assert [p.name for p in episodes] == ["episode_000000", "episode_000001"]
    assert (first[0] / "meta.json").stat().st_mtime_ns == stamp
    reader = EpisodeReader(episodes[1])
    meta = reader.meta
    assert meta["task"] == "stack_cubes" and meta["success"] and meta["perturbations"] == ["light:1"]
    assert meta["episode_index"] == 1 and meta["base_seed"] == 3 and "light:1" in meta["perturbation_params"]
    assert set(meta["object_ids"].values()) == {1, 2, 3}
    # the training wordings of this episode's request, the recorded instruction among them
    assert meta["instruction"] in meta["instruction_variants"]
    assert len(meta["instruction_variants"]) == len(set(meta["instruction_variants"])) > 3
    assert len(reader) == meta["num_steps"] and len(reader) <= TASKS["stack_cubes"].max_steps + 1
    assert reader.observation(0).rgb.shape == (1, 24, 32, 3)
    assert np.abs(reader.actions()[:, :3]).max() <= 0.02 + 1e-6
    # the same index regenerated elsewhere is identical (seeded per index)
    again = tmp_path / "again"
    assert main([*ARGS, "--episodes", "1", "--start-index", "1", "--out", str(again), "--perturb", "light:1"]) == 0
    np.testing.assert_array_equal(EpisodeReader(list_episodes(again)[0]).actions(), reader.actions())


def test_gen_lists_and_validates(tmp_path, capsys):
    assert main(["gen", "--list-tasks", "--list-perturbations"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in TASKS) and all(name in listing for name in PERTURBATIONS)
    assert main(["gen", "--task", "stack_cubes", "--episodes", "1"]) == 2            # no --out
    assert main(["gen", "--task", "nope", "--dry-run"]) == 2
    assert main([*ARGS, "--dry-run", "--perturb", "light:9"]) == 2
    assert "level must be one of" in capsys.readouterr().err


def test_goal_variants_share_the_layout_and_cover_every_goal():
    rng = np.random.default_rng(7)
    for task in TASKS.values():
        instance = task.sample(rng)
        variants = task.goal_variants(instance)
        goals = [tuple(sorted(v.roles.items())) for v in variants]
        assert len(set(goals)) == len(goals) >= 3, task.name          # distinct goals
        assert tuple(sorted(instance.roles.items())) in goals, task.name  # the sampled one among them
        for variant in variants:
            assert variant.poses == instance.poses and variant.colors == instance.colors
            # the instruction names the variant's referents, not the sampled ones
            named = set(variant.fields.values())
            assert variant.display_names[variant.roles["target"]] in named
    push = TASKS["push_to_zone"].goal_variants(TASKS["push_to_zone"].sample(rng))
    assert sorted((v.roles["target"], v.fields["side"]) for v in push) == [
        ("obj0", "left"), ("obj0", "right"), ("obj1", "left"), ("obj1", "right")]


def test_gen_goal_variants_record_every_goal_of_one_layout(tmp_path, capsys):
    out = tmp_path / "variants"
    args = ["gen", "--task", "push_to_zone", "--image-size", "24", "32", "--seed", "3", "--cameras", "front",
            "--out", str(out)]
    assert main([*args, "--episodes", "4", "--goal-variants", "4"]) == 0
    readers = [EpisodeReader(path) for path in list_episodes(out)]
    metas = [reader.meta for reader in readers]
    assert [m["goal_variant"] for m in metas] == [0, 1, 2, 3]
    assert len({m["seed"] for m in metas}) == 1 and len({m["instruction"] for m in metas}) == 4
    # same layout: identical first frame; different goals: the expert moves differently
    np.testing.assert_array_equal(readers[0].observation(0).rgb, readers[1].observation(0).rgb)
    assert not np.allclose(readers[0].actions()[:5], readers[1].actions()[:5])
    assert main([*args, "--episodes", "1", "--goal-variants", "5"]) == 2
    assert "goal_variants must be in [1, 4]" in capsys.readouterr().err
