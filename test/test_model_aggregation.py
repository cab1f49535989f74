"""Geometry aggregation (METHOD §4): identity at init, kNN locality, distance bias, EE-relative PE."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vla3d_ros.model.aggregation import GeometryAggregation, KnnLocalAttention

DIM = 12


def _inputs(generator, batch=2, instances=3, points=10):
    randn = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64)  # noqa: E731
    return dict(instance_tokens=randn(batch, instances, DIM), instance_refs=randn(batch, instances, 3) * 0.1,
                uncertainty=torch.rand(batch, instances, generator=generator, dtype=torch.float64),
                ee_position=randn(batch, 3) * 0.1, completion_tokens=randn(batch, points, DIM),
                completion_points=randn(batch, points, 3) * 0.1,
                completion_valid=torch.rand(batch, points, generator=generator) > 0.2)


def test_aggregation_is_the_exact_identity_at_initialisation():
    torch.manual_seed(0)
    module = GeometryAggregation(DIM, num_heads=3, knn=4).double()
    inputs = _inputs(torch.Generator().manual_seed(1))
    instance_out, completion_out = module(**inputs)
    assert torch.equal(instance_out, inputs["instance_tokens"])
    assert torch.equal(completion_out, inputs["completion_tokens"])
    # the identity comes from the zero-initialised layers: once they move, the output moves
    nn.init.normal_(module.local.out_proj.weight)
    nn.init.normal_(module.ee_pe.encoder.mlp[-1].weight)
    instance_out, completion_out = module(**inputs)
    assert not torch.allclose(instance_out, inputs["instance_tokens"])
    assert not torch.allclose(completion_out, inputs["completion_tokens"])


def test_gate_starts_closed_at_sigmoid_of_the_bias():
    module = GeometryAggregation(DIM, num_heads=3, gate_bias=-4.0).double()
    gate = torch.sigmoid(module.gate.mlp(torch.randn(5, 2 * DIM + 1, dtype=torch.float64)))
    assert torch.allclose(gate, torch.full_like(gate, 1 / (1 + math.exp(4.0))))


def _randomised_local(k=3, heads=2):
    torch.manual_seed(0)
    local = KnnLocalAttention(DIM, heads, k, beta_init=50.0).double()
    nn.init.normal_(local.out_proj.weight)
    return local


def test_knn_attention_reads_only_the_k_nearest_valid_points():
    generator = torch.Generator().manual_seed(2)
    local = _randomised_local(k=3)
    tokens = torch.randn(1, 1, DIM, generator=generator, dtype=torch.float64)
    refs = torch.zeros(1, 1, 3, dtype=torch.float64)
    distances = torch.tensor([0.05, 0.01, 0.30, 0.02, 0.20, 0.04], dtype=torch.float64)
    points = torch.stack([distances, torch.zeros(6), torch.zeros(6)], -1)[None].double()
    valid = torch.tensor([[True, True, True, True, True, False]])   # 0.04 is nearer than 0.05 but invalid
    point_tokens = torch.randn(1, 6, DIM, generator=generator, dtype=torch.float64)
    index, _, _ = local.neighbours(refs, points, valid)
    assert sorted(index[0, 0].tolist()) == [0, 1, 3]
    reference = local(tokens, refs, point_tokens, points, valid)
    for far in (2, 4, 5):                                 # not among the k nearest valid points
        changed = point_tokens.clone()
        changed[0, far] += 10.0
        assert torch.equal(local(tokens, refs, changed, points, valid), reference)
    changed = point_tokens.clone()
    changed[0, 0] += 10.0
    assert not torch.allclose(local(tokens, refs, changed, points, valid), reference)


def test_distance_bias_known_answer():
    """With q = 0 the weights are softmax(-beta |r - p|^2): a closed form."""
    local = KnnLocalAttention(DIM, 2, k=3, beta_init=40.0).double()
    for layer in (local.q_proj,):
        nn.init.zeros_(layer.weight), nn.init.zeros_(layer.bias)
    for layer in (local.v_proj, local.out_proj):
        nn.init.eye_(layer.weight), nn.init.zeros_(layer.bias)
    refs = torch.zeros(1, 1, 3, dtype=torch.float64)
    points = torch.tensor([[[0.1, 0, 0], [0, 0.2, 0], [0, 0, 0.3]]], dtype=torch.float64)
    point_tokens = torch.randn(1, 3, DIM, dtype=torch.float64)
    z = local(torch.randn(1, 1, DIM, dtype=torch.float64), refs, point_tokens, points, torch.ones(1, 3, dtype=torch.bool))
    weights = torch.softmax(-40.0 * torch.tensor([0.01, 0.04, 0.09], dtype=torch.float64), 0)
    assert torch.allclose(z[0, 0], weights @ point_tokens[0], atol=1e-12)


def test_beta_stays_non_negative_and_no_neighbour_gives_zero():
    local = _randomised_local()
    with torch.no_grad():
        local.beta_raw.fill_(-30.0)
    assert bool((local.beta >= 0).all())
    z = local(torch.randn(2, 4, DIM, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64),
              torch.randn(2, 5, DIM, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64),
              torch.zeros(2, 5, dtype=torch.bool))
    assert torch.equal(z, torch.zeros_like(z))


@pytest.mark.parametrize("shift", [0.37, -1.2])
def test_ee_relative_encoding_depends_only_on_the_offset(shift):
    torch.manual_seed(0)
    module = GeometryAggregation(DIM, num_heads=3, routing=False).double()
    nn.init.normal_(module.ee_pe.encoder.mlp[-1].weight)
    inputs = _inputs(torch.Generator().manual_seed(3))
    moved = dict(inputs, instance_refs=inputs["instance_refs"] + shift, ee_position=inputs["ee_position"] + shift,
                 completion_points=inputs["completion_points"] + shift)
    for a, b in zip(module(**inputs), module(**moved)):
        assert torch.allclose(a, b, atol=1e-12)
