"""`vla3d train` / `vla3d eval` argument handling: bad input fails with a clear one-line reason."""
from __future__ import annotations

import pytest

from train_fixtures import write_synthetic_episodes
from vla3d_ros.cli import main


def test_unknown_component_is_rejected_by_the_parser(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--disable", "fusion,wings"])
    assert exit_info.value.code == 2
    assert "unknown component(s) ['wings']" in capsys.readouterr().err


def test_inconsistent_ablation_names_the_dependency(capsys, tmp_path):
    write_synthetic_episodes(tmp_path / "data", num_episodes=1, num_steps=3)
    code = main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--preset", "tiny",
                 "--disable", "instances", "--no-progress"])
    assert code == 1
    assert "needs instances.enabled=True" in capsys.readouterr().err


def test_resume_without_a_run_and_offline_without_data_fail_cleanly(capsys, tmp_path):
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "none"), "--resume", "--no-progress"]) == 1
    assert "holds no run" in capsys.readouterr().err
    assert main(["eval", "--offline", "--checkpoint", str(tmp_path), "--json", str(tmp_path / "x.json")]) == 1
    assert "--offline needs --data" in capsys.readouterr().err


def test_precision_is_resolved_by_the_hardware_and_validated():
    import torch

    from vla3d_ros.model.precision import autocast, has_native_bf16, resolve_precision
    from vla3d_ros.train.trainer import TrainConfig

    assert resolve_precision("auto", "cpu") == ("bf16" if has_native_bf16("cpu") else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="'fp16'"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="'fp16'"):
        TrainConfig(data="d", out="o", precision="fp16")
    x = torch.randn(4, 4)
    with autocast("bf16", "cpu"):
        assert (x @ x).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert (x @ x).dtype == torch.float32


def test_a_continued_policy_records_its_init_training_seeds_and_instructions_too(tmp_path):
    from train_fixtures import train_tiny_stage1
    from vla3d_ros.model.checkpoint import read_checkpoint_meta
    from vla3d_ros.model.instruction_retrieval import TRAINING_INSTRUCTIONS_KEY

    first, second = tmp_path / "first", tmp_path / "second"
    write_synthetic_episodes(first, num_episodes=2, num_steps=5, seed_offset=100,
                             instructions=("pick up the red box", "lift the red box"))
    write_synthetic_episodes(second, num_episodes=2, num_steps=5, seed_offset=200,
                             instructions=("lift the red box", "raise the red box"))
    train_tiny_stage1(first, tmp_path / "a", precision="fp32")
    train_tiny_stage1(second, tmp_path / "b", init=tmp_path / "a" / "final", precision="fp32")
    extra = read_checkpoint_meta(tmp_path / "b" / "final")["extra"]
    assert extra["train_episode_seeds"] == [100, 101, 200, 201]      # the evaluator refuses all of them
    # instruction retrieval may map a request onto any instruction either run trained on
    assert extra[TRAINING_INSTRUCTIONS_KEY] == ["lift the red box", "pick up the red box", "raise the red box"]


def test_renormalize_gives_a_continued_policy_its_own_data_statistics(tmp_path):
    import numpy as np
    from train_fixtures import train_tiny_stage1

    from vla3d_ros.train.trainer import TrainConfig

    first, second = tmp_path / "first", tmp_path / "second"
    write_synthetic_episodes(first, num_episodes=2, num_steps=5, seed_offset=100)
    write_synthetic_episodes(second, num_episodes=3, num_steps=7, seed_offset=300)
    init, _ = train_tiny_stage1(first, tmp_path / "a", precision="fp32")
    fresh, _ = train_tiny_stage1(second, tmp_path / "fresh", precision="fp32")
    kept, _ = train_tiny_stage1(second, tmp_path / "kept", init=tmp_path / "a" / "final", precision="fp32")
    renormalized, _ = train_tiny_stage1(second, tmp_path / "renormalized", init=tmp_path / "a" / "final",
                                        renormalize=True, precision="fp32")
    stats = {name: policy.normalizer.stats.to_dict() for name, policy in
             (("init", init), ("fresh", fresh), ("kept", kept), ("renormalized", renormalized))}
    assert not np.allclose(stats["init"]["state_mean"], stats["fresh"]["state_mean"])
    assert stats["kept"] == stats["init"]
    assert stats["renormalized"] == stats["fresh"]
    with pytest.raises(ValueError, match="--renormalize needs --init"):
        TrainConfig(data="d", out="o", renormalize=True)


def test_refit_whitening_fits_a_continued_policys_whitening_on_its_new_wordings(tmp_path):
    import json

    import torch
    from train_fixtures import train_tiny_stage1

    from vla3d_ros.errors import TrainingError
    from vla3d_ros.train.trainer import TrainConfig

    first, second = tmp_path / "first", tmp_path / "second"
    write_synthetic_episodes(first, num_episodes=2, num_steps=5, seed_offset=100)
    for episode in write_synthetic_episodes(second, num_episodes=2, num_steps=5, seed_offset=300):
        meta = json.loads((episode / "meta.json").read_text())
        meta["instruction_variants"] = [meta["instruction"], f"{meta['instruction']} now", "move the red box"]
        (episode / "meta.json").write_text(json.dumps(meta))
    init, _ = train_tiny_stage1(first, tmp_path / "a", whiten_instructions=True, precision="fp32")
    continued = dict(init=tmp_path / "a" / "final", instruction_variants=True, precision="fp32")
    kept, _ = train_tiny_stage1(second, tmp_path / "kept", **continued)
    refitted, _ = train_tiny_stage1(second, tmp_path / "refitted", refit_whitening=True, **continued)
    fresh, _ = train_tiny_stage1(second, tmp_path / "fresh", whiten_instructions=True,
                                 instruction_variants=True, precision="fp32")
    whitening = {name: policy.trunk.instruction_whitening.state_dict() for name, policy in
                 (("init", init), ("kept", kept), ("refitted", refitted), ("fresh", fresh))}
    assert not torch.allclose(whitening["init"]["mean"], whitening["fresh"]["mean"])
    for key in ("mean", "matrix"):
        assert torch.equal(whitening["kept"][key], whitening["init"][key])
        assert torch.allclose(whitening["refitted"][key], whitening["fresh"][key])
    plain, _ = train_tiny_stage1(first, tmp_path / "plain", precision="fp32")
    with pytest.raises(TrainingError, match="has no instruction whitening"):
        train_tiny_stage1(second, tmp_path / "bad", init=tmp_path / "plain" / "final", refit_whitening=True)
    with pytest.raises(ValueError, match="--refit-whitening needs --init"):
        TrainConfig(data="d", out="o", refit_whitening=True)
