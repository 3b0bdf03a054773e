"""The synchroniser under a fake clock: four simulated sensors with rates, latencies, jitter, deaths and restarts."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from equiseg_ros.ros.pipeline import time_can_emit
from equiseg_ros.ros.sync import ABSENT_REASONS, SyncedFrame, Synchronizer

MODS = ("rgb", "depth", "event", "lidar")


@dataclass
class Sensor:
    name: str
    period: float
    latency: float  # receipt time - stamp
    offset: float = 0.0  # stamp phase
    alive: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 1e9)])  # stamp intervals it publishes
    jitter: float = 0.0  # uniform +- on latency (can reorder arrivals)


def simulate(sync: Synchronizer, sensors: list[Sensor], t_end: float, poll_period: float = 0.01, seed: int = 0,
             poll_on_push: bool = True) -> list[tuple[float, SyncedFrame]]:
    """Replay sensor messages in arrival order against a fake clock; returns (emit time, frame)."""
    rng = random.Random(seed)
    events = []
    for s in sensors:
        k = 0
        while True:
            stamp = s.offset + k * s.period
            k += 1
            if stamp > t_end + 0.2:  # a little past the end, so the last frames have their partners
                break
            if not any(a <= stamp < b for a, b in s.alive):
                continue
            arrival = stamp + s.latency + (rng.uniform(-s.jitter, s.jitter) if s.jitter else 0.0)
            events.append((arrival, 0, s.name, round(stamp, 9)))
    t = 0.0
    while t <= t_end + 1.0:
        events.append((t, 1, "", 0.0))
        t += poll_period
    events.sort()
    out = []
    for now, kind, name, stamp in events:
        if kind == 0:
            sync.push(name, stamp, (name, stamp), now)
            if not poll_on_push:
                continue
        frame = sync.poll(now)
        if frame is not None and frame.stamp <= t_end + 1e-9:
            out.append((now, frame))
    return out


def four(**over) -> list[Sensor]:
    base = {"rgb": Sensor("rgb", 0.1, 0.02), "depth": Sensor("depth", 0.1, 0.03, offset=0.005),
            "event": Sensor("event", 0.1, 0.025, offset=-0.004, alive=[(-1.0, 1e9)]),
            "lidar": Sensor("lidar", 0.1, 0.04, offset=0.01)}
    for k, v in over.items():
        base[k] = v
    return list(base.values())


def check_invariants(frames: list[tuple[float, SyncedFrame]], slop: float) -> None:
    stamps = [f.stamp for _, f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "a frame was emitted twice or went back"
    for _, f in frames:
        assert f.items[f.anchor] is not None and f.anchor not in f.absent
        for m, item in f.items.items():
            if item is None:
                assert f.absent[m] in ABSENT_REASONS
            else:
                assert m not in f.absent and item[0] == m and abs(item[1] - f.stamp) <= slop + 1e-9


def test_all_sensors_alive_every_anchor_frame_once_with_all_items() -> None:
    sync = Synchronizer(MODS, slop=0.05, max_age=0.5)
    frames = simulate(sync, four(), t_end=3.0)
    check_invariants(frames, 0.05)
    assert [round(f.stamp, 3) for _, f in frames] == [round(0.1 * k, 3) for k in range(31)]
    for now, f in frames:
        assert f.anchor == "rgb" and not f.absent and f.dropped == 0
        if f.stamp > 0:  # (the first frame waits up to `wait` for event, whose period is not known yet)
            assert now - f.stamp <= 0.05 + 1e-9  # emitted as soon as the slowest sensor's message (lidar) arrived
    st = sync.stats(now=3.25)  # (the simulation runs on past t_end: everything is stale at its very end)
    assert all(s.state == "alive" for s in st.values())
    assert st["rgb"].rate_hz == pytest.approx(10.0) and st["rgb"].anchored == 33 and st["depth"].anchored == 0
    assert sync.stats()["rgb"].state == "stale"


@pytest.mark.parametrize("dead", ["depth", "event", "lidar"])
def test_each_non_anchor_sensor_dead_in_turn(dead: str) -> None:
    sens = {s.name: s for s in four()}
    sens[dead].alive = [(-1.0, 1.0)]  # stops publishing at 1 s
    sync = Synchronizer(MODS, slop=0.05, max_age=0.3)
    frames = simulate(sync, list(sens.values()), t_end=3.0)
    check_invariants(frames, 0.05)
    assert len(frames) == 31  # it never stops nor waits for the dead sensor
    for now, f in frames:
        assert now - f.stamp <= 0.04 + 0.05 + 0.01 + 1e-9  # at most slowest latency + wait + one poll period
        if f.stamp < 1.0 - 1e-9:
            assert not f.absent
        elif f.stamp > 1.0 + 0.3 + 0.05:
            assert f.absent == {dead: "stale"} and f.items[dead] is None
        else:
            assert f.absent.get(dead) in (None, "no_match_within_slop", "stale")
    assert sync.stats()[dead].state == "stale"


def test_anchor_dies_next_takes_over_and_anchor_returns() -> None:
    sens = {s.name: s for s in four()}
    sens["rgb"].alive = [(0.0, 1.0), (2.0, 1e9)]
    sync = Synchronizer(MODS, priority=["rgb", "depth", "event", "lidar"], slop=0.05, max_age=0.3)
    frames = simulate(sync, list(sens.values()), t_end=3.0)
    check_invariants(frames, 0.05)
    anchors = [(round(f.stamp, 3), f.anchor) for _, f in frames]
    assert all(a == "rgb" for s, a in anchors if s < 1.0 or s >= 2.0)
    failover = [f for _, f in frames if f.anchor == "depth"]
    assert failover and all(1.0 < f.stamp < 2.0 for f in failover)
    # until rgb turns stale (max_age after its last message) depth stands in for its overdue messages; after, rgb
    # is stale: either way rgb is absent and says why
    last_rgb_arrival = 0.9 + sens["rgb"].latency
    for emitted, f in ((t, f) for t, f in frames if f.anchor == "depth"):
        want = "stale" if emitted - last_rgb_arrival > 0.3 else "no_match_within_slop"
        assert f.absent["rgb"] == want, (emitted, f.stamp, f.absent)
    assert {f.absent["rgb"] for f in failover} == {"stale", "no_match_within_slop"}
    # the gap in the output is bounded by one anchor period + wait (the stand-in), not by max_age, and not infinite
    # like ApproximateTime's
    stamps = [f.stamp for _, f in frames]
    assert max(b - a for a, b in zip(stamps, stamps[1:])) <= 0.1 + 0.05 + 1e-6
    # after the return, rgb anchors again from its first message on
    assert round(min(f.stamp for _, f in frames if f.stamp >= 2.0 and f.anchor == "rgb"), 3) == 2.0


def test_single_lost_anchor_message_costs_no_frame_and_a_late_one_no_double() -> None:
    """The demo bag drops a fifth of the depth messages while the camera is frozen: depth anchors, and a lost depth
    message used to cost the frame that event and LiDAR had delivered."""
    lost = [(0.0, 0.7), (0.8, 1.3), (1.4, 1e9)]  # depth stamps 0.705 and 1.305 never arrive
    sensors = four(rgb=Sensor("rgb", 0.1, 0.02, alive=[]), depth=Sensor("depth", 0.1, 0.03, offset=0.005, alive=lost))
    sync = Synchronizer(MODS, slop=0.05, max_age=0.5, wait=0.05)
    frames = simulate(sync, sensors, t_end=2.0)
    check_invariants(frames, 0.05)
    by_stamp = {round(f.stamp, 3): f for _, f in frames}
    for s in (0.696, 1.296):  # event's stamps of the two frames depth lost: event stands in, depth says why
        assert by_stamp[s].anchor == "event" and by_stamp[s].absent["depth"] == "no_match_within_slop"
        assert by_stamp[s].items["lidar"] is not None
    assert len(frames) >= 20 and all(f.anchor == "depth" for s, f in by_stamp.items() if s not in (0.696, 1.296))
    # a depth message that only arrives (very) late after its stand-in frame is not emitted again
    late = Synchronizer(MODS, slop=0.05, max_age=0.5, wait=0.05)
    for k in range(5):
        late.push("depth", 0.1 * k, ("depth", 0.1 * k), now=0.1 * k + 0.03)
        late.push("event", 0.1 * k, ("event", 0.1 * k), now=0.1 * k + 0.02)
        assert late.poll(0.1 * k + 0.09).anchor == "depth"  # rgb and lidar never seen: wait runs out
    late.push("event", 0.5, ("event", 0.5), now=0.52)
    assert late.poll(0.55) is None  # depth is not overdue yet: 0.43 + 0.1 + 0.05
    frame = late.poll(0.59)
    assert frame.anchor == "event" and frame.stamp == 0.5 and frame.absent["depth"] == "no_match_within_slop"
    late.push("depth", 0.5, ("depth", 0.5), now=0.6)
    assert late.poll(0.61) is None and late.emitted == 6


def test_jittered_out_of_order_stamps_match_the_right_messages() -> None:
    sensors = [Sensor("rgb", 0.05, 0.02, jitter=0.015), Sensor("depth", 0.05, 0.02, offset=0.003, jitter=0.04),
               Sensor("event", 0.05, 0.02, offset=-0.002, jitter=0.04), Sensor("lidar", 0.1, 0.03, jitter=0.04)]
    sync = Synchronizer(MODS, slop=0.02, max_age=0.5, buffer=8, wait=0.07)  # wait covers the latency spread
    frames = simulate(sync, sensors, t_end=4.0, seed=3)
    check_invariants(frames, 0.02)
    assert sync.stats()["depth"].late > 0, "the jitter should have reordered some arrivals"
    assert len(frames) > 0.8 * 81
    for _, f in frames:  # depth/event messages exist at every 50 ms: the nearest one is always the same-index one
        for m, off in (("depth", 0.003), ("event", -0.002)):
            if f.items[m] is not None:
                assert f.items[m][1] == pytest.approx(f.stamp + off)
    present = sum(f.items["depth"] is not None for _, f in frames) / len(frames)
    assert present > 0.95


def test_duplicates_never_emit_twice() -> None:
    sync = Synchronizer(["rgb", "depth"], slop=0.05, max_age=0.5, wait=0.0)
    sync.push("depth", 1.0, "d1", now=1.01)
    sync.push("rgb", 1.0, "r1", now=1.01)
    f = sync.poll(1.02)
    assert f is not None and f.items == {"rgb": "r1", "depth": "d1"}
    sync.push("rgb", 1.0, "r1-again", now=1.03)  # a duplicate (e.g. two subscriptions, a republisher)
    assert sync.poll(1.04) is None
    sync.push("rgb", 0.95, "r-late", now=1.05)  # an older stamp arriving late cannot anchor a frame any more
    assert sync.poll(1.06) is None
    assert sync.stats()["rgb"].duplicates == 1 and sync.stats()["rgb"].late == 1
    sync.push("rgb", 1.1, "r2", now=1.11)
    f = sync.poll(1.12)
    assert f.stamp == 1.1 and f.absent == {"depth": "no_match_within_slop"}
    assert f.details["depth"].startswith("nearest message -0.100 s")


def test_only_the_newest_frame_is_emitted_and_drops_are_counted() -> None:
    sync = Synchronizer(["rgb", "lidar"], slop=0.05, max_age=1.0, buffer=5)
    for k in range(4):
        sync.push("rgb", 1.0 + 0.1 * k, f"r{k}", now=1.31 + 0.001 * k)
    f = sync.poll(1.4)
    assert f.items["rgb"] == "r3" and f.dropped == 3 and f.absent == {"lidar": "never_seen"}
    sync.push("rgb", 1.4, "r4", now=1.41)
    assert sync.poll(1.42) is None  # start-up: the never-seen lidar is waited for up to `wait`
    assert sync.poll(1.46).dropped == 0
    assert sync.dropped_total == 3 and sync.emitted == 2


def test_waits_briefly_for_a_live_sensor_but_never_for_a_dead_one() -> None:
    sync = Synchronizer(["rgb", "depth"], slop=0.05, max_age=0.5, wait=0.05)
    for k in range(3):  # both alive at 10 Hz, depth arrives 20 ms after rgb
        t = 0.1 * k
        sync.push("rgb", t, f"r{k}", now=t + 0.01)
        assert sync.poll(t + 0.011) is None  # depth of this stamp is still in flight
        sync.push("depth", t, f"d{k}", now=t + 0.03)
        f = sync.poll(t + 0.031)
        assert f.items == {"rgb": f"r{k}", "depth": f"d{k}"}
    # depth stops; while it is still "alive" (within max_age) the frame waits at most `wait`
    sync.push("rgb", 0.3, "r3", now=0.31)
    assert sync.poll(0.33) is None
    f = sync.poll(0.361)
    assert f.items["depth"] is None and f.absent == {"depth": "no_match_within_slop"}
    # once depth is stale, no waiting at all
    sync.push("rgb", 0.9, "r9", now=0.91)
    f = sync.poll(0.91)
    assert f is not None and f.absent == {"depth": "stale"}


def test_sensor_that_never_appears() -> None:
    sensors = [s for s in four() if s.name != "lidar"]
    sync = Synchronizer(MODS, slop=0.05, max_age=0.5)
    frames = simulate(sync, sensors, t_end=1.0)
    assert len(frames) == 11
    assert all(f.absent == {"lidar": "never_seen"} for _, f in frames)
    assert sync.stats()["lidar"].state == "never_seen"


def test_all_sensors_dead_emits_nothing() -> None:
    sync = Synchronizer(MODS)
    sync.push("rgb", 0.0, "r", now=0.0)
    assert sync.poll(0.0) is None  # at start-up, the others may still come: wait up to `wait`
    assert sync.poll(0.05) is not None
    assert sync.poll(10.0) is None
    sync.push("rgb", 0.0, "r", now=20.0)  # a stale stamp re-sent: already emitted
    assert sync.poll(20.0) is None


def test_malformed_and_unhealthy_are_absent_and_unhealthy_anchor_fails_over() -> None:
    sync = Synchronizer(["rgb", "depth", "lidar"], slop=0.05, max_age=0.5, wait=0.0)
    sync.push("rgb", 1.0, "r", 1.01)
    sync.push("depth", 1.0, "d", 1.01)
    sync.mark_malformed("lidar", 1.01)
    f = sync.poll(1.02)
    assert f.anchor == "rgb" and f.absent == {"lidar": "malformed"}
    sync.mark_unhealthy("rgb", "frozen: 5 identical frames in a row", 1.05)
    sync.push("rgb", 1.1, "r2", 1.11)
    sync.push("depth", 1.1, "d2", 1.11)
    sync.push("lidar", 1.1, "l2", 1.11)  # a good lidar message clears "malformed"
    f = sync.poll(1.12)
    assert f.anchor == "depth" and f.absent == {"rgb": "unhealthy"} and f.details["rgb"].startswith("frozen")
    assert f.items["lidar"] == "l2"
    sync.mark_healthy("rgb")
    sync.push("rgb", 1.2, "r3", 1.21)
    sync.push("depth", 1.2, "d3", 1.21)
    f = sync.poll(1.22)
    assert f.anchor == "rgb" and f.items["rgb"] == "r3" and f.items["lidar"] is None
    assert sync.state("lidar") == ("alive", "")
    assert sync.stats()["rgb"].state == "alive"


def test_backward_clock_jump_resets_cleanly() -> None:
    """use_sim_time with a looping bag: the clock and the stamps go back to the start."""
    sync = Synchronizer(["rgb", "depth"], slop=0.05, max_age=0.5)
    first = simulate(sync, [Sensor("rgb", 0.1, 0.02), Sensor("depth", 0.1, 0.02)], t_end=2.0)
    assert len(first) == 21
    again = simulate(sync, [Sensor("rgb", 0.1, 0.02), Sensor("depth", 0.1, 0.02)], t_end=2.0)
    assert sync.resets == 1
    assert len(again) == 21 and all(not f.absent for _, f in again)
    check_invariants(again, 0.05)


def test_backward_stamp_jump_with_a_monotonic_clock_resets_and_ignores_stragglers() -> None:
    """A bag looping while the node runs on wall time: stamps jump back, ``now`` keeps going."""
    sync = Synchronizer(["rgb", "depth"], slop=0.05, max_age=0.5, wait=0.0)
    for k in range(20):
        t = 0.1 * k
        sync.push("rgb", 100.0 + t, "r", now=t)
        sync.push("depth", 100.0 + t, "d", now=t + 0.001)
        assert sync.poll(t + 0.002) is not None
    sync.push("rgb", 100.0, "r-loop", now=2.0)  # the loop: rgb first
    sync.push("depth", 102.0, "d-old", now=2.001)  # a straggler of the previous pass
    f = sync.poll(2.002)
    assert sync.resets == 1
    assert f.stamp == 100.0 and f.items["rgb"] == "r-loop" and f.items["depth"] is None
    sync.push("depth", 100.0, "d-loop", now=2.003)  # the looped depth does not reset a second time
    sync.push("rgb", 100.1, "r", now=2.1)
    sync.push("depth", 100.1, "d", now=2.1)
    f = sync.poll(2.11)
    assert sync.resets == 1 and f.items == {"rgb": "r", "depth": "d"}


def test_small_clock_jitter_is_not_a_jump() -> None:
    sync = Synchronizer(["rgb"], max_age=0.5)
    sync.push("rgb", 1.0, "a", now=1.0)
    sync.push("rgb", 1.1, "b", now=0.999)  # another callback thread read the clock a moment earlier
    assert sync.resets == 0 and sync.poll(1.1).items["rgb"] == "b"


def test_constructor_and_unknown_modality_errors() -> None:
    with pytest.raises(ValueError, match="permutation"):
        Synchronizer(["rgb", "depth"], priority=["rgb"])
    with pytest.raises(ValueError, match="unique"):
        Synchronizer(["rgb", "rgb"])
    with pytest.raises(KeyError, match="unknown modality 'radar'"):
        Synchronizer(["rgb"]).push("radar", 0.0, None, 0.0)


def test_non_finite_stamp_counts_as_malformed() -> None:
    sync = Synchronizer(["rgb", "depth"], wait=0.0)
    sync.push("depth", float("nan"), "d", now=1.0)
    sync.push("rgb", 1.0, "r", now=1.0)
    f = sync.poll(1.0)
    assert f.absent == {"depth": "malformed"} and sync.stats()["depth"].malformed == 1


def _replay_both(sensors: list[Sensor], t_end: float, seed: int, **kw) -> tuple[list, list, int, int]:
    """Frames from an always-running 10 ms poll timer vs the node's timer that runs only while
    ``time_can_emit`` (armed by every buffered message). Same arrivals, same tick grid."""
    results, ticks = [], []
    for gated in (False, True):
        sync = Synchronizer(MODS, **kw)
        rng = random.Random(seed)
        events = []
        for s in sensors:
            k = 0
            while (stamp := s.offset + k * s.period) <= t_end:
                k += 1
                if any(a <= stamp < b for a, b in s.alive):
                    lat = s.latency + (rng.uniform(-s.jitter, s.jitter) if s.jitter else 0.0)
                    events.append((stamp + lat, 0, s.name, round(stamp, 9)))
        events += [(i * 0.01, 1, "", 0.0) for i in range(int((t_end + 2.0) / 0.01))]
        events.sort()
        armed, out, n = False, [], 0
        for now, kind, name, stamp in events:
            if kind == 0:
                sync.push(name, stamp, (name, stamp), now)
                armed = True
            elif gated and not armed:
                continue
            else:
                n += 1
            frame = sync.poll(now)
            if frame is not None:
                out.append((round(now, 6), frame.stamp, frame.anchor, tuple(sorted(frame.absent.items()))))
            if kind == 1 and gated and not time_can_emit(sync):
                armed = False
        results.append(out)
        ticks.append(n)
    return results[0], results[1], ticks[0], ticks[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poll_timer_gated_by_time_can_emit_emits_the_same_frames(seed: int) -> None:
    """Idle cost without changing the policy: the anchor's bounded wait, failover when the anchor dies, a gap with
    every sensor dead and the restart give the very same frames (and emit times) as a timer that never stops,
    while the gated timer does not tick at all in the silent gap."""
    sens = {s.name: s for s in four()}
    sens["rgb"].alive = [(-1.0, 1.0), (1.6, 2.4), (4.0, 6.0)]  # anchor dies twice (failover to depth), returns
    sens["depth"].alive = [(-1.0, 2.4), (4.0, 6.0)]
    sens["event"].alive = [(-1.0, 2.4), (4.0, 6.0)]
    sens["lidar"].alive = [(-1.0, 2.4), (4.0, 5.0)]  # lidar dies for good at 5 s
    sens["lidar"].latency, sens["lidar"].jitter = 0.09, 0.05  # lags: the anchor waits (sync.wait) for it
    always, gated, n_always, n_gated = _replay_both(list(sens.values()), 6.0, seed, slop=0.05, max_age=0.3,
                                                    wait=0.1)
    assert always == gated
    assert len(always) > 40 and {"rgb", "depth"} <= {a for _, _, a, _ in always}
    assert n_gated < n_always - 100  # the 2.4 .. 4.0 s gap (all dead) and the tail cost no ticks
