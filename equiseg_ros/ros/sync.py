"""Multi-sensor synchronisation policy: pure Python over float timestamps, no rclpy, testable with a fake clock.

Why not message_filters' ApproximateTimeSynchronizer: when one input stops it goes silent forever without a word
(ros_anchors.md §2). Here a frame is built around an *anchor* message, the others are optional:

* anchor = the highest-priority modality that is **alive** (a good message received within ``max_age`` of ``now``,
  not marked malformed or unhealthy). When it dies the next one takes over; when it comes back it anchors again.
  When one of its messages is lost while it stays alive (overdue by a period plus ``wait``), the next alive
  modality anchors the frame the others delivered (a *stand-in*), so a single dropped message costs no frame.
* for every other modality the buffered message nearest to the anchor stamp within ``slop`` is taken; otherwise
  it is absent with a reason: ``never_seen``, ``stale``, ``malformed``, ``unhealthy`` or ``no_match_within_slop``.
* :meth:`Synchronizer.poll` emits at most one frame: the newest anchor message not yet emitted. Older pending
  anchor messages are dropped and counted (inference only wants the newest frame).
* it waits for an *alive* modality whose matching message may still be in flight for at most ``wait`` seconds
  after the anchor message arrived (messages of one frame arrive one after another; set ``wait`` to the spread of
  the sensors' latencies); it never waits for a dead one. During the first ``max_age`` after start (or a reset) a
  not-yet-seen modality is waited for the same way, so the first frames are not needlessly partial.
* frames are emitted with strictly increasing stamps, so a frame is never emitted twice (duplicates and
  out-of-order anchor messages older than the last frame are ignored as anchors, still usable as matches).
* a backward jump of ``now`` or of a modality's stamps by more than ``time_jump`` (a looping bag, ``use_sim_time``)
  resets all buffers and the emission history.

Time: ``stamp`` is the message header stamp, ``now`` the node clock at receipt/poll (both float seconds).
Freshness uses receipt time (``now`` at push), robust to a sensor clock offset; matching uses stamps.

Typical node use: decode (``DecodeError`` -> :meth:`mark_malformed`), health check (-> :meth:`mark_unhealthy` /
:meth:`mark_healthy`), :meth:`push`; a timer or each callback calls :meth:`poll`; :meth:`stats` feeds diagnostics.
"""
from __future__ import annotations

import math
import threading
from bisect import insort
from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = ["ABSENT_REASONS", "ModalityStats", "SyncedFrame", "Synchronizer"]

ABSENT_REASONS = ("never_seen", "stale", "malformed", "unhealthy", "no_match_within_slop")
_STATES = ("alive", "stale", "never_seen", "malformed", "unhealthy")


@dataclass
class SyncedFrame:
    """One synchronised set. ``items[m]`` is the payload or None; ``absent[m]`` one of :data:`ABSENT_REASONS`
    (details in ``details[m]``); ``dropped`` = anchor messages skipped since the previous frame."""

    stamp: float
    anchor: str
    items: dict[str, Any]
    absent: dict[str, str]
    dropped: int
    stamps: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    @property
    def present(self) -> dict[str, bool]:
        return {m: v is not None for m, v in self.items.items()}


@dataclass
class ModalityStats:
    """Diagnostics of one modality at a given ``now``."""

    state: str
    reason: str
    last_stamp: float | None
    age: float | None  # now - receipt time of the last good message
    rate_hz: float | None
    received: int
    malformed: int
    duplicates: int
    late: int  # stamps older than the modality's newest (out of order)
    anchored: int  # frames anchored by this modality


@dataclass
class _Msg:
    stamp: float
    seq: int
    arrival: float
    payload: Any = field(compare=False)

    def __lt__(self, other: "_Msg") -> bool:
        return (self.stamp, self.seq) < (other.stamp, other.seq)


class _Channel:
    def __init__(self) -> None:
        self.buf: list[_Msg] = []
        self.last_arrival: float | None = None  # receipt time of the last good message
        self.newest_stamp: float | None = None
        self.last_malformed: float | None = None
        self.unhealthy: str | None = None
        self.period: float | None = None  # EMA of stamp differences
        self.received = self.malformed = self.duplicates = self.late = self.anchored = 0

    def clear_buffer(self) -> None:
        self.buf.clear()
        self.newest_stamp = None
        self.period = None


