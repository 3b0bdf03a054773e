"""Mix Transformer (MiT-B0..B5), the SegFormer encoder, with the official parameter names.

Names follow the official ImageNet checkpoints ``mit_b*.pth`` (``patch_embed{i}``, ``block{i}.{j}.attn.q``, ``norm{i}``
...), so they load with ``strict=True`` once the classifier ``head.*`` is dropped. HuggingFace ``transformers``
SegFormer state dicts are converted to these names by :func:`hf_to_official` (``attention.self.key``/``value`` are
concatenated into ``attn.kv``).

LayerNorm eps per layer family (:data:`LN_EPS_FAMILIES`): the official MiT uses 1e-5 in the patch embedding and in
attention's spatial-reduction norm (plain ``nn.LayerNorm``) and 1e-6 in the block and stage norms; DELIVER's CMNeXt
and HuggingFace use 1e-5 everywhere. The default is the official split; :meth:`MixTransformer.set_ln_eps` sets what
a converted checkpoint's source computed with (``ModelConfig.mit_eps``).

Export notes: attention uses ``F.scaled_dot_product_attention`` (exports with the legacy ONNX exporter, fast in eager);
no adaptive pooling; every reshape takes its sizes from the traced tensor shapes so H and W stay dynamic in ONNX.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MiTConfig:
    """Widths, depths, heads and spatial-reduction ratios of one MiT variant (SegFormer paper, Table 6)."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4


