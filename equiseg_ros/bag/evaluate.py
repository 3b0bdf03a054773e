"""Score the node on a bag against its ground-truth topic: offline (no DDS) or live (the real node over DDS).

Offline (default): the node's own pipeline (``equiseg_ros.ros.pipeline``: codecs -> health -> synchroniser ->
sensor front end -> backend, with the node's parameter schema and defaults) runs over the bag in recorded order with
the bag's receive times as the clock (what ``use_sim_time`` gives the node), polling like the node's 10 ms timer.
Every synchronised frame is inferred. Injected failures are scored as they are.

``--live``: starts ``perception_node`` (``use_sim_time:=true``, inputs set from the bag's topic layout), replays
the bag into it over DDS with ``/clock`` and records what the node publishes on ``~/mask``, matched to the ground
truth by header stamp; adds end-to-end latency (mask arrival - the moment the frame's last sensor message left
the player, wall clock) and the fraction of frames answered.

Both print a summary and write a JSON report: mIoU overall and per condition (reference semantics: NaN -> 0, mean
over all classes), per-class IoU, frames answered, absent-modality counts, and the injections recorded in the bag.

Examples::

    python -m equiseg_ros.bag.evaluate bags/synthetic_val --model runs/demo/model.onnx
    python -m equiseg_ros.bag.evaluate bags/synthetic_val --model runs/demo/model.onnx --live --out live.json
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from rosbags.highlevel import AnyReader

from equiseg_ros.bag._writer import read_custom
from equiseg_ros.ros import codecs
from equiseg_ros.ros.overlay import resize_nearest
from equiseg_ros.ros.pipeline import POLL_PERIOD, FramePipeline
from equiseg_ros.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[2]
SHM_PROFILE = ROOT / "config" / "fastdds_shm.xml"
NODE_NAME = "perception_node"


class EvaluateError(RuntimeError):
    """The bag cannot be scored (no layout metadata, no ground truth, model/bag mismatch, node failed)."""


@dataclass
class BagGroundTruth:
    """Ground truth and frame records of a bag, keyed by frame stamp (ns)."""

    labels: dict[int, np.ndarray] = field(default_factory=dict)
    info: dict[int, dict[str, Any]] = field(default_factory=dict)
    period_ns: int = 100_000_000

    def match(self, stamp_ns: int) -> int | None:
        """The ground-truth stamp nearest to ``stamp_ns`` within half a frame period (jittered anchors)."""
        if stamp_ns in self.labels:
            return stamp_ns
        keys = getattr(self, "_keys", None)
        if keys is None or len(keys) != len(self.labels):
            keys = self._keys = np.asarray(sorted(self.labels), np.int64)
        if not len(keys):
            return None
        i = int(np.clip(np.searchsorted(keys, stamp_ns), 1, len(keys) - 1)) if len(keys) > 1 else 0
        best = min((k for k in keys[max(0, i - 1): i + 1]), key=lambda k: abs(int(k) - stamp_ns))
        return int(best) if abs(int(best) - stamp_ns) <= self.period_ns // 2 else None


def bag_layout(bag: str | Path) -> dict[str, Any]:
    custom = read_custom(bag)
    if "topics" not in custom:
        raise EvaluateError(f"{bag}: no equiseg_ros topic layout in its metadata (was it written by "
                            "python -m equiseg_ros.bag.convert?)")
    return custom


def node_params_for_bag(layout: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """Node parameters that point the model's inputs at the bag's topics (type, extrinsic) and CameraInfo."""
    mods = layout["topics"]["modalities"]
    params: dict[str, Any] = {"camera_info_topic": layout["topics"]["camera_info"]}
    missing = [m for m in spec.modality_names if m not in mods]
    if missing:
        print(f"warning: the model's modalities {missing} are not in the bag: they will be absent", file=sys.stderr)
    for m in spec.modality_names:
        form = mods.get(m)
        if form is None:
            continue
        params[f"inputs.{m}.topic"] = form["topic"]
        params[f"inputs.{m}.type"] = form["type"]
        if form.get("extrinsic"):
            params[f"inputs.{m}.extrinsic"] = [float(v) for v in form["extrinsic"]]
    return params


def _check_classes(layout: dict[str, Any], spec: ModelSpec) -> None:
    bag_spec = layout.get("spec") or {}
    classes = bag_spec.get("classes")
    if classes and list(classes) != list(spec.classes):
        raise EvaluateError(f"the bag's ground truth uses {len(classes)} classes of {bag_spec.get('name')!r}, the "
                            f"model predicts {spec.num_classes} classes of {spec.name!r}: they must be the same")


def read_ground_truth(bag: str | Path) -> BagGroundTruth:
    layout = bag_layout(bag)
    gt = BagGroundTruth(period_ns=int(round(1e9 / float(layout["source"].get("rate", 10.0)))))
    t = layout["topics"]
    with AnyReader([Path(bag)]) as reader:
        conns = [c for c in reader.connections if c.topic in (t["ground_truth"], t["frame_info"])]
        for conn, ts, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == t["ground_truth"]:
                gt.labels[ts] = np.array(codecs.image_to_numpy(msg, conn.topic))
            else:
                gt.info[ts] = json.loads(msg.data)
    if not gt.labels:
        raise EvaluateError(f"{bag}: no ground truth on {t['ground_truth']}")
    return gt


# ---- scoring ----------------------------------------------------------------------------------------------------
class Scorer:
    """Confusion matrices overall and per condition, from (stamp, labels) answers matched to the ground truth."""

    def __init__(self, spec: ModelSpec, gt: BagGroundTruth) -> None:
        from equiseg_ros.evaluation.metrics import ConfusionMatrix
        self.spec, self.gt = spec, gt
        self._cm = ConfusionMatrix
        self.overall = ConfusionMatrix(spec.num_classes, spec.ignore_index)
        self.by_condition: dict[str, Any] = {}
        self.answered: set[int] = set()
        self.unmatched = 0
        self.duplicates = 0

    def add(self, stamp_ns: int, labels: np.ndarray) -> int | None:
        import torch
        key = self.gt.match(stamp_ns)
        if key is None:
            self.unmatched += 1
            return None
        if key in self.answered:
            self.duplicates += 1
            return key
        self.answered.add(key)
        label = self.gt.labels[key]
        pred = resize_nearest(np.asarray(labels, np.uint8), label.shape[:2])
        p, g = torch.from_numpy(np.ascontiguousarray(pred)).long(), torch.from_numpy(label).long()
        self.overall.update(p, g)
        cond = str(self.gt.info.get(key, {}).get("condition", "")) or "unknown"
        self.by_condition.setdefault(cond, self._cm(self.spec.num_classes, self.spec.ignore_index)).update(p, g)
        return key

    def report(self) -> dict[str, Any]:
        frames = len(self.gt.labels)
        per_cond_frames: dict[str, int] = {}
        for k in self.gt.labels:
            c = str(self.gt.info.get(k, {}).get("condition", "")) or "unknown"
            per_cond_frames[c] = per_cond_frames.get(c, 0) + 1
        return {
            "miou": self.overall.miou(), "miou_present": self.overall.miou_present(),
            "pixel_accuracy": self.overall.pixel_accuracy(),
            "per_class_iou": dict(zip(self.spec.classes, self.overall.per_class_iou())),
            "frames": frames, "frames_answered": len(self.answered),
            "answered_fraction": len(self.answered) / frames if frames else 0.0,
            "unmatched_answers": self.unmatched, "duplicate_answers": self.duplicates,
            "per_condition": {c: {"miou": cm.miou(), "pixel_accuracy": cm.pixel_accuracy(),
                                  "frames": per_cond_frames.get(c, 0),
                                  "frames_answered": sum(1 for k in self.answered if str(self.gt.info.get(k, {}).get(
                                      "condition", "") or "unknown") == c)}
                              for c, cm in sorted(self.by_condition.items())},
        }


# ---- offline -----------------------------------------------------------------------------------------------------
@dataclass
class OfflineRun:
    results: list[Any]
    pipeline: FramePipeline
    messages: int


def run_offline(bag: str | Path, backend: Any, params: dict[str, Any] | None = None,
                progress: bool = False) -> OfflineRun:
    """The node's pipeline over the bag in recorded order; returns every inferred frame (pipeline.FrameResult)."""
    layout = bag_layout(bag)
    all_params = node_params_for_bag(layout, backend.spec)
    all_params.update(params or {})
    pipe = FramePipeline(backend, all_params)
    topic_of = {pipe.topics[m]: m for m in pipe.modalities}
    cam_topic = pipe.values["camera_info_topic"]
    results = []
    last_poll: float | None = None
    n = 0

    def poll(now: float) -> None:
        frame = pipe.poll(now)
        if frame is not None:
            results.append(pipe.infer(frame))

    with AnyReader([Path(bag)]) as reader:
        conns = [c for c in reader.connections if c.topic in topic_of or c.topic == cam_topic]
        it: Iterable[Any] = reader.messages(connections=conns)
        if progress:
            from tqdm import tqdm
            it = tqdm(it, total=sum(c.msgcount for c in conns), desc="offline", unit="msg", file=sys.stderr)
        for conn, ts, raw in it:
            now = ts / 1e9
            while last_poll is not None and last_poll + POLL_PERIOD <= now:  # the node's poll timer
                last_poll += POLL_PERIOD
                poll(last_poll)
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == cam_topic:
                pipe.on_camera_info(msg)
            else:
                pipe.on_sensor(topic_of[conn.topic], msg, now)
                poll(now)
            last_poll = now if last_poll is None else max(last_poll, now)
            n += 1
    if last_poll is not None:  # let the last frame's wait expire
        for _ in range(int(pipe.values["sync.max_age"] / POLL_PERIOD) + 2):
            last_poll += POLL_PERIOD
            poll(last_poll)
    return OfflineRun(results, pipe, n)


