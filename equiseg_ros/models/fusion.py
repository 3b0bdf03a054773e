"""Presence-aware fusion building blocks: masked mean/max, Self-Query Hub, PPX (pooling mixer), cross-attention.

Every block takes the presence mask as a tensor and applies it arithmetically (``where``/multiply), never by Python
branching on tensor values, so an exported ONNX graph keeps ``present`` as a live input. An absent modality
contributes nothing to a max, a mean or the keys of an attention; when nothing is present the result is zeros (never
NaN).

Facts on the Self-Query Hub and PPX come from CMNeXt (peers.md §5); the code is ours.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from equiseg_ros.models.mit import DropPath, EfficientSelfAttention, channels_last, map_to_tokens, tokens_to_map


def _tracing() -> bool:
    """True while tracing, scripting, exporting to ONNX or compiling (those keep the plain graph)."""
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
                or torch.compiler.is_compiling())


def _expand_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B, M] -> [B, M, 1, 1, ...] broadcastable against ``like`` [B, M, ...]."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - 2))


def stack_maps(maps: list[torch.Tensor]) -> torch.Tensor:
    """Stack M maps [B, C, H, W] to [B, M, C, H, W] (as ``torch.stack(maps, 1)``) laid out [B, M, H, W, C] in memory,
    so each slice ``[:, i]`` is a dense channels-last map and reductions over M stay channels-last (``torch.stack``
    of channels-last maps interleaves M with C, and its slices and reductions fall back to copies in NCHW).
    Plain ``torch.stack`` in ONNX export, where memory layout does not exist and transposes would cost."""
    if _tracing():
        return torch.stack(maps, 1)
    return torch.stack([m.permute(0, 2, 3, 1) for m in maps], 1).permute(0, 1, 4, 2, 3)


def masked_mean(feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of ``feats`` [B, M, ...] counting only entries where ``mask`` [B, M] is true; zeros if none."""
    w = mask.to(feats.dtype)
    num = (feats * _expand_mask(w, feats)).sum(1)
    den = w.sum(1).clamp(min=1.0)
    return num / den.reshape(den.shape + (1,) * (num.ndim - 1))


def masked_max(feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-wise max over dim 1 of ``feats`` [B, M, ...] among entries where ``mask`` is true; zeros if none."""
    # Scalar fill values broadcast: a full_like/zeros_like here is constant-folded by the ONNX exporter into a
    # [B, M, C, H, W] initializer per stage (hundreds of MB at 1024²).
    m = _expand_mask(mask, feats)
    out = torch.where(m, feats, feats.new_full((), float("-inf"))).amax(1)
    anyp = _expand_mask(mask.to(feats.dtype).sum(1, keepdim=True) > 0, feats).squeeze(1)
    return torch.where(anyp, out, out.new_zeros(()))


def any_present(mask: torch.Tensor) -> torch.Tensor:
    """[B, M] bool -> [B] float: 1 where at least one entry is true."""
    return (mask.to(torch.float32).sum(1) > 0).to(torch.float32)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a [B, C, H, W] map (CMNeXt's channel-first LN)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _tracing():
            # Eager: the fused LayerNorm kernel over the channels-last view ([B, H, W, C], C innermost) in one pass
            # instead of nine elementwise passes. Same normalisation (biased variance, eps inside the root).
            y = F.layer_norm(channels_last(x).permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        u = x.mean(1, keepdim=True)  # the exported graph: plain ops over axis 1, no transposes
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class SelfQueryHub(nn.Module):
    """Self-Query Hub: per-modality score s_m = sigmoid(1x1(DW3x3(x_m))), x_m <- s_m * x_m + x_m, then the
    element-wise max over the modalities that the mask selects.

    ``score`` and ``fuse`` are separate so EQUISeg scores every modality once per stage and fuses a different
    subset (all but the primary) for each branch.
    """

    def __init__(self, dim: int, num_modalities: int) -> None:
        super().__init__()
        self.score_nets = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), nn.Conv2d(dim, 1, 1), nn.Sigmoid())
            for _ in range(num_modalities))

    def score(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """List of M maps [B, C, H, W] -> scored stack [B, M, C, H, W]."""
        return stack_maps([torch.addcmul(x, x, net(x)) for x, net in zip(feats, self.score_nets)])  # s*x + x

    @staticmethod
    def fuse(scored: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_max(scored, mask)

    def forward(self, feats: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.score(feats), mask)


class _PoolAttention(nn.Module):
    """Multi-scale pooling attention: DW7x7, then sigmoid(1x1(x + avgpool3 + avgpool7 + avgpool11)) gates the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.pools = nn.ModuleList(nn.AvgPool2d(k, stride=1, padding=k // 2, count_include_pad=False)
                                   for k in (3, 7, 11))
        self.conv4 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv0(x)
        z = y + self.pools[0](y)
        z = z + self.pools[1](y)
        z = z + self.pools[2](y)
        return torch.addcmul(x, torch.sigmoid(self.conv4(z)), x)  # sigmoid(...) * x + x in one pass


class _ConvMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x))))


