"""The image overlay draws each 3D belief at the pixel its camera sees it at, and nothing from
behind a camera; tiles are laid out a row per time point, a column per camera."""
from __future__ import annotations

import numpy as np
import pytest

from vla3d_ros.evaluate.overlay import (
    CAPTION_HEIGHT,
    PATH_COLOR,
    OverlayFrame,
    draw_view,
    evenly_spaced,
    instance_rgb,
    project_to_image,
    render_overlay,
)
from vla3d_ros.geometry import euler_xyz_to_matrix
from vla3d_ros.types import EE_DELTA_ACTION_NAMES, ActionChunk, Instances

WIDTH, HEIGHT = 80, 64
K = np.array([[100.0, 0.0, 40.0], [0.0, 120.0, 30.0], [0.0, 0.0, 1.0]])


def camera_pose(seed: int = 0) -> np.ndarray:
    """A generic T_base_cam (rotated and translated), so the test exercises the full transform."""
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = euler_xyz_to_matrix(*rng.uniform(-np.pi, np.pi, 3))
    T[:3, 3] = rng.uniform(-1.0, 1.0, 3)
    return T


def to_base(T_base_cam: np.ndarray, points_cam) -> np.ndarray:
    points_cam = np.asarray(points_cam, np.float64).reshape(-1, 3)
    return points_cam @ T_base_cam[:3, :3].T + T_base_cam[:3, 3]


# camera frame (0.2, -0.1, 2.0) -> u = 100 * 0.1 + 40 = 50, v = 120 * -0.05 + 30 = 24
KNOWN_CAM, KNOWN_UV = (0.2, -0.1, 2.0), (50.0, 24.0)
# the mirror point behind the camera: a naive x/z, y/z projection lands inside the image at (30, 36)
BEHIND_CAM, BEHIND_NAIVE_UV = (0.2, -0.1, -2.0), (30.0, 36.0)


def frame(T: np.ndarray, *, instances=None, points=np.zeros((0, 3)), owners=np.zeros(0, np.int64),
          path=np.zeros((0, 3)), size=(HEIGHT, WIDTH), caption="") -> OverlayFrame:
    return OverlayFrame(("cam",), np.zeros((1, *size, 3), np.uint8), K[None], T[None], instances=instances,
                        completed_points=points, completed_instance=owners, ee_path=path, caption=caption)


def instances_at(T: np.ndarray, ids, points_cam) -> Instances:
    return Instances(ids=np.asarray(ids, np.int64), scores=np.full(len(ids), 0.9, np.float32),
                     centroids=to_base(T, points_cam).astype(np.float32))


def view(f: OverlayFrame, scale: int = 1) -> np.ndarray:
    return np.asarray(draw_view(f.rgb[0], f.intrinsics[0], f.T_base_cam[0], f, scale=scale))


@pytest.mark.parametrize("seed", range(4))
def test_a_known_point_projects_to_its_known_pixel(seed):
    T = camera_pose(seed)
    uv, drawable = project_to_image(to_base(T, [KNOWN_CAM, BEHIND_CAM]), K, T, WIDTH, HEIGHT)
    np.testing.assert_allclose(uv[0], KNOWN_UV, atol=1e-9)
    assert drawable.tolist() == [True, False]


def test_outside_the_image_and_non_finite_points_are_not_drawable():
    T = camera_pose(1)
    # u = 100 * x / z + 40: x/z = 0.4 -> u = 80 (just past the last pixel centre 79 + 0.5)
    points = to_base(T, [(0.8, 0.0, 2.0), (0.789, 0.0, 2.0)])
    points = np.vstack([points, [[np.nan, 0.0, 1.0]]])
    _, drawable = project_to_image(points, K, T, WIDTH, HEIGHT)
    assert drawable.tolist() == [False, True, False]


@pytest.mark.parametrize("scale", [1, 4])
def test_instance_centroid_is_drawn_at_its_pixel_in_its_colour(scale):
    T = camera_pose(2)
    image = view(frame(T, instances=instances_at(T, [3], [KNOWN_CAM])), scale)
    u, v = ((np.array(KNOWN_UV) + 0.5) * scale - 0.5).round().astype(int)
    assert tuple(image[v, u]) == instance_rgb(3)
    assert image.shape == (HEIGHT * scale, WIDTH * scale, 3)


