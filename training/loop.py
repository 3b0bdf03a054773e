"""The training loop: data, model, teachers, optimiser, DDP, checkpoints with exact resume, validation, logging.

One ``Trainer`` runs one recipe into one run directory::

    RUN_DIR/config.yaml            the resolved recipe
    RUN_DIR/checkpoints/last.pt    every ``checkpoint.every`` iterations and at the end (atomic)
    RUN_DIR/checkpoints/best.pt    best validation ``val.best_metric``
    RUN_DIR/scalars.csv, tb/       every logged scalar (CSV + TensorBoard)
    RUN_DIR/val/iter_<N>.json      each validation's EvalResult
    RUN_DIR/curves_*.png           at the end

Exact resume: a checkpoint holds model, optimiser, scheduler, scaler, FSMs, every rank's RNG states (torch, CUDA,
numpy, python) and the iteration; micro-batch k of the run is always the same batch (ResumableSampler +
EpochSeeded), so a run killed at any moment and resumed from its last checkpoint ends with the same weights as an
uninterrupted run (same seed, deterministic device).
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from equiseg_ros.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from equiseg_ros.config import ConfigError, ModelConfig, from_dict, save_config, to_dict

from . import distributed as D
from ._data import EpochSeeded, MicroBatches
from .config import TrainConfig
from .logging_utils import NullLog, ScalarLog
from .methods import Method
from .optim import WarmupPolyLR, build_optimizer

TRAIN_STATE_VERSION = 1


# ---- RNG state that survives weights_only loading ---------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors / plain Python values (``torch.load(weights_only=True)``-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                        "gauss": gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


# ---- teachers -----------------------------------------------------------------------------------------------------

def load_frozen_model(path: str, spec, device: torch.device) -> nn.Module:
    """A frozen teacher from an equiseg_ros checkpoint; its spec must match the student's modalities and classes."""
    from equiseg_ros.models.build import build_model, load_checked_checkpoint

    ckpt = load_checkpoint(path)
    tspec = ckpt["spec"]
    if tuple(tspec.modality_names) != tuple(spec.modality_names) or tuple(tspec.classes) != tuple(spec.classes):
        raise CheckpointError(f"{path}: teacher spec (modalities {list(tspec.modality_names)}, "
                              f"{tspec.num_classes} classes) differs from the student's "
                              f"({list(spec.modality_names)}, {spec.num_classes} classes)")
    try:
        mcfg = from_dict(ModelConfig, {**ckpt["config"]["model"], "pretrained": None}, "model")
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: config['model'] does not describe a model: {exc}") from None
    model = build_model(mcfg, tspec)
    try:
        load_checked_checkpoint(model, ckpt)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model.to(device).eval()
    model.requires_grad_(False)
    return model


# ---- metrics -------------------------------------------------------------------------------------------------------

def flatten_eval(result: Any) -> dict[str, float]:
    """EvalResult -> {"<setting>/<column>": value} for Table-1 columns, any-modality subsets and miou_present."""
    out: dict[str, float] = {}
    for setting, figs in result.results.items():
        for col, v in figs.get("table1", {}).items():
            if v is not None:
                out[f"{setting}/{col}"] = float(v)
        for name, v in (figs.get("anymodal") or {}).items():
            out[f"{setting}/any/{name}"] = float(v)
        if "full" in figs and "miou_present" in figs["full"]:
            out[f"{setting}/mIoU_present"] = float(figs["full"]["miou_present"])
    return out


def select_metric(flat: dict[str, float], spec: str, default_setting: str) -> float:
    """``mIoU`` / ``deployed/EMM Avg`` / ``mean:R,RD,EL,RDEL`` (any-modality subsets or columns) -> a value."""
    def one(key: str) -> float:
        for cand in (key, f"{default_setting}/{key}", f"{default_setting}/any/{key}"):
            if cand in flat:
                return flat[cand]
        raise KeyError(f"val.best_metric: {key!r} is not among the validation figures {sorted(flat)}")

    if spec.startswith("mean:"):
        keys = [k.strip() for k in spec[5:].split(",") if k.strip()]
        return sum(one(k) for k in keys) / len(keys)
    return one(spec)


# ---- the trainer ---------------------------------------------------------------------------------------------------

