"""Each perturbation changes what it claims to change (and only that), at every level, seeded."""
from __future__ import annotations

import numpy as np
import pytest

import vla3d_ros.sim  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)
from vla3d_ros.sim.env import TabletopEnv
from vla3d_ros.sim.perturbations import (
    BACKGROUND_COLOUR_BOXES,
    CAMERA_POSE_LEVELS,
    CAMERA_TRAIN_RANGE,
    PERTURBATIONS,
    TRAINING_BANDS,
    RobotInit,
    _bands_overlap,
    evaluation_bands,
    is_training_camera_offset,
    parse_perturbation,
    parse_perturbations,
)
from vla3d_ros.sim.scene import HOME_ARM_QPOS, TABLE_TEXTURES, TRAINING_TABLE_TEXTURES
from vla3d_ros.sim.tasks import TASKS

SEED = 21
SIZE = (40, 48)


@pytest.fixture(scope="module")
def env():
    """One env whose model holds everything any level needs (3 distractors, the occluder)."""
    environment = TabletopEnv("pick_place_bowl", image_size=SIZE,
                              perturbations=parse_perturbations(["layout:3", "occlusion:1"]))
    yield environment
    environment.close()


def _observe(env, specs, seed=SEED):
    env.set_perturbations(parse_perturbations(specs))
    obs = env.reset(seed=seed)
    return obs, env.segmentation().copy()


@pytest.fixture(scope="module")
def nominal(env):
    return _observe(env, [])


def _views(env, *names):
    return [env.camera_names.index(name) for name in names]


@pytest.mark.parametrize("level", [1, 2, 3])
def test_camera_pose_moves_static_cameras_only_outside_the_training_range(env, nominal, level):
    (obs0, _), (obs, _) = nominal, _observe(env, [f"camera_pose:{level}"])
    static, wrist = _views(env, "front", "side"), _views(env, "wrist")
    moved = np.linalg.norm(obs.T_base_cam[static, :3, 3] - obs0.T_base_cam[static, :3, 3], axis=1)
    assert np.all(moved > 0.05 * level / 2)
    np.testing.assert_allclose(obs.T_base_cam[wrist], obs0.T_base_cam[wrist], atol=1e-9)
    np.testing.assert_array_equal(obs.intrinsics, obs0.intrinsics)
    assert not np.array_equal(obs.rgb[static], obs0.rgb[static])
    for name, offsets in env.perturbation_params[f"camera_pose:{level}"].items():
        low, high = CAMERA_POSE_LEVELS[level].azimuth_deg
        assert low <= abs(offsets["azimuth_deg"]) <= high
        assert not is_training_camera_offset(**offsets)          # the held-out camera split
        front = obs.T_base_cam[env.camera_names.index(name)]
        # the camera still looks at the workspace: its optical axis passes near the look-at point
        target = {"front": [0.5, 0.0, 0.1], "side": [0.5, 0.0, 0.08]}[name] - front[:3, 3]
        assert np.dot(front[:3, 2], target / np.linalg.norm(target)) > 0.999


def test_camera_train_split_is_disjoint_from_every_camera_pose_level(env):
    _observe(env, ["camera_train"])
    for offsets in env.perturbation_params["camera_train:1"].values():
        assert is_training_camera_offset(**offsets)
    for level_range in CAMERA_POSE_LEVELS.values():
        assert level_range.azimuth_deg[0] > CAMERA_TRAIN_RANGE.azimuth_deg[1]


@pytest.mark.parametrize("level", [1, 2, 3])
def test_camera_rotation_keeps_position_and_k(env, nominal, level):
    (obs0, _), (obs, _) = nominal, _observe(env, [f"camera_rotation:{level}"])
    static = _views(env, "front", "side")
    np.testing.assert_allclose(obs.T_base_cam[:, :3, 3], obs0.T_base_cam[:, :3, 3], atol=1e-9)
    np.testing.assert_array_equal(obs.intrinsics, obs0.intrinsics)
    for view in static:
        relative = obs0.T_base_cam[view, :3, :3].T @ obs.T_base_cam[view, :3, :3]
        angle = np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1, 1)))
        low, high = PERTURBATIONS["camera_rotation"].magnitude_deg[level]
        assert low <= angle <= high * np.sqrt(3) + 1e-6


