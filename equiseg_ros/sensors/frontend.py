"""Decoded sensor data -> the model input, the same way for a vehicle and for a replayed dataset.

``SensorFrontend`` turns what the codecs decode (image arrays with their encoding, PointCloud2 structured arrays)
into each spec modality's representation with the functions that prepared the training data
(``sensors.depth``, ``sensors.lidar``, ``sensors.events``), at the sensor's native resolution, then resizes to the
model input with the training pipeline's rule (``sensors.resize.resize_modality``: bilinear for dense, nearest
for sparse representations). ``assemble`` stacks and normalises them into the model contract of DESIGN.md:
``x float32 [1, M, 3, H, W]`` and ``present bool [1, M]``, a missing or unconvertible modality zero-filled and absent.

What each representation accepts:

=================  ===========================================================================================
``rgb8``           8/16-bit mono/colour image (bgr8/bgra8 reordered to RGB by ``encoding``)
``hha``/``depth8`` metric depth: float [H, W] metres (32FC1) or uint16 [H, W] (16UC1, ``depth_scale`` m/unit);
                   a uint8 3-channel image is taken as already encoded
``lidar_*``,       PointCloud2 structured array with x, y, z[, intensity] in the sensor frame + camera model +
``radar_rih``      extrinsic ``T_cam_from_sensor``; float [H, W, 3] metric (range, intensity, height) images
                   (MUSES SDK layout) are encoded directly; uint8 3-channel passes through
``event_frame``    PointCloud2 of events (x, y, t, polarity) accumulated over ``event_window`` seconds before the
                   message stamp; uint8 3-channel event frames pass through
=================  ===========================================================================================
"""
from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from equiseg_ros.sensors.depth import depth_to_image
from equiseg_ros.sensors.events import events_to_frame
from equiseg_ros.sensors.geometry import CameraModel, as_matrix
from equiseg_ros.sensors.lidar import ENCODINGS as POINT_REPRESENTATIONS
from equiseg_ros.sensors.lidar import lidar_to_image, metric_rih_to_image
from equiseg_ros.sensors.resize import resize_modality
from equiseg_ros.spec import ModelSpec

__all__ = ["EVENT_POLARITY_FIELDS", "EVENT_TIME_FIELDS", "ModalityOptions", "RepresentationError", "SensorFrontend",
           "default_options", "health_kind"]

DEPTH_REPRESENTATIONS = ("hha", "depth8")
_BGR = ("bgr8", "bgra8", "bgr16", "bgra16")
EVENT_TIME_FIELDS = ("t", "ts", "time", "timestamp")  # accepted names of an event cloud's time field
EVENT_POLARITY_FIELDS = ("polarity", "p", "pol")  # ... and of its polarity field


class RepresentationError(ValueError):
    """Decoded data cannot become its modality's representation; ``modality`` and ``reason`` say why."""

    def __init__(self, modality: str, reason: str) -> None:
        self.modality = modality
        self.reason = reason
        super().__init__(f"{modality}: {reason}")


@dataclass(frozen=True)
class ModalityOptions:
    """How raw data of one modality is represented (must match how its training data was prepared)."""

    camera_height: float = 1.5  # hha: camera height above ground (m)
    depth_scale: float = 0.001  # 16UC1 depth units -> metres
    dilation: int = 0  # point clouds: square kernel growing each projected point (nearest wins)
    min_range: float = 0.0  # point clouds: drop points closer than this (m)
    max_range: float | None = None  # point clouds: drop points farther than this (m)
    event_window: float = 0.03  # events: accumulation window before the message stamp (s)
    event_size: tuple[int, int] | None = None  # events: sensor (width, height); default = camera size


