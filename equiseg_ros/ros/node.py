"""The perception node: run the model on whatever sensors are alive; publish masks, overlays and diagnostics.

    perception_node --ros-args -p model_path:=model.onnx --params-file config/perception.yaml

Flow (DESIGN.md): each sensor callback decodes its message (``codecs``; a malformed one is dropped, counted and
reported, never fatal), checks health (frozen content), and pushes the decoded array into the anchor/failover
``Synchronizer`` (``pipeline.FramePipeline.receive``: the path the offline bag evaluation runs too); every
synchronised frame goes to :class:`~equiseg_ros.ros.worker.InferenceWorker`, which runs the backend on the newest
frame only, off the executor thread. The worker converts the frame to the model input with the
shared ``sensors`` front end (the same code that prepared the training data), infers, and publishes what has
subscribers: ``~/mask`` (mono8 ids, 255 = unlabeled), ``~/overlay`` (rgb8), ``~/confidence``. ``~/label_info``
(transient local) carries classes and palette as JSON; ``/diagnostics`` one status per sensor and one for inference.

The model is loaded (``load_backend``: TensorRT, ONNX Runtime or PyTorch, whichever runs here) before anything is
subscribed, and its spec decides the inputs: one topic per modality plus CameraInfo.
"""
from __future__ import annotations

import os

# Before numpy is imported: its BLAS must not start a thread per core next to the inference threads. Under CPU
# contention a (100k x 3) @ (3 x 3) point transform took 140 ms with the default OpenBLAS threads and 0.4 ms with
# one (measured here). A default only: the user's environment wins.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from equiseg_ros.ros import diagnostics as diag  # noqa: E402
from equiseg_ros.ros import overlay as render  # noqa: E402
from equiseg_ros.ros._stats import Window  # noqa: E402
from equiseg_ros.ros._transport import TransportWatch, profile_in_use  # noqa: E402
from equiseg_ros.ros.params import (  # noqa: E402
    PARAMS,
    ParamDef,
    ParamError,
    check_all,
    check_value,
    coerce,
    cross_checks,
    modality_params,
)

NODE_NAME = "perception_node"


@dataclass
class _Frame:
    """What the worker gets: the synchronised frame and when it was handed over."""

    synced: Any  # sync.SyncedFrame
    handed: float


