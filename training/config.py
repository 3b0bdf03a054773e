"""The training recipe as a typed dataclass: ``TrainConfig`` nests the shared DataConfig and ModelConfig.

Recipes live in ``config/train/*.yaml`` and load through ``equiseg_ros.config.load_config``: an unknown key or a
wrong type fails at start naming the file and the dotted key; ``--set optim.lr=1e-4`` overrides any key. The
resolved config is written beside the run's outputs (``RUN_DIR/config.yaml``) and into every checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from equiseg_ros.config import ConfigError, DataConfig, ModelConfig, load_config

Method = Literal["supervised", "equiseg", "rmmss_stage1", "rmmss_stage2"]


@dataclass
class OptimConfig:
    """AdamW with the reference recipe's decay rule and the WarmupPolyLR schedule."""

    lr: float = 6e-5
    weight_decay: float = 0.01  # never applied to 1-D parameters (norms, biases, scalars)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    head_lr_mult: float = 1.0  # decode head lr multiplier (1 in DeLiVER/CMNeXt; SegFormer uses 10)
    grad_clip: float | None = None
    max_consecutive_skips: int = 20  # steps with non-finite gradients are skipped; this many in a row is an error
    warmup_epochs: float = 10.0  # reference: 10 epochs...
    warmup_iters: int | None = None  # ... or an explicit count (tiny runs); wins over warmup_epochs
    warmup_ratio: float = 0.1  # lr starts at ratio * lr
    power: float = 0.9  # poly decay exponent

    def check(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if not 0.0 < self.warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio: must be in (0, 1], got {self.warmup_ratio}")


@dataclass
class LossConfig:
    """Loss weights and the switches the papers leave open (see the docstrings in training/losses/)."""

    ohem_thresh: float = 0.7
    ohem_min_kept_div: int = 16
    sgm_weight: float = 60.0  # EQUISeg lambda
    sgm_detach_teacher: bool = True
    kd_weight: float = 50.0  # RMMSS lambda (logit KL)
    kd_direction: Literal["forward", "reverse"] = "forward"
    kd_temperature: float = 1.0
    hpdm_weight: float = 100.0  # RMMSS alpha
    hpdm_include_absent: bool = False
    proto_softmax_dim: Literal["class", "channel"] = "class"
    kl_reduction: Literal["mean", "sum"] = "mean"  # "mean" = the reference's kl_div scale (divided by K)
    # SGM's own reduction (None = follow kl_reduction). EQUISeg Eq. 4 writes the textbook sum over the C classes;
    # "mean" divides it by K. lambda = 60 assumes "mean": EQUISeg has no public code, its authors' RobustSeg /
    # UMMSS prototype distillation (PCUMD) computes kl_div(reduction="mean") over the [K, d] prototype matrix, and
    # with "sum" lambda = 60 would weigh the SGM term 25x (DeLiVER) heavier than that code base's scale.
    sgm_reduction: Literal["mean", "sum"] | None = None
    fsm_gradient: Literal["straight_through", "soft", "none"] = "straight_through"
    # Stage 2, how the two teachers are merged: "select" = the FSMs (RMMSS Eq. 6-8); "basic" = RMMSS Table 4's
    # baseline: no FSM, the distillation losses against the two teachers weighted 0.5 / 0.5.
    fsm_mode: Literal["select", "basic"] = "select"
    # Stage 2: "unified" brings both teachers to one scale before the FSM compares them (RMMSS: "normalized to a
    # unified scale"; raw values would pick the larger magnitude): logits -> log-softmax over classes (the KD
    # target distribution is unchanged); prototypes -> each teacher's [K, d] matrix divided by its per-sample,
    # per-channel RMS over the classes both teachers see, times the full-modality teacher's RMS (so the merged
    # target keeps the scale alpha = 100 was tuned on). "none" = raw values (this project's earlier behaviour).
    fsm_normalize: Literal["unified", "none"] = "unified"


@dataclass
class MaskingConfig:
    """Random modality masking: which inputs a training sample keeps (the rest are zeroed, and flagged absent).

    ``mode``:
    - ``auto`` (default): ``ummss`` for the RMMSS students, ``none`` for supervised / EQUISeg training;
    - ``ummss``: the UMMSS / RobustSeg reference (``seg_block_select_UMD``): per batch, draw k uniformly from 1..M,
      then k distinct modalities; every sample of the batch keeps that subset (RMMSS default, issue 15);
    - ``subsets``: per sample, a uniformly drawn non-empty subset of the 2^M - 1 (this project's earlier default;
      k is then binomial-like, mostly M/2);
    - ``none``: no masking (the full-modality input).
    ``prob`` masks only that share of the batches (``ummss``) or samples (``subsets``); the rest keep everything.
    """

    mode: Literal["auto", "none", "ummss", "subsets"] = "auto"
    prob: float = 1.0
    full_prob: float = 0.0  # subsets mode: extra chance of keeping every modality (0 = uniform over the subsets)
    flag_absent: bool = True  # zero the input AND set present=False (deployed semantics); False = zero only
    # share of the masked samples that are zeroed but keep present=True (the benchmark's semantics), so a model
    # trained for the deployed setting also knows the papers' zero-fill (0 = always flagged when flag_absent)
    zero_only_prob: float = 0.0
    robust_teacher_input: Literal["masked", "full"] = "masked"  # stage 2: what the stage-1 teacher sees

    def resolved_mode(self, method: str) -> str:
        if self.mode != "auto":
            return self.mode
        return "ummss" if method in ("rmmss_stage1", "rmmss_stage2") else "none"

    def check(self) -> None:
        for name in ("full_prob", "prob", "zero_only_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1], got {v}")


@dataclass
class TeacherConfig:
    """Frozen teachers (equiseg_ros checkpoints): full-modality for stage 1 and 2, robust stage-1 model for 2."""

    full: str | None = None
    robust: str | None = None


@dataclass
class ValConfig:
    """Periodic validation through the evaluation protocols (keep the subset cheap)."""

    every: int = 0  # iterations between validations; 0 = only at the end
    protocols: list[str] = field(default_factory=lambda: ["full"])
    settings: list[str] = field(default_factory=lambda: ["benchmark"])
    max_batches: int | None = None
    batch_size: int = 1
    best_metric: str = "mIoU"  # a key of the flat metrics; "mean:a,b,c" averages several keys
    best_mode: Literal["max", "min"] = "max"
    at_end: bool = True


@dataclass
class CheckpointConfig:
    every: int = 500  # iterations between checkpoints (also written at the end)
    keep_best: bool = True


@dataclass
class DistConfig:
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    find_unused_parameters: bool = True  # as the reference: absent modalities may leave branches unused
    dump_rank_weights: bool = False  # test hook: every rank writes its final weights (identical-weights check)


@dataclass
class TrainConfig:
    """A whole training recipe."""

    method: Method = "supervised"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    teachers: TeacherConfig = field(default_factory=TeacherConfig)
    val: ValConfig = field(default_factory=ValConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    # student initialisation from a project checkpoint's weights (not a resume: fresh optimiser and schedule),
    # e.g. the stage-1 robust model for stage 2; None = model.pretrained (ImageNet MiT) as in every other stage
    init_from: str | None = None
    batch_size: int = 2  # per process
    accumulate: int = 1  # micro-batches per optimiser step
    epochs: int | None = 200
    max_iters: int | None = None  # optimiser steps; wins over epochs (tiny runs)
    seed: int = 3407
    amp: Literal["off", "bf16", "fp16"] = "off"  # CUDA only; ignored (with a warning) on CPU
    deterministic: bool = False
    device: str = "auto"  # auto = cuda when available
    threads: int | None = None  # torch intra-op threads (None = torch's default)
    log_every: int = 10
    tensorboard: bool = True
    progress: bool = True

    def check(self) -> None:
        if self.batch_size <= 0 or self.accumulate <= 0:
            raise ValueError("batch_size and accumulate: must be positive")
        if self.max_iters is None and self.epochs is None:
            raise ValueError("max_iters / epochs: one of them must be set")
        if self.max_iters is not None and self.max_iters <= 0:
            raise ValueError(f"max_iters: must be positive, got {self.max_iters}")
        if self.method in ("rmmss_stage1", "rmmss_stage2") and not self.teachers.full:
            raise ValueError(f"teachers.full: method {self.method} needs a full-modality teacher checkpoint")
        if self.method == "rmmss_stage2" and not self.teachers.robust:
            raise ValueError("teachers.robust: method rmmss_stage2 needs the stage-1 robust checkpoint")


def load_train_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Load a recipe; relative teacher/pretrained paths stay as written (resolved from the working directory)."""
    return load_config(TrainConfig, path, overrides)


__all__ = ["CheckpointConfig", "ConfigError", "DistConfig", "LossConfig", "MaskingConfig", "Method", "OptimConfig",
           "TeacherConfig", "TrainConfig", "ValConfig", "load_train_config"]
