"""Class prototypes of a feature map (EQUISeg Eq. 3, RMMSS Eq. 4) and the KL between prototype sets.

For a feature map f [B, d, h, w] and labels [B, H, W], the labels are NEAREST-downsampled to h x w and the
prototype of class c is the mean feature over the pixels labelled c. It is computed per sample, so a prototype
matrix is [B, K, d] with a mask [B, K] of the classes present in that sample (absent classes and ignored pixels are
excluded; the sum is divided by the count exactly once - the RMMSS reference divides twice).

The KL between two prototype sets treats, for every feature channel, the values over the present classes as
logits of a distribution over classes (softmax over the class axis), as the papers' ``sum_c f_t(c) log f_t(c)/f_s(c)``
reads. ``softmax_dim="channel"`` instead takes, per class, a distribution over channels.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

SoftmaxDim = Literal["class", "channel"]
Reduction = Literal["mean", "sum"]


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """NEAREST downsampling of int64 labels [B, H, W] to ``size``."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def class_prototypes(feat: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample class prototypes: ([B, K, d] means, [B, K] bool present-mask)."""
    b, d, h, w = feat.shape
    lab = downsample_labels(labels, (h, w)).reshape(b, h * w)
    valid = (lab != ignore_index) & (lab >= 0) & (lab < num_classes)
    idx = torch.where(valid, lab, torch.zeros_like(lab))
    onehot = torch.zeros(b, num_classes, h * w, device=feat.device, dtype=feat.dtype)
    onehot.scatter_(1, idx[:, None, :], valid[:, None, :].to(feat.dtype))
    counts = onehot.sum(-1)  # [B, K]
    sums = torch.bmm(onehot, feat.reshape(b, d, h * w).transpose(1, 2))  # [B, K, d]
    protos = sums / counts.clamp(min=1.0)[..., None]
    return protos, counts > 0


def prototype_kl(target: torch.Tensor, student: torch.Tensor, mask: torch.Tensor,
                 softmax_dim: SoftmaxDim = "class", reduction: Reduction = "mean") -> torch.Tensor:
    """KL(target || student) between prototype sets [B, K, d] over the classes in ``mask`` [B, K].

    Per sample: the sum over the distribution axis, averaged over the other axis; returns [B] (0 for a sample
    with no labelled class). ``reduction="mean"`` further divides by the length of the distribution axis (K
    classes, or d channels), which is what the reference's ``kl_div(..., reduction="mean")`` over the [K, d]
    prototype matrix computes - the scale the papers' weights (lambda=60, alpha=100) were tuned on; ``"sum"``
    is the textbook KL. Computed in float32 so AMP never underflows the log-probabilities.
    """
    target, student = target.float(), student.float()
    m = mask[..., None]  # [B, K, 1]
    if softmax_dim == "class":
        neg = -1e9  # far below any feature value, far from float32 overflow
        log_t = torch.log_softmax(target.masked_fill(~m, neg), dim=1)
        log_s = torch.log_softmax(student.masked_fill(~m, neg), dim=1)
        terms = (log_t.exp() * (log_t - log_s)).masked_fill(~m, 0.0).sum(1)  # [B, d]
        per_sample = terms.mean(-1)
        if reduction == "mean":
            per_sample = per_sample / target.shape[1]
    elif softmax_dim == "channel":
        log_t = torch.log_softmax(target, dim=2)
        log_s = torch.log_softmax(student, dim=2)
        terms = (log_t.exp() * (log_t - log_s)).sum(2)  # [B, K]
        per_sample = (terms * mask).sum(1) / mask.sum(1).clamp(min=1)
        if reduction == "mean":
            per_sample = per_sample / target.shape[2]
    else:
        raise ValueError(f"softmax_dim: expected 'class' or 'channel', got {softmax_dim!r}")
    return per_sample.clamp(min=0.0)
