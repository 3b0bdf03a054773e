"""Output rendering for the node: class-id masks, colour overlays and confidence images, as numpy arrays.

No rclpy here: the node wraps these arrays into messages with ``codecs.fill_image``. Masks are resized with
nearest-neighbour only (class ids must never be interpolated); the camera image under the overlay is resized
bilinearly.
"""
from __future__ import annotations

import cv2
import numpy as np


def resize_nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an [H, W] (or [H, W, C]) array to ``size`` = (H, W) without mixing values (class ids stay ids)."""
    h, w = int(size[0]), int(size[1])
    if arr.shape[:2] == (h, w):
        return arr
    return cv2.resize(arr, (w, h), interpolation=cv2.INTER_NEAREST)


def colorize(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """uint8 class ids [H, W] -> rgb8 [H, W, 3] through a [256, 3] palette (ids without a class map to black)."""
    if labels.dtype != np.uint8:
        raise ValueError(f"labels: expected uint8 class ids, got {labels.dtype}")
    return lut[labels]


def overlay(labels: np.ndarray, lut: np.ndarray, image: np.ndarray | None, alpha: float,
            ignore_index: int = 255) -> np.ndarray:
    """Blend the class colours over ``image`` (rgb8, any size; None = black) with weight ``alpha``.

    Unlabeled pixels (``ignore_index``) show the image unchanged, so gaps in the mask stay visible as such.
    """
    colour = colorize(labels, lut)
    h, w = labels.shape
    if image is None:
        base = np.zeros((h, w, 3), np.uint8)
    else:
        base = _as_rgb8(image)
        if base.shape[:2] != (h, w):
            base = cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR)
    a = float(alpha)
    if a <= 0.0:
        return np.ascontiguousarray(base)
    out = cv2.addWeighted(colour, a, base, 1.0 - a, 0.0)
    unlabeled = labels == ignore_index
    if unlabeled.any():
        out[unlabeled] = base[unlabeled]
    return out


def _as_rgb8(image: np.ndarray) -> np.ndarray:
    """Any decoded camera array (mono, rgb, float) -> rgb8 for display."""
    img = image
    if img.dtype != np.uint8:
        finite = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        hi = float(finite.max()) if finite.size else 0.0
        img = (finite / hi * 255.0).astype(np.uint8) if hi > 0 else np.zeros(finite.shape, np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


def confidence_image(conf: np.ndarray, encoding: str) -> np.ndarray:
    """float32 [H, W] max-softmax in 0..1 -> mono8 (0..255, rounded) or 32FC1 (unchanged)."""
    if encoding == "32FC1":
        return np.ascontiguousarray(conf, dtype=np.float32)
    if encoding == "mono8":
        return np.clip(np.rint(conf * 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"output.confidence_encoding: unknown encoding {encoding!r}")
