"""One-time warnings when large sensor frames arrive late or not at all (Fast DDS default transport).

Measured (shared/reference/environment.md §2): with Fast DDS defaults a 3 MB image needs ~45 ms between processes,
four 1024² topics 140-160 ms, and best-effort 3 MB images are all lost; a shared-memory transport with a 64 MB
segment (``config/fastdds_shm.xml``) brings this to 5-20 ms with nothing lost. The node cannot fix the transport
of another process, but it can say what is wrong and where the fix is, once.
"""
from __future__ import annotations

import os
from collections import deque

PROFILE_HINT = ("use the shared-memory transport profile shipped as config/fastdds_shm.xml "
                "(export FASTDDS_DEFAULT_PROFILES_FILE=<install>/share/equiseg_ros/config/fastdds_shm.xml in the "
                "environment of the node AND of the sensor drivers; the launch file does it for the node)")


def profile_in_use() -> str:
    """The Fast DDS XML profile this process uses, or '' (defaults)."""
    return os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")


class TransportWatch:
    """Collects stamp-to-arrival delays of large messages per topic; yields each warning at most once."""

    def __init__(self, large_bytes: int, late_threshold: float, silent_timeout: float, samples: int = 10) -> None:
        self.large_bytes = int(large_bytes)
        self.late_threshold = float(late_threshold)
        self.silent_timeout = float(silent_timeout)
        self._delays: dict[str, deque[float]] = {}
        self._samples = samples
        self._publisher_since: dict[str, float] = {}
        self.warned_late = False
        self.warned_silent: set[str] = set()

    def observe(self, topic: str, nbytes: int, delay: float) -> str | None:
        """Record one large message's delay (receipt clock - header stamp); a warning text the first time the median
        of the last ``samples`` exceeds the threshold."""
        if nbytes < self.large_bytes or self.warned_late:
            return None
        d = self._delays.setdefault(topic, deque(maxlen=self._samples))
        d.append(delay)
        if len(d) < self._samples:
            return None
        median = sorted(d)[len(d) // 2]
        if median <= self.late_threshold:
            return None
        self.warned_late = True
        using = profile_in_use()
        return (f"large frames on {topic} ({nbytes / 1e6:.1f} MB) arrive {median * 1e3:.0f} ms after their stamp "
                f"(median of {len(d)}; threshold {self.late_threshold * 1e3:.0f} ms). "
                + (f"FASTDDS_DEFAULT_PROFILES_FILE={using} is set: check that the publishers use it too. "
                   if using else "Fast DDS default transports fragment big messages: ")
                + PROFILE_HINT)

    def median_delay(self, topic: str) -> float | None:
        d = self._delays.get(topic)
        return sorted(d)[len(d) // 2] if d else None

    def check_silent(self, topic: str, publishers: int, received: int, now: float) -> str | None:
        """Warn once when ``topic`` has had publishers for ``silent_timeout`` seconds but delivered nothing."""
        if received or publishers <= 0:
            self._publisher_since.pop(topic, None)
            return None
        since = self._publisher_since.setdefault(topic, now)
        if topic in self.warned_silent or now - since < self.silent_timeout:
            return None
        self.warned_silent.add(topic)
        return (f"{topic} has {publishers} publisher(s) but no message arrived in {now - since:.1f} s. If they are "
                "large frames sent best-effort, Fast DDS default transports drop them all (measured: 0 of 30 "
                "3 MB images); check the QoS (qos.reliability) and " + PROFILE_HINT)
