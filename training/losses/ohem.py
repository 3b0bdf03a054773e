"""OHEM cross-entropy as in the DeLiVER/CMNeXt recipe: learn from the hard pixels only.

A pixel is hard when the probability of its true class is below ``thresh`` (0.7, i.e. its CE loss is above
-log 0.7); at least ``n_valid // min_kept_div`` (1/16 of the labelled pixels) of the hardest are always kept so that
an easy batch still gives a gradient. Pixels labelled ``ignore_index`` never count.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of [B, K, h, w] logits to the label size (the models return H/4 x W/4)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def ohem_select(pixel_loss: torch.Tensor, valid: torch.Tensor, thresh: float, min_kept_div: int) -> torch.Tensor:
    """Indices-free selection: the per-pixel losses (1-D, valid pixels only) that OHEM keeps."""
    losses = pixel_loss[valid]
    n_valid = losses.numel()
    if n_valid == 0:
        return losses
    n_min = max(n_valid // min_kept_div, 1)
    loss_thresh = -math.log(thresh)
    hard = losses[losses > loss_thresh]
    if hard.numel() < n_min:
        hard, _ = torch.topk(losses, n_min)
    return hard


class OhemCrossEntropy(nn.Module):
    """Online hard example mining CE (ignore 255, thresh 0.7, keep >= n_valid/16)."""

    def __init__(self, ignore_index: int = 255, thresh: float = 0.7, min_kept_div: int = 16,
                 weight: torch.Tensor | None = None) -> None:
        super().__init__()
        if not 0.0 < thresh < 1.0:
            raise ValueError(f"thresh: must be in (0, 1), got {thresh}")
        self.ignore_index = ignore_index
        self.thresh = thresh
        self.min_kept_div = min_kept_div
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``logits`` [B, K, h, w] (upsampled to ``labels`` [B, H, W] here); returns the mean kept loss."""
        logits = upsample_logits(logits, tuple(labels.shape[-2:]))
        pixel = F.cross_entropy(logits.float(), labels, weight=self.weight, ignore_index=self.ignore_index,
                                reduction="none").reshape(-1)
        valid = (labels != self.ignore_index).reshape(-1)
        kept = ohem_select(pixel, valid, self.thresh, self.min_kept_div)
        if kept.numel() == 0:  # nothing labelled: a zero that still depends on the graph
            return logits.sum() * 0.0
        return kept.mean()
