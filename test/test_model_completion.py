"""Completion predictor (METHOD §3): masking, EMA teacher, loss, overfitting, completion queries."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from vla3d_ros.model.completion import (CompletionPredictor, block_mask, ema_momentum, farthest_point_sample,
                                        propose_completion_points)
from vla3d_ros.model.fusion import MultiViewSpatialFusion
from vla3d_ros.model.losses import predictor_loss

DIM, VIEWS, GRID = 24, 2, (4, 4)
LOW, HIGH = (-0.5, -0.5, 0.0), (0.5, 0.5, 0.5)


def _predictor(seed=0) -> tuple[MultiViewSpatialFusion, CompletionPredictor]:
    torch.manual_seed(seed)
    fusion = MultiViewSpatialFusion(DIM, 1, 2, LOW, HIGH, 4)
    return fusion, CompletionPredictor(DIM, 1, 2, VIEWS, fusion, fourier_frequencies=3, mask_block=2)


def _inputs(seed=0, batch=2):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, VIEWS, DIM, *GRID, generator=generator)
    points = torch.rand(batch, VIEWS, *GRID, 3, generator=generator) * 0.6 - torch.tensor([0.3, 0.3, 0.0])
    return features, points, torch.ones(batch, VIEWS, *GRID, dtype=torch.bool)


def test_block_mask_hides_exactly_half_of_every_view_in_whole_blocks():
    mask = block_mask(8, 3, (4, 6), 0.5, 2, torch.Generator().manual_seed(0))
    assert mask.shape == (8, 3, 4, 6)
    assert bool((mask.flatten(2).sum(-1) == 12).all())
    blocks = mask.reshape(8, 3, 2, 2, 3, 2).permute(0, 1, 2, 4, 3, 5).flatten(-2)      # (B, V, 2, 3, 4)
    assert bool((blocks.all(-1) | ~blocks.any(-1)).all())          # each 2x2 block fully in or out
    # asymmetric: views of one sample are masked independently
    assert not all(torch.equal(mask[b, 0], mask[b, 1]) for b in range(8))
    with pytest.raises(ValueError, match="1.0"):
        block_mask(1, 1, (4, 4), 1.0, 2)


def test_ema_momentum_schedule_end_points():
    assert ema_momentum(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert ema_momentum(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert ema_momentum(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert ema_momentum(500, 100, 0.996, 1.0) == pytest.approx(1.0)


def test_ema_update_matches_the_closed_form():
    fusion, predictor = _predictor()
    fusion.double(), predictor.double()
    teacher_start = copy.deepcopy(predictor.teacher.state_dict())
    with torch.no_grad():
        for parameter in fusion.parameters():
            parameter.add_(torch.randn_like(parameter))
    momentum, steps = 0.9, 7
    for _ in range(steps):
        predictor.update_teacher(fusion, momentum)
    # t_n = s + m^n (t_0 - s) for a fixed student s
    for name, student in fusion.named_parameters():
        expected = student + momentum ** steps * (teacher_start[name] - student)
        assert torch.allclose(predictor.teacher.state_dict()[name], expected, atol=1e-12, rtol=0)
    predictor.reset_teacher(fusion)
    for name, student in fusion.state_dict().items():
        assert torch.equal(predictor.teacher.state_dict()[name], student)


def test_teacher_receives_no_gradient_and_is_not_a_trainable_parameter():
    fusion, predictor = _predictor()
    prediction, target = predictor.masked_prediction(fusion, *_inputs())
    assert not target.requires_grad
    predictor_loss(prediction, target)["total"].backward()
    assert all(p.grad is None and not p.requires_grad for p in predictor.teacher.parameters())
    trainable = {id(p) for p in predictor.predictor_parameters()}
    assert not trainable & {id(p) for p in predictor.teacher.parameters()}
    assert predictor.query_mask_token.grad is not None and predictor.input_mask_feature.grad is not None


def test_student_context_carries_nothing_of_the_masked_patches():
    fusion, predictor = _predictor()
    features, points, valid = _inputs()
    prediction, _ = predictor.masked_prediction(fusion, features, points, valid, torch.Generator().manual_seed(5))
    mask = block_mask(2, VIEWS, GRID, 0.5, 2, torch.Generator().manual_seed(5))
    scrambled = torch.where(mask[:, :, None], torch.randn_like(features) * 5, features)
    again, target = predictor.masked_prediction(fusion, scrambled, points, valid, torch.Generator().manual_seed(5))
    assert torch.equal(prediction, again)
    # ...while the teacher, which sees the unmasked input, does see them
    _, original_target = predictor.masked_prediction(fusion, features, points, valid, torch.Generator().manual_seed(5))
    assert not torch.allclose(target, original_target)


def test_unmasked_memory_stands_in_for_the_teacher_only_while_it_equals_the_fusion():
    fusion, predictor = _predictor()
    features, points, valid = _inputs()
    fake_memory = torch.randn(2, VIEWS * GRID[0] * GRID[1], DIM)       # recognisable stand-in output

    def target(**kwargs):
        return predictor.masked_prediction(fusion, features, points, valid, torch.Generator().manual_seed(5),
                                           **kwargs)[1]

    computed = target()
    assert predictor.teacher_equals(fusion)
    # equal weights: the given memory is used as the teacher output (layer-normed, gathered at the mask)
    reused = target(unmasked_memory=fusion(features, points, valid).memory)
    torch.testing.assert_close(reused, computed, atol=0, rtol=0)
    assert not torch.allclose(target(unmasked_memory=fake_memory), computed)
    # once the teacher drifts from the fusion, its own forward runs and the given memory is ignored
    with torch.no_grad():
        next(fusion.parameters()).add_(0.1)
    assert not predictor.teacher_equals(fusion)
    torch.testing.assert_close(target(unmasked_memory=fake_memory), computed, atol=0, rtol=0)


def test_predictor_loss_known_answers():
    target = torch.randn(2, 6, 8, dtype=torch.float64)
    perfect = predictor_loss(target * 3.0, target * 3.0)
    assert float(perfect["smooth_l1"]) == 0.0 and float(perfect["cosine"]) == pytest.approx(0.0, abs=1e-12)
    collapsed = predictor_loss(torch.ones(2, 6, 8, dtype=torch.float64), target, gamma=1.0)
    assert float(collapsed["variance"]) == pytest.approx(1.0)       # std 0 in every channel
    opposite = predictor_loss(-target, target, weight_var=0.0)
    assert float(opposite["cosine"]) == pytest.approx(2.0)


def test_predictor_loss_falls_when_overfitting_a_tiny_batch():
    fusion, predictor = _predictor()
    fusion.requires_grad_(False)                                      # stage 2: the fusion is frozen
    inputs = _inputs(batch=2)
    optimiser = torch.optim.AdamW(predictor.predictor_parameters(), lr=3e-3)
    history = []
    for _ in range(60):
        prediction, target = predictor.masked_prediction(fusion, *inputs, torch.Generator().manual_seed(0))
        loss = predictor_loss(prediction, target)["total"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
    assert history[-1] < 0.5 * history[0], history[::10]


def test_completion_queries_padding_and_context_dependence():
    fusion, predictor = _predictor()
    features, points, valid = _inputs()
    fused = fusion(features, points, valid)
    queries = torch.rand(2, 5, 3) * 0.2
    query_valid = torch.tensor([[True, True, True, False, False]] * 2)
    tokens = predictor.complete(fused.memory, fused.points, GRID, VIEWS, queries, query_valid)
    moved = queries.clone()
    moved[:, 3:] += 0.3                                                # only padded queries move
    assert torch.allclose(predictor.complete(fused.memory, fused.points, GRID, VIEWS, moved, query_valid)[:, :3],
                          tokens[:, :3], atol=1e-6)
    other = predictor.complete(fused.memory * -1.0, fused.points, GRID, VIEWS, queries, query_valid)
    assert not torch.allclose(other[:, :3], tokens[:, :3])


def test_farthest_point_sampling_spreads_and_flags_duplicates():
    points = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [0.5, 0, 0], [0.1, 0, 0]]])
    index, picked = farthest_point_sample(points, torch.ones(1, 4, dtype=torch.bool), torch.tensor([0]), 3)
    assert index[0].tolist() == [0, 1, 2] and picked.all()
    index, picked = farthest_point_sample(points[:, :2], torch.tensor([[True, False]]), torch.tensor([0]), 2)
    assert picked[0].tolist() == [True, False]


def test_proposals_sit_on_the_hidden_side_of_each_instance():
    # camera on -x sees the front face of an object centred at the origin: x = -0.03
    y, z = torch.meshgrid(torch.linspace(-0.03, 0.03, 4), torch.linspace(0.0, 0.06, 4), indexing="ij")
    front = torch.stack([torch.full_like(y, -0.03), y, z], -1).reshape(1, -1, 3)
    far_away = torch.tensor([[[2.0, 2.0, 0.0]]])
    observed = torch.cat([front, far_away], 1)
    refs = torch.tensor([[[0.0, 0.0, 0.03], [2.0, 2.0, 0.0], [9.0, 9.0, 9.0]]])
    scores = torch.tensor([[0.9, 0.8, 0.95]])
    instance_valid = torch.tensor([[True, True, False]])
    points, valid, owner = propose_completion_points(refs, scores, instance_valid, observed,
                                                     torch.ones(1, observed.shape[1], dtype=torch.bool), 2, 4, 0.08)
    assert points.shape == (1, 8, 3) and owner[0].tolist() == [0] * 4 + [1] * 4
    first = points[0, :4][valid[0, :4]]
    assert len(first) == 4 and bool((first[:, 0] >= 0).all())        # nothing on the observed face
    assert bool((first[:, 0] == 0.03).any())                          # the mirrored back face
    assert (torch.cdist(first, first) + torch.eye(4)).min() > 0       # distinct points
    # an instance with no observed neighbour but itself still gets its centroid, once
    assert valid[0, 4:].tolist() == [True, False, False, False]
    assert torch.allclose(points[0, 4], refs[0, 1]) and math.isfinite(float(points.sum()))


def test_observed_points_far_from_every_instance_change_no_proposal():
    """Only the observed points within `radius` of a chosen instance can shape its queries: adding
    far or invalid points anywhere in the token order gives the same points, validity and owners,
    and with no near point at all every chosen instance gets its centroid alone."""
    generator = torch.Generator().manual_seed(3)
    refs = torch.rand(2, 5, 3, generator=generator) * 0.4
    scores = torch.rand(2, 5, generator=generator)
    instance_valid = torch.tensor([[True, True, False, True, True], [True, False, True, True, False]])
    near = refs[:, :, None] + 0.05 * (torch.rand(2, 5, 6, 3, generator=generator) - 0.5)     # within 0.05 * sqrt(3) / 2
    near = near.flatten(1, 2)                                                                  # (2, 30, 3)
    far = 10.0 + torch.rand(2, 40, 3, generator=generator)
    order = torch.randperm(70, generator=generator)
    observed = torch.cat([near, far], 1)[:, order]
    valid = torch.ones(2, 70, dtype=torch.bool)
    hidden = torch.cat([near, refs[:, :1].expand(-1, 10, -1)], 1)                              # invalid: ignored
    hidden_valid = torch.cat([torch.ones(2, 30, dtype=torch.bool), torch.zeros(2, 10, dtype=torch.bool)], 1)
    args = (refs, scores, instance_valid)
    reference = propose_completion_points(*args, near, torch.ones(2, 30, dtype=torch.bool), 3, 4, 0.08)
    for extra in (propose_completion_points(*args, observed, valid, 3, 4, 0.08),
                  propose_completion_points(*args, hidden, hidden_valid, 3, 4, 0.08)):
        for got, expected in zip(extra, reference):
            assert torch.equal(got, expected)
    assert int(reference[1].sum()) > 3 * 2                  # several queries per instance were proposed
    points, proposed, owner = propose_completion_points(*args, far, torch.ones(2, 40, dtype=torch.bool), 3, 4, 0.08)
    assert proposed[:, ::4].all() and not proposed.reshape(2, 3, 4)[..., 1:].any()
    assert torch.equal(points.reshape(2, 3, 4, 3)[:, :, 0], torch.gather(refs, 1, owner[:, ::4, None].expand(-1, -1, 3)))
