"""Numpy-only camera geometry shared by dataset preparation, the bag converter and the ROS node.

Conventions (the ROS / OpenCV ones): the camera frame is optical (x right, y down, z forward); pixel (u, v) has its
centre at integer coordinates, u along the width, v along the height; a 3-D point projects with ``P @ [X, Y, Z, 1]``
(``P = [K | 0]`` when no projection matrix is given) and lands on the pixel ``round(x / w)``. Transforms are 4x4
homogeneous matrices named ``T_a_from_b`` (they map coordinates in frame ``b`` to frame ``a``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass
class CameraModel:
    """Pinhole camera: intrinsics ``K`` (3x3), image size and an optional ROS ``P`` (3x4, rectified)."""

    K: np.ndarray
    width: int
    height: int
    P: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, np.float64).reshape(3, 3)
        if self.P is not None:
            self.P = np.asarray(self.P, np.float64).reshape(3, 4)
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"CameraModel: width/height must be positive, got {self.width}x{self.height}")

    @classmethod
    def from_camera_info(cls, k: Sequence[float], p: Sequence[float] | None, width: int, height: int
                         ) -> "CameraModel":
        """From sensor_msgs/CameraInfo fields ``k`` (9, row-major) and ``p`` (12); an all-zero ``p`` is ignored."""
        if len(k) != 9:
            raise ValueError(f"CameraInfo.k: expected 9 values, got {len(k)}")
        P = None
        if p is not None:
            if len(p) != 12:
                raise ValueError(f"CameraInfo.p: expected 12 values, got {len(p)}")
            if np.any(np.asarray(p, np.float64) != 0):
                P = np.asarray(p, np.float64).reshape(3, 4)
        return cls(np.asarray(k, np.float64).reshape(3, 3), width, height, P)

    @classmethod
    def pinhole(cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> "CameraModel":
        return cls(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64), width, height)

    def projection_matrix(self) -> np.ndarray:
        """3x4 matrix used to project camera-frame points: ``P`` if set, else ``[K | 0]``."""
        if self.P is not None:
            return self.P.copy()
        return np.hstack([self.K, np.zeros((3, 1))])

    def scaled(self, width: int, height: int) -> "CameraModel":
        """The same camera for an image resized to ``width`` x ``height`` (pixel-centre convention)."""
        sx, sy = width / self.width, height / self.height
        S = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
        return CameraModel(S @ self.K, width, height, None if self.P is None else S @ self.P)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"K": self.K.tolist(), "width": self.width, "height": self.height}
        if self.P is not None:
            d["P"] = self.P.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CameraModel":
        try:
            return cls(np.asarray(d["K"]), d["width"], d["height"], None if d.get("P") is None else np.asarray(d["P"]))
        except KeyError as exc:
            raise ValueError(f"camera: missing field {exc.args[0]!r}") from None


def transform_from_quaternion(translation: Sequence[float], quaternion: Sequence[float]) -> np.ndarray:
    """4x4 transform from a translation (x, y, z) and a unit quaternion in ROS order (x, y, z, w)."""
    x, y, z, w = (float(v) for v in quaternion)
    n = x * x + y * y + z * z + w * w
    if n < 1e-12:
        raise ValueError("quaternion: zero norm")
    s = 2.0 / n
    T = np.eye(4)
    T[:3, :3] = [
        [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
        [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
        [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
    ]
    T[:3, 3] = np.asarray(translation, np.float64).reshape(3)
    return T


def as_matrix(obj: Any) -> np.ndarray:
    """A 4x4 transform from a 4x4 array(-like) or a ``(translation, quaternion_xyzw)`` pair."""
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return transform_from_quaternion(obj[0], obj[1])
    T = np.asarray(obj, np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"transform: expected a 4x4 matrix or (translation, quaternion), got shape {T.shape}")
    return T


def transform_points(points_xyz: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to [N, 3] points (float64 result)."""
    p = np.asarray(points_xyz, np.float64)[:, :3]
    return p @ T[:3, :3].T + T[:3, 3]


