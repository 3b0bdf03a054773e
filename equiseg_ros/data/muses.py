"""MUSES reader for the projected ("multimodal") layout used by AnySeg / RobustSeg.

``root/frame_camera/<split>/<weather>/<time>/<name>_frame_camera.png`` is the anchor; every other modality's file
is the same path with ``frame_camera`` replaced by the modality folder (folder and file suffix): ``event_camera``,
``lidar``, ``radar``. Labels: ``root/gt_semantic/.../<name>_gt_labelTrainIds.png`` (Cityscapes train ids, 19
classes, 255 = ignore). ``python -m equiseg_ros.data.muses_project`` writes this layout from the raw SDK files.

Differences from the AnySeg loader, on purpose:
- **255 stays ignore.** AnySeg (and RobustSeg) do ``label[label == 255] = 0``, which turns every unlabeled pixel
  into "road" and trains/evaluates on it; we do not copy that bug.
- Resize policy is configurable: ``"square"`` = AnySeg's 1024x1024 (aspect not kept), ``"aspect"`` = short side to
  ``size`` keeping the aspect ratio, ``None`` = native size. Labels always NEAREST; event/LiDAR/radar NEAREST
  (AnySeg uses PIL's default filter for everything, which averages sparse points with empty pixels).
- Image files may be 8-bit PNGs (used as they are, RGB order), 16-bit PNGs written by the MUSES SDK
  (``value = (x + 100) * 150`` per channel, OpenCV channel order, i.e. range/intensity/height as the SDK computed
  them), or the SDK's float ``.npz``/``.npy``; metric LiDAR/radar images are mapped to 8 bit with the fixed scales
  of ``equiseg_ros.sensors.lidar`` (``uint16_policy="div256"`` reproduces AnySeg's ``/256`` instead).
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from equiseg_ros.data._io import read_png, resize, to_rgb3
from equiseg_ros.data._types import Frame, FrameRecord, meta_of
from equiseg_ros.sensors.lidar import metric_rih_to_image

WEATHERS = ("clear", "fog", "rain", "snow")
TIMES = ("day", "night")
MODALITY_FOLDERS = {"rgb": "frame_camera", "event": "event_camera", "lidar": "lidar", "radar": "radar"}
ENCODING = {"lidar": "lidar_rih", "radar": "radar_rih"}
SPARSE = {"event", "lidar", "radar"}
SDK_PNG_SCALE, SDK_PNG_SHIFT = 150.0, 100.0


def decode_sdk_uint16(img: np.ndarray) -> np.ndarray:
    """A MUSES SDK uint16 PNG (as OpenCV reads it, BGR order) -> float32 metric image in the SDK's channel order."""
    bgr_native = np.asarray(img)[..., ::-1] if img.ndim == 3 else img  # undo read_png's RGB swap
    return bgr_native.astype(np.float32) / SDK_PNG_SCALE - SDK_PNG_SHIFT


