"""The perception node's parameters: one schema, validated at start and on every change.

Pure Python (no rclpy) so the schema, the YAML in ``config/perception.yaml`` and the rejection messages are unit
tested without DDS. The node declares every entry of :data:`PARAMS` (plus the per-modality entries from
:func:`modality_params`) and routes both the start-up values and every ``set_parameters`` request through
:func:`check_value` / :func:`check_all`, so a bad value is refused with a message that names the parameter, the value
and what is allowed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

Check = Callable[[Any], "str | None"]

RELIABILITIES = ("best_effort", "reliable")
INPUT_TYPES = ("image", "compressed", "pointcloud2")
CONFIDENCE_ENCODINGS = ("mono8", "32FC1")
BACKENDS = ("tensorrt", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "int8")


class ParamError(ValueError):
    """One or more parameter values are invalid; ``errors`` lists one message per bad parameter."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True)
class ParamDef:
    """A declared parameter: default (fixes the type), documentation, check, and whether it may change at run time."""

    name: str
    default: Any
    doc: str
    check: Check | None = None
    dynamic: bool = False  # may be changed while running; otherwise read-only after start
    kind: str = field(default="")  # "bool" | "int" | "float" | "str" | "str[]" | "float[]"; derived from default

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", _kind_of(self.default))


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return "str[]"
        return "float[]"
    raise TypeError(f"unsupported parameter default {value!r}")


# ---- checks ------------------------------------------------------------------------------------------------------
def in_range(lo: float, hi: float, *, lo_open: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return f"must be a finite number, got {v!r}"
        if (v <= lo if lo_open else v < lo) or v > hi:
            return f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v!r}"
        return None
    return check


