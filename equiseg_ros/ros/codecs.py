"""sensor_msgs ↔ numpy, duck-typed: the only module that knows the layout of ROS messages.

Nothing here imports rclpy or a message package. Functions read fields (``height``, ``width``, ``encoding``,
``step``, ``data``, ``fields``, ``point_step``, …), so the same code decodes rclpy messages on a vehicle and the
dataclasses that ``rosbags`` deserialises from a bag. We do not use cv_bridge / sensor_msgs_py: they are not
installable from PyPI, cv_bridge breaks on NumPy 2 (``ndarray.newbyteorder``) and ``read_points`` ignores
``row_step`` padding (see shared/reference/ros_anchors.md §3-4).

Every malformed message raises :class:`DecodeError` naming the topic and the reason, so the node can mark the
modality ``malformed`` for the synchroniser and report it in diagnostics instead of crashing.

Decoding is zero-copy where the layout allows (native byte order): the returned array is a view on the message's
buffer, read-only when the buffer is immutable. Copy it before modifying it in place.
"""
from __future__ import annotations

import array
import re
import struct
import sys
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "DecodeError", "IMAGE_ENCODINGS", "encoding_info", "image_to_numpy", "compressed_image_to_numpy",
    "numpy_to_image_fields", "fill_image", "POINTFIELD_DTYPES", "pointcloud2_dtype", "pointcloud2_to_array",
    "xyz_finite", "cloud_is_dense", "array_to_pointcloud2_fields", "fill_pointcloud2", "camera_info_to_camera",
    "stamp_to_sec", "stamp_to_ns", "to_rgb8", "decode_any", "header_fields",
]


class DecodeError(ValueError):
    """A message could not be decoded; ``topic`` and ``reason`` say which and why."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"{topic or '<topic?>'}: {reason}")


# ---- images --------------------------------------------------------------------------------------------------

# encoding -> (numpy base dtype, channels); from sensor_msgs/image_encodings.hpp and cv_bridge's getCvType.
IMAGE_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "rgba8": ("u1", 4), "bgra8": ("u1", 4),
    "rgb16": ("u2", 3), "bgr16": ("u2", 3), "rgba16": ("u2", 4), "bgra16": ("u2", 4),
    "mono8": ("u1", 1), "mono16": ("u2", 1),
    "yuv422": ("u1", 2), "yuv422_yuy2": ("u1", 2), "uyvy": ("u1", 2), "yuyv": ("u1", 2),
}
for _pat in ("rggb", "bggr", "gbrg", "grbg"):
    IMAGE_ENCODINGS[f"bayer_{_pat}8"] = ("u1", 1)
    IMAGE_ENCODINGS[f"bayer_{_pat}16"] = ("u2", 1)
_DEPTH_DTYPES = {"8U": "u1", "8S": "i1", "16U": "u2", "16S": "i2", "32S": "i4", "32F": "f4", "64F": "f8"}
_GENERIC_RE = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)(?:C([1-9][0-9]*))?$")
_HOST_BIG = sys.byteorder == "big"


def encoding_info(encoding: str, topic: str = "") -> tuple[np.dtype, int]:
    """(native-order base dtype, channel count) of a sensor_msgs/Image encoding; DecodeError when unknown."""
    enc = encoding.strip()
    if enc in IMAGE_ENCODINGS:
        base, ch = IMAGE_ENCODINGS[enc]
        return np.dtype(base), ch
    m = _GENERIC_RE.match(enc.upper())
    if m:
        return np.dtype(_DEPTH_DTYPES[m.group(1)]), int(m.group(2) or 1)
    raise DecodeError(topic, f"unknown image encoding {encoding!r}")


def _as_byte_array(data: Any, topic: str, what: str = "data") -> np.ndarray:
    """A uint8 view of a message's byte sequence (array.array, bytes, ndarray) without copying when possible."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            data = data.view(np.uint8) if data.flags.c_contiguous else np.ascontiguousarray(data).view(np.uint8)
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        pass
    try:
        return np.asarray(data, dtype=np.uint8).reshape(-1)  # a plain list of ints (slow, but correct)
    except (TypeError, ValueError) as exc:
        raise DecodeError(topic, f"{what}: not a byte sequence ({type(data).__name__}: {exc})") from None


def _check_dims(msg: Any, topic: str) -> tuple[int, int]:
    try:
        h, w = int(msg.height), int(msg.width)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DecodeError(topic, f"missing or invalid height/width ({exc})") from None
    if h < 0 or w < 0:
        raise DecodeError(topic, f"negative size {h}x{w}")
    return h, w


