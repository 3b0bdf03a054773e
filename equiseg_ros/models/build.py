"""The model factory: ``build_model(ModelConfig, ModelSpec) -> nn.Module`` for every architecture of the project.

Every model follows the contract of :class:`equiseg_ros.models._base.SegModel` and exposes ``model.spec``,
``model.num_modalities`` and ``model.load_pretrained_backbone(path)``. ``cfg.pretrained`` (a local official
``mit_b*.pth``) is loaded here when set; nothing is ever downloaded.

Build on the meta device (``with torch.device("meta"): build_model(...)``) to count parameters of big models for free.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from equiseg_ros.config import ModelConfig
from equiseg_ros.models._state import load_state_dict_checked
from equiseg_ros.models.head import default_decoder_dim
from equiseg_ros.models.mit import LN_EPS_ALL_1E5, LN_EPS_OFFICIAL, MixTransformer, mit_config
from equiseg_ros.spec import ModelSpec

ARCHITECTURES = ("segformer", "m_segformer", "equiseg", "cmnext")

__all__ = ["ARCHITECTURES", "build_model", "resolved_mit_eps", "load_state_dict_checked", "load_checked_checkpoint",
           "count_params"]


def build_model(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    """Instantiate ``cfg.name`` for ``spec`` (modalities in the spec's order, ``spec.num_classes`` outputs)."""
    mit = mit_config(cfg.backbone)
    dim = cfg.decoder_dim or default_decoder_dim(cfg.name, cfg.backbone)
    if cfg.name == "segformer":
        from equiseg_ros.models.m_segformer import SegFormer

        model: nn.Module = SegFormer(spec, mit, dim, cfg.drop_path)
    elif cfg.name == "m_segformer":
        from equiseg_ros.models.m_segformer import MSegFormer

        model = MSegFormer(spec, mit, dim, cfg.drop_path)
    elif cfg.name == "equiseg":
        from equiseg_ros.models.equiseg import EQUISeg

        model = EQUISeg(spec, mit, dim, cfg.drop_path, fusion=cfg.fusion, cross_attention=cfg.cross_attention,
                        residual=cfg.residual)
    elif cfg.name == "cmnext":
        from equiseg_ros.models.cmnext import CMNeXt

        model = CMNeXt(spec, mit, dim, cfg.drop_path, compat=cfg.compat)
    else:
        raise ValueError(f"model.name: unknown architecture {cfg.name!r}; known: {list(ARCHITECTURES)}")
    eps = resolved_mit_eps(cfg)
    for enc in model.modules():
        if isinstance(enc, MixTransformer):
            enc.set_ln_eps(eps)
    if cfg.pretrained:
        model.load_pretrained_backbone(cfg.pretrained)
    return model


def resolved_mit_eps(cfg: ModelConfig) -> tuple[float, float, float, float]:
    """The MiT LayerNorm eps per family: ``cfg.mit_eps`` if set, else the compat source's, else the official split."""
    if cfg.mit_eps is not None:
        return tuple(float(e) for e in cfg.mit_eps)  # type: ignore[return-value]
    return LN_EPS_ALL_1E5 if cfg.compat == "deliver" else LN_EPS_OFFICIAL


def load_checked_checkpoint(model: nn.Module, ckpt: Mapping[str, Any]) -> None:
    """Load a checkpoint dict (``equiseg_ros.checkpoint.load_checkpoint``) into ``model``: the spec's modalities and
    classes must equal the model's (SegFormer: the first modality), then the state dict must match key by key (first
    mismatch named)."""
    spec = ckpt.get("spec")
    own = getattr(model, "spec", None)
    if spec is not None and own is not None:
        names = tuple(spec.modality_names)
        if getattr(model, "arch", "") == "segformer":
            names = names[:1]  # SegFormer narrows any spec to its first modality
        if names != tuple(own.modality_names):
            raise ValueError(f"checkpoint spec modalities {list(spec.modality_names)} != model's "
                             f"{list(own.modality_names)}")
        if tuple(spec.classes) != tuple(own.classes):
            raise ValueError(f"checkpoint spec has {spec.num_classes} classes, the model {own.num_classes}")
    load_state_dict_checked(model, ckpt["model"])


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
