"""Bag benchmark: conversion and replay throughput at 1024x1024 with four modalities, and replay timing accuracy.

    .venv/bin/python bench/bench_bags.py [--frames 20] [--size 1024] [--out /tmp/bench_bags]

Measured side by side in one run, printed as ONE JSON line:
- conversion: frames/s and MB/s writing rgb8 x4 + mono8 ground truth + CameraInfo + frame info per frame, for
  mcap and sqlite3 (frames are generated in memory first so the figure is the converter's, not the PNG decoder's);
- replay throughput: the player publishing as fast as it can (``rate`` 1000) with a subscriber in another process
  (Fast DDS SHM profile of config/fastdds_shm.xml), frames/s published and frames/s delivered;
- replay timing: the same bag at its recorded 10 Hz, |actual - recorded| inter-message gap per topic (p50/p95/max
  ms) and p95 lateness of each message against its schedule, without (the default) and with the read-ahead thread,
  side by side (alternated twice, the second pair reported: the first timed run is a warm-up outlier). The
  machine is shared: figures may be under load (``uptime`` before running).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from equiseg_ros.bag import convert  # noqa: E402
from equiseg_ros.bag._sources import SourceFrame  # noqa: E402
from equiseg_ros.bag._writer import Target  # noqa: E402
from equiseg_ros.spec import synthetic_spec  # noqa: E402


def frames(n: int, size: int) -> list[SourceFrame]:
    rng = np.random.default_rng(0)
    spec = synthetic_spec()
    base = {m: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for m in spec.modality_names}
    label = rng.integers(0, 25, (size, size), dtype=np.uint8)
    # rolled copies: every frame differs, generation stays out of the timed loop
    return [SourceFrame(i, f"f{i}", {m: np.roll(a, i, axis=1) for m, a in base.items()}, np.roll(label, i, 1),
                        condition="sun") for i in range(n)]


def bench_convert(tmp: Path, n: int, size: int) -> tuple[dict, Path]:
    data = frames(n, size)
    spec = synthetic_spec()
    out = {}
    bag_mcap = tmp / "bag_mcap"
    for storage in ("mcap", "sqlite3"):
        path = tmp / f"bag_{storage}"
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        convert.write_bag(iter(data), spec, path, target=Target("kilted", storage), progress=False)
        dt = time.perf_counter() - t0
        mb = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        out[storage] = {"frames_per_s": n / dt, "mb_per_s": mb / dt, "bag_mb": mb, "seconds": dt}
    return out, bag_mcap


def replay_run(bag: Path, rate: float, env: dict, count: int, prefetch: bool = False) -> dict:
    """Replay in this process with a listener process subscribed; returns publish and delivery figures."""
    import rclpy
    from rclpy.context import Context

    from equiseg_ros.bag.replay import Player
    rows = bag.parent / f"rows_{rate}_{prefetch}.jsonl"
    ready = rows.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    listener = subprocess.Popen([sys.executable, "-m", "equiseg_ros.bag._listen", str(bag), "--out", str(rows),
                                 "--count", str(count), "--timeout", "120", "--ready", str(ready),
                                 "--topics", "/rgb/image", "/depth/image", "/event/image", "/lidar/image"],
                                cwd=ROOT, env=env)
    while not ready.exists():
        time.sleep(0.05)
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        player = Player(bag, rate=rate, context=ctx,
                        topics=["/rgb/image", "/depth/image", "/event/image", "/lidar/image"], prefetch=prefetch)
        player.wait_for_subscribers(20.0)
        time.sleep(0.5)
        stats = player.run()
        player.close()
    finally:
        rclpy.try_shutdown(context=ctx)
    listener.wait(timeout=120)
    got = [json.loads(line) for line in rows.read_text().splitlines()]
    frames_pub = stats.total / 4
    gaps = np.asarray([abs(a - r) for r, a in stats.gaps]) * 1e3
    late = np.abs(np.asarray(stats.lateness_s)) * 1e3
    span = (got[-1]["t"] - got[0]["t"]) if len(got) > 1 else float("nan")
    return {"frames_published_per_s": frames_pub / stats.wall_s, "published": stats.total, "delivered": len(got),
            "frames_delivered_per_s": (len(got) / 4) / span if span == span and span > 0 else None,
            "gap_dev_ms_p50": float(np.percentile(gaps, 50)) if gaps.size else None,
            "gap_dev_ms_p95": float(np.percentile(gaps, 95)) if gaps.size else None,
            "gap_dev_ms_max": float(gaps.max()) if gaps.size else None,
            "lateness_ms_p95": float(np.percentile(late, 95)) if late.size else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20, help="frames per bag (default 20)")
    ap.add_argument("--size", type=int, default=1024, help="image side (default 1024)")
    ap.add_argument("--out", default=None, help="scratch directory (default: a temporary one, removed)")
    ap.add_argument("--domain", type=int, default=88, help="ROS_DOMAIN_ID (default 88)")
    args = ap.parse_args()
    tmp = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_bags_"))
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ROS_DOMAIN_ID=str(args.domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               FASTDDS_DEFAULT_PROFILES_FILE=str(ROOT / "config" / "fastdds_shm.xml"))
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                           "FASTDDS_DEFAULT_PROFILES_FILE")})
    try:
        conv, bag = bench_convert(tmp, args.frames, args.size)
        fast = replay_run(bag, 1000.0, env, args.frames * 4)
        # alternate the two variants twice; the first timed run after the fast one was an outlier in both orders
        runs = [replay_run(bag, 1.0, env, args.frames * 4, prefetch=pf) for pf in (True, False, True, False)]
        timed_pf, timed = runs[2], runs[3]
    finally:
        if not args.out:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "bench": "bags", "size": args.size, "modalities": 4, "frames": args.frames,
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "convert_mcap_fps": round(conv["mcap"]["frames_per_s"], 2),
        "convert_sqlite3_fps": round(conv["sqlite3"]["frames_per_s"], 2),
        "convert_mcap_mb_s": round(conv["mcap"]["mb_per_s"], 1),
        "convert_sqlite3_mb_s": round(conv["sqlite3"]["mb_per_s"], 1),
        "convert_sqlite3_over_mcap": round(conv["sqlite3"]["frames_per_s"] / conv["mcap"]["frames_per_s"], 2),
        "bag_mb": round(conv["mcap"]["bag_mb"], 1),
        "replay_max_published_fps": round(fast["frames_published_per_s"], 2),
        "replay_max_delivered_fps": fast["frames_delivered_per_s"] and round(fast["frames_delivered_per_s"], 2),
        "replay_max_delivered_fraction": round(fast["delivered"] / max(1, fast["published"]), 3),
        "replay_10hz_gap_dev_ms_p50": timed["gap_dev_ms_p50"] and round(timed["gap_dev_ms_p50"], 3),
        "replay_10hz_gap_dev_ms_p95": timed["gap_dev_ms_p95"] and round(timed["gap_dev_ms_p95"], 3),
        "replay_10hz_gap_dev_ms_max": timed["gap_dev_ms_max"] and round(timed["gap_dev_ms_max"], 3),
        "replay_10hz_lateness_ms_p95": timed["lateness_ms_p95"] and round(timed["lateness_ms_p95"], 3),
        "replay_10hz_delivered_fraction": round(timed["delivered"] / max(1, timed["published"]), 3),
        "replay_max_over_realtime": round(fast["frames_published_per_s"] / 10.0, 2),
        "replay_10hz_prefetch_gap_dev_ms_p95": timed_pf["gap_dev_ms_p95"] and round(timed_pf["gap_dev_ms_p95"], 3),
        "replay_10hz_prefetch_lateness_ms_p95": timed_pf["lateness_ms_p95"] and round(timed_pf["lateness_ms_p95"], 3),
        "replay_10hz_gap_dev_prefetch_over_default": (timed["gap_dev_ms_p95"] and timed_pf["gap_dev_ms_p95"] and round(
            timed_pf["gap_dev_ms_p95"] / timed["gap_dev_ms_p95"], 2)),
        "replay_10hz_warmup_run_gap_dev_ms_p95": runs[0]["gap_dev_ms_p95"] and round(runs[0]["gap_dev_ms_p95"], 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
