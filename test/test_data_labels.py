"""Pseudo-labels (METHOD §2.8) on ray-cast scenes with known geometry."""
from __future__ import annotations

import numpy as np
import pytest

from data_synthetic_scenes import CAMERA_EYES, Box, Cylinder, make_observation, render
from vla3d_ros.data.labels import (
    DepthClusterConfig,
    DepthClusterLabeler,
    DetectorLabeler,
    InstanceLabels,
    LabelMetrics,
    SegmentationLabeler,
    evaluate_labeler,
    masks_to_boxes,
    match_labels,
)

EYES = list(CAMERA_EYES.values())
SCENE = [
    Box((0.06, -0.08), (0.025, 0.025, 0.025), 0.3),
    Cylinder((-0.06, 0.07), 0.03, 0.08),
    Box((0.1, 0.12), (0.03, 0.02, 0.04), -0.5),
]


@pytest.fixture(scope="module")
def scene():
    depth, seg, K, T = render(SCENE, EYES)
    return make_observation(depth, K, T), seg


def test_masks_to_boxes_known_answer():
    masks = np.zeros((2, 10, 20), bool)
    masks[0, 2:5, 3:8] = True            # rows 2..4, cols 3..7
    boxes, nonempty = masks_to_boxes(masks)
    np.testing.assert_allclose(boxes[0], [(3 + 8) / 40, (2 + 5) / 20, 5 / 20, 3 / 10], rtol=1e-6)
    assert nonempty.tolist() == [True, False]
    assert boxes[1].tolist() == [0, 0, 0, 0]


def test_segmentation_labels_follow_the_segmentation(scene):
    obs, seg = scene
    labels = SegmentationLabeler().label(obs, seg)
    assert labels.instance_ids.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(labels.masks, seg[None] == np.array([1, 2, 3])[:, None, None, None])
    boxes, nonempty = masks_to_boxes(labels.masks)
    np.testing.assert_array_equal(labels.boxes, boxes)
    assert labels.box_valid.all() and nonempty.all()
    # The median of visible surface points lies within the object's footprint and height.
    for obj, centroid in zip(SCENE, labels.centroids):
        assert obj.surface_distance(centroid[None])[0] < 0.03
        if isinstance(obj, Box):
            local = obj.to_local(centroid[None].astype(float))[0]
            assert np.all(np.abs(local) <= np.asarray(obj.half) + 1e-3)


def test_segmentation_labeler_order_and_invisible_objects(scene):
    obs, seg = scene
    labels = SegmentationLabeler(object_ids=[3, 9, 1]).label(obs, seg)
    assert labels.instance_ids.tolist() == [3, 1]          # 9 is nowhere in view: dropped
    with pytest.raises(ValueError, match="got \\[0"):
        SegmentationLabeler(object_ids=[0, 1])
    with pytest.raises(ValueError, match="segmentation"):
        SegmentationLabeler().label(obs, None)
    with pytest.raises(ValueError, match=r"\(3, 96, 96\), got \(96, 96\)"):
        SegmentationLabeler().label(obs, seg[0])


def test_occluded_view_is_not_visible():
    # A tall wall between the front camera and a small cube hides it there, not from the side.
    small = Box((-0.05, 0.0), (0.015, 0.015, 0.015))
    wall = Box((0.12, 0.0), (0.01, 0.12, 0.12))
    depth, seg, K, T = render([small, wall], EYES[:2])
    labels = SegmentationLabeler().label(make_observation(depth, K, T), seg)
    assert labels.box_valid[0].tolist() == [False, True]
    assert not labels.masks[0, 0].any() and labels.boxes[0, 0].tolist() == [0, 0, 0, 0]


def test_depth_cluster_labels_match_simulator_labels(scene):
    obs, seg = scene
    reference = SegmentationLabeler().label(obs, seg)
    predicted = DepthClusterLabeler().label(obs)
    metrics = LabelMetrics.from_matches([match_labels(predicted, reference)])
    assert metrics.recall == 1.0 and metrics.precision == 1.0
    assert metrics.centroid_error_mean_cm < 1.0
    assert metrics.mask_iou_mean > 0.85
    # Z-buffer test: a cluster's mask never covers pixels where another object is in front.
    for mask, centroid in zip(predicted.masks, predicted.centroids):
        own = reference.instance_ids[np.argmin(np.linalg.norm(reference.centroids - centroid, axis=1))]
        others = (seg > 0) & (seg != own)
        assert (mask & others).sum() <= 0.02 * mask.sum()


def test_depth_cluster_labels_fill_depth_holes(scene):
    obs, seg = scene
    rng = np.random.default_rng(0)
    holes = rng.random(obs.depth.shape) < 0.1
    holed = make_observation(np.where(holes, np.nan, obs.depth).astype(np.float32),
                             obs.intrinsics, obs.T_base_cam)
    predicted = DepthClusterLabeler().label(holed)
    reference = SegmentationLabeler().label(obs, seg)
    metrics = LabelMetrics.from_matches([match_labels(predicted, reference)])
    assert metrics.recall == 1.0 and metrics.mask_iou_mean > 0.75
    labelled_holes = predicted.masks.any(axis=0) & holes & (seg > 0)
    assert labelled_holes.sum() > 0.5 * (holes & (seg > 0)).sum()