def build_node_class():
    """The Node subclass, created lazily so importing this module does not import rclpy."""
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
    from rclpy.clock import Clock, ClockType
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
    from std_msgs.msg import String

    from equiseg_ros.inference.backend import load_backend
    from equiseg_ros.ros import codecs
    from equiseg_ros.ros.pipeline import FramePipeline
    from equiseg_ros.ros.worker import InferenceWorker

    msg_types = {"image": Image, "compressed": CompressedImage, "pointcloud2": PointCloud2}
    ros_types = {"bool": Parameter.Type.BOOL, "int": Parameter.Type.INTEGER, "float": Parameter.Type.DOUBLE,
                 "str": Parameter.Type.STRING, "str[]": Parameter.Type.STRING_ARRAY,
                 "float[]": Parameter.Type.DOUBLE_ARRAY}

    class PerceptionNode(Node):
        """See the module docstring. Raises ParamError / BackendError from __init__ on a bad configuration."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(kwargs.pop("node_name", NODE_NAME), **kwargs)
            self._lock = threading.Lock()
            self._defs: dict[str, ParamDef] = {}
            self.values = self._declare(PARAMS, [])
            # 1. the model first: its spec decides what to subscribe to.
            opts = {"intra_op_threads": self.values["backend.threads"]} if self.values["backend.threads"] else {}
            t0 = time.perf_counter()
            self.backend = load_backend(self.values["model_path"], prefer=self.values["backend.prefer"], **opts)
            self.backend.warmup(2)
            self.spec = self.backend.spec
            self.modalities = list(self.spec.modality_names)
            self.values.update(self._declare(modality_params(self.modalities), self.modalities))
            errors = cross_checks(self.values, self.modalities)  # e.g. sync.priority names vs the model's modalities
            if errors:
                raise ParamError(errors)
            self.get_logger().info(
                f"model {self.values['model_path']}: {self.backend.name} on {self.backend.device}, spec "
                f"{self.spec.name!r}, modalities {self.modalities}, {self.spec.num_classes} classes, input "
                f"{self.backend.input_size[0]}x{self.backend.input_size[1]} (loaded in "
                f"{time.perf_counter() - t0:.1f} s)")
            self._lut = self.spec.palette_array()
            self._rgb_modality = next((m.name for m in self.spec.modalities if m.representation == "rgb8"), None)
            self._init_state()
            self._init_outputs(QoSProfile, ReliabilityPolicy, DurabilityPolicy, HistoryPolicy, String)
            self._worker: InferenceWorker[_Frame] = InferenceWorker(
                self._process, on_error=lambda m: self.get_logger().error(m)).start()
            self._init_inputs(QoSProfile, ReliabilityPolicy, HistoryPolicy, CameraInfo)
            steady = Clock(clock_type=ClockType.STEADY_TIME)  # timers keep running when sim time pauses or jumps
            self.create_timer(0.01, self._poll, clock=steady)
            self.create_timer(self.values["diagnostics.period"], self._publish_diagnostics, clock=steady)
            self.create_timer(1.0, self._check_transport, clock=steady)
            self.add_on_set_parameters_callback(self._on_set_parameters)
            self.get_logger().info(
                "subscribed to " + ", ".join(f"{m}: {self._topics[m]} ({self.values[f'inputs.{m}.type']})"
                                             for m in self.modalities)
                + f", camera info: {self._resolve(self.values['camera_info_topic'])}; QoS "
                f"{self.values['qos.reliability']} depth {self.values['qos.depth']}; Fast DDS profile: "
                f"{profile_in_use() or 'defaults'}")

        # ---- parameters ----------------------------------------------------------------------------------
        def _declare(self, defs: tuple[ParamDef, ...], modalities: list[str]) -> dict[str, Any]:
            raw = {}
            for p in defs:
                self._defs[p.name] = p
                desc = ParameterDescriptor(
                    description=p.doc, read_only=not p.dynamic, dynamic_typing=p.kind == "float",
                    additional_constraints="" if p.dynamic else "read-only while running: restart to change")
                if p.kind in ("str[]", "float[]") and not p.default:
                    raw[p.name] = self.declare_parameter(p.name, ros_types[p.kind], desc).value
                else:
                    raw[p.name] = self.declare_parameter(p.name, p.default, desc).value
            return check_all(raw, defs, modalities)  # raises ParamError naming every bad parameter

        def _on_set_parameters(self, params: list[Any]) -> Any:
            """Validate a change with the start-up rules; apply it only if every parameter in it is acceptable."""
            errors, new = [], dict(self.values)
            for prm in params:
                p = self._defs.get(prm.name)
                if p is None:
                    continue  # use_sim_time, qos overrides...: rclpy's own
                if not p.dynamic:
                    errors.append(f"{p.name}: read-only while running (restart the node to change it)")
                    continue
                msg = check_value(p, prm.value)
                if msg:
                    errors.append(msg)
                else:
                    new[p.name] = coerce(p, prm.value)
            errors += cross_checks(new, self.modalities) if not errors else []
            if errors:
                reason = "rejected: " + "; ".join(errors)
                self.get_logger().warning(f"parameter change {reason}")
                return SetParametersResult(successful=False, reason=reason)
            with self._lock:
                self.values = new
                self.sync.slop = new["sync.slop"]
                self.sync.max_age = new["sync.max_age"]
                self.sync.wait = new["sync.wait"]
                for w in (self._latency, self._infer_ms, self._convert_ms, self._wait_ms, self._published):
                    w.window = new["diagnostics.window"]
                self._transport.late_threshold = new["transport.late_threshold"]
                self._transport.silent_timeout = new["transport.silent_timeout"]
            return SetParametersResult(successful=True, reason="")

        # ---- set-up --------------------------------------------------------------------------------------
        def _init_state(self) -> None:
            v = self.values
            # the message path shared with the offline evaluation: decode -> health -> synchroniser, and the
            # sensor front end (the training data's conversions; camera set when CameraInfo arrives)
            self._pipe = FramePipeline(self.backend, v)
            self.sync = self._pipe.sync
            self.health = self._pipe.health
            self._frontend = self._pipe.frontend
            self._representation = self._pipe.representation
            win = v["diagnostics.window"]
            self._latency = Window(win)  # anchor stamp -> outputs published (s)
            self._infer_ms = Window(win)
            self._convert_ms = Window(win)  # decoded messages -> model input (representations, resize, normalise)
            self._wait_ms = Window(win)  # synchronised frame handed over -> inference thread picks it up
            self._pool = ThreadPoolExecutor(max_workers=min(4, len(self.modalities)),
                                            thread_name_prefix="equiseg-convert")
            self._published = Window(win)
            self._arrivals = {m: Window(win) for m in self.modalities}
            self._unhealthy: dict[str, str] = dict.fromkeys(self.modalities, "")
            self._conversion_failed: dict[str, str] = dict.fromkeys(self.modalities, "")
            self._malformed_reason: dict[str, str] = dict.fromkeys(self.modalities, "")
            self._malformed_logged: set[str] = set()
            self._transport = TransportWatch(v["transport.large_frame_bytes"], v["transport.late_threshold"],
                                             v["transport.silent_timeout"])
            self._camera_info: Any = None
            self._camera: Any = None  # sensors.geometry.CameraModel of the last good CameraInfo
            self._camera_malformed = 0
            self._frames_synced = 0
            self._frames_published = 0
            self._last_present = ""
            self._last_anchor = ""
            self._sim_time = bool(self.get_parameter("use_sim_time").value)

        def _resolve(self, topic: str) -> str:
            return self.resolve_topic_name(topic)

        def _init_outputs(self, QoSProfile, Reliability, Durability, History, String) -> None:
            out_qos = QoSProfile(depth=2, reliability=Reliability.RELIABLE, history=History.KEEP_LAST)
            self.pub_mask = self.create_publisher(Image, "~/mask", out_qos)
            self.pub_overlay = self.create_publisher(Image, "~/overlay", out_qos)
            self.pub_conf = self.create_publisher(Image, "~/confidence", out_qos)
            latched = QoSProfile(depth=1, reliability=Reliability.RELIABLE, durability=Durability.TRANSIENT_LOCAL)
            self.pub_label = self.create_publisher(String, "~/label_info", latched)
            from diagnostic_msgs.msg import DiagnosticArray

            self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            info = {"classes": list(self.spec.classes), "palette": [list(c) for c in self.spec.palette],
                    "ignore_index": self.spec.ignore_index, "unlabeled": 255, "spec": self.spec.name,
                    "modalities": self.modalities, "mask_encoding": "mono8", "model": self.values["model_path"],
                    "backend": self.backend.name}
            self.pub_label.publish(String(data=json.dumps(info)))

        def _init_inputs(self, QoSProfile, Reliability, History, CameraInfo) -> None:
            rel = (Reliability.BEST_EFFORT if self.values["qos.reliability"] == "best_effort"
                   else Reliability.RELIABLE)
            qos = QoSProfile(depth=self.values["qos.depth"], reliability=rel, history=History.KEEP_LAST)
            self._topics: dict[str, str] = {}
            self._subs = []
            self._qos_mismatch: dict[str, str] = {}
            for m in self.modalities:
                kind = self.values[f"inputs.{m}.type"]
                topic = self.values[f"inputs.{m}.topic"]
                events = SubscriptionEventCallbacks(
                    incompatible_qos=lambda info, m=m: self._qos_mismatch.__setitem__(
                        m, str(getattr(info.last_policy_kind, "name", info.last_policy_kind)).removeprefix(
                            "RMW_QOS_POLICY_")))
                self._subs.append(self.create_subscription(
                    msg_types[kind], topic, lambda msg, m=m, k=kind: self._on_sensor(m, k, msg), qos,
                    event_callbacks=events))
                self._topics[m] = self._resolve(topic)
            self._pipe.topics.update(self._topics)  # decode errors name the resolved topic
            self._subs.append(self.create_subscription(CameraInfo, self.values["camera_info_topic"],
                                                       self._on_camera_info, qos))

        # ---- executor thread: inputs ---------------------------------------------------------------------
        def _now(self) -> float:
            return self.get_clock().now().nanoseconds * 1e-9

        def _on_camera_info(self, msg: Any) -> None:
            try:
                camera = codecs.camera_info_to_camera(msg, self.values["camera_info_topic"])
            except (codecs.DecodeError, ValueError) as exc:
                self._camera_malformed += 1
                if self._camera_malformed == 1:
                    reason = exc.reason if isinstance(exc, codecs.DecodeError) else str(exc)
                    self.get_logger().warning(f"dropping malformed camera info on "
                                              f"{self._resolve(self.values['camera_info_topic'])}: {reason}")
                return
            self._camera_info, self._camera = msg, camera
            self._pipe.camera_info, self._pipe.camera = msg, camera
            self._frontend.set_camera(camera)

        def _on_sensor(self, m: str, kind: str, msg: Any) -> None:
            """``FramePipeline.receive`` (the offline evaluation's path too), then logging and counters."""
            now = self._now()
            rec = self._pipe.receive(m, msg, now)
            if rec.error is not None:
                exc = rec.error
                reason = exc.reason if isinstance(exc, codecs.DecodeError) else f"{type(exc).__name__}: {exc}"
                self._malformed_reason[m] = reason
                if m not in self._malformed_logged:  # once per modality; counts go to /diagnostics
                    self._malformed_logged.add(m)
                    self.get_logger().warning(f"dropping malformed {m} message: {reason}")
                self._poll()
                return
            self._arrivals[m].add(time.monotonic())
            if not self._sim_time:
                warn = self._transport.observe(self._topics[m], rec.decoded.nbytes, now - rec.stamp)
                if warn:
                    self.get_logger().warning(warn)
            why = rec.unhealthy
            if why:
                if self._unhealthy[m] != why.split(":")[0]:
                    self.get_logger().warning(f"{m} ({self._topics[m]}) unhealthy, left out of fusion: {why}")
                self._unhealthy[m] = why.split(":")[0]
            elif self._unhealthy[m]:
                self._unhealthy[m] = ""
                self.get_logger().info(f"{m} ({self._topics[m]}): healthy again, back in fusion")
            self._poll()

        def _poll(self) -> None:
            frame = self.sync.poll(self._now())
            if frame is None:
                return
            self._frames_synced += 1
            if self.values["output.lazy"] and not self._any_output_subscribed():
                return
            self._worker.submit(_Frame(frame, time.monotonic()))

        def _any_output_subscribed(self) -> bool:
            return any(p.get_subscription_count() > 0 for p in (self.pub_mask, self.pub_overlay, self.pub_conf))

        # ---- worker thread: inference and outputs --------------------------------------------------------
        def _process(self, item: _Frame) -> None:
            frame = item.synced
            v = self.values
            self._wait_ms.add(time.monotonic(), (time.monotonic() - item.handed) * 1e3)  # behind a running inference
            x, present = self._assemble(frame)
            if v["debug.extra_latency"] > 0:
                time.sleep(v["debug.extra_latency"])
            t0 = time.perf_counter()
            labels, conf = self.backend.infer(x, present)
            self._infer_ms.add(time.monotonic(), (time.perf_counter() - t0) * 1e3)
            labels, conf = labels[0], conf[0]
            anchor = frame.items[frame.anchor]
            header = anchor.header
            if v["output.frame_id"]:
                header.frame_id = v["output.frame_id"]
            size = labels.shape
            if v["output.resize_to_camera"] and self._camera_info is not None:
                size = (int(self._camera_info.height), int(self._camera_info.width))
            mask = render.resize_nearest(labels, size)
            if self.pub_mask.get_subscription_count() > 0:
                self.pub_mask.publish(codecs.fill_image(Image(), mask, "mono8", header))
            if self.pub_overlay.get_subscription_count() > 0:
                base = None
                rgb = frame.items.get(self._rgb_modality) if self._rgb_modality else None
                if rgb is not None and rgb.kind != "pointcloud2":
                    try:
                        base = codecs.to_rgb8(rgb.data, rgb.encoding)
                    except codecs.DecodeError:
                        base = None
                img = render.overlay(mask, self._lut, base, v["output.overlay_alpha"], self.spec.ignore_index)
                self.pub_overlay.publish(codecs.fill_image(Image(), img, "rgb8", header))
            if self.pub_conf.get_subscription_count() > 0:
                enc = v["output.confidence_encoding"]
                c = render.resize_nearest(render.confidence_image(conf, enc), size)
                self.pub_conf.publish(codecs.fill_image(Image(), c, enc, header))
            now = self._now()
            t = time.monotonic()
            lat = now - frame.stamp
            if lat >= 0:
                self._latency.add(t, lat)
            self._published.add(t)
            self._frames_published += 1
            self._last_present = self.spec.subset_name([bool(p) for p in present[0]])
            self._last_anchor = frame.anchor

        def _assemble(self, frame: Any) -> tuple[np.ndarray, np.ndarray]:
            """Synchronised decoded messages -> model input; a modality whose conversion fails is absent."""
            t0 = time.perf_counter()
            x, present, failed = self._frontend.assemble_with_reasons(frame.items, self._pool)
            self._convert_ms.add(time.monotonic(), (time.perf_counter() - t0) * 1e3)
            for m in self.modalities:
                if failed.get(m, "") != self._conversion_failed[m] and failed.get(m):
                    self.get_logger().warning(f"{m}: cannot convert to {self._representation[m]}: {failed[m]}")
                self._conversion_failed[m] = failed.get(m, "")
            return x, present

        # ---- diagnostics ----------------------------------------------------------------------------------
        def sensor_reports(self) -> list[diag.SensorReport]:
            now = self._now()
            t = time.monotonic()
            stats = self.sync.stats(now)
            out = []
            for m in self.modalities:
                s = stats[m]
                state = {"alive": "ok"}.get(s.state, s.state)
                reason = s.reason
                if state == "ok" and self._conversion_failed[m]:
                    why = self._conversion_failed[m]
                    state, reason = ("waiting" if "camera_info" in why else "malformed"), why
                if s.state in ("never_seen", "stale") and m in self._qos_mismatch:
                    reason = (f"{reason}; a publisher offers incompatible QoS ({self._qos_mismatch[m]}): check "
                              f"qos.reliability (now {self.values['qos.reliability']})")
                if s.state == "malformed" and self._malformed_reason[m]:
                    reason = f"{reason}: {self._malformed_reason[m]}"
                delay = self._transport.median_delay(self._topics[m])
                out.append(diag.SensorReport(
                    modality=m, topic=self._topics[m], state=state, reason=reason,
                    rate_hz=self._arrivals[m].rate(t), age_s=s.age, received=s.received, malformed=s.malformed,
                    anchor=m == self._last_anchor and state == "ok",
                    transport_delay_ms=None if delay is None else delay * 1e3))
            return out

        def inference_report(self) -> diag.InferenceReport:
            t = time.monotonic()
            lat = self._latency.percentiles(t)
            inf = self._infer_ms.percentiles(t)
            conv = self._convert_ms.percentiles(t)
            wait = self._wait_ms.percentiles(t)
            w = self._worker
            return diag.InferenceReport(
                backend=self.backend.name, device=self.backend.device, model=os.path.basename(
                    self.values["model_path"]), input_size=tuple(self.backend.input_size),
                latency_p50_ms=None if lat is None else lat[0] * 1e3, latency_p95_ms=None if lat is None else
                lat[1] * 1e3, infer_p50_ms=None if inf is None else inf[0], infer_p95_ms=None if inf is None else
                inf[1], rate_hz=self._published.rate(t), frames_synced=self._frames_synced,
                frames_published=self._frames_published, dropped_frames=self.sync.dropped_total + w.dropped,
                pending=w.pending, errors=w.errors, last_error=w.last_error, modalities_present=self._last_present,
                anchor=self._last_anchor, worker_alive=w.alive,
                extra={"convert_p50_ms": None if conv is None else conv[0],
                       "queue_wait_p50_ms": None if wait is None else wait[0],
                       "dropped_in_sync": self.sync.dropped_total, "dropped_before_inference": w.dropped,
                       "sync_resets": self.sync.resets, "camera_info": self._camera_info is not None,
                       "camera_info_malformed": self._camera_malformed})

        def _publish_diagnostics(self) -> None:
            name = self.get_fully_qualified_name()
            statuses = [diag.sensor_status(name, r) for r in self.sensor_reports()]
            statuses.append(diag.inference_status(name, self.inference_report()))
            self.pub_diag.publish(diag.to_msg(statuses, self.get_clock().now().to_msg()))

        def _check_transport(self) -> None:
            t = time.monotonic()
            stats = self.sync.stats()
            for m in self.modalities:
                topic = self._topics[m]
                warn = self._transport.check_silent(topic, self.count_publishers(topic),
                                                    stats[m].received + stats[m].malformed, t)
                if warn:
                    self.get_logger().warning(warn)

        def destroy_node(self) -> None:
            worker = getattr(self, "_worker", None)  # absent when __init__ failed (bad configuration)
            if worker is not None:
                worker.stop()
            if getattr(self, "_pool", None) is not None:
                self._pool.shutdown(wait=False)
            super().destroy_node()

    return PerceptionNode


def main(argv: list[str] | None = None) -> int:
    """Console script ``perception_node``: ROS arguments only (``--ros-args -p model_path:=... --params-file ...``)."""
    args = sys.argv if argv is None else argv
    if any(a in ("-h", "--help") for a in args[1:]) and "--ros-args" not in args:
        print(__doc__)
        print("Parameters (set with -p name:=value or --params-file; see config/perception.yaml):")
        for p in PARAMS:
            print(f"  {p.name} [{p.kind}, default {p.default!r}{', dynamic' if p.dynamic else ''}]: {p.doc}")
        print("  inputs.<modality>.{topic,type,extrinsic}: per model modality (declared once the model is loaded)")
        return 0
    import rclpy  # here, not at module import: ``--help`` and the unit tests stay light
    from rclpy.executors import ExternalShutdownException

    from equiseg_ros.inference.backend import BackendError

    rclpy.init(args=args)
    node = None
    try:
        node = build_node_class()()
    except (ParamError, BackendError) as exc:
        errs = exc.errors if isinstance(exc, ParamError) else [str(exc)]
        import logging

        logging.basicConfig(format="[perception_node] %(message)s")
        for e in errs:
            logging.getLogger("perception_node").error(f"configuration error: {e}")
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
