"""Training and validation transforms of the reference recipe (DELIVER ``augmentations_mm.py``), on numpy.

A sample is ``(images, label)``: ``images`` maps modality name -> uint8 [H, W, 3] (the representation), ``label``
is uint8 [H, W] with 255 = ignore. Every geometric step applies the same transform to every modality and to the
label, so they stay aligned. Training, in the reference order:

1. colour jitter p=0.2, RGB only (brightness, contrast, saturation factors each ~U(0.5, 1.5));
2. horizontal flip p=0.5, everything;
3. Gaussian blur 3x3 (sigma 0.8) p=0.2, RGB only;
4. random resized crop to ``size``: the short side scaled to ``size * U(0.5, 2.0)``, a random crop, padding with
   0 (images) and 255 (label);
5. normalisation from the spec (done by the dataset wrapper, see ``dataset.py``).

Validation: short side resized to ``size`` then both sides rounded up to a multiple of 32; label NEAREST.

Both transforms also take torch tensors (uint8 [3, H, W] images, [H, W] label) and return tensors in that layout;
the work is done on numpy/OpenCV either way.

Interpolation: dense representations (RGB, HHA, depth8) resize bilinearly; sparse ones (event frames, projected
LiDAR/radar) resize NEAREST so counts and ranges are never averaged with empty pixels (the reference resizes all
bilinearly). The rule is ``equiseg_ros.sensors.resize.resize_modality`` (re-exported here): the node's sensor front
end uses the same function, so training and vehicle agree.
"""
from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np

from equiseg_ros.sensors.resize import SPARSE_REPRESENTATIONS, is_sparse, resize, resize_modality
from equiseg_ros.spec import ModelSpec

__all__ = ["SPARSE_REPRESENTATIONS", "Sample", "TrainTransform", "Transform", "ValTransform", "color_jitter",
           "is_sparse", "random_resized_crop", "resize_modality"]

Sample = tuple[dict[str, np.ndarray], np.ndarray]


def _representations(spec: ModelSpec, images: dict[str, np.ndarray]) -> dict[str, str]:
    names = set(spec.modality_names)
    return {m: (spec.modality(m).representation if m in names else "rgb8") for m in images}


def color_jitter(rgb: np.ndarray, rng: np.random.Generator, strength: float = 0.5) -> np.ndarray:
    """Brightness, contrast and saturation, each by a factor ~U(1 - strength, 1 + strength)."""
    x = rgb.astype(np.float32)
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    x = x * b
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - gray.mean()) * c + gray.mean()
    gray = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    x = (x - gray) * s + gray
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _is_tensor(obj) -> bool:
    return type(obj).__module__.startswith("torch")


def _from_torch(images: dict, label) -> tuple[dict[str, np.ndarray], np.ndarray, bool]:
    """Torch CHW uint8 images and an HW label -> numpy HWC / HW; says whether to convert back."""
    if not (_is_tensor(label) or any(_is_tensor(v) for v in images.values())):
        return images, label, False
    imgs = {m: (v.permute(1, 2, 0).contiguous().numpy() if _is_tensor(v) else v) for m, v in images.items()}
    lab = label.numpy() if _is_tensor(label) else label
    return imgs, lab.astype(np.uint8), True


def _to_torch(images: dict[str, np.ndarray], label: np.ndarray) -> tuple[dict, object]:
    import torch

    return ({m: torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))) for m, v in images.items()},
            torch.from_numpy(np.ascontiguousarray(label)))


