"""Replay a rosbag2 through rclpy: what ``ros2 bag play`` does on a vehicle, where rosbag2 is not installed.

Messages are published as their recorded CDR bytes (no deserialisation) at the recorded receive times, scaled by
``--rate``, with each topic's recorded QoS (the converter records sensor data as best effort, depth 5). With
``--clock`` the bag time is published on ``/clock`` (so nodes run with ``use_sim_time:=true``), before every
message and at ``--clock-hz`` while waiting. Topics whose message type is not importable here (e.g. tf2_msgs from
the PyPI wheels) are skipped with a warning. Reading uses ``rosbags`` (sqlite3 and mcap, any metadata version).

Examples::

    python -m equiseg_ros.bag.replay bags/synthetic_val --clock
    python -m equiseg_ros.bag.replay bags/deliver_night --rate 0.5 --loop --topics /rgb/image /camera_info
"""
from __future__ import annotations

import argparse
import importlib
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from rosbags.highlevel import AnyReader
from rosbags.interfaces import Connection, QosDurability, QosHistory, QosReliability

CLOCK_TOPIC = "/clock"


class ReplayError(RuntimeError):
    """The bag cannot be replayed (missing, unreadable, no topic selected)."""


@dataclass
class ReplayStats:
    """What a replay did: messages per topic, skipped topics, and how late each message left vs its schedule."""

    published: dict[str, int] = field(default_factory=dict)
    skipped_topics: dict[str, str] = field(default_factory=dict)
    lateness_s: list[float] = field(default_factory=list)  # actual - scheduled publish time, per message
    gaps: list[tuple[float, float]] = field(default_factory=list)  # per topic: (recorded gap / rate, actual gap)
    wall_s: float = 0.0
    loops: int = 0
    clock_msgs: int = 0

    @property
    def total(self) -> int:
        return sum(self.published.values())


