"""The experiment additions (`train/extensions/`): a continued (`--init`) policy that gains them ends
with exactly the config a fresh policy is built with, keeps every tensor outside the added parts,
and needs nothing more afterwards."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vla3d_ros.model.config import preset
from vla3d_ros.model.policy import VLA3DPolicy
from vla3d_ros.train.extensions import EXTENSIONS
from vla3d_ros.train.trainer import TrainConfig, policy_config_for

STATE_DIM, NUM_VIEWS = 15, 2
# Flags whose additions need no labelled frames (the grounding's fit does: test_model_reasoning_anchor).
REQUESTS = [
    {"whiten_instructions": True},
    {"instruction_to_actions": True, "anchor_weight": 0.3},
    {"reasoning_anchor": True, "instruction_film": True},
    {"colour_skip": True, "spatial_forcing": 0.5},
    {"whiten_instructions": True, "reasoning_anchor": True, "instruction_film": True, "colour_skip": True,
     "anchor_weight": 0.7, "spatial_forcing": 0.2},
]


def _instructions(dim: int) -> SimpleNamespace:
    """What the whitening fit reads of a dataset: each episode's instruction(s) and their embeddings."""
    rng = np.random.default_rng(0)
    texts = [f"instruction {i}" for i in range(6)]
    return SimpleNamespace(instructions=[[text] for text in texts],
                           embeddings={t: rng.normal(size=dim).astype(np.float32) for t in texts})


def _continued(config: TrainConfig, policy: VLA3DPolicy, dataset) -> VLA3DPolicy:
    for extension in EXTENSIONS:
        if extension.wanted(config, policy):
            policy = extension.apply(policy, dataset, config, print)
    return policy


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: "+".join(r))
def test_a_continued_policy_gains_what_a_fresh_one_is_built_with_and_keeps_the_rest(request_, tmp_path):
    config = TrainConfig(data=tmp_path, out=tmp_path / "out", preset="tiny", init=tmp_path / "init", **request_)
    plain = preset("tiny").replace(state_dim=STATE_DIM, num_views=NUM_VIEWS)
    torch.manual_seed(0)
    loaded = VLA3DPolicy(plain)
    before = {name: tensor.clone() for name, tensor in loaded.state_dict().items()}
    dataset = _instructions(plain.instruction_dim)

    continued = _continued(config, loaded, dataset)

    assert continued.config == policy_config_for(config, state_dim=STATE_DIM, num_views=NUM_VIEWS)
    after = continued.state_dict()
    kept = [name for name in before if name in after]
    assert all(torch.equal(before[name], after[name]) for name in kept)
    added = sorted(set(after) - set(before))
    assert len(kept) == len(before) and added, added          # only additions, none dropped
    assert _continued(config, continued, dataset) is continued   # nothing left to add: no second rebuild
    if request_.get("whiten_instructions"):                    # fitted, not the identity any more
        assert not torch.equal(continued.trunk.instruction_whitening.matrix, torch.eye(plain.instruction_dim))
