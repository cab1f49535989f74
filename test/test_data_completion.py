"""Completion targets (METHOD §3.2) on shapes with known geometry, seen by 1-3 virtual cameras."""
from __future__ import annotations

import numpy as np
import pytest

from data_synthetic_scenes import (
    CAMERA_EYES,
    Box,
    Cylinder,
    make_observation,
    occluded_from_all,
    render,
)
from vla3d_ros.data.completion_targets import (
    CompletionTargetConfig,
    GeometricCompleter,
    completion_targets,
    farthest_point_sample,
    footprint_rectangle,
)
from vla3d_ros.data.labels import DepthClusterLabeler, SegmentationLabeler

EYES = list(CAMERA_EYES.values())
BOX = Box((0.02, -0.01), (0.03, 0.025, 0.03), yaw=0.4)
CYLINDER = Cylinder((0.01, 0.02), 0.03, 0.08)


def _targets(objects, num_cameras, **kwargs):
    depth, seg, K, T = render(objects, EYES[:num_cameras])
    obs = make_observation(depth, K, T)
    labels = SegmentationLabeler().label(obs, seg)
    points, valid = completion_targets(obs, labels, **kwargs)
    return points, valid, (depth, K, T)


# Tolerances: the images are 96 x 96, one pixel ~ 8 mm on the objects, so the footprint is
# known to a few mm. A box's completion is exact up to that; for a round object the box-face
# gap filler may add points up to r (sqrt 2 - 1) off its surface (module docstring).
@pytest.mark.parametrize("num_cameras", [1, 2, 3])
@pytest.mark.parametrize("shape, tolerance", [(BOX, 0.005), (CYLINDER, 0.45 * CYLINDER.radius)])
def test_completed_points_lie_on_the_true_surface(shape, tolerance, num_cameras):
    points, valid, _ = _targets([shape], num_cameras)
    assert valid.sum() == 5 and valid[:5].all()
    assert shape.surface_distance(points[valid].astype(np.float64)).max() < tolerance


@pytest.mark.parametrize("num_cameras", [1, 2])
@pytest.mark.parametrize("shape", [BOX, CYLINDER])
def test_completed_points_lie_on_the_unobserved_side(shape, num_cameras):
    points, valid, (depth, K, T) = _targets([shape], num_cameras)
    hidden = occluded_from_all(points[valid].astype(np.float64), depth, K, T)
    assert hidden.mean() >= 0.8


def test_box_seen_from_one_side_is_completed_on_its_back():
    # One camera straight down the -x axis sees the top and the x = +3 cm face; completed points
    # stay away from that face (the y faces are edge-on to the camera, hence also unobserved).
    box = Box((0.0, 0.0), (0.03, 0.03, 0.03))
    points, valid, _ = _targets([box], 1)
    assert EYES[0][1] == 0.0
    assert np.all(points[valid, 0] < 0.01) and points[valid, 0].mean() < -0.01
    assert np.all(points[valid, 2] < 0.059)          # nothing on the (observed) top face


def test_budget_padding_and_instance_rows():
    objects = [Box((0.08, -0.08), (0.02, 0.02, 0.02)), CYLINDER, Box((-0.1, -0.1), (0.02, 0.03, 0.03))]
    points, valid, _ = _targets(objects, 2, max_instances=2, points_per_instance=4)
    assert points.shape == (8, 3) and points.dtype == np.float32 and valid.all()
    # Rows 0..3 belong to instance 0 (the first box), rows 4..7 to the cylinder.
    assert objects[0].surface_distance(points[:4].astype(float)).max() < 0.005
    assert CYLINDER.surface_distance(points[4:].astype(float)).max() < 0.45 * CYLINDER.radius
    points, valid, _ = _targets(objects[:1], 2)
    assert points.shape == (30, 3) and valid.sum() == 5 and not points[~valid].any()


def test_denoising_drops_stray_mask_pixels():
    # Labels from the label-free depth labeller: the pipeline works end to end, and mask pixels
    # that landed on the table far from the object are removed by DBSCAN.
    depth, seg, K, T = render([BOX], EYES[:2])
    obs = make_observation(depth, K, T)
    labels = DepthClusterLabeler().label(obs)
    labels.masks[0, 0, :3, :3] = True            # far-away table pixels in the mask
    points, valid = completion_targets(obs, labels)
    assert valid.sum() == 5
    assert BOX.surface_distance(points[valid].astype(float)).max() < 0.006


def test_a_learned_completer_plugs_in():
    class AnalyticCylinder:
        """Stands in for a learned network: returns the true cylinder surface."""

        def complete(self, observed, viewpoints):
            angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
            z = np.linspace(0.0, CYLINDER.height, 9)
            a, zz = np.meshgrid(angles, z)
            return np.stack([CYLINDER.centre[0] + CYLINDER.radius * np.cos(a.ravel()),
                             CYLINDER.centre[1] + CYLINDER.radius * np.sin(a.ravel()), zz.ravel()], 1)

    points, valid, _ = _targets([CYLINDER], 1, completer=AnalyticCylinder())
    candidates = AnalyticCylinder().complete(None, None)
    distance_to_candidates = np.abs(points[valid, None] - candidates[None]).max(-1).min(-1)
    assert valid.sum() == 5 and distance_to_candidates.max() < 1e-7      # chosen among its output
    # ... and on the far side from the camera at +x (its points farthest from the observed ones).
    assert np.all(points[valid, 0] < CYLINDER.centre[0] + 0.5 * CYLINDER.radius)

    class Broken:
        def complete(self, observed, viewpoints):
            return np.zeros((4, 2))

    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        _targets([CYLINDER], 1, completer=Broken())


def test_footprint_rectangle_and_fps_known_answers():
    rng = np.random.default_rng(0)
    angle = 0.3
    axes = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    local = rng.uniform([-0.05, -0.02], [0.05, 0.02], size=(400, 2))
    local[:4] = [[-0.05, -0.02], [0.05, -0.02], [0.05, 0.02], [-0.05, 0.02]]
    centre, found_axes, half = footprint_rectangle(local @ axes + [0.1, -0.2])
    np.testing.assert_allclose(centre, [0.1, -0.2], atol=1e-9)
    np.testing.assert_allclose(np.sort(half), [0.02, 0.05], atol=1e-9)
    line = np.array([[0.0, 0, 0], [1, 0, 0], [0.5, 0, 0], [0.9, 0, 0], [0.25, 0, 0]])
    assert farthest_point_sample(line, 3).tolist() == [0, 1, 2]


def test_configs_quote_bad_values():
    with pytest.raises(ValueError, match="1.5"):
        CompletionTargetConfig(keep_fraction=1.5)
    with pytest.raises(ValueError, match="-1"):
        GeometricCompleter(face_spacing=-1)
    with pytest.raises(ValueError, match="0, 5"):
        _targets([BOX], 1, max_instances=0)
