"""Project raw MUSES LiDAR, radar and event data onto the frame camera: the layout ``MusesReader`` reads.

``python -m equiseg_ros.data.muses_project --root /data/muses --out /data/muses/multimodal``

Input: the MUSES SDK layout (``meta.json``, ``calib.json``, ``lidar/``, ``radar/``, ``event_camera/``,
``frame_camera/``, ``gt_semantic/``). Each ``meta.json`` entry names ``path_to_frame_camera``, ``path_to_lidar``,
``path_to_radar`` and ``path_to_event_camera`` relative to the root. Output: for every entry and sensor,
``OUT/<path_to_frame_camera with "frame_camera" replaced by lidar|radar|event_camera>`` (``.png`` 8-bit in our
representation by default), and links to ``frame_camera/`` and ``gt_semantic/`` so ``MusesReader(OUT)`` works.

Conventions followed from the MUSES SDK (``processing/*.py``):
- calibration: ``intrinsics.rgb.K`` (for 1920x1080, scaled with the target size), ``intrinsics.event.K``,
  ``extrinsics.lidar2rgb``/``radar2rgb``/``event2rgb`` (4x4, sensor -> camera);
- LiDAR ``.bin``: N x 6 (x, y, z, intensity, ring, timestamp); the SDK reads float64 (``--lidar-dtype``); points
  closer than 1 m are dropped; channels range, intensity, height z; optional 2x2 dilation;
- radar: the raw polar PNG (first channel; 400 azimuth columns; rows 0-7 timestamps, row 10 valid flag, rows 11+
  FFT magnitude over range bins of 0.0438 m up to 330.0768 m); azimuths ``-radians(linspace(-180 + 0.9, 180,
  400))``; only the camera's field of view (columns 145-254); every point at ground level z = -1.62 m; FFT >=
  ``--radar-threshold``; points beyond 150 m dropped; height channel 0; optional 10x10 dilation;
- events (``.h5``: ``events/x``, ``events/y``, ``events/t`` in microseconds, ``events/p`` 1/0): the last 30 ms before
  the newest event; mapped into the RGB image through the rectification the SDK does (OpenCV stereo rectification
  with zero disparity, then back), which composes to the rotation-only homography K_rgb R_rgb<-event K_event^-1;
  ch0 positive counts, ch1 negative counts, ch2 0 (clipped at 255, where the SDK's uint8 store wraps around).
Deviations: pixels are rounded to the nearest centre and the nearest point wins a pixel (the SDK truncates and keeps
the last write); dilation keeps the nearest point's channels together (the SDK max-filters each channel).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from equiseg_ros.data._io import read_png, write_png
from equiseg_ros.sensors.events import events_to_frame
from equiseg_ros.sensors.geometry import CameraModel, project_points, zbuffer_nearest
from equiseg_ros.sensors.lidar import lidar_to_image

SDK_WIDTH, SDK_HEIGHT = 1920, 1080
RADAR_AZIMUTHS = 400
RADAR_RESOLUTION = 0.0438
RADAR_MAX_DISTANCE = 330.0768
RADAR_GROUND_LEVEL = 1.62
RADAR_FOV_COLUMNS = (145, 255)
RADAR_HEADER_ROWS = 11
EVENT_WINDOW_US = 30000
OUT_FOLDERS = {"lidar": "lidar", "radar": "radar", "event": "event_camera"}


def load_calib(root: str | Path) -> dict[str, Any]:
    p = Path(root) / "calib.json"
    if not p.is_file():
        raise FileNotFoundError(f"MUSES calibration not found: {p}")
    return json.loads(p.read_text())


def rgb_camera(calib: dict[str, Any], width: int, height: int) -> CameraModel:
    """The frame camera at the target size; K scaled like the SDK's ``rescale_K`` (from 1920x1080)."""
    try:
        K = np.asarray(calib["intrinsics"]["rgb"]["K"], np.float64).copy()
    except KeyError:
        raise KeyError("calib.json: missing intrinsics.rgb.K") from None
    sx, sy = width / SDK_WIDTH, height / SDK_HEIGHT
    K[0, 0] *= sx
    K[0, 2] *= sx
    K[1, 1] *= sy
    K[1, 2] *= sy
    return CameraModel(K, width, height)


def _extrinsic(calib: dict[str, Any], key: str) -> np.ndarray:
    try:
        T = np.asarray(calib["extrinsics"][key], np.float64)
    except KeyError:
        raise KeyError(f"calib.json: missing extrinsics.{key}") from None
    if T.shape != (4, 4):
        raise ValueError(f"calib.json: extrinsics.{key} must be 4x4, got {T.shape}")
    return T


