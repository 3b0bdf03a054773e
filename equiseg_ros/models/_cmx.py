"""CMX's two fusion modules used by CMNeXt between its RGB and auxiliary branches (facts from peers.md §5).

FRM (feature rectification): channel weights from an MLP over the average- and max-pooled concatenation, spatial
weights from two 1x1 convs; each stream is rectified by the other: x1' = x1 + lc*cw2*x2 + ls*sw2*x2 (and vice versa).

FFM (feature fusion): a cross path with CMX's *efficient* cross-attention (the context K^T V is softmaxed over the key
axis and applied to the other stream's queries, linear in the number of tokens), then a channel embedding that merges
the two streams to one map, which goes to the head.

Global pools are ``mean``/``amax`` over H, W (no adaptive pooling, for ONNX export with dynamic sizes).
"""
from __future__ import annotations

import torch
from torch import nn

from equiseg_ros.models.mit import map_to_tokens, tokens_to_map


class FeatureRectify(nn.Module):
    def __init__(self, dim: int, reduction: int = 1, lambda_c: float = 0.5, lambda_s: float = 0.5) -> None:
        super().__init__()
        self.dim = dim
        self.lambda_c = lambda_c
        self.lambda_s = lambda_s
        self.channel_mlp = nn.Sequential(nn.Linear(4 * dim, 4 * dim // reduction), nn.ReLU(),
                                         nn.Linear(4 * dim // reduction, 2 * dim), nn.Sigmoid())
        self.spatial = nn.Sequential(nn.Conv2d(2 * dim, dim // reduction, 1), nn.ReLU(),
                                     nn.Conv2d(dim // reduction, 2, 1), nn.Sigmoid())

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cat = torch.cat([x1, x2], dim=1)
        pooled = torch.cat([cat.mean((2, 3)), cat.amax((2, 3))], dim=1)
        cw = self.channel_mlp(pooled).reshape(-1, 2, self.dim, 1, 1)
        sw = self.spatial(cat)
        # x1 + lc*cw*x2 + ls*sw*x2 as x1 + x2 * (lc*cw + ls*sw): two passes over the maps instead of four
        out1 = torch.addcmul(x1, x2, self.lambda_c * cw[:, 1] + self.lambda_s * sw[:, 1:2])
        out2 = torch.addcmul(x2, x1, self.lambda_c * cw[:, 0] + self.lambda_s * sw[:, 0:1])
        return out1, out2


class _EfficientCrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.kv1 = nn.Linear(dim, 2 * dim, bias=False)
        self.kv2 = nn.Linear(dim, 2 * dim, bias=False)

    def _split(self, u: torch.Tensor, kv: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = u.shape
        d = c // self.num_heads
        q = u.reshape(b, n, self.num_heads, d).transpose(1, 2)
        k, v = kv(u).reshape(b, n, 2, self.num_heads, d).permute(2, 0, 3, 1, 4)
        ctx = torch.softmax((k.transpose(-2, -1) @ v) * self.scale, dim=-2)  # [B, heads, d, d]
        return q, ctx

    def forward(self, u1: torch.Tensor, u2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q1, ctx1 = self._split(u1, self.kv1)
        q2, ctx2 = self._split(u2, self.kv2)
        b, n, c = u1.shape
        v1 = (q1 @ ctx2).transpose(1, 2).reshape(b, n, c)
        v2 = (q2 @ ctx1).transpose(1, 2).reshape(b, n, c)
        return v1, v2


class _CrossPath(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.channel_proj1 = nn.Linear(dim, 2 * dim)
        self.channel_proj2 = nn.Linear(dim, 2 * dim)
        self.cross_attn = _EfficientCrossAttention(dim, num_heads)
        self.end_proj1 = nn.Linear(2 * dim, dim)
        self.end_proj2 = nn.Linear(2 * dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y1, u1 = torch.relu(self.channel_proj1(x1)).chunk(2, dim=-1)
        y2, u2 = torch.relu(self.channel_proj2(x2)).chunk(2, dim=-1)
        v1, v2 = self.cross_attn(u1, u2)
        out1 = self.norm1(x1 + self.end_proj1(torch.cat([y1, v1], dim=-1)))
        out2 = self.norm2(x2 + self.end_proj2(torch.cat([y2, v2], dim=-1)))
        return out1, out2


class _ChannelEmbed(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.residual = nn.Conv2d(cin, cout, 1, bias=False)
        self.channel_embed = nn.Sequential(
            nn.Conv2d(cin, cout, 1), nn.Conv2d(cout, cout, 3, 1, 1, groups=cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 1), nn.BatchNorm2d(cout))
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.residual(x) + self.channel_embed(x))


class FeatureFusion(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.cross = _CrossPath(dim, num_heads)
        self.channel_emb = _ChannelEmbed(2 * dim, dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        h, w = x1.shape[2], x1.shape[3]
        t1, t2 = self.cross(map_to_tokens(x1), map_to_tokens(x2))
        return self.channel_emb(tokens_to_map(torch.cat([t1, t2], dim=-1), h, w))
