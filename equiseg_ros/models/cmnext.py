"""CMNeXt, the RGB-centric baseline: a MiT RGB branch and one auxiliary branch for all other modalities.

Per stage s (peers.md §5): the auxiliary modalities share one patch-embedding conv with a LayerNorm each; the
Self-Query Hub scores them and takes the element-wise max (only with more than one auxiliary modality); a PPX stack
(depths = the MiT depths, MLP ratios 8, 8, 4, 4) and a channel-first LayerNorm give the auxiliary feature x_f; FRM
rectifies the RGB feature and x_f against each other; FFM fuses them into the map the head sees. The RGB branch
continues from the rectified RGB feature; each auxiliary modality continues from its own map plus x_f. The head is
SegFormer's with width 512 for B2+ (256 for B0/B1). The ImageNet MiT loads into the RGB branch only.

Written from those facts, not from the reference code. **Two carries** between stages (``compat``):

- ``"none"`` (the project's semantics): each auxiliary modality continues from its raw patch-embedded map plus x_f.
- ``"deliver"`` (DELIVER's published function, what its checkpoints and the papers' CMNeXt numbers come from): the
  hub scores its input list in place, so with more than one auxiliary modality the maps carried on are the *scored*
  s*x + x, and each is read as [B, H, W, C] out of its [B, C, H, W] buffer (a reinterpretation, not a transpose)
  before x_f is added; with one auxiliary modality the next stage gets x_f alone. The reference has no notion of a
  missing sensor, so ``present`` only zero-fills (deployed output = benchmark output, never worse). MiT LayerNorm
  eps are 1e-5 everywhere there (set by build_model from ModelConfig).

With MiT-B2 and 25 classes: 58.73 M parameters for RGB-D-E-L and 25.79 M for RGB only,
as the reference (see test_models_counts).

**Presence** (compat "none"). The first modality is the RGB branch (zeroed when absent). Absent auxiliary modalities
are masked out of the hub's max; with no auxiliary modality present, x_f is zero, so FRM leaves RGB unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from equiseg_ros.models._base import SegModel
from equiseg_ros.models._cmx import FeatureFusion, FeatureRectify
from equiseg_ros.models.fusion import PPX, LayerNorm2d, SelfQueryHub, any_present
from equiseg_ros.models.head import SegFormerHead
from equiseg_ros.models.mit import PATCH_GEOMETRY, MiTConfig, MixTransformer, channels_last, drop_path_rates
from equiseg_ros.spec import ModelSpec

PPX_MLP_RATIOS = (8, 8, 4, 4)


class PatchEmbedParallel(nn.Module):
    """One strided conv shared by the auxiliary modalities, a separate channel-first LayerNorm per modality."""

    def __init__(self, cin: int, dim: int, geometry: tuple[int, int, int], num: int) -> None:
        super().__init__()
        k, s, p = geometry
        self.proj = nn.Conv2d(cin, dim, k, s, p)
        self.norms = nn.ModuleList(LayerNorm2d(dim) for _ in range(num))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [norm(self.proj(channels_last(x))) for x, norm in zip(xs, self.norms)]


class CMNeXt(SegModel):
    arch = "cmnext"

    def __init__(self, spec: ModelSpec, mit: MiTConfig, decoder_dim: int = 512, drop_path: float = 0.1,
                 compat: str = "none") -> None:
        super().__init__(spec)
        if compat not in ("none", "deliver"):
            raise ValueError(f"cmnext: compat must be 'none' or 'deliver', got {compat!r}")
        self.compat = compat
        dims = mit.embed_dims
        self.num_aux = self.num_modalities - 1
        self.encoder = MixTransformer(mit, drop_path=drop_path)
        if self.num_aux > 0:
            dpr = drop_path_rates(drop_path, mit.depths)
            a = self.num_aux
            self.extra_downsample_layers = nn.ModuleList(
                PatchEmbedParallel(3 if s == 0 else dims[s - 1], dims[s], PATCH_GEOMETRY[s], a) for s in range(4))
            self.extra_score_predictor = (nn.ModuleList(SelfQueryHub(d, a) for d in dims) if a > 1 else None)
            self.extra_ppx = nn.ModuleList(PPX(dims[s], mit.depths[s], PPX_MLP_RATIOS[s], dpr[s]) for s in range(4))
            self.frms = nn.ModuleList(FeatureRectify(d) for d in dims)
            self.ffms = nn.ModuleList(FeatureFusion(dims[s], mit.num_heads[s]) for s in range(4))
        self.head = SegFormerHead(dims, spec.num_classes, decoder_dim)

    def pretrained_encoders(self) -> list[MixTransformer]:
        return [self.encoder]  # RGB branch only; the auxiliary branch starts from random init

    def forward(self, x: torch.Tensor, present: torch.Tensor, return_features: bool = False):
        self.check_inputs(x, present)
        m = self.num_modalities
        present = self.as_bool(present[:, :m])
        x = self.zero_absent(x[:, :m], present)
        if self.compat == "deliver":  # the reference sees only the zero-filled tensors
            present = torch.ones_like(present)
        x_cam = x[:, 0]
        x_ext = [x[:, 1 + i] for i in range(self.num_aux)]
        aux_mask = present[:, 1:]
        has_aux = any_present(aux_mask).to(x.dtype)[:, None, None, None] if self.num_aux else None
        modal: list[list[torch.Tensor]] = [[] for _ in range(m)]
        outs = []
        for s in range(4):
            f_cam = self.encoder.forward_stage(s, x_cam)
            modal[0].append(f_cam)
            if self.num_aux == 0:
                outs.append(f_cam)
                x_cam = f_cam
                continue
            x_ext = self.extra_downsample_layers[s](x_ext)
            for i, e in enumerate(x_ext):
                modal[1 + i].append(e)
            scored = None
            if self.extra_score_predictor is not None:
                scored = self.extra_score_predictor[s].score(x_ext)
                x_f = SelfQueryHub.fuse(scored, aux_mask)
            else:
                x_f = x_ext[0]
            x_f = self.extra_ppx[s](x_f) * has_aux
            f_cam, x_f = self.frms[s](f_cam, x_f)
            outs.append(self.ffms[s](f_cam, x_f))
            x_cam = f_cam
            if s == 3:
                break
            if self.compat != "deliver":
                x_ext = [e + x_f for e in x_ext]
            elif scored is None:
                x_ext = [x_f]
            else:
                x_ext = [_as_bhwc(scored[:, i]) + x_f for i in range(self.num_aux)]
        logits = self.head(outs)
        if return_features:
            return {"logits": logits, "modal_features": modal, "fused_features": outs}
        return logits


def _as_bhwc(t: torch.Tensor) -> torch.Tensor:
    """DELIVER's carry quirk: a [B, C, H, W] map's elements, in logical (row-major) order, read as [B, H, W, C] and
    permuted back to [B, C, H, W] (``reshape`` follows the logical order whatever the memory format)."""
    b, c, h, w = t.shape
    return t.reshape(b, h, w, c).permute(0, 3, 1, 2)