@pytest.mark.parametrize("level", [1, 2, 3])
def test_camera_fov_changes_k_consistently_and_nothing_else(env, nominal, level):
    (obs0, _), (obs, _) = nominal, _observe(env, [f"camera_fov:{level}"])
    np.testing.assert_allclose(obs.T_base_cam, obs0.T_base_cam, atol=1e-9)
    params = env.perturbation_params[f"camera_fov:{level}"]
    for name, values in params.items():
        view = env.camera_names.index(name)
        focal = 0.5 * SIZE[0] / np.tan(np.radians(values["fovy_deg"]) / 2)
        assert obs.intrinsics[view, 1, 1] == pytest.approx(focal)
        assert abs(obs.intrinsics[view, 1, 1] - obs0.intrinsics[view, 1, 1]) > 0.5
    wrist = _views(env, "wrist")
    np.testing.assert_array_equal(obs.intrinsics[wrist], obs0.intrinsics[wrist])


@pytest.mark.parametrize("level", [1, 2, 3])
def test_robot_init_moves_the_arm_within_its_magnitude(env, nominal, level):
    (obs0, seg0), (obs, seg) = nominal, _observe(env, [f"robot_init:{level}"])
    offset = env.perturbation_params[f"robot_init:{level}"]["arm_qpos"] - HOME_ARM_QPOS
    assert 0 < np.abs(offset).max() <= RobotInit.magnitude_rad[level] + 1e-9
    assert np.linalg.norm(obs.ee_pose[:3] - obs0.ee_pose[:3]) > 0.005
    assert obs.ee_pose[2] > 0.2
    # the static cameras' calibration is untouched
    static = _views(env, "front", "side")
    np.testing.assert_array_equal(obs.T_base_cam[static], obs0.T_base_cam[static])


@pytest.mark.parametrize("level", [1, 2, 3])
def test_language_uses_held_out_paraphrases_only(env, nominal, level):
    (obs0, seg0), (obs, seg) = nominal, _observe(env, [f"language:{level}"])
    task = TASKS["pick_place_bowl"]
    fields = env.instance.fields
    training = {template.format(**fields) for template in task.templates}
    assert obs.instruction not in training
    assert obs.instruction in {template.format(**fields) for template in task.paraphrases[level]}
    assert fields["object"] in obs.instruction
    np.testing.assert_array_equal(obs.rgb, obs0.rgb)       # nothing else changes
    np.testing.assert_array_equal(seg, seg0)


@pytest.mark.parametrize("spec", ["light:1", "light:2", "light:3", "background:1", "background:2", "background:3"])
def test_light_and_background_change_appearance_not_geometry(env, nominal, spec):
    (obs0, seg0), (obs, seg) = nominal, _observe(env, [spec])
    assert np.abs(obs.rgb.astype(int) - obs0.rgb.astype(int)).mean() > 1.0
    np.testing.assert_array_equal(seg, seg0)
    np.testing.assert_array_equal(obs.depth, obs0.depth)
    np.testing.assert_array_equal(obs.T_base_cam, obs0.T_base_cam)
    assert obs.instruction == obs0.instruction


def test_sensor_noise_grows_with_level_and_leaves_labels_alone(env, nominal):
    obs0, seg0 = nominal
    rgb_error, hole_fraction, depth_error = [], [], []
    for level in (1, 2, 3):
        obs, seg = _observe(env, [f"sensor_noise:{level}"])
        np.testing.assert_array_equal(seg, seg0)
        np.testing.assert_array_equal(obs.T_base_cam, obs0.T_base_cam)
        holes = np.isnan(obs.depth) & ~np.isnan(obs0.depth)
        both = ~np.isnan(obs.depth) & ~np.isnan(obs0.depth)
        rgb_error.append(np.abs(obs.rgb.astype(float) - obs0.rgb).mean())
        hole_fraction.append(holes.mean())
        depth_error.append(np.abs(obs.depth[both] - obs0.depth[both]).mean())
        again, _ = _observe(env, [f"sensor_noise:{level}"])          # seeded
        np.testing.assert_array_equal(again.depth, obs.depth)
    assert np.all(np.diff(rgb_error) > 0) and np.all(np.diff(hole_fraction) > 0)
    assert np.all(np.diff(depth_error) > 0) and depth_error[0] > 1e-4
    assert 0.005 < hole_fraction[0] and hole_fraction[2] < 0.12


