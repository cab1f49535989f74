"""Camera geometry conventions of the simulator: K, T_base_cam, depth and segmentation agree.

Known answers: every depth pixel of a cube, unprojected with the reported K and T_base_cam, lies on
the cube's surface (max-norm of its cube-frame coordinates = half size) within 2 mm; the projection
of a known point of an object lands on that object's segmentation mask. The same holds after a
camera perturbation, so the reported calibration is the true one.
"""
from __future__ import annotations

import numpy as np
import pytest

import vla3d_ros.sim  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)
from vla3d_ros.geometry import project_points, transform_points, unproject_depth
from vla3d_ros.sim.env import TabletopEnv
from vla3d_ros.sim.perturbations import parse_perturbations

HALF = 0.02   # stack_cubes cube half size


@pytest.fixture(scope="module")
def env():
    environment = TabletopEnv("stack_cubes", image_size=(40, 56))
    yield environment
    environment.close()


def _cube_rotation(env, slot):
    yaw = env.object_yaw(slot)
    return np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])


def _surface_errors(env, obs, K_shift=0.0):
    """|max-norm(cube-frame point) - half| of every cube pixel in every view (metres)."""
    segmentation = env.segmentation()
    errors = []
    for view in range(obs.num_views):
        K = obs.intrinsics[view].copy()
        K[:2, 2] += K_shift
        points, valid = unproject_depth(obs.depth[view], K, obs.T_base_cam[view])
        for index, slot in enumerate(env.object_slots):
            mask = (segmentation[view] == index + 1) & valid
            local = (points[mask] - env.object_position(slot)) @ _cube_rotation(env, slot)
            errors.append(np.abs(np.max(np.abs(local), axis=1) - HALF))
    return np.concatenate(errors)


def test_unprojected_depth_lies_on_the_cube_surfaces(env):
    obs = env.reset(seed=3)
    errors = _surface_errors(env, obs)
    assert errors.size > 40                        # the cubes are seen, in several views
    assert errors.max() < 0.002
    # the test is sensitive to the principal point convention: W/2 instead of (W-1)/2 fails it
    assert _surface_errors(env, obs, K_shift=0.5).max() > 0.002


def test_object_points_project_onto_their_masks(env):
    obs = env.reset(seed=4)
    segmentation = env.segmentation()
    hits = 0
    for view, name in enumerate(env.camera_names):
        if name == "wrist":
            continue    # looks along the fingers; the cubes may be out of its view
        for index, slot in enumerate(env.object_slots):
            top_centre = env.object_position(slot) + [0.0, 0.0, HALF]
            uv, depth, in_front = project_points(top_centre[None], obs.intrinsics[view], obs.T_base_cam[view])
            assert in_front[0]
            u, v = np.rint(uv[0]).astype(int)
            assert segmentation[view, v, u] == index + 1, (name, slot)
            # and the depth image agrees with the projected depth of that surface point
            assert obs.depth[view, v, u] == pytest.approx(depth[0], abs=0.01)
            hits += 1
    assert hits == 6


def test_static_cameras_look_at_their_targets_and_the_wrist_camera_rides_the_hand(env):
    obs = env.reset(seed=0)
    front = obs.T_base_cam[env.camera_names.index("front")]
    to_target = np.array([0.5, 0.0, 0.1]) - front[:3, 3]
    np.testing.assert_allclose(front[:3, 2], to_target / np.linalg.norm(to_target), atol=1e-6)  # z forward
    assert front[2, 1] < 0                        # image y (down) points down in the world
    wrist = env.camera_names.index("wrist")
    camera_in_tcp = transform_points(np.linalg.inv(_tcp_transform(obs)), obs.T_base_cam[wrist][:3, 3])
    for _ in range(3):
        obs = env.step(np.array([0.02, 0.02, -0.02, 0.0, 0.0, 0.1, 1.0]))
    moved = transform_points(np.linalg.inv(_tcp_transform(obs)), obs.T_base_cam[wrist][:3, 3])
    np.testing.assert_allclose(moved, camera_in_tcp, atol=1e-5)


def _tcp_transform(obs):
    from vla3d_ros.geometry import quaternion_xyzw_to_matrix

    T = np.eye(4)
    T[:3, :3] = quaternion_xyzw_to_matrix(obs.ee_pose[3:])
    T[:3, 3] = obs.ee_pose[:3]
    return T


@pytest.mark.parametrize("perturbation", ["camera_pose:3", "camera_rotation:3", "camera_fov:3"])
def test_calibration_stays_true_under_camera_perturbations(env, perturbation):
    env.set_perturbations(parse_perturbations([perturbation]))
    try:
        obs = env.reset(seed=3)
        errors = _surface_errors(env, obs)
        assert errors.size > 30 and errors.max() < 0.002
    finally:
        env.set_perturbations(())
