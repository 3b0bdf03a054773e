"""Failure injection at conversion time, so that every failure case is a reproducible file.

Each injection targets one modality (or ``all``) and is parsed from ``MOD:ARG``:
drop (fraction of messages removed), blackout (sensor silent in [T0, T1) seconds from the bag start), freeze
(re-sends the last frame before T0 with fresh stamps during [T0, T1)), noise (the NM benchmark noise at level
0/1/2 = low/mid/high, applied to the 8-bit representation), jitter (header stamp and receive time shifted by a uniform
offset in [-MS, MS] milliseconds), corrupt (a fraction of messages made malformed: data truncated, step too small or
an unknown encoding, rotating). All randomness comes from one seeded generator per (injection, modality), so a
conversion with the same arguments writes the same bag. What was done, with counts, goes into the bag's metadata.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

KINDS = ("drop", "blackout", "freeze", "noise", "jitter", "corrupt")
# NM benchmark levels (salt-and-pepper density, Gaussian std in normalised units); Gaussian not on events.
NM_DENSITY = (0.05, 0.1, 0.2)
NM_STD = (0.1, 0.2, 0.5)
NM_LEVEL_NAMES = {"low": 0, "mid": 1, "high": 2}
CORRUPTIONS = ("truncated", "bad_step", "bad_encoding")


class InjectionError(ValueError):
    """A failure-injection argument is malformed; the message names the flag and the expected form."""


@dataclass
class Injection:
    kind: str
    modality: str  # a modality name or "all"
    value: float = 0.0  # drop/corrupt fraction, noise level, jitter ms
    span: tuple[float, float] = (0.0, 0.0)  # blackout / freeze [t0, t1) seconds from the bag start
    counts: dict[str, int] = field(default_factory=dict)

    def applies_to(self, modality: str) -> bool:
        return self.modality in ("all", modality)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "modality": self.modality}
        if self.kind in ("blackout", "freeze"):
            d["t0"], d["t1"] = self.span
        elif self.kind == "noise":
            d["level"] = int(self.value)
            d["density"], d["std"] = NM_DENSITY[int(self.value)], NM_STD[int(self.value)]
        elif self.kind == "jitter":
            d["ms"] = self.value
        else:
            d["p"] = self.value
        d["counts"] = dict(sorted(self.counts.items()))
        return d


def parse(kind: str, text: str) -> Injection:
    """``--KIND MOD:ARG`` -> Injection; raises InjectionError naming the flag."""
    if kind not in KINDS:
        raise InjectionError(f"unknown injection {kind!r}; known: {list(KINDS)}")
    mod, sep, arg = text.partition(":")
    if not sep or not mod or not arg:
        raise InjectionError(f"--{kind} {text!r}: expected MODALITY:{_FORMS[kind]}")
    try:
        if kind in ("blackout", "freeze"):
            m = re.fullmatch(r"\s*([0-9.]+)\s*-\s*([0-9.]+)\s*", arg)
            if not m:
                raise ValueError
            t0, t1 = float(m.group(1)), float(m.group(2))
            if not t1 > t0 >= 0:
                raise InjectionError(f"--{kind} {text!r}: need 0 <= T0 < T1 (seconds from the bag start)")
            return Injection(kind, mod, span=(t0, t1))
        if kind == "noise":
            level = NM_LEVEL_NAMES.get(arg.lower(), None)
            level = int(arg) if level is None else level
            if level not in (0, 1, 2):
                raise InjectionError(f"--noise {text!r}: level must be 0/1/2 or low/mid/high")
            return Injection(kind, mod, value=float(level))
        value = float(arg)
    except InjectionError:
        raise
    except ValueError:
        raise InjectionError(f"--{kind} {text!r}: expected MODALITY:{_FORMS[kind]}") from None
    if kind in ("drop", "corrupt") and not 0.0 <= value <= 1.0:
        raise InjectionError(f"--{kind} {text!r}: the fraction must be in [0, 1]")
    if kind == "jitter" and not (value >= 0 and math.isfinite(value)):
        raise InjectionError(f"--jitter {text!r}: milliseconds must be >= 0")
    return Injection(kind, mod, value=value)


_FORMS = {"drop": "P (0..1)", "blackout": "T0-T1 (seconds)", "freeze": "T0-T1 (seconds)",
          "noise": "LEVEL (0/1/2 or low/mid/high)", "jitter": "MS", "corrupt": "P (0..1)"}


@dataclass
class Outcome:
    """What happens to one message: dropped, or sent with (possibly changed) data, stamp offset and corruption."""

    data: Any
    dropped: bool = False
    stamp_offset_ns: int = 0
    corruption: str | None = None


class Injector:
    """Applies the injections message by message, deterministically (seeded), and counts what it did."""

    def __init__(self, injections: Sequence[Injection], modalities: Sequence[str], seed: int = 0) -> None:
        for inj in injections:
            if inj.modality != "all" and inj.modality not in modalities:
                raise InjectionError(f"--{inj.kind} {inj.modality}: no such modality in the bag "
                                     f"(has {list(modalities)} or 'all')")
        self.injections = list(injections)
        self.seed = seed
        self._rngs: dict[tuple[int, str], np.random.Generator] = {}
        self._last: dict[str, Any] = {}  # last real data per modality (for freeze)
        self._frozen: dict[tuple[int, str], Any] = {}

    def _rng(self, i: int, modality: str) -> np.random.Generator:
        key = (i, modality)
        if key not in self._rngs:
            self._rngs[key] = np.random.default_rng([self.seed, i, sum(map(ord, modality)), len(modality)])
        return self._rngs[key]

    def apply(self, modality: str, t_rel: float, data: Any, *, image_std: Sequence[float] | None = None,
              gaussian: bool = True) -> Outcome:
        """One message of ``modality`` at ``t_rel`` seconds from the start. ``data`` is an 8-bit image (noise
        applies) or any other payload (noise is skipped and counted as ``not_applicable``)."""
        out = Outcome(data=data)
        real = data
        for i, inj in enumerate(self.injections):
            if not inj.applies_to(modality):
                continue
            c = inj.counts
            if inj.kind == "blackout" and inj.span[0] <= t_rel < inj.span[1]:
                c[modality] = c.get(modality, 0) + 1
                out.dropped = True
            elif inj.kind == "drop" and self._rng(i, modality).random() < inj.value:
                c[modality] = c.get(modality, 0) + 1
                out.dropped = True
            elif inj.kind == "freeze":
                if t_rel < inj.span[0]:
                    continue
                if t_rel < inj.span[1]:
                    held = self._frozen.setdefault((i, modality), self._last.get(modality, real))
                    out.data = held
                    c[modality] = c.get(modality, 0) + 1
            elif inj.kind == "noise":
                rng = self._rng(i, modality)
                if isinstance(out.data, np.ndarray) and out.data.dtype == np.uint8 and image_std is not None:
                    out.data = nm_noise_uint8(out.data, int(inj.value), image_std, gaussian, rng)
                    c[modality] = c.get(modality, 0) + 1
                else:
                    c["not_applicable"] = c.get("not_applicable", 0) + 1
            elif inj.kind == "jitter":
                ms = self._rng(i, modality).uniform(-inj.value, inj.value)
                out.stamp_offset_ns += int(round(ms * 1e6))
                c[modality] = c.get(modality, 0) + 1
            elif inj.kind == "corrupt" and self._rng(i, modality).random() < inj.value:
                n = sum(v for k, v in c.items() if k != "not_applicable")
                out.corruption = CORRUPTIONS[n % len(CORRUPTIONS)]
                c[modality] = c.get(modality, 0) + 1
        self._last[modality] = real
        return out

    def record(self) -> list[dict[str, Any]]:
        return [inj.describe() for inj in self.injections]


def nm_noise_uint8(img: np.ndarray, level: int, std: Sequence[float], gaussian: bool,
                   rng: np.random.Generator) -> np.ndarray:
    """The NM benchmark noise on one 8-bit image: salt-and-pepper (ceil(density*numel/2) elements each to the
    image's max and min, over all channels), then Gaussian N(0, std) in normalised units (std_norm * std_channel
    * 255 in 8-bit units) unless ``gaussian`` is false (events)."""
    x = img.astype(np.float32)
    flat = x.reshape(-1)
    n = math.ceil(NM_DENSITY[level] * flat.size * 0.5)
    hi, lo = float(flat.max()), float(flat.min())
    flat[rng.integers(0, flat.size, n)] = hi
    flat[rng.integers(0, flat.size, n)] = lo
    if gaussian:
        chan_std = np.asarray(std, np.float32).reshape(1, 1, -1) if x.ndim == 3 else float(std[0])
        x = x + rng.normal(0.0, NM_STD[level], x.shape).astype(np.float32) * chan_std * 255.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def corrupt_fields(msg: Any, kind: str) -> Any:
    """Make an Image / PointCloud2 dataclass malformed in place (still valid CDR): the node's codec must refuse it."""
    if kind == "truncated":
        msg.data = msg.data[: max(0, len(msg.data) // 2 - 1)]
    elif kind == "bad_step":
        if hasattr(msg, "step"):
            msg.step = max(0, int(msg.step) // 2)
        else:
            msg.point_step = max(1, int(msg.point_step) // 2 - 1)
    elif kind == "bad_encoding":
        if hasattr(msg, "encoding"):
            msg.encoding = "not_an_encoding"
        else:
            msg.data = msg.data[:-1]
    return msg
