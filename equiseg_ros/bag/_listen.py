"""A subscriber for a bag's topics in its own process: records (topic, header stamp, arrival time) per message.

Used by the replay test (delivery and order across processes) and the bag benchmark (timing). Subscribes with the
QoS each topic was recorded with, so best-effort topics are matched as a real node would match them.
Writes one JSON line per message to ``--out`` when done (``--count`` messages received or ``--timeout`` seconds).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from rosbags.highlevel import AnyReader

from equiseg_ros.bag.replay import message_class, qos_of
from equiseg_ros.ros import codecs


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m equiseg_ros.bag._listen", description=__doc__)
    p.add_argument("bag", help="bag whose topics (types and QoS) to subscribe to")
    p.add_argument("--out", required=True, help="JSON lines output")
    p.add_argument("--count", type=int, default=0, help="stop after this many messages (0: only --timeout)")
    p.add_argument("--timeout", type=float, default=30.0, help="stop after this many seconds")
    p.add_argument("--topics", nargs="+", default=None, help="only these topics")
    p.add_argument("--ready", default=None, help="file touched once the subscriptions exist")
    args = p.parse_args(argv)

    import rclpy
    from rclpy.signals import SignalHandlerOptions
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("equiseg_bag_listener")
    rows: list[dict] = []
    with AnyReader([Path(args.bag)]) as reader:
        conns = [c for c in reader.connections if not args.topics or c.topic in args.topics]
    subs = []
    for conn in {c.topic: c for c in conns}.values():
        try:
            cls = message_class(conn.msgtype)
        except (ImportError, AttributeError):
            continue

        def cb(msg: object, topic: str = conn.topic) -> None:
            now = time.time()
            hdr = getattr(msg, "header", None)
            stamp = codecs.stamp_to_ns(hdr) if hdr is not None else None
            rows.append({"topic": topic, "stamp": stamp, "t": now, "seq": len(rows),
                         "data": getattr(msg, "data", None) if isinstance(getattr(msg, "data", None), str) else None})

        subs.append(node.create_subscription(cls, conn.topic, cb, qos_of(conn)))
    if args.ready:
        Path(args.ready).touch()
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline and (args.count <= 0 or len(rows) < args.count):
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