def project_points(points_xyz: np.ndarray, T_cam_from_sensor: Any, camera: CameraModel
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Project sensor-frame points into the camera image.

    Returns ``(u, v, depth, index)`` for the K points in front of the camera (camera z > 0) that land inside the
    image: integer pixel coordinates, the camera-frame z (metres) and the index of each kept point in the input.
    """
    pts = np.asarray(points_xyz)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points: expected [N, >=3], got shape {pts.shape}")
    T = as_matrix(T_cam_from_sensor)
    cam = transform_points(pts, T)
    z = cam[:, 2]
    front = np.flatnonzero(z > 1e-6)
    cam = cam[front]
    P = camera.projection_matrix()
    uvw = cam @ P[:, :3].T + P[:, 3]
    w = uvw[:, 2]
    ok = w > 1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        uf = np.floor(uvw[:, 0] / w + 0.5)
        vf = np.floor(uvw[:, 1] / w + 0.5)
    ok &= (uf >= 0) & (uf < camera.width) & (vf >= 0) & (vf < camera.height)
    return (uf[ok].astype(np.int64), vf[ok].astype(np.int64), cam[ok, 2], front[ok])


def zbuffer_nearest(u: np.ndarray, v: np.ndarray, depth: np.ndarray, values: np.ndarray, height: int, width: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Scatter per-point ``values`` [K, C] into an image keeping, per pixel, the point with the smallest depth.

    Returns ``(image float32 [H, W, C], hit bool [H, W])``. Vectorised: one stable sort by depth, then the first
    point of each pixel wins.
    """
    vals = np.asarray(values, np.float32)
    if vals.ndim == 1:
        vals = vals[:, None]
    image = np.zeros((height, width, vals.shape[1]), np.float32)
    hit = np.zeros((height, width), bool)
    if len(u) == 0:
        return image, hit
    order = np.argsort(np.asarray(depth), kind="stable")
    lin = (np.asarray(v, np.int64) * width + np.asarray(u, np.int64))[order]
    _, first = np.unique(lin, return_index=True)
    keep = order[first]
    flat = image.reshape(-1, vals.shape[1])
    flat[lin[first]] = vals[keep]
    hit.reshape(-1)[lin[first]] = True
    return image, hit


def dilate_nearest(image: np.ndarray, depth: np.ndarray, hit: np.ndarray, kernel: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grow sparse projected points into ``kernel`` x ``kernel`` blocks, the nearest point winning overlaps.

    Unlike a per-channel max filter this keeps the channels of one point together (range, intensity and height of
    one return). The kernel is anchored like OpenCV's (centre ``kernel // 2``). ``kernel`` <= 1 returns the inputs.
    """
    if kernel <= 1:
        return image, depth, hit
    H, W = hit.shape
    d = np.where(hit, depth, np.inf).astype(np.float32)
    best_d = d.copy()
    best = image.copy()
    a = kernel // 2
    # OpenCV: dst(y, x) = max over src(y + oy, x + ox), oy, ox in [-a, kernel - 1 - a]; here dy = -oy.
    for dy in range(a - kernel + 1, a + 1):
        for dx in range(a - kernel + 1, a + 1):
            if dy == 0 and dx == 0:
                continue
            # Source pixel (y - dy, x - dx) spreads to (y, x) when the kernel offset is (dy, dx).
            ys, yd = slice(max(0, -dy), H - max(0, dy)), slice(max(0, dy), H - max(0, -dy))
            xs, xd = slice(max(0, -dx), W - max(0, dx)), slice(max(0, dx), W - max(0, -dx))
            src = d[ys, xs]
            better = src < best_d[yd, xd]
            if not better.any():
                continue
            bd = best_d[yd, xd]
            bd[better] = src[better]
            bi = best[yd, xd]
            bi[better] = image[ys, xs][better]
    new_hit = np.isfinite(best_d)
    return best, np.where(new_hit, best_d, 0).astype(np.float32), new_hit
