"""Image buffers (sensor_msgs/Image and CompressedImage fields, no message types) -> validated arrays.

The one decode path of the project: the live nodes (through `ros.conversions`) and the bag
readers (`data.bags`, `data.bag_import`, on rosbags' messages) hand the message fields over here.

Color: rgb8 / bgr8 / rgba8 / bgra8 / mono8 -> (H, W, 3) uint8 RGB. Anything else (a depth image
on the color topic, a Bayer or YUV stream) is refused with the encoding quoted, never guessed.
CompressedImage (image_transport's `compressed`: JPEG or PNG, 8 bits per channel) -> the same
(H, W, 3) uint8 RGB; `compressedDepth` and other formats are refused.
Labels: 32SC1 (the instance ids `vla3d convert` writes) -> (H, W) int32.

Depth (REP 118): 16UC1 = millimetres, 0 = no return; 32FC1 = metres, NaN = no return.
Both decode to float32 metres with NaN for every invalid pixel (0, NaN, +-inf, negative), so
downstream code has exactly one "invalid" value. 32FC1 is returned as a zero-copy view of the
buffer unless invalid pixels other than NaN must be rewritten. Units are sanity-checked: a median
depth that is only plausible in the other unit (e.g. 32FC1 values in the thousands) is reported
in `DepthImage.unit_warning`, because a mm/m mix-up silently scales the whole point cloud 1000x.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np

COLOR_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
DEPTH_ENCODINGS = {"16UC1": np.dtype(np.uint16), "32FC1": np.dtype(np.float32)}
LABEL_ENCODINGS = {"32SC1": np.dtype(np.int32)}
COMPRESSED_FORMATS = ("jpeg", "png")
# PIL modes of 8-bit JPEG / PNG files (grey, palette, RGB, alpha, CMYK JPEGs): all map to RGB.
_EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")

# Plausible depth range of RGB-D cameras; a median outside it in one unit but inside it in the
# other points at a unit mix-up.
PLAUSIBLE_DEPTH_M = (0.05, 20.0)
# Pixels whose median decides the depth unit check (`_unit_warning`).
UNIT_CHECK_SAMPLES = 4096
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
    buffer = _bytes_view(data)
    expected = step * height
    if buffer.size > MAX_IMAGE_BYTES:
        raise ValueError(f"{what}: {buffer.size} bytes exceeds the {MAX_IMAGE_BYTES}-byte cap")
    if buffer.size != expected:
        raise ValueError(f"{what}: data has {buffer.size} bytes, expected step {step} x height {height} = {expected}")
    return buffer.reshape(height, step)


def _bytes_view(data) -> np.ndarray:
    """(N,) uint8 view of bytes / bytearray / memoryview / array.array / numpy buffers (no copy)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


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