class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resume: str | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = self._device()
        self.dist = D.init(cfg.dist.backend, self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(cfg.seed + self.dist.rank)
        self.spec = cfg.data.spec()
        self._setup_amp()
        self._build_data()
        self._build_model()
        self.iteration = 0
        self.skipped_steps = 0  # optimiser steps skipped for non-finite gradients (kept across resume)
        self.consecutive_skips = 0
        self.best_value: float | None = None
        self.resume_path = self._resume_path(resume)
        if self.resume_path is not None:
            self._load_state(self.resume_path)
        self._wrap_ddp()
        self.log = (ScalarLog(self.run_dir, self.iteration if self.resume_path else None, cfg.tensorboard)
                    if self.dist.is_main else NullLog())
        if self.dist.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
            mode = cfg.masking.resolved_mode(cfg.method)
            if mode != "none":  # which masking a run used is part of its result (issue 15)
                print(f"[train] modality masking: {mode} (prob {cfg.masking.prob}, flag_absent "
                      f"{cfg.masking.flag_absent}, zero_only_prob {cfg.masking.zero_only_prob})")

    # -- setup ---------------------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        if self.cfg.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.cfg.device)

    def _setup_amp(self) -> None:
        amp = self.cfg.amp
        if amp != "off" and self.device.type != "cuda":
            print(f"[train] amp={amp} requested on {self.device.type}: AMP runs on CUDA only, training in float32")
            amp = "off"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _build_data(self) -> None:
        from equiseg_ros.data.dataset import build_dataset, collate

        c = self.cfg
        self.train_set = EpochSeeded(build_dataset(c.data, c.data.train_split, train=True, seed=c.seed))
        self.batches = MicroBatches(self.train_set, c.batch_size, self.dist.rank, self.dist.world_size, c.seed,
                                    c.data.num_workers, collate, pin_memory=self.device.type == "cuda")
        self.iters_per_epoch = max(1, self.batches.per_epoch // c.accumulate)
        self.total_iters = c.max_iters if c.max_iters is not None else c.epochs * self.iters_per_epoch
        self.collate = collate
        self._val_loader = None

    def val_loader(self):
        if self._val_loader is None:
            from torch.utils.data import DataLoader, DistributedSampler

            from equiseg_ros.data.dataset import build_dataset

            c = self.cfg
            ds = build_dataset(c.data, c.data.val_split, train=False, seed=c.seed)
            sampler = (DistributedSampler(ds, self.dist.world_size, self.dist.rank, shuffle=False)
                       if self.dist.enabled else None)
            self._val_loader = DataLoader(ds, batch_size=c.val.batch_size, sampler=sampler, shuffle=False,
                                          num_workers=c.data.num_workers, collate_fn=self.collate,
                                          generator=torch.Generator().manual_seed(0))
        return self._val_loader

    def _build_model(self) -> None:
        from equiseg_ros.models.build import build_model

        c = self.cfg
        self.model = build_model(c.model, self.spec).to(self.device)
        if c.init_from:
            self._init_from(c.init_from)
        teachers = {}
        if c.method in ("rmmss_stage1", "rmmss_stage2"):
            teachers["full"] = load_frozen_model(c.teachers.full, self.spec, self.device)
        if c.method == "rmmss_stage2":
            teachers["robust"] = load_frozen_model(c.teachers.robust, self.spec, self.device)
        self.method = Method(c, self.spec.num_classes, self.spec.ignore_index, teachers, self.autocast)
        for m in self.method.fsm.values():
            m.to(self.device)
        self.trainable: list[tuple[str, nn.Module]] = [("", self.model)] + [
            (f"{k}.", m) for k, m in self.method.fsm.items()]
        self.optimizer = build_optimizer(self.trainable, c.optim)
        self.scheduler = WarmupPolyLR.build(self.optimizer, c.optim, self.total_iters, self.iters_per_epoch)
        self.ddp: nn.Module = self.model

    def _init_from(self, path: str) -> None:
        """Student weights from a project checkpoint (``init_from``): same model config and spec required."""
        from equiseg_ros.models.build import load_checked_checkpoint

        ckpt = load_checkpoint(path)
        if tuple(ckpt["spec"].modality_names) != tuple(self.spec.modality_names):
            raise CheckpointError(f"{path}: init_from checkpoint has modalities {list(ckpt['spec'].modality_names)}, "
                                  f"this run {list(self.spec.modality_names)}")
        try:
            load_checked_checkpoint(self.model, ckpt)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{path}: init_from weights do not fit this run's model: {exc}") from None

    def _wrap_ddp(self) -> None:
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DDP(self.model, device_ids=ids,
                           find_unused_parameters=self.cfg.dist.find_unused_parameters)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def _resume_path(self, resume: str | None) -> Path | None:
        if resume is None:
            return None
        if resume == "auto":
            p = self.ckpt_dir / "last.pt"
            return p if p.is_file() else None
        p = Path(resume)
        if not p.is_file():
            raise CheckpointError(f"{p}: --resume checkpoint not found")
        return p

    def _gather_rng(self) -> list[dict[str, Any]]:
        state = rng_state()
        if not self.dist.enabled:
            return [state]
        import torch.distributed as dist

        out: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(out, state)
        return out

    def save(self, name: str = "last.pt", rng: list | None = None) -> Path | None:
        D.broadcast_buffers(self.model, self.dist)
        rng = rng if rng is not None else self._gather_rng()
        if not self.dist.is_main:
            return None
        extra = {
            "train_state_version": TRAIN_STATE_VERSION,
            "method": self.cfg.method,
            "iteration": self.iteration,
            "total_iters": self.total_iters,
            "best_metric": self.cfg.val.best_metric,
            "best_value": self.best_value,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "aux": {k: m.state_dict() for k, m in self.method.fsm.items()},
            "world_size": self.dist.world_size,
            "skipped_steps": self.skipped_steps,
        }
        return save_checkpoint(self.ckpt_dir / name, self.model.state_dict(), self.spec, to_dict(self.cfg), **extra)

    def _load_state(self, path: Path) -> None:
        from equiseg_ros.models.build import load_checked_checkpoint

        ckpt = load_checkpoint(path)
        if "optimizer" not in ckpt or "iteration" not in ckpt:
            raise CheckpointError(f"{path}: a model-only checkpoint cannot resume training (no optimiser state); "
                                  "use it as a teacher or as model.pretrained instead")
        if ckpt.get("method") != self.cfg.method:
            raise CheckpointError(f"{path}: written by method {ckpt.get('method')!r}, this run is "
                                  f"{self.cfg.method!r}")
        try:
            load_checked_checkpoint(self.model, ckpt)
            for k, m in self.method.fsm.items():
                m.load_state_dict(ckpt["aux"][k])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: does not fit this run: {exc}") from None
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        self.best_value = ckpt.get("best_value")
        self.skipped_steps = int(ckpt.get("skipped_steps", 0))
        rngs = ckpt.get("rng") or []
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:
            print(f"[train] {path}: saved with {len(rngs)} process(es), running {self.dist.world_size}: "
                  "RNG streams restart (training continues, but not bit-identically)")
        if self.dist.is_main:
            print(f"[train] resumed from {path} at iteration {self.iteration}/{self.total_iters}")

    # -- validation ----------------------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        from equiseg_ros.evaluation.protocols import evaluate

        v = self.cfg.val
        model = self.model
        D.broadcast_buffers(model, self.dist)  # every rank evaluates the weights rank 0 would save
        was_training = model.training
        model.eval()

        def predict(x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), self.autocast():
                return model(x, present).float()

        try:
            result = evaluate(predict, self.val_loader(), self.spec, protocols=tuple(v.protocols),
                              settings=tuple(v.settings), device=self.device, max_batches=v.max_batches,
                              progress=False, all_reduce=self.dist.enabled)
        finally:
            model.train(was_training)
        flat = flatten_eval(result)
        if self.dist.is_main:
            p = self.run_dir / "val" / f"iter_{self.iteration:07d}.json"
            result.save_json(p)
        return flat

    def _maybe_best(self, flat: dict[str, float]) -> None:
        v = self.cfg.val
        value = select_metric(flat, v.best_metric, v.settings[0])
        better = (self.best_value is None or (value > self.best_value if v.best_mode == "max"
                                              else value < self.best_value))
        if better:  # every rank sees the same all-reduced figures, so all take this branch together
            self.best_value = value
            if self.cfg.checkpoint.keep_best:
                self.save("best.pt")

    # -- training ------------------------------------------------------------------------------------------------
    def train_step(self, micro: Any) -> dict[str, float]:
        c = self.cfg
        parts_sum: dict[str, float] = {}
        self.optimizer.zero_grad(set_to_none=True)
        for a in range(c.accumulate):
            _, batch = next(micro)
            x = batch["x"].to(self.device, non_blocking=True)
            present = batch["present"].to(self.device, non_blocking=True)
            labels = batch["label"].to(self.device, non_blocking=True)
            sync = a == c.accumulate - 1 or not self.dist.enabled
            ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()
            with ctx:
                out = self.method(self.ddp, x, present, labels)
                loss = out.loss / c.accumulate
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"iteration {self.iteration}: loss is {loss.item()} ({out.parts}); "
                                             "lower optim.lr or check the data")
                self.scaler.scale(loss).backward()
            parts_sum["loss"] = parts_sum.get("loss", 0.0) + out.loss.item() / c.accumulate
            for k, val in out.parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + val / c.accumulate
        fsm_params = [p for m in self.method.fsm.values() for p in m.parameters()]
        D.all_reduce_grads(fsm_params, self.dist)
        params = [p for _, m in self.trainable for p in m.parameters() if p.grad is not None]
        if c.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, c.optim.grad_clip)
        if not self.scaler.is_enabled() and not _all_finite(params):
            # MiT from scratch: a token of an all-zero patch (empty event/LiDAR area, a dropped modality) is exactly
            # zero, so LayerNorm sees zero variance and multiplies the gradient by 1/sqrt(eps) = 1000 per layer; a
            # few such layers overflow. Skip the update (as fp16's GradScaler does); grads are all-reduced first,
            # so every rank takes the same decision.
            self.skipped_steps += 1
            self.consecutive_skips += 1
            if self.consecutive_skips > c.optim.max_consecutive_skips:
                raise FloatingPointError(f"iteration {self.iteration}: {self.consecutive_skips} consecutive steps "
                                         "with non-finite gradients; lower optim.lr or use pretrained weights")
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.consecutive_skips = 0
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.iteration += 1
        parts_sum["skipped_steps"] = float(self.skipped_steps)
        return parts_sum

    def fit(self) -> dict[str, Any]:
        """Train to ``total_iters``; returns a summary (final/best metrics, timings)."""
        from tqdm import tqdm

        c = self.cfg
        start = self.iteration
        micro = self.batches.stream(start * c.accumulate)
        bar = tqdm(total=self.total_iters, initial=start, disable=not (self.dist.is_main and c.progress),
                   desc=f"train {c.method}", unit="it", dynamic_ncols=True)
        window: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        last_val: dict[str, float] = {}
        self.model.train()
        for m in self.method.fsm.values():
            m.train()
        while self.iteration < self.total_iters:
            lr = self.optimizer.param_groups[0]["lr"]
            parts = self.train_step(micro)
            for k, val in parts.items():
                window.setdefault(k, []).append(val)
            bar.update(1)
            bar.set_postfix({**{k: f"{v:.3g}" for k, v in parts.items()
                                if k not in ("kept_modalities", "skipped_steps")},
                             "lr": f"{lr:.2e}"}, refresh=False)
            it = self.iteration
            if it % c.log_every == 0 or it == self.total_iters:
                means = {k: sum(v) / len(v) for k, v in window.items()}
                means = D.all_reduce_mean(means, self.dist, self.device)
                scalars = {f"train/{'loss' if k == 'loss' else ('loss_' + k if k in LOSS_PARTS else k)}": v
                           for k, v in means.items()}
                scalars["train/lr"] = lr
                scalars["train/sec_per_iter"] = (time.perf_counter() - t0) / max(it - start, 1)
                self.log.add(it, scalars)
                window = {}
            if c.val.every and it % c.val.every == 0 and it != self.total_iters:
                last_val = self.validate()
                self.log.add(it, {f"val/{k}": v for k, v in last_val.items()})
                self._maybe_best(last_val)
            if it % c.checkpoint.every == 0 and it != self.total_iters:
                self.save("last.pt")
        bar.close()
        train_seconds = time.perf_counter() - t0
        if c.val.at_end:
            last_val = self.validate()
            self.log.add(self.iteration, {f"val/{k}": v for k, v in last_val.items()})
            self._maybe_best(last_val)
        self.save("last.pt")
        if c.dist.dump_rank_weights:
            torch.save(self.model.state_dict(), self.run_dir / f"rank{self.dist.rank}_weights.pt")
        summary = {"method": c.method, "masking_mode": c.masking.resolved_mode(c.method),
                   "iterations": self.iteration, "resumed_from": start,
                   "train_seconds": round(train_seconds, 2), "world_size": self.dist.world_size,
                   "final": last_val, "best_metric": c.val.best_metric, "best_value": self.best_value}
        if self.dist.is_main:
            self.log.close()
            try:
                from .curves import plot_curves

                plot_curves(self.run_dir)
            except Exception as exc:  # a plotting failure must not lose a finished run
                print(f"[train] curves not written ({type(exc).__name__}: {exc})")
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
        return summary


LOSS_PARTS = ("ohem", "sgm", "kd", "hpdm")


def _all_finite(params: list[torch.Tensor]) -> bool:
    """True when every gradient is finite (one reduction per parameter, no host sync per tensor)."""
    if not params:
        return True
    flags = torch.stack([torch.isfinite(p.grad).all() for p in params])
    return bool(flags.all())


def _json_default(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


def run(cfg: TrainConfig, run_dir: str | Path, resume: str | None = None,
        on_done: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train one recipe; in a torchrun job, leave through ``distributed.finish`` (clean exit on every rank)."""
    trainer = Trainer(cfg, run_dir, resume)
    summary = trainer.fit()
    if on_done is not None and trainer.dist.is_main:
        on_done(summary)
    D.finish(trainer.dist)
    return summary
