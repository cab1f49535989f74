"""The wire format of `vla3d_ros.remote.protocol`: openpi's msgpack-numpy layout byte for byte, no
pickle, every malformed field refused with a message naming it, and lossless round trips."""
from __future__ import annotations

import pickle

import msgpack
import numpy as np
import pytest

from ros_graph_fixtures import observation
from vla3d_ros.remote.protocol import (WireError, observation_from_wire, observation_to_wire, packb,
                                       reply_from_wire, reply_to_wire, server_metadata, unpackb)
from vla3d_ros.types import EE_DELTA_ACTION_NAMES, Instances


def openpi_packb(obj) -> bytes:
    """openpi_client.msgpack_numpy.packb, restated (that package pins numpy<2, so it cannot be
    imported here; test_remote_openpi_client.py runs the real one in its own venv)."""
    def pack_array(value):
        if isinstance(value, np.ndarray):
            return {b"__ndarray__": True, b"data": value.tobytes(), b"dtype": value.dtype.str, b"shape": value.shape}
        if isinstance(value, np.generic):
            return {b"__npgeneric__": True, b"data": value.item(), b"dtype": value.dtype.str}
        return value
    return msgpack.packb(obj, default=pack_array)


@pytest.mark.parametrize("array", [np.arange(12, dtype=np.float32).reshape(3, 4), np.zeros((2, 0, 3), np.uint8),
                                   np.array([True, False]), np.arange(6, dtype=">i8").reshape(2, 3)])
def test_arrays_are_packed_exactly_as_openpi_packs_them(array):
    message = {"x": array, "scalar": np.float32(2.5), "prompt": "hi"}   # (np.float64 is a float: packed natively)
    assert packb(message) == openpi_packb(message)
    back = unpackb(openpi_packb(message))
    assert back["x"].dtype == array.dtype and back["x"].shape == array.shape and np.array_equal(back["x"], array)
    assert back["scalar"] == 2.5 and back["scalar"].dtype == np.float32 and back["prompt"] == "hi"


def test_str_keyed_arrays_decode_too():
    array = np.arange(4, dtype=np.int16)
    raw = msgpack.packb({"a": {"__ndarray__": True, "data": array.tobytes(), "dtype": "<i2", "shape": [4]}})
    assert np.array_equal(unpackb(raw)["a"], array)


def _array_message(**fields) -> bytes:
    entry = {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "<f4", b"shape": [2]}
    entry.update({k.encode(): v for k, v in fields.items()})
    return msgpack.packb({"a": entry})


@pytest.mark.parametrize("fields, text", [
    ({"dtype": "|O"}, "dtype object is not allowed"),
    ({"dtype": "<U4"}, "is not allowed"),
    ({"dtype": "not-a-dtype"}, "unknown dtype"),
    ({"shape": [3]}, "needs 12 bytes, got 8"),
    ({"shape": [-1, 2]}, "list of integers >= 0"),
    ({"data": "text"}, "data must be bytes"),
])
def test_bad_arrays_are_refused_naming_the_problem(fields, text):
    with pytest.raises(WireError, match=text):
        unpackb(_array_message(**fields))


def test_pickle_and_garbage_are_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (marker.touch, ())

    for data in (pickle.dumps(Exploit()), b"\xc1\xc1\xc1", b"\x92\x01"):
        with pytest.raises(WireError):
            unpackb(data)
    assert not marker.exists()
    with pytest.raises(WireError, match="binary frame"):
        unpackb("a text frame")
    with pytest.raises(TypeError, match="cannot send dtype object"):
        packb({"a": np.array([object()])})


def test_observation_round_trip_is_lossless():
    obs = observation(3, np.random.default_rng(0))
    back = observation_from_wire(unpackb(packb(observation_to_wire(obs))))
    for field in ("rgb", "depth", "intrinsics", "T_base_cam", "joint_positions", "ee_pose"):
        assert np.array_equal(getattr(back, field), getattr(obs, field)), field
    assert (back.camera_names, back.joint_names, back.instruction, back.gripper, back.stamp) == \
           (obs.camera_names, obs.joint_names, obs.instruction, obs.gripper, obs.stamp)
    assert np.array_equal(back.state, obs.state)


