"""The vision encoder's patch-colour skip (base.VisionEncoder, `vision.colour_skip`, `vla3d train --colour-skip`)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from train_fixtures import train_tiny_stage1, write_synthetic_episodes
from vla3d_ros.model.base import COLOUR_CELL, VisionEncoder
from vla3d_ros.model.config import PolicyConfig, preset


def _configs() -> tuple[PolicyConfig, PolicyConfig]:
    config = preset("tiny")
    return config, config.replace(vision=dataclasses.replace(config.vision, colour_skip=True))


def test_patch_colours_are_each_patchs_cell_means_and_nothing_from_other_patches():
    _, config = _configs()
    encoder = VisionEncoder(config)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, *config.image_size, generator=generator)
    colours = encoder.patch_colours(images)                                       # (B, 3*c*c, h, w)
    cells = config.patch_size // COLOUR_CELL
    assert colours.shape == (2, 3 * cells * cells, *config.grid_hw)
    p = config.patch_size
    # patch (1, 0), its first cell, red channel = the mean of that cell's pixels
    assert torch.allclose(colours[0, 0, 1, 0], images[0, 0, p:p + COLOUR_CELL, 0:COLOUR_CELL].mean())
    recoloured = images.clone()
    recoloured[:, :, p:2 * p, 0:p] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]   # paint patch (1, 0) red
    changed = (encoder.patch_colours(recoloured) - colours).abs().sum(dim=(0, 1)) > 0   # (h, w)
    expected = torch.zeros(config.grid_hw, dtype=torch.bool)
    expected[1, 0] = True
    assert torch.equal(changed, expected)


def test_colour_skip_is_the_identity_at_init_then_carries_colour_the_backbone_ignores():
    torch.manual_seed(0)
    plain_config, skip_config = _configs()
    plain, skipped = VisionEncoder(plain_config), VisionEncoder(skip_config)
    skipped.load_state_dict(plain.state_dict(), strict=False)
    rgb = torch.randint(0, 256, (2, plain_config.num_views, 3, *plain_config.image_size), dtype=torch.uint8)
    features = skipped(rgb, torch.float32)
    assert torch.equal(features, plain(rgb, torch.float32))
    features.pow(2).sum().backward()                  # the zero map still gets a gradient
    assert skipped.colour_skip.weight.grad.abs().sum() > 0
    # a backbone blind to colour (every output zeroed) still yields colour-dependent features
    with torch.no_grad():
        for module in (plain.backbone, skipped.backbone):
            for parameter in module.parameters():
                parameter.zero_()
        skipped.colour_skip.weight.normal_()
    red, blue = rgb.clone(), rgb.clone()
    red[:, :, 0], blue[:, :, 2] = 255, 255
    assert torch.equal(plain(red, torch.float32), plain(blue, torch.float32))
    assert not torch.allclose(skipped(red, torch.float32), skipped(blue, torch.float32))


def test_config_validates_and_older_checkpoints_load_without_it():
    data = preset("tiny").to_dict()
    assert data["vision"]["colour_skip"] is False
    del data["vision"]["colour_skip"]                  # a checkpoint written before the option
    assert PolicyConfig.from_dict(data).vision.colour_skip is False
    data["vision"]["colour_skip"] = 1
    with pytest.raises(Exception, match="vision.colour_skip must be a bool, got 1"):
        PolicyConfig.from_dict(data)


def test_train_adds_the_colour_skip_to_an_init_checkpoint_and_trains_it(tmp_path):
    data = tmp_path / "episodes"
    write_synthetic_episodes(data, num_episodes=3, num_steps=5)
    plain = train_tiny_stage1(data, tmp_path / "plain")[0]
    assert plain.vision.colour_skip is None
    skipped = train_tiny_stage1(data, tmp_path / "skip", steps=2, init=tmp_path / "plain" / "final",
                                colour_skip=True)[0]
    assert skipped.config.vision.colour_skip is True
    assert skipped.config.replace(vision=plain.config.vision) == plain.config
    assert skipped.vision.colour_skip.weight.abs().sum() > 0                 # trained away from zero
    fresh = train_tiny_stage1(data, tmp_path / "fresh", colour_skip=True)[0]
    assert fresh.config.vision.colour_skip is True


def test_token_colours_follow_the_trunks_token_order():
    _, config = _configs()
    encoder = VisionEncoder(config)
    rgb = torch.randint(0, 256, (2, config.num_views, 3, *config.image_size), dtype=torch.uint8)
    per_token = encoder.token_colours(rgb, torch.float32)                         # (B, V*h*w, K)
    h, w = config.grid_hw
    images = (rgb.float() / 255.0 - 0.5) / 0.25
    view, row, column = config.num_views - 1, h - 1, 0
    expected = encoder.patch_colours(images[1, view][None])[0, :, row, column]
    assert torch.allclose(per_token[1, view * h * w + row * w + column], expected)
