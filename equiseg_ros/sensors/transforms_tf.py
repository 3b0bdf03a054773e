"""Extrinsics as 4x4 matrices: from node parameters, or from a tf ``geometry_msgs/TransformStamped`` (duck-typed).

No ROS import: a TransformStamped (rclpy or rosbags) is read through its fields ``transform.translation.{x,y,z}``
and ``transform.rotation.{x,y,z,w}``. tf semantics: ``lookup_transform(target, source)`` returns the transform that
maps points in ``source`` into ``target``, i.e. ``T_target_from_source`` in the naming of ``sensors/geometry.py``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from equiseg_ros.sensors.geometry import transform_from_quaternion

__all__ = ["transform_to_matrix", "transform_stamped_to_matrix", "matrix_to_translation_quaternion",
           "extrinsic_from_param", "invert_transform", "lookup_extrinsic"]


def _xyz(obj: Any, names: str, where: str) -> list[float]:
    try:
        return [float(getattr(obj, n)) for n in names]
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: expected fields {list(names)} ({exc})") from None


def transform_to_matrix(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform (translation + rotation quaternion) -> 4x4 float64."""
    t = _xyz(getattr(transform, "translation", None), "xyz", "transform.translation")
    q = _xyz(getattr(transform, "rotation", None), "xyzw", "transform.rotation")
    return transform_from_quaternion(t, q)


def transform_stamped_to_matrix(msg: Any) -> np.ndarray:
    """geometry_msgs/TransformStamped -> ``T_{header.frame_id}_from_{child_frame_id}`` (4x4 float64)."""
    return transform_to_matrix(getattr(msg, "transform", None))


def matrix_to_translation_quaternion(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4x4 -> (translation [3], unit quaternion [x, y, z, w] with w >= 0). Inverse of ``transform_from_quaternion``."""
    T = np.asarray(T, np.float64)
    R = T[:3, :3]
    tr = float(np.trace(R))
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(max(1.0 + R[i, i] - R[j, j] - R[k, k], 1e-12))
        q = [0.0, 0.0, 0.0, (R[k, j] - R[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
    qa = np.asarray(q)
    qa /= np.linalg.norm(qa)
    if qa[3] < 0:
        qa = -qa
    return T[:3, 3].copy(), qa


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (R^T, -R^T t), exact for rotations."""
    T = np.asarray(T, np.float64)
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def extrinsic_from_param(value: Any, name: str = "extrinsic") -> np.ndarray:
    """A 4x4 from a node/YAML parameter: 16 numbers (row-major 4x4), 7 numbers (tx ty tz qx qy qz qw),
    a nested 4x4 list, or a mapping ``{translation: [3], rotation|quaternion: [x, y, z, w]}``.

    The last row of a 4x4 must be (0, 0, 0, 1) and its rotation orthonormal; errors name ``name``.
    """
    if isinstance(value, Mapping):
        if "matrix" in value:
            return extrinsic_from_param(value["matrix"], name)
        rot = value.get("rotation", value.get("quaternion"))
        if "translation" not in value or rot is None:
            raise ValueError(f"{name}: mapping needs 'translation' and 'rotation' (x, y, z, w) or 'matrix'")
        return extrinsic_from_param(list(value["translation"]) + list(rot), name)
    arr = np.asarray(value, np.float64)
    if arr.size == 7:
        return transform_from_quaternion(arr[:3], arr[3:])
    if arr.size != 16:
        raise ValueError(f"{name}: expected 16 numbers (4x4) or 7 (tx ty tz qx qy qz qw), got {arr.size}")
    T = arr.reshape(4, 4)
    if not np.allclose(T[3], [0, 0, 0, 1]):
        raise ValueError(f"{name}: last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    if not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-4):
        raise ValueError(f"{name}: rotation part is not orthonormal")
    return T


def lookup_extrinsic(tf_buffer: Any, target_frame: str, source_frame: str, time: Any = None,
                     timeout: Any = None) -> np.ndarray:
    """``T_target_from_source`` from a tf2 buffer (duck-typed ``lookup_transform``); only usable where tf2_ros is.

    ``time``/``timeout`` are passed through (rclpy ``Time``/``Duration``); None means latest / the buffer's default.
    """
    args: list[Any] = [target_frame, source_frame]
    if time is not None:
        args.append(time)
    kwargs = {"timeout": timeout} if timeout is not None else {}
    return transform_stamped_to_matrix(tf_buffer.lookup_transform(*args, **kwargs))


def compose(*transforms: Sequence[Any]) -> np.ndarray:
    """Product of 4x4 transforms, left to right (``compose(T_a_b, T_b_c) = T_a_c``)."""
    out = np.eye(4)
    for T in transforms:
        out = out @ np.asarray(T, np.float64)
    return out
