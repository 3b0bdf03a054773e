"""Dataset frames for the converter: one adapter over the dataset readers of ``equiseg_ros.data``.

The converter needs, per frame: the 8-bit representation of every modality (what the model was trained on), the
label, the condition / corner case, a name, the camera intrinsics and, with ``--raw``, the raw sensor forms. The
readers give these in their own shapes; this module is the only place that knows them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from equiseg_ros.spec import ModelSpec, get_preset

DATASETS = ("deliver", "muses", "synthetic")


class SourceError(RuntimeError):
    """The dataset cannot be opened (missing reader, wrong root, empty selection)."""


@dataclass
class SourceFrame:
    index: int
    name: str
    images: dict[str, np.ndarray]  # modality -> uint8 [H, W, 3] in the spec's representation
    label: np.ndarray  # uint8 [H, W]
    condition: str = ""
    corner_case: str = ""
    K: list[float] | None = None  # 3x3 row-major intrinsics of the camera the images are aligned to
    raw: Any = None  # RawFrame (metric depth, points, events, calibration) with --raw
    extra: dict[str, Any] = field(default_factory=dict)


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """First of ``names`` found as attribute or mapping key."""
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return default


def _to_uint8_hwc(a: Any, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[2] not in (1, 3):  # CHW -> HWC
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.dtype != np.uint8:
        raise SourceError(f"{what}: expected uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


class FrameSource:
    """Iterates the frames of a dataset split as :class:`SourceFrame`."""

    def __init__(self, dataset: str, root: str | Path, split: str, modalities: Sequence[str] | None = None,
                 conditions: Sequence[str] | None = None, corner_cases: Sequence[str] | None = None,
                 raw: bool = False, limit: int | None = None) -> None:
        if dataset not in DATASETS:
            raise SourceError(f"--dataset: unknown {dataset!r}; known: {list(DATASETS)}")
        self.dataset = dataset
        self.root = Path(root)
        if not self.root.exists():
            raise SourceError(f"--root {self.root}: does not exist")
        self.split = split
        self.spec: ModelSpec = get_preset(dataset, list(modalities) if modalities else None)
        self.raw = raw
        self.reader = self._open_reader(conditions, corner_cases)
        n = len(self.reader)
        if n == 0:
            raise SourceError(f"{dataset} at {self.root}, split {split!r}, conditions {list(conditions or [])}: "
                              "no frames")
        self.count = n if limit is None else max(0, min(n, int(limit)))

    def _open_reader(self, conditions: Sequence[str] | None, corner_cases: Sequence[str] | None) -> Any:
        mods = list(self.spec.modality_names)
        conds = list(conditions) if conditions else None
        try:
            if self.dataset == "muses":
                from equiseg_ros.data.muses import MusesReader
                # native size: the bag carries what the sensors gave; the node resizes to the model input
                return MusesReader(self.root, self.split, mods, conditions=conds, resize=None)
            from equiseg_ros.data.deliver import DeliverReader
            return DeliverReader(self.root, self.split, mods, conditions=conds,
                                 corner_cases=list(corner_cases) if corner_cases else None)
        except ImportError as exc:
            raise SourceError(f"the {self.dataset} reader is not available in this install: {exc}") from None
        except (FileNotFoundError, ValueError) as exc:
            raise SourceError(f"{self.dataset} at {self.root}: {exc}") from None

    def __len__(self) -> int:
        return self.count

    def frame(self, i: int) -> SourceFrame:
        item = self.reader[i]
        meta = _get(item, "meta", default={}) or {}
        images_in = _get(item, "images", "modalities", "inputs", default=None)
        if images_in is None:
            images_in = {m: _get(item, m) for m in self.spec.modality_names}
        images = {m: _to_uint8_hwc(images_in[m], f"frame {i} modality {m}") for m in self.spec.modality_names}
        label = np.asarray(_get(item, "label", "semantic", "target"))
        if label.ndim == 3:
            label = label[..., 0]
        name = str(_get(meta, "frame", "frame_id", "name", default=None) or i)
        cond = str(_get(meta, "condition", default=None) or _get(item, "condition", default="") or "")
        corner = str(_get(meta, "corner_case", default=None) or _get(item, "corner_case", default="") or "")
        k = _get(meta, "K", "intrinsics", default=None)
        if k is None:
            cam = _get(meta, "camera", default=None)
            k = _get(cam, "K", default=None) if cam is not None else None
        frame = SourceFrame(index=i, name=name, images=images, label=label.astype(np.uint8, copy=False),
                            condition=cond, corner_case=corner,
                            K=None if k is None else [float(v) for v in np.asarray(k, np.float64).reshape(-1)])
        if self.raw:
            frame.raw = self._raw(i, item, meta)
        return frame

    def _raw(self, i: int, item: Any, meta: Any) -> Any:
        try:
            from equiseg_ros.data.synthetic import load_raw_frame
        except ImportError as exc:
            raise SourceError(f"--raw: equiseg_ros.data.synthetic.load_raw_frame is not available: {exc}") from None
        record = _get(item, "record", default=None) or meta
        try:
            return load_raw_frame(self.root, record)
        except FileNotFoundError as exc:
            raise SourceError(f"--raw: the {self.dataset} dataset at {self.root} has no raw sensor data for frame "
                              f"{i} ({exc}); raw forms exist for the synthetic data") from None

    def __iter__(self) -> Iterator[SourceFrame]:
        for i in range(self.count):
            yield self.frame(i)
