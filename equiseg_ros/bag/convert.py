"""Dataset -> rosbag2: DeLiVER, MUSES or the synthetic data as a bag the node can be replayed on.

Per frame (stamp = start + index / rate): one message per modality with the same header stamp, ``/camera_info``, the
ground truth as a mono8 Image on ``/ground_truth/semantic`` and a JSON record (frame name, condition, corner case,
what was injected) on ``/dataset/frame_info``. Sensor topics carry the sensor-data QoS (best effort, depth 5),
ground truth and frame info are reliable. Failure injection (``--drop --blackout --freeze --noise --jitter
--corrupt``) happens here so every failure case is a reproducible file; what was injected, with counts, is stored in
the bag's custom metadata (``equiseg_ros.injections``), next to the topic layout and the model spec of the dataset.

Examples::

    python -m equiseg_ros.bag.convert --dataset deliver --root data/DELIVER --split val --conditions night,fog \\
        --out bags/deliver_val_night_fog
    python -m equiseg_ros.bag.convert --dataset synthetic --root data/synthetic --split val --raw \\
        --blackout lidar:2-4 --drop depth:0.2 --corrupt event:0.05 --out bags/synthetic_failures
    python -m equiseg_ros.bag.convert ... --distro humble          # sqlite3 + the metadata Humble's ros2 bag reads
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from equiseg_ros import __version__
from equiseg_ros.bag import _messages as M
from equiseg_ros.bag._inject import KINDS, Injection, InjectionError, Injector, corrupt_fields, parse
from equiseg_ros.bag._sources import DATASETS, FrameSource, SourceError, SourceFrame, _get
from equiseg_ros.bag._writer import (
    QOS_RELIABLE,
    QOS_SENSOR,
    QOS_STATIC,
    BagSink,
    BagWriteError,
    Target,
    default_storage,
)
from equiseg_ros.spec import ModelSpec

BAG_FORMAT = "equiseg_ros.bag/1"
DEFAULT_START_S = 1_700_000_000  # fixed epoch so that the same arguments write the same bag
CAMERA_FRAME = "camera_optical_frame"
GT_TOPIC = "/ground_truth/semantic"
INFO_TOPIC = "/dataset/frame_info"
CAMERA_INFO_TOPIC = "/camera_info"
TF_STATIC_TOPIC = "/tf_static"
NO_GAUSSIAN = ("event",)  # the NM benchmark adds no Gaussian noise to events


@dataclass
class TopicForm:
    """How one modality is written: topic, message kind (image | pointcloud2), encoding, frame and representation."""

    modality: str
    topic: str
    kind: str = "image"
    encoding: str = "rgb8"
    frame_id: str = CAMERA_FRAME
    representation: str = ""
    raw: bool = False
    extrinsic: list[float] | None = None  # row-major 4x4 camera <- sensor (point clouds in their own frame)

    def as_dict(self) -> dict[str, Any]:
        d = {"topic": self.topic, "type": self.kind, "encoding": self.encoding, "frame_id": self.frame_id,
             "representation": self.representation, "raw": self.raw}
        if self.extrinsic is not None:
            d["extrinsic"] = self.extrinsic
        return d


def image_topic(modality: str) -> str:
    """Default topic of a modality in image form, matching the node's default ``inputs.<m>.topic``."""
    return f"/{modality}/image"


EVENTS_TOPIC = "/event/events"


def topic_forms(spec: ModelSpec, raw_frame: Any = None) -> dict[str, TopicForm]:
    """The topic layout. Without raw data every modality is its 8-bit representation (rgb8). With a RawFrame the
    raw forms the node converts itself replace them: metric depth as 32FC1 metres, LiDAR as PointCloud2 in its own
    frame (extrinsic on /tf_static and in the metadata), events as PointCloud2 (x, y, t, polarity) on /event/events
    in the camera's pixels."""
    forms = {m.name: TopicForm(m.name, image_topic(m.name), representation=m.representation)
             for m in spec.modalities}
    if raw_frame is None:
        return forms
    for m in spec.modality_names:
        kind, _ = _raw_payload(raw_frame, m)
        if kind == "depth":
            forms[m] = TopicForm(m, image_topic(m), "image", "32FC1", CAMERA_FRAME, "metric_depth", True)
        elif kind == "points":
            forms[m] = TopicForm(m, f"/{m}/points", "pointcloud2", "", f"{m}_link", "points", True)
        elif kind == "events":
            forms[m] = TopicForm(m, EVENTS_TOPIC, "pointcloud2", "", CAMERA_FRAME, "events", True)
    return forms


