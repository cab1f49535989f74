"""Fuzzing the message -> array decoders (`runtime.images`) with generated message fields.

Every generated case must end in one of two ways: a correct array, or a ValueError (the one-line
refusal the bag readers and nodes prefix with the bag / topic / camera). Any other exception is a
bug. Properties, not just shapes: invalid depth (0 mm, NaN, inf, <= 0 m) is NaN and every valid
pixel is its value in metres; a buffer whose size disagrees with height x step is refused; colour
survives every encoding's channel order; PNG is lossless. Images are small (<= 6 x 6) so the
~14,000 decoder cases in total run in a few seconds.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vla3d_ros.runtime.images import (
    COLOR_ENCODINGS,
    DEPTH_ENCODINGS,
    decode_color_image,
    decode_compressed_image,
    decode_depth_image,
    decode_label_image,
)

ENCODINGS = sorted(COLOR_ENCODINGS) + sorted(DEPTH_ENCODINGS) + ["32SC1", "yuv422", "bayer_rggb8", "8UC3", ""]
BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "16UC1": 2, "32FC1": 4, "32SC1": 4}
# Hypothesis examples per test; each example decodes several messages (cases), counted below.
EXAMPLES = {"raw": 300, "compressed": 400, "arbitrary": 600}
# Byte patterns planted in the buffers: 0 mm, float NaN, +inf, -inf (little endian).
SPECIAL = [b"", b"\x00\x00", b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\x00\x00\x80\xff"]


def run_counted(test, examples: int) -> int:
    """Run `test(data)` for `examples` hypothesis examples; returns the decoder cases it counted."""
    cases = []

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def body(data):
        cases.append(test(data))

    body()
    return sum(cases)


@st.composite
def geometry(draw):
    """Image fields common to every encoding of one example: sizes, padding, damage, byte seed."""
    return dict(height=draw(st.integers(-1, 6)), width=draw(st.integers(-1, 6)),
                padding=draw(st.sampled_from([0, 0, 0, 1, 3, -1])),
                size_error=draw(st.sampled_from([0, 0, 0, -1, 1, -2, 2, 7])),
                seed=draw(st.integers(0, 2**32 - 1)), special=draw(st.sampled_from(SPECIAL)),
                big=draw(st.booleans()))


def image_fields(g: dict, encoding: str):
    """(data, height, width, step) of one generated Image of `encoding` with geometry `g`.

    Bytes come from the drawn seed (as varied as st.binary at a fraction of its per-byte cost)
    with the special pattern planted so NaN / inf / 0 occur in most depth images.
    """
    bpp = BYTES_PER_PIXEL.get(encoding, 1)
    height, width = g["height"], g["width"]
    step = max(width, 0) * bpp + g["padding"]
    size = max(0, max(height, 0) * max(step, 0) + g["size_error"] * (1 if g["size_error"] == 7 else bpp))
    data = bytearray(np.random.default_rng(g["seed"]).bytes(size))
    special = g["special"]
    if special:
        for offset in range(0, size - len(special) + 1, 2 * len(special)):
            data[offset:offset + len(special)] = special
    return bytes(data), height, width, step


def consistent(data: bytes, height: int, width: int, step: int, bpp: int) -> bool:
    return height > 0 and width > 0 and step >= width * bpp and len(data) == step * height


def rows(data: bytes, height: int, width: int, step: int, bpp: int) -> np.ndarray:
    return np.frombuffer(data, np.uint8).reshape(height, step)[:, :width * bpp].copy()


def check_color(data, encoding, height, width, step) -> None:
    if encoding not in COLOR_ENCODINGS or not consistent(data, height, width, step, COLOR_ENCODINGS[encoding]):
        with pytest.raises(ValueError):
            decode_color_image(data, encoding, height, width, step)
        return
    channels = COLOR_ENCODINGS[encoding]
    rgb = decode_color_image(data, encoding, height, width, step)
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
    pixels = rows(data, height, width, step, channels).reshape(height, width, channels)
    expected = {"rgb8": pixels, "rgba8": pixels[..., :3], "bgr8": pixels[..., ::-1],
                "bgra8": pixels[..., 2::-1], "mono8": np.repeat(pixels, 3, axis=2)}[encoding]
    np.testing.assert_array_equal(rgb, expected)


def check_depth(data, encoding, height, width, step, big) -> None:
    dtype = DEPTH_ENCODINGS.get(encoding)
    if dtype is None or not consistent(data, height, width, step, dtype.itemsize):
        with pytest.raises(ValueError):
            decode_depth_image(data, encoding, height, width, step, big)
        return
    depth = decode_depth_image(data, encoding, height, width, step, big)
    values = rows(data, height, width, step, dtype.itemsize).view(
        dtype.newbyteorder(">" if big else "<")).reshape(height, width).astype(np.float32)
    metres = values * np.float32(0.001) if encoding == "16UC1" else values
    invalid = ~np.isfinite(metres) | (metres <= 0)
    assert depth.metres.shape == (height, width) and depth.metres.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(depth.metres), invalid)       # invalid is NaN, nothing else
    assert np.all(np.isfinite(depth.metres[~invalid]))
    np.testing.assert_array_equal(depth.metres[~invalid], metres[~invalid])   # the value, in metres
    assert depth.valid_fraction == pytest.approx(np.mean(~invalid))


def check_labels(data, encoding, height, width, step, big) -> None:
    if encoding != "32SC1" or not consistent(data, height, width, step, 4):
        with pytest.raises(ValueError):
            decode_label_image(data, encoding, height, width, step, big)
        return
    labels = decode_label_image(data, encoding, height, width, step, big)
    expected = rows(data, height, width, step, 4).view(">i4" if big else "<i4").reshape(height, width)
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.int32


def test_raw_image_decoders_fuzz():
    """Every encoding through the colour, depth and label decoders: 39 cases per example."""
    def case(data) -> int:
        g = data.draw(geometry())
        for encoding in ENCODINGS:
            raw, height, width, step = image_fields(g, encoding)
            check_color(raw, encoding, height, width, step)
            check_depth(raw, encoding, height, width, step, g["big"])
            check_labels(raw, encoding, height, width, step, g["big"])
        return 3 * len(ENCODINGS)

    assert run_counted(case, EXAMPLES["raw"]) >= 10_000


def _encoded(rgb: np.ndarray, codec: str, mode: str) -> bytes:
    from PIL import Image

    image = Image.fromarray(rgb)
    image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=codec.upper(), **({"quality": 90} if codec == "jpeg" else {"compress_level": 1}))
    return buffer.getvalue()


COMPRESSED_FORMAT_FIELDS = {"jpeg": ["jpeg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8", "jpg"],
                            "png": ["png", "rgb8; png compressed bgr8", "mono8; png compressed mono8"]}


def test_compressed_decoder_fuzz():
    """One JPEG / PNG per example, decoded intact and after each kind of damage: 5 cases."""
    def case(data) -> int:
        codec = data.draw(st.sampled_from(["jpeg", "png"]))
        height, width = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
        rgb = np.random.default_rng(data.draw(st.integers(0, 2**16))).integers(0, 256, (height, width, 3),
                                                                                 dtype=np.uint8)
        mode = data.draw(st.sampled_from(["RGB", "L"] + (["RGBA", "P"] if codec == "png" else [])))
        format_field = data.draw(st.sampled_from(COMPRESSED_FORMAT_FIELDS[codec]))
        intact = _encoded(rgb, codec, mode)
        decoded = decode_compressed_image(intact, format_field, (height, width))
        assert decoded.shape == (height, width, 3) and decoded.dtype == np.uint8
        if codec == "png" and mode == "RGB":
            np.testing.assert_array_equal(decoded, rgb)                       # lossless
        position = data.draw(st.integers(0, len(intact) - 1))
        damaged = {
            "truncate": (intact[:position], format_field, (height, width)),
            "flip": (intact[:position] + bytes([intact[position] ^ 0xFF]) + intact[position + 1:], format_field,
                     (height, width)),
            "garbage": (data.draw(st.binary(max_size=64)), format_field, (height, width)),
            "wrong_codec": (intact, "png" if codec == "jpeg" else "jpeg", (height, width)),
            "wrong_size": (intact, format_field, (height + 1, width)),
        }
        for damage, (buffer, field, size) in damaged.items():
            try:
                result = decode_compressed_image(buffer, field, size)
            except ValueError as error:
                assert "\n" not in str(error) and str(error).startswith("compressed image")
                continue
            # A flipped byte inside the pixel data may still decode (JPEG / PNG carry no checksum
            # over every byte): then it is a whole image of the CameraInfo's size, never another.
            # A PNG cut after its last pixel data (only the IEND marker lost) is the whole image.
            assert damage in ("flip", "truncate"), damage
            assert result.shape == (height, width, 3) and result.dtype == np.uint8
            if damage == "truncate":
                np.testing.assert_array_equal(result, decoded)
        return 1 + len(damaged)

    assert run_counted(case, EXAMPLES["compressed"]) >= 6 * EXAMPLES["compressed"]


def test_unsupported_compressed_formats_are_refused_in_one_line():
    with pytest.raises(ValueError, match="compressedDepth.*not supported"):
        decode_compressed_image(b"\x00" * 20, "16UC1; compressedDepth png")
    with pytest.raises(ValueError, match="'theora' is not supported"):
        decode_compressed_image(b"\x00" * 20, "theora")


def test_arbitrary_fields_never_raise_anything_but_value_error():
    """Unconstrained fields (any text as encoding / format, negative sizes) into all four decoders."""
    def case(data) -> int:
        raw = data.draw(st.binary(max_size=80))
        encoding = data.draw(st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=12)))
        height, width = data.draw(st.integers(-3, 10)), data.draw(st.integers(-3, 10))
        step, big = data.draw(st.integers(-5, 50)), data.draw(st.booleans())
        for decode in (lambda: decode_color_image(raw, encoding, height, width, step),
                       lambda: decode_depth_image(raw, encoding, height, width, step, big),
                       lambda: decode_label_image(raw, encoding, height, width, step, big),
                       lambda: decode_compressed_image(raw, encoding, (height, width))):
            try:
                decode()
            except ValueError as error:
                assert str(error) and "\n" not in str(error)
        return 4

    assert run_counted(case, EXAMPLES["arbitrary"]) >= 4 * EXAMPLES["arbitrary"]