class MusesReader:
    """Frames of one MUSES split: ``reader[i]`` -> ``Frame`` with the requested modalities, in that order."""

    dataset_name = "muses"

    def __init__(self, root: str | Path, split: str = "train", modalities: Sequence[str] = ("rgb", "lidar", "radar",
                 "event"), conditions: Sequence[str] | None = None, resize: str | None = "square", size: int = 1024,
                 uint16_policy: str = "decode") -> None:
        self.root = Path(root)
        self.split = split
        self.modalities = tuple(modalities)
        unknown = [m for m in self.modalities if m not in MODALITY_FOLDERS]
        if unknown:
            raise ValueError(f"modalities: unknown MUSES modality {unknown[0]!r}; known: {sorted(MODALITY_FOLDERS)}")
        if resize not in ("square", "aspect", None):
            raise ValueError(f"resize: expected 'square', 'aspect' or None, got {resize!r}")
        if uint16_policy not in ("decode", "div256"):
            raise ValueError(f"uint16_policy: expected 'decode' or 'div256', got {uint16_policy!r}")
        self.resize_policy, self.size, self.uint16_policy = resize, int(size), uint16_policy
        conds = list(conditions or [])
        bad = [c for c in conds if c not in WEATHERS + TIMES]
        if bad:
            raise ValueError(f"conditions: unknown MUSES condition {bad[0]!r}; known: {list(WEATHERS + TIMES)}")
        weathers = [c for c in conds if c in WEATHERS] or list(WEATHERS)
        times = [c for c in conds if c in TIMES] or list(TIMES)
        pattern = os.path.join(str(self.root), "frame_camera", split, "*", "*", "*.png")
        files = sorted(glob.glob(pattern))
        if not files:
            raise FileNotFoundError(f"MUSES {split!r}: no frame_camera images match {pattern}")
        self.frames = []
        for f in files:
            rel = Path(f).relative_to(self.root / "frame_camera")
            weather, time = rel.parts[1], rel.parts[2]
            if weather in weathers and time in times:
                self.frames.append(self._record(f, weather, time))
        if not self.frames:
            raise FileNotFoundError(f"MUSES {split!r}: {pattern} matched frames, but none for conditions={conds}")

    def _record(self, path: str, weather: str, time: str) -> FrameRecord:
        paths = {m: path.replace("frame_camera", folder) for m, folder in MODALITY_FOLDERS.items()
                 if m in self.modalities}
        paths["label"] = path.replace(f"{os.sep}frame_camera", f"{os.sep}gt_semantic").replace(
            "frame_camera", "gt_labelTrainIds")
        name = Path(path).name.replace("_frame_camera.png", "").replace(".png", "")
        return FrameRecord(frame=f"{self.split}/{weather}/{time}/{name}", dataset=self.dataset_name, split=self.split,
                           condition=f"{weather}_{time}", corner_case=None, scene=f"{weather}/{time}", name=name,
                           paths=paths)

    def __len__(self) -> int:
        return len(self.frames)

    def _read_modality(self, modality: str, path: str, frame: str) -> np.ndarray:
        what = f"{modality} of frame {frame}"
        if not os.path.exists(path):
            for ext in (".npz", ".npy"):
                alt = os.path.splitext(path)[0] + ext
                if os.path.exists(alt):
                    data = np.load(alt)
                    arr = data[data.files[0]] if ext == ".npz" else data
                    return self._from_metric(modality, np.asarray(arr, np.float32), what)
        img = read_png(path, what)
        if img.dtype == np.uint16:
            if self.uint16_policy == "div256":
                return to_rgb3((img // 256).astype(np.uint8), what)
            return self._from_metric(modality, decode_sdk_uint16(img), what)
        return to_rgb3(img, what)

    @staticmethod
    def _from_metric(modality: str, arr: np.ndarray, what: str) -> np.ndarray:
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"{what}: expected a [H, W, 3] metric image, got shape {arr.shape}")
        if modality in ENCODING:
            return metric_rih_to_image(arr, ENCODING[modality])
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)  # event counts / camera values

    def _target_size(self, height: int, width: int) -> tuple[int, int]:
        if self.resize_policy == "square":
            return self.size, self.size
        if self.resize_policy == "aspect":
            f = self.size / min(height, width)
            return int(round(height * f)), int(round(width * f))
        return height, width

    def __getitem__(self, index: int) -> Frame:
        rec = self.frames[index]
        raw = read_png(rec.paths["label"], f"label of frame {rec.frame}")
        label = (raw if raw.ndim == 2 else raw[..., 0]).astype(np.uint8)
        H, W = self._target_size(*label.shape)
        label = resize(label, H, W, nearest=True)
        images = {}
        for m in self.modalities:
            img = self._read_modality(m, rec.paths[m], rec.frame)
            images[m] = resize(img, H, W, nearest=m in SPARSE)
        return Frame(images=images, label=label, meta=meta_of(rec), record=rec)