def _raw_payload(raw: Any, modality: str) -> tuple[str | None, Any]:
    """(kind, data) of the raw form of ``modality`` in a RawFrame: depth (float32 [H, W] metres) or points
    (structured x, y, z, intensity float32) or events (structured x, y, t, polarity float64); (None, None) when it
    has none."""
    if raw is None:
        return None, None
    if modality == "depth":
        d = _get(raw, "depth_m", "depth")
        return ("depth", np.ascontiguousarray(d, np.float32)) if d is not None else (None, None)
    if modality in ("lidar", "radar"):
        p = _get(raw, f"{modality}_points")
        return ("points", _structured(p, ("x", "y", "z", "intensity"), np.float32)) if p is not None else (None, None)
    if modality == "event":
        e = _raw_events(raw)
        return ("events", e) if e is not None else (None, None)
    return None, None


def _raw_events(raw: Any) -> np.ndarray | None:
    e = _get(raw, "events")
    return None if e is None else _structured(e, ("x", "y", "t", "polarity"), np.float64)


def _structured(a: Any, names: Sequence[str], dtype: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.names is not None:
        return arr
    arr = arr.reshape(len(arr), -1)
    cols = names[: arr.shape[1]]
    out = np.zeros(len(arr), np.dtype([(n, dtype) for n in cols]))
    for j, n in enumerate(cols):
        out[n] = arr[:, j]
    return out


def _raw_extrinsic(raw: Any, modality: str) -> np.ndarray | None:
    """4x4 T_camera_from_<modality> of a RawFrame, if it has one."""
    short = {"lidar": "lidar", "radar": "radar"}.get(modality, modality)
    t = _get(raw, f"T_cam_from_{short}", f"T_camera_from_{short}")
    return None if t is None else np.asarray(t, np.float64).reshape(4, 4)


@dataclass
class ConvertResult:
    path: Path
    frames: int
    messages: dict[str, int]
    seconds: float
    injections: list[dict[str, Any]] = field(default_factory=list)


def write_bag(frames: Iterable[SourceFrame], spec: ModelSpec, out: str | Path, *, target: Target = Target(),
              rate: float = 10.0, injections: Sequence[Injection] = (), seed: int = 0, raw: bool = False,
              source_info: dict[str, Any] | None = None, overwrite: bool = False, start_s: float = DEFAULT_START_S,
              total: int | None = None, progress: bool = True) -> ConvertResult:
    """Write ``frames`` as a bag at ``out``; returns counts. The bag is removed again if anything fails."""
    if rate <= 0:
        raise BagWriteError(f"--rate must be > 0, got {rate}")
    t_start = time.perf_counter()
    injector = Injector(list(injections), spec.modality_names, seed=seed)
    period_ns = int(round(1e9 / rate))
    start_ns = int(round(start_s * 1e9))
    forms: dict[str, TopicForm] | None = None
    n = 0
    with BagSink(out, target, overwrite=overwrite) as sink:
        ts = sink.typestore
        iterator: Iterable[SourceFrame] = frames
        if progress:
            from tqdm import tqdm
            iterator = tqdm(frames, total=total, desc=f"bag {Path(out).name}", unit="frame", file=sys.stderr)
        for frame in iterator:
            if forms is None:
                forms = topic_forms(spec, frame.raw if raw else None)
                _add_topics(sink, forms, raw)
                if raw:
                    _write_static_tf(sink, forms, frame.raw, start_ns)
            stamp = start_ns + n * period_ns
            rel = n / rate
            h, w = frame.label.shape[:2]
            k = frame.K or _raw_k(frame.raw, h, w) or M.pinhole_k(h, w)
            sink.write(CAMERA_INFO_TOPIC, stamp, M.camera_info(ts, k, h, w, stamp, CAMERA_FRAME))
            events: dict[str, list[str]] = {}
            for m in spec.modality_names:
                form = forms[m]
                payload = _raw_payload(frame.raw, m)[1] if form.raw else frame.images[m]
                is_image8 = form.kind == "image" and form.encoding == "rgb8"
                res = injector.apply(m, rel, payload, image_std=spec.modality(m).std if is_image8 else None,
                                     gaussian=m not in NO_GAUSSIAN)
                if res.dropped:
                    events.setdefault(m, []).append("dropped")
                    continue
                t_msg = stamp + res.stamp_offset_ns
                if form.kind == "image":
                    msg = M.image(ts, res.data, form.encoding, t_msg, form.frame_id)
                else:
                    msg = M.pointcloud2(ts, res.data, t_msg, form.frame_id)
                if res.corruption:
                    corrupt_fields(msg, res.corruption)
                    events.setdefault(m, []).append(f"corrupt:{res.corruption}")
                if res.data is not payload:
                    events.setdefault(m, []).append("modified")
                sink.write(form.topic, t_msg, msg)
            sink.write(GT_TOPIC, stamp, M.image(ts, np.ascontiguousarray(frame.label), "mono8", stamp, CAMERA_FRAME))
            sink.write(INFO_TOPIC, stamp, M.frame_info(ts, {
                "index": frame.index, "name": frame.name, "stamp_ns": stamp, "condition": frame.condition,
                "corner_case": frame.corner_case, "injected": events}))
            n += 1
        if n == 0:
            raise BagWriteError(f"{out}: no frames to write")
        assert forms is not None
        sink.set_custom("format", BAG_FORMAT)
        sink.set_custom("version", __version__)
        sink.set_custom("distro", target.distro)
        sink.set_custom("spec", spec.to_json())
        sink.set_custom("topics", {
            "modalities": {m: f.as_dict() for m, f in forms.items()}, "camera_info": CAMERA_INFO_TOPIC,
            "ground_truth": GT_TOPIC, "frame_info": INFO_TOPIC, "camera_frame": CAMERA_FRAME})
        sink.set_custom("source", dict(source_info or {}, frames=n, rate=rate, start_ns=start_ns, raw=raw))
        sink.set_custom("injections", {"seed": seed, "items": injector.record()})
        counts = dict(sink.counts)
    return ConvertResult(Path(out), n, counts, time.perf_counter() - t_start, injector.record())


def _raw_k(raw: Any, h: int, w: int) -> list[float] | None:
    cam = _get(raw, "camera") if raw is not None else None
    if cam is None:
        return None
    if (int(cam.height), int(cam.width)) != (h, w):
        cam = cam.scaled(w, h)
    return [float(v) for v in np.asarray(cam.K).reshape(-1)]


def _add_topics(sink: BagSink, forms: dict[str, TopicForm], raw: bool) -> None:
    sink.add_topic(CAMERA_INFO_TOPIC, M.CAMERA_INFO, QOS_SENSOR)
    for f in forms.values():
        sink.add_topic(f.topic, M.IMAGE if f.kind == "image" else M.POINTCLOUD2, QOS_SENSOR)
    sink.add_topic(GT_TOPIC, M.IMAGE, QOS_RELIABLE)
    sink.add_topic(INFO_TOPIC, M.STRING, QOS_RELIABLE)
    if raw and any(f.kind == "pointcloud2" and f.frame_id != CAMERA_FRAME for f in forms.values()):
        sink.add_topic(TF_STATIC_TOPIC, M.TF, QOS_STATIC)


def _write_static_tf(sink: BagSink, forms: dict[str, TopicForm], raw: Any, stamp: int) -> None:
    for m, f in forms.items():
        if f.kind != "pointcloud2" or f.frame_id == CAMERA_FRAME:
            continue
        t = _raw_extrinsic(raw, m)
        if t is None:
            raise BagWriteError(f"--raw: modality {m} has points but the raw frame has no T_cam_from_{m}")
        f.extrinsic = [float(v) for v in t.reshape(-1)]
        sink.write(TF_STATIC_TOPIC, stamp, M.static_transform(sink.typestore, t, CAMERA_FRAME, f.frame_id, stamp))


def parse_injections(args: argparse.Namespace) -> list[Injection]:
    out = []
    for kind in KINDS:
        for text in getattr(args, kind) or []:
            out.append(parse(kind, text))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m equiseg_ros.bag.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=DATASETS, help="dataset layout to read")
    p.add_argument("--root", required=True, help="dataset root directory")
    p.add_argument("--split", default="val", help="split to convert (default: val)")
    p.add_argument("--conditions", default="", help="comma-separated conditions to keep (e.g. night,fog); "
                   "default: all")
    p.add_argument("--corner-cases", default="", help="DeLiVER/synthetic: comma-separated corner cases to keep")
    p.add_argument("--modalities", default="", help="comma-separated modalities (default: all of the dataset's)")
    p.add_argument("--out", required=True, help="output bag directory (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag at --out")
    p.add_argument("--distro", default="kilted", choices=["humble", "jazzy", "kilted"],
                   help="target ROS 2 distro: message definitions and metadata flavour (humble: sqlite3 + "
                   "metadata version 5)")
    p.add_argument("--storage", default=None, choices=["mcap", "sqlite3"],
                   help="storage plugin (default: sqlite3 for humble, mcap otherwise)")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second of the recorded stream (default 10)")
    p.add_argument("--start", type=float, default=DEFAULT_START_S,
                   help="stamp of the first frame, seconds since the epoch (fixed default: reproducible bags)")
    p.add_argument("--limit", type=int, default=None, help="convert at most this many frames")
    p.add_argument("--raw", action="store_true", help="write raw sensor forms where the dataset has them (metric "
                   "depth 32FC1, LiDAR PointCloud2 + /tf_static extrinsic, events as PointCloud2 x,y,t,polarity) so "
                   "the node's vehicle path runs")
    p.add_argument("--seed", type=int, default=0, help="seed of every random failure injection")
    inj = p.add_argument_group("failure injection (repeatable; MOD is a modality name or 'all')")
    inj.add_argument("--drop", action="append", metavar="MOD:P", help="drop a fraction P of the messages")
    inj.add_argument("--blackout", action="append", metavar="MOD:T0-T1",
                     help="no messages between T0 and T1 seconds from the start")
    inj.add_argument("--freeze", action="append", metavar="MOD:T0-T1",
                     help="between T0 and T1 re-send the last frame before T0 (fresh stamps, stale content)")
    inj.add_argument("--noise", action="append", metavar="MOD:LEVEL",
                     help="NM benchmark noise, LEVEL 0/1/2 or low/mid/high (8-bit image topics only)")
    inj.add_argument("--jitter", action="append", metavar="MOD:MS",
                     help="shift header stamps (and receive times) by uniform [-MS, MS] milliseconds")
    inj.add_argument("--corrupt", action="append", metavar="MOD:P",
                     help="make a fraction P of the messages malformed (truncated data, bad step, bad encoding)")
    p.add_argument("--node-params", default=None, metavar="YAML",
                   help="also write a perception_node params file pointing its inputs at this bag's topics (types, "
                   "LiDAR extrinsic, camera_info): ros2 launch ... params_file:=YAML")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def write_node_params(path: str | Path, bag: str | Path) -> Path:
    """A ``perception_node`` parameters file for replaying ``bag`` (inputs.<m>.topic/type/extrinsic, camera_info)."""
    import yaml

    from equiseg_ros.bag._writer import read_custom
    from equiseg_ros.ros.params import yaml_sections
    layout = read_custom(bag)["topics"]
    values: dict[str, Any] = {"camera_info_topic": layout["camera_info"]}
    for m, form in layout["modalities"].items():
        values[f"inputs.{m}.topic"] = form["topic"]
        values[f"inputs.{m}.type"] = form["type"]
        if form.get("extrinsic"):
            values[f"inputs.{m}.extrinsic"] = [float(v) for v in form["extrinsic"]]
    text = ("# perception_node inputs for the bag " + str(bag) + " (python -m equiseg_ros.bag.convert). Use with\n"
            "#   ros2 launch equiseg_ros perception.launch.py model_path:=MODEL params_file:=THIS use_sim_time:=true\n"
            "# Parameters not set here keep the node's defaults (those of config/perception.yaml).\n")
    text += yaml.safe_dump({"/**": {"ros__parameters": yaml_sections(values)}}, sort_keys=False)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        target = Target(args.distro, args.storage or default_storage(args.distro))
        injections = parse_injections(args)
        source = FrameSource(args.dataset, args.root, args.split, _csv(args.modalities) or None,
                             _csv(args.conditions) or None, _csv(args.corner_cases) or None, raw=args.raw,
                             limit=args.limit)
        info = {"dataset": args.dataset, "root": str(Path(args.root).resolve()), "split": args.split,
                "conditions": _csv(args.conditions), "corner_cases": _csv(args.corner_cases)}
        res = write_bag(iter(source), source.spec, args.out, target=target, rate=args.rate, injections=injections,
                        seed=args.seed, raw=args.raw, source_info=info, overwrite=args.overwrite,
                        start_s=args.start, total=len(source), progress=not args.quiet)
    except (SourceError, BagWriteError, InjectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {res.path} ({target.distro}, {target.storage}): {res.frames} frames, "
          f"{sum(res.messages.values())} messages in {res.seconds:.1f} s")
    if args.node_params:
        print(f"node parameters for this bag: {write_node_params(args.node_params, res.path)}")
    for item in res.injections:
        print(f"  injected {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