def message_class(msgtype: str) -> Any:
    """``pkg/msg/Name`` -> the rclpy message class; ImportError/AttributeError when not available."""
    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def qos_of(conn: Connection, reliable: bool | None = None, depth: int | None = None) -> Any:
    """rclpy QoSProfile from a connection's first offered QoS (sensor-data default when the bag has none)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    offered = list(getattr(conn.ext, "offered_qos_profiles", []) or [])
    if not offered:
        profile = QoSProfile(history=qos_profile_sensor_data.history, depth=qos_profile_sensor_data.depth,
                             reliability=qos_profile_sensor_data.reliability,
                             durability=qos_profile_sensor_data.durability)
    else:
        q = offered[0]
        rel = ReliabilityPolicy.BEST_EFFORT if q.reliability == QosReliability.BEST_EFFORT else \
            ReliabilityPolicy.RELIABLE
        dur = DurabilityPolicy.TRANSIENT_LOCAL if q.durability == QosDurability.TRANSIENT_LOCAL else \
            DurabilityPolicy.VOLATILE
        hist = HistoryPolicy.KEEP_ALL if q.history == QosHistory.KEEP_ALL else HistoryPolicy.KEEP_LAST
        profile = QoSProfile(history=hist, depth=max(1, int(q.depth) or 10), reliability=rel, durability=dur)
    if reliable is not None:
        profile.reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
    if depth is not None:
        profile.depth = depth
    return profile


class Player:
    """Publishes a bag on an rclpy node. Create inside an initialised rclpy context; :meth:`run` blocks.

    ``on_publish(topic, bag_ts_ns, wall_time)`` is called after every message (used by live evaluation to know
    when each stamp left). ``stop()`` from another thread ends the replay after the current message.
    ``prefetch`` reads ahead in a thread. Off by default: measured side by side (bench/bench_bags.py, 1024² x4 at
    10 Hz) it did not help on an idle 2-core machine (p95 gap error 3.5 vs 1.7 ms without) and was worse on
    saturated cores (GIL contention with the publishing loop: 45-81 vs 14-30 ms).
    """

    def __init__(self, bag: str | Path, *, rate: float = 1.0, loop: bool = False, clock: bool = False,
                 clock_hz: float = 40.0, topics: Sequence[str] | None = None, reliable: bool | None = None,
                 node: Any = None, context: Any = None, warn: Callable[[str], None] | None = None,
                 on_publish: Callable[[str, int, float], None] | None = None, prefetch: bool = False) -> None:
        if rate <= 0:
            raise ReplayError(f"--rate must be > 0, got {rate}")
        self.bag = Path(bag)
        if not (self.bag / "metadata.yaml").exists():
            raise ReplayError(f"{self.bag}: not a rosbag2 directory (no metadata.yaml)")
        self.rate, self.loop, self.clock, self.clock_hz = rate, loop, clock, clock_hz
        self.on_publish = on_publish
        self.prefetch = prefetch
        self.warn = warn or (lambda m: print(f"warning: {m}", file=sys.stderr))
        self._stop = threading.Event()
        self.stats = ReplayStats()
        from rclpy.node import Node
        self._own_node = node is None
        self.node = node or Node("equiseg_bag_player", context=context)
        self.reader = AnyReader([self.bag])
        self.reader.open()
        self.publishers: dict[str, Any] = {}
        self.connections: list[Connection] = []
        wanted = set(topics) if topics else None
        for conn in self.reader.connections:
            if wanted is not None and conn.topic not in wanted:
                continue
            if conn.topic in self.publishers:
                self.connections.append(conn)
                continue
            try:
                cls = message_class(conn.msgtype)
            except (ImportError, AttributeError, ValueError) as exc:
                self.stats.skipped_topics[conn.topic] = f"message type {conn.msgtype} not available here ({exc})"
                self.warn(f"{conn.topic}: skipped, {self.stats.skipped_topics[conn.topic]}")
                continue
            self.publishers[conn.topic] = self.node.create_publisher(cls, conn.topic, qos_of(conn, reliable))
            self.connections.append(conn)
        if wanted:
            missing = sorted(wanted - {c.topic for c in self.reader.connections})
            if missing:
                self.warn(f"--topics: not in the bag: {missing}")
        if not self.connections:
            self.close()
            raise ReplayError(f"{self.bag}: no topic left to replay (topics in bag: "
                              f"{sorted({c.topic for c in self.reader.connections})})")
        self.clock_pub = None
        if clock:
            from rclpy.qos import QoSProfile, ReliabilityPolicy
            from rosgraph_msgs.msg import Clock
            self._clock_cls = Clock
            self.clock_pub = self.node.create_publisher(Clock, CLOCK_TOPIC,
                                                        QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))

    # ---- control -------------------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def wait_for_subscribers(self, timeout: float, topics: Sequence[str] | None = None) -> bool:
        """Block until every (or each listed) publisher has a matched subscription, or ``timeout`` seconds."""
        pubs = [self.publishers[t] for t in (topics or self.publishers) if t in self.publishers]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if all(p.get_subscription_count() > 0 for p in pubs):
                return True
            time.sleep(0.02)
        return all(p.get_subscription_count() > 0 for p in pubs)

    # ---- the loop ------------------------------------------------------------------------------------------
    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_pub is None:
            return
        msg = self._clock_cls()
        msg.clock.sec, msg.clock.nanosec = divmod(int(bag_ns), 1_000_000_000)
        self.clock_pub.publish(msg)
        self.stats.clock_msgs += 1

    def _sleep_until(self, wall: float, bag_at: Callable[[float], int]) -> None:
        """Sleep to ``wall`` (perf_counter), publishing /clock meanwhile; spin the last 2 ms for accuracy."""
        period = 1.0 / self.clock_hz if self.clock_pub is not None and self.clock_hz > 0 else None
        while not self._stop.is_set():
            left = wall - time.perf_counter()
            if left <= 0:
                return
            if period is not None:
                step = min(left, period)
                if step > 0.002:
                    time.sleep(step - 0.001)
                    self._publish_clock(bag_at(time.perf_counter()))
                    continue
            elif left > 0.002:
                time.sleep(left - 0.0015)
                continue
            while time.perf_counter() < wall:
                pass
            return

    def _prefetched(self, depth: int = 16) -> Iterator[tuple[Connection, int, bytes]]:
        """The bag's messages read ahead by a thread, so reading overlaps the waits between messages."""
        q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        done = object()

        def reader() -> None:
            try:
                for conn, ts, raw in self.reader.messages(connections=self.connections):
                    if self._stop.is_set():
                        break
                    q.put((conn, ts, raw if isinstance(raw, bytes) else bytes(raw)))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                q.put(exc)
            q.put(done)

        th = threading.Thread(target=reader, name="bag-reader", daemon=True)
        th.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._stop_reader(q, th)

    def _stop_reader(self, q: "queue.Queue[Any]", th: threading.Thread) -> None:
        if th.is_alive():
            stop = self._stop.is_set()
            self._stop.set()
            while th.is_alive():  # unblock a reader waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    th.join(timeout=0.01)
            if not stop:
                self._stop.clear()

    def run(self) -> ReplayStats:
        t_run = time.perf_counter()
        while not self._stop.is_set():
            t0_bag: int | None = None
            t0_wall = 0.0
            prev: dict[str, tuple[int, float]] = {}
            source = self._prefetched() if self.prefetch else (
                (c, t, r if isinstance(r, bytes) else bytes(r))
                for c, t, r in self.reader.messages(connections=self.connections))
            for conn, ts, raw in source:
                if self._stop.is_set():
                    break
                if t0_bag is None:
                    t0_bag, t0_wall = ts, time.perf_counter()
                target = t0_wall + (ts - t0_bag) / 1e9 / self.rate
                base_bag = t0_bag

                def bag_at(now: float, _b: int = base_bag, _w: float = t0_wall) -> int:
                    return _b + int((now - _w) * self.rate * 1e9)

                self._sleep_until(target, bag_at)
                self._publish_clock(ts)
                self.publishers[conn.topic].publish(raw)
                now = time.perf_counter()
                self.stats.published[conn.topic] = self.stats.published.get(conn.topic, 0) + 1
                self.stats.lateness_s.append(now - target)
                last = prev.get(conn.topic)
                if last is not None:
                    self.stats.gaps.append(((ts - last[0]) / 1e9 / self.rate, now - last[1]))
                prev[conn.topic] = (ts, now)
                if self.on_publish is not None:
                    self.on_publish(conn.topic, ts, time.time())
            self.stats.loops += 1
            if not self.loop:
                break
        self.stats.wall_s = time.perf_counter() - t_run
        return self.stats

    def flush(self, timeout: float = 2.0) -> None:
        """Wait until reliable subscribers acknowledged everything (a process exiting right after its last publish
        would otherwise drop messages still in flight), then a moment for best-effort sends."""
        from rclpy.duration import Duration
        deadline = time.monotonic() + timeout
        for pub in self.publishers.values():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))
            except Exception:  # noqa: BLE001 - best effort publishers / older rmw: nothing to wait for
                pass
        time.sleep(0.1)

    def close(self) -> None:
        try:
            self.reader.close()
        except Exception:  # noqa: BLE001 - closing twice is harmless
            pass
        if self._own_node:
            self.node.destroy_node()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m equiseg_ros.bag.replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", help="rosbag2 directory (sqlite3 or mcap)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0 = recorded timing)")
    p.add_argument("--loop", action="store_true", help="start again at the end, until interrupted")
    p.add_argument("--clock", action="store_true", help="publish the bag time on /clock (for use_sim_time:=true)")
    p.add_argument("--clock-hz", type=float, default=40.0, help="/clock rate while waiting between messages")
    p.add_argument("--topics", nargs="+", default=None, help="replay only these topics (default: all)")
    p.add_argument("--delay", type=float, default=0.5, help="seconds to wait after creating the publishers, so "
                   "that subscribers are discovered before the first message (default 0.5)")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SEC",
                   help="before starting, wait up to SEC seconds until every topic has a subscriber")
    p.add_argument("--reliable", action="store_true",
                   help="publish every topic RELIABLE (overrides the recorded QoS; subscribers asking for reliable "
                   "delivery do not match best-effort publishers)")
    p.add_argument("--prefetch", action="store_true",
                   help="read the bag ahead in a second thread (default: read in the publishing thread)")
    p.add_argument("--quiet", action="store_true", help="no summary line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    player = None
    try:
        player = Player(args.bag, rate=args.rate, loop=args.loop, clock=args.clock, clock_hz=args.clock_hz,
                        topics=args.topics, reliable=True if args.reliable else None, prefetch=args.prefetch)
        if args.wait_for_subscribers > 0 and not player.wait_for_subscribers(args.wait_for_subscribers):
            player.warn("not every topic has a subscriber; starting anyway")
        time.sleep(max(0.0, args.delay))
        stats = player.run()
        player.flush()
    except ReplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        stats = player.stats if player else ReplayStats()
    finally:
        if player is not None:
            player.close()
        rclpy.try_shutdown()
    if not args.quiet:
        late = sorted(abs(x) for x in stats.lateness_s)
        p95 = late[int(0.95 * (len(late) - 1))] * 1e3 if late else 0.0
        print(f"replayed {stats.total} messages on {len(stats.published)} topics in {stats.wall_s:.2f} s "
              f"({stats.loops} loop(s), p95 lateness {p95:.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