def _unit_warning(median: float | None, encoding: str) -> str | None:
    """A message when the median valid depth (metres as decoded; None = no valid pixel) looks
    like the other unit."""
    if median is None:
        return None
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
    configured one) is refused: the driver was reconfigured and nobody checked the units.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth encoding {encoding!r} is not supported; expected one of {sorted(DEPTH_ENCODINGS)}")
    if expected_encoding not in (None, encoding):
        raise ValueError(f"depth encoding {encoding!r} but the config says {expected_encoding!r} "
                         "(16UC1 = millimetres, 32FC1 = metres)")
    values = _single_channel(data, DEPTH_ENCODINGS[encoding], height, width, step, is_bigendian, "depth image")
    # The median of a regular grid of about UNIT_CHECK_SAMPLES pixels is as telling as the full
    # one (a unit mix-up moves it 1000x) and costs a fixed, small time whatever the resolution.
    step = max(1, math.isqrt(height * width // UNIT_CHECK_SAMPLES))
    sample = values[::step, ::step]
    if encoding == "16UC1":
        # One pass each: the conversion, the return mask, and NaN put in by dividing by the mask
        # (x / 1 = x exactly, 0 / 0 = NaN): a masked store (`metres[mask] = nan`, `np.copyto(...,
        # where=)`) is several times slower than an element-wise pass. The valid share comes
        # from the integers (a millimetre value is never NaN): the float image is not read again.
        has_return = values != 0
        metres = np.multiply(values, np.float32(0.001), dtype=np.float32)
        with np.errstate(invalid="ignore"):
            np.divide(metres, has_return, out=metres, dtype=np.float32)
        invalid = metres.size - int(np.count_nonzero(has_return))
        valid_sample = sample[sample != 0]
        median = float(np.median(valid_sample.astype(np.float32) * np.float32(0.001))) if valid_sample.size else None
    else:
        metres = values if values.dtype.isnative else values.astype(np.float32)
        bad = ~(metres > 0) & ~np.isnan(metres) | np.isinf(metres)  # NaN is already "invalid"
        if bad.any():
            metres = np.array(metres, dtype=np.float32)
            metres[bad] = np.nan
        invalid = int(np.count_nonzero(~np.isfinite(metres)))
        sample = metres[::step, ::step]
        valid_sample = sample[np.isfinite(sample)]
        median = float(np.median(valid_sample)) if valid_sample.size else None
    valid_fraction = (metres.size - invalid) / metres.size
    return DepthImage(metres, encoding, valid_fraction, _unit_warning(median, encoding))


def _single_channel(data, dtype: np.dtype, height: int, width: int, step: int | None, is_bigendian: bool,
                    what: str) -> np.ndarray:
    """(H, W) values of a one-channel buffer in the message's byte order (row padding dropped)."""
    dtype = dtype.newbyteorder(">" if is_bigendian else "<")
    rows = _as_array(data, height, width, width * dtype.itemsize if step is None else step, dtype.itemsize, what)
    raw = rows[:, : width * dtype.itemsize]
    if not raw.flags.c_contiguous:
        raw = np.ascontiguousarray(raw)  # row padding: one copy to drop it
    return raw.view(dtype).reshape(height, width)


def decode_label_image(data, encoding: str, height: int, width: int, step: int | None = None,
                       is_bigendian: bool = False) -> np.ndarray:
    """(H, W) int32 instance ids of a 32SC1 buffer."""
    if encoding not in LABEL_ENCODINGS:
        raise ValueError(f"label image encoding {encoding!r} is not supported; expected one of "
                         f"{sorted(LABEL_ENCODINGS)}")
    values = _single_channel(data, LABEL_ENCODINGS[encoding], height, width, step, is_bigendian, "label image")
    return values.astype(np.int32)


def compressed_format(format_field: str) -> str:
    """"jpeg" or "png" from a CompressedImage `format` ("jpeg", "rgb8; jpeg compressed bgr8", ...)."""
    text = format_field.lower()
    if "compresseddepth" in text:
        raise ValueError(f"compressed image format {format_field!r} (compressedDepth) is not supported; "
                         "record depth as a raw 16UC1 or 32FC1 Image")
    # image_transport writes "<encoding>; <jpeg|png> compressed <encoding>"; plain "jpeg" / "png" too.
    words = text.split(";")[-1].split()
    codec = {"jpg": "jpeg"}.get(words[0], words[0]) if words else ""
    if codec not in COMPRESSED_FORMATS:
        raise ValueError(f"compressed image format {format_field!r} is not supported; expected JPEG or PNG "
                         "(image_transport 'compressed')")
    return codec


def decode_compressed_image(data, format_field: str, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a CompressedImage's JPEG / PNG bytes (8 bits per channel).

    The format's codec must match the bytes; truncated or corrupt files, images larger than
    `MAX_IMAGE_BYTES` decoded and images whose (H, W) differs from `expected_size` (the
    CameraInfo's: a CompressedImage carries no size field of its own) are refused (ValueError
    naming the field), never half-decoded.
    """
    import PIL.Image

    codec = compressed_format(format_field)
    buffer = _bytes_view(data)
    if buffer.size > MAX_IMAGE_BYTES:
        raise ValueError(f"compressed image: {buffer.size} bytes exceeds the {MAX_IMAGE_BYTES}-byte cap")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(io.BytesIO(buffer.tobytes()), formats=[codec.upper()]) as image:
                width, height = image.size
                if width * height * 4 > MAX_IMAGE_BYTES:
                    raise ValueError(f"compressed image: {width}x{height} pixels exceeds the "
                                     f"{MAX_IMAGE_BYTES}-byte cap")
                if expected_size is not None and (height, width) != tuple(expected_size):
                    raise ValueError(f"compressed image: data is {width}x{height} pixels, expected "
                                     f"{expected_size[1]}x{expected_size[0]} (CameraInfo width x height)")
                if image.mode not in _EIGHT_BIT_MODES:
                    raise ValueError(f"compressed image: {codec} of mode {image.mode!r} is not 8 bits per "
                                     "channel colour")
                image.load()
                return np.asarray(image.convert("RGB"))
    except Exception as error:  # noqa: BLE001 - PIL raises OSError, SyntaxError, struct errors, ... on bad files
        if isinstance(error, ValueError) and str(error).startswith("compressed image:"):
            raise
        raise ValueError(f"compressed image: data is not a valid {codec} file ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else 'corrupt'})") from None
