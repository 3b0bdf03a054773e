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
    """Project the four stages to width E, upsample to 1/4, concatenate (c4, c3, c2, c1), fuse, classify.

    **Eager inference takes an equal, cheaper route** (``reassociate``, on by default; not while training, tracing or
    exporting, so training and every exported graph are unchanged). ``linear_fuse`` is a 1x1 conv over the
    concatenation, i.e. a sum over the four slices of its weight; a per-pixel linear map commutes with bilinear
    upsampling (whose weights sum to 1, so biases commute too); and eval BatchNorm is an affine map per channel. So
    ``relu(bn(W [up(A4 c4 + a4); ...; A1 c1 + a1]))`` = ``relu(sum_i up(B_i c_i + b_i))`` with ``B_i = S W_i A_i``,
    ``b_i = S W_i a_i`` (+ the BN shift once), ``S`` the BN scale: the E x 4E conv at 1/4 resolution (26-40 % of a
    B2 model's multiply-accumulates at 512², with its concat, BN and ReLU passes over the biggest maps) becomes four
    C_i x E projections at each stage's own resolution. Same function; float rounding differs (~1e-6 relative).
    """

    #: Class-wide switch for the re-associated eval path (``summary`` turns it off to count the published MACs).
    reassociate: bool = True

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
        if self.reassociate and not self.training and not _tracing():
            return self._forward_reassociated(feats)
        size = feats[0].shape[2:]
        outs = []
        for i in reversed(range(len(feats))):
            y = getattr(self, f"linear_c{i + 1}")(feats[i])
            if i > 0:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            outs.append(y)
        x = self.linear_fuse(torch.cat(outs, dim=1))
        return self.linear_pred(self.dropout(x)).contiguous()  # logits in the usual NCHW layout for callers


    def _folded_weights(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B_i [E, C_i], b_i [E]) of stage ``i``: projection, its slice of the fuse conv and the BN scale composed."""
        bn = self.linear_fuse.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        e = self.embed_dim
        j = len(self.in_dims) - 1 - i  # stage i sits at slot j of the (c4, c3, c2, c1) concatenation
        w = self.linear_fuse.conv.weight[:, j * e:(j + 1) * e, 0, 0] * scale[:, None]  # [E, E]
        proj = getattr(self, f"linear_c{i + 1}").proj
        weight, bias = w @ proj.weight, w @ proj.bias
        if i == 0:  # the BN shift, added once (stage 1 is not upsampled)
            bias = bias + bn.bias - bn.running_mean * scale
        return weight, bias

    def _forward_reassociated(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Eval-mode forward equal to the published one (see the class docstring)."""
        h, w = feats[0].shape[2], feats[0].shape[3]
        fused = None
        for i in reversed(range(len(feats))):
            weight, bias = self._folded_weights(i)
            f = feats[i]
            y = tokens_to_map(F.linear(map_to_tokens(channels_last(f)), weight, bias), f.shape[2], f.shape[3])
            if i > 0:
                y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
            fused = y if fused is None else fused.add_(y)
        return self.linear_pred(F.relu_(fused)).contiguous()  # dropout is the identity in eval


def _tracing() -> bool:
    """True while tracing, scripting, exporting to ONNX or compiling: those see the published graph."""
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
                or torch.compiler.is_compiling())


def default_decoder_dim(arch: str, backbone: str) -> int:
    """The decoder width each paper uses with ``backbone`` (see the module docstring)."""
    small = backbone in ("mit_b0", "mit_b1")
    if arch == "m_segformer":
        return 768
    if arch == "cmnext":
        return 256 if small else 512
    return 256 if small else 768  # segformer, equiseg (EQUISeg follows SegFormer's head)
