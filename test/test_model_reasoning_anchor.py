"""The reasoning anchor (METHOD §8, reasoning_anchor.py): which object the instruction names, the
fact loss, identity at init, and `vla3d train --reasoning-anchor` on an --init checkpoint."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from train_fixtures import train_tiny_stage1, write_synthetic_episodes
from vla3d_ros.model.base import build_action_head
from vla3d_ros.model.config import PolicyConfig, preset
from vla3d_ros.model.reasoning_anchor import (FACT_SCALE, GroundingInputs, ObjectGrounding, anchor_fact_loss,
                                               grounded_point, grounding_loss, grounding_target,
                                               instructed_object_row)


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
    offset, fact, grounding = anchored.reasoning_anchor(instruction, context, pad)
    assert offset.abs().max() == 0 and fact.shape == (2, 3) and grounding is None
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


# ---- grounding: which visual tokens show the instructed object ---------------------------------


def test_grounding_target_is_each_tokens_share_of_the_instructed_objects_mask():
    masks = torch.zeros(2, 2, 2, 8, 8, dtype=torch.bool)                            # (B, T, V, Hm, Wm), 4x4 grid
    masks[0, 1, 0, 0:2, 0:2] = True                                                  # view 0, token (0, 0): 4 px
    masks[0, 1, 1, 6:8, 4:8] = True                                                  # view 1, tokens (3, 2), (3, 3)
    masks[0, 0, 0, 4:8, 4:8] = True                                                  # the other object
    target, known = grounding_target(masks, torch.tensor([1, -1]), (4, 4))
    assert target.shape == (2, 2 * 16) and known.tolist() == [True, False]
    expected = torch.zeros(32)
    expected[0], expected[16 + 14], expected[16 + 15] = 4 / 12, 4 / 12, 4 / 12
    assert torch.allclose(target[0], expected)
    hidden = grounding_target(masks, torch.tensor([1, 1]), (4, 4))[1]
    assert hidden.tolist() == [True, False]                                          # sample 1: mask empty


def test_grounding_loss_is_least_at_the_target_and_zero_when_nothing_is_known():
    target = torch.tensor([[0.0, 0.5, 0.5, 0.0]])
    known = torch.tensor([True])
    at_target = grounding_loss(torch.log(target.clamp(min=1e-9)), target, known)
    assert at_target.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-4)   # the entropy
    assert grounding_loss(torch.zeros(1, 4), target, known) > at_target
    logits = torch.zeros(1, 4, requires_grad=True)
    nothing = grounding_loss(logits, target, torch.tensor([False]))
    nothing.backward()
    assert nothing.item() == 0.0 and logits.grad is not None


def _grounded_head(config: PolicyConfig):
    head = dataclasses.replace(config.action_head, instruction_conditioning=True, reasoning_anchor=True,
                               grounding_weight=0.1)
    return build_action_head(config.replace(action_head=head))


def _grounding_inputs(config: PolicyConfig, batch: int, visual: int) -> GroundingInputs:
    generator = torch.Generator().manual_seed(1)
    return GroundingInputs(torch.rand(batch, visual, 3 * (config.patch_size // 4) ** 2, generator=generator),
                           torch.rand(batch, visual, 3, generator=generator),
                           torch.rand(batch, visual, generator=generator) > 0.3,
                           torch.rand(batch, 3, generator=generator))


def test_grounding_reads_only_the_visual_tokens_and_keeps_the_head_the_identity_at_init():
    torch.manual_seed(0)
    config = preset("tiny")
    head = _grounded_head(config)
    visual = config.num_views * config.grid_hw[0] * config.grid_hw[1]
    context = torch.randn(2, 1 + visual + 5, config.dim)                              # instr, visual, 5 others
    pad = torch.zeros(context.shape[:2], dtype=torch.bool)
    instruction = torch.randn(2, config.instruction_dim)
    inputs = _grounding_inputs(config, 2, visual)
    with pytest.raises(ValueError, match="grounding needs GroundingInputs"):
        head.reasoning_anchor(instruction, context, pad)
    anchored = head.reasoning_anchor(instruction, context, pad, inputs)
    assert anchored.grounding.shape == (2, visual) and anchored.offset.abs().max() == 0
    moved = context.clone()
    moved[:, 0] += 1.0                                                                # instruction token
    moved[:, 1 + visual:] += 1.0                                                      # non-visual tokens
    assert torch.equal(head.reasoning_anchor(instruction, moved, pad, inputs).grounding, anchored.grounding)
    moved[:, 1 + visual - 1] += 1.0                                                   # the last visual token
    assert not torch.equal(head.reasoning_anchor(instruction, moved, pad, inputs).grounding, anchored.grounding)
    recoloured = inputs._replace(colours=inputs.colours + (torch.arange(visual) == 0)[None, :, None])
    assert not torch.equal(head.reasoning_anchor(instruction, context, pad, recoloured).grounding,
                           anchored.grounding)


def test_the_grounded_point_is_the_score_weighted_mean_of_valid_points_and_moves_with_them():
    points = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [9.0, 9.0, 9.0]]])   # (1, 4, 3)
    valid = torch.tensor([[True, True, True, False]])
    logits = torch.tensor([[0.0, 0.0, 0.0, 50.0]])                                   # the invalid one ignored
    assert torch.allclose(grounded_point(logits, points, valid), torch.tensor([[1 / 3, 2 / 3, 0.0]]))
    sharp = torch.tensor([[0.0, 30.0, 0.0, 0.0]])
    assert torch.allclose(grounded_point(sharp, points, valid), torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-6)
    shift = torch.tensor([0.2, -0.1, 0.4])                                             # translating every point
    assert torch.allclose(grounded_point(logits, points + shift, valid),
                          grounded_point(logits, points, valid) + shift, atol=1e-6)
    nothing = grounded_point(logits, points, torch.zeros_like(valid))
    assert torch.equal(nothing, torch.zeros(1, 3))


def test_the_fact_starts_at_the_grounded_point_and_the_offset_follows_it():
    torch.manual_seed(0)
    config = preset("tiny")
    head = _grounded_head(config)
    anchor = head.reasoning_anchor
    visual = config.num_views * config.grid_hw[0] * config.grid_hw[1]
    context, pad = torch.randn(2, 1 + visual, config.dim), torch.zeros(2, 1 + visual, dtype=torch.bool)
    instruction, inputs = torch.randn(2, config.instruction_dim), _grounding_inputs(config, 2, visual)
    with torch.no_grad():
        anchor.fact_head.weight.zero_()
        anchor.fact_head.bias.zero_()
        anchor.point_to_query.encoder.mlp[-1].weight.normal_()
    out = anchor(instruction, context, pad, inputs)
    assert torch.allclose(out.fact, grounded_point(out.grounding, inputs.points, inputs.point_valid))
    moved = anchor(instruction, context, pad, inputs._replace(ee_position=inputs.ee_position + 0.1))
    assert not torch.allclose(moved.offset, out.offset)           # the way from the tool to the object


def test_grounding_learns_to_pick_the_token_of_the_named_colour():
    """The patch colours carry a colour code among noise, the tokens only noise; the instruction
    names one colour: the score must learn to put its top token on the named colour, anywhere."""
    torch.manual_seed(0)
    colours, tokens, dim, words = 6, 12, 16, 8
    grounding = ObjectGrounding(dim, words, dim)
    colour_codes, word_codes = torch.randn(colours, dim), torch.randn(colours, words)
    optimizer = torch.optim.Adam(grounding.parameters(), lr=1e-2)

    def scenes(n: int):
        palette = torch.stack([torch.randperm(colours)[:2] for _ in range(n)])       # two objects per scene
        where = torch.stack([torch.randperm(tokens)[:2] for _ in range(n)])
        patch = 0.3 * torch.randn(n, tokens, dim)
        patch[torch.arange(n)[:, None], where] += colour_codes[palette]
        named = torch.randint(0, 2, (n,))
        target = torch.zeros(n, tokens)
        target[torch.arange(n), where[torch.arange(n), named]] = 1.0
        return word_codes[palette[torch.arange(n), named]], torch.randn(n, tokens, dim), patch, target

    for _ in range(300):
        instruction, visual, patch, target = scenes(64)
        loss = grounding_loss(grounding(instruction, visual, patch)[0], target, torch.ones(64, dtype=torch.bool))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    instruction, visual, patch, target = scenes(500)
    picked = grounding(instruction, visual, patch)[0].argmax(dim=1)
    assert (target[torch.arange(500), picked] == 1).float().mean() > 0.95


def test_grounding_config_needs_the_anchor_and_older_checkpoints_load_without_it():
    data = preset("tiny").to_dict()
    del data["action_head"]["grounding_weight"]
    assert PolicyConfig.from_dict(data).action_head.grounding_weight == 0.0
    data["action_head"]["grounding_weight"] = 0.3
    with pytest.raises(Exception, match="grounding_weight 0.3 needs action_head.reasoning_anchor=True"):
        PolicyConfig.from_dict(data)


def test_train_adds_grounding_to_an_init_checkpoint_and_trains_it(tmp_path):
    data = tmp_path / "episodes"
    write_synthetic_episodes(data, num_episodes=3, num_steps=5)
    train_tiny_stage1(data, tmp_path / "plain")
    grounded, results = train_tiny_stage1(data, tmp_path / "grounded", steps=2, init=tmp_path / "plain" / "final",
                                          grounding_weight=0.2)
    head = grounded.config.action_head
    assert head.reasoning_anchor and head.instruction_conditioning and head.grounding_weight == 0.2
    assert results[-1].last_metrics["loss/grounding"] > 0
    assert grounded.action_head.reasoning_anchor.grounding is not None
    dropped, _ = train_tiny_stage1(data, tmp_path / "dropped", init=tmp_path / "grounded" / "final",
                                   grounding_weight=0.0)
    assert dropped.action_head.reasoning_anchor.grounding is None and dropped.config.action_head.grounding_weight == 0


def test_adding_grounding_to_an_init_checkpoint_fits_it_on_the_data_first(tmp_path, capsys):
    import re

    data = tmp_path / "episodes"
    write_synthetic_episodes(data, num_episodes=3, num_steps=5)                     # 15 frames
    train_tiny_stage1(data, tmp_path / "plain")
    capsys.readouterr()
    train_tiny_stage1(data, tmp_path / "grounded", init=tmp_path / "plain" / "final", grounding_weight=0.2)
    fitted = re.search(r"grounding fitted on (\d+) frames' trunk tokens and patch colours: "
                       r"cross-entropy ([\d.]+) -> ([\d.]+)", capsys.readouterr().out)
    frames, before, after = int(fitted[1]), float(fitted[2]), float(fitted[3])
    assert frames == 15 and after < before - 0.5
    train_tiny_stage1(data, tmp_path / "again", init=tmp_path / "grounded" / "final", grounding_weight=0.3)
    assert "grounding fitted" not in capsys.readouterr().out                     # only when it is added
