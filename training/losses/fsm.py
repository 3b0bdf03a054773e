"""Feature Selection Module (RMMSS Eq. 6-8): merge two teachers' outputs element by element.

The two teachers' tensors are stacked as 2 channels; a 3x3 depthwise conv gives f^ (Eq. 6), a 1x1 conv 2->1 and a
sigmoid give the score S (Eq. 7), and each output element is taken from the teacher whose channel of
``f_t + S * f^`` is larger (Eq. 8). The last two dimensions are the conv's spatial axes, everything before is batch:
logits [B, K, h, w] are scored per class map, prototypes [B, K, d] as one K x d map per sample.

The paper's argmax has no gradient and its Appendix B.2 (the FSM's gradient path) is not available, so
``gradient`` chooses:
- ``straight_through`` (default): the forward value is the hard selection of Eq. 8, the backward pass goes through
  the softmax over the two channels of ``f_t + S * f^`` - the targets stay exactly one teacher's values, and the
  FSM still learns from the distillation losses it feeds;
- ``soft``: the softmax-weighted mixture in both passes (a blend, not a selection);
- ``none``: Eq. 8 literally; the FSM keeps its initial weights.

The two inputs must be on one scale ("normalized to a unified scale", RMMSS §FSM): selecting on raw values picks the
larger magnitude. ``training.methods.unify_teachers`` does that before this module (``loss.fsm_normalize``);
``loss.fsm_mode: basic`` replaces the FSMs with RMMSS Table 4's fixed 0.5 / 0.5 weighting of the two teachers.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Gradient = Literal["straight_through", "soft", "none"]


class FeatureSelectionModule(nn.Module):
    """Trainable per-element selection between two teachers' tensors of equal shape (see module docstring)."""

    def __init__(self, gradient: Gradient = "straight_through", temperature: float = 1.0) -> None:
        super().__init__()
        if gradient not in ("straight_through", "soft", "none"):
            raise ValueError(f"gradient: expected straight_through|soft|none, got {gradient!r}")
        self.dw = nn.Conv2d(2, 2, kernel_size=3, padding=1, groups=2)  # Eq. 6: DepthwiseConv3x3(2, 2)
        self.pw = nn.Conv2d(2, 1, kernel_size=1)  # Eq. 7: Conv1x1(2, 1), then sigmoid
        self.gradient = gradient
        self.temperature = temperature
        self.last_fraction_first: float = float("nan")  # share of elements taken from teacher 1 (for logging)

    def scores(self, stacked: torch.Tensor) -> torch.Tensor:
        """``f_t + S * f^`` for stacked [N, 2, H, W] inputs (the quantity Eq. 8 takes the argmax of)."""
        f_hat = self.dw(stacked)
        s = torch.sigmoid(self.pw(f_hat))
        return stacked + s * f_hat

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        if first.shape != second.shape:
            raise ValueError(f"FSM: teacher outputs differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}")
        if first.dim() < 2:
            raise ValueError(f"FSM: need at least 2 dimensions, got shape {tuple(first.shape)}")
        shape = first.shape
        h, w = shape[-2], shape[-1]
        stacked = torch.stack([first.reshape(-1, h, w), second.reshape(-1, h, w)], dim=1).float()  # [N, 2, H, W]
        m = self.scores(stacked)
        take_first = m[:, 0] >= m[:, 1]
        hard = torch.where(take_first, stacked[:, 0], stacked[:, 1])
        self.last_fraction_first = float(take_first.float().mean())
        if self.gradient == "none":
            out = hard
        else:
            weights = torch.softmax(m / self.temperature, dim=1)
            soft = (weights * stacked).sum(1)
            out = soft if self.gradient == "soft" else hard + (soft - soft.detach())
        return out.reshape(shape).to(first.dtype)