class Synchronizer:
    """Anchor-based approximate-time synchroniser with failover; see the module docstring for the policy."""

    def __init__(self, modalities: Sequence[str], priority: Sequence[str] | None = None, slop: float = 0.05,
                 max_age: float = 0.5, buffer: int = 5, wait: float | None = None, time_jump: float = 1.0) -> None:
        mods = list(modalities)
        if not mods or len(set(mods)) != len(mods):
            raise ValueError(f"modalities: need a non-empty list of unique names, got {mods}")
        prio = list(priority) if priority is not None else mods
        if sorted(prio) != sorted(mods):
            raise ValueError(f"priority {prio} must be a permutation of modalities {mods}")
        if slop < 0 or max_age <= 0 or buffer < 1 or time_jump <= 0:
            raise ValueError(f"need slop >= 0, max_age > 0, buffer >= 1, time_jump > 0 "
                             f"(got {slop}, {max_age}, {buffer}, {time_jump})")
        self.modalities = tuple(mods)
        self.priority = tuple(prio)
        self.slop = float(slop)
        self.max_age = float(max_age)
        self.buffer = int(buffer)
        self.wait = float(slop if wait is None else wait)
        self.time_jump = float(time_jump)
        self._lock = threading.Lock()
        self._ch = {m: _Channel() for m in mods}
        self._seq = 0
        self._last_now: float | None = None
        self._last_emitted: float | None = None
        self._dropped_pending = 0
        self._first_now: float | None = None  # receipt time of the first message since start/reset
        self._jump: tuple[float, float] | None = None  # (stamp, now) of the last stamp-triggered reset
        self.emitted = 0
        self.dropped_total = 0
        self.resets = 0

    # ---- input ---------------------------------------------------------------------------------------------
    def push(self, modality: str, stamp: float, payload: Any, now: float) -> None:
        """Buffer a good (decoded, healthy) message of ``modality`` stamped ``stamp`` received at ``now``."""
        with self._lock:
            ch = self._channel(modality)
            stamp = float(stamp)
            self._advance(now)
            if not math.isfinite(stamp):  # cannot be ordered or matched: treat like an undecodable message
                ch.malformed += 1
                ch.last_malformed = self._last_now
                return
            if ch.newest_stamp is not None and stamp < ch.newest_stamp - self.time_jump:
                self._reset_locked()  # this sensor's stamps went back: a looping bag or a restarted clock
                self._advance(now)
                self._jump = (stamp, self._last_now)
            elif self._jump is not None and ch.newest_stamp is None:
                ref, at = self._jump
                if self._last_now - at <= self.time_jump and stamp > ref + self.time_jump:
                    ch.late += 1  # a straggler from before the jump (other sensors not looped yet): ignore
                    return
            ch.received += 1
            ch.last_arrival = self._last_now
            if self._first_now is None:
                self._first_now = self._last_now
            if any(m.stamp == stamp for m in ch.buf):
                ch.duplicates += 1  # keep the first copy: it may already have been matched into a frame
                return
            if ch.newest_stamp is not None and stamp < ch.newest_stamp:
                ch.late += 1
            elif ch.newest_stamp is not None:
                dt = stamp - ch.newest_stamp
                if dt > 0:
                    ch.period = dt if ch.period is None else 0.8 * ch.period + 0.2 * dt
            self._seq += 1
            insort(ch.buf, _Msg(stamp, self._seq, self._last_now, payload))
            del ch.buf[:-self.buffer]
            ch.newest_stamp = stamp if ch.newest_stamp is None else max(ch.newest_stamp, stamp)

    def mark_malformed(self, modality: str, now: float) -> None:
        """A message of ``modality`` failed to decode: absent as ``malformed`` until a good one arrives."""
        with self._lock:
            ch = self._channel(modality)
            self._advance(now)
            ch.malformed += 1
            ch.last_malformed = self._last_now

    def mark_unhealthy(self, modality: str, reason: str, now: float) -> None:
        """A health check failed (frozen, black, …): absent as ``unhealthy`` until :meth:`mark_healthy`."""
        with self._lock:
            self._channel(modality).unhealthy = reason or "unhealthy"
            self._advance(now)

    def mark_healthy(self, modality: str) -> None:
        with self._lock:
            self._channel(modality).unhealthy = None

    def reset(self) -> None:
        """Forget buffers and emission history (keeps counters); also done automatically on a backward time jump."""
        with self._lock:
            self._reset_locked()

    # ---- output --------------------------------------------------------------------------------------------
    def poll(self, now: float) -> SyncedFrame | None:
        """The newest not-yet-emitted frame, or None (nothing new, or still waiting briefly for a live sensor)."""
        with self._lock:
            self._advance(now)
            now = self._last_now
            alive = [m for m in self.priority if self._state(m, now)[0] == "alive"]
            if not alive:
                return None
            pick = self._newest_ready(alive[0], now) or self._stand_in(alive, now)
            if pick is None:
                return None
            anchor, target, skipped = pick
            ach = self._ch[anchor]
            others = [m for m in self.modalities if m != anchor]
            items: dict[str, Any] = {anchor: target.payload}
            stamps: dict[str, float | None] = {anchor: target.stamp}
            absent: dict[str, str] = {}
            details: dict[str, str] = {}
            for m in others:
                state, why = self._state(m, now)
                match = self._nearest(self._ch[m], target.stamp) if state == "alive" else None
                if match is not None:
                    items[m], stamps[m] = match.payload, match.stamp
                    continue
                items[m], stamps[m] = None, None
                absent[m] = state if state != "alive" else "no_match_within_slop"
                details[m] = why if state != "alive" else self._no_match_detail(self._ch[m], target.stamp)
            self._dropped_pending += skipped
            frame = SyncedFrame(stamp=target.stamp, anchor=anchor, items={m: items[m] for m in self.modalities},
                                absent=absent, dropped=self._dropped_pending,
                                stamps={m: stamps[m] for m in self.modalities}, details=details)
            self.dropped_total += self._dropped_pending
            self._dropped_pending = 0
            self._last_emitted = target.stamp
            ach.anchored += 1
            self.emitted += 1
            ach.buf = [x for x in ach.buf if x.stamp > target.stamp - self.slop - self.max_age]
            return frame

    def state(self, modality: str, now: float | None = None) -> tuple[str, str]:
        """(state, human-readable reason) of one modality: alive/stale/never_seen/malformed/unhealthy."""
        with self._lock:
            self._channel(modality)
            return self._state(modality, self._last_now if now is None else float(now))

    def stats(self, now: float | None = None) -> dict[str, ModalityStats]:
        """Per-modality diagnostics (state, reason, last stamp, age, rate, counters)."""
        with self._lock:
            t = self._last_now if now is None else float(now)
            out = {}
            for m, ch in self._ch.items():
                state, why = self._state(m, t)
                age = None if ch.last_arrival is None or t is None else t - ch.last_arrival
                rate = 1.0 / ch.period if ch.period else None
                out[m] = ModalityStats(state=state, reason=why, last_stamp=ch.newest_stamp, age=age, rate_hz=rate,
                                       received=ch.received, malformed=ch.malformed, duplicates=ch.duplicates,
                                       late=ch.late, anchored=ch.anchored)
            return out

    # ---- internals -----------------------------------------------------------------------------------------
    def _channel(self, modality: str) -> _Channel:
        try:
            return self._ch[modality]
        except KeyError:
            raise KeyError(f"unknown modality {modality!r}; synchroniser has {list(self.modalities)}") from None

    def _advance(self, now: float) -> None:
        now = float(now)
        if self._last_now is not None and now < self._last_now - self.time_jump:
            self._reset_locked()  # the clock went back (use_sim_time and a looping bag)
            self._jump = None
            self._last_now = now
        elif self._last_now is None or now > self._last_now:
            self._last_now = now  # small backward jitter (multi-threaded callbacks) is absorbed

    def _reset_locked(self) -> None:
        for ch in self._ch.values():
            ch.clear_buffer()
            ch.last_arrival = None
            ch.last_malformed = None
        self._last_now = None
        self._first_now = None
        self._last_emitted = None
        self._dropped_pending = 0
        self.resets += 1

    def _state(self, modality: str, now: float | None) -> tuple[str, str]:
        ch = self._ch[modality]
        if ch.unhealthy is not None:
            return "unhealthy", ch.unhealthy
        if ch.last_malformed is not None and (ch.last_arrival is None or ch.last_malformed >= ch.last_arrival):
            if now is None or now - ch.last_malformed <= self.max_age:
                return "malformed", f"last message malformed ({ch.malformed} so far)"
        if ch.last_arrival is None:
            if ch.last_malformed is not None:
                return "stale", f"no good message, last malformed one {now - ch.last_malformed:.3f} s ago"
            return "never_seen", "no message received yet"
        age = (now - ch.last_arrival) if now is not None else 0.0
        if age > self.max_age:
            return "stale", f"last message {age:.3f} s ago (max_age {self.max_age} s)"
        return "alive", ""

    def _nearest(self, ch: _Channel, stamp: float) -> _Msg | None:
        best = min(ch.buf, key=lambda x: (abs(x.stamp - stamp), -x.stamp), default=None)
        if best is None or abs(best.stamp - stamp) > self.slop:
            return None
        return best

    def _newest_ready(self, anchor: str, now: float, after: float | None = None,
                      overdue: str | None = None) -> tuple[str, _Msg, int] | None:
        """(anchor, its newest ready message not yet emitted and newer than ``after``, how many older ones it
        skips); newer messages still waiting stay pending. An ``overdue`` modality is not waited for."""
        fresh = [m for m in self._ch[anchor].buf if (self._last_emitted is None or m.stamp > self._last_emitted)
                 and (after is None or m.stamp > after)]
        others = [m for m in self.modalities if m not in (anchor, overdue)]
        ready = next((i for i in range(len(fresh) - 1, -1, -1) if self._ready(fresh[i], others, now)), None)
        return None if ready is None else (anchor, fresh[ready], ready)

    def _stand_in(self, alive: list[str], now: float) -> tuple[str, _Msg, int] | None:
        """A frame anchored on the next alive modality when the anchor's message for its stamp is overdue.

        The anchor is alive, but one of its messages was lost (dropped by the transport, malformed, filtered): the
        other sensors delivered that frame and waiting for the anchor's next message would skip it. Overdue means
        no anchor message for one period plus ``wait`` since its last one. The stand-in's stamp must lie beyond every
        anchor stamp and the last frame (plus ``slop``): a late anchor message can never make a frame twice, nor
        can a second sensor's message of the same moment."""
        ach = self._ch[alive[0]]
        if ach.period is None or ach.last_arrival is None or ach.newest_stamp is None:
            return None
        if now - ach.last_arrival < ach.period + self.wait:
            return None
        # beyond the anchor's stamps and the last frame by more than slop: one stand-in per lost frame
        after = max(ach.newest_stamp, self._last_emitted if self._last_emitted is not None else -math.inf) + self.slop
        for m in alive[1:]:
            pick = self._newest_ready(m, now, after=after, overdue=alive[0])
            if pick is not None:
                return pick
        return None

    def _ready(self, target: _Msg, others: list[str], now: float) -> bool:
        """Every other modality that may still deliver a match for ``target`` has, or ``wait`` has run out."""
        if now - target.arrival >= self.wait:
            return True
        starting = self._first_now is not None and now - self._first_now < self.max_age
        for m in others:
            state = self._state(m, now)[0]
            waitable = state == "alive" or (state == "never_seen" and starting)
            if waitable and not self._settled(self._ch[m], target.stamp):
                return False  # its matching message may still be in flight: try again on the next poll
        return True

    def _settled(self, ch: _Channel, stamp: float) -> bool:
        """True when no later message of ``ch`` can match ``stamp`` better than what is already buffered."""
        if ch.newest_stamp is None:
            return False
        if ch.newest_stamp >= stamp:
            return True
        best = self._nearest(ch, stamp)
        if best is None or ch.period is None:
            return False
        return ch.newest_stamp + ch.period - stamp >= stamp - best.stamp

    def _no_match_detail(self, ch: _Channel, stamp: float) -> str:
        if not ch.buf:
            return "buffer empty"
        best = min(ch.buf, key=lambda x: abs(x.stamp - stamp))
        return f"nearest message {best.stamp - stamp:+.3f} s from the anchor (slop {self.slop} s)"
