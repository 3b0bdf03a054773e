"""Self-Guided Module loss (EQUISeg §2.2, Eq. 3-4): balance modalities by prototype self-distillation.

Every step the modalities are shuffled; with an odd count one of them, chosen at random, sits the step out; the
first half becomes the teacher set and the second half the student set, paired in order. For each of the four
stages the loss is KL(prototypes of teacher modality || prototypes of its student), summed over stages and pairs,
averaged over the samples of the batch.

Choice the paper leaves open: the teacher side is detached by default (``detach_teacher``). Because roles are redrawn
every step each modality is pulled towards every other one over time, while a single step never lets the strong
modality be dragged towards the weak one - which is what the module exists to prevent. ``detach_teacher=False``
gives the symmetric (both sides learn) variant.

Reduction (``loss.sgm_reduction``, issue 15): Eq. 4 sums the KL over the C classes; ``"mean"`` (the default, through
``loss.kl_reduction``) divides that by K, the scale of the authors' RobustSeg/UMMSS prototype distillation
(``kl_div(reduction="mean")`` over the [K, d] prototype matrix), which is the scale lambda = 60 assumes; ``"sum"``
is Eq. 4 as written (then lambda = 60 weighs the term K times heavier).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .prototypes import Reduction, SoftmaxDim, class_prototypes, prototype_kl


def sgm_pairs(num_modalities: int, generator: torch.Generator | None = None) -> list[tuple[int, int]]:
    """Random (teacher, student) modality pairs for one step; never pairs a modality with itself."""
    if num_modalities < 2:
        return []
    order = torch.randperm(num_modalities, generator=generator).tolist()
    if len(order) % 2:
        order = order[:-1]  # the permutation is uniform, so dropping its last entry drops a random modality
    half = len(order) // 2
    return list(zip(order[:half], order[half:]))


class SGMLoss(torch.nn.Module):
    """L_s = sum_stages sum_pairs KL(p_teacher || p_student), prototypes per sample; see module docstring."""

    def __init__(self, num_classes: int, ignore_index: int = 255, detach_teacher: bool = True,
                 softmax_dim: SoftmaxDim = "class", reduction: Reduction = "mean") -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.detach_teacher = detach_teacher
        self.softmax_dim = softmax_dim
        self.reduction = reduction

    def forward(self, modal_features: Sequence[Sequence[torch.Tensor]], labels: torch.Tensor,
                pairs: Sequence[tuple[int, int]] | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``modal_features``: list over modalities of list over stages of [B, C_s, H_s, W_s]."""
        if pairs is None:
            pairs = sgm_pairs(len(modal_features), generator)
        if not pairs:
            return modal_features[0][0].sum() * 0.0
        total = None
        used = sorted({m for p in pairs for m in p})
        for stage in range(len(modal_features[0])):
            protos = {}
            for m in used:
                protos[m] = class_prototypes(modal_features[m][stage], labels, self.num_classes, self.ignore_index)
            for t, s in pairs:
                target, mask = protos[t]
                if self.detach_teacher:
                    target = target.detach()
                kl = prototype_kl(target, protos[s][0], mask, self.softmax_dim, self.reduction).mean()
                total = kl if total is None else total + kl
        return total
