"""PNG reading and writing in RGB(A) channel order (OpenCV stores BGR(A)), keeping 8- and 16-bit depths."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from equiseg_ros.sensors.resize import resize  # noqa: F401  (the readers' import path; the rule lives in sensors)

cv2.setNumThreads(1)  # dataloader workers each run one thread; OpenCV's own pool would oversubscribe the cores


def read_png(path: str | Path, what: str = "image") -> np.ndarray:
    """Read a PNG as stored: [H, W] (1 channel) or [H, W, C] in RGB(A) order; uint8 or uint16."""
    p = str(path)
    img = cv2.imread(p, cv2.IMREAD_UNCHANGED)
    if img is None:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{what}: file not found: {p}")
        raise OSError(f"{what}: cannot decode image file {p}")
    if img.ndim == 3:
        if img.shape[2] == 3:
            img = img[..., ::-1]
        elif img.shape[2] == 4:
            img = img[..., [2, 1, 0, 3]]
    return np.ascontiguousarray(img)


def write_png(path: str | Path, image: np.ndarray, compression: int = 1) -> None:
    """Write [H, W] or [H, W, 3|4] (RGB(A) order) uint8/uint16 as PNG, creating parent folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    img = np.asarray(image)
    if img.ndim == 3:
        if img.shape[2] == 3:
            img = img[..., ::-1]
        elif img.shape[2] == 4:
            img = img[..., [2, 1, 0, 3]]
        elif img.shape[2] == 1:
            img = img[..., 0]
    if not cv2.imwrite(str(p), np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, compression]):
        raise OSError(f"cannot write PNG {p}")


def to_rgb3(img: np.ndarray, what: str) -> np.ndarray:
    """DeLiVER's rule for a modality image: 4 channels -> drop alpha, 1 channel -> repeat to 3, uint8 only."""
    if img.dtype != np.uint8:
        raise ValueError(f"{what}: expected an 8-bit image, got {img.dtype}")
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] >= 3:
        return np.ascontiguousarray(img[..., :3])
    raise ValueError(f"{what}: unsupported channel count {img.shape[2]}")

