"""/diagnostics for the perception node: one status per sensor, one for inference.

The reports are plain dataclasses built by the node from its counters; :func:`to_msg` turns them into a
``diagnostic_msgs/DiagnosticArray`` (the message package is imported only there). Key names are stable so tools and
tests can read them: sensors report ``state``, ``reason``, ``rate_hz``, ``age_s``, ``received``, ``malformed``;
inference reports ``backend``, ``latency_p50_ms``, ``latency_p95_ms``, ``dropped_frames``, ``modalities_present``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK, WARN, ERROR, STALE = 0, 1, 2, 3

# Sensor states. "ok": contributes to frames; the rest say why a modality is absent from the frames.
SENSOR_STATES = ("ok", "never_seen", "stale", "malformed", "unhealthy", "waiting")


@dataclass
class SensorReport:
    modality: str
    topic: str
    state: str  # one of SENSOR_STATES
    reason: str = ""
    rate_hz: float = 0.0
    age_s: float | None = None  # now - header stamp of the newest message (None: never seen)
    received: int = 0
    malformed: int = 0
    anchor: bool = False  # anchors the frames being published right now
    transport_delay_ms: float | None = None  # median stamp -> arrival of recent messages


@dataclass
class InferenceReport:
    backend: str
    device: str
    model: str
    input_size: tuple[int, int]
    latency_p50_ms: float | None = None  # anchor stamp -> outputs published
    latency_p95_ms: float | None = None
    infer_p50_ms: float | None = None  # backend.infer alone
    infer_p95_ms: float | None = None
    rate_hz: float = 0.0
    frames_synced: int = 0
    frames_published: int = 0
    dropped_frames: int = 0  # synced frames replaced before inference started
    pending: int = 0
    errors: int = 0
    last_error: str = ""
    modalities_present: str = ""  # e.g. "RDL": the subset of the newest frame
    anchor: str = ""
    worker_alive: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def sensor_status(node_name: str, r: SensorReport) -> dict[str, Any]:
    """A status as a plain dict: level, name, message, hardware_id, values (str -> str)."""
    level = OK if r.state == "ok" else WARN
    msg = "ok" if r.state == "ok" else f"{r.state}: {r.reason}" if r.reason else r.state
    if r.anchor and r.state == "ok":
        msg = "ok (anchor)"
    values = {"state": r.state, "reason": r.reason, "rate_hz": _fmt(r.rate_hz), "age_s": _fmt(r.age_s),
              "received": str(r.received), "malformed": str(r.malformed), "anchor": str(r.anchor).lower(),
              "topic": r.topic, "transport_delay_ms": _fmt(r.transport_delay_ms)}
    return {"level": level, "name": f"{node_name}: sensor {r.modality}", "message": msg, "hardware_id": r.topic,
            "values": values}


def inference_status(node_name: str, r: InferenceReport) -> dict[str, Any]:
    if not r.worker_alive:
        level, msg = ERROR, "inference thread died"
    elif r.errors and r.last_error:
        level, msg = ERROR, f"inference errors: {r.last_error}"
    elif r.rate_hz <= 0.0:
        level, msg = WARN, "no frames (no sensor alive, or waiting for data)"
    else:
        level, msg = OK, f"{r.rate_hz:.1f} Hz on {r.modalities_present or '-'}"
    values = {"backend": r.backend, "device": r.device, "model": r.model,
              "input_size": f"{r.input_size[0]}x{r.input_size[1]}",
              "latency_p50_ms": _fmt(r.latency_p50_ms), "latency_p95_ms": _fmt(r.latency_p95_ms),
              "infer_p50_ms": _fmt(r.infer_p50_ms), "infer_p95_ms": _fmt(r.infer_p95_ms),
              "rate_hz": _fmt(r.rate_hz), "frames_synced": str(r.frames_synced),
              "frames_published": str(r.frames_published), "dropped_frames": str(r.dropped_frames),
              "pending": str(r.pending), "errors": str(r.errors), "last_error": r.last_error,
              "modalities_present": r.modalities_present, "anchor": r.anchor}
    values.update({k: _fmt(v) for k, v in r.extra.items()})
    return {"level": level, "name": f"{node_name}: inference", "message": msg, "hardware_id": r.backend,
            "values": values}


# Node states reported before inference runs (plain node while loading; managed node in each lifecycle state).
NODE_STATES = ("loading", "unconfigured", "inactive", "error", "shutting_down")


def node_state_status(node_name: str, state: str, message: str, model: str = "", progress: str = "",
                      backend: str = "") -> dict[str, Any]:
    """The inference status while the node does not infer: ``state`` (one of :data:`NODE_STATES`), what it is
    doing (``message``) and the last loading / engine-build progress line. Same status name as
    :func:`inference_status`, so a monitor watching that status sees the node come up."""
    level = ERROR if state == "error" else WARN
    values = {"state": state, "model": model, "progress": progress, "backend": backend}
    return {"level": level, "name": f"{node_name}: inference", "message": f"{state}: {message}" if message else state,
            "hardware_id": backend or "-", "values": values}


def to_msg(statuses: list[dict[str, Any]], stamp: Any) -> Any:
    """Plain status dicts -> diagnostic_msgs/DiagnosticArray stamped ``stamp`` (a builtin_interfaces/Time)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    arr = DiagnosticArray()
    arr.header.stamp = stamp
    for s in statuses:
        st = DiagnosticStatus()
        st.level = bytes([s["level"]])
        st.name, st.message, st.hardware_id = s["name"], s["message"], s["hardware_id"]
        st.values = [KeyValue(key=k, value=v) for k, v in s["values"].items()]
        arr.status.append(st)
    return arr


def from_msg(arr: Any) -> list[dict[str, Any]]:
    """DiagnosticArray -> plain dicts (the inverse of :func:`to_msg`; used by tests and tools)."""
    out = []
    for st in arr.status:
        level = st.level[0] if isinstance(st.level, (bytes, bytearray)) else int(st.level)
        out.append({"level": level, "name": st.name, "message": st.message, "hardware_id": st.hardware_id,
                    "values": {kv.key: kv.value for kv in st.values}})
    return out
