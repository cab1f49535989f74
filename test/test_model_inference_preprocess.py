"""`NumpyPolicy.batch_from_observation`: camera images resized to the deploy resolution.

RGB is resized as uint8 (antialiased bilinear) and must stay within one grey level of the float
path it replaced; depth takes, for every output pixel, the input pixel under its centre, which is
the pixel the rescaled intrinsics map that output pixel to, so no invalid depth is averaged in.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model_batches import HashingSentenceModel, synthetic_observation, tiny
from vla3d_ros import types
from vla3d_ros.model.base import InstructionEncoder
from vla3d_ros.model.policy import NumpyPolicy, VLA3DPolicy


@pytest.fixture(scope="module")
def runner() -> NumpyPolicy:
    torch.manual_seed(0)
    return NumpyPolicy(VLA3DPolicy(tiny()), instruction_encoder=InstructionEncoder(model=HashingSentenceModel()))


def _camera_observation(runner: NumpyPolicy, camera_hw: tuple[int, int], seed: int = 0) -> types.Observation:
    """A scene rendered at `camera_hw` with textured RGB and holes (NaN, inf, 0) punched into the depth."""
    obs = synthetic_observation(dataclasses.replace(runner.config, image_size=camera_hw), seed=seed)
    rng = np.random.default_rng(seed)
    rgb = np.clip(obs.rgb.astype(np.int64) + rng.integers(-60, 61, obs.rgb.shape), 0, 255).astype(np.uint8)
    depth = obs.depth.copy()
    holes = rng.random(depth.shape)
    depth[holes < 0.1] = np.nan
    depth[(holes >= 0.1) & (holes < 0.12)] = 0.0
    depth[(holes >= 0.12) & (holes < 0.13)] = np.inf
    return dataclasses.replace(obs, rgb=rgb, depth=depth)


@pytest.mark.parametrize("camera_hw", [(96, 128), (56, 104), (40, 72), (24, 16)])
def test_uint8_rgb_resize_is_within_one_grey_level_of_the_float_path(runner, camera_hw):
    obs = _camera_observation(runner, camera_hw)
    before = obs.rgb.copy()
    with torch.inference_mode():
        rgb = runner.batch_from_observation(obs)[types.RGB][0]                        # (V, 3, h, w)
    reference = F.interpolate(torch.from_numpy(obs.rgb).permute(0, 3, 1, 2).double(), size=runner.config.image_size,
                              mode="bilinear", antialias=True, align_corners=False).round().clamp(0, 255)
    assert rgb.dtype == torch.uint8 and rgb.shape == reference.shape
    difference = (rgb.double() - reference).abs()
    assert difference.max() <= 1.0
    assert difference.mean() < 0.5                   # rounding differences, not a shifted or blurred image
    np.testing.assert_array_equal(obs.rgb, before)  # the observation is not modified


@pytest.mark.parametrize("camera_hw", [(96, 128), (56, 104), (40, 72), (24, 16)])
def test_depth_takes_the_pixel_under_each_output_centre_and_never_mixes_invalid_depth(runner, camera_hw):
    obs = _camera_observation(runner, camera_hw, seed=1)
    with torch.inference_mode():
        batch = runner.batch_from_observation(obs)
    depth = batch[types.DEPTH][0].numpy()                                             # (V, h, w)
    K = batch[types.INTRINSICS][0].double().numpy()
    (height, width), (target_h, target_w) = camera_hw, runner.config.image_size
    # where the rescaled K sends each output pixel centre, in input pixel coordinates (per view)
    jj, ii = np.meshgrid(np.arange(target_w), np.arange(target_h))
    centres = np.stack([jj, ii, np.ones_like(ii)], -1).astype(np.float64)             # (h, w, 3)
    mapped = np.einsum("vij,vjk,hwk->vhwi", obs.intrinsics, np.linalg.inv(K), centres)[..., :2]
    rows = np.floor((np.arange(target_h) + 0.5) * height / target_h).astype(int)
    cols = np.floor((np.arange(target_w) + 0.5) * width / target_w).astype(int)
    # the sampled pixel is the one containing the mapped centre (|offset| <= half a pixel; K is float32)
    assert np.abs(mapped[..., 0] - cols[None, None, :]).max() <= 0.5 + 1e-4
    assert np.abs(mapped[..., 1] - rows[None, :, None]).max() <= 0.5 + 1e-4
    expected = obs.depth[:, rows][:, :, cols]
    np.testing.assert_array_equal(depth, expected)             # exact values, NaN exactly where the source is NaN
    assert np.isnan(depth).any() and (depth == 0).any()        # the holes survive as holes


def test_rgb_only_observation_gets_all_invalid_depth_at_the_deploy_size(runner):
    obs = dataclasses.replace(_camera_observation(runner, (96, 128)), depth=None)
    with torch.inference_mode():
        depth = runner.batch_from_observation(obs)[types.DEPTH]
    assert depth.shape == (1, runner.config.num_views, *runner.config.image_size) and bool(depth.isnan().all())


def test_native_resolution_passes_pixels_through_unchanged(runner):
    obs = _camera_observation(runner, runner.config.image_size)
    with torch.inference_mode():
        batch = runner.batch_from_observation(obs)
    np.testing.assert_array_equal(batch[types.RGB][0].permute(0, 2, 3, 1).numpy(), obs.rgb)
    np.testing.assert_array_equal(batch[types.DEPTH][0].numpy(), obs.depth)
    np.testing.assert_allclose(batch[types.INTRINSICS][0].numpy(), obs.intrinsics, rtol=1e-6)
