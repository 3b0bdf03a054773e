"""Small bounded statistics for diagnostics: event rates and latency percentiles over a sliding time window."""
from __future__ import annotations

import threading
from collections import deque

import numpy as np


class Window:
    """(time, value) samples kept for ``window`` seconds and at most ``maxlen`` samples (memory stays bounded)."""

    def __init__(self, window: float = 2.0, maxlen: int = 2048) -> None:
        self.window = float(window)
        self._d: deque[tuple[float, float]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, t: float, value: float = 0.0) -> None:
        with self._lock:
            if self._d and t < self._d[-1][0]:
                self._d.clear()  # time went backwards (sim time reset): old samples are meaningless now
            self._d.append((t, float(value)))

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def _recent(self, now: float) -> list[tuple[float, float]]:
        with self._lock:
            return [s for s in self._d if now - self.window <= s[0] <= now + 1e-9]

    def rate(self, now: float) -> float:
        """Events per second over the window (0 with fewer than two events)."""
        s = self._recent(now)
        if len(s) < 2:
            return 0.0
        span = max(now - s[0][0], s[-1][0] - s[0][0])
        return (len(s) - 1) / span if span > 0 else 0.0

    def percentiles(self, now: float, qs: tuple[float, ...] = (50, 95)) -> tuple[float, ...] | None:
        s = self._recent(now)
        if not s:
            return None
        v = np.asarray([x[1] for x in s], np.float64)
        return tuple(float(np.percentile(v, q)) for q in qs)

    def count(self, now: float) -> int:
        return len(self._recent(now))