class PPXBlock(nn.Module):
    """One Parallel Pooling Mixer block (CMNeXt's MSPA block): pooling attention with layer scale, a channel gate
    from global average pooling and a 1D conv, and a conv MLP with layer scale; output = gated x + MLP(x).

    Global pooling is ``mean`` over H, W (no adaptive pooling: it breaks ONNX export with dynamic sizes).
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = _PoolAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = _ConvMLP(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(1e-2 * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(1e-2 * torch.ones(dim))
        self.c_nets = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ls1, ls2 = self.layer_scale_1[:, None, None], self.layer_scale_2[:, None, None]
        if self.training and self.drop_path.p > 0:
            x = x + self.drop_path(ls1 * self.attn(self.norm1(x)))
        else:
            x = torch.addcmul(x, ls1, self.attn(self.norm1(x)))  # x + ls1 * attn in one pass
        g = x.mean((2, 3))  # [B, C]
        g = torch.sigmoid(self.c_nets(g.unsqueeze(1))).squeeze(1)  # 1D conv across channels
        if self.training and self.drop_path.p > 0:
            return x * g[:, :, None, None] + self.drop_path(ls2 * self.mlp(self.norm2(x)))
        return torch.addcmul(x * g[:, :, None, None], ls2, self.mlp(self.norm2(x)))


class PPX(nn.Module):
    """A stack of PPX blocks followed by a channel-first LayerNorm."""

    def __init__(self, dim: int, depth: int, mlp_ratio: float, drop_path: list[float] | None = None) -> None:
        super().__init__()
        dp = drop_path or [0.0] * depth
        self.blocks = nn.ModuleList(PPXBlock(dim, mlp_ratio, dp[j]) for j in range(depth))
        self.norm = LayerNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = channels_last(x)  # depthwise convs and avg_pool2d are several times faster in this layout on CPU
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class CrossModalAttention(EfficientSelfAttention):
    """Multi-head cross-attention softmax(Q K^T / sqrt(d)) V with queries from one map and keys/values from
    another, spatially reduced like MiT's efficient attention (a full-resolution key set is unaffordable at 1/4).

    ``key_mask`` [B, Nmaps] (optional, with ``kv`` a list of maps) hides whole key maps by an additive -1e4 bias;
    a query row with every key hidden yields zeros.
    """

    def forward(self, q_map: torch.Tensor, kv_map: torch.Tensor | list[torch.Tensor],  # type: ignore[override]
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = q_map.shape
        maps = kv_map if isinstance(kv_map, list) else [kv_map]
        kv_tokens = [self.reduce(map_to_tokens(m), m.shape[2], m.shape[3]) for m in maps]
        bias = None
        if key_mask is not None:
            # one additive bias per key token: 0 where its map is present, -1e4 where absent
            per_map = [(1.0 - key_mask[:, i:i + 1].to(q_map.dtype)) * -1e4 for i in range(len(maps))]
            bias = torch.cat([p.expand(b, t.shape[1]) for p, t in zip(per_map, kv_tokens)], dim=1)
            bias = bias[:, None, None, :]
        out = self.attend(map_to_tokens(q_map), torch.cat(kv_tokens, dim=1), bias)
        if key_mask is not None:
            out = out * any_present(key_mask).to(out.dtype)[:, None, None]
        return tokens_to_map(out, h, w)
