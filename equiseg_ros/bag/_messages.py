"""Message construction for bags: numpy -> ``rosbags`` dataclasses of one typestore.

The field layout of images and point clouds comes from ``equiseg_ros.ros.codecs`` (``numpy_to_image_fields``,
``array_to_pointcloud2_fields``), the same code the node decodes with; this module only wraps those field dicts in
the typestore's classes and adds headers, CameraInfo, the static transform and the per-frame info record.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np
from rosbags.typesys.store import Typestore

from equiseg_ros.ros import codecs
from equiseg_ros.sensors.transforms_tf import matrix_to_translation_quaternion

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
STRING = "std_msgs/msg/String"
TF = "tf2_msgs/msg/TFMessage"


def split_ns(stamp_ns: int) -> tuple[int, int]:
    return int(stamp_ns) // 1_000_000_000, int(stamp_ns) % 1_000_000_000


def header(ts: Typestore, stamp_ns: int, frame_id: str) -> Any:
    sec, nsec = split_ns(stamp_ns)
    time = ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec)
    return ts.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def image(ts: Typestore, arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    f = codecs.numpy_to_image_fields(arr, encoding)
    return ts.types[IMAGE](header=header(ts, stamp_ns, frame_id), height=int(f["height"]), width=int(f["width"]),
                           encoding=str(f["encoding"]), is_bigendian=int(f["is_bigendian"]), step=int(f["step"]),
                           data=f["data"])


def pointcloud2(ts: Typestore, points: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """``points``: a structured array (e.g. x, y, z, intensity float32), one row = one point (unorganised)."""
    f = codecs.array_to_pointcloud2_fields(points)
    field_cls = ts.types["sensor_msgs/msg/PointField"]
    fields = [field_cls(name=str(x["name"]), offset=int(x["offset"]), datatype=int(x["datatype"]),
                        count=int(x["count"])) for x in f["fields"]]
    data = f["data"]
    return ts.types[POINTCLOUD2](header=header(ts, stamp_ns, frame_id), height=int(f["height"]), width=int(f["width"]),
                                 fields=fields, is_bigendian=bool(f["is_bigendian"]), point_step=int(f["point_step"]),
                                 row_step=int(f["row_step"]), data=data, is_dense=bool(f["is_dense"]))


def camera_info(ts: Typestore, k: Sequence[float], height: int, width: int, stamp_ns: int, frame_id: str,
                d: Sequence[float] = ()) -> Any:
    """Pinhole CameraInfo with K (row-major 3x3); P = [K | 0] (already rectified images, no distortion)."""
    k = [float(v) for v in np.asarray(k, np.float64).reshape(-1)]
    if len(k) != 9:
        raise ValueError(f"camera K: expected 9 numbers (3x3), got {len(k)}")
    p = [k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0]
    roi = ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return ts.types[CAMERA_INFO](header=header(ts, stamp_ns, frame_id), height=int(height), width=int(width),
                                 distortion_model="plumb_bob", d=np.asarray(list(d) or [0.0] * 5, np.float64),
                                 k=np.asarray(k, np.float64),
                                 r=np.asarray([1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], np.float64),
                                 p=np.asarray(p, np.float64), binning_x=0, binning_y=0, roi=roi)


def pinhole_k(height: int, width: int, fov_deg: float = 90.0) -> list[float]:
    """K of an ideal pinhole with the given horizontal field of view, principal point at the centre."""
    fx = width / 2.0 / np.tan(np.radians(fov_deg) / 2.0)
    return [fx, 0.0, width / 2.0, 0.0, fx, height / 2.0, 0.0, 0.0, 1.0]


def static_transform(ts: Typestore, matrix: np.ndarray, parent: str, child: str, stamp_ns: int) -> Any:
    """tf2_msgs/TFMessage with one transform parent<-child from a 4x4 matrix (for /tf_static)."""
    trans, q = matrix_to_translation_quaternion(np.asarray(matrix, np.float64).reshape(4, 4))
    t = ts.types
    tr = t["geometry_msgs/msg/Transform"](
        translation=t["geometry_msgs/msg/Vector3"](x=float(trans[0]), y=float(trans[1]), z=float(trans[2])),
        rotation=t["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))
    st = t["geometry_msgs/msg/TransformStamped"](header=header(ts, stamp_ns, parent), child_frame_id=child,
                                                 transform=tr)
    return t[TF](transforms=[st])


def frame_info(ts: Typestore, record: Mapping[str, Any]) -> Any:
    """Per-frame dataset facts (stamp, index, frame id, condition, corner case) as JSON in a std_msgs/String."""
    return ts.types[STRING](data=json.dumps(dict(record), sort_keys=True))