def load_lidar_bin(path: str | Path, dtype: str = "float64") -> np.ndarray:
    """A MUSES LiDAR ``.bin``: N x 6 (x, y, z, intensity, ring, timestamp)."""
    data = np.fromfile(str(path), dtype=np.dtype(dtype))
    if data.size % 6:
        raise ValueError(f"{path}: {data.size} {dtype} values are not N x 6 (wrong --lidar-dtype?)")
    return data.reshape(-1, 6)


def radar_points(polar: np.ndarray, threshold: float = 0.0, fov_only: bool = True) -> np.ndarray:
    """The raw polar radar image (rows: 11 header rows + range bins; 400 azimuth columns) -> [N, 4] x, y, z, fft."""
    img = np.asarray(polar)
    if img.ndim == 3:
        img = img[..., 0]
    if img.shape[1] != RADAR_AZIMUTHS:
        raise ValueError(f"radar: expected {RADAR_AZIMUTHS} azimuth columns, got {img.shape[1]}")
    bins = min(int(RADAR_MAX_DISTANCE // RADAR_RESOLUTION), img.shape[0] - RADAR_HEADER_ROWS)
    azimuths = -np.radians(np.linspace(-180 + 360 / RADAR_AZIMUTHS, 180, RADAR_AZIMUTHS))
    distance = np.linspace(RADAR_RESOLUTION, np.round(bins * RADAR_RESOLUTION, 4), bins)
    cols = slice(*RADAR_FOV_COLUMNS) if fov_only else slice(0, RADAR_AZIMUTHS)
    valid_flag = img[10, cols].astype(bool)
    fft = img[RADAR_HEADER_ROWS:RADAR_HEADER_ROWS + bins, cols].astype(np.float64)
    az = azimuths[cols]
    mask = (fft >= threshold) & valid_flag[None, :]
    r_idx, c_idx = np.nonzero(mask)
    d = distance[r_idx]
    pts = np.zeros((len(d), 4), np.float64)
    pts[:, 0] = d * np.cos(az[c_idx])
    pts[:, 1] = d * np.sin(az[c_idx])
    pts[:, 2] = -RADAR_GROUND_LEVEL
    pts[:, 3] = fft[r_idx, c_idx]
    return pts


def project_events(x: np.ndarray, y: np.ndarray, calib: dict[str, Any], cam: CameraModel
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Event-camera pixels -> frame-camera pixels (rounded) via K_rgb R_rgb<-event K_event^-1 (see module doc)."""
    K_ev = np.asarray(calib["intrinsics"]["event"]["K"], np.float64)
    R = _extrinsic(calib, "event2rgb")[:3, :3]
    H = cam.K @ R @ np.linalg.inv(K_ev)
    p = np.stack([x, y, np.ones(len(x))]).astype(np.float64)
    q = H @ p
    return np.rint(q[0] / q[2]).astype(np.int64), np.rint(q[1] / q[2]).astype(np.int64)


def load_events_h5(path: str | Path, window_us: int = EVENT_WINDOW_US) -> tuple[np.ndarray, ...]:
    import h5py

    with h5py.File(str(path), "r") as f:
        try:
            x, y, t, p = (f[f"events/{k}"][:] for k in ("x", "y", "t", "p"))
        except KeyError as exc:
            raise KeyError(f"{path}: missing dataset {exc.args[0]} (expected events/x, y, t, p)") from None
    if len(t):
        keep = t >= t.max() - window_us
        x, y, t, p = x[keep], y[keep], t[keep], p[keep]
    return x, y, t, p


def metric_rih(points: np.ndarray, T: np.ndarray, cam: CameraModel, height_channel: bool, min_range: float,
               max_range: float | None) -> np.ndarray:
    """The SDK's float image (range, intensity, height; zeros = empty), nearest point per pixel (.npz output)."""
    r = np.linalg.norm(points[:, :3], axis=1)
    keep = r >= min_range
    if max_range is not None:
        keep &= r <= max_range
    pts, r = points[keep], r[keep]
    u, v, depth, idx = project_points(pts[:, :3], T, cam)
    vals = np.stack([r[idx], pts[idx, 3], pts[idx, 2] if height_channel else np.zeros(len(idx))], 1)
    img, _ = zbuffer_nearest(u, v, depth, vals, cam.height, cam.width)
    return img


def project_entry(root: Path, entry: dict[str, Any], calib: dict[str, Any], cam: CameraModel,
                  sensors: Sequence[str], lidar_dtype: str = "float64", lidar_dilation: int = 0,
                  radar_dilation: int = 0, radar_threshold: float = 0.0) -> dict[str, np.ndarray]:
    """One meta.json entry -> {sensor: uint8 [H, W, 3] image in our representation}."""
    out: dict[str, np.ndarray] = {}
    if "lidar" in sensors:
        pts = load_lidar_bin(root / entry["path_to_lidar"], lidar_dtype)
        out["lidar"] = lidar_to_image(pts[:, :4], _extrinsic(calib, "lidar2rgb"), cam, "lidar_rih",
                                      dilation=lidar_dilation, min_range=1.0)
    if "radar" in sensors:
        polar = read_png(root / entry["path_to_radar"], "radar polar image")
        # read_png returns RGB; the SDK reads channel 0 of OpenCV's BGR, i.e. our last colour channel
        polar = polar[..., 2] if polar.ndim == 3 else polar
        pts = radar_points(polar, radar_threshold)
        out["radar"] = lidar_to_image(pts, _extrinsic(calib, "radar2rgb"), cam, "radar_rih",
                                      dilation=radar_dilation, min_range=1.0, max_range=150.0)
    if "event" in sensors:
        x, y, t, p = load_events_h5(root / entry["path_to_event_camera"])
        u, v = project_events(x, y, calib, cam)
        # times stay in microseconds: the window is (t_max - 30000 - 1, t_max], i.e. the SDK's t >= t_max - 30 ms
        out["event"] = events_to_frame(u, v, t.astype(np.float64), p, cam.height, cam.width,
                                       t_end=float(t.max()) if len(t) else 0.0, window_s=EVENT_WINDOW_US + 1)
    return out


def output_path(out: Path, entry: dict[str, Any], sensor: str, suffix: str = ".png") -> Path:
    rel = entry["path_to_frame_camera"].replace("frame_camera", OUT_FOLDERS[sensor])
    return out / (os.path.splitext(rel)[0] + suffix)


def _link_tree(root: Path, out: Path, name: str) -> None:
    src, dst = root / name, out / name
    if src.exists() and not dst.exists() and src.resolve() != dst.resolve():
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src.resolve(), dst, target_is_directory=True)


def run(root: str | Path, out: str | Path, sensors: Sequence[str] = ("lidar", "radar", "event"), width: int = 1920,
        height: int = 1080, lidar_dtype: str = "float64", lidar_dilation: int = 0, radar_dilation: int = 0,
        radar_threshold: float = 0.0, split: str | None = None, progress: bool = False) -> int:
    root, out = Path(root), Path(out)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"MUSES meta data not found: {meta_path}")
    meta = json.loads(meta_path.read_text())
    calib = load_calib(root)
    cam = rgb_camera(calib, width, height)
    items = sorted(meta.items())
    if split:
        items = [(k, e) for k, e in items if e.get("split", split) == split]
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="MUSES projection", unit="frame")
    n = 0
    for key, entry in items:
        if "path_to_frame_camera" not in entry:
            raise KeyError(f"meta.json entry {key!r}: missing path_to_frame_camera")
        images = project_entry(root, entry, calib, cam, sensors, lidar_dtype, lidar_dilation, radar_dilation,
                               radar_threshold)
        for sensor, img in images.items():
            write_png(output_path(out, entry, sensor), img)
        n += 1
    for name in ("frame_camera", "gt_semantic"):
        _link_tree(root, out, name)
    return n


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m equiseg_ros.data.muses_project", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="MUSES SDK root (meta.json, calib.json, lidar/, radar/, ...)")
    ap.add_argument("--out", required=True, help="output root of the projected layout (MusesReader's root)")
    ap.add_argument("--sensors", default="lidar,radar,event", help="comma-separated subset of lidar,radar,event")
    ap.add_argument("--width", type=int, default=1920, help="output width in pixels (default 1920)")
    ap.add_argument("--height", type=int, default=1080, help="output height in pixels (default 1080)")
    ap.add_argument("--lidar-dtype", default="float64", choices=["float64", "float32"],
                    help="value type of the LiDAR .bin files (the SDK reads float64)")
    ap.add_argument("--lidar-dilation", type=int, default=0, help="square dilation kernel for LiDAR (SDK: 2)")
    ap.add_argument("--radar-dilation", type=int, default=0, help="square dilation kernel for radar (SDK: 10)")
    ap.add_argument("--radar-threshold", type=float, default=0.0,
                    help="minimum radar FFT magnitude; the SDK's default 0 keeps every range bin of a valid "
                         "azimuth, its motion-compensation script uses 75 (default 0)")
    ap.add_argument("--split", default=None, help="only entries whose meta 'split' equals this")
    a = ap.parse_args(argv)
    sensors = [s.strip() for s in a.sensors.split(",") if s.strip()]
    bad = [s for s in sensors if s not in OUT_FOLDERS]
    if bad:
        ap.error(f"--sensors: unknown {bad[0]!r}; known: {sorted(OUT_FOLDERS)}")
    n = run(a.root, a.out, sensors, a.width, a.height, a.lidar_dtype, a.lidar_dilation, a.radar_dilation,
            a.radar_threshold, a.split, progress=True)
    print(f"projected {n} frames ({', '.join(sensors)}) into {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
