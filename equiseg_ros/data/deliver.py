"""DeLiVER reader for the real on-disk layout (also the layout the synthetic generator writes).

``root/{img,hha,depth,event,lidar,semantic}/{cloud,fog,night,rain,sun}/{train,val,test}/<scene>/<frame>_<mod>_front.png``

Facts followed from the reference loader (DELIVER ``semseg/datasets/deliver.py``):
- frames are found with ``glob(root/img/*/<split>/*/*.png)``; every other file comes from string replacement on
  the RGB path: depth ``/img -> /hha`` and ``_rgb -> _depth`` (the papers' "depth" input is the ``hha/`` folder;
  ``depth_source="depth"`` reads the ground-truth ``depth/`` folder instead), event ``_event``, LiDAR ``_lidar``,
  label ``/semantic`` and ``_semantic``;
- RGB keeps its first 3 channels; other modalities drop alpha (4 channels) or repeat a single channel to 3;
- the event image is resized NEAREST to the frame size (the low-resolution-event corner case); we resize any other
  modality whose size differs with its representation's interpolation instead of failing later in a collate;
- labels are channel 0 of the semantic PNG: raw 0 and 255 -> 255 (ignore), raw k in 1..25 -> class k - 1;
- corner cases are selected by substring of the path, as the reference's ``case`` does; conditions by the
  condition folder (a substring test would find "rain" in every ``train`` path).
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from equiseg_ros.data._io import read_png, resize, to_rgb3
from equiseg_ros.data._types import Frame, FrameRecord, meta_of

CONDITIONS = ("cloud", "fog", "night", "rain", "sun")
CORNER_CASES = ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres")
SPLITS = ("train", "val", "test")
# modality name -> (folder, file suffix) relative to the RGB path's ("img", "rgb")
MODALITY_FILES = {"rgb": ("img", "rgb"), "depth": ("hha", "depth"), "event": ("event", "event"),
                  "lidar": ("lidar", "lidar")}
SPARSE = {"event", "lidar"}  # modalities resized NEAREST


def decode_label(raw: np.ndarray) -> np.ndarray:
    """DeLiVER label channel 0 -> class ids: raw 0 and 255 -> 255 (ignore), raw k -> k - 1 (uint8 wrap-around)."""
    lab = np.asarray(raw, np.uint8).copy()
    lab[lab == 255] = 0
    return lab - np.uint8(1)  # 0 wraps to 255


def encode_label(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Class ids (255 = ignore) -> DeLiVER raw values (k + 1; 0 = unlabeled)."""
    lab = np.asarray(label)
    return np.where(lab == ignore_index, 0, lab.astype(np.int64) + 1).astype(np.uint8)


def corner_case_of(path: str) -> str | None:
    for case in CORNER_CASES:
        if case in path:
            return case
    return None


class DeliverReader:
    """Frames of one DeLiVER split: ``reader[i]`` -> ``Frame`` with the requested modalities, in that order."""

    dataset_name = "deliver"

    def __init__(self, root: str | Path, split: str = "train", modalities: Sequence[str] = ("rgb", "depth", "event",
                 "lidar"), conditions: Sequence[str] | None = None, corner_cases: Sequence[str] | None = None,
                 depth_source: str = "hha") -> None:
        self.root = Path(root)
        self.split = split
        self.modalities = tuple(modalities)
        unknown = [m for m in self.modalities if m not in MODALITY_FILES]
        if unknown:
            raise ValueError(f"modalities: unknown DeLiVER modality {unknown[0]!r}; known: {sorted(MODALITY_FILES)}")
        if depth_source not in ("hha", "depth"):
            raise ValueError(f"depth_source: expected 'hha' or 'depth', got {depth_source!r}")
        self.depth_source = depth_source
        for c in conditions or ():
            if c not in CONDITIONS:
                raise ValueError(f"conditions: unknown DeLiVER condition {c!r}; known: {list(CONDITIONS)}")
        for c in corner_cases or ():
            if c not in CORNER_CASES:
                raise ValueError(f"corner_cases: unknown DeLiVER corner case {c!r}; known: {list(CORNER_CASES)}")
        pattern = os.path.join(str(self.root), "img", "*", split, "*", "*.png")
        files = sorted(glob.glob(pattern))
        if not files:
            raise FileNotFoundError(f"DeLiVER {split!r}: no RGB frames match {pattern}")
        if conditions:  # by the condition folder: a substring test (the reference's) matches "rain" in "train"
            files = [f for f in files if Path(f).relative_to(self.root / "img").parts[0] in conditions]
        if corner_cases:
            files = [f for f in files if any(c in f for c in corner_cases)]
        if not files:
            raise FileNotFoundError(f"DeLiVER {split!r}: {pattern} matched frames, but none for conditions="
                                    f"{list(conditions or [])} corner_cases={list(corner_cases or [])}")
        self.frames = [self._record(f) for f in files]

    def _path(self, rgb_path: str, modality: str) -> str:
        if modality == "rgb":
            return rgb_path
        folder, suffix = MODALITY_FILES[modality]
        if modality == "depth" and self.depth_source == "depth":
            folder = "depth"
        return rgb_path.replace(f"{os.sep}img{os.sep}", f"{os.sep}{folder}{os.sep}").replace("_rgb", f"_{suffix}")

    def _record(self, rgb_path: str) -> FrameRecord:
        rel = Path(rgb_path).relative_to(self.root / "img")
        condition, split, scene = rel.parts[0], rel.parts[1], rel.parts[2]
        name = rel.name.split("_")[0]
        paths = {m: self._path(rgb_path, m) for m in self.modalities}
        paths["label"] = rgb_path.replace(f"{os.sep}img{os.sep}", f"{os.sep}semantic{os.sep}").replace(
            "_rgb", "_semantic")
        return FrameRecord(frame=f"{condition}/{split}/{scene}/{name}", dataset=self.dataset_name, split=split,
                           condition=condition, corner_case=corner_case_of(rgb_path), scene=scene, name=name,
                           paths=paths)

    def __len__(self) -> int:
        return len(self.frames)

    def read_label(self, record: FrameRecord) -> np.ndarray:
        raw = read_png(record.paths["label"], f"label of frame {record.frame}")
        return decode_label(raw if raw.ndim == 2 else raw[..., 0])

    def __getitem__(self, index: int) -> Frame:
        rec = self.frames[index]
        label = self.read_label(rec)
        H, W = label.shape
        images = {}
        for m in self.modalities:
            img = to_rgb3(read_png(rec.paths[m], f"{m} of frame {rec.frame}"), f"{m} of frame {rec.frame}")
            if img.shape[:2] != (H, W):
                img = resize(img, H, W, nearest=m in SPARSE)
            images[m] = img
        return Frame(images=images, label=label, meta=meta_of(rec), record=rec)