def evaluate_offline(bag: str | Path, backend: Any, params: dict[str, Any] | None = None,
                     progress: bool = False) -> dict[str, Any]:
    layout = bag_layout(bag)
    _check_classes(layout, backend.spec)
    gt = read_ground_truth(bag)
    run = run_offline(bag, backend, params, progress)
    scorer = Scorer(backend.spec, gt)
    absent: dict[str, dict[str, int]] = {}
    for r in run.results:
        scorer.add(r.stamp_ns, r.labels)
        for m, why in r.absent.items():
            absent.setdefault(m, {}).setdefault(why, 0)
            absent[m][why] += 1
    rep = scorer.report()
    rep.update(mode="offline", bag=str(bag), model=str(backend.path), backend=backend.name,
               frames_inferred=len(run.results), absent=absent, malformed=run.pipeline.malformed,
               unhealthy=run.pipeline.unhealthy, injections=layout.get("injections", {}).get("items", []),
               anchors={a: sum(1 for r in run.results if r.anchor == a) for a in run.pipeline.modalities})
    return rep


# ---- live -----------------------------------------------------------------------------------------------------
def node_command(model: str | Path, params: dict[str, Any], extra: Sequence[str] = ()) -> list[str]:
    """``python -m equiseg_ros.ros.node --ros-args -p model_path:=... -p use_sim_time:=true -p ...``."""
    cmd = [sys.executable, "-m", "equiseg_ros.ros.node", "--ros-args", "-p", f"model_path:={model}",
           "-p", "use_sim_time:=true"]
    for k, v in params.items():
        val = "[" + ",".join(repr(float(x)) for x in v) + "]" if isinstance(v, list) else str(v)
        cmd += ["-p", f"{k}:={val}"]
    for o in extra:
        cmd += ["-p", o]
    return cmd


