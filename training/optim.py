"""Optimiser and schedule of the reference recipe (DeLiVER/CMNeXt): AdamW, no decay on 1-D params, WarmupPolyLR."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .config import OptimConfig

HEAD_NAMES = ("decode_head", "decoder", "head")  # top-level module names that get head_lr_mult


def param_groups(modules: Iterable[tuple[str, nn.Module]], cfg: OptimConfig) -> list[dict]:
    """AdamW groups: decay / no-decay (every 1-D parameter: norms, biases, scalars), head lr multiplier.

    ``modules`` are (prefix, module) pairs so the student and the trainable FSMs share one optimiser.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for _prefix, module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            is_head = name.split(".")[0] in HEAD_NAMES
            groups.setdefault((p.ndim > 1, is_head and cfg.head_lr_mult != 1.0), []).append(p)
    out = []
    for (decay, head), params in sorted(groups.items()):
        out.append({"params": params, "weight_decay": cfg.weight_decay if decay else 0.0,
                    "lr": cfg.lr * (cfg.head_lr_mult if head else 1.0),
                    "lr_mult": cfg.head_lr_mult if head else 1.0})
    return out


def build_optimizer(modules: Iterable[tuple[str, nn.Module]], cfg: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(modules, cfg), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             weight_decay=cfg.weight_decay)


@dataclass
class WarmupPolyLR:
    """lr(t) = base * (r + (1 - r) t / W) for t < W, then base * (1 - (t - W) / (T - W)) ** power.

    Stepped once per optimiser step; ``T`` is the poly horizon (the reference uses (epochs + 1) * iters_per_epoch
    so the last step never reaches lr 0). Its state is two ints, so checkpoints stay ``weights_only``-loadable.
    """

    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    warmup_iters: int
    total_iters: int
    warmup_ratio: float = 0.1
    power: float = 0.9
    last_iter: int = 0

    @classmethod
    def build(cls, optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_iters: int,
              iters_per_epoch: int) -> "WarmupPolyLR":
        warmup = cfg.warmup_iters if cfg.warmup_iters is not None else round(cfg.warmup_epochs * iters_per_epoch)
        horizon = total_iters + max(iters_per_epoch, 1)
        warmup = max(0, min(int(warmup), horizon - 1))
        sched = cls(optimizer, [g["lr"] for g in optimizer.param_groups], warmup, horizon, cfg.warmup_ratio,
                    cfg.power)
        sched._apply()
        return sched

    def factor(self, t: int) -> float:
        if t < self.warmup_iters:
            return self.warmup_ratio + (1.0 - self.warmup_ratio) * t / self.warmup_iters
        span = max(self.total_iters - self.warmup_iters, 1)
        return max(0.0, 1.0 - (t - self.warmup_iters) / span) ** self.power

    def _apply(self) -> None:
        f = self.factor(self.last_iter)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def step(self) -> None:
        self.last_iter += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_iter": self.last_iter, "warmup_iters": self.warmup_iters, "total_iters": self.total_iters,
                "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.last_iter = int(state["last_iter"])
        self.warmup_iters = int(state["warmup_iters"])
        self.total_iters = int(state["total_iters"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self._apply()
