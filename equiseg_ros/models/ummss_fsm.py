"""UMMSS's released feature-selection module (RobustSeg/UMMSS ``mmkd/FSM.py`` ``TokenSelectionMultiModule``).

This is the FSM *as released* (facts from ../shared/fixtures/reference_models/README.md §3b), which differs from the
RMMSS paper's Eq. 6-8 (a 2-channel conv over the two stacked teacher tensors, ``training/losses/fsm.py``): per stage,
each of the two inputs gets its own CMNeXt-style score net (depthwise 3x3 over its C channels, 1x1 C->1, sigmoid),
the weighted map is ``w_i = s_i * x_i + x_i``, and every element of the output is the *unweighted* input whose
weighted map is larger there (ties go to the first). ``forward`` also returns ``[p, 1 - p]``, p = the mean over the 4
stages of the share of elements taken from the first input. No released script uses it; key names are the
reference's (``tokenselect{1-4}.extra_score_predictor.score_nets.{0,1}.{0,1}``), so its state dict loads strictly.
"""
from __future__ import annotations

import torch
from torch import nn

from equiseg_ros.models.fusion import SelfQueryHub
from equiseg_ros.models.mit import mit_config


class _TokenSelect(nn.Module):
    def __init__(self, dim: int, num_inputs: int) -> None:
        super().__init__()
        self.extra_score_predictor = SelfQueryHub(dim, num_inputs)

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element selection among ``xs`` -> (selected [B, C, H, W], share taken from ``xs[0]`` as a 0-d tensor)."""
        idx = self.extra_score_predictor.score(xs).argmax(1)  # first maximum on ties
        out = torch.stack(xs, 1).gather(1, idx.unsqueeze(1)).squeeze(1)
        return out, (idx == 0).float().mean()


class UMMSSTokenSelection(nn.Module):
    """``forward([a_s1..a_s4], [b_s1..b_s4]) -> ([fused_s1..fused_s4], [p, 1 - p])`` (see the module docstring)."""

    def __init__(self, backbone: str = "mit_b0", num_inputs: int = 2) -> None:
        super().__init__()
        dims = mit_config(backbone).embed_dims
        for s in range(4):
            setattr(self, f"tokenselect{s + 1}", _TokenSelect(dims[s], num_inputs))

    def forward(self, *inputs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[float]]:
        fused, shares = [], []
        for s in range(4):
            out, share = getattr(self, f"tokenselect{s + 1}")([x[s] for x in inputs])
            fused.append(out)
            shares.append(float(share))
        p = sum(shares) / len(shares)
        return fused, [p, 1.0 - p]
