"""Idle cost of the perception node: CPU time of the node process while no sensor publishes.

    python bench/bench_node_idle.py [--seconds 20] [--managed] [--domain 46]

A vehicle runs dozens of nodes, so a node waiting for sensors must cost ~nothing (DESIGN.md: no busy polling). The
benchmark starts the node (a tiny exported model, the shipped params file, its own ROS_DOMAIN_ID, localhost-only
discovery), waits until it is up (label_info published / lifecycle state reached), lets it settle, then reads the
process's user+system CPU time from /proc/<pid>/stat at the start and the end of a ``--seconds`` window in which
nothing publishes to it. Side by side in the same run, the same is measured for a bare rclpy node that only spins
(the floor any rclpy process pays: executor, DDS discovery threads), so the ratio says what the node adds.
With ``--managed`` the lifecycle variant is measured too, in state inactive (configured, model loaded) and active.

Prints ONE JSON line: ``node_cpu_pct`` (percent of one core), ``floor_cpu_pct``, ``goal_pct`` (1.0), ``ok``.
Numbers were taken on a shared 2-core machine; the load average at start and end is in the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))
import ros_helpers as rh  # noqa: E402

GOAL_PCT = 1.0
FLOOR_NODE = """
import rclpy, signal, sys
rclpy.init()
node = rclpy.create_node("idle_floor")
print("ready", flush=True)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
    pass
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the idle window measured per process")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds waited after start-up before measuring "
                    "(discovery traffic and warm-up end)")
    ap.add_argument("--managed", action="store_true", help="also measure the lifecycle node (inactive and active)")
    ap.add_argument("--domain", type=int, default=46, help="ROS_DOMAIN_ID of the benchmark processes")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench_node", help="where the tiny model is kept")
    return ap.parse_args(argv)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) in seconds, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(proc: subprocess.Popen, seconds: float) -> float:
    """Percent of one core used by ``proc`` over ``seconds`` of wall time."""
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(seconds)
    if proc.poll() is not None:
        raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} during the measurement")
    return 100.0 * (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)


def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {text!r}:\n{path.read_text()}")
        time.sleep(0.1)
    raise RuntimeError(f"no {text!r} within {timeout} s:\n{path.read_text()}")


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    return proc.returncode


def run_process(cmd: list[str], env: dict[str, str], ready: str, log: Path, seconds: float, settle: float,
                before_measure=None) -> tuple[float, int]:
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            wait_for(log, ready, proc)
            if before_measure is not None:
                before_measure()
            time.sleep(settle)
            pct = measure(proc, seconds)
        finally:
            code = stop(proc)
    return pct, code


def lifecycle_call(env: dict[str, str], node: str, *transitions: str) -> None:
    """Drive the managed node through ``transitions`` from a separate process (the lifecycle services)."""
    out = subprocess.run([sys.executable, str(ROOT / "test" / "ros_helpers.py"), "lifecycle", node, *transitions],
                         env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"lifecycle {transitions} failed:\n{out.stdout}\n{out.stderr}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    model = args.cache / "tiny_64.onnx"
    if not model.exists():
        rh.export_tiny(model, 64)
    env = rh.ros_env(args.domain)
    result: dict[str, object] = {"bench": "node_idle", "seconds": args.seconds, "goal_pct": GOAL_PCT,
                                 "load_avg_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        floor, _ = run_process([sys.executable, "-c", FLOOR_NODE], env, "ready", tmpd / "floor.log", args.seconds,
                               args.settle)
        node, code = run_process(rh.node_command(model, "backend.threads:=1"), env, "subscribed to",
                                 tmpd / "node.log", args.seconds, args.settle)
        result.update(node_cpu_pct=round(node, 3), floor_cpu_pct=round(floor, 3),
                      node_minus_floor_pct=round(node - floor, 3), node_exit_code=code)
        if args.managed:
            cmd = rh.node_command(model, "backend.threads:=1", managed=True)
            inactive, _ = run_process(cmd, env, "waiting for configure", tmpd / "managed.log", args.seconds,
                                      args.settle, lambda: lifecycle_call(env, rh.NODE, "configure"))
            active, code2 = run_process(cmd, env, "waiting for configure", tmpd / "managed2.log", args.seconds,
                                        args.settle, lambda: lifecycle_call(env, rh.NODE, "configure", "activate"))
            result.update(managed_inactive_cpu_pct=round(inactive, 3), managed_active_cpu_pct=round(active, 3),
                          managed_exit_code=code2)
    result["load_avg_end"] = os.getloadavg()[0]
    result["ok"] = bool(result["node_cpu_pct"] < GOAL_PCT)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
