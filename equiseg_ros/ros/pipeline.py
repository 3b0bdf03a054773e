"""The perception node's per-message path without DDS: decode -> health -> synchronise -> assemble -> infer.

Offline bag evaluation (``python -m equiseg_ros.bag.evaluate``) must score exactly what the node would compute, so
this module holds the node's message handling as plain Python over duck-typed messages (rclpy messages or the
dataclasses ``rosbags`` deserialises) with an explicit clock ``now``. It is built from the very components the node
uses - ``codecs`` (decoding, ``DecodeError`` -> malformed), ``sensors.health.HealthMonitor`` (frozen / black /
saturated / invalid depth -> unhealthy), ``sync.Synchronizer`` (anchor + failover), ``sensors.frontend.SensorFrontend``
(raw data -> the spec's representations -> ``x``/``present``, the code that prepared the training data) and the
inference backend - configured from the node's parameter schema (``params.PARAMS`` + ``modality_params``, same
defaults and checks).

The node's sensor callback is :meth:`FramePipeline.receive` (decode, health, synchroniser push) and its worker uses
the pipeline's ``SensorFrontend``, so the node and the offline evaluation share one message path; what stays in the
node is DDS, logging, diagnostics counters, the newest-frame worker and the outputs. :data:`MIRRORS` names the node
steps that are still emulated here (the poll timer, inference), and ``test/test_bag_evaluate.py`` checks both give
the same masks on the same bag.
What is deliberately different offline: every synchronised frame is inferred (the node's worker keeps only the
newest frame when inference is slower than the sensors), and the node's 10 ms poll timer is emulated by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from equiseg_ros.ros import codecs
from equiseg_ros.ros.params import PARAMS, check_all, modality_params
from equiseg_ros.ros.sync import SyncedFrame, Synchronizer
from equiseg_ros.sensors.frontend import EVENT_POLARITY_FIELDS, EVENT_TIME_FIELDS, SensorFrontend, health_kind
from equiseg_ros.sensors.health import HealthConfig, HealthMonitor
from equiseg_ros.sensors.transforms_tf import extrinsic_from_param

MIRRORS = "equiseg_ros/ros/node.py PerceptionNode._poll/_process (the node's timer and worker; on_sensor is shared)"
POLL_PERIOD = 0.01  # the node's poll timer (s), which runs only while time_can_emit()


def time_can_emit(sync: Synchronizer) -> bool:
    """Whether a later :meth:`Synchronizer.poll` could emit a frame without a new message arriving first.

    A frame needs an alive anchor (a good message received within ``max_age``); once no modality is alive, every
    poll returns None until the next message, whose callback polls anyway. The node therefore runs its poll timer
    only while this is True (idle cost ~0) and emits exactly the frames an always-running timer would emit
    (``test/test_sync_policy.py`` replays both strategies)."""
    return any(sync.state(m)[0] == "alive" for m in sync.modalities)


@dataclass
class Decoded:
    """A decoded sensor message waiting in the synchroniser: numpy data plus what the outputs need.

    Defined here, below the node (which imports this module), so the node and the offline evaluation share it
    without an import circle."""

    modality: str
    kind: str  # image | compressed | pointcloud2
    data: np.ndarray
    encoding: str
    header: Any
    nbytes: int
    prepared: Any = None  # node: Future of the representation image, converted on arrival (see convert.on_arrival)


@dataclass
class FrameResult:
    """One inferred frame: anchor stamp (s), anchor modality, labels/confidence [H, W], what was present/absent."""

    stamp: float
    anchor: str
    labels: np.ndarray
    confidence: np.ndarray
    present: dict[str, bool]
    absent: dict[str, str] = field(default_factory=dict)
    stamp_ns: int = 0


def cloud_fields(representation: str) -> tuple[str, ...]:
    """Fields a PointCloud2 must have to feed ``representation``: x, y for events (time and polarity are checked
    by :func:`decode` under their accepted names), x, y, z for LiDAR / radar."""
    return ("x", "y") if representation == "event_frame" else ("x", "y", "z")


def decode(kind: str, msg: Any, topic: str, modality: str, representation: str = "") -> Decoded:
    """One sensor message -> Decoded; DecodeError when malformed or empty. The node and the offline evaluation both
    call this. ``representation`` (the modality's, from the spec) decides which fields a PointCloud2 needs."""
    if kind == "image":
        arr = codecs.image_to_numpy(msg, topic)
        enc, nbytes = msg.encoding, len(msg.data)
    elif kind == "compressed":
        arr = codecs.compressed_image_to_numpy(msg, topic)  # colour comes back RGB
        enc = {(np.dtype(np.uint8), 3): "rgb8", (np.dtype(np.uint8), 2): "mono8"}.get(
            (arr.dtype, arr.ndim), f"compressed:{msg.format}")
        nbytes = len(msg.data)
    else:
        arr = codecs.pointcloud2_to_array(msg, topic, require=cloud_fields(representation))
        if representation == "event_frame":
            names = arr.dtype.names or ()
            for what, accepted in (("time", EVENT_TIME_FIELDS), ("polarity", EVENT_POLARITY_FIELDS)):
                if not any(n in names for n in accepted):
                    raise codecs.DecodeError(topic, f"event cloud has no {what} field (one of {list(accepted)}); "
                                                    f"cloud has {list(names)}")
        enc, nbytes = "pointcloud2", len(msg.data)
    if arr.size == 0:
        raise codecs.DecodeError(topic, "empty message (no pixels / points)")
    return Decoded(modality, kind, arr, enc, msg.header, nbytes)


@dataclass
class Received:
    """What became of one sensor message: ``decoded`` (None when malformed), its header ``stamp`` (s), the decode
    ``error`` when malformed, the health-check failure ``unhealthy`` ("" when healthy and buffered)."""

    decoded: Decoded | None
    stamp: float = float("nan")
    error: Exception | None = None
    unhealthy: str = ""

    @property
    def reason(self) -> str | None:
        """Why the message was not buffered (None when it was)."""
        if self.error is not None:
            return f"malformed: {self.error}"
        return f"unhealthy: {self.unhealthy}" if self.unhealthy else None


class FramePipeline:
    """The node's pipeline for one model. ``params`` are node parameters (dotted names), validated like the node."""

    def __init__(self, backend: Any, params: Mapping[str, Any] | None = None) -> None:
        self.backend = backend
        self.spec = backend.spec
        self.modalities = list(self.spec.modality_names)
        raw = {"model_path": str(getattr(backend, "path", "") or "model")}
        raw.update(params or {})
        defs = PARAMS + modality_params(self.modalities)
        known = {p.name for p in defs}
        unknown = sorted(set(raw) - known - {"use_sim_time"})
        if unknown:
            raise ValueError(f"unknown node parameter(s) {unknown}")
        self.values = v = check_all(raw, defs, self.modalities)
        # as the node: a partial priority list ranks those first, the rest follow in the spec's order
        prio = list(v["sync.priority"]) + [m for m in self.modalities if m not in v["sync.priority"]]
        self.sync = Synchronizer(self.modalities, priority=prio, slop=v["sync.slop"], max_age=v["sync.max_age"],
                                 buffer=v["sync.buffer"], wait=v["sync.wait"])
        self.health = HealthMonitor(HealthConfig(
            enabled=v["health.enabled"], frozen_frames=v["health.frozen_frames"], min_points=v["health.min_points"],
            black_fraction=v["health.black_fraction"], saturated_fraction=v["health.saturated_fraction"],
            depth_invalid_fraction=v["health.depth_invalid_fraction"], noise_ratio=v["health.noise_ratio"]))
        self.kinds = {m: v[f"inputs.{m}.type"] for m in self.modalities}
        self.topics = {m: v[f"inputs.{m}.topic"] for m in self.modalities}
        self.extrinsics = {m: extrinsic_from_param(v[f"inputs.{m}.extrinsic"], f"inputs.{m}.extrinsic")
                           for m in self.modalities if v.get(f"inputs.{m}.extrinsic")}
        self.representation = {m.name: m.representation for m in self.spec.modalities}
        self.frontend = SensorFrontend(self.spec, extrinsics=self.extrinsics, size=tuple(backend.input_size))
        self.camera: Any = None
        self.camera_info: Any = None
        self.malformed: dict[str, int] = dict.fromkeys(self.modalities, 0)
        self.unhealthy: dict[str, int] = dict.fromkeys(self.modalities, 0)
        self.conversion_failed: dict[str, int] = dict.fromkeys(self.modalities, 0)
        self.camera_malformed = 0

    # ---- inputs (the node's executor-thread callbacks) ----------------------------------------------------------
    def on_camera_info(self, msg: Any) -> None:
        try:
            camera = codecs.camera_info_to_camera(msg, self.values["camera_info_topic"])
        except (codecs.DecodeError, ValueError):
            self.camera_malformed += 1
            return
        self.camera_info, self.camera = msg, camera
        self.frontend.set_camera(camera)

    def on_sensor(self, modality: str, msg: Any, now: float) -> str | None:
        """Decode, health-check and buffer one message; returns why it was not buffered (None when it was)."""
        return self.receive(modality, msg, now).reason

    def receive(self, modality: str, msg: Any, now: float) -> Received:
        """:meth:`on_sensor` with the decoded message and its stamp (the node's callback: it logs and counts)."""
        try:
            stamp = codecs.stamp_to_sec(msg.header)
            dec = decode(self.kinds[modality], msg, self.topics[modality], modality, self.representation[modality])
            if not np.isfinite(stamp):
                raise codecs.DecodeError(self.topics[modality], "non-finite header stamp")
        except (codecs.DecodeError, ValueError, TypeError, AttributeError) as exc:
            self.sync.mark_malformed(modality, now)
            self.malformed[modality] += 1
            return Received(None, error=exc)
        ok, why = self.health.check(modality, health_kind(self.representation[modality], dec.data), dec.data)
        if not ok:
            self.sync.mark_unhealthy(modality, why, now)
            self.unhealthy[modality] += 1
            return Received(dec, stamp, unhealthy=why or "unhealthy")
        self.sync.mark_healthy(modality)
        self.sync.push(modality, stamp, dec, now)
        return Received(dec, stamp)

    def poll(self, now: float) -> SyncedFrame | None:
        return self.sync.poll(now)

    # ---- the worker's step ------------------------------------------------------------------------------------
    def assemble(self, frame: SyncedFrame) -> tuple[np.ndarray, np.ndarray]:
        x, present, failed = self.frontend.assemble_with_reasons(frame.items)
        for m in failed:
            self.conversion_failed[m] += 1
        return x, present

    def infer(self, frame: SyncedFrame) -> FrameResult:
        x, present = self.assemble(frame)
        labels, conf = self.backend.infer(x, present)
        anchor = frame.items[frame.anchor]
        stamp_ns = codecs.stamp_to_ns(anchor.header)
        return FrameResult(stamp=frame.stamp, anchor=frame.anchor, labels=np.asarray(labels[0]),
                           confidence=np.asarray(conf[0]),
                           present={m: bool(p) for m, p in zip(self.modalities, present[0])},
                           absent=dict(frame.absent), stamp_ns=stamp_ns)