def image_to_numpy(msg: Any, topic: str = "", copy: bool = False) -> np.ndarray:
    """sensor_msgs/Image -> [H, W] (one channel) or [H, W, C] array of the encoding's dtype, native byte order.

    Honours ``step`` row padding (the result is then a strided view) and ``is_bigendian`` (a byte-swapped copy when
    it differs from the host). Channel order is the encoding's (bgr8 stays BGR); see :func:`to_rgb8`.
    """
    h, w = _check_dims(msg, topic)
    encoding = getattr(msg, "encoding", None)
    if not isinstance(encoding, str):
        raise DecodeError(topic, "missing encoding")
    base, ch = encoding_info(encoding, topic)
    step = int(getattr(msg, "step", 0))
    row_bytes = w * ch * base.itemsize
    if step < row_bytes:
        raise DecodeError(topic, f"step {step} < width*channels*bytes = {w}*{ch}*{base.itemsize} = {row_bytes} "
                                 f"(encoding {encoding})")
    buf = _as_byte_array(getattr(msg, "data", b""), topic)
    if buf.size != h * step:
        raise DecodeError(topic, f"len(data) = {buf.size} != height*step = {h}*{step} = {h * step}")
    big = bool(getattr(msg, "is_bigendian", False))
    dtype = base.newbyteorder(">" if big else "<") if base.itemsize > 1 else base
    shape = (h, w, ch) if ch > 1 else (h, w)
    strides = (step, ch * base.itemsize, base.itemsize) if ch > 1 else (step, base.itemsize)
    if h == 0 or w == 0:
        return np.zeros(shape, base)
    out = np.ndarray(shape, dtype=dtype, buffer=buf, strides=strides)
    if base.itemsize > 1 and big != _HOST_BIG:
        return out.astype(base)  # byte swap: unavoidable copy, result in native order
    return out.copy() if copy else out


_BGR_ORDER = {"bgr8": [2, 1, 0], "bgra8": [2, 1, 0], "bgr16": [2, 1, 0], "bgra16": [2, 1, 0]}


