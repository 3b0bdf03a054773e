"""A tiny network that honours the model contract, for tests and demos that must not wait for a real model.

``forward(x [B,M,3,H,W], present [B,M] bool) -> logits [B,K,H/4,W/4]``: each modality has its own strided conv,
absent modalities are multiplied out and the rest averaged (so ``present`` changes the output), then a head.
"""
from __future__ import annotations

import torch
from torch import nn

from equiseg_ros.spec import ModelSpec


class ToyModel(nn.Module):
    def __init__(self, spec: ModelSpec, width: int = 8) -> None:
        super().__init__()
        self.stems = nn.ModuleList(nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.ReLU())
                                   for _ in spec.modalities)
        self.head = nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, spec.num_classes, 1))

    def forward(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        w = present.to(x.dtype)  # [B, M]
        feats = torch.stack([stem(x[:, i]) for i, stem in enumerate(self.stems)], 1)  # [B, M, C, H/2, W/2]
        fused = (feats * w[:, :, None, None, None]).sum(1) / w.sum(1).clamp(min=1.0)[:, None, None, None]
        return self.head(fused)
