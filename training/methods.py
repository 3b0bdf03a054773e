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
from .losses.sgm import sgm_pairs

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


def ummss_subset(batch: int, num_modalities: int, generator: torch.Generator | None = None,
                 device: torch.device | None = None) -> torch.Tensor:
    """[B, M] bool, one subset for the whole batch: k ~ U{1..M}, then k distinct modalities (the UMMSS /
    RobustSeg ``seg_block_select_UMD`` draw: ``random.randint(1, M)`` then ``random.sample``)."""
    k = int(torch.randint(1, num_modalities + 1, (1,), generator=generator))
    chosen = torch.randperm(num_modalities, generator=generator)[:k]
    row = torch.zeros(num_modalities, dtype=torch.bool)
    row[chosen] = True
    out = row[None].expand(batch, num_modalities).clone()
    return out.to(device) if device is not None else out


def draw_keep(mode: str, batch: int, num_modalities: int, prob: float = 1.0, full_prob: float = 0.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, M] bool modalities kept under masking ``mode`` (``ummss`` | ``subsets`` | ``none``; see MaskingConfig).

    ``prob`` < 1 leaves a batch (ummss) or a sample (subsets) unmasked with probability 1 - prob."""
    if mode == "none":
        return torch.ones(batch, num_modalities, dtype=torch.bool)
    if mode == "ummss":
        if prob < 1.0 and float(torch.rand((), generator=generator)) >= prob:
            return torch.ones(batch, num_modalities, dtype=torch.bool)
        return ummss_subset(batch, num_modalities, generator)
    if mode == "subsets":
        keep = random_subsets(batch, num_modalities, full_prob, generator=generator)
        if prob < 1.0:
            keep[torch.rand(batch, generator=generator) >= prob] = True
        return keep
    raise ValueError(f"masking.mode: expected ummss|subsets|none, got {mode!r}")


def _rms(p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel RMS of prototypes [B, K, d] over the classes in ``mask`` [B, K] -> [B, 1, d]."""
    m = mask[..., None].to(p.dtype)
    return ((p * p * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1.0)).sqrt().clamp(min=1e-6)