def random_resized_crop(images: dict[str, np.ndarray], label: np.ndarray, size: tuple[int, int],
                        reps: dict[str, str], rng: np.random.Generator, scale: tuple[float, float] = (0.5, 2.0),
                        ignore_index: int = 255) -> Sample:
    """The reference RandomResizedCrop: short side -> size * ratio, random crop, pad images 0 and label 255."""
    H, W = label.shape
    tH, tW = size
    ratio = rng.uniform(scale[0], scale[1])
    f = min(max(tH * ratio, tW * ratio) / max(H, W), min(tH * ratio, tW * ratio) / min(H, W))
    nH, nW = max(1, int(H * f + 0.5)), max(1, int(W * f + 0.5))
    y1 = int(rng.integers(0, max(nH - tH, 0) + 1))
    x1 = int(rng.integers(0, max(nW - tW, 0) + 1))
    out = {}
    for m, img in images.items():
        img = resize_modality(img, reps[m], nH, nW)[y1:y1 + tH, x1:x1 + tW]
        if img.shape[:2] != (tH, tW):
            pad = np.zeros((tH, tW) + img.shape[2:], img.dtype)
            pad[: img.shape[0], : img.shape[1]] = img
            img = pad
        out[m] = np.ascontiguousarray(img)
    lab = resize(label, nH, nW, nearest=True)[y1:y1 + tH, x1:x1 + tW]
    if lab.shape != (tH, tW):
        pad = np.full((tH, tW), ignore_index, np.uint8)
        pad[: lab.shape[0], : lab.shape[1]] = lab
        lab = pad
    return out, np.ascontiguousarray(lab)


class TrainTransform:
    """The reference training augmentation (module docstring) for the modalities of ``spec``."""

    def __init__(self, spec: ModelSpec, size: int | tuple[int, int], scale: tuple[float, float] = (0.5, 2.0),
                 p_jitter: float = 0.2, p_flip: float = 0.5, p_blur: float = 0.2, rgb_name: str = "rgb") -> None:
        self.spec = spec
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.scale, self.p_jitter, self.p_flip, self.p_blur = scale, p_jitter, p_flip, p_blur
        self.rgb_name = rgb_name

    def __call__(self, images: dict[str, np.ndarray], label: np.ndarray, rng: np.random.Generator) -> Sample:
        images, label, back = _from_torch(dict(images), label)
        out = self._apply(images, label, rng)
        return _to_torch(*out) if back else out

    def _apply(self, images: dict[str, np.ndarray], label: np.ndarray, rng: np.random.Generator) -> Sample:
        reps = _representations(self.spec, images)
        rgb = self.rgb_name if self.rgb_name in images else None
        if rgb and rng.random() < self.p_jitter:
            images[rgb] = color_jitter(images[rgb], rng)
        if rng.random() < self.p_flip:
            images = {m: np.ascontiguousarray(img[:, ::-1]) for m, img in images.items()}
            label = np.ascontiguousarray(label[:, ::-1])
        if rgb and rng.random() < self.p_blur:
            images[rgb] = cv2.GaussianBlur(images[rgb], (3, 3), 0.8)
        return random_resized_crop(images, label, self.size, reps, rng, self.scale, self.spec.ignore_index)


class ValTransform:
    """Short side -> ``size``, sides rounded up to a multiple of 32, label NEAREST; ``square``: size x size."""

    def __init__(self, spec: ModelSpec, size: int, square: bool = False) -> None:
        self.spec, self.size, self.square = spec, int(size), square

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if self.square:
            return self.size, self.size
        f = self.size / min(height, width)
        nH, nW = round(height * f), round(width * f)
        return int(math.ceil(nH / 32) * 32), int(math.ceil(nW / 32) * 32)

    def __call__(self, images: dict[str, np.ndarray], label: np.ndarray, rng: np.random.Generator | None = None
                 ) -> Sample:
        images, label, back = _from_torch(dict(images), label)
        reps = _representations(self.spec, images)
        H, W = self.output_size(*label.shape)
        out = {m: resize_modality(img, reps[m], H, W) for m, img in images.items()}
        lab = resize(label, H, W, nearest=True)
        return _to_torch(out, lab) if back else (out, lab)


Transform = Callable[[dict[str, np.ndarray], np.ndarray, np.random.Generator], Sample]
