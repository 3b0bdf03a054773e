"""Sensor-failure corruptions of the robustness benchmark (Liao et al., CVPR 2025), on normalised model inputs.

All functions take ``x`` as float [B, M, 3, H, W] (modalities in the spec's order, already normalised, exactly
what the model sees) and return a new tensor; the input is never modified. Randomness comes only from the
``generator`` argument, so a seeded generator reproduces a corruption bit for bit.

- EMM (entire-missing): a missing modality is zeroed after normalisation (zero RGB = ImageNet-mean grey).
- RMM (random-missing): each element (per channel, per pixel) of a damaged modality is zeroed with probability r.
- NM (noisy): salt-and-pepper on every modality - ceil(density * numel * 0.5) elements of the modality's batch
  tensor [B, 3, H, W] set to its max and as many to its min - then additive Gaussian noise on every modality
  except events. The reference draws salt and pepper positions with replacement (a few collide); here they are
  drawn without replacement and disjoint, so the counts are exact. Max and min are taken over the batch tensor,
  as the reference does, so use the reference's batch size (1) for per-frame identical semantics.

Generic in the number and names of modalities: the Gaussian skips every modality named in ``no_gaussian``
(default: ``event``), whatever else the spec holds (MUSES has radar where DeLiVER has depth).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

# Benchmark levels: salt-and-pepper density and Gaussian std (normalised units), index 0/1/2 = low/mid/high.
NM_LEVELS: dict[str, tuple[float, float]] = {"low": (0.05, 0.1), "mid": (0.1, 0.2), "high": (0.2, 0.5)}
NO_GAUSSIAN = ("event",)


def _check_x(x: torch.Tensor) -> None:
    if x.dim() != 5:
        raise ValueError(f"x: expected [B, M, C, H, W], got shape {tuple(x.shape)}")


def _modality_mask(mask: torch.Tensor | Sequence[bool], x: torch.Tensor, what: str) -> torch.Tensor:
    """A bool mask [M] or [B, M] on x's device, checked against x."""
    m = torch.as_tensor(mask, dtype=torch.bool, device=x.device)
    b, n = x.shape[:2]
    if m.shape not in ((n,), (b, n)):
        raise ValueError(f"{what}: expected shape [{n}] or [{b}, {n}] for x {tuple(x.shape)}, got {tuple(m.shape)}")
    return m


def emm(x: torch.Tensor, keep_mask: torch.Tensor | Sequence[bool]) -> torch.Tensor:
    """Entire-missing modality: zero every modality whose ``keep_mask`` entry is False ([M] or [B, M])."""
    _check_x(x)
    keep = _modality_mask(keep_mask, x, "keep_mask")
    if keep.dim() == 2:  # per-sample masks
        keep = keep.view(x.shape[0], x.shape[1], 1, 1, 1)
        return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for m, k in enumerate(keep.tolist()):  # copy or zero each modality: one write of the output, no mask reads
        if k:
            out[:, m].copy_(x[:, m])
        else:
            out[:, m].zero_()
    return out


def rmm(x: torch.Tensor, damaged_mask: torch.Tensor | Sequence[bool], rate: float,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Random-missing modality: in each damaged modality ([M] mask) zero every element with probability ``rate``.

    One uniform draw per element of the damaged modality's [B, 3, H, W] tensor, in modality order.
    """
    _check_x(x)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate: must be in [0, 1], got {rate}")
    damaged = _modality_mask(damaged_mask, x, "damaged_mask")
    if damaged.dim() != 1:
        raise ValueError("damaged_mask: RMM takes one mask [M] for the whole batch")
    out = x.clone()
    for m in torch.nonzero(damaged).flatten().tolist():
        drop = torch.rand(out[:, m].shape, generator=generator, device=x.device) < rate
        out[:, m].masked_fill_(drop, 0.0)
    return out


def salt_pepper_indices(numel: int, density: float, generator: torch.Generator | None = None,
                        device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of salt and pepper elements: ceil(density * numel * 0.5) each, unique and disjoint."""
    n = int(math.ceil(density * numel * 0.5))
    if 2 * n > numel:
        raise ValueError(f"density: {density} needs {2 * n} of {numel} elements")
    # The 2n smallest of numel i.i.d. uniforms are a uniformly random 2n-subset, and their order by value a random
    # permutation of it (first n salt, next n pepper). Sorting only the candidates below a threshold a little above
    # 2n/numel is 2-4x faster than a full randperm at 1024^2.
    u = torch.rand(numel, generator=generator, device=device)
    cand = torch.nonzero(u < min(1.0, 2 * n / numel * 1.02 + 64 / numel)).flatten()
    if cand.numel() < 2 * n:  # practically never: fall back to all elements
        cand = torch.arange(numel, device=device)
    chosen = cand[torch.argsort(u[cand])[: 2 * n]]
    return chosen[:n], chosen[n:]


def salt_and_pepper(t: torch.Tensor, density: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Set ceil(density * numel / 2) elements of ``t`` to ``t.max()`` and as many others to ``t.min()``."""
    out = t.clone()
    if t.numel() == 0:
        return out
    hi, lo = t.max(), t.min()
    salt, pepper = salt_pepper_indices(t.numel(), density, generator, t.device)
    flat = out.view(-1)
    flat[salt] = hi
    flat[pepper] = lo
    return out


def nm_level(level: str | int) -> tuple[str, float, float]:
    """Normalise a level given as name or benchmark index 0/1/2 -> (name, density, std)."""
    names = list(NM_LEVELS)
    if isinstance(level, int) and not isinstance(level, bool):
        if not 0 <= level < len(names):
            raise ValueError(f"level: index must be 0..{len(names) - 1}, got {level}")
        level = names[level]
    key = str(level).lower()
    if key not in NM_LEVELS:
        raise ValueError(f"level: expected one of {names} or 0..{len(names) - 1}, got {level!r}")
    density, std = NM_LEVELS[key]
    return key, density, std


def nm(x: torch.Tensor, level: str | int, modality_names: Sequence[str], generator: torch.Generator | None = None,
       no_gaussian: Sequence[str] = NO_GAUSSIAN) -> torch.Tensor:
    """Noisy modality at ``level`` (low/mid/high or 0/1/2): salt-and-pepper on all, then Gaussian except events."""
    _check_x(x)
    if len(modality_names) != x.shape[1]:
        raise ValueError(f"modality_names: {len(modality_names)} names for {x.shape[1]} modalities in x")
    _, density, std = nm_level(level)
    out = x.contiguous().clone()
    b, mods = x.shape[:2]
    per = out[0, 0].numel()  # elements of one modality of one sample (C * H * W)
    flat = out.view(-1)
    for m in range(mods):  # salt-and-pepper on every modality first, as the reference does (same draws as
        hi, lo = x[:, m].max(), x[:, m].min()  # salt_and_pepper(x[:, m]), written in place into the output)
        salt, pepper = salt_pepper_indices(b * per, density, generator, x.device)
        for idx, value in ((salt, hi), (pepper, lo)):
            flat[(idx // per * mods + m) * per + idx % per] = value  # [B, C*H*W] index -> index in [B, M, ...]
    for m, name in enumerate(modality_names):
        if name in no_gaussian:
            continue
        noise = torch.randn(out[:, m].shape, generator=generator, device=x.device, dtype=x.dtype)
        out[:, m] += noise * std
    return out


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (63-bit safe)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    return g
