"""openpi's websocket policy protocol, and the vla3d dicts carried over it.

The protocol (`openpi_client.websocket_client_policy` / `msgpack_numpy`, matched byte for byte):
1. the client opens a websocket (openpi's client sends `Authorization: Api-Key <key>` when it has one);
2. the server sends one binary msgpack frame: the metadata dict;
3. then, per request, the client sends one binary msgpack dict (the observation) and the server
   answers with one binary msgpack dict (the action chunk), or with a *text* frame holding the error.

numpy arrays travel as `{b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str,
b"shape": [...]}` and numpy scalars as `{b"__npgeneric__": True, b"data": value, b"dtype": str}`:
openpi packs those keys as bytes and its decoder looks for bytes keys, so we pack them as bytes too
(and accept str keys). Only numeric and bool dtypes decode: object / void / string dtypes would need
pickle or carry nothing a policy reads. Nothing here ever unpickles.

The vla3d observation dict (V cameras, J joints; per camera what the 3D policy needs):
    "images"          (V, H, W, 3) uint8        "camera_names"   [V str]   (optional)
    "depth"           (V, H, W) float32 metres, NaN = invalid  (optional: RGB only)
    "intrinsics"      (V, 3, 3) K, OpenCV       "T_base_cam"     (V, 4, 4) camera -> base
    "joint_positions" (J,)                      "joint_names"    [J str]   (optional)
    "ee_pose"         (7,) xyz + quaternion xyzw, base frame
    "gripper"         opening in [0, 1]         "prompt"         the instruction (openpi's key)
    "stamp"           seconds (optional)
The reply: "actions" (H, A) float32, "instances" {ids, scores, centroids, extents, completed_points,
completed_instance}, "completed_points" (P, 3), "timing_ms" {module: ms}, "server_timing" {"infer_ms"}.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from vla3d_ros.types import Instances, Observation

PROTOCOL_VERSION = 1
# What the server accepts per request: 3 cameras at 1280x720 RGB + float32 depth are ~19 MiB.
MAX_REQUEST_BYTES = 64 * 2**20
# What the client accepts per reply: a chunk, instances and completed points are a few KiB to
# ~1 MiB (tens of thousands of points); anything far larger is not a policy answer.
MAX_REPLY_BYTES = 8 * 2**20
# Bool and numeric dtypes only (numpy kind codes).
_ARRAY_KINDS = "biuf"
_NDARRAY, _NPGENERIC = "__ndarray__", "__npgeneric__"
_OBSERVATION_KEYS = ("images", "intrinsics", "T_base_cam", "joint_positions", "ee_pose", "gripper", "prompt")
_INSTANCE_KEYS = ("ids", "scores", "centroids", "extents", "completed_points", "completed_instance")


class WireError(ValueError):
    """A message that does not decode to what the protocol says (the text names what is wrong)."""


# ---- msgpack with numpy ---------------------------------------------------------------------------

def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in _ARRAY_KINDS:
        raise TypeError(f"cannot send dtype {obj.dtype} (bool and numeric arrays only)")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send a {type(obj).__name__}")


def _field(obj: Mapping, name: str) -> Any:
    return obj[name.encode()] if name.encode() in obj else obj.get(name)


def _dtype(text: Any) -> np.dtype:
    try:
        dtype = np.dtype(text if isinstance(text, str) else bytes(text).decode())
    except (TypeError, ValueError, UnicodeDecodeError) as error:
        raise WireError(f"unknown dtype {text!r}: {error}") from None
    if dtype.kind not in _ARRAY_KINDS:
        raise WireError(f"dtype {dtype} is not allowed (bool and numeric arrays only)")
    return dtype


def _decode(obj: dict) -> Any:
    if _field(obj, _NDARRAY) is True:
        dtype, shape, data = _dtype(_field(obj, "dtype")), _field(obj, "shape"), _field(obj, "data")
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise WireError(f"array shape must be a list of integers >= 0, got {shape!r}")
        if not isinstance(data, bytes):
            raise WireError(f"array data must be bytes, got {type(data).__name__}")
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise WireError(f"array of shape {shape} {dtype} needs {expected} bytes, got {len(data)}")
        return np.frombuffer(data, dtype).reshape(shape)
    if _field(obj, _NPGENERIC) is True:
        try:
            return _dtype(_field(obj, "dtype")).type(_field(obj, "data"))
        except (TypeError, ValueError, OverflowError) as error:
            raise WireError(f"bad numpy scalar {obj!r}: {error}") from None
    return obj


def packb(obj: Any) -> bytes:
    """msgpack bytes of `obj` (dicts, lists, str, numbers, numpy arrays and scalars)."""
    return msgpack.packb(obj, default=_encode)


def unpackb(data: bytes) -> Any:
    """The object in msgpack `data`; WireError for anything that is not valid msgpack-numpy."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"expected a binary frame, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except WireError:
        raise
    except Exception as error:  # noqa: BLE001 - msgpack raises several types for corrupt input
        raise WireError(f"not a msgpack message ({type(error).__name__}{': ' if str(error) else ''}{error})") from None


