"""What every network of the project shares: the input contract, pretrained loading and checked state loading."""
from __future__ import annotations

import torch
from torch import nn

from equiseg_ros.models._state import load_state_dict_checked  # noqa: F401  (re-exported)
from equiseg_ros.models.mit import MixTransformer, load_mit_checkpoint
from equiseg_ros.spec import ModelSpec


def _exporting() -> bool:
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
                or torch.onnx.is_in_onnx_export())


class SegModel(nn.Module):
    """Base of the segmentation networks: ``forward(x [B,M,3,H,W], present [B,M] bool, return_features=False)``.

    Returns logits [B, K, H/4, W/4], or with ``return_features`` a dict ``{"logits", "modal_features" (list over the
    modalities the model encodes, each a list over the 4 stages of [B, C_s, H_s, W_s]), "fused_features" (list over
    the 4 stages: what the head sees)}``.
    """

    arch: str = "base"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.num_modalities = spec.num_modalities
        self.num_classes = spec.num_classes

    # -- contract ------------------------------------------------------------------------------------------------
    def check_inputs(self, x: torch.Tensor, present: torch.Tensor) -> None:
        """Fail early with a clear message on wrong shapes (skipped while tracing/exporting/compiling)."""
        if _exporting():
            return
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"{self.arch}: x must be [B, M, 3, H, W], got {tuple(x.shape)}")
        if x.shape[1] < self.num_modalities:
            raise ValueError(f"{self.arch}: x has {x.shape[1]} modalities, the spec has {self.num_modalities} "
                             f"({list(self.spec.modality_names)})")
        if present.shape != x.shape[:2]:
            raise ValueError(f"{self.arch}: present must be [B, M] = {tuple(x.shape[:2])}, got {tuple(present.shape)}")
        if x.shape[3] % 32 or x.shape[4] % 32:
            raise ValueError(f"{self.arch}: H and W must be multiples of 32, got {tuple(x.shape[3:])}")

    @staticmethod
    def zero_absent(x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Zero the inputs of absent modalities (the deployed semantics: zero-filled *and* marked absent)."""
        return x * present.to(x.dtype)[:, :, None, None, None]

    @staticmethod
    def as_bool(present: torch.Tensor) -> torch.Tensor:
        return present if present.dtype == torch.bool else present > 0

    # -- weights -------------------------------------------------------------------------------------------------
    def pretrained_encoders(self) -> list[MixTransformer]:
        """The MiT encoders an ImageNet checkpoint initialises (overridden per architecture)."""
        return [m for m in self.modules() if isinstance(m, MixTransformer)]

    def load_pretrained_backbone(self, path: str) -> None:
        """Load an official ``mit_b*.pth`` (or HF SegFormer weights) into every pretrained encoder, strict."""
        for enc in self.pretrained_encoders():
            load_mit_checkpoint(enc, path)
