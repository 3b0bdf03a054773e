"""Logit distillation (RMMSS Eq. 2-3): per-pixel KL between the class distributions of teacher and student.

Direction: ``forward`` = KL(P_teacher || P_student), what the reference code computes with
``kl_div(log_softmax(student), softmax(teacher))``; the paper's Eq. 2 is written the other way round
(``reverse`` = KL(P_student || P_teacher), mode-seeking). Summed over classes, averaged over pixels, computed at the
logits' own resolution (H/4) - upsampling both sides first would cost 16x the memory for the same targets.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Direction = Literal["forward", "reverse"]


def logit_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
             direction: Direction = "forward", detach_teacher: bool = True,
             reduction: Literal["mean", "sum"] = "mean") -> torch.Tensor:
    """Per-pixel KL over classes, averaged over pixels; logits [B, K, h, w] (teacher resized to the student's size).

    ``reduction="mean"`` also divides by K: the reference's ``KLDivLoss(reduction="mean")`` averages over every
    element, and lambda = 50 was tuned on that scale; ``"sum"`` is the textbook per-pixel KL.

    ``detach_teacher=False`` lets the gradient reach a trainable target (the stage-2 FSM).
    """
    if teacher.shape[-2:] != student.shape[-2:]:
        teacher = F.interpolate(teacher, size=student.shape[-2:], mode="bilinear", align_corners=False)
    log_s = torch.log_softmax(student.float() / temperature, dim=1)
    teacher = teacher.detach() if detach_teacher else teacher
    log_t = torch.log_softmax(teacher.float() / temperature, dim=1)
    if direction == "forward":
        kl = (log_t.exp() * (log_t - log_s)).sum(1)
    elif direction == "reverse":
        kl = (log_s.exp() * (log_s - log_t)).sum(1)
    else:
        raise ValueError(f"direction: expected 'forward' or 'reverse', got {direction!r}")
    out = kl.mean() * temperature ** 2
    return out / student.shape[1] if reduction == "mean" else out
