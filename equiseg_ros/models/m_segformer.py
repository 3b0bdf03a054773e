"""SegFormer (one modality) and M-SegFormer (AnySeg's multimodal SegFormer, the backbone RMMSS builds on).

M-SegFormer runs ONE MiT encoder, shared by all modalities (the modalities are stacked on the batch axis), and feeds
the head the per-stage mean of the modalities' features. Here the mean is taken over the *present* modalities only
(a masked mean): an absent modality contributes nothing. With ``present`` all true and a zeroed input, the zero
features are averaged in, exactly as in the papers' benchmark setting. AnySeg's head width is 768 for every backbone.
"""
from __future__ import annotations

import torch

from equiseg_ros.models._base import SegModel
from equiseg_ros.models.fusion import masked_mean
from equiseg_ros.models.head import SegFormerHead
from equiseg_ros.models.mit import MiTConfig, MixTransformer
from equiseg_ros.spec import ModelSpec


class SegFormer(SegModel):
    """Single-modality SegFormer on the first modality of ``x`` (its spec has exactly one modality)."""

    arch = "segformer"

    def __init__(self, spec: ModelSpec, mit: MiTConfig, decoder_dim: int = 256, drop_path: float = 0.1) -> None:
        if spec.num_modalities != 1:
            spec = spec.with_modalities(spec.modality_names[:1])
        super().__init__(spec)
        self.encoder = MixTransformer(mit, drop_path=drop_path)
        self.head = SegFormerHead(mit.embed_dims, spec.num_classes, decoder_dim)

    def forward(self, x: torch.Tensor, present: torch.Tensor, return_features: bool = False):
        self.check_inputs(x, present)
        x0 = self.zero_absent(x[:, :1], present[:, :1])[:, 0]
        feats = self.encoder(x0)
        logits = self.head(feats)
        if return_features:
            return {"logits": logits, "modal_features": [feats], "fused_features": feats}
        return logits


class MSegFormer(SegModel):
    """One shared MiT for all modalities; per-stage masked mean over present modalities; SegFormer head."""

    arch = "m_segformer"

    def __init__(self, spec: ModelSpec, mit: MiTConfig, decoder_dim: int = 768, drop_path: float = 0.1) -> None:
        super().__init__(spec)
        self.encoder = MixTransformer(mit, drop_path=drop_path)
        self.head = SegFormerHead(mit.embed_dims, spec.num_classes, decoder_dim)

    def forward(self, x: torch.Tensor, present: torch.Tensor, return_features: bool = False):
        self.check_inputs(x, present)
        m = self.num_modalities
        x = x[:, :m]
        present = self.as_bool(present[:, :m])
        b = x.shape[0]
        x = self.zero_absent(x, present)
        stacked = self.encoder(x.reshape(b * m, x.shape[2], x.shape[3], x.shape[4]))
        per_stage = [f.reshape(b, m, f.shape[1], f.shape[2], f.shape[3]) for f in stacked]
        fused = [masked_mean(f, present) for f in per_stage]
        logits = self.head(fused)
        if return_features:
            modal = [[f[:, i] for f in per_stage] for i in range(m)]
            return {"logits": logits, "modal_features": modal, "fused_features": fused}
        return logits