@pytest.mark.parametrize("level", [1, 2, 3])
def test_layout_adds_distractors_that_are_seen_and_labelled(env, level):
    obs, seg = _observe(env, [f"layout:{level}"])
    ids = env.object_ids()
    for slot in env.instance.poses:             # task objects stay where the task put them
        np.testing.assert_allclose(env.object_position(slot)[:2], env.instance.poses[slot][:2], atol=0.003)
    _observe(env, [])
    ids0 = env.object_ids()
    assert len(ids) == len(ids0) + level and set(ids0.items()) <= set(ids.items())
    new_ids = set(ids.values()) - set(ids0.values())
    seen = set(np.unique(seg))
    assert new_ids & seen


def test_occlusion_hides_more_of_the_target_with_level(env, nominal):
    _, seg0 = nominal
    front = env.camera_names.index("front")
    target_id = env.object_ids()[env.instance.display_names[env.instance.roles["target"]]]
    visible = [np.sum(seg0[front] == target_id)]
    for level in (1, 2, 3):
        _, seg = _observe(env, [f"occlusion:{level}"])
        visible.append(np.sum(seg[front] == target_id))
    assert visible[0] > 0
    assert visible[1] < visible[0] and np.all(np.diff(visible) <= 0) and visible[3] <= 0.1 * visible[0]


def test_perturbed_episodes_are_deterministic(env):
    specs = ["camera_pose:2", "light:2", "layout:2", "sensor_noise:1"]
    a, seg_a = _observe(env, specs, seed=5)
    b, seg_b = _observe(env, specs, seed=5)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.T_base_cam, b.T_base_cam)
    np.testing.assert_array_equal(seg_a, seg_b)
    # a perturbation samples the same values whatever it is combined with
    params = dict(env.perturbation_params)
    _observe(env, ["camera_pose:2"], seed=5)
    assert env.perturbation_params["camera_pose:2"] == params["camera_pose:2"]


def test_parsing_and_scene_requirements(env):
    assert parse_perturbation("light:2").spec == "light:2" and parse_perturbation("light").level == 1
    with pytest.raises(ValueError, match="'lightning'"):
        parse_perturbation("lightning:1")
    with pytest.raises(ValueError, match="level must be one of"):
        parse_perturbation("light:4")
    with pytest.raises(ValueError, match="'x'"):
        parse_perturbation("light:x")
    with pytest.raises(ValueError, match="once"):
        env.set_perturbations(parse_perturbations(["light:1", "light:2"]))
    small = TabletopEnv("push_to_zone", image_size=(16, 16))
    try:
        with pytest.raises(ValueError, match="build a new env"):
            small.set_perturbations(parse_perturbations(["layout:1"]))
    finally:
        small.close()
    # LIBERO-Plus's 7 dimensions + sensor noise, layout, occlusion; plus the training distribution's 6;
    # the three camera_knock calibration splits
    assert len(PERTURBATIONS) == 19


# ---- the randomised training distribution ------------------------------------------------------

def test_every_evaluation_level_lies_outside_the_training_bands():
    training, evaluation = TRAINING_BANDS, evaluation_bands()
    assert set(training) == set(evaluation)
    for key, bands in evaluation.items():
        for band in bands:
            assert not _bands_overlap(training[key], (band,)), f"{key}: evaluation band {band} meets training"
    assert not set(TRAINING_TABLE_TEXTURES) & set(TABLE_TEXTURES)


@pytest.fixture(scope="module")
def push_env():
    environment = TabletopEnv("push_to_zone", image_size=SIZE, perturbations=parse_perturbations(
        ["camera_wide_train", "light_train", "background_train", "zones_train", "robot_init_train"]))
    yield environment
    environment.close()


def _in_bands(value, bands):
    return any(low <= value <= high for low, high in bands)