def to_rgb8(arr: np.ndarray, encoding: str, topic: str = "") -> np.ndarray:
    """A decoded colour/mono image as uint8 [H, W, 3] RGB (16-bit scaled by 1/257, alpha dropped, mono repeated)."""
    enc = encoding.strip()
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] not in (1, 3, 4):
        raise DecodeError(topic, f"cannot show encoding {encoding!r} ({arr.shape[2]} channels) as rgb8")
    if arr.dtype == np.uint16:
        arr = (arr // 257).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise DecodeError(topic, f"cannot show encoding {encoding!r} (dtype {arr.dtype}) as rgb8")
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if enc in _BGR_ORDER:
        return np.ascontiguousarray(arr[:, :, [2, 1, 0]])
    return arr[:, :, :3] if arr.shape[2] == 4 else arr


def compressed_image_to_numpy(msg: Any, topic: str = "") -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png, or image_transport ``compressedDepth``) -> numpy.

    Colour comes back as uint8 [H, W, 3] **RGB**; grey as [H, W]; 16-bit PNG as uint16 [H, W].
    ``compressedDepth`` (a 12-byte header before a PNG) gives uint16 [H, W] for 16UC1 and float32 metres for 32FC1
    (inverse-depth quantisation, 0 -> NaN).
    """
    import cv2  # lazily: the node may not need image decoding at all

    fmt = str(getattr(msg, "format", "")).lower()
    buf = _as_byte_array(getattr(msg, "data", b""), topic)
    if buf.size == 0:
        raise DecodeError(topic, "empty compressed image")
    depth_quant: tuple[float, float] | None = None
    if "compresseddepth" in fmt:
        if buf.size <= 12:
            raise DecodeError(topic, f"compressedDepth: {buf.size} bytes, shorter than its 12-byte header")
        _, qa, qb = struct.unpack("<iff", buf[:12].tobytes())
        depth_quant = (qa, qb)
        buf = buf[12:]
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DecodeError(topic, f"cannot decode compressed image (format {fmt!r}, {buf.size} bytes)")
    if depth_quant is not None:
        if fmt.startswith("32fc1"):
            if img.dtype != np.uint16:
                raise DecodeError(topic, f"compressedDepth 32FC1: expected a 16-bit PNG, got {img.dtype}")
            qa, qb = depth_quant
            inv = img.astype(np.float32)
            with np.errstate(divide="ignore", invalid="ignore"):
                depth = qa / (inv - qb)
            depth[img == 0] = np.nan
            return depth.astype(np.float32)
        return img
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return img


def numpy_to_image_fields(arr: np.ndarray, encoding: str) -> dict[str, Any]:
    """The sensor_msgs/Image fields for ``arr`` ([H, W] or [H, W, C]) with no row padding.

    ``data`` is a flat uint8 ndarray (a view when ``arr`` is C-contiguous). ``is_bigendian`` follows the array's
    byte order, so big-endian arrays are written as such (and round-trip).
    """
    base, ch = encoding_info(encoding, "numpy_to_image_fields")
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise DecodeError("numpy_to_image_fields", f"expected [H, W] or [H, W, C], got shape {np.shape(arr)}")
    if a.shape[2] != ch:
        raise DecodeError("numpy_to_image_fields", f"encoding {encoding!r} needs {ch} channel(s), got {a.shape[2]}")
    if a.dtype.kind != base.kind or a.dtype.itemsize != base.itemsize:
        raise DecodeError("numpy_to_image_fields", f"encoding {encoding!r} needs dtype {base}, got {a.dtype}")
    big = a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and _HOST_BIG)
    a = np.ascontiguousarray(a)
    h, w = a.shape[:2]
    return {"height": int(h), "width": int(w), "encoding": encoding, "is_bigendian": int(big and a.itemsize > 1),
            "step": int(w * ch * a.itemsize), "data": a.reshape(-1).view(np.uint8)}


def _assign_bytes(msg: Any, data: np.ndarray) -> None:
    """Set ``msg.data`` in the form the message class wants: array.array for rclpy, ndarray for rosbags."""
    current = getattr(msg, "data", None)
    if isinstance(current, array.array):  # rclpy: its setter fast-paths array.array('B')
        out = array.array("B")
        out.frombytes(memoryview(np.ascontiguousarray(data)))
        msg.data = out
    elif isinstance(current, (bytes, bytearray)):
        msg.data = data.tobytes()
    else:
        msg.data = np.ascontiguousarray(data, dtype=np.uint8)


def fill_image(msg: Any, arr: np.ndarray, encoding: str, header: Any = None) -> Any:
    """Fill an (rclpy or rosbags) sensor_msgs/Image from ``arr``; returns ``msg``."""
    fields = numpy_to_image_fields(arr, encoding)
    data = fields.pop("data")
    for k, v in fields.items():
        setattr(msg, k, v)
    _assign_bytes(msg, data)
    if header is not None:
        msg.header = header
    return msg


# ---- point clouds --------------------------------------------------------------------------------------------
#
# Layout conventions (the same for decoding and encoding, so a decode -> encode round trip is the identity):
# - a PointField with ``count > 1`` is ONE numpy sub-array field of shape (count,) under the field's own name
#   (``normal`` count 3 -> ``arr["normal"]`` of shape [N, 3]), and a sub-array field encodes back as ONE PointField
#   with that count. sensor_msgs_py's ``dtype_from_fields`` splits it into ``normal_0..normal_2`` instead; ask for
#   that with ``split_counts=True`` (such split fields then encode as separate scalar PointFields, as named).
# - an organised cloud is an array of shape (height, width): row ``r`` is the cloud's row ``r``, like an image.
#   sensor_msgs_py's ``read_points(reshape_organized_cloud=True)`` and ``create_cloud`` use (width, height)
#   instead (ros2/common_interfaces#236): transpose when exchanging 2-D arrays with it.

# sensor_msgs/PointField datatype constants -> numpy base type.
POINTFIELD_DTYPES: dict[int, str] = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_DTYPE_TO_POINTFIELD = {np.dtype(v).str[1:]: k for k, v in POINTFIELD_DTYPES.items()}


def pointcloud2_dtype(fields: Sequence[Any], point_step: int, big_endian: bool = False, topic: str = "",
                      split_counts: bool = False) -> np.dtype:
    """Structured dtype of one point (itemsize = point_step, so padding bytes stay part of each point).

    A ``count > 1`` field is a sub-array field of shape (count,) under its own name (encodes back to one
    PointField); ``split_counts=True`` gives sensor_msgs_py's scalar fields ``name_0..name_{count-1}`` instead.
    A nameless field is called ``unnamed_field_<i>`` (sensor_msgs_py's rule). ``count == 0`` is read as 1.
    """
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    order = ">" if big_endian else "<"
    for i, f in enumerate(fields):
        name = str(getattr(f, "name", "")) or f"unnamed_field_{i}"
        dt_code = int(getattr(f, "datatype", 0))
        if dt_code not in POINTFIELD_DTYPES:
            raise DecodeError(topic, f"field {name!r}: unknown PointField datatype {dt_code}")
        base = np.dtype(POINTFIELD_DTYPES[dt_code]).newbyteorder(order)
        count = max(int(getattr(f, "count", 1)), 1)  # some drivers write count 0 for scalars
        offset = int(getattr(f, "offset", 0))
        if offset < 0:
            raise DecodeError(topic, f"field {name!r}: negative offset {offset}")
        end = offset + base.itemsize * count
        if end > point_step:
            raise DecodeError(topic, f"point_step {point_step} too small: field {name!r} ends at byte {end}")
        if count == 1 or not split_counts:
            parts = [(name, base if count == 1 else np.dtype((base, (count,))), offset)]
        else:
            parts = [(f"{name}_{j}", base, offset + j * base.itemsize) for j in range(count)]
        for n, fmt, off in parts:
            if n in names:
                raise DecodeError(topic, f"duplicate field name {n!r}")
            names.append(n)
            formats.append(fmt)
            offsets.append(off)
    if not names:
        raise DecodeError(topic, "point cloud has no fields")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def _to_native(grid: np.ndarray) -> np.ndarray:
    """A native-byte-order copy of a structured array that keeps its padding bytes (numpy's astype/copy of a
    structured array does not copy the bytes between fields, so round trips would lose them)."""
    raw = np.ascontiguousarray(grid).view(np.uint8).copy() if grid.size else np.zeros(0, np.uint8)
    foreign = raw.view(grid.dtype).reshape(grid.shape)
    native = raw.view(grid.dtype.newbyteorder("=")).reshape(grid.shape)
    for n in grid.dtype.names:
        if grid.dtype.fields[n][0].base.itemsize > 1:
            native[n] = foreign[n].copy()  # read with the old byte order, write in the native one
    return native


def pointcloud2_to_array(msg: Any, topic: str = "", require: Sequence[str] = ("x", "y", "z"),
                         organized: bool = False, split_counts: bool = False) -> np.ndarray:
    """sensor_msgs/PointCloud2 -> structured array [N] (or [height, width] with ``organized=True``), native order.

    Organised clouds are (height, width) here, row-major like images; sensor_msgs_py's ``read_points`` reshapes
    to (width, height) (ros2/common_interfaces#236). A ``count > 1`` PointField is one sub-array field of shape
    (count,) under its own name (``split_counts=True``: sensor_msgs_py's ``name_0..`` scalars), so
    :func:`fill_pointcloud2` gives back the same PointFields. Each point keeps ``point_step`` bytes, padding
    included. Zero-copy when rows are packed (``row_step == width*point_step``) and the byte order is native;
    ``row_step`` padding or a foreign byte order give a packed native copy (padding bytes inside points kept).
    NaNs are kept: use :func:`xyz_finite`. ``require`` names fields that must exist (x, y, z for LiDAR; x, y, t,
    polarity for events). The message's ``is_dense`` is not trusted.
    """
    h, w = _check_dims(msg, topic)
    point_step = int(getattr(msg, "point_step", 0))
    row_step = int(getattr(msg, "row_step", 0))
    if point_step <= 0:
        raise DecodeError(topic, f"point_step {point_step} must be > 0")
    big = bool(getattr(msg, "is_bigendian", False))
    dtype = pointcloud2_dtype(list(getattr(msg, "fields", []) or []), point_step, big, topic, split_counts)
    missing = [n for n in require if n not in dtype.names]
    if missing:
        raise DecodeError(topic, f"missing field(s) {missing}; cloud has {list(dtype.names)}")
    if row_step < w * point_step:
        raise DecodeError(topic, f"row_step {row_step} < width*point_step = {w}*{point_step} = {w * point_step}")
    buf = _as_byte_array(getattr(msg, "data", b""), topic)
    if buf.size != h * row_step:
        raise DecodeError(topic, f"len(data) = {buf.size} != height*row_step = {h}*{row_step} = {h * row_step}")
    if h * w == 0:
        return np.zeros((h, w) if organized else (0,), dtype.newbyteorder("="))
    if row_step != w * point_step:  # drop the row padding as raw bytes, so the bytes inside each point survive
        buf = np.ascontiguousarray(buf.reshape(h, row_step)[:, : w * point_step]).reshape(-1)
    grid = buf.view(dtype).reshape(h, w)
    if big != _HOST_BIG and any(dtype.fields[n][0].base.itemsize > 1 for n in dtype.names):
        grid = _to_native(grid)
    return grid if organized else grid.reshape(-1)


def xyz_finite(cloud: np.ndarray, return_mask: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """float32 [N, 3] of the points whose x, y, z are all finite (and the boolean mask over ``cloud`` if asked)."""
    flat = cloud.reshape(-1)
    xyz = np.empty((flat.shape[0], 3), np.float32)
    xyz[:, 0] = flat["x"]
    xyz[:, 1] = flat["y"]
    xyz[:, 2] = flat["z"]
    keep = np.isfinite(xyz).all(axis=1)
    out = xyz if keep.all() else xyz[keep]
    return (out, keep) if return_mask else out


def cloud_is_dense(points: np.ndarray) -> bool:
    """True when no float field of any point holds NaN or ±inf: the ``is_dense`` we write.

    Every float field counts (a NaN intensity or normal makes the cloud non-dense, not only x/y/z), and so does a
    cloud without x/y/z (events). Readers such as sensor_msgs_py's ``read_points(skip_nans=True)`` skip their NaN
    filter when ``is_dense`` is true, so it must be true only when that filter would remove nothing. A cloud with no
    float fields, or no points, is dense.
    """
    flat = points.reshape(-1)
    for name in flat.dtype.names or ():
        if flat.dtype.fields[name][0].base.kind == "f" and not np.isfinite(flat[name]).all():
            return False
    return True


def array_to_pointcloud2_fields(points: np.ndarray) -> dict[str, Any]:
    """PointCloud2 fields for a structured array; the inverse of :func:`pointcloud2_to_array`.

    Shape [N] -> height 1, width N; shape [height, width] -> an organised cloud (this package's order; transpose
    an array in sensor_msgs_py's (width, height) order first, ros2/common_interfaces#236). One PointField per
    numpy field, in the dtype's order, at its offset: a sub-array field of shape (k,) becomes ONE PointField with
    ``count`` k (so a decoded cloud re-encodes to the same PointFields); ``point_step`` is the dtype's itemsize, so
    padding is kept. ``is_bigendian`` follows the fields' byte order (all multi-byte fields must agree).
    ``is_dense`` is computed from ALL float fields (:func:`cloud_is_dense`), not from x/y/z only. ``fields`` are
    plain dicts (name, offset, datatype, count); :func:`fill_pointcloud2` turns them into PointField objects.
    """
    where = "array_to_pointcloud2_fields"
    if points.dtype.names is None:
        raise DecodeError(where, "expected a structured array with named fields")
    if points.ndim > 2:
        raise DecodeError(where, f"expected [N] or [height, width] points, got shape {points.shape}")
    pts = np.ascontiguousarray(points)
    h, w = (pts.shape if pts.ndim == 2 else (1, pts.size))
    fields = []
    orders: set[bool] = set()
    for name in pts.dtype.names:
        ft, off = pts.dtype.fields[name][:2]
        count = 1
        if ft.subdtype is not None:
            ft, shape = ft.subdtype
            count = int(np.prod(shape))
        key = ft.str[1:]
        if ft.names is not None or key not in _DTYPE_TO_POINTFIELD:
            raise DecodeError(where, f"field {name!r}: dtype {ft} has no PointField type")
        if ft.itemsize > 1:
            orders.add(ft.byteorder == ">" or (ft.byteorder == "=" and _HOST_BIG))
        fields.append({"name": name, "offset": int(off), "datatype": _DTYPE_TO_POINTFIELD[key], "count": count})
    if len(orders) > 1:
        raise DecodeError(where, "fields mix big- and little-endian byte orders; PointCloud2 has one is_bigendian")
    step = pts.dtype.itemsize
    return {"height": int(h), "width": int(w), "fields": fields, "is_bigendian": bool(orders and orders.pop()),
            "point_step": int(step), "row_step": int(step * w), "data": pts.reshape(-1).view(np.uint8),
            "is_dense": cloud_is_dense(pts)}


def fill_pointcloud2(msg: Any, points: np.ndarray, point_field_type: Any, header: Any = None) -> Any:
    """Fill an (rclpy or rosbags) PointCloud2 from a structured array; returns ``msg``.

    ``point_field_type`` is the PointField class of the same family (rclpy ``sensor_msgs.msg.PointField`` or
    ``typestore.types['sensor_msgs/msg/PointField']``). Layout rules are :func:`array_to_pointcloud2_fields`':
    [N] or (height, width) arrays, sub-array fields -> ``count > 1``, ``is_dense`` from all float fields.
    """
    f = array_to_pointcloud2_fields(points)
    msg.fields = [point_field_type(name=d["name"], offset=d["offset"], datatype=d["datatype"], count=d["count"])
                  for d in f["fields"]]
    for k in ("height", "width", "is_bigendian", "point_step", "row_step", "is_dense"):
        setattr(msg, k, f[k])
    _assign_bytes(msg, f["data"])
    if header is not None:
        msg.header = header
    return msg


def decode_any(msg: Any, topic: str = "", require: Sequence[str] = ()) -> tuple[np.ndarray, str]:
    """Any sensor message the node takes -> (array, encoding), dispatching on its fields (duck-typed):
    PointCloud2 (``fields``) -> structured array, "pointcloud2"; CompressedImage (``format``) -> array,
    "rgb8"/"mono8"/"16UC1"/"32FC1"; Image -> array, its encoding. Feeds ``SensorFrontend`` directly."""
    if hasattr(msg, "fields") and hasattr(msg, "point_step"):
        return pointcloud2_to_array(msg, topic, require=require), "pointcloud2"
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        arr = compressed_image_to_numpy(msg, topic)
        if arr.dtype == np.float32:
            return arr, "32FC1"
        if arr.dtype == np.uint16:
            return arr, "16UC1" if arr.ndim == 2 else "rgb16"
        return arr, "rgb8" if arr.ndim == 3 else "mono8"
    return image_to_numpy(msg, topic), str(getattr(msg, "encoding", ""))


# ---- camera info, stamps --------------------------------------------------------------------------------------

def camera_info_to_camera(msg: Any, topic: str = "") -> Any:
    """sensor_msgs/CameraInfo -> :class:`equiseg_ros.sensors.geometry.CameraModel` (K, P when non-zero, size).

    Distortion (``d``) is not applied: the projection uses ``P`` (rectified pixels), so the image the LiDAR is
    projected onto should be the rectified one (``image_rect``), as in image_geometry's ``project3dToPixel``.
    """
    from equiseg_ros.sensors.geometry import CameraModel  # owned by the sensors/datasets code

    h, w = _check_dims(msg, topic)
    k = np.asarray(_field(msg, "k"), np.float64).reshape(-1)
    p = np.asarray(_field(msg, "p"), np.float64).reshape(-1)
    if k.size != 9 or not np.isfinite(k).all() or k[0] <= 0 or k[4] <= 0:
        raise DecodeError(topic, f"camera_info: K must be 9 finite values with fx, fy > 0, got {k.tolist()}")
    if h <= 0 or w <= 0:
        raise DecodeError(topic, f"camera_info: image size {w}x{h} must be positive")
    if p.size not in (0, 12) or not np.isfinite(p).all():
        raise DecodeError(topic, f"camera_info: P must be 12 finite values, got {p.size}")
    return CameraModel.from_camera_info(k.tolist(), p.tolist() if p.size == 12 else None, int(w), int(h))


def _field(msg: Any, name: str) -> Any:
    """A CameraInfo array field: ROS 2 spells it lower-case (``k``), ROS 1 bags upper-case (``K``)."""
    if hasattr(msg, name):
        return getattr(msg, name)
    return getattr(msg, name.upper(), ())


def stamp_to_sec(header_or_stamp: Any) -> float:
    """builtin_interfaces/Time (or a Header carrying one) -> float seconds."""
    st = getattr(header_or_stamp, "stamp", header_or_stamp)
    return float(getattr(st, "sec", 0)) + float(getattr(st, "nanosec", 0)) * 1e-9


def stamp_to_ns(header_or_stamp: Any) -> int:
    """builtin_interfaces/Time (or a Header carrying one) -> integer nanoseconds (exact, for matching stamps)."""
    st = getattr(header_or_stamp, "stamp", header_or_stamp)
    return int(getattr(st, "sec", 0)) * 1_000_000_000 + int(getattr(st, "nanosec", 0))


def header_fields(msg: Any) -> Mapping[str, Any]:
    """frame_id and float stamp of a message's header (for logs and the synchroniser)."""
    hdr = getattr(msg, "header", None)
    return {"frame_id": str(getattr(hdr, "frame_id", "")), "stamp": stamp_to_sec(hdr) if hdr is not None else 0.0}
