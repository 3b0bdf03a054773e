"""Confusion-matrix metrics with the reference semantics of the DeLiVER / robustness-benchmark code.

Rows are ground truth, columns are predictions. ``miou()`` follows the reference exactly: per-class IoU with
NaN (class neither in the ground truth nor predicted) counted as 0, then the mean over ALL classes, in percent.
``miou_present()`` (mean over classes that occur in the ground truth) is reported beside it because on small or
filtered subsets (one weather condition, a few frames) absent classes otherwise pull the reference mean down.

The matrix lives on the model's device and is filled with one ``bincount`` per batch; DDP ranks merge theirs
with one all-reduce.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch


def _check_shapes(pred: torch.Tensor, label: torch.Tensor) -> None:
    if pred.shape != label.shape:
        raise ValueError(f"pred/label: shapes differ, pred {tuple(pred.shape)} vs label {tuple(label.shape)}")


def confusion_indices(pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat ``gt * K + pred`` indices of the labelled pixels and the mask that selected them.

    Raises ValueError when a prediction is outside ``0..K-1`` on a labelled pixel (a model emitting 255 or a
    wrong class count would otherwise silently corrupt the matrix).
    """
    _check_shapes(pred, label)
    label = label.long()
    pred = pred.to(device=label.device, dtype=torch.long)
    keep = label != ignore_index
    gt = label[keep]
    pr = pred[keep]
    if gt.numel():
        if int(gt.min()) < 0 or int(gt.max()) >= num_classes:
            raise ValueError(f"label: ids must be in 0..{num_classes - 1} or {ignore_index} (ignore), "
                             f"got range {int(gt.min())}..{int(gt.max())}")
        if int(pr.min()) < 0 or int(pr.max()) >= num_classes:
            raise ValueError(f"pred: class ids must be in 0..{num_classes - 1}, "
                             f"got range {int(pr.min())}..{int(pr.max())}")
    return gt * num_classes + pr, keep


class LabelKeys:
    """Per-batch precomputation of bincount keys from the ground truth, shared by every prediction of the batch.

    ``base = sample * K * K + gt * K`` on labelled pixels and ``B * K * K`` on ignored ones, so the confusion of a
    prediction is ``bincount(base + pred)`` with the ignored pixels landing in K spare bins that are dropped: one
    add and one bincount per prediction, no boolean compaction, and the label checked once per batch instead of once
    per protocol variant.
    """

    def __init__(self, label: torch.Tensor, num_classes: int, ignore_index: int) -> None:
        if label.dim() != 3:
            raise ValueError(f"label: expected [B, H, W] class ids, got shape {tuple(label.shape)}")
        label = label.long()
        k = num_classes
        valid = label != ignore_index
        if bool(valid.any()):
            lo, hi = torch.aminmax(label[valid])
            if int(lo) < 0 or int(hi) >= k:
                raise ValueError(f"label: ids must be in 0..{k - 1} or {ignore_index} (ignore), "
                                 f"got range {int(lo)}..{int(hi)}")
        b = label.shape[0]
        sample = torch.arange(b, device=label.device).view(b, 1, 1) * (k * k)
        self.base = torch.where(valid, sample + label * k, torch.full((), b * k * k, device=label.device))
        self.num_classes, self.batch = k, b
        self.shape = tuple(label.shape)

    def confusion(self, pred: torch.Tensor) -> torch.Tensor:
        """Per-sample confusion matrices int64 [B, K, K] of ``pred`` (class ids [B, H, W])."""
        if tuple(pred.shape) != self.shape:
            raise ValueError(f"pred/label: shapes differ, pred {tuple(pred.shape)} vs label {self.shape}")
        k, b = self.num_classes, self.batch
        pred = pred.to(device=self.base.device, dtype=torch.long)
        lo, hi = torch.aminmax(pred)
        if int(lo) < 0 or int(hi) >= k:  # rare slow path: out-of-range ids are fine on ignored pixels only
            ignored = self.base >= b * k * k
            bad = ~ignored & ((pred < 0) | (pred >= k))
            if bool(bad.any()):
                v = pred[bad]
                raise ValueError(f"pred: class ids must be in 0..{k - 1}, got range {int(v.min())}..{int(v.max())}")
            pred = pred.masked_fill(ignored, 0)
        counts = torch.bincount((self.base + pred).flatten(), minlength=b * k * k + k)
        return counts[: b * k * k].view(b, k, k)


