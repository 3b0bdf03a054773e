"""Tiny DeLiVER-layout data for the training tests, the benchmark and the experiment.

Uses the project's synthetic generator (``python -m equiseg_ros.data.synthetic``) when it is installed; otherwise
writes a minimal procedural stand-in (sky, road, buildings, cars; every modality informative) in the same layout,
so the training tests never depend on the order in which parts of the project land.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

MODS = {"rgb": ("img", "rgb"), "depth": ("hha", "depth"), "event": ("event", "event"), "lidar": ("lidar", "lidar")}


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    img = image[..., ::-1] if image.ndim == 3 else image  # RGB -> BGR for OpenCV
    if not cv2.imwrite(str(path), np.ascontiguousarray(img)):
        raise OSError(f"{path}: could not write PNG")


def _fallback_frame(rng: np.random.Generator, size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    h = w = size
    lab = np.full((h, w), 12, np.uint8)  # sky
    horizon = int(h * rng.uniform(0.35, 0.5))
    lab[horizon:] = 6  # road
    lab[horizon:, : int(w * 0.15)] = 7  # sidewalk
    for _ in range(rng.integers(1, 4)):  # buildings
        x0 = int(rng.integers(0, w - 8))
        bw, top = int(rng.integers(6, w // 3)), int(rng.integers(2, horizon - 1))
        lab[top:horizon, x0:x0 + bw] = 0
    for _ in range(rng.integers(1, 3)):  # cars on the road
        y0 = int(rng.integers(horizon + 2, h - 6))
        x0 = int(rng.integers(0, w - 10))
        lab[y0:y0 + int(rng.integers(4, 10)), x0:x0 + int(rng.integers(6, 16))] = 9
    colours = {12: (70, 130, 180), 6: (90, 90, 95), 7: (160, 140, 140), 0: (120, 110, 100), 9: (30, 40, 150)}
    rgb = np.zeros((h, w, 3), np.float32)
    for c, col in colours.items():
        rgb[lab == c] = col
    rgb = np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
    rows = np.linspace(0, 1, h, dtype=np.float32)[:, None].repeat(w, 1)
    depth = np.where(lab == 12, 0.0, 255 * (0.2 + 0.8 * rows))
    depth = np.where(np.isin(lab, (0, 9)), depth * 0.6 + 40 * (lab == 9), depth)
    hha = np.stack([depth, 255 * rows, 128 + 60 * (lab == 9)], -1).clip(0, 255).astype(np.uint8)
    edges = np.zeros((h, w), bool)
    edges[1:] |= lab[1:] != lab[:-1]
    edges[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    event = np.zeros((h, w, 3), np.uint8)
    event[edges & (rng.random((h, w)) < 0.8)] = (255, 255, 255)
    lidar = np.zeros((h, w, 3), np.uint8)
    beams = np.zeros((h, w), bool)
    beams[horizon - 4::3] = True
    lidar[beams & (lab != 12)] = np.stack([depth, depth * 0.5, 80 + 100 * (lab == 9)], -1)[beams & (lab != 12)]
    return {"rgb": rgb, "depth": hha, "event": event, "lidar": lidar}, lab


def write_fallback(root: str | Path, frames: int, size: int, seed: int = 0, val_frames: int | None = None) -> Path:
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", frames), ("val", val_frames if val_frames is not None else max(2, frames // 4))):
        for i in range(n):
            images, lab = _fallback_frame(rng, size)
            name = f"{i:06d}"
            for m, img in images.items():
                folder, suffix = MODS[m]
                _write_png(root / folder / "cloud" / split / "scene0" / f"{name}_{suffix}_front.png", img)
            _write_png(root / "semantic" / "cloud" / split / "scene0" / f"{name}_semantic_front.png", lab + 1)
    return root


def make_tiny_deliver(root: str | Path, frames: int = 8, size: int = 64, seed: int = 0) -> Path:
    """A DeLiVER-layout dataset with ``frames`` training frames (and a few val frames) of ``size`` px."""
    root = Path(root)
    if (root / "img").is_dir():
        return root
    if importlib.util.find_spec("equiseg_ros.data.synthetic") is not None:
        cmd = [sys.executable, "-m", "equiseg_ros.data.synthetic", "--out", str(root), "--frames", str(frames),
               "--size", str(size), "--seed", str(seed)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0 and (root / "img").is_dir():
            return root
        print(f"[testdata] synthetic generator failed ({done.stderr.strip()[-300:]}); using the fallback writer")
    return write_fallback(root, frames, size, seed)


def tiny_overrides(data_root: str | Path, **extra: object) -> list[str]:
    """``--set`` overrides that turn ``config/train/tiny_test.yaml`` into a seconds-long run on ``data_root``."""
    out = [f"data.root={data_root}"]
    out += [f"{k}={v}" for k, v in extra.items()]
    return out
