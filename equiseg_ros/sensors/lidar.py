"""Point clouds (LiDAR, radar) -> the 3-channel 8-bit images the models see. Numpy only.

The same function prepares the synthetic and MUSES training data and the ROS node's live input, so a vehicle and a
dataset feed the model identically. Every encoding reserves 0 for "no return": a pixel without a point is
(0, 0, 0) and every channel of a hit is >= 1 (except the radar height channel, which is always 0, as in MUSES).

Encodings (r = Euclidean range in the sensor frame, i = intensity, z = height in the sensor frame, metres):

``lidar_image`` (DeLiVER-style, our definition; the synthetic data and the node use it)
    ch0 = 255 - 254 * min(r, 100) / 100   (near is bright: 0 m -> 255, >= 100 m -> 1)
    ch1 = 1 + 254 * clip(i / 1.0, 0, 1)     (intensity as reflectance in [0, 1])
    ch2 = 1 + 254 * clip((z + 3) / 6, 0, 1) (height -3 m -> 1, +3 m -> 255; 0 m -> 128)

``lidar_rih`` (MUSES SDK channels: range, intensity, height; fixed 8-bit scales instead of per-image min-max)
    ch0 = 1 + 254 * min(r, 100) / 100       (range 0..100 m)
    ch1 = 1 + 254 * clip(i / 255, 0, 1)     (MUSES intensity 0..255)
    ch2 = 1 + 254 * clip((z + 5) / 10, 0, 1) (height -5..+5 m in the LiDAR frame)

``radar_rih`` (MUSES radar: the SDK puts every radar point at ground level and writes height 0)
    ch0 = 1 + 254 * min(r, 150) / 150       (the SDK keeps radar points up to 150 m)
    ch1 = 1 + 254 * clip(i / 255, 0, 1)     (radar FFT magnitude, uint8 in the raw polar image)
    ch2 = 0

Values are rounded to the nearest integer. ``dilation`` is the side of a square kernel (MUSES: 2 for LiDAR, 10 for
radar); overlapping grown points keep the nearest one (see ``geometry.dilate_nearest``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from equiseg_ros.sensors.geometry import CameraModel, dilate_nearest, project_points, zbuffer_nearest

# (range max, intensity max, height min, height max, near_is_bright, height channel used)
ENCODINGS: dict[str, tuple[float, float, float, float, bool, bool]] = {
    "lidar_image": (100.0, 1.0, -3.0, 3.0, True, True),
    "lidar_rih": (100.0, 255.0, -5.0, 5.0, False, True),
    "radar_rih": (150.0, 255.0, -5.0, 5.0, False, False),
}


def _check_encoding(encoding: str) -> tuple[float, float, float, float, bool, bool]:
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding: unknown {encoding!r}; known: {sorted(ENCODINGS)}")
    return ENCODINGS[encoding]


def encode_rih(range_m: np.ndarray, intensity: np.ndarray, height_m: np.ndarray, encoding: str) -> np.ndarray:
    """Per-point (range, intensity, height) -> uint8 [..., 3] in ``encoding`` (hits only; no zero handling)."""
    r_max, i_max, h_min, h_max, near_bright, use_h = _check_encoding(encoding)
    r = np.clip(np.asarray(range_m, np.float32) / r_max, 0.0, 1.0)
    c0 = 255.0 - 254.0 * r if near_bright else 1.0 + 254.0 * r
    c1 = 1.0 + 254.0 * np.clip(np.asarray(intensity, np.float32) / i_max, 0.0, 1.0)
    if use_h:
        c2 = 1.0 + 254.0 * np.clip((np.asarray(height_m, np.float32) - h_min) / (h_max - h_min), 0.0, 1.0)
    else:
        c2 = np.zeros_like(c0)
    return np.rint(np.stack([c0, c1, c2], axis=-1)).astype(np.uint8)


def decode_rih(image: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of ``encode_rih`` up to 8-bit quantisation: (range, intensity, height, hit mask)."""
    r_max, i_max, h_min, h_max, near_bright, use_h = _check_encoding(encoding)
    img = np.asarray(image, np.float32)
    hit = img[..., 0] > 0
    r = (255.0 - img[..., 0]) / 254.0 if near_bright else (img[..., 0] - 1.0) / 254.0
    i = (img[..., 1] - 1.0) / 254.0 * i_max
    h = (img[..., 2] - 1.0) / 254.0 * (h_max - h_min) + h_min if use_h else np.zeros_like(r)
    return np.where(hit, r * r_max, 0), np.where(hit, i, 0), np.where(hit, h, 0), hit


def metric_rih_to_image(rih: np.ndarray, encoding: str) -> np.ndarray:
    """A float [H, W, 3] (range, intensity, height) image as the MUSES SDK saves it (all-zero = empty) -> uint8."""
    rih = np.asarray(rih, np.float32)
    hit = rih[..., 0] > 0
    out = encode_rih(rih[..., 0], rih[..., 1], rih[..., 2], encoding)
    out[~hit] = 0
    return out


def lidar_to_image(points: np.ndarray, T_cam_from_lidar: Any, camera: CameraModel, encoding: str = "lidar_image",
                   dilation: int = 0, min_range: float = 0.0, max_range: float | None = None) -> np.ndarray:
    """Project a point cloud [N, >=3] (x, y, z[, intensity]) in the sensor frame to a uint8 [H, W, 3] image.

    Range and height are measured in the sensor frame; the camera-frame depth only decides which point wins a
    pixel. Points without an intensity column get intensity 0. ``min_range``/``max_range`` drop points by range
    (the MUSES SDK drops LiDAR points closer than 1 m and radar points beyond 150 m).
    """
    _check_encoding(encoding)
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points: expected [N, >=3] (x, y, z[, intensity]), got shape {pts.shape}")
    pts = pts[np.all(np.isfinite(pts[:, :3]), axis=1)]
    rng = np.sqrt(np.sum(pts[:, :3].astype(np.float64) ** 2, axis=1))
    keep = rng >= min_range
    if max_range is not None:
        keep &= rng <= max_range
    if not keep.all():
        pts, rng = pts[keep], rng[keep]
    u, v, depth, idx = project_points(pts[:, :3], T_cam_from_lidar, camera)
    inten = pts[idx, 3] if pts.shape[1] > 3 else np.zeros(len(idx))
    enc = encode_rih(rng[idx], inten, pts[idx, 2], encoding)
    image, hit = zbuffer_nearest(u, v, depth, enc, camera.height, camera.width)
    if dilation > 1:
        zimg, _ = zbuffer_nearest(u, v, depth, depth, camera.height, camera.width)
        image, _, hit = dilate_nearest(image, zimg[..., 0], hit, dilation)
    return image.astype(np.uint8)
