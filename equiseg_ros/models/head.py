"""SegFormer's all-MLP decode head, with the official parameter names (``linear_c{i}.proj``, ``linear_fuse.conv``,
``linear_fuse.bn``, ``linear_pred``) so HF/official SegFormer heads map onto it.

Decoder width by architecture (peers.md §4): SegFormer 256 for B0/B1 and 768 for B2+; CMNeXt 256 / 512;
M-SegFormer (AnySeg) 768 for every backbone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from equiseg_ros.models.mit import channels_last, map_to_tokens, tokens_to_map


class _MLP(nn.Module):
    """Per-pixel linear projection C_in -> E (a Linear named ``proj`` as in the official head)."""

    def __init__(self, cin: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cin, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        return tokens_to_map(self.proj(map_to_tokens(channels_last(x))), h, w)  # channels-last, no copies


class _ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class SegFormerHead(nn.Module):
    """Project the four stages to width E, upsample to 1/4, concatenate (c4, c3, c2, c1), fuse, classify."""

    def __init__(self, in_dims: tuple[int, ...], num_classes: int, embed_dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.in_dims = tuple(in_dims)
        self.embed_dim = embed_dim
        for i, c in enumerate(in_dims):
            setattr(self, f"linear_c{i + 1}", _MLP(c, embed_dim))
        self.linear_fuse = _ConvBNReLU(embed_dim * len(in_dims), embed_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[2:]
        outs = []
        for i in reversed(range(len(feats))):
            y = getattr(self, f"linear_c{i + 1}")(feats[i])
            if i > 0:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            outs.append(y)
        x = self.linear_fuse(torch.cat(outs, dim=1))
        return self.linear_pred(self.dropout(x)).contiguous()  # logits in the usual NCHW layout for callers


def default_decoder_dim(arch: str, backbone: str) -> int:
    """The decoder width each paper uses with ``backbone`` (see the module docstring)."""
    small = backbone in ("mit_b0", "mit_b1")
    if arch == "m_segformer":
        return 768
    if arch == "cmnext":
        return 256 if small else 512
    return 256 if small else 768  # segformer, equiseg (EQUISeg follows SegFormer's head)