MIT_CONFIGS: dict[str, MiTConfig] = {
    "mit_b0": MiTConfig((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": MiTConfig((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": MiTConfig((64, 128, 320, 512), (3, 4, 6, 3)),
    "mit_b3": MiTConfig((64, 128, 320, 512), (3, 4, 18, 3)),
    "mit_b4": MiTConfig((64, 128, 320, 512), (3, 8, 27, 3)),
    "mit_b5": MiTConfig((64, 128, 320, 512), (3, 6, 40, 3)),
}

# LayerNorm eps per family: (patch embedding, attention spatial reduction, block norm1/norm2, stage norm{i}).
LN_EPS_FAMILIES = ("patch_embed", "sr", "block", "stage")
LN_EPS_OFFICIAL: tuple[float, float, float, float] = (1e-5, 1e-5, 1e-6, 1e-6)
LN_EPS_ALL_1E5: tuple[float, float, float, float] = (1e-5, 1e-5, 1e-5, 1e-5)

# Patch embedding geometry per stage: (kernel, stride, padding).
PATCH_GEOMETRY = ((7, 4, 3), (3, 2, 1), (3, 2, 1), (3, 2, 1))


def mit_config(name: str) -> MiTConfig:
    if name not in MIT_CONFIGS:
        raise ValueError(f"backbone: unknown MiT variant {name!r}; known: {sorted(MIT_CONFIGS)}")
    return MIT_CONFIGS[name]


def drop_path_rates(total: float, depths: tuple[int, ...]) -> list[list[float]]:
    """Linear stochastic-depth schedule 0..total over all blocks, split per stage."""
    n = sum(depths)
    rates = [total * i / max(n - 1, 1) for i in range(n)]
    out, k = [], 0
    for d in depths:
        out.append(rates[k:k + d])
        k += d
    return out


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def tokens_to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B, H*W, C] -> [B, C, H, W], a channels-last *view* of contiguous tokens (no copy).

    Tokens are already channels-last in memory; keeping maps in that layout lets convolutions (depthwise ones above
    all), pooling and the next :func:`map_to_tokens` run without a transposing copy. Values equal the NCHW copy's.
    """
    return x.reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C]; a view when ``x`` is channels-last, a strided view (copied later) otherwise."""
    return x.flatten(2).transpose(1, 2)


def _tracing() -> bool:
    """True while tracing, scripting, exporting to ONNX or compiling: those see the plain graph."""
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
                or torch.compiler.is_compiling())


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory (a no-op when it already is, and in ONNX export)."""
    return x.contiguous(memory_format=torch.channels_last)


class OverlapPatchEmbed(nn.Module):
    """Strided convolution with overlapping windows, then LayerNorm over channels."""

    def __init__(self, in_chans: int, embed_dim: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel, stride, padding)
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS_OFFICIAL[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(channels_last(x))  # channels-last output: the tokens below are a view of it
        h, w = x.shape[2], x.shape[3]
        return self.norm(map_to_tokens(x)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values are spatially reduced by a strided conv (ratio ``sr``)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention: dim {dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=LN_EPS_OFFICIAL[1])

    def reduce(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Tokens used for keys and values (spatially reduced when ``sr_ratio > 1``)."""
        if self.sr_ratio > 1:
            return self.norm(map_to_tokens(self.sr(tokens_to_map(x, h, w))))
        return x

    def attend(self, q_tokens: torch.Tensor, kv_tokens: torch.Tensor,
               attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = q_tokens.shape
        d = c // self.num_heads
        q = self.q(q_tokens).reshape(b, n, self.num_heads, d).transpose(1, 2)
        kv = self.kv(kv_tokens).reshape(b, -1, 2, self.num_heads, d).permute(2, 0, 3, 1, 4)
        bias = attn_bias.to(q.dtype) if attn_bias is not None else None  # autocast: match the query dtype
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.attend(x, self.reduce(x, h, w))


class DWConv(nn.Module):
    """Depthwise 3x3 conv on tokens (the positional part of Mix-FFN)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return map_to_tokens(self.dwconv(tokens_to_map(x, h, w)))


class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
    """Pre-norm transformer block: efficient self-attention + Mix-FFN, each with stochastic depth."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS_OFFICIAL[2])
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS_OFFICIAL[2])
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if not torch.is_grad_enabled() and not _tracing():
            # inference: residuals added in place (no new [B, N, C] buffer per add; drop path is the identity)
            x = x.add_(self.attn(self.norm1(x), h, w))  # x is this forward's own buffer (patch embedding)
            return x.add_(self.mlp(self.norm2(x), h, w))
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixTransformer(nn.Module):
    """Four-stage MiT encoder; ``forward`` returns the four feature maps [B, C_s, H/2^(s+2), W/2^(s+2)].

    ``forward_stage(s, x)`` runs one stage on a map so fusion models (EQUISeg, CMNeXt) can interleave their own
    modules between stages.
    """

    def __init__(self, cfg: MiTConfig, in_chans: int = 3, drop_path: float = 0.1) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_dims = cfg.embed_dims
        dpr = drop_path_rates(drop_path, cfg.depths)
        for s in range(4):
            k, st, p = PATCH_GEOMETRY[s]
            cin = in_chans if s == 0 else cfg.embed_dims[s - 1]
            setattr(self, f"patch_embed{s + 1}", OverlapPatchEmbed(cin, cfg.embed_dims[s], k, st, p))
            setattr(self, f"block{s + 1}", nn.ModuleList(
                Block(cfg.embed_dims[s], cfg.num_heads[s], cfg.mlp_ratio, cfg.sr_ratios[s], dpr[s][j])
                for j in range(cfg.depths[s])))
            setattr(self, f"norm{s + 1}", nn.LayerNorm(cfg.embed_dims[s], eps=LN_EPS_OFFICIAL[3]))
        self.apply(_init_weights)
        for s in range(4):
            # A zero patch-embedding bias maps an all-zero patch (empty LiDAR/event area, a dropped modality) to an
            # exactly-zero token; LayerNorm then scales its gradient by 1/sqrt(eps) = 1000 per norm, compounding to
            # inf through the stages. A small random bias (as pretrained weights have) keeps such tokens non-constant.
            nn.init.normal_(getattr(self, f"patch_embed{s + 1}").proj.bias, 0.0, 0.1)

    def ln_eps(self) -> tuple[float, float, float, float]:
        """The eps of each LayerNorm family (:data:`LN_EPS_FAMILIES`), read from the first layer of each."""
        blk = self.block1[0]
        return (self.patch_embed1.norm.eps, blk.attn.norm.eps if blk.attn.sr_ratio > 1 else LN_EPS_OFFICIAL[1],
                blk.norm1.eps, self.norm1.eps)

    def set_ln_eps(self, eps: tuple[float, float, float, float] | list[float]) -> None:
        """Set the LayerNorm eps per family (patch embedding, spatial reduction, block, stage): what the source of
        a checkpoint computed with. Numerically visible on zero inputs (a missing modality), see ModelConfig."""
        if len(eps) != 4 or any(not e > 0 for e in eps):
            raise ValueError(f"mit_eps: need 4 positive values {LN_EPS_FAMILIES}, got {list(eps)}")
        pe, sr, blk_eps, st = (float(e) for e in eps)
        for s in range(1, 5):
            getattr(self, f"patch_embed{s}").norm.eps = pe
            getattr(self, f"norm{s}").eps = st
            for blk in getattr(self, f"block{s}"):
                blk.norm1.eps = blk_eps
                blk.norm2.eps = blk_eps
                if blk.attn.sr_ratio > 1:
                    blk.attn.norm.eps = sr

    def forward_stage(self, s: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``s`` (0-based): map [B, C_in, H, W] -> map [B, C_s, H', W']."""
        tokens, h, w = getattr(self, f"patch_embed{s + 1}")(x)
        for blk in getattr(self, f"block{s + 1}"):
            tokens = blk(tokens, h, w)
        return tokens_to_map(getattr(self, f"norm{s + 1}")(tokens), h, w)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for s in range(4):
            x = self.forward_stage(s, x)
            feats.append(x)
        return feats


def _init_weights(m: nn.Module) -> None:
    """SegFormer's init: truncated normal for linears, fan-out normal for convs, unit LayerNorm."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# ---- checkpoints ----------------------------------------------------------------------------------------------

# HuggingFace SegFormer names. Hub files (transformers 4.x, ``segformer.encoder.block.0.0...``) and the in-memory
# names of transformers >= 5 (``segformer.stages.0.blocks.0...``, renamed on load by its conversion mapping) both
# map here; ``segformer.`` is dropped first (``SegformerModel`` has no prefix).
_HF_RULES: tuple[tuple[str, str], ...] = (
    (r"^encoder\.patch_embeddings\.(\d+)\.proj\.", "patch_embed{0}.proj."),
    (r"^encoder\.patch_embeddings\.(\d+)\.layer_norm\.", "patch_embed{0}.norm."),
    (r"^encoder\.layer_norm\.(\d+)\.", "norm{0}."),
    (r"^stages\.(\d+)\.patch_embeddings\.proj\.", "patch_embed{0}.proj."),
    (r"^stages\.(\d+)\.patch_embeddings\.layer_norm\.", "patch_embed{0}.norm."),
    (r"^stages\.(\d+)\.layer_norm\.", "norm{0}."),
    (r"^decode_head\.linear_c\.(\d+)\.proj\.", "linear_c{0}.proj."),
    (r"^decode_head\.linear_projections\.(\d+)\.proj\.", "linear_c{0}.proj."),
    (r"^decode_head\.linear_fuse\.", "linear_fuse.conv."),
    (r"^decode_head\.batch_norm\.", "linear_fuse.bn."),
    (r"^decode_head\.classifier\.", "linear_pred."),
)
_HF_BLOCK_PARTS: tuple[tuple[str, str], ...] = (
    ("layer_norm_1.", "norm1."), ("layer_norm_2.", "norm2."),  # transformers 4 / hub
    ("attention.self.query.", "attn.q."), ("attention.self.sr.", "attn.sr."),
    ("attention.self.layer_norm.", "attn.norm."), ("attention.output.dense.", "attn.proj."),
    ("mlp.dense1.", "mlp.fc1."), ("mlp.dense2.", "mlp.fc2."), ("mlp.dwconv.dwconv.", "mlp.dwconv.dwconv."),
    ("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."),  # transformers >= 5 in memory
    ("attention.q_proj.", "attn.q."), ("attention.o_proj.", "attn.proj."),
    ("attention.sequence_reduction.sequence_reduction.", "attn.sr."),
    ("attention.sequence_reduction.layer_norm.", "attn.norm."),
    ("mlp.fc1.", "mlp.fc1."), ("mlp.fc2.", "mlp.fc2."),
)
_HF_KV = r"^attention\.(?:self\.(key|value)|(k|v)_proj)\.(weight|bias)$"


def is_hf_state_dict(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("segformer.", "encoder.patch_embeddings", "decode_head.linear_c", "stages.",
                             "decode_head.linear_projections")) for k in sd)


