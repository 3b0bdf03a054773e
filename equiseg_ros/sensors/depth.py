"""Metric depth -> 3-channel 8-bit depth representations. Numpy only, vectorised.

Invalid depth (NaN, inf, <= 0) becomes 0 in every channel; valid pixels are >= 1 in channel 0.

``depth8`` (log-scaled depth, repeated to 3 channels)
    v = 1 + 254 * (1 - log(d / 1 m) / log(200 m / 1 m)), d clipped to [1, 200] m: 1 m -> 255, 10 m -> 145,
    50 m -> 76, 200 m -> 1. Log spacing keeps resolution near the vehicle where it matters.

``hha`` (an HHA approximation from metric depth and intrinsics; Gupta et al.'s encoding without the gravity
estimation step: the camera is assumed level, its y axis along gravity)
    ch0 horizontal disparity = 1 + 254 * clip(1 m / d, 0, 1)       (1 m -> 255, 10 m -> 26)
    ch1 height above ground  = 1 + 254 * clip((camera_height - Y + 1) / 21, 0, 1)  with Y the camera-frame y
                               (down) of the back-projected pixel: -1 m -> 1, ground 0 m -> 13, 20 m -> 255
    ch2 angle of the surface normal with "up" = 1 + 254 * angle / 180 deg  (ground ~1, walls ~128)
    Normals come from the cross product of the back-projected neighbours (central differences), so the whole
    image costs a few dozen array operations (tens of ms at 512x512).
"""
from __future__ import annotations

import numpy as np

from equiseg_ros.sensors.geometry import CameraModel

DEPTH8_MIN_M = 1.0
DEPTH8_MAX_M = 200.0
HHA_HEIGHT_RANGE_M = (-1.0, 20.0)


def depth_from_millimetres(depth_mm: np.ndarray) -> np.ndarray:
    """uint16 millimetres (ROS 16UC1; 0 = no measurement) -> float32 metres with NaN where invalid."""
    d = np.asarray(depth_mm)
    out = d.astype(np.float32) / 1000.0
    out[d == 0] = np.nan
    return out


def valid_depth(depth_m: np.ndarray) -> np.ndarray:
    d = np.asarray(depth_m, np.float32)
    with np.errstate(invalid="ignore"):
        return np.isfinite(d) & (d > 0)


def default_camera(height: int, width: int) -> CameraModel:
    """The camera assumed when none is given: 90 degree horizontal field of view, centred principal point."""
    f = width / 2.0
    return CameraModel.pinhole(f, f, (width - 1) / 2.0, (height - 1) / 2.0, width, height)


def _grad(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences along u (columns) and v (rows), one-sided at the borders."""
    gu = np.empty_like(a)
    gu[:, 1:-1] = (a[:, 2:] - a[:, :-2]) * 0.5
    gu[:, 0] = a[:, 1] - a[:, 0]
    gu[:, -1] = a[:, -1] - a[:, -2]
    gv = np.empty_like(a)
    gv[1:-1] = (a[2:] - a[:-2]) * 0.5
    gv[0] = a[1] - a[0]
    gv[-1] = a[-1] - a[-2]
    return gu, gv


def depth8(depth_m: np.ndarray) -> np.ndarray:
    """The ``depth8`` channel (uint8 [H, W]), see the module docstring."""
    ok = valid_depth(depth_m)
    d = np.clip(np.where(ok, depth_m, DEPTH8_MIN_M).astype(np.float32), DEPTH8_MIN_M, DEPTH8_MAX_M)
    v = 1.0 + 254.0 * (1.0 - np.log(d / DEPTH8_MIN_M) / np.log(DEPTH8_MAX_M / DEPTH8_MIN_M))
    return np.where(ok, np.rint(v), 0).astype(np.uint8)


def hha(depth_m: np.ndarray, camera: CameraModel | None = None, camera_height: float = 1.5) -> np.ndarray:
    """The HHA approximation (uint8 [H, W, 3]), see the module docstring."""
    d = np.asarray(depth_m, np.float32)
    H, W = d.shape
    cam = camera or default_camera(H, W)
    if (cam.width, cam.height) != (W, H):
        cam = cam.scaled(W, H)
    ok = valid_depth(d)
    z = np.where(ok, d, np.nan)
    fx, fy, cx, cy = cam.K[0, 0], cam.K[1, 1], cam.K[0, 2], cam.K[1, 2]
    us = (np.arange(W, dtype=np.float32) - cx) / fx
    vs = (np.arange(H, dtype=np.float32) - cy) / fy
    X = z * us[None, :]
    Y = z * vs[:, None]
    disp = np.clip(1.0 / np.where(ok, d, 1.0), 0.0, 1.0)
    lo, hi = HHA_HEIGHT_RANGE_M
    height = np.clip((camera_height - Y - lo) / (hi - lo), 0.0, 1.0)
    # Surface normal = d(P)/du x d(P)/dv, P the back-projected point, by central differences (one-sided at edges).
    gx_u, gx_v = _grad(X)
    gy_u, gy_v = _grad(Y)
    gz_u, gz_v = _grad(z)
    nx = gy_u * gz_v - gz_u * gy_v
    ny = gz_u * gx_v - gx_u * gz_v
    nz = gx_u * gy_v - gy_u * gx_v
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_up = np.abs(ny) / np.sqrt(nx * nx + ny * ny + nz * nz)  # "up" is -y; the normal's sign is arbitrary
    cos_up = np.nan_to_num(cos_up, nan=0.0)
    angle = np.degrees(np.arccos(np.clip(cos_up, 0.0, 1.0)))
    c = np.stack([disp, np.nan_to_num(height), angle / 180.0], axis=-1)
    out = np.rint(1.0 + 254.0 * np.clip(c, 0.0, 1.0)).astype(np.uint8)
    out[~ok] = 0
    return out


def depth_to_image(depth_m: np.ndarray, representation: str = "hha", camera: CameraModel | None = None,
                   camera_height: float = 1.5) -> np.ndarray:
    """Metric depth [H, W] (NaN/0 = invalid) -> uint8 [H, W, 3] in ``representation`` ("hha" or "depth8")."""
    d = np.asarray(depth_m)
    if d.ndim == 3 and d.shape[2] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ValueError(f"depth: expected [H, W] metres, got shape {d.shape}")
    if d.dtype == np.uint16:
        d = depth_from_millimetres(d)
    if representation == "depth8":
        return np.repeat(depth8(d)[..., None], 3, axis=2)
    if representation == "hha":
        return hha(d, camera, camera_height)
    raise ValueError(f"representation: unknown depth representation {representation!r}; known: ['depth8', 'hha']")