def unify_teachers(t_logits: torch.Tensor, r_logits: torch.Tensor, t_protos: Protos, r_protos: Protos
                   ) -> tuple[torch.Tensor, torch.Tensor, Protos, Protos]:
    """Both stage-2 teachers on one scale before selection (``loss.fsm_normalize: unified``; see LossConfig).

    Logits -> log-softmax over classes (a per-pixel shift: the distributions KD sees are unchanged). Prototypes:
    the robust teacher's [K, d] matrix is rescaled per sample and channel so its RMS over the classes both
    teachers see equals the full-modality teacher's; a channel's values then differ only in their pattern over
    classes (what the softmax-over-classes KL compares), not in magnitude."""
    t_logits = torch.log_softmax(t_logits.float(), dim=1)
    r_logits = torch.log_softmax(r_logits.float(), dim=1)
    out_r: Protos = []
    for stages_t, stages_r in zip(t_protos, r_protos):
        row = []
        for (pt, mt), (pr, mr) in zip(stages_t, stages_r):
            both = mt & mr
            row.append((pr * (_rms(pt, both) / _rms(pr, both)), mr))
        out_r.append(row)
    return t_logits, r_logits, t_protos, out_r


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
        self.sgm = SGMLoss(num_classes, ignore_index, lc.sgm_detach_teacher, lc.proto_softmax_dim,
                           lc.sgm_reduction or lc.kl_reduction)
        self.basic = self.name == "rmmss_stage2" and lc.fsm_mode == "basic"
        stage2_trains_fsm = self.name == "rmmss_stage2" and lc.fsm_gradient != "none" and not self.basic
        self.hpdm = HPDMLoss(num_classes, ignore_index, lc.hpdm_include_absent, lc.proto_softmax_dim,
                             lc.kl_reduction, detach_target=not stage2_trains_fsm)
        self.fsm: dict[str, FeatureSelectionModule] = {}
        if self.name == "rmmss_stage2" and not self.basic:
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
        """(masked input, present flags the model sees, modalities kept) under ``masking``."""
        mc = self.cfg.masking
        mode = mc.resolved_mode(self.name)
        keep = draw_keep(mode, x.shape[0], x.shape[1], mc.prob, mc.full_prob).to(x.device)
        keep = keep & present
        keep[keep.sum(1) == 0] = present[keep.sum(1) == 0]  # a sample whose data lacks the drawn subset keeps all
        xs = x * keep[:, :, None, None, None].to(x.dtype)
        ps = keep if mc.flag_absent else present
        if mc.flag_absent and mc.zero_only_prob > 0:
            # some masked samples keep present=True: the benchmark's zero-fill, so both settings are trained
            zero_only = (torch.rand(x.shape[0]) < mc.zero_only_prob).to(x.device)[:, None]
            ps = torch.where(zero_only, present, keep)
        return xs, ps, keep

    # -- the step ------------------------------------------------------------------------------------------------
    def __call__(self, student: nn.Module, x: torch.Tensor, present: torch.Tensor,
                 labels: torch.Tensor) -> StepOutput:
        lc = self.cfg.loss
        if self.name in ("supervised", "equiseg") and self.cfg.masking.resolved_mode(self.name) != "none":
            x, present, keep = self._mask(x, present)
        else:
            keep = present
        if self.name == "supervised":
            with self.autocast():
                logits = student(x, present)
            ce = self.ohem(logits, labels)
            return StepOutput(ce, {"ohem": ce.item()})
        if self.name == "equiseg":
            want_sgm = lc.sgm_weight > 0
            with self.autocast():
                out = student(x, present, return_features=want_sgm)
            logits = out["logits"] if isinstance(out, dict) else out
            ce = self.ohem(logits, labels)
            if not want_sgm:  # lambda = 0: no prototypes to compute (the short demo budget; issue 15)
                return StepOutput(ce, {"ohem": ce.item()})
            # SGM pairs only modalities every sample kept: a masked branch's features come from a zero input
            kept = [m for m in range(keep.shape[1]) if bool(keep[:, m].all())]
            pairs = [(kept[a], kept[b]) for a, b in sgm_pairs(len(kept))]
            sgm = self.sgm(out["modal_features"], labels, pairs=pairs)
            return StepOutput(ce + lc.sgm_weight * sgm, {"ohem": ce.item(), "sgm": sgm.item()})
        # RMMSS: the full-modality teacher sees everything, the student a random subset
        t_logits, t_protos = self._teacher("full", x, present, labels)
        xs, ps, keep = self._mask(x, present)
        parts: dict[str, float] = {"kept_modalities": keep.float().sum(1).mean().item()}
        r_logits, r_protos = None, None
        if self.name == "rmmss_stage2":
            rx, rp = (xs, ps) if self.cfg.masking.robust_teacher_input == "masked" else (x, present)
            r_logits, r_protos = self._teacher("robust", rx, rp, labels)
            if lc.fsm_normalize == "unified":
                t_logits, r_logits, t_protos, r_protos = unify_teachers(t_logits, r_logits, t_protos, r_protos)
        if self.name == "rmmss_stage2" and not self.basic:
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
        detach = self.name != "rmmss_stage2" or lc.fsm_gradient == "none" or self.basic
        kd = logit_kd(out["logits"], t_logits, lc.kd_temperature, lc.kd_direction, detach_teacher=detach,
                      reduction=lc.kl_reduction)
        hp = self.hpdm(out["modal_features"], t_protos, labels, student_present=keep)
        if self.basic:  # RMMSS Table 4 "Basic": fixed 0.5 / 0.5 weights on the two teachers' losses
            kd = 0.5 * kd + 0.5 * logit_kd(out["logits"], r_logits, lc.kd_temperature, lc.kd_direction,
                                           detach_teacher=True, reduction=lc.kl_reduction)
            hp = 0.5 * hp + 0.5 * self.hpdm(out["modal_features"], r_protos, labels, student_present=keep)
        parts.update({"ohem": ce.item(), "kd": kd.item(), "hpdm": hp.item()})
        return StepOutput(ce + lc.kd_weight * kd + lc.hpdm_weight * hp, parts)
