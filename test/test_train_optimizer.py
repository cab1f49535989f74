"""The trainer's fused AdamW and batched gradient clipping make the same updates as torch's
reference per-tensor paths (float rounding apart), on the tiny policy's real gradients."""
from __future__ import annotations

import copy

import torch

from vla3d_ros.model.config import preset
from vla3d_ros.model.policy import VLA3DPolicy
from vla3d_ros.model.synthetic import synthetic_batch
from vla3d_ros.train.trainer import clip_gradients, make_optimizer


def _steps(policy: VLA3DPolicy, optimizer, clip, batch, stage: int, steps: int = 3) -> list[float]:
    """`steps` optimiser steps as the trainer takes them; -> the losses."""
    torch.manual_seed(0)                # dropout draws from the global generator
    generator = torch.Generator().manual_seed(0)
    parameters = policy.trainable_parameters()
    losses = []
    for _ in range(steps):
        loss = policy(batch, generator=generator)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip(parameters)
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def test_fused_adamw_and_batched_clipping_match_the_per_tensor_reference():
    torch.manual_seed(0)
    config = preset("tiny")
    batch = synthetic_batch(config, 2, seed=1)
    for stage in (1, 2):
        torch.manual_seed(stage)
        reference = VLA3DPolicy(config)
        reference.start_stage(stage)
        reference.train()
        candidate = copy.deepcopy(reference)
        parameters = reference.trainable_parameters()
        # large steps, strong decay and a tight clip, so the update, the decay and the clipping all matter
        expected = _steps(reference, torch.optim.AdamW(parameters, lr=1e-2, weight_decay=0.1, foreach=False),
                          lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.05, foreach=False), batch, stage)
        optimizer = make_optimizer(candidate.trainable_parameters(), 1e-2, 0.1, torch.device("cpu"))
        assert optimizer.defaults["fused"]
        actual = _steps(candidate, optimizer, lambda ps: clip_gradients(ps, 0.05, torch.device("cpu")), batch, stage)
        assert actual[0] == expected[0]                        # same start
        assert expected[-1] != expected[0]                     # the steps moved the model
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)   # the same training curve


def test_fused_adamw_makes_the_reference_update_to_float_rounding():
    # Parameters compared on a model whose every gradient is well above rounding: in the policy,
    # attention key biases get gradients of pure rounding noise (softmax ignores them) that Adam
    # scales up to whole steps, in either implementation.
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    candidate = copy.deepcopy(reference)
    inputs, targets = torch.randn(64, 16), torch.randn(64, 4)
    optimizers = [torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1, foreach=False),
                  make_optimizer(list(candidate.parameters()), 1e-2, 0.1, torch.device("cpu"))]
    clips = [lambda: torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.05, foreach=False),
             lambda: clip_gradients(list(candidate.parameters()), 0.05, torch.device("cpu"))]
    start = [p.detach().clone() for p in reference.parameters()]
    for _ in range(5):
        norms = []
        for model, optimizer, clip in zip((reference, candidate), optimizers, clips):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(inputs), targets).backward()
            norms.append(clip())
            optimizer.step()
        torch.testing.assert_close(norms[1], norms[0])
    for before, mine, theirs in zip(start, candidate.parameters(), reference.parameters()):
        assert (theirs - before).abs().max() > 1e-2                    # five real steps were taken
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)
