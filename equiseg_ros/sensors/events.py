"""Events -> the 3-channel 8-bit event frame the models see (MUSES convention). Numpy only.

Event frame: ch0 = number of positive events per pixel, ch1 = number of negative events, ch2 = 0, each clipped to
255, accumulated over the last ``window_s`` seconds before ``t_end`` (MUSES: 30 ms). The synthetic generator makes
events from the log-brightness change between two rendered frames (an ideal DVS: one event per ``threshold`` of
log-intensity change), and ``events_from_images`` emits exactly the events whose frame ``event_frame_from_images``
returns, so the raw-event path (bags, the node) and the frame path agree bit for bit.
"""
from __future__ import annotations

import numpy as np

LOG_EPS = 1.0 / 255.0


def events_to_frame(x: np.ndarray, y: np.ndarray, t: np.ndarray, polarity: np.ndarray, height: int, width: int,
                    t_end: float | None = None, window_s: float = 0.03) -> np.ndarray:
    """Accumulate events with ``t`` in (t_end - window_s, t_end] (seconds) into uint8 [H, W, 3].

    ``polarity`` > 0 (or True) is positive; 0, -1 or False negative (MUSES stores 1/0). ``t_end`` None = the
    newest event's time. Events outside the image are dropped.
    """
    x = np.asarray(x).astype(np.int64, copy=False).reshape(-1)
    y = np.asarray(y).astype(np.int64, copy=False).reshape(-1)
    t = np.asarray(t, np.float64).reshape(-1)
    p = np.asarray(polarity).reshape(-1)
    if not (len(x) == len(y) == len(t) == len(p)):
        raise ValueError(f"events: x, y, t, polarity lengths differ ({len(x)}, {len(y)}, {len(t)}, {len(p)})")
    frame = np.zeros((height, width, 3), np.uint8)
    if len(t) == 0:
        return frame
    if t_end is None:
        t_end = float(t.max())
    keep = (t > t_end - window_s) & (t <= t_end) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    lin = y[keep] * width + x[keep]
    pos = p[keep] > 0
    n = height * width
    frame[..., 0] = np.minimum(np.bincount(lin[pos], minlength=n), 255).reshape(height, width)
    frame[..., 1] = np.minimum(np.bincount(lin[~pos], minlength=n), 255).reshape(height, width)
    return frame


def _log_change_counts(prev_gray: np.ndarray, cur_gray: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(prev_gray, np.float32)
    b = np.asarray(cur_gray, np.float32)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"event frames: expected two [H, W] images of one shape, got {a.shape} and {b.shape}")
    if threshold <= 0:
        raise ValueError(f"threshold: must be > 0, got {threshold}")
    scale = 255.0 if max(a.max(initial=0), b.max(initial=0)) > 1.0 else 1.0
    d = np.log(b / scale + LOG_EPS) - np.log(a / scale + LOG_EPS)
    n = np.floor(np.abs(d) / threshold).astype(np.int64)
    return np.where(d > 0, n, 0), np.where(d < 0, n, 0)


def event_frame_from_images(prev_gray: np.ndarray, cur_gray: np.ndarray, threshold: float = 0.15) -> np.ndarray:
    """An ideal event camera between two grey frames (uint8 0..255 or float 0..1) -> uint8 [H, W, 3] event frame.

    Each pixel fires floor(|log change| / threshold) events of the sign of the change.
    """
    pos, neg = _log_change_counts(prev_gray, cur_gray, threshold)
    frame = np.zeros(pos.shape + (3,), np.uint8)
    frame[..., 0] = np.minimum(pos, 255)
    frame[..., 1] = np.minimum(neg, 255)
    return frame


def events_from_images(prev_gray: np.ndarray, cur_gray: np.ndarray, threshold: float, t0: float, t1: float,
                       rng: np.random.Generator | None = None) -> np.ndarray:
    """The event stream behind ``event_frame_from_images``: float64 [N, 4] rows (x, y, t, p), sorted by t.

    Each pixel's events are spread evenly over (t0, t1] (with a random phase per pixel when ``rng`` is given);
    counts are capped at 255 per polarity so ``events_to_frame(..., t_end=t1, window_s=t1 - t0)`` reproduces the
    frame exactly.
    """
    pos, neg = _log_change_counts(prev_gray, cur_gray, threshold)
    cols = []
    for counts, pol in ((np.minimum(pos, 255), 1.0), (np.minimum(neg, 255), 0.0)):
        lin = np.flatnonzero(counts)
        c = counts.reshape(-1)[lin]
        if len(lin) == 0:
            continue
        rep = np.repeat(lin, c)
        k = np.arange(len(rep)) - np.repeat(np.cumsum(c) - c, c)  # 0..c-1 within a pixel
        phase = rng.random(len(lin)) if rng is not None else np.full(len(lin), 0.5)
        frac = (k + np.repeat(phase, c)) / np.repeat(c, c)
        t = t0 + (t1 - t0) * np.clip(frac, 1e-9, 1.0)
        W = pos.shape[1]
        cols.append(np.stack([rep % W, rep // W, t, np.full(len(rep), pol)], axis=1))
    if not cols:
        return np.zeros((0, 4), np.float64)
    ev = np.concatenate(cols).astype(np.float64)
    return ev[np.argsort(ev[:, 2], kind="stable")]