# ---- typed fields ---------------------------------------------------------------------------------

def _array(message: Mapping, key: str, shape: tuple, kinds: str = "biuf") -> np.ndarray:
    """message[key] as an array of `shape` (None = any length), dtype kind in `kinds`."""
    if key not in message:
        raise WireError(f"message lacks {key!r}")
    value = message[key]
    if not isinstance(value, np.ndarray):
        raise WireError(f"{key!r} must be an array, got {type(value).__name__}")
    if value.ndim != len(shape) or any(n is not None and n != m for n, m in zip(shape, value.shape)):
        wanted = tuple("*" if n is None else n for n in shape)
        raise WireError(f"{key!r} must have shape {wanted}, got {value.shape}")
    if value.dtype.kind not in kinds:
        raise WireError(f"{key!r} must be of kind {kinds!r}, got {value.dtype}")
    return value


def _names(message: Mapping, key: str, count: int, default: tuple[str, ...]) -> tuple[str, ...]:
    value = message.get(key)
    if not value:
        return default
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value) or len(value) != count:
        raise WireError(f"{key!r} must be a list of {count} strings, got {value!r}")
    return tuple(value)


def _number(message: Mapping, key: str, default: float | None = None) -> float:
    value = message.get(key, default)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WireError(f"{key!r} must be a finite number, got {value!r}")
    return float(value)


def _mapping(message: Any, what: str) -> Mapping:
    if not isinstance(message, Mapping):
        raise WireError(f"{what} must be a map, got {type(message).__name__}")
    return message


# ---- the vla3d dicts ------------------------------------------------------------------------------

def observation_to_wire(obs: Observation) -> dict:
    """The request dict of `obs` (see the module docstring)."""
    message = {
        "camera_names": list(obs.camera_names),
        "images": np.ascontiguousarray(obs.rgb),
        "intrinsics": np.asarray(obs.intrinsics, np.float64),
        "T_base_cam": np.asarray(obs.T_base_cam, np.float64),
        "joint_positions": np.asarray(obs.joint_positions, np.float32),
        "joint_names": list(obs.joint_names),
        "ee_pose": np.asarray(obs.ee_pose, np.float32),
        "gripper": float(obs.gripper),
        "prompt": obs.instruction,
        "stamp": float(obs.stamp),
    }
    if obs.depth is not None:
        message["depth"] = np.asarray(obs.depth, np.float32)
    return message


