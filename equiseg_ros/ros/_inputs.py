"""Decoded sensor messages -> the model input ``x [1, M, 3, H, W]`` and ``present [1, M]``.

The conversions are the ``equiseg_ros.sensors`` functions that prepared the training data (metric depth -> HHA /
depth8, point cloud -> LiDAR/radar image, events -> event frame), so a vehicle and a replayed dataset feed the model
identically; this module only decides which one applies to a decoded message and resizes to the model input.
A modality whose conversion fails is absent in that frame (zero-filled and ``present`` false) with a reason.
"""
from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import cv2
import numpy as np

from equiseg_ros.sensors.depth import depth_from_millimetres, depth_to_image
from equiseg_ros.sensors.events import events_to_frame
from equiseg_ros.sensors.geometry import CameraModel
from equiseg_ros.sensors.lidar import ENCODINGS as POINT_ENCODINGS
from equiseg_ros.sensors.lidar import lidar_to_image
from equiseg_ros.spec import ModelSpec

DEPTH_REPRESENTATIONS = ("hha", "depth8")


class ConversionError(ValueError):
    """A decoded message cannot be turned into its modality's representation (the reason says why)."""


def health_kind(representation: str, kind: str, data: np.ndarray) -> str:
    """Which HealthMonitor checks apply: camera images, metric depth, point clouds, events, or other."""
    if kind == "pointcloud2":
        return "events" if representation == "event_frame" else "pointcloud"
    if representation == "rgb8":
        return "image"
    if representation in DEPTH_REPRESENTATIONS and (data.ndim == 2 or data.shape[-1] == 1) and data.dtype != np.uint8:
        return "depth"
    if representation == "event_frame":
        return "events"
    return "other"


def to_representation(representation: str, kind: str, data: np.ndarray, encoding: str,
                      camera: CameraModel | None, extrinsic: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """One decoded message -> uint8 [H, W, 3] in ``representation`` at the model input ``size`` (H, W)."""
    h, w = size
    if kind == "pointcloud2" and representation == "event_frame":
        return _events_frame(data, camera, (h, w))
    if kind == "pointcloud2":
        if representation not in POINT_ENCODINGS:
            raise ConversionError(f"a point cloud cannot feed representation {representation!r} "
                                  f"(point cloud representations: {sorted(POINT_ENCODINGS)} and event_frame)")
        if camera is None:
            raise ConversionError("waiting for camera_info (needed to project the point cloud)")
        names = data.dtype.names or ()
        cols = [data["x"], data["y"], data["z"]] + ([data["intensity"]] if "intensity" in names else [])
        pts = np.stack([np.asarray(c, np.float32).reshape(-1) for c in cols], axis=1)
        T = np.eye(4) if extrinsic is None else extrinsic
        return lidar_to_image(pts, T, camera.scaled(w, h), encoding=representation)
    img = data
    if representation in DEPTH_REPRESENTATIONS and (img.ndim == 2 or img.shape[-1] == 1) and img.dtype != np.uint8:
        depth = depth_from_millimetres(img) if img.dtype == np.uint16 else np.asarray(img, np.float32)
        depth = cv2.resize(np.ascontiguousarray(depth.reshape(depth.shape[:2])), (w, h),
                           interpolation=cv2.INTER_NEAREST)
        cam = camera.scaled(w, h) if camera is not None else None
        return depth_to_image(depth, representation, cam)
    if img.dtype != np.uint8:
        raise ConversionError(f"expected an 8-bit image already in representation {representation!r} (or metric "
                              f"depth for hha/depth8), got dtype {img.dtype} with encoding {encoding!r}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    if img.shape[2] != 3:
        raise ConversionError(f"expected 1, 3 or 4 channels, got {img.shape[2]} (encoding {encoding!r})")
    if encoding in ("bgr8", "bgra8"):
        img = img[:, :, ::-1]
    if img.shape[:2] != (h, w):
        # camera images interpolate; sparse projected images (LiDAR, radar, events) must not smear their hits
        interp = cv2.INTER_LINEAR if representation == "rgb8" else cv2.INTER_NEAREST
        img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=interp)
    return img


def _field(data: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    for n in names:
        if n in (data.dtype.names or ()):
            return np.asarray(data[n]).reshape(-1)
    raise ConversionError(f"event cloud needs a field named one of {list(names)}; has {list(data.dtype.names or ())}")


def _events_frame(data: np.ndarray, camera: CameraModel | None, size: tuple[int, int]) -> np.ndarray:
    """Raw events as a PointCloud2 (x, y in the camera's pixels, t seconds, polarity) -> event frame at ``size``.

    Same accumulation as the training data (``sensors.events.events_to_frame``: counts per polarity over the last
    30 ms before the newest event); coordinates are scaled from the CameraInfo resolution to the model's.
    """
    if camera is None:
        raise ConversionError("waiting for camera_info (the event coordinates are in its pixels)")
    h, w = size
    x = _field(data, ("x",)).astype(np.float64) * (w / camera.width)
    y = _field(data, ("y",)).astype(np.float64) * (h / camera.height)
    t = _field(data, ("t", "time", "ts", "timestamp")).astype(np.float64)
    p = _field(data, ("polarity", "p", "pol"))
    return events_to_frame(np.floor(x), np.floor(y), t, p, h, w)


def assemble(spec: ModelSpec, size: tuple[int, int], items: dict[str, Any], camera: CameraModel | None,
             extrinsics: dict[str, np.ndarray | None], pool: Executor | None = None
             ) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Synchronised payloads (``Decoded`` or None per modality) -> x, present and reasons for failed conversions.

    With ``pool`` the modalities are converted concurrently (the numpy work releases the GIL: a LiDAR projection and
    an HHA image then overlap instead of adding up).
    """
    h, w = size
    m = spec.num_modalities
    x = np.zeros((1, m, 3, h, w), np.float32)
    present = np.zeros((1, m), np.bool_)
    failed: dict[str, str] = {}

    def one(i: int) -> None:
        mod = spec.modalities[i]
        item = items.get(mod.name)
        if item is None:
            return
        try:
            img = to_representation(mod.representation, item.kind, item.data, item.encoding, camera,
                                    extrinsics.get(mod.name), (h, w))
        except (ConversionError, ValueError, KeyError) as exc:
            failed[mod.name] = str(exc)
            return
        x[0, i] = spec.normalize(mod.name, img)
        present[0, i] = True

    todo = [i for i, mod in enumerate(spec.modalities) if items.get(mod.name) is not None]
    if pool is not None and len(todo) > 1:
        for f in [pool.submit(one, i) for i in todo]:
            f.result()
    else:
        for i in todo:
            one(i)
    return x, present, failed