def test_rgb_only_observation_and_default_camera_names():
    message = observation_to_wire(observation(0, np.random.default_rng(1)))
    del message["depth"], message["camera_names"]
    back = observation_from_wire(unpackb(packb(message)))
    assert back.depth is None and back.camera_names == ("camera0", "camera1")


@pytest.mark.parametrize("change, text", [
    (lambda m: m.pop("prompt"), "observation lacks \\['prompt'\\]"),
    (lambda m: m.update(images=m["images"][..., :2]), "'images' must have shape"),
    (lambda m: m.update(images=m["images"].astype(np.float32)), "'images' must be of kind 'u'"),
    (lambda m: m.update(depth=m["depth"][:1]), "'depth' must have shape \\(2, 16, 16\\)"),
    (lambda m: m.update(intrinsics=np.eye(3)), "'intrinsics' must have shape \\(2, 3, 3\\)"),
    (lambda m: m.update(gripper=float("nan")), "'gripper' must be a finite number"),
    (lambda m: m.update(prompt=5), "'prompt' must be a string"),
    (lambda m: m.update(camera_names=["a"]), "'camera_names' must be a list of 2 strings"),
])
def test_bad_observations_are_refused_naming_the_key(change, text):
    message = observation_to_wire(observation(0, np.random.default_rng(2)))
    change(message)
    with pytest.raises(WireError, match=text):
        observation_from_wire(unpackb(packb(message)))


def test_reply_round_trip_keeps_actions_and_instances():
    rng = np.random.default_rng(3)
    instances = Instances(ids=np.array([2, 5]), scores=np.array([0.9, 0.4], np.float32),
                          centroids=rng.normal(size=(2, 3)).astype(np.float32),
                          extents=np.ones((2, 3), np.float32),
                          completed_points=rng.normal(size=(6, 3)).astype(np.float32),
                          completed_instance=np.array([2, 2, 5, 5, 5, -1]))
    output = {"actions": rng.normal(size=(4, 7)).astype(np.float32), "instances": instances,
              "completed_points": instances.completed_points, "timing_ms": {"vision": 1.5, "total": 3.0}}
    back = reply_from_wire(unpackb(packb(reply_to_wire(output, infer_ms=3.2))))
    assert np.array_equal(back["actions"], output["actions"])
    for field in ("ids", "scores", "centroids", "extents", "completed_points", "completed_instance"):
        assert np.array_equal(getattr(back["instances"], field), getattr(instances, field)), field
    assert np.array_equal(back["completed_points"], instances.completed_points)
    assert back["timing_ms"] == {"vision": 1.5, "total": 3.0}


@pytest.mark.parametrize("reply, text", [
    ({}, "lacks 'actions'"),
    ({"actions": [[0.0] * 7]}, "'actions' must be an array"),
    ({"actions": np.zeros(7, np.float32)}, "'actions' must have shape"),
    ({"actions": np.zeros((4, 7), np.float32), "instances": {"ids": np.array([1]), "scores": np.zeros(2, np.float32)}},
     "'scores' must have shape \\(1,\\)"),
    ([1, 2], "a reply must be a map"),
])
def test_malformed_replies_are_refused(reply, text):
    with pytest.raises(WireError, match=text):
        reply_from_wire(unpackb(packb(reply)))


def test_metadata_describes_the_policy():
    metadata = unpackb(packb(server_metadata(num_views=3, image_size=(128, 128), state_dim=15,
                                             action_names=EE_DELTA_ACTION_NAMES, step_period=0.1, horizon=8)))
    assert metadata["num_views"] == 3 and metadata["action_dim"] == 7 and metadata["horizon"] == 8
    assert metadata["action_names"] == list(EE_DELTA_ACTION_NAMES) and metadata["camera_names"] == []
