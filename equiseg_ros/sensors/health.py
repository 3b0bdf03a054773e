"""Sensor health: a sensor can be alive but useless. Cheap per-message checks that mark such a modality absent.

Checks (each configurable, each disabled by setting its threshold to 0 / None):

* **frozen** — ``frozen_frames`` consecutive identical messages (a hung driver republishing its last frame); an
  empty event frame (no motion) never counts as frozen;
* **black / saturated** camera — nearly every pixel dark (lens cap, night without lights) or blown out (sun);
* **depth invalid** — mostly NaN / inf / <= 0 (metric float) or 0 (uint16 mm): a blinded or disconnected depth;
* **too few points** — a LiDAR cloud with fewer finite points than ``min_points`` (occluded, rain, dropped packets);
* **noisy** — a camera whose noise estimate (Immerkær's fast estimator on grey rows) exceeds ``noise_ratio`` times
  its baseline, the median over its first ``noise_warmup`` frames, or a given ``noise_baseline``.

Statistics use a strided subsample (``sample_stride``) to stay cheap at 1024² (see bench/bench_sensor_io.py).
``HealthMonitor.check`` is called by the node after decoding and before the synchroniser: a failing check becomes
``Synchronizer.mark_unhealthy(modality, reason)`` and a ``/diagnostics`` WARN; the model sees the modality absent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["HealthConfig", "HealthMonitor", "KINDS", "estimate_noise_sigma"]

KINDS = ("image", "depth", "pointcloud", "events", "other")


@dataclass
class HealthConfig:
    """Thresholds of the health checks (0 or None disables a check)."""

    enabled: bool = True
    frozen_frames: int = 5  # identical consecutive messages before "frozen"
    black_level: int = 12  # 8-bit value at or below which a pixel counts as black (max over channels)
    black_fraction: float = 0.98  # fraction of black pixels that makes the frame "black"
    saturated_level: int = 250  # 8-bit value at or above which a pixel counts as saturated (min over channels)
    saturated_fraction: float = 0.95
    depth_invalid_fraction: float = 0.9  # NaN/inf/<=0 fraction of a depth image that makes it "invalid"
    min_points: int = 1000  # finite points a LiDAR cloud needs
    noise_ratio: float = 3.0  # noise sigma above ratio * baseline -> "noisy"
    noise_min_sigma: float = 4.0  # ... and above this absolute sigma (8-bit levels), so clean baselines ~0 still pass
    noise_warmup: int = 10  # estimates whose median becomes the baseline (when no noise_baseline is given)
    noise_every: int = 3  # estimate the noise on every n-th frame (it changes slowly; the rest reuse the verdict)
    noise_baseline: dict[str, float] = field(default_factory=dict)  # modality -> known baseline sigma
    sample_stride: int = 4  # subsample step for frame statistics

    def __post_init__(self) -> None:
        if self.noise_every < 1:
            raise ValueError(f"health.noise_every: must be >= 1, got {self.noise_every}")
        if self.sample_stride < 1:
            raise ValueError(f"health.sample_stride: must be >= 1, got {self.sample_stride}")
        for name in ("black_fraction", "saturated_fraction", "depth_invalid_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"health.{name}: must be in [0, 1], got {v}")


def estimate_noise_sigma(image: np.ndarray, row_stride: int = 4) -> float:
    """Noise sigma of an image (Immerkær 1996: mean |I * M| with M = [[1,-2,1],[-2,4,-2],[1,-2,1]]).

    The mask cancels planar structure, so edges cost little. Evaluated on row triplets every ``row_stride`` rows;
    colour images are converted to grey on those rows only (a full-frame conversion costs more than the estimate).
    """
    a = np.asarray(image)
    H, W = a.shape[:2]
    if H < 3 or W < 3:
        return 0.0
    starts = np.arange(0, H - 2, max(int(row_stride), 1))
    rows = a[np.stack([starts, starts + 1, starts + 2])]  # [3, n, W(, C)]
    if rows.ndim == 4:  # explicit channel sum: numpy reductions over a length-3 inner axis are slow
        g = rows[..., 0].astype(np.float32)
        for c in range(1, rows.shape[3]):
            g += rows[..., c]
        g /= rows.shape[3]
    else:
        g = rows.astype(np.float32)
    r0, r1, r2 = g[0], g[1], g[2]
    conv = ((r0[:, :-2] + r0[:, 2:] + r2[:, :-2] + r2[:, 2:])
            - 2.0 * (r0[:, 1:-1] + r2[:, 1:-1] + r1[:, :-2] + r1[:, 2:]) + 4.0 * r1[:, 1:-1])
    return float(np.sqrt(np.pi / 2.0) / 6.0 * np.mean(np.abs(conv)))


@dataclass
class _State:
    last_sample: np.ndarray | None = None
    same_count: int = 0
    sigmas: list[float] = field(default_factory=list)
    images: int = 0  # images seen (for noise_every)
    noise_verdict: tuple[bool, str] | None = None  # the last noise result, reused between estimates
    baseline: float | None = None
    last: tuple[bool, str] = (True, "")


class HealthMonitor:
    """Stateful per-modality checks; ``check`` returns ``(ok, reason)`` and remembers it for diagnostics."""

    def __init__(self, config: HealthConfig | None = None) -> None:
        self.config = config or HealthConfig()
        self._state: dict[str, _State] = {}

    def reset(self, modality: str | None = None) -> None:
        """Forget history (all modalities, or one); e.g. after a backward time jump."""
        if modality is None:
            self._state.clear()
        else:
            self._state.pop(modality, None)

    def status(self, modality: str) -> tuple[bool, str]:
        """The last result of ``check`` for ``modality`` ((True, "") before any)."""
        st = self._state.get(modality)
        return st.last if st else (True, "")

    def baseline(self, modality: str) -> float | None:
        st = self._state.get(modality)
        return None if st is None else (self.config.noise_baseline.get(modality) or st.baseline)

    def check(self, modality: str, kind: str, data: Any) -> tuple[bool, str]:
        """Run the checks that apply to ``kind`` (image, depth, pointcloud, events, other) on decoded ``data``."""
        if kind not in KINDS:
            raise ValueError(f"health: unknown kind {kind!r}; known: {KINDS}")
        st = self._state.setdefault(modality, _State())
        if not self.config.enabled:
            st.last = (True, "")
            return st.last
        result = None if kind == "events" and not np.any(data) else self._frozen(st, data)
        if result is None:
            if kind == "image":
                result = self._image(modality, st, np.asarray(data))
            elif kind == "depth":
                result = self._depth(np.asarray(data))
            elif kind == "pointcloud":
                result = self._cloud(data)
        st.last = result if result is not None else (True, "")
        return st.last

    # ---- checks --------------------------------------------------------------------------------------------
    def _sample(self, data: Any) -> np.ndarray:
        a = np.asarray(data)
        s = self.config.sample_stride
        if a.dtype.names is not None:  # structured point cloud: a strided slice of its raw bytes
            flat = a.reshape(-1)
            return np.ascontiguousarray(flat[::s]).view(np.uint8).copy()
        if a.ndim >= 2:
            return np.array(a[::s, ::s], copy=True)
        return np.array(a[::s], copy=True)

    def _frozen(self, st: _State, data: Any) -> tuple[bool, str] | None:
        n = self.config.frozen_frames
        if not n:
            return None
        sample = self._sample(data)
        prev = st.last_sample
        if (prev is not None and sample.shape == prev.shape and sample.dtype == prev.dtype
                and np.array_equal(sample, prev, equal_nan=sample.dtype.kind == "f")):
            st.same_count += 1
        else:
            st.same_count = 0
        st.last_sample = sample
        if st.same_count + 1 >= n:
            return False, f"frozen: {st.same_count + 1} identical frames in a row"
        return None

    def _image(self, modality: str, st: _State, img: np.ndarray) -> tuple[bool, str] | None:
        c = self.config
        s = c.sample_stride
        sub = img[::s, ::s]
        if sub.dtype == np.uint16:
            sub = (sub >> 8).astype(np.uint8)
        elif sub.dtype != np.uint8:
            return None  # only 8/16-bit intensity images are judged
        if sub.ndim == 3:
            sub = sub[..., :3]
            hi, lo = sub.max(axis=2), sub.min(axis=2)
        else:
            hi = lo = sub
        if c.black_fraction and np.count_nonzero(hi <= c.black_level) >= c.black_fraction * hi.size:
            return False, f"black: >= {c.black_fraction:.0%} of pixels <= {c.black_level}"
        if c.saturated_fraction and np.count_nonzero(lo >= c.saturated_level) >= c.saturated_fraction * lo.size:
            return False, f"saturated: >= {c.saturated_fraction:.0%} of pixels >= {c.saturated_level}"
        if c.noise_ratio:
            st.images += 1
            if (st.images - 1) % c.noise_every:
                return st.noise_verdict
            st.noise_verdict = self._noise(modality, st, img)
            return st.noise_verdict
        return None

    def _noise(self, modality: str, st: _State, img: np.ndarray) -> tuple[bool, str] | None:
        c = self.config
        s = c.sample_stride
        colour = img[..., :3] if img.ndim == 3 else img
        # about 64 row triplets whatever the resolution: plenty of pixels for a sigma, a few ms at 1024²
        sigma = estimate_noise_sigma(colour, row_stride=max(s, colour.shape[0] // 64))
        if img.dtype == np.uint16:
            sigma /= 257.0
        base = c.noise_baseline.get(modality) or st.baseline
        if base is None:
            st.sigmas.append(sigma)
            if len(st.sigmas) >= max(c.noise_warmup, 1):
                st.baseline = float(np.median(st.sigmas))
            return None
        if sigma > c.noise_ratio * base and sigma > c.noise_min_sigma:
            return False, f"noisy: sigma {sigma:.1f} > {c.noise_ratio:g} x baseline {base:.1f}"
        return None

    def _depth(self, depth: np.ndarray) -> tuple[bool, str] | None:
        frac = self.config.depth_invalid_fraction
        if not frac:
            return None
        s = self.config.sample_stride
        sub = depth[::s, ::s]
        if sub.dtype.kind == "f":
            bad = ~(np.isfinite(sub) & (sub > 0))
        else:
            bad = sub == 0
        ratio = float(np.count_nonzero(bad)) / max(bad.size, 1)
        if ratio >= frac:
            return False, f"depth invalid: {ratio:.0%} of pixels NaN/zero (limit {frac:.0%})"
        return None

    def _cloud(self, cloud: Any) -> tuple[bool, str] | None:
        need = self.config.min_points
        if not need:
            return None
        a = np.asarray(cloud)
        if a.dtype.names is not None:
            flat = a.reshape(-1)
            ok = np.isfinite(flat["x"]) & np.isfinite(flat["y"]) & np.isfinite(flat["z"])
        else:
            pts = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(0, 3)
            ok = np.isfinite(pts[:, :3]).all(axis=1)
        n = int(np.count_nonzero(ok))
        if n < need:
            return False, f"too few points: {n} finite < {need}"
        return None
