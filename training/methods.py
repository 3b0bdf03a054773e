"""The four training methods as loss functions over one micro-batch.

- ``supervised``: OHEM CE on full-modality input (baselines, the full-modality teacher).
- ``equiseg``: OHEM CE + lambda * SGM over the student's per-modality features (EQUISeg, lambda = 60).
- ``rmmss_stage1``: a random non-empty modality subset per sample for the student, a frozen full-modality teacher;
  OHEM + lambda * KL(logits) + alpha * HPDM (RMMSS, lambda = 50, alpha = 100).
- ``rmmss_stage2``: as stage 1 but the targets are merged from two frozen teachers (full-modality and the stage-1
  robust model) by two trainable FSMs, one on prototypes and one on logits.

Frozen teachers run under ``torch.inference_mode()``; only what the losses need survives it (logits and [B, K, d]
prototypes, cloned into normal tensors), so no teacher activation is ever kept for backward.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import TrainConfig
from .losses import FeatureSelectionModule, HPDMLoss, OhemCrossEntropy, SGMLoss, logit_kd, teacher_prototypes

Protos = list[list[tuple[torch.Tensor, torch.Tensor]]]


def random_subsets(batch: int, num_modalities: int, full_prob: float = 0.0,
                   generator: torch.Generator | None = None, device: torch.device | None = None) -> torch.Tensor:
    """[B, M] bool: a uniformly drawn non-empty subset per sample (all kept with extra probability ``full_prob``)."""
    codes = torch.randint(1, 2 ** num_modalities, (batch,), generator=generator)
    bits = ((codes[:, None] >> torch.arange(num_modalities)) & 1).bool()
    if full_prob > 0:
        full = torch.rand(batch, generator=generator) < full_prob
        bits[full] = True
    return bits.to(device) if device is not None else bits


@dataclass
class StepOutput:
    loss: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


class Method:
    """Computes the loss of one micro-batch; owns the losses, the frozen teachers and the trainable FSMs."""

    def __init__(self, cfg: TrainConfig, num_classes: int, ignore_index: int, teachers: dict[str, nn.Module],
                 autocast: Callable) -> None:
        lc = cfg.loss
        self.cfg = cfg
        self.name = cfg.method
        self.teachers = teachers
        self.autocast = autocast
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.ohem = OhemCrossEntropy(ignore_index, lc.ohem_thresh, lc.ohem_min_kept_div)
        self.sgm = SGMLoss(num_classes, ignore_index, lc.sgm_detach_teacher, lc.proto_softmax_dim, lc.kl_reduction)
        stage2_trains_fsm = self.name == "rmmss_stage2" and lc.fsm_gradient != "none"
        self.hpdm = HPDMLoss(num_classes, ignore_index, lc.hpdm_include_absent, lc.proto_softmax_dim,
                             lc.kl_reduction, detach_target=not stage2_trains_fsm)
        self.fsm: dict[str, FeatureSelectionModule] = {}
        if self.name == "rmmss_stage2":
            self.fsm = {"fsm_proto": FeatureSelectionModule(lc.fsm_gradient),
                        "fsm_logit": FeatureSelectionModule(lc.fsm_gradient)}

    # -- helpers -------------------------------------------------------------------------------------------------
    def _teacher(self, name: str, x: torch.Tensor, present: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, Protos]:
        """Frozen teacher under inference_mode -> (logits, prototypes) as normal tensors."""
        model = self.teachers[name]
        with torch.inference_mode(), self.autocast():
            out = model(x, present, return_features=True)
            protos = teacher_prototypes(out["modal_features"], labels, self.num_classes, self.ignore_index)
            logits = out["logits"]
        # clone outside inference mode: inference tensors cannot be saved for the student's backward
        logits = logits.float().clone()
        protos = [[(p.float().clone(), m.clone()) for p, m in stages] for stages in protos]
        return logits, protos

    def _mask(self, x: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        keep = random_subsets(x.shape[0], x.shape[1], self.cfg.masking.full_prob, device=x.device)
        keep = keep & present
        keep[keep.sum(1) == 0] = present[keep.sum(1) == 0]  # a sample whose data lacks the drawn subset keeps all
        xs = x * keep[:, :, None, None, None].to(x.dtype)
        ps = keep if self.cfg.masking.flag_absent else present
        return xs, ps, keep

    # -- the step ------------------------------------------------------------------------------------------------
    def __call__(self, student: nn.Module, x: torch.Tensor, present: torch.Tensor,
                 labels: torch.Tensor) -> StepOutput:
        lc = self.cfg.loss
        if self.name == "supervised":
            with self.autocast():
                logits = student(x, present)
            ce = self.ohem(logits, labels)
            return StepOutput(ce, {"ohem": ce.item()})
        if self.name == "equiseg":
            with self.autocast():
                out = student(x, present, return_features=True)
            ce = self.ohem(out["logits"], labels)
            sgm = self.sgm(out["modal_features"], labels)
            return StepOutput(ce + lc.sgm_weight * sgm, {"ohem": ce.item(), "sgm": sgm.item()})
        # RMMSS: the full-modality teacher sees everything, the student a random subset
        t_logits, t_protos = self._teacher("full", x, present, labels)
        xs, ps, keep = self._mask(x, present)
        parts: dict[str, float] = {"kept_modalities": keep.float().sum(1).mean().item()}
        if self.name == "rmmss_stage2":
            rx, rp = (xs, ps) if self.cfg.masking.robust_teacher_input == "masked" else (x, present)
            r_logits, r_protos = self._teacher("robust", rx, rp, labels)
            t_logits = self.fsm["fsm_logit"](t_logits, r_logits)
            parts["fsm_logit_full_share"] = self.fsm["fsm_logit"].last_fraction_first
            merged: Protos = []
            shares = []
            for stages_t, stages_r in zip(t_protos, r_protos):
                merged.append([(self.fsm["fsm_proto"](pt, pr), mt & mr)
                               for (pt, mt), (pr, mr) in zip(stages_t, stages_r)])
                shares.append(self.fsm["fsm_proto"].last_fraction_first)
            t_protos = merged
            parts["fsm_proto_full_share"] = sum(shares) / len(shares)
        with self.autocast():
            out = student(xs, ps, return_features=True)
        ce = self.ohem(out["logits"], labels)
        kd = logit_kd(out["logits"], t_logits, lc.kd_temperature, lc.kd_direction,
                      detach_teacher=self.name != "rmmss_stage2" or lc.fsm_gradient == "none",
                      reduction=lc.kl_reduction)
        hp = self.hpdm(out["modal_features"], t_protos, labels, student_present=keep)
        parts.update({"ohem": ce.item(), "kd": kd.item(), "hpdm": hp.item()})
        return StepOutput(ce + lc.kd_weight * kd + lc.hpdm_weight * hp, parts)