def test_nothing_behind_the_camera_is_drawn():
    T = camera_pose(3)
    ahead_only = frame(T, instances=instances_at(T, [3], [KNOWN_CAM]))
    with_behind = frame(T, instances=instances_at(T, [3, 5], [KNOWN_CAM, BEHIND_CAM]),
                        points=to_base(T, [BEHIND_CAM]), owners=np.array([5]))
    np.testing.assert_array_equal(view(with_behind), view(ahead_only))
    u, v = np.array(BEHIND_NAIVE_UV).astype(int)
    assert tuple(view(with_behind)[v, u]) == (0, 0, 0)


def test_completed_points_are_drawn_in_their_instance_colour():
    T = camera_pose(4)
    image = view(frame(T, points=to_base(T, [KNOWN_CAM]), owners=np.array([7])))
    u, v = np.array(KNOWN_UV).astype(int)
    assert tuple(image[v, u]) == instance_rgb(7)
    assert instance_rgb(-1) != instance_rgb(7) and instance_rgb(17) == instance_rgb(7)   # palette wraps


def test_path_segments_with_an_end_behind_the_camera_are_not_drawn():
    T = camera_pose(5)
    start = to_base(T, [KNOWN_CAM])
    np.testing.assert_array_equal(view(frame(T, path=np.vstack([start, to_base(T, [BEHIND_CAM])]))),
                                  view(frame(T, path=start)))
    # a visible segment is drawn in the path colour between its projected ends
    end_cam = (-0.2, -0.1, 2.0)                    # u = 30, v = 24
    image = view(frame(T, path=np.vstack([start, to_base(T, [end_cam])])))
    assert tuple(image[24, 40]) == PATH_COLOR


def test_planned_path_is_the_cumulative_sum_of_the_position_deltas():
    rng = np.random.default_rng(0)
    actions = rng.normal(scale=0.01, size=(5, 7)).astype(np.float32)
    chunk = ActionChunk(actions, EE_DELTA_ACTION_NAMES, step_period=0.1)
    ee = np.array([0.5, -0.1, 0.3])
    path = chunk.planned_ee_positions(ee)
    assert path.shape == (6, 3)
    np.testing.assert_array_equal(path[0], ee)
    np.testing.assert_allclose(np.diff(path, axis=0), actions[:, :3].astype(np.float64), atol=1e-12)
    with pytest.raises(ValueError, match="dx, dy, dz"):
        ActionChunk(actions[:, :2], ("j1", "j2"), step_period=0.1).planned_ee_positions(ee)


def test_tiles_are_a_row_per_frame_and_a_column_per_camera():
    rng = np.random.default_rng(1)
    T = np.stack([camera_pose(s) for s in range(3)])
    frames = [OverlayFrame(("a", "b", "c"), rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8),
                           np.stack([K] * 3), T, caption=f"t{i}") for i in range(2)]
    image = render_overlay(frames, min_view_size=64)          # 32 px views upscaled x2
    assert image.shape == (2 * (64 + 2 * CAPTION_HEIGHT), 3 * 64, 3)
    # row 1, column 2 holds frame 1's camera "c", nearest-neighbour upscaled
    top = (64 + 2 * CAPTION_HEIGHT) + 2 * CAPTION_HEIGHT
    np.testing.assert_array_equal(image[top:top + 64:2, 128:192:2], frames[1].rgb[2])


def test_frames_that_disagree_and_bad_shapes_are_refused():
    T = camera_pose(0)
    with pytest.raises(ValueError, match="differ"):
        render_overlay([frame(T), frame(T, size=(32, 32))])
    with pytest.raises(ValueError, match="no frames"):
        render_overlay([])
    with pytest.raises(ValueError, match=r"\(1, H, W, 3\) uint8"):
        OverlayFrame(("cam",), np.zeros((2, 8, 8, 3), np.uint8), K[None], T[None])
    with pytest.raises(ValueError, match="ee_path must be"):
        frame(T, path=np.zeros((3, 2)))


def test_evenly_spaced_keeps_first_and_last():
    assert evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]
    assert evenly_spaced([1, 2], 3) == [1, 2]
    with pytest.raises(ValueError):
        evenly_spaced([1], 0)
