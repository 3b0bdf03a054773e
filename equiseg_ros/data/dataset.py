"""The torch Dataset every consumer uses: a reader + a spec + a transform -> model-ready samples.

Sample (a dict): ``x`` float32 [M, 3, H, W] (modalities in spec order, normalised with the spec), ``present`` bool
[M] (all True for dataset frames), ``label`` int64 [H, W] (255 = ignore), ``meta`` {dataset, split, condition,
corner_case, frame, paths}. ``collate`` stacks x/present/label and keeps meta as a list.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np

from equiseg_ros.data._types import Frame, FrameRecord
from equiseg_ros.spec import ModelSpec


class Reader(Protocol):
    frames: list[FrameRecord]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Frame: ...


def _torch():
    import torch

    return torch


class SegmentationDataset:
    """``torch.utils.data.Dataset``-compatible (map-style): ``len`` and ``[i]`` -> sample dict.

    Augmentation randomness: a generator seeded from (torch's per-process seed, index, call count), so workers and
    epochs differ while ``seed`` makes a single-process run reproducible.
    """

    def __init__(self, reader: Reader, spec: ModelSpec, transform: Any = None, seed: int | None = None) -> None:
        missing = [m for m in spec.modality_names if m not in getattr(reader, "modalities", spec.modality_names)]
        if missing:
            raise ValueError(f"spec {spec.name!r} needs modalities {missing} that the reader does not load")
        self.reader, self.spec, self.transform, self.seed = reader, spec, transform, seed
        self._calls = 0
        mean, std = spec.norm_arrays()
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._bias = (-mean / std).astype(np.float32)

    @property
    def frames(self) -> list[FrameRecord]:
        return self.reader.frames

    def __len__(self) -> int:
        return len(self.reader)

    def _rng(self, index: int) -> np.random.Generator:
        self._calls += 1
        base = self.seed if self.seed is not None else _torch().initial_seed() % (2 ** 63)
        return np.random.default_rng([base, index, self._calls])

    def __getitem__(self, index: int) -> dict[str, Any]:
        torch = _torch()
        frame = self.reader[index]
        images = {m: frame.images[m] for m in self.spec.modality_names}
        label = frame.label
        if self.transform is not None:
            images, label = self.transform(images, label, self._rng(index))
        first = images[self.spec.modality_names[0]]
        x = np.empty((self.spec.num_modalities, 3) + first.shape[:2], np.float32)
        for i, m in enumerate(self.spec.modality_names):
            np.copyto(x[i], images[m].transpose(2, 0, 1), casting="unsafe")  # uint8 HWC -> float32 CHW
        x *= self._scale  # (v / 255 - mean) / std as one multiply-add
        x += self._bias
        return {
            "x": torch.from_numpy(x),
            "present": torch.ones(self.spec.num_modalities, dtype=torch.bool),
            "label": torch.from_numpy(label.astype(np.int64)),
            "meta": frame.meta,
        }


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``x``, ``present`` and ``label``; keep ``meta`` as a list (file paths do not stack)."""
    torch = _torch()
    return {"x": torch.stack([b["x"] for b in batch]), "present": torch.stack([b["present"] for b in batch]),
            "label": torch.stack([b["label"] for b in batch]), "meta": [b["meta"] for b in batch]}


def make_reader(data_cfg: Any, split: str) -> Reader:
    """The reader for ``data_cfg.dataset`` (synthetic data is read with the DeLiVER reader: same layout)."""
    conditions = list(data_cfg.conditions) or None
    corner_cases = list(data_cfg.corner_cases) or None
    if data_cfg.dataset in ("deliver", "synthetic"):
        from equiseg_ros.data.deliver import DeliverReader

        reader = DeliverReader(data_cfg.root, split, data_cfg.modalities, conditions=conditions,
                               corner_cases=corner_cases, depth_source=data_cfg.depth_source)
        if data_cfg.dataset == "synthetic":
            reader.dataset_name = "synthetic"
            reader.frames = [_relabel(r, "synthetic") for r in reader.frames]
        return reader
    if data_cfg.dataset == "muses":
        from equiseg_ros.data.muses import MusesReader

        return MusesReader(data_cfg.root, split, data_cfg.modalities, conditions=conditions,
                           resize=data_cfg.muses_resize)
    raise ValueError(f"dataset: unknown {data_cfg.dataset!r}")


def _relabel(record: FrameRecord, dataset: str) -> FrameRecord:
    from dataclasses import replace

    return replace(record, dataset=dataset)


def build_dataset(data_cfg: Any, split: str, train: bool, seed: int | None = None,
                  spec: ModelSpec | None = None) -> SegmentationDataset:
    """Reader + transforms from a ``DataConfig``: training augmentation when ``train``, else the val resize.

    ``spec`` (default: the dataset's own) decides the modality order and normalisation of the samples, so a model
    whose weights came with another normalisation (e.g. AnySeg's raw 0-255 MUSES inputs) is fed as it was trained.
    """
    from equiseg_ros.data.transforms import TrainTransform, ValTransform

    spec = spec or data_cfg.spec()
    reader = make_reader(data_cfg, split)
    size = data_cfg.image_size
    square = data_cfg.dataset == "synthetic" or (data_cfg.dataset == "muses" and data_cfg.muses_resize == "square")
    transform = TrainTransform(spec, size) if train else ValTransform(spec, size, square=square)
    return SegmentationDataset(reader, spec, transform, seed=seed)
