"""Raw image buffers (sensor_msgs/Image fields, no message types) -> validated numpy arrays.

Color: rgb8 / bgr8 / rgba8 / bgra8 / mono8 -> (H, W, 3) uint8 RGB. Anything else (a depth image
on the color topic, a Bayer or YUV stream) is refused with the encoding quoted, never guessed.

Depth (REP 118): 16UC1 = millimetres, 0 = no return; 32FC1 = metres, NaN = no return.
Both decode to float32 metres with NaN for every invalid pixel (0, NaN, +-inf, negative), so
downstream code has exactly one "invalid" value. 32FC1 is returned as a zero-copy view of the
buffer unless invalid pixels other than NaN must be rewritten. Units are sanity-checked: a median
depth that is only plausible in the other unit (e.g. 32FC1 values in the thousands) is reported
in `DepthImage.unit_warning`, because a mm/m mix-up silently scales the whole point cloud 1000x.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOR_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
DEPTH_ENCODINGS = {"16UC1": np.dtype(np.uint16), "32FC1": np.dtype(np.float32)}

# Plausible depth range of RGB-D cameras; a median outside it in one unit but inside it in the
# other points at a unit mix-up.
PLAUSIBLE_DEPTH_M = (0.05, 20.0)
# Refuse buffers beyond this size before touching them (issue: oversized message).
MAX_IMAGE_BYTES = 64 * 1024 * 1024


def _as_array(data, height: int, width: int, step: int, bytes_per_pixel: int, what: str) -> np.ndarray:
    """(H, step) uint8 view of the buffer after checking every size field against the others."""
    if height <= 0 or width <= 0:
        raise ValueError(f"{what}: image size must be positive, got {width}x{height}")
    if step < width * bytes_per_pixel:
        raise ValueError(
            f"{what}: step {step} is smaller than width {width} x {bytes_per_pixel} bytes per pixel"
        )
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    expected = step * height
    if buffer.size > MAX_IMAGE_BYTES:
        raise ValueError(f"{what}: {buffer.size} bytes exceeds the {MAX_IMAGE_BYTES}-byte cap")
    if buffer.size != expected:
        raise ValueError(f"{what}: data has {buffer.size} bytes, expected step {step} x height {height} = {expected}")
    return buffer.reshape(height, step)


def decode_color_image(data, encoding: str, height: int, width: int, step: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a raw color buffer; ValueError quoting the encoding if unusable."""
    if encoding not in COLOR_ENCODINGS:
        raise ValueError(
            f"color image encoding {encoding!r} is not supported; expected one of {sorted(COLOR_ENCODINGS)}"
        )
    channels = COLOR_ENCODINGS[encoding]
    rows = _as_array(data, height, width, width * channels if step is None else step, channels, "color image")
    pixels = rows[:, : width * channels].reshape(height, width, channels)
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if encoding.startswith("bgr"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


@dataclass
class DepthImage:
    metres: np.ndarray           # (H, W) float32, NaN = invalid
    encoding: str
    valid_fraction: float
    unit_warning: str | None     # set when the values look like the other unit


def _unit_warning(metres: np.ndarray, encoding: str) -> str | None:
    sample = metres[::4, ::4]  # the median of every 16th pixel is as telling and 10x cheaper
    valid = sample[np.isfinite(sample)]
    if valid.size == 0:
        return None
    median = float(np.median(valid))
    low, high = PLAUSIBLE_DEPTH_M
    if low <= median <= high:
        return None
    if encoding == "32FC1" and low <= median / 1000.0 <= high:
        return (f"32FC1 depth has median {median:.1f} m: looks like millimetres "
                f"(16UC1 data published as 32FC1?)")
    if encoding == "16UC1" and low <= median * 1000.0 <= high:
        return (f"16UC1 depth has median {median * 1000:.1f} mm: looks like metres "
                f"(32FC1 data converted to 16UC1 without scaling?)")
    return f"{encoding} depth has implausible median {median:.3f} m (expected {low}..{high} m)"


def decode_depth_image(
    data, encoding: str, height: int, width: int, step: int | None = None, is_bigendian: bool = False,
    expected_encoding: str | None = None,
) -> DepthImage:
    """Depth buffer -> float32 metres (H, W), NaN for 0 / NaN / inf / negative pixels.

    The message's own `encoding` decides the units; a different `expected_encoding` (the
    configured one) is reported in `unit_warning`, as the driver was probably reconfigured.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth encoding {encoding!r} is not supported; expected one of {sorted(DEPTH_ENCODINGS)}")
    dtype = DEPTH_ENCODINGS[encoding].newbyteorder(">" if is_bigendian else "<")
    rows = _as_array(data, height, width, width * dtype.itemsize if step is None else step, dtype.itemsize, "depth image")
    raw = rows[:, : width * dtype.itemsize]
    if not raw.flags.c_contiguous:
        raw = np.ascontiguousarray(raw)  # row padding: one copy to drop it
    values = raw.view(dtype).reshape(height, width)
    if encoding == "16UC1":
        # one float copy, scaled in place, and the zero mask reused for the valid fraction: this
        # runs per camera per set on the node's hot path (3 x 640x480)
        metres = values.astype(np.float32)
        metres *= np.float32(0.001)
        missing = values == 0
        metres[missing] = np.nan
        valid_fraction = 1.0 - np.count_nonzero(missing) / missing.size
    else:
        metres = values if dtype.isnative else values.astype(np.float32)
        bad = ~(metres > 0) & ~np.isnan(metres) | np.isinf(metres)  # NaN is already "invalid"
        if bad.any():
            metres = np.array(metres, dtype=np.float32)
            metres[bad] = np.nan
        valid_fraction = float(np.mean(np.isfinite(metres)))
    warnings = [] if expected_encoding in (None, encoding) else [
        f"depth arrives as {encoding} but the config says {expected_encoding}; decoded as {encoding}"]
    unit = _unit_warning(metres, encoding)
    warnings += [unit] if unit else []
    return DepthImage(metres, encoding, valid_fraction, "; ".join(warnings) or None)
