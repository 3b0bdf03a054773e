"""The deployed graph: a segmentation network plus the post-processing a vehicle needs, in one exportable module.

DESIGN.md fixes what an exported artefact computes so every backend (PyTorch, ONNX Runtime, TensorRT) returns the
same thing: logits are upsampled to the input size, then the class id (argmax) and the maximum softmax probability
are taken inside the graph. Doing this on the accelerator saves copying ``K`` full-resolution planes to the host.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_NAMES = ("x", "present")
OUTPUT_NAMES = ("labels", "confidence")


class DeployedModel(nn.Module):
    """``forward(x f32 [B,M,3,H,W], present bool [B,M]) -> (labels u8 [B,H,W], confidence f16 [B,H,W])``.

    ``model`` follows the model contract (logits ``[B,K,h,w]`` at any ``h,w``; H/4 for the project's networks).
    Class ids must fit in uint8 (K <= 255, the spec's ignore index 255 stays free).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x, present)
        if isinstance(logits, (tuple, list)):  # a model that also returns features: the logits come first
            logits = logits[0]
        logits = F.interpolate(logits.float(), size=(x.shape[-2], x.shape[-1]), mode="bilinear",
                               align_corners=False)
        # max softmax = 1 / sum(exp(l - max l)): one reduction less than softmax + max, and numerically safe.
        top, labels = logits.max(dim=1)
        confidence = 1.0 / torch.exp(logits - top.unsqueeze(1)).sum(dim=1)
        return labels.to(torch.uint8), confidence.to(torch.float16)
