"""The resize rule of representations: how a modality image changes size, the same for training and the vehicle.

Dense representations (RGB, HHA, depth8) resize bilinearly; sparse ones (event frames, LiDAR/radar projected onto
the camera) resize NEAREST (OpenCV's exact nearest, half-pixel centres) so counts and ranges are never averaged
with empty pixels. The dataset readers and transforms (``data``) and the node's sensor front end (``sensors``)
both call :func:`resize_modality`; it lives here, on the lower floor, so ``sensors`` never imports ``data``
(DESIGN.md "Dependencies point down").
"""
from __future__ import annotations

import cv2
import numpy as np

from equiseg_ros.sensors.lidar import ENCODINGS as POINT_REPRESENTATIONS

__all__ = ["SPARSE_REPRESENTATIONS", "is_sparse", "resize", "resize_modality"]

# Every point-cloud projection (lidar_image, lidar_rih, radar_rih) is sparse, and so is an event frame.
SPARSE_REPRESENTATIONS: frozenset[str] = frozenset(POINT_REPRESENTATIONS) | {"event_frame"}


def is_sparse(representation: str) -> bool:
    """True for representations whose empty pixels must not be blended with measured ones."""
    return representation in SPARSE_REPRESENTATIONS


def resize(img: np.ndarray, height: int, width: int, nearest: bool) -> np.ndarray:
    """Resize [H, W(, C)] bilinearly or NEAREST (OpenCV, half-pixel centres); the input itself when sizes match."""
    if img.shape[0] == height and img.shape[1] == width:
        return img
    interp = cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_LINEAR
    out = cv2.resize(img, (int(width), int(height)), interpolation=interp)
    if img.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing channel axis of 1
        out = out[..., None]
    return out


def resize_modality(image: np.ndarray, representation: str, height: int, width: int) -> np.ndarray:
    """Resize a modality image with the interpolation its representation needs (see the module docstring)."""
    return resize(image, height, width, nearest=is_sparse(representation))
