"""The reasoning anchor (METHOD §8, reasoning_anchor.py): which object the instruction names, the
fact loss, identity at init, and `vla3d train --reasoning-anchor` on an --init checkpoint."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from train_fixtures import train_tiny_stage1, write_synthetic_episodes
from vla3d_ros.model.base import build_action_head
from vla3d_ros.model.config import PolicyConfig, preset
from vla3d_ros.model.reasoning_anchor import FACT_SCALE, anchor_fact_loss, instructed_object_row


def test_the_instructed_object_is_the_first_named_and_its_row_follows_ascending_ids():
    cans = {"blue can": 2, "red can": 1}
    assert instructed_object_row("push the red can to the left zone", cans) == 0
    assert instructed_object_row("slide the blue can into the right zone", cans) == 1
    cubes = {"red cube": 3, "blue cube": 1, "green cube": 2}
    assert instructed_object_row("stack the green cube on the blue cube", cubes) == 1
    assert instructed_object_row("put the red cube in the bowl", {**cubes, "bowl": 4}) == 2
    assert instructed_object_row("wave at the camera", cubes) == -1
    assert instructed_object_row("push the red can", {}) == -1


def test_fact_loss_uses_only_known_rows_and_is_zero_when_right():
    centroids = torch.tensor([[[0.4, 0.1, 0.03], [0.6, -0.1, 0.03]],
                              [[0.5, 0.0, 0.03], [0.0, 0.0, 0.0]]])                 # (B=2, T=2, 3)
    valid = torch.tensor([[True, True], [True, False]])
    rows = torch.tensor([1, 1])                                                      # sample 1's row is padding
    exact = torch.tensor([[0.6, -0.1, 0.03], [9.0, 9.0, 9.0]], requires_grad=True)
    assert anchor_fact_loss(exact, centroids, valid, rows).item() == pytest.approx(0.0, abs=1e-6)
    off = torch.tensor([[0.6, -0.05, 0.03], [9.0, 9.0, 9.0]])
    assert anchor_fact_loss(off, centroids, valid, rows).item() == pytest.approx(0.05 / FACT_SCALE)
    unknown = anchor_fact_loss(exact, centroids, valid, torch.tensor([-1, -1]))
    unknown.backward()
    assert unknown.item() == 0.0 and exact.grad is not None


def test_the_anchor_is_the_identity_at_init_and_learns_from_the_fact():
    torch.manual_seed(0)
    config = preset("tiny")
    direct = dataclasses.replace(config.action_head, instruction_conditioning=True)
    plain = build_action_head(config.replace(action_head=direct))
    anchored = build_action_head(config.replace(action_head=dataclasses.replace(direct, reasoning_anchor=True)))
    anchored.load_state_dict(plain.state_dict(), strict=False)
    context, pad = torch.randn(2, 5, config.dim), torch.zeros(2, 5, dtype=torch.bool)
    instruction = torch.randn(2, config.instruction_dim)
    assert torch.equal(anchored.predict(context, pad, instruction=instruction),
                       plain.predict(context, pad, instruction=instruction))
    offset, fact = anchored.reasoning_anchor(instruction, context, pad)
    assert offset.abs().max() == 0 and fact.shape == (2, 3)
    # the fact reaches the anchor's attention; the action loss reaches its (zero) query map
    fact.sum().backward()
    assert anchored.reasoning_anchor.attend.multihead_attn.in_proj_weight.grad.abs().sum() > 0
    target = torch.randn(2, config.horizon, config.action_dim)
    anchored.loss(context, pad, target, torch.zeros(2, config.horizon, dtype=torch.bool),
                  instruction=instruction).backward()
    assert anchored.reasoning_anchor.to_query.weight.grad.abs().sum() > 0


def test_config_needs_the_direct_path_and_older_checkpoints_load_without_the_anchor():
    data = preset("tiny").to_dict()
    del data["action_head"]["reasoning_anchor"], data["action_head"]["anchor_weight"]
    assert PolicyConfig.from_dict(data).action_head.reasoning_anchor is False
    data["action_head"]["reasoning_anchor"] = True
    with pytest.raises(Exception, match="reasoning_anchor needs action_head.instruction_conditioning=True"):
        PolicyConfig.from_dict(data)


def test_train_adds_the_anchor_to_an_init_checkpoint_and_trains_it(tmp_path):
    data = tmp_path / "episodes"
    write_synthetic_episodes(data, num_episodes=3, num_steps=5)

    def run(out, **options):
        return train_tiny_stage1(data, out, steps=2, **options)

    plain, _ = run(tmp_path / "plain")
    assert plain.action_head.reasoning_anchor is None
    anchored, results = run(tmp_path / "anchored", init=tmp_path / "plain" / "final", reasoning_anchor=True)
    head = anchored.config.action_head
    assert head.reasoning_anchor and head.instruction_conditioning            # the flag implies the direct path
    assert results[-1].last_metrics["loss/anchor"] > 0                          # the fixtures name "red box"
    assert anchored.action_head.reasoning_anchor.to_query.weight.abs().sum() > 0
    reweighted, _ = run(tmp_path / "reweighted", init=tmp_path / "anchored" / "final", anchor_weight=0.5)
    assert reweighted.config.action_head.anchor_weight == 0.5 and anchored.config.action_head.anchor_weight == 0.1
