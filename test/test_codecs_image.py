"""Image / CompressedImage codecs on real rclpy messages and rosbags dataclasses (including CDR round trips)."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from equiseg_ros.ros.codecs import (
    DecodeError,
    compressed_image_to_numpy,
    encoding_info,
    fill_image,
    image_to_numpy,
    numpy_to_image_fields,
    to_rgb8,
)

sensor_msgs = pytest.importorskip("sensor_msgs.msg")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

TS = get_typestore(Stores.ROS2_KILTED)
RB_IMAGE = TS.types["sensor_msgs/msg/Image"]
RB_HEADER = TS.types["std_msgs/msg/Header"]
RB_TIME = TS.types["builtin_interfaces/msg/Time"]

ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "rgb16", "bgra16", "bayer_rggb8", "bayer_gbrg16",
             "yuv422", "8UC1", "8UC3", "8UC4", "8SC2", "16UC1", "16SC3", "32SC1", "32FC1", "32FC3", "64FC1", "64FC4",
             "16U", "32F"]


def _random(encoding: str, h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    base, ch = encoding_info(encoding)
    rng = np.random.default_rng(seed)
    if base.kind == "f":
        a = rng.normal(size=(h, w, ch)).astype(base)
        a.flat[3] = np.nan
    else:
        info = np.iinfo(base)
        a = rng.integers(info.min, info.max, size=(h, w, ch), endpoint=True, dtype=base)
    return a[..., 0] if ch == 1 else a


def _rb_image() -> object:
    return RB_IMAGE(header=RB_HEADER(stamp=RB_TIME(sec=0, nanosec=0), frame_id="cam"), height=0, width=0,
                    encoding="", is_bigendian=0, step=0, data=np.zeros(0, np.uint8))


def _padded(arr: np.ndarray, encoding: str, pad: int, big: bool) -> dict:
    """Image fields with ``pad`` junk bytes after every row, in the requested byte order."""
    a = arr.astype(arr.dtype.newbyteorder(">" if big else "<"))
    f = numpy_to_image_fields(a, encoding)
    rows = f["data"].reshape(f["height"], f["step"])
    junk = np.full((f["height"], pad), 0xAB, np.uint8)
    f["data"] = np.ascontiguousarray(np.concatenate([rows, junk], axis=1)).reshape(-1)
    f["step"] += pad
    return f


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("pad", [0, 3])
def test_every_encoding_round_trips_rclpy_and_rosbags(encoding: str, big: bool, pad: int) -> None:
    arr = _random(encoding)
    fields = _padded(arr, encoding, pad, big)
    for msg in (sensor_msgs.Image(), _rb_image()):
        for k, v in fields.items():
            setattr(msg, k, v if k != "data" else (v.tobytes() if isinstance(msg, sensor_msgs.Image) else v))
        out = image_to_numpy(msg, "/cam")
        assert _equal(out, arr), (encoding, big, pad, type(msg))
        assert out.dtype.isnative
    # fill_image writes a message that decodes to the same array, for both message families
    a_big = arr.astype(arr.dtype.newbyteorder(">")) if big else arr
    for msg in (sensor_msgs.Image(), _rb_image()):
        fill_image(msg, a_big, encoding)
        assert msg.is_bigendian == int(big and arr.dtype.itemsize > 1)
        assert _equal(image_to_numpy(msg), arr)


def test_cdr_round_trip_between_rosbags_and_rclpy() -> None:
    arr = _random("32FC1", 6, 9)
    f = _padded(arr, "32FC1", 4, big=True)
    rb = _rb_image()
    for k, v in f.items():
        setattr(rb, k, v)
    raw = TS.serialize_cdr(rb, "sensor_msgs/msg/Image")
    rc = deserialize_message(bytes(raw), sensor_msgs.Image)
    assert _equal(image_to_numpy(rc, "/depth"), arr)
    back = TS.deserialize_cdr(serialize_message(rc), "sensor_msgs/msg/Image")
    assert _equal(image_to_numpy(back, "/depth"), arr)


def test_decoding_is_zero_copy_for_native_order_even_with_row_padding() -> None:
    arr = _random("rgb8", 8, 10)
    msg = sensor_msgs.Image()
    f = _padded(arr, "rgb8", 6, big=False)
    for k, v in f.items():
        setattr(msg, k, v.tobytes() if k == "data" else v)
    out = image_to_numpy(msg, "/cam")
    base = np.frombuffer(msg.data, np.uint8)
    assert np.shares_memory(out, base)
    rb = fill_image(_rb_image(), arr, "rgb8")
    assert np.shares_memory(image_to_numpy(rb), rb.data)
    assert not np.shares_memory(image_to_numpy(rb, copy=True), rb.data)
    # byte-swapped data cannot be a view
    m16 = fill_image(_rb_image(), _random("16UC1").astype(">u2"), "16UC1")
    assert not np.shares_memory(image_to_numpy(m16), m16.data)


def test_to_rgb8_orders_channels() -> None:
    rgb = _random("rgb8")
    assert np.array_equal(to_rgb8(np.ascontiguousarray(rgb[..., ::-1]), "bgr8"), rgb)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 9, np.uint8)], axis=2)
    assert np.array_equal(to_rgb8(rgba, "rgba8"), rgb)
    assert np.array_equal(to_rgb8(rgb[..., 0], "mono8"), np.repeat(rgb[..., :1], 3, axis=2))
    assert np.array_equal(to_rgb8(rgb.astype(np.uint16) * 257, "rgb16"), rgb)


@pytest.mark.parametrize("kind,mutate,needle", [
    ("short_step", lambda m: setattr(m, "step", m.step - 1), "step"),
    ("len_data", lambda m: setattr(m, "data", m.data[:-1]), "len(data)"),
    ("extra_data", lambda m: setattr(m, "data", np.concatenate([m.data, np.zeros(5, np.uint8)])), "len(data)"),
    ("unknown_encoding", lambda m: setattr(m, "encoding", "rgb9"), "unknown image encoding"),
    ("empty_encoding", lambda m: setattr(m, "encoding", ""), "unknown image encoding"),
    ("no_encoding", lambda m: delattr(m, "encoding"), "encoding"),
    ("negative", lambda m: setattr(m, "height", -1), "negative"),
])
def test_malformed_images_raise_one_error_with_topic_and_reason(kind: str, mutate, needle: str) -> None:
    class Loose:  # a duck-typed message whose fields can be broken at will
        pass

    m = Loose()
    for k, v in numpy_to_image_fields(_random("rgb8"), "rgb8").items():
        setattr(m, k, v)
    mutate(m)
    with pytest.raises(DecodeError) as err:
        image_to_numpy(m, "/camera/image_raw")
    assert err.value.topic == "/camera/image_raw"
    assert needle in err.value.reason
    assert "/camera/image_raw" in str(err.value)


def test_encode_rejects_mismatched_arrays() -> None:
    with pytest.raises(DecodeError, match="channel"):
        numpy_to_image_fields(np.zeros((4, 4, 3), np.uint8), "mono8")
    with pytest.raises(DecodeError, match="dtype"):
        numpy_to_image_fields(np.zeros((4, 4), np.float32), "16UC1")


def _compressed(data: bytes, fmt: str) -> object:
    m = sensor_msgs.CompressedImage()
    m.format = fmt
    m.data = data
    return m


def test_compressed_png_and_jpeg_decode_to_rgb() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    assert np.array_equal(compressed_image_to_numpy(_compressed(png.tobytes(), "rgb8; png compressed bgr8")), rgb)
    smooth = np.zeros((32, 32, 3), np.uint8)
    smooth[..., 0] = 200  # red: a jpeg must come back red, not blue
    smooth[..., 2] = 30
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = compressed_image_to_numpy(_compressed(jpg.tobytes(), "jpeg"), "/cam/compressed")
    assert out.shape == smooth.shape and np.abs(out.astype(int) - smooth).max() <= 3
    mono16 = rng.integers(0, 65536, (10, 12), dtype=np.uint16)
    ok, png16 = cv2.imencode(".png", mono16)
    assert np.array_equal(compressed_image_to_numpy(_compressed(png16.tobytes(), "png")), mono16)


def test_compressed_depth_16uc1_and_32fc1() -> None:
    mm = np.arange(1, 121, dtype=np.uint16).reshape(10, 12) * 50
    ok, png = cv2.imencode(".png", mm)
    header = struct.pack("<iff", 0, 0.0, 0.0)
    out = compressed_image_to_numpy(_compressed(header + png.tobytes(), "16UC1; compressedDepth png"), "/d")
    assert np.array_equal(out, mm)
    # 32FC1: stored inverse depth q = A / d + B (image_transport's compressedDepth quantisation), 0 = invalid
    depth = np.linspace(1.0, 9.0, 120, dtype=np.float32).reshape(10, 12)
    qa, qb = 100.0, 1.0 - 100.0 / 10.0
    q = np.rint(qa / depth + qb).astype(np.uint16)
    q[0, 0] = 0
    ok, png = cv2.imencode(".png", q)
    out = compressed_image_to_numpy(_compressed(struct.pack("<iff", 0, qa, qb) + png.tobytes(),
                                                "32FC1; compressedDepth png"), "/d")
    assert np.isnan(out[0, 0])
    rel = np.abs(out - depth) / depth
    rel[0, 0] = 0
    assert rel.max() < 0.1  # quantisation error of the format, largest far away


@pytest.mark.parametrize("data,fmt,needle", [(b"", "jpeg", "empty"), (b"not an image", "png", "cannot decode"),
                                             (b"12345", "16UC1; compressedDepth png", "header")])
def test_malformed_compressed_images_raise(data: bytes, fmt: str, needle: str) -> None:
    with pytest.raises(DecodeError) as err:
        compressed_image_to_numpy(_compressed(data, fmt), "/cam/compressed")
    assert err.value.topic == "/cam/compressed" and needle in err.value.reason