def default_options(spec: ModelSpec) -> dict[str, ModalityOptions]:
    """Per-modality options matching the data preparation of the spec's dataset (see data/synthetic.py, muses.py)."""
    out: dict[str, ModalityOptions] = {}
    synthetic_like = spec.name in ("synthetic", "deliver")
    for m in spec.modalities:
        o = ModalityOptions()
        if m.representation == "lidar_image":
            o = replace(o, dilation=2)  # data/synthetic.py LIDAR_DILATION
        elif m.representation == "lidar_rih":
            o = replace(o, dilation=2, min_range=1.0)  # MUSES SDK: LiDAR kernel 2, points closer than 1 m dropped
        elif m.representation == "radar_rih":
            o = replace(o, dilation=10, max_range=150.0)  # MUSES SDK: radar kernel 10, up to 150 m
        elif m.representation == "event_frame":
            o = replace(o, event_window=0.05 if synthetic_like else 0.03)  # synthetic EVENT_DT / MUSES 30 ms
        out[m.name] = o
    extra = spec.extra.get("sensor_options", {}) if isinstance(spec.extra, dict) else {}
    for name, kw in extra.items():
        if name in out and isinstance(kw, Mapping):
            kw = dict(kw)
            if kw.get("event_size") is not None:
                kw["event_size"] = tuple(int(v) for v in kw["event_size"])
            out[name] = replace(out[name], **kw)
    return out


def health_kind(representation: str, data: np.ndarray) -> str:
    """Which ``HealthMonitor`` checks apply to decoded ``data`` feeding ``representation``."""
    a = np.asarray(data)
    if a.dtype.names is not None:
        return "events" if representation == "event_frame" else "pointcloud"
    if representation == "rgb8":
        return "image"
    if representation in DEPTH_REPRESENTATIONS and (a.ndim == 2 or a.shape[-1] == 1) and a.dtype != np.uint8:
        return "depth"
    if representation == "event_frame":
        return "events"
    return "other"


def _unpack(payload: Any) -> tuple[np.ndarray, str, float | None]:
    """(data, encoding, stamp) from an ndarray, a (data, encoding[, stamp]) tuple or an object with those fields."""
    if isinstance(payload, np.ndarray):
        return payload, "", None
    if isinstance(payload, tuple):
        data = payload[0]
        enc = payload[1] if len(payload) > 1 else ""
        st = payload[2] if len(payload) > 2 else None
        return np.asarray(data), str(enc or ""), None if st is None else float(st)
    data = getattr(payload, "data", None)
    if data is None:
        raise TypeError(f"cannot read data from a {type(payload).__name__} payload")
    stamp = getattr(payload, "stamp", None)
    if stamp is None:
        hdr = getattr(payload, "header", None)
        st = getattr(hdr, "stamp", None)
        if st is not None:
            stamp = float(getattr(st, "sec", 0)) + float(getattr(st, "nanosec", 0)) * 1e-9
    return np.asarray(data), str(getattr(payload, "encoding", "") or ""), None if stamp is None else float(stamp)


def _pick(names: tuple[str, ...], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in names), None)