def test_hovering_clusters_are_not_objects():
    # A block floating 8 cm above the table (like an arm) is excluded unless the support test is off.
    floating = Box((0.0, -0.1), (0.03, 0.03, 0.02), base=0.08)
    cube = Box((0.0, 0.08), (0.025, 0.025, 0.025))
    depth, _, K, T = render([floating, cube], EYES)
    obs = make_observation(depth, K, T)
    default = DepthClusterLabeler().label(obs)
    assert default.num_instances == 1
    assert np.linalg.norm(default.centroids[0, :2] - [0.0, 0.08]) < 0.02
    permissive = DepthClusterLabeler(DepthClusterConfig(max_support_gap=None)).label(obs)
    assert permissive.num_instances == 2


def test_depth_cluster_config_quotes_bad_values():
    with pytest.raises(ValueError, match="-0.1"):
        DepthClusterConfig(voxel_size=-0.1)
    with pytest.raises(ValueError, match="0.5, 0.2"):
        DepthClusterConfig(min_height=0.5, max_height=0.2)
    with pytest.raises(ValueError, match="both workspace bounds"):
        DepthClusterConfig(workspace_low=(0, 0, 0))
    rgb_only = make_observation(np.ones((1, 8, 8), np.float32), np.eye(3)[None], np.eye(4)[None])
    rgb_only.depth = None
    with pytest.raises(ValueError, match="RGB-only"):
        DepthClusterLabeler().label(rgb_only)


def test_detector_adapter_associates_unordered_per_view_masks(scene):
    obs, seg = scene
    rng = np.random.default_rng(1)

    def detector(observation):
        # Per view: the objects' masks in a random order, one object missed in view 2.
        out = []
        for v in range(observation.num_views):
            ids = [i for i in (1, 2, 3) if not (v == 2 and i == 2)]
            out.append(np.stack([seg[v] == i for i in rng.permutation(ids)]))
        return out

    predicted = DetectorLabeler(detector).label(obs)
    reference = SegmentationLabeler().label(obs, seg)
    match = match_labels(predicted, reference)
    assert match.num_matched == 3 == predicted.num_instances
    # Objects seen in every view get exactly the reference centroid; the one missed in view 2
    # gets the median of the other two views' points.
    assert np.sort(match.centroid_errors)[:2].tolist() == [0.0, 0.0]
    order = [int(np.argmin(np.linalg.norm(predicted.centroids - c, axis=1))) for c in reference.centroids]
    expected_masks = reference.masks.copy()
    expected_masks[1, 2] = False
    np.testing.assert_array_equal(predicted.masks[order], expected_masks)
    assert predicted.box_valid[order[1]].tolist() == [True, True, False]
    with pytest.raises(ValueError, match="2 views, expected 3"):
        DetectorLabeler(lambda o: detector(o)[:2]).label(obs)


def test_match_labels_counts_and_errors(scene):
    obs, seg = scene
    reference = SegmentationLabeler().label(obs, seg)
    identical = LabelMetrics.from_matches([match_labels(reference, reference)])
    assert (identical.recall, identical.precision, identical.mask_iou_mean) == (1.0, 1.0, 1.0)
    assert identical.centroid_error_mean_cm == 0.0
    shifted = InstanceLabels(
        boxes=reference.boxes[:2], box_valid=reference.box_valid[:2], masks=reference.masks[:2],
        centroids=reference.centroids[:2] + np.array([[0.03, 0, 0], [0.0, 0.2, 0]], np.float32),
    )
    metrics = LabelMetrics.from_matches([match_labels(shifted, reference)])
    assert metrics.recall == pytest.approx(1 / 3) and metrics.precision == pytest.approx(1 / 2)
    assert metrics.centroid_error_mean_cm == pytest.approx(3.0, abs=1e-4)


def test_evaluate_labeler_aggregates_over_samples(scene):
    obs, seg = scene
    metrics = evaluate_labeler(DepthClusterLabeler(), [(obs, seg), (obs, seg)])
    single = LabelMetrics.from_matches(
        [match_labels(DepthClusterLabeler().label(obs), SegmentationLabeler().label(obs, seg))])
    assert metrics.observations == 2
    assert metrics.centroid_error_mean_cm == pytest.approx(single.centroid_error_mean_cm)
    assert metrics.recall == single.recall == 1.0


def test_empty_table_and_no_depth_give_no_instances():
    depth, seg, K, T = render([], EYES)
    for d in (depth, np.full_like(depth, np.nan)):
        obs = make_observation(d, K, T)
        for labels in (DepthClusterLabeler().label(obs), SegmentationLabeler().label(obs, seg)):
            assert labels.num_instances == 0 and labels.masks.shape == (0, 3, 96, 96)