def per_sample_confusion(pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int
                         ) -> torch.Tensor:
    """Confusion matrices of each sample of a batch, int64 [B, K, K], from a single ``bincount``.

    Used for per-condition breakdowns: the sample index is folded into the bincount key, so splitting the batch
    by weather condition costs nothing extra.
    """
    if pred.dim() != 3:
        raise ValueError(f"pred: expected [B, H, W] class ids, got shape {tuple(pred.shape)}")
    _check_shapes(pred, label)
    return LabelKeys(label, num_classes, ignore_index).confusion(pred)


class ConfusionMatrix:
    """Accumulates a K x K confusion matrix (int64, rows = ground truth) and derives IoU metrics in percent."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu") -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes: must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.mat = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)

    # ---- accumulation ------------------------------------------------------------------------------
    def update(self, pred: torch.Tensor, label: torch.Tensor) -> "ConfusionMatrix":
        """Add a batch: ``pred`` and ``label`` are class-id tensors of the same shape (any rank)."""
        idx, _ = confusion_indices(pred, label.to(self.mat.device), self.num_classes, self.ignore_index)
        self.mat += torch.bincount(idx, minlength=self.num_classes ** 2).view(self.num_classes, self.num_classes)
        return self

    def add(self, mat: torch.Tensor) -> "ConfusionMatrix":
        """Add an already computed [K, K] matrix (e.g. a sum of per-sample matrices)."""
        if tuple(mat.shape) != (self.num_classes, self.num_classes):
            raise ValueError(f"mat: expected shape {(self.num_classes, self.num_classes)}, got {tuple(mat.shape)}")
        self.mat += mat.to(self.mat.device, torch.int64)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix of the same shape (e.g. from another worker)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"merge: num_classes differ ({self.num_classes} vs {other.num_classes})")
        return self.add(other.mat)

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the matrix over DDP ranks (no-op when torch.distributed is not initialised)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat, op=dist.ReduceOp.SUM)
        return self

    def reset(self) -> None:
        self.mat.zero_()

    # ---- metrics -------------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        """Number of labelled pixels counted."""
        return int(self.mat.sum())

    def _iou_raw(self) -> torch.Tensor:
        m = self.mat.double()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        return tp / union  # NaN where the class is neither labelled nor predicted

    def per_class_iou(self) -> list[float]:
        """IoU per class in percent, NaN -> 0 (the reference's convention)."""
        return [float(v) for v in (self._iou_raw().nan_to_num(0.0) * 100.0).tolist()]

    def miou(self) -> float:
        """Reference mIoU in percent: NaN -> 0, mean over ALL classes."""
        return float(self._iou_raw().nan_to_num(0.0).mean() * 100.0)

    def present_classes(self) -> list[int]:
        """Classes that occur in the ground truth."""
        return [int(i) for i in torch.nonzero(self.mat.sum(1) > 0).flatten().tolist()]

    def miou_present(self) -> float:
        """Mean IoU in percent over the classes that occur in the ground truth (0 if nothing was labelled)."""
        present = self.mat.sum(1) > 0
        if not bool(present.any()):
            return 0.0
        return float(self._iou_raw()[present].nan_to_num(0.0).mean() * 100.0)

    def pixel_accuracy(self) -> float:
        """Overall pixel accuracy in percent over labelled pixels (0 if nothing was labelled)."""
        total = self.total
        return 100.0 * float(self.mat.diag().sum()) / total if total else 0.0

    def as_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Every figure as plain JSON-safe values."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"class_names: {len(names)} names for {self.num_classes} classes")
        return {
            "miou": self.miou(),
            "miou_present": self.miou_present(),
            "pixel_accuracy": self.pixel_accuracy(),
            "pixels": self.total,
            "per_class_iou": dict(zip(names, self.per_class_iou())),
        }