def observation_from_wire(message: Any) -> Observation:
    """The `Observation` in a request dict; WireError naming the first bad or missing key."""
    message = _mapping(message, "an observation")
    missing = [key for key in _OBSERVATION_KEYS if key not in message]
    if missing:
        raise WireError(f"observation lacks {missing} (has {sorted(map(str, message))})")
    images = _array(message, "images", (None, None, None, 3), "u")
    if images.dtype != np.uint8:
        raise WireError(f"'images' must be uint8, got {images.dtype}")
    views, height, width = images.shape[:3]
    depth = _array(message, "depth", (views, height, width), "f") if message.get("depth") is not None else None
    joints = _array(message, "joint_positions", (None,), "iuf")
    prompt = message["prompt"]
    if not isinstance(prompt, str):
        raise WireError(f"'prompt' must be a string, got {type(prompt).__name__}")
    try:
        return Observation(
            camera_names=_names(message, "camera_names", views, tuple(f"camera{v}" for v in range(views))),
            rgb=images,
            depth=None if depth is None else depth.astype(np.float32, copy=False),
            intrinsics=_array(message, "intrinsics", (views, 3, 3), "f").astype(np.float64),
            T_base_cam=_array(message, "T_base_cam", (views, 4, 4), "f").astype(np.float64),
            joint_positions=joints.astype(np.float32),
            ee_pose=_array(message, "ee_pose", (7,), "f").astype(np.float32),
            gripper=_number(message, "gripper"),
            instruction=prompt,
            stamp=_number(message, "stamp", 0.0),
            joint_names=_names(message, "joint_names", len(joints), ()),
        )
    except ValueError as error:
        raise WireError(str(error)) from None


def reply_to_wire(output: Mapping, infer_ms: float) -> dict:
    """The reply dict of a policy's `infer` output."""
    reply = {"actions": np.asarray(output["actions"], np.float32),
             "timing_ms": {str(k): float(v) for k, v in dict(output.get("timing_ms") or {}).items()},
             "server_timing": {"infer_ms": float(infer_ms)}}
    instances = output.get("instances")
    if isinstance(instances, Instances):
        reply["instances"] = {key: np.asarray(getattr(instances, key)) for key in _INSTANCE_KEYS}
    if output.get("completed_points") is not None:
        reply["completed_points"] = np.asarray(output["completed_points"], np.float32).reshape(-1, 3)
    return reply


def reply_from_wire(message: Any) -> dict:
    """The `infer` output in a reply dict: {"actions", "instances" (Instances or None),
    "completed_points" (P, 3) or None, "timing_ms"}; WireError if malformed."""
    message = _mapping(message, "a reply")
    actions = _array(message, "actions", (None, None), "iuf")
    output: dict[str, Any] = {"actions": actions.astype(np.float32), "instances": None, "completed_points": None,
                              "timing_ms": {}}
    timing = message.get("timing_ms") or {}
    if isinstance(timing, Mapping):
        output["timing_ms"] = {str(k): _number(timing, k) for k in timing}
    if message.get("instances") is not None:
        fields = _mapping(message["instances"], "'instances'")
        count = len(_array(fields, "ids", (None,), "iu"))
        output["instances"] = Instances(
            ids=fields["ids"].astype(np.int64),
            scores=_array(fields, "scores", (count,), "f").astype(np.float32),
            centroids=_array(fields, "centroids", (count, 3), "f").astype(np.float32),
            extents=_array(fields, "extents", (count, 3), "f").astype(np.float32),
            completed_points=_array(fields, "completed_points", (None, 3), "f").astype(np.float32),
            completed_instance=_array(fields, "completed_instance", (None,), "iu").astype(np.int64))
    if message.get("completed_points") is not None:
        output["completed_points"] = _array(message, "completed_points", (None, 3), "f").astype(np.float32)
    return output


def server_metadata(*, num_views: int, image_size: tuple[int, int], state_dim: int,
                    action_names: tuple[str, ...], step_period: float, horizon: int,
                    camera_names: tuple[str, ...] = ()) -> dict:
    """What the server sends on connect: enough for a client to build observations and check that
    this is the policy it was configured for. `camera_names` empty = views are matched by count."""
    return {
        "server": "vla3d", "protocol_version": PROTOCOL_VERSION,
        "camera_names": list(camera_names), "num_views": int(num_views), "image_size": list(image_size),
        "state_dim": int(state_dim), "action_names": list(action_names), "action_dim": len(action_names),
        "step_period": float(step_period), "horizon": int(horizon),
        "observation_keys": list(_OBSERVATION_KEYS) + ["depth", "camera_names", "joint_names", "stamp"],
        "max_request_bytes": MAX_REQUEST_BYTES,
    }