def test_training_distribution_samples_inside_its_bands_and_outside_every_suite(push_env):
    applied = {name: 0 for name in ("camera_wide_train:1", "light_train:1", "background_train:1",
                                    "zones_train:1", "robot_init_train:1")}
    for seed in range(12):
        obs = push_env.reset(seed=seed)
        assert np.all(np.isfinite(obs.T_base_cam)) and obs.rgb.shape[0] == 3
        params = push_env.perturbation_params
        for name in applied:
            applied[name] += params[name]["applied"]
        if params["camera_wide_train:1"]["applied"]:
            for camera in params["camera_wide_train:1"].values():
                if not isinstance(camera, dict):
                    continue
                assert _in_bands(camera["azimuth_deg"], TRAINING_BANDS["camera_azimuth_deg"])
                for axis in ("pan_deg", "tilt_deg", "roll_deg"):
                    assert _in_bands(camera[axis], TRAINING_BANDS["camera_rotation_deg"])
                assert _in_bands(camera["fovy_delta_deg"], TRAINING_BANDS["camera_fovy_deg"])
        if params["light_train:1"]["applied"]:
            light = params["light_train:1"]
            for tilt in light["tilt_deg"]:
                assert tilt == 0.0 or _in_bands(tilt, TRAINING_BANDS["light_tilt_deg"])
            for key, value in (("light_intensity_log", light["intensity"]), ("ambient_log", light["ambient"])):
                assert value == 1.0 or _in_bands(np.log(value), TRAINING_BANDS[key])
        if params["background_train:1"]["applied"]:
            background = params["background_train:1"]
            assert background["table_texture"] in TRAINING_TABLE_TEXTURES
            for key, (low, high) in BACKGROUND_COLOUR_BOXES.items():
                rgb = np.array(background[key])
                assert np.any((rgb < low) | (rgb > high)), f"{key} {rgb} inside the background suite's box"
        if params["robot_init_train:1"]["applied"]:
            offset = params["robot_init_train:1"]["max_joint_offset_rad"]
            assert _in_bands(offset, TRAINING_BANDS["robot_init_max_joint_offset_rad"])
            assert offset > max(RobotInit.magnitude_rad.values())
    # each part is on in some episodes and (but zones) off in others: nominal scenes stay in the mix
    assert all(count > 0 for count in applied.values())
    assert applied["robot_init_train:1"] < 12 and applied["zones_train:1"] == 12


def test_training_distribution_changes_what_the_cameras_see_and_replays_exactly(push_env):
    first = push_env.reset(seed=3)
    params = push_env.perturbation_params
    again = push_env.reset(seed=3)
    np.testing.assert_array_equal(first.rgb, again.rgb)
    np.testing.assert_array_equal(first.T_base_cam, again.T_base_cam)
    assert params == push_env.perturbation_params
    zones = [push_env.model.geom_rgba[push_env.model.geom(zone.name).id, :3] for zone in push_env.scene.zones]
    assert not np.allclose(zones[0], [0.55, 0.8, 0.55])            # not the nominal left-zone green


def test_nominal_scene_does_not_change_when_the_training_scene_gains_a_fill_light():
    plain = TabletopEnv("push_to_zone", image_size=SIZE)
    lit = TabletopEnv("push_to_zone", image_size=SIZE, perturbations=parse_perturbations(["light_train"]))
    try:
        lit.set_perturbations([])
        np.testing.assert_array_equal(plain.reset(seed=5).rgb, lit.reset(seed=5).rgb)
        with pytest.raises(ValueError, match="fill_light=True"):
            plain.set_perturbations(parse_perturbations(["light_train"]))
    finally:
        plain.close()
        lit.close()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_training_wordings_are_disjoint_from_the_held_out_ones_and_parse_back(name):
    task = TASKS[name]
    training = set(task.templates) | set(task.training_paraphrases)
    held_out = {p for level in task.paraphrases.values() for p in level}
    assert len(task.training_paraphrases) >= 6 and not training & held_out
    assert len(training) == len(task.templates) + len(task.training_paraphrases)
    for seed in range(5):
        instance = task.sample(np.random.default_rng(seed))
        instruction = task.instruction(instance, np.random.default_rng(seed))
        assert task.parse_instruction(instruction) == instance.fields
        variants = task.instruction_variants(instance.fields)
        assert instruction in variants
        # the manipulated object is named first in every wording (the reasoning anchor's fact)
        first = instance.display_names[instance.roles["target"]]
        for text in variants:
            mentions = {name: text.find(name) for name in instance.display_names.values() if name in text}
            assert min(mentions, key=lambda n: (mentions[n], -len(n))) == first
    assert task.parse_instruction("do a little dance") is None
