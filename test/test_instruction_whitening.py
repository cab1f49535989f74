"""The instruction pathways: whitening (base.InstructionWhitening, `vla3d train --whiten-instructions`),
the action head's direct path (base.ActionHead, `--instruction-to-actions`) and the trunk's FiLM of
the visual tokens (base.ContextTrunk, `--instruction-film`)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from train_fixtures import fake_embed, train_tiny_stage1, write_synthetic_episodes
from vla3d_ros.data.episodes import EpisodeReader, list_episodes
from vla3d_ros.model.base import ContextTrunk, InstructionWhitening, build_action_head
from vla3d_ros.model.config import PolicyConfig, preset


def _near_duplicates(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors sharing one dominant component; "side" differs by a small fixed direction, as
    "... left zone" / "... right zone" do in the sentence encoder (cosine ~0.98)."""
    generator = torch.Generator().manual_seed(seed)
    common = torch.randn(32, generator=generator)
    side_direction = torch.randn(32, generator=generator)
    side = torch.randint(0, 2, (200,), generator=generator) * 2.0 - 1.0                 # (M,)
    rows = 10 * common + 0.8 * side[:, None] * side_direction + 1 * torch.randn(200, 32, generator=generator)
    return rows / rows.norm(dim=1, keepdim=True), side


def test_identity_until_fitted_then_centred_unit_scale_and_the_small_difference_amplified():
    embeddings, side = _near_duplicates()
    whitening = InstructionWhitening(32)
    assert torch.equal(whitening(embeddings), embeddings)
    whitening.fit(embeddings)
    white = whitening(embeddings).double()
    assert white.mean(0).abs().max() < 1e-5
    assert abs(white.pow(2).sum(1).mean().item() - 1.0) < 0.02

    def separation(x: torch.Tensor) -> float:   # side-mean distance over the mean norm
        x = x.double()
        return ((x[side > 0].mean(0) - x[side < 0].mean(0)).norm() / x.norm(dim=1).mean()).item()
    assert separation(white) > 3 * separation(embeddings)


def test_fit_rejects_too_few_or_misshaped_embeddings():
    whitening = InstructionWhitening(8)
    with pytest.raises(ValueError, match=r"need \(M >= 2, 8\) embeddings, got \(1, 8\)"):
        whitening.fit(torch.zeros(1, 8))
    with pytest.raises(ValueError, match=r"got \(5, 7\)"):
        whitening.fit(torch.zeros(5, 7))


def test_config_validates_and_older_checkpoints_load_without_it(tmp_path):
    config = preset("tiny")
    assert config.trunk.instruction_whitening is False
    data = config.to_dict()
    del data["trunk"]["instruction_whitening"]            # a checkpoint written before the option
    assert PolicyConfig.from_dict(data).trunk.instruction_whitening is False
    del data["trunk"]["instruction_film"]
    assert PolicyConfig.from_dict(data).trunk.instruction_film is False
    data["trunk"]["instruction_whitening"] = "yes"
    with pytest.raises(Exception, match="trunk.instruction_whitening must be a bool, got 'yes'"):
        PolicyConfig.from_dict(data)