def one_of(*choices: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {list(choices)}, got {v!r}"
    return check


def _topic(v: Any) -> str | None:
    if not isinstance(v, str) or not v.strip():
        return "must be a non-empty topic name"
    if any(c.isspace() for c in v):
        return f"topic names cannot contain spaces, got {v!r}"
    return None


def _model_path(v: Any) -> str | None:
    if not isinstance(v, str) or not v:
        return ("is required: the exported model (.onnx, TensorRT .engine with its sidecar, or .pt checkpoint); "
                "pass -p model_path:=/path/to/model.onnx or set it in the params file")
    return None


def _backends(v: Any) -> str | None:
    bad = [b for b in (v or []) if b not in BACKENDS]
    if not v:
        return f"must name at least one backend of {list(BACKENDS)}"
    return f"unknown backend(s) {bad}; known: {list(BACKENDS)}" if bad else None


def _extrinsic(v: Any) -> str | None:
    if len(v) == 0:
        return None
    from equiseg_ros.sensors.transforms_tf import extrinsic_from_param  # numpy only

    try:
        extrinsic_from_param(list(v), "extrinsic")
    except ValueError as exc:
        return str(exc).removeprefix("extrinsic: ") + " (row-major 4x4 camera<-sensor, or tx ty tz qx qy qz qw)"
    return None


# ---- the schema ----------------------------------------------------------------------------------------------------
PARAMS: tuple[ParamDef, ...] = (
    ParamDef("model_path", "", "exported model: .onnx (spec in metadata), TensorRT .engine (+ sidecar) or .pt",
             _model_path),
    ParamDef("backend.prefer", ["tensorrt", "onnxruntime", "torch"],
             "backends to try in order; the first that loads the artefact on this machine is used", _backends),
    ParamDef("backend.threads", 0, "CPU threads for ONNX Runtime / torch (0 = the backend's default)",
             in_range(0, 256)),
    ParamDef("engine.precision", "fp32", "TensorRT engine precision: fp32, fp16 or int8 (the engine "
             "`training/export.py --engine --fp16/--int8` built, found in engine.cache_dir); ONNX Runtime's "
             "TensorRT provider uses it too", one_of(*PRECISIONS)),
    ParamDef("engine.cache_dir", "", "directory of built TensorRT engines (+ sidecars and timing cache); empty = "
             "beside the model", None),
    ParamDef("engine.build_on_start", True, "build a missing or stale TensorRT engine at start (minutes on a "
             "Jetson: the node reports progress on /rosout and /diagnostics); false = use a prebuilt engine or fall "
             "back to the next backend", None),
    ParamDef("camera_info_topic", "camera_info", "sensor_msgs/CameraInfo of the camera the masks are aligned to",
             _topic),
    ParamDef("qos.reliability", "best_effort", "input QoS reliability: best_effort (sensor data) or reliable",
             one_of(*RELIABILITIES)),
    ParamDef("qos.depth", 5, "input QoS history depth (keep last N)", in_range(1, 100)),
    ParamDef("sync.priority", [], "anchor order (modality names); empty = the spec's order. The first alive one "
             "anchors each frame", None, kind="str[]"),
    ParamDef("sync.slop", 0.05, "seconds: max stamp distance of a message to the anchor to join its frame",
             in_range(0.0, 1.0, lo_open=True), dynamic=True),
    ParamDef("sync.max_age", 0.5, "seconds: a modality with nothing newer is absent (stale) in a frame; must exceed "
             "the slowest sensor's period", in_range(0.0, 60.0, lo_open=True), dynamic=True),
    ParamDef("sync.wait", 0.1, "seconds the anchor waits for a live modality whose message of the same instant is "
             "still in flight (big frames arrive one after another); a dead sensor is never waited for",
             in_range(0.0, 10.0), dynamic=True),
    ParamDef("sync.buffer", 5, "messages kept per modality for matching", in_range(1, 100)),
    ParamDef("convert.on_arrival", True, "convert each message to its model representation as it arrives while the "
             "inference thread is idle, so only the last message of a frame is converted after synchronisation "
             "(lower latency; same result)", None, dynamic=True),
    ParamDef("output.resize_to_camera", False, "resize mask/overlay/confidence (NEAREST) to the CameraInfo size",
             None, dynamic=True),
    ParamDef("output.overlay_alpha", 0.5, "weight of the class colour in ~/overlay (0 = image only, 1 = colours)",
             in_range(0.0, 1.0), dynamic=True),
    ParamDef("output.confidence_encoding", "mono8", "~/confidence as mono8 (0..255) or 32FC1 (0..1)",
             one_of(*CONFIDENCE_ENCODINGS), dynamic=True),
    ParamDef("output.frame_id", "", "frame_id of the outputs; empty = the anchor message's frame_id", None,
             dynamic=True),
    ParamDef("output.lazy", False, "skip inference entirely while nobody subscribes to mask/overlay/confidence",
             None, dynamic=True),
    ParamDef("diagnostics.period", 1.0, "seconds between /diagnostics messages", in_range(0.05, 60.0)),
    ParamDef("diagnostics.window", 2.0, "seconds of history for rates and latency percentiles",
             in_range(0.1, 120.0), dynamic=True),
    ParamDef("health.enabled", True, "run the per-message health checks (frozen, black, saturated, invalid depth, "
             "too few points, noisy); a failing sensor is left out of fusion and reported", None),
    ParamDef("health.frozen_frames", 5, "identical consecutive messages that make a sensor 'frozen' (0 = off)",
             in_range(0, 10000)),
    ParamDef("health.min_points", 1000, "finite points a point cloud needs (0 = off)", in_range(0, 1 << 31)),
    ParamDef("health.black_fraction", 0.98, "fraction of black pixels that makes a camera 'black' (0 = off)",
             in_range(0.0, 1.0)),
    ParamDef("health.saturated_fraction", 0.95, "fraction of saturated pixels that makes a camera 'saturated' "
             "(0 = off)", in_range(0.0, 1.0)),
    ParamDef("health.depth_invalid_fraction", 0.9, "fraction of NaN/zero depth that makes a depth image 'invalid' "
             "(0 = off)", in_range(0.0, 1.0)),
    ParamDef("health.noise_ratio", 3.0, "noise above this multiple of the sensor's own baseline makes a camera "
             "'noisy' (0 = off)", in_range(0.0, 1000.0)),
    ParamDef("transport.large_frame_bytes", 1_000_000, "messages at least this big are watched for transport delay",
             in_range(1, 1 << 31)),
    ParamDef("transport.late_threshold", 0.1, "seconds: median stamp-to-arrival delay of large frames that triggers "
             "the one-time shared-memory transport warning", in_range(0.0, 10.0, lo_open=True), dynamic=True),
    ParamDef("transport.silent_timeout", 3.0, "seconds a topic may have publishers but deliver nothing before the "
             "one-time transport warning", in_range(0.0, 600.0, lo_open=True), dynamic=True),
    ParamDef("debug.extra_latency", 0.0, "seconds slept per inference (testing: emulates a slow backend)",
             in_range(0.0, 10.0), dynamic=True),
    ParamDef("debug.load_delay", 0.0, "seconds the model load waits before loading (testing: emulates a long "
             "TensorRT engine build; a shutdown cancels it like a build)", in_range(0.0, 3600.0)),
)

PARAM_INDEX: dict[str, ParamDef] = {p.name: p for p in PARAMS}


def default_topic(modality: str) -> str:
    """``<modality>/image``: relative, so a launch namespace applies; the bag converter writes the same names."""
    return f"{modality}/image"


def modality_params(modalities: Sequence[str]) -> tuple[ParamDef, ...]:
    """Per-modality input parameters, declared once the spec (and so the modality list) is known."""
    out: list[ParamDef] = []
    for m in modalities:
        out += [
            ParamDef(f"inputs.{m}.topic", default_topic(m), f"topic of the {m} sensor", _topic),
            ParamDef(f"inputs.{m}.type", "image", f"message type of {m}: image (sensor_msgs/Image), compressed "
                     "(CompressedImage) or pointcloud2 (LiDAR/radar projected with CameraInfo + extrinsic; "
                     "events x, y, t, polarity)", one_of(*INPUT_TYPES)),
            ParamDef(f"inputs.{m}.extrinsic", [], f"camera<-{m} transform, 16 numbers (row-major 4x4) or 7 "
                     "(tx ty tz qx qy qz qw); required for a LiDAR/radar pointcloud2 (give the identity "
                     "[0, 0, 0, 0, 0, 0, 1] explicitly for points already in the camera optical frame): without it "
                     "the modality is absent; unused for images and event clouds", _extrinsic, kind="float[]"),
        ]
    return tuple(out)


def coerce(p: ParamDef, value: Any) -> Any:
    """Map what ROS delivers to the schema's type: ints for floats, None (declared but unset) for empty arrays."""
    if value is None:
        return [] if p.kind in ("str[]", "float[]") else p.default
    if p.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if p.kind == "str[]" and isinstance(value, (list, tuple)):
        return [str(v) for v in value if v != ""]
    if p.kind == "float[]" and isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return value


def _type_ok(p: ParamDef, v: Any) -> bool:
    if p.kind == "bool":
        return isinstance(v, bool)
    if p.kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if p.kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if p.kind == "str":
        return isinstance(v, str)
    return isinstance(v, (list, tuple))


def check_value(p: ParamDef, value: Any) -> str | None:
    """None when ``value`` is acceptable for ``p``; otherwise a message naming the parameter."""
    v = coerce(p, value)
    if not _type_ok(p, v):
        return f"{p.name}: expected {p.kind}, got {type(value).__name__} {value!r}"
    msg = p.check(v) if p.check else None
    return f"{p.name}: {msg}" if msg else None


def check_all(values: dict[str, Any], defs: Sequence[ParamDef], modalities: Sequence[str] = ()) -> dict[str, Any]:
    """Validate a complete set of values (start-up or after a change); return them coerced or raise ParamError."""
    errors: list[str] = []
    out: dict[str, Any] = {}
    for p in defs:
        raw = values.get(p.name, p.default)
        msg = check_value(p, raw)
        if msg:
            errors.append(msg)
        else:
            out[p.name] = coerce(p, raw)
    if not errors:
        errors += cross_checks(out, modalities)
    if errors:
        raise ParamError(errors)
    return out


def cross_checks(v: dict[str, Any], modalities: Sequence[str]) -> list[str]:
    """Rules that involve more than one parameter (or the model's modality list)."""
    errors = []
    if "sync.slop" in v and "sync.max_age" in v and v["sync.slop"] >= v["sync.max_age"]:
        errors.append(f"sync.slop: must be smaller than sync.max_age ({v['sync.max_age']}), got {v['sync.slop']}")
    prio = v.get("sync.priority") or []
    if len(set(prio)) != len(prio):
        errors.append(f"sync.priority: names must not repeat, got {prio}")
    if modalities and v.get("sync.priority"):
        unknown = [m for m in v["sync.priority"] if m not in modalities]
        if unknown:
            errors.append(f"sync.priority: {unknown} not in the model's modalities {list(modalities)}")
    return errors


def yaml_sections(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted names -> nested dict, the shape of a ROS params file's ``ros__parameters``."""
    root: dict[str, Any] = {}
    for name, value in values.items():
        node = root
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return root


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested ``ros__parameters`` dict -> dotted names (the inverse of :func:`yaml_sections`)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out
