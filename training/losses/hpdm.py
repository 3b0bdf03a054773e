"""Hybrid Prototype Distillation (RMMSS Eq. 5): cross-modal KD between student and teacher class prototypes.

Each step draws a random permutation pi of the M modalities; student modality pi(m) learns from the (frozen)
teacher's modality m, at each of the four stages:
``L_hp = 1/N sum_n sum_i sum_m KL(g_m^{n,i} || p_pi(m)^{n,i})``.

Choices the paper leaves open (documented, switchable):
- KL direction: teacher prototypes are the target distribution (forward KL, as the reference code's
  ``kl_div(log_softmax(student), softmax(teacher))``), softmax over the class axis (see ``prototypes.py``).
- A term whose student modality pi(m) is missing in sample n (modality dropout) is left out by default: its
  features come from a zero input, and pulling them towards a real modality's prototypes teaches the network to
  hallucinate rather than to rely on what is present. ``include_absent=True`` keeps them (the reference's
  zero-padding variant).
- 1/N averages over the samples of the (local) batch.

Teacher prototypes are computed by the caller (under ``torch.inference_mode`` for a frozen teacher, or by the
stage-2 FSM), so only [B, K, d] tensors - never the teacher's feature maps - stay alive for backward.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .prototypes import Reduction, SoftmaxDim, class_prototypes, prototype_kl

Protos = tuple[torch.Tensor, torch.Tensor]  # ([B, K, d], [B, K] mask)


def hpdm_permutation(num_modalities: int, generator: torch.Generator | None = None) -> list[int]:
    """pi as a list: pi[m] is the student modality distilled from teacher modality m."""
    return torch.randperm(num_modalities, generator=generator).tolist()


def teacher_prototypes(modal_features: Sequence[Sequence[torch.Tensor]], labels: torch.Tensor, num_classes: int,
                       ignore_index: int = 255) -> list[list[Protos]]:
    """Prototypes of every modality and stage: list over M of list over stages of (protos, mask)."""
    return [[class_prototypes(f, labels, num_classes, ignore_index) for f in stages] for stages in modal_features]


class HPDMLoss(torch.nn.Module):
    """See module docstring."""

    def __init__(self, num_classes: int, ignore_index: int = 255, include_absent: bool = False,
                 softmax_dim: SoftmaxDim = "class", reduction: Reduction = "mean",
                 detach_target: bool = True) -> None:
        super().__init__()
        self.detach_target = detach_target  # False in stage 2: the FSM that made the target learns from this loss
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.include_absent = include_absent
        self.softmax_dim = softmax_dim
        self.reduction = reduction

    def forward(self, student_features: Sequence[Sequence[torch.Tensor]], teacher_protos: Sequence[Sequence[Protos]],
                labels: torch.Tensor, student_present: torch.Tensor | None = None,
                permutation: Sequence[int] | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``student_features`` list over M of list over stages of [B, C, h, w]; ``student_present`` [B, M] bool."""
        m_count = len(student_features)
        if len(teacher_protos) != m_count:
            raise ValueError(f"HPDM: student has {m_count} modalities, teacher {len(teacher_protos)}")
        perm = list(permutation) if permutation is not None else hpdm_permutation(m_count, generator)
        if sorted(perm) != list(range(m_count)):
            raise ValueError(f"HPDM: {perm} is not a permutation of 0..{m_count - 1}")
        batch = labels.shape[0]
        total = student_features[0][0].sum() * 0.0
        for m, sm in enumerate(perm):
            weight = torch.ones(batch, device=labels.device)
            if student_present is not None and not self.include_absent:
                weight = student_present[:, sm].to(weight.dtype)
                if not bool(weight.any()):
                    continue
            for stage, feat in enumerate(student_features[sm]):
                target, mask = teacher_protos[m][stage]
                if target.shape[-1] != feat.shape[1]:
                    raise ValueError(f"HPDM stage {stage}: teacher has {target.shape[-1]} channels, student "
                                     f"{feat.shape[1]} (teacher and student must share the architecture)")
                protos, _ = class_prototypes(feat, labels, self.num_classes, self.ignore_index)
                if self.detach_target:
                    target = target.detach()
                kl = prototype_kl(target, protos, mask, self.softmax_dim, self.reduction)
                total = total + (kl * weight).sum() / batch
        return total