def test_train_adds_fits_and_saves_the_whitening_on_an_init_checkpoint(tmp_path):
    data = tmp_path / "episodes"
    write_synthetic_episodes(data, num_episodes=3, num_steps=5)

    def run(out, **options):
        return train_tiny_stage1(data, out, **options)[0]

    plain = run(tmp_path / "plain")
    assert plain.trunk.instruction_whitening is None
    whitened = run(tmp_path / "whitened", init=tmp_path / "plain" / "final", whiten_instructions=True)
    assert whitened.config.trunk.instruction_whitening is True
    instructions = [str(EpisodeReader(path).meta["instruction"]) for path in list_episodes(data)]
    embedded = torch.as_tensor(np.stack([fake_embed(text) for text in instructions]))     # (episodes, E)
    whitening = whitened.trunk.instruction_whitening
    assert torch.allclose(whitening.mean, embedded.mean(0), atol=1e-6)     # fitted on the training episodes
    assert torch.allclose(whitening(embedded).pow(2).sum(1).mean(), torch.tensor(1.0), atol=0.05)
    assert whitened.config.replace(trunk=plain.config.trunk) == plain.config
    assert whitened.action_head.instruction_query is None
    direct = run(tmp_path / "direct", init=tmp_path / "whitened" / "final", instruction_to_actions=True)
    assert direct.config.action_head.instruction_conditioning is True
    assert direct.action_head.instruction_query.weight.abs().sum() > 0      # trained away from zero
    assert torch.equal(direct.trunk.instruction_whitening.mean, whitening.mean)   # kept, not refitted
    filmed = run(tmp_path / "film", init=tmp_path / "direct" / "final", instruction_film=True)
    assert filmed.config.trunk.instruction_film is True and filmed.config.trunk.instruction_whitening is True
    assert filmed.trunk.instruction_film.weight.abs().sum() > 0             # trained away from zero


def test_the_direct_instruction_path_is_the_identity_at_init_and_then_makes_actions_depend_on_the_text():
    torch.manual_seed(0)
    base_config = preset("tiny")
    head_config = dataclasses.replace(base_config.action_head, instruction_conditioning=True)
    plain = build_action_head(base_config)
    conditioned = build_action_head(base_config.replace(action_head=head_config))
    conditioned.load_state_dict(plain.state_dict(), strict=False)
    context, pad = torch.randn(2, 5, base_config.dim), torch.zeros(2, 5, dtype=torch.bool)
    left, right = torch.randn(2, base_config.instruction_dim), torch.randn(2, base_config.instruction_dim)
    assert torch.equal(conditioned.predict(context, pad, instruction=left), plain.predict(context, pad))
    with pytest.raises(ValueError, match="conditioned on the instruction"):
        conditioned.predict(context, pad)
    # the zero map still gets a gradient, so training can open the path
    target = torch.randn(2, base_config.horizon, base_config.action_dim)
    conditioned.loss(context, pad, target, torch.zeros(2, base_config.horizon, dtype=torch.bool),
                     instruction=left).backward()
    assert conditioned.instruction_query.weight.grad.abs().sum() > 0
    with torch.no_grad():
        conditioned.instruction_query.weight.normal_()
    assert not torch.allclose(conditioned.predict(context, pad, instruction=left),
                              conditioned.predict(context, pad, instruction=right))


def test_instruction_film_is_the_identity_at_init_then_makes_visual_tokens_depend_on_the_text():
    torch.manual_seed(0)
    config = preset("tiny")
    film_config = config.replace(trunk=dataclasses.replace(config.trunk, instruction_film=True))
    plain, filmed = ContextTrunk(config), ContextTrunk(film_config)
    filmed.load_state_dict(plain.state_dict(), strict=False)
    (h, w) = config.grid_hw
    features = torch.randn(2, config.num_views, config.dim, h, w)
    red, blue = torch.randn(2, config.instruction_dim), torch.randn(2, config.instruction_dim)
    tokens, hidden = filmed(features, red)
    assert torch.equal(tokens, plain(features, red)[0])
    # the zero map still gets a gradient, so training can open the path
    hidden[-1].pow(2).sum().backward()
    assert filmed.instruction_film.weight.grad.abs().sum() > 0
    with torch.no_grad():
        filmed.instruction_film.weight.normal_()
    # with the instruction token itself held fixed, only FiLM can carry the text into the visual tokens
    filmed.instruction_proj.weight.data.zero_()
    plain.instruction_proj.weight.data.zero_()
    assert torch.equal(plain(features, red)[0], plain(features, blue)[0])
    assert not torch.allclose(filmed(features, red)[0], filmed(features, blue)[0])
