"""Modality balance (EQUISeg Table 3): cosine similarity between each modality's features and the fused feature.

A modality the fusion ignores has a fused feature that looks nothing like it (Table 3: event/LiDAR 8-11 % without the
Self-Guided Module, ~30 % with it). Use :class:`ModalityBalance` over an evaluation set, or :func:`modality_balance`
on one batch. Inputs are the ``return_features=True`` outputs of any model of the project.

Two ways of comparing maps (the paper does not say which it uses):
- ``"global"`` (default): each sample's [C, H, W] map is one vector;
- ``"pixel"``: cosine of the C-vectors at each pixel, averaged over pixels.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def stage_similarity(modal: torch.Tensor, fused: torch.Tensor, mode: str = "global") -> torch.Tensor:
    """Cosine similarity per sample [B] between two maps [B, C, H, W]."""
    if mode == "global":
        return F.cosine_similarity(modal.flatten(1).float(), fused.flatten(1).float(), dim=1, eps=1e-8)
    if mode == "pixel":
        return F.cosine_similarity(modal.float(), fused.float(), dim=1, eps=1e-8).flatten(1).mean(1)
    raise ValueError(f"mode: expected 'global' or 'pixel', got {mode!r}")


class ModalityBalance:
    """Running mean of the per-modality, per-stage cosine similarity to the fused feature.

    Samples where a modality is absent (``present`` false) are not counted for that modality.
    """

    def __init__(self, modality_names: Sequence[str], mode: str = "global") -> None:
        self.names = list(modality_names)
        self.mode = mode
        self.sums = torch.zeros(len(self.names), 4, dtype=torch.float64)
        self.counts = torch.zeros(len(self.names), dtype=torch.float64)

    @torch.no_grad()
    def update(self, features: dict, present: torch.Tensor | None = None) -> None:
        modal, fused = features["modal_features"], features["fused_features"]
        if len(modal) != len(self.names):
            raise ValueError(f"modal_features has {len(modal)} modalities, expected {len(self.names)} ({self.names})")
        b = fused[0].shape[0]
        for i, stages in enumerate(modal):
            keep = torch.ones(b, dtype=torch.bool) if present is None else present[:, i].bool().cpu()
            if not keep.any():
                continue
            for s, (f, g) in enumerate(zip(stages, fused)):
                sim = stage_similarity(f, g, self.mode).double().cpu()
                self.sums[i, s] += sim[keep].sum()
            self.counts[i] += keep.sum()

    def compute(self) -> dict[str, dict[str, object]]:
        """``{modality: {"stages": [4 floats], "mean": float}}`` (in [-1, 1]; NaN if the modality was never present)."""
        out = {}
        for i, name in enumerate(self.names):
            vals = (self.sums[i] / self.counts[i]).tolist() if self.counts[i] > 0 else [float("nan")] * 4
            out[name] = {"stages": vals, "mean": float(sum(vals) / 4)}
        return out


@torch.no_grad()
def modality_balance(model: torch.nn.Module, x: torch.Tensor, present: torch.Tensor,
                     mode: str = "global") -> dict[str, dict[str, object]]:
    """Run ``model`` on one batch and return its modality balance (see :meth:`ModalityBalance.compute`)."""
    names = list(model.spec.modality_names)
    acc = ModalityBalance(names, mode)
    acc.update(model(x, present, return_features=True), present[:, :len(names)])
    return acc.compute()