class SensorFrontend:
    """Representations and model input for one spec, camera model and set of extrinsics."""

    def __init__(self, spec: ModelSpec, camera: CameraModel | None = None,
                 extrinsics: Mapping[str, Any] | None = None, options: Mapping[str, ModalityOptions] | None = None,
                 size: tuple[int, int] | None = None) -> None:
        self.spec = spec
        self.camera = camera
        self.extrinsics: dict[str, np.ndarray] = {k: as_matrix(v) for k, v in (extrinsics or {}).items()
                                                  if v is not None}
        self.options = default_options(spec)
        for k, v in (options or {}).items():
            if k not in self.options:
                raise ValueError(f"options: unknown modality {k!r}; spec has {list(spec.modality_names)}")
            self.options[k] = v
        self.size = tuple(int(s) for s in (size or spec.input_size))
        self._mean, self._std = spec.norm_arrays()
        self._inv = (1.0 / (255.0 * self._std)).astype(np.float32)  # (v / 255 - mean) / std = v * inv - mean/std
        self._shift = (self._mean / self._std).astype(np.float32)

    def set_camera(self, camera: CameraModel | None) -> None:
        self.camera = camera

    def set_extrinsic(self, modality: str, T_cam_from_sensor: Any) -> None:
        self.spec.modality(modality)
        self.extrinsics[modality] = as_matrix(T_cam_from_sensor)

    # ---- one modality ----------------------------------------------------------------------------------------
    def represent(self, modality: str, data: Any, encoding: str = "", stamp: float | None = None) -> np.ndarray:
        """Decoded data of ``modality`` -> uint8 [H, W, 3] in its representation at the model input size."""
        rep = self.spec.modality(modality).representation
        img = self._native(modality, rep, np.asarray(data), encoding, stamp)
        h, w = self.size
        out = resize_modality(img, rep, h, w)
        return np.ascontiguousarray(out)

    def _native(self, m: str, rep: str, a: np.ndarray, encoding: str, stamp: float | None) -> np.ndarray:
        opt = self.options[m]
        if a.dtype.names is not None:
            if rep in POINT_REPRESENTATIONS:
                return self._cloud(m, rep, a, opt)
            if rep == "event_frame":
                return self._events(m, a, opt, stamp)
            raise RepresentationError(m, f"a point cloud cannot feed representation {rep!r}")
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if rep == "rgb8":
            return self._rgb(m, a, encoding)
        if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] in (3, 4):
            return a[..., :3] if encoding not in _BGR else a[..., 2::-1]  # already in the representation
        if rep in DEPTH_REPRESENTATIONS:
            if a.ndim != 2:
                raise RepresentationError(m, f"depth must be [H, W], got shape {a.shape} ({encoding or a.dtype})")
            if a.dtype.kind in "ui":
                depth = a.astype(np.float32) * np.float32(opt.depth_scale)
                depth[a == 0] = np.nan
            elif a.dtype.kind == "f":
                depth = a.astype(np.float32, copy=False)
            else:
                raise RepresentationError(m, f"depth dtype {a.dtype} not understood")
            cam = self.camera
            if cam is not None and (cam.width, cam.height) != (a.shape[1], a.shape[0]):
                cam = cam.scaled(a.shape[1], a.shape[0])
            return depth_to_image(depth, rep, cam, opt.camera_height)
        if rep in POINT_REPRESENTATIONS and a.ndim == 3 and a.shape[2] == 3 and a.dtype.kind == "f":
            return metric_rih_to_image(a, rep)
        raise RepresentationError(m, f"cannot make {rep!r} from an image of shape {a.shape}, dtype {a.dtype}"
                                     f"{' (' + encoding + ')' if encoding else ''}")

    def _rgb(self, m: str, a: np.ndarray, encoding: str) -> np.ndarray:
        if a.dtype == np.uint16:
            a = (a >> 8).astype(np.uint8)
        if a.dtype != np.uint8:
            raise RepresentationError(m, f"rgb8 needs an 8/16-bit image, got dtype {a.dtype} ({encoding or '?'})")
        if a.ndim == 2:
            return np.repeat(a[..., None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise RepresentationError(m, f"rgb8 needs 1, 3 or 4 channels, got shape {a.shape}")
        return a[..., 2::-1] if encoding in _BGR else a[..., :3]

    def _need_camera(self, m: str) -> CameraModel:
        if self.camera is None:
            raise RepresentationError(m, "no camera model yet (waiting for camera_info)")
        return self.camera

    def _cloud(self, m: str, rep: str, cloud: np.ndarray, opt: ModalityOptions) -> np.ndarray:
        cam = self._need_camera(m)
        if m not in self.extrinsics:
            raise RepresentationError(m, "no extrinsic T_cam_from_sensor (give a 4x4 / translation+quaternion "
                                         "parameter, a tf lookup, or the identity if the cloud is in the camera frame)")
        flat = cloud.reshape(-1)
        names = flat.dtype.names
        missing = [n for n in ("x", "y", "z") if n not in names]
        if missing:
            raise RepresentationError(m, f"point cloud lacks field(s) {missing}")
        inten = _pick(names, ("intensity", "reflectivity", "i"))
        pts = np.empty((flat.shape[0], 4 if inten else 3), np.float32)
        pts[:, 0], pts[:, 1], pts[:, 2] = flat["x"], flat["y"], flat["z"]
        if inten:
            pts[:, 3] = flat[inten]
        return lidar_to_image(pts, self.extrinsics[m], cam, encoding=rep, dilation=opt.dilation,
                              min_range=opt.min_range, max_range=opt.max_range)

    def _events(self, m: str, ev: np.ndarray, opt: ModalityOptions, stamp: float | None) -> np.ndarray:
        flat = ev.reshape(-1)
        names = flat.dtype.names
        tn, pn = _pick(names, EVENT_TIME_FIELDS), _pick(names, EVENT_POLARITY_FIELDS)
        if "x" not in names or "y" not in names or tn is None or pn is None:
            raise RepresentationError(m, f"event cloud needs x, y, t and polarity fields, has {list(names)}")
        if opt.event_size is not None:
            w, h = opt.event_size
        elif self.camera is not None:
            w, h = self.camera.width, self.camera.height
        else:
            h, w = self.size
        t = flat[tn]
        t = t.astype(np.float64) * 1e-9 if t.dtype.kind in "ui" else t.astype(np.float64)  # integer t = ns
        return events_to_frame(flat["x"], flat["y"], t, flat[pn], h, w, t_end=stamp, window_s=opt.event_window)

    # ---- the model input -------------------------------------------------------------------------------------
    def assemble(self, items: Mapping[str, Any], pool: Executor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Payloads per modality (None = absent) -> ``x float32 [1, M, 3, H, W]``, ``present bool [1, M]``."""
        x, present, _ = self.assemble_with_reasons(items, pool)
        return x, present

    def assemble_with_reasons(self, items: Mapping[str, Any], pool: Executor | None = None
                              ) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
        """Like :meth:`assemble`, plus the reason of every modality that was given but could not be converted.

        With ``pool`` the modalities are converted concurrently (the numpy/OpenCV work releases the GIL, so a LiDAR
        projection and an HHA image overlap instead of adding up); each writes only its own slot of ``x``, so the
        result is identical to the sequential one.
        """
        h, w = self.size
        M = self.spec.num_modalities
        x = np.zeros((1, M, 3, h, w), np.float32)
        present = np.zeros((1, M), np.bool_)
        failed: dict[str, str] = {}

        def one(i: int, name: str, payload: Any) -> None:
            try:
                data, enc, stamp = _unpack(payload)
                img = self.represent(name, data, enc, stamp)
            except (RepresentationError, ValueError, TypeError, KeyError) as exc:
                failed[name] = exc.reason if isinstance(exc, RepresentationError) else f"{exc}"
                return
            self.normalize_into(x[0, i], i, img)
            present[0, i] = True

        todo = [(i, mod.name, items.get(mod.name)) for i, mod in enumerate(self.spec.modalities)]
        todo = [t for t in todo if t[2] is not None]
        if pool is not None and len(todo) > 1:
            for f in [pool.submit(one, *t) for t in todo]:
                f.result()
        else:
            for t in todo:
                one(*t)
        return x, present, dict(sorted(failed.items(), key=lambda kv: self.spec.modality_names.index(kv[0])))

    def normalize_into(self, out: np.ndarray, index: int, img: np.ndarray) -> None:
        """Write ``(img / 255 - mean) / std`` as [3, H, W] into ``out`` (same values as ``spec.normalize``)."""
        chw = img.transpose(2, 0, 1)
        np.multiply(chw, self._inv[index], out=out, casting="unsafe")
        out -= self._shift[index]