def ros_environment(shm: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    if shm and SHM_PROFILE.exists() and "FASTDDS_DEFAULT_PROFILES_FILE" not in env:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(SHM_PROFILE)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # the node and the replayer both run on this machine: keep discovery off the network unless the user says otherwise
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return env


def evaluate_live(bag: str | Path, model: str | Path, *, rate: float = 1.0, node_args: Sequence[str] = (),
                  log_path: str | Path | None = None, startup_timeout: float = 60.0, settle: float = 2.0,
                  on_mask: Any = None, spec: ModelSpec | None = None) -> dict[str, Any]:
    """Start the node, replay the bag into it over DDS (with /clock), score what it publishes on ~/mask.

    ``on_mask(stamp_ns, labels)`` (optional) sees every mask (the demo's contact sheet uses it).
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from equiseg_ros.bag.replay import Player

    if spec is None:
        from equiseg_ros.inference.backend import read_onnx_spec
        spec = read_onnx_spec(model) if str(model).endswith(".onnx") else None
    if spec is None:
        from equiseg_ros.inference.backend import load_backend
        spec = load_backend(model).spec
    layout = bag_layout(bag)
    _check_classes(layout, spec)
    gt = read_ground_truth(bag)
    params = node_params_for_bag(layout, spec)
    env = ros_environment()
    # this process's participant uses the node's transport profile and discovery range
    shared_vars = ("FASTDDS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE")
    saved_env = {k: os.environ.get(k) for k in shared_vars}
    os.environ.update({k: env[k] for k in shared_vars if env.get(k)})
    log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    node = subprocess.Popen(node_command(model, params, node_args), env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT)
    ctx = Context()
    rclpy.init(context=ctx)
    masks: list[tuple[int, float, np.ndarray]] = []
    published: dict[int, float] = {}
    sensor_topics = {params[f"inputs.{m}.topic"] for m in spec.modality_names if f"inputs.{m}.topic" in params}
    lock = threading.Lock()

    def on_mask_msg(msg: Any) -> None:
        t = time.time()
        stamp = codecs.stamp_to_ns(msg.header)
        with lock:
            masks.append((stamp, t, np.array(codecs.image_to_numpy(msg, "mask"))))

    def on_publish(topic: str, ts: int, wall: float) -> None:
        if topic in sensor_topics:
            published[ts] = wall

    executor = SingleThreadedExecutor(context=ctx)
    player = None
    try:
        sub_node = rclpy.create_node("equiseg_bag_evaluate", context=ctx)
        mask_topic = f"/{NODE_NAME}/mask"
        sub_node.create_subscription(Image, mask_topic, on_mask_msg,
                                     QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        executor.add_node(sub_node)
        player = Player(bag, rate=rate, clock=True, context=ctx, on_publish=on_publish,
                        topics=sorted(sensor_topics | {params["camera_info_topic"]}))
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:  # the node loads its model before it subscribes
            if node.poll() is not None:
                raise EvaluateError(f"perception_node exited with code {node.returncode} before it was ready"
                                    + (f" (log: {log_path})" if log_path else ""))
            if sub_node.count_publishers(mask_topic) > 0 and player.wait_for_subscribers(0.05):
                break
            executor.spin_once(timeout_sec=0.05)
        else:
            raise EvaluateError(f"perception_node did not come up within {startup_timeout:.0f} s")
        for _ in range(20):
            executor.spin_once(timeout_sec=0.01)
        th = threading.Thread(target=player.run, daemon=True)
        t_start = time.time()
        th.start()
        while th.is_alive():
            executor.spin_once(timeout_sec=0.02)
        end = time.monotonic() + settle
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.02)
        wall = time.time() - t_start
    finally:
        if player is not None:
            player.stop()
            player.close()
        executor.shutdown()
        rclpy.try_shutdown(context=ctx)
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        if log is not subprocess.DEVNULL:
            log.close()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    scorer = Scorer(spec, gt)
    latencies = []
    for stamp, t, labels in masks:
        scorer.add(stamp, labels)
        if stamp in published:
            latencies.append(t - published[stamp])
        if on_mask is not None:
            on_mask(stamp, labels)
    rep = scorer.report()
    lat = np.asarray(latencies) * 1e3
    rep.update(mode="live", bag=str(bag), model=str(model), masks_received=len(masks), replay_wall_s=wall,
               rate=rate, latency_ms={"p50": float(np.percentile(lat, 50)) if lat.size else None,
                                      "p95": float(np.percentile(lat, 95)) if lat.size else None,
                                      "max": float(lat.max()) if lat.size else None, "n": int(lat.size)},
               injections=layout.get("injections", {}).get("items", []), node_log=str(log_path) if log_path else None)
    return rep


# ---- CLI -------------------------------------------------------------------------------------------------------
def summary_lines(rep: dict[str, Any]) -> list[str]:
    lines = [f"{rep['mode']}: mIoU {rep['miou']:.2f} % over {rep['frames_answered']}/{rep['frames']} frames "
             f"answered ({100 * rep['answered_fraction']:.0f} %), pixel accuracy {rep['pixel_accuracy']:.1f} %"]
    for c, r in rep["per_condition"].items():
        lines.append(f"  {c:<12} mIoU {r['miou']:6.2f} %  ({r['frames_answered']}/{r['frames']} frames)")
    if rep.get("latency_ms", {}).get("n"):
        lat = rep["latency_ms"]
        lines.append(f"  end-to-end latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms (n={lat['n']})")
    if rep.get("absent"):
        lines.append("  absent modality-frames: " + ", ".join(f"{m} {d}" for m, d in rep["absent"].items()))
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m equiseg_ros.bag.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", help="bag written by python -m equiseg_ros.bag.convert (has ground truth and layout)")
    p.add_argument("--model", required=True, help="exported model (.onnx, .engine, .pt) as the node loads it")
    p.add_argument("--live", action="store_true", help="replay into a running perception_node over DDS and score "
                   "its published masks (adds latency and the fraction of frames answered)")
    p.add_argument("--rate", type=float, default=1.0, help="--live: replay speed factor (default 1.0)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="node parameter override, e.g. -p sync.slop:=0.03 (offline and live)")
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("--node-log", default=None, help="--live: file for the node's log (default: next to --out)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _parse_param(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition(":=")
    if not sep:
        raise EvaluateError(f"-p {text!r}: expected NAME:=VALUE")
    import yaml
    return name, yaml.safe_load(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = dict(_parse_param(t) for t in args.param)
        if args.live:
            log = args.node_log or (str(Path(args.out).with_suffix(".node.log")) if args.out else None)
            rep = evaluate_live(args.bag, args.model, rate=args.rate, log_path=log,
                                node_args=[f"{k}:={v}" for k, v in overrides.items()])
        else:
            from equiseg_ros.inference.backend import load_backend
            backend = load_backend(args.model)
            rep = evaluate_offline(args.bag, backend, overrides, progress=not args.quiet)
    except EvaluateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rep, indent=1))
    print("\n".join(summary_lines(rep)))
    if args.out:
        print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