def hf_to_official(sd: Mapping[str, torch.Tensor], drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Rename a HuggingFace SegFormer state dict (``SegformerForSemanticSegmentation`` or ``SegformerModel``; hub
    names or the in-memory names of transformers >= 5) to the official MiT / SegFormer-head names; key and value
    projections are concatenated into ``attn.kv``. Keys starting with a prefix in ``drop`` are skipped (e.g. the
    image classifier ``classifier.``).

    Raises ValueError naming the first key it cannot map.
    """
    out: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, val in sd.items():
        if key.startswith(drop):
            continue
        k = key[len("segformer."):] if key.startswith("segformer.") else key
        m = re.match(r"^(?:encoder\.block|stages)\.(\d+)\.(?:blocks\.)?(\d+)\.(.*)$", k)
        if m:
            prefix = f"block{int(m.group(1)) + 1}.{m.group(2)}."
            rest = m.group(3)
            kv = re.match(_HF_KV, rest)
            if kv:
                part = "key" if (kv.group(1) or kv.group(2)) in ("key", "k") else "value"
                pending.setdefault(prefix + "attn.kv." + kv.group(3), {})[part] = val
                continue
            for src, dst in _HF_BLOCK_PARTS:
                if rest.startswith(src):
                    out[prefix + dst + rest[len(src):]] = val
                    break
            else:
                raise ValueError(f"HF SegFormer key {key!r}: no mapping to the official names")
            continue
        for pattern, repl in _HF_RULES:
            m = re.match(pattern, k)
            if m:
                idx = [str(int(g) + 1) for g in m.groups()]
                out[repl.format(*idx) + k[m.end():]] = val
                break
        else:
            raise ValueError(f"HF SegFormer key {key!r}: no mapping to the official names")
    for name, parts in pending.items():
        if set(parts) != {"key", "value"}:
            raise ValueError(f"HF SegFormer: {name} needs both key and value projections, got {sorted(parts)}")
        out[name] = torch.cat([parts["key"], parts["value"]], dim=0)
    return out


def encoder_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official or HF checkpoint -> encoder-only state dict in official names (classifier and head dropped)."""
    if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if is_hf_state_dict(sd):
        sd = hf_to_official(sd, drop=("classifier.",))  # SegformerForImageClassification's classifier
    head = ("head.", "linear_c", "linear_fuse.", "linear_pred.", "decode_head.")
    out = {}
    for k, v in sd.items():
        k = k[len("backbone."):] if k.startswith("backbone.") else k
        if not k.startswith(head):
            out[k] = v
    return out


def load_mit_checkpoint(encoder: MixTransformer, path: str) -> None:
    """Load an official ``mit_b*.pth`` (or a HF SegFormer state dict) into ``encoder`` with ``strict=True``."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pretrained: {p} does not exist (official mit_b*.pth are never downloaded)")
    sd = torch.load(p, map_location="cpu", weights_only=True)
    from equiseg_ros.models._state import load_state_dict_checked

    try:
        load_state_dict_checked(encoder, encoder_state_dict(sd))
    except ValueError as exc:
        raise ValueError(f"pretrained: {p}: {exc}") from None
