"""The perception node: run the model on whatever sensors are alive; publish masks, overlays and diagnostics.

    perception_node --ros-args -p model_path:=model.onnx --params-file config/perception.yaml
    perception_node --managed --ros-args -p model_path:=model.onnx ...     (lifecycle node; see below)

Flow (DESIGN.md): each sensor callback decodes its message (``codecs``; a malformed one is dropped, counted and
reported, never fatal), checks health (frozen content), and pushes the decoded array into the anchor/failover
``Synchronizer`` (``pipeline.FramePipeline.receive``: the path the offline bag evaluation runs too); every
synchronised frame goes to :class:`~equiseg_ros.ros.worker.InferenceWorker`, which runs the backend on the newest
frame only, off the executor thread. The worker converts the frame to the model input with the
shared ``sensors`` front end (the same code that prepared the training data), infers, and publishes what has
subscribers: ``~/mask`` (mono8 ids, 255 = unlabeled), ``~/overlay`` (rgb8), ``~/confidence``. ``~/label_info``
(transient local) carries classes and palette as JSON; ``/diagnostics`` one status per sensor and one for inference.

Stages (one implementation, two front doors - DESIGN.md "Node lifecycle"):

* *configure*: validate the parameters, load the model (``load_backend``: TensorRT, ONNX Runtime or PyTorch,
  whichever runs here; a TensorRT engine may be built, with progress lines on /rosout and /diagnostics); its spec
  decides the inputs (one topic per modality plus CameraInfo).
* *activate*: outputs, subscriptions and the poll timer; *deactivate*: stop inference and publishing, keep the
  model; *cleanup*: release the model.

The plain node (default) configures in a background thread right after start (the executor keeps answering and
publishing diagnostics, a shutdown cancels an engine build) and activates itself when the model is loaded. The
managed node (``--managed``, launch argument ``managed:=true``) is an ``rclpy.lifecycle`` node driven through
``/<node>/change_state``; a failed transition goes through ErrorProcessing back to *unconfigured* with the reason
on /rosout and /diagnostics, so a corrected parameter and a new *configure* recover it.

Idle cost: nothing polls while no sensor is alive. Callbacks poll the synchroniser themselves; a 10 ms timer (for
the anchor's bounded ``sync.wait`` and the failover when the anchor dies) runs only while some modality is alive,
i.e. only while a frame can still be emitted without a new message.
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
POLL_PERIOD = 0.01  # s: the poll timer while a frame may still be emitted without a new message
SHUTDOWN_WAIT = 3.0  # s: longest wait for the inference thread / a cancelled engine build at shutdown


@dataclass
class _Frame:
    """What the worker gets: the synchronised frame and when it was handed over."""

    synced: Any  # sync.SyncedFrame
    handed: float


_CLASSES: dict[bool, type] = {}


def build_node_class(managed: bool = False) -> type:
    """The node class (plain ``Node`` or ``rclpy.lifecycle.LifecycleNode``), created lazily so importing this
    module does not import rclpy. Both share :class:`PerceptionCore` below: the lifecycle variant only maps its
    transitions onto the core's configure / activate / deactivate / cleanup."""
    if managed not in _CLASSES:
        _CLASSES[managed] = _build(managed)
    return _CLASSES[managed]


def _build(managed: bool) -> type:
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
    from rclpy.clock import Clock, ClockType
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.exceptions import ParameterUninitializedException
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
    from std_msgs.msg import String

    from equiseg_ros.ros import codecs
    from equiseg_ros.ros._loader import BackgroundLoad, LoadCancelled, load_model
    from equiseg_ros.ros.pipeline import FramePipeline, time_can_emit
    from equiseg_ros.ros.worker import InferenceWorker

    msg_types = {"image": Image, "compressed": CompressedImage, "pointcloud2": PointCloud2}
    ros_types = {"bool": Parameter.Type.BOOL, "int": Parameter.Type.INTEGER, "float": Parameter.Type.DOUBLE,
                 "str": Parameter.Type.STRING, "str[]": Parameter.Type.STRING_ARRAY,
                 "float[]": Parameter.Type.DOUBLE_ARRAY}

    class PerceptionCore:
        """Everything the node does, whichever class drives it. Stages: :meth:`_load` (any thread),
        :meth:`_configure_with` / :meth:`_activate` / :meth:`_deactivate` / :meth:`_cleanup` (executor thread)."""

        managed = False

        def _setup(self) -> None:
            """Construction common to both classes: parameters declared, diagnostics running, nothing loaded."""
            self._lock = threading.Lock()
            self._declaring = False
            self._out_lock = threading.Lock()  # publishing vs destroying the output publishers
            self._defs: dict[str, ParamDef] = {}
            self._cancel = threading.Event()  # set on shutdown: a running engine build stops (keeps timing cache)
            self._stopping = False
            self._active = False
            self._state = "unconfigured"  # diagnostics.NODE_STATES while not active
            self._state_msg = ""
            self._progress = ""
            self._last_progress_diag = 0.0
            self.backend: Any = None
            self.spec: Any = None
            self.modalities: list[str] = []
            self._worker: Any = None
            self._pool: Any = None
            self._subs: list[Any] = []
            self._io_timers: list[Any] = []
            self._poll_timer: Any = None
            self._pubs: list[Any] = []
            self.pub_mask = self.pub_overlay = self.pub_conf = self.pub_label = None
            self._raw = self._declare(PARAMS)
            self.values: dict[str, Any] = {}
            self._steady = Clock(clock_type=ClockType.STEADY_TIME)  # timers run when sim time pauses or jumps
            from diagnostic_msgs.msg import DiagnosticArray

            self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            period = self._raw.get("diagnostics.period")
            ok = check_value(self._defs["diagnostics.period"], period) is None
            self.create_timer(float(period) if ok else 1.0, self._publish_diagnostics, clock=self._steady)
            self.add_on_set_parameters_callback(self._on_set_parameters)

        # ---- parameters ----------------------------------------------------------------------------------
        def _declare(self, defs: tuple[ParamDef, ...]) -> dict[str, Any]:
            """Declare ``defs`` (once) and return their current raw values; validation is :meth:`_validate`'s.

            Plain node: structural parameters are read-only (restart to change). Managed node: they may change
            while unconfigured (configure reads them), which :meth:`_on_set_parameters` enforces."""
            raw = {}
            self._declaring = True  # declare_parameter runs the set-parameters callback: nothing to refuse here
            try:
                self._declare_each(defs, raw)
            finally:
                self._declaring = False
            return raw

        def _declare_each(self, defs: tuple[ParamDef, ...], raw: dict[str, Any]) -> None:
            for p in defs:
                self._defs[p.name] = p
                if not self.has_parameter(p.name):
                    ro = not p.dynamic and not self.managed
                    note = ("" if p.dynamic else "read-only while running: restart to change" if not self.managed
                            else "changes only while unconfigured (cleanup first)")
                    desc = ParameterDescriptor(description=p.doc, read_only=ro, dynamic_typing=p.kind == "float",
                                               additional_constraints=note)
                    if p.kind in ("str[]", "float[]") and not p.default:
                        self.declare_parameter(p.name, ros_types[p.kind], desc)
                    else:
                        self.declare_parameter(p.name, p.default, desc)
                try:
                    raw[p.name] = self.get_parameter(p.name).value
                except ParameterUninitializedException:  # a typed array parameter nobody has set: empty
                    raw[p.name] = None

        def _validate(self) -> dict[str, Any]:
            """The current values of the global parameters, checked (ParamError names every bad one)."""
            return check_all(self._declare(PARAMS), PARAMS, [])

        def _on_set_parameters(self, params: list[Any]) -> Any:
            """Validate a change with the start-up rules; apply it only if every parameter in it is acceptable."""
            if getattr(self, "_declaring", False):
                return SetParametersResult(successful=True, reason="")
            errors: list[str] = []
            new = dict(self.values) if self.values else {}
            configured = self.backend is not None or self._state == "loading"
            for prm in params:
                p = self._defs.get(prm.name)
                if p is None:
                    continue  # use_sim_time, qos overrides...: rclpy's own
                if not p.dynamic and (configured or not self.managed):
                    errors.append(f"{p.name}: read-only while running (restart the node to change it)"
                                  if not self.managed else
                                  f"{p.name}: read-only while configured (cleanup, change it, configure again)")
                    continue
                msg = check_value(p, prm.value)
                if msg:
                    errors.append(msg)
                else:
                    new[p.name] = coerce(p, prm.value)
            if not errors and self.values:
                errors += cross_checks(new, self.modalities)
            if errors:
                reason = "rejected: " + "; ".join(errors)
                self.get_logger().warning(f"parameter change {reason}")
                return SetParametersResult(successful=False, reason=reason)
            if not self.values:
                return SetParametersResult(successful=True, reason="")  # unconfigured: configure reads them
            with self._lock:
                self.values = new
                if self.backend is not None:
                    self.sync.slop = new["sync.slop"]
                    self.sync.max_age = new["sync.max_age"]
                    self.sync.wait = new["sync.wait"]
                    for w in (self._latency, self._infer_ms, self._convert_ms, self._wait_ms, self._published):
                        w.window = new["diagnostics.window"]
                    self._transport.late_threshold = new["transport.late_threshold"]
                    self._transport.silent_timeout = new["transport.silent_timeout"]
            return SetParametersResult(successful=True, reason="")

        # ---- configure ------------------------------------------------------------------------------------
        def _say_progress(self, line: str) -> None:
            """A loading / engine-build progress line (any thread): /rosout now, /diagnostics at most twice a
            second (publishing is thread-safe and needs no executor, so it works while configure blocks it)."""
            self._progress = line
            self.get_logger().info(f"model: {line}")
            t = time.monotonic()
            if t - self._last_progress_diag >= 0.5:
                self._last_progress_diag = t
                self._publish_diagnostics()

        def _begin_load(self) -> dict[str, Any]:
            """Validated parameters for a load; the node says what it is loading."""
            self.values = self._validate()
            self._set_state("loading", f"loading {self.values['model_path']} (backends "
                                       f"{self.values['backend.prefer']}, engine precision "
                                       f"{self.values['engine.precision']})")
            self._cancel.clear()
            self._progress = ""
            self._publish_diagnostics()  # "loading" now, even if the load blocks the executor (managed configure)
            return self.values

        def _load(self) -> Any:
            """Load and warm up the model (the slow part; blocks the calling thread)."""
            return load_model(self.values, on_progress=self._say_progress, cancel=self._cancel)

        def _configure_with(self, backend: Any, load_s: float) -> None:
            """The model is loaded: its spec decides the per-modality parameters and the pipeline."""
            self.backend = backend
            self.spec = backend.spec
            self.modalities = list(self.spec.modality_names)
            self.values.update(check_all(self._declare(modality_params(self.modalities)),
                                         modality_params(self.modalities), self.modalities))
            errors = cross_checks(self.values, self.modalities)  # e.g. sync.priority names vs the model's modalities
            if errors:
                raise ParamError(errors)
            self.get_logger().info(
                f"model {self.values['model_path']}: {backend.name} on {backend.device}, spec "
                f"{self.spec.name!r}, modalities {self.modalities}, {self.spec.num_classes} classes, input "
                f"{backend.input_size[0]}x{backend.input_size[1]} (loaded in {load_s:.1f} s)")
            self._lut = self.spec.palette_array()
            self._rgb_modality = next((m.name for m in self.spec.modalities if m.representation == "rgb8"), None)
            self._init_state()
            self._worker = InferenceWorker(self._process, on_error=lambda m: self.get_logger().error(m)).start()
            self._set_state("inactive", "model loaded, not subscribed")

        def _set_state(self, state: str, message: str = "") -> None:
            self._state, self._state_msg = state, message
            if message and state != "inactive":
                self.get_logger().info(f"{state}: {message}")

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
            self._waits_over_period = 0  # frames that waited longer than their anchor sensor's period
            self._converted_early = 0  # modality messages converted on arrival (convert.on_arrival)
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
            self._last_push_steady = 0.0
            self._topics: dict[str, str] = {}
            self._qos_mismatch: dict[str, str] = {}
            self._sim_time = bool(self.get_parameter("use_sim_time").value)

        def _resolve(self, topic: str) -> str:
            return self.resolve_topic_name(topic)

        # ---- activate / deactivate / cleanup ------------------------------------------------------------------
        def _activate(self) -> None:
            """Outputs, then inputs and timers: from here sensor messages flow to the outputs."""
            self._init_outputs()
            self._init_inputs()
            # the poll timer exists from now on but runs only while a frame can still be emitted (see _arm_poll)
            self._poll_timer = self.create_timer(POLL_PERIOD, self._on_poll_timer, clock=self._steady)
            self._poll_timer.cancel()
            self._io_timers = [self._poll_timer,
                               self.create_timer(1.0, self._check_transport, clock=self._steady)]
            self._active = True
            self._set_state("active")
            self.get_logger().info(
                "subscribed to " + ", ".join(f"{m}: {self._topics[m]} ({self.values[f'inputs.{m}.type']})"
                                             for m in self.modalities)
                + f", camera info: {self._resolve(self.values['camera_info_topic'])}; QoS "
                f"{self.values['qos.reliability']} depth {self.values['qos.depth']}; Fast DDS profile: "
                f"{profile_in_use() or 'defaults'}")

        def _deactivate(self, timeout: float = SHUTDOWN_WAIT) -> None:
            """No more input, no inference, no output; the model and the pipeline stay."""
            self._active = False
            for sub in self._subs:
                self.destroy_subscription(sub)
            for timer in self._io_timers:
                self.destroy_timer(timer)
            self._subs, self._io_timers, self._poll_timer = [], [], None
            if self._worker is not None and not self._worker.drain(timeout):
                self.get_logger().warning(f"deactivate: the running inference did not end within {timeout} s")
            with self._out_lock:
                for pub in self._pubs:
                    self.destroy_publisher(pub)
                self._pubs = []
                self.pub_mask = self.pub_overlay = self.pub_conf = self.pub_label = None
            if self.backend is not None and not self._stopping:
                self._set_state("inactive", "model loaded, not subscribed")

        def _cleanup(self, timeout: float = SHUTDOWN_WAIT) -> None:
            """Release the model, the worker and the conversion threads (back to unconfigured)."""
            if self._active or self._subs or self._pubs:
                self._deactivate(timeout)
            worker, self._worker = self._worker, None
            if worker is not None and not worker.stop(timeout):
                self.get_logger().warning(f"the inference thread did not stop within {timeout} s")
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            backend, self.backend = self.backend, None
            if backend is not None:
                try:
                    backend.close()
                except Exception as exc:  # noqa: BLE001 - releasing must not fail the transition
                    self.get_logger().warning(f"closing the backend: {type(exc).__name__}: {exc}")
            self.spec, self.modalities = None, []
            if not self._stopping:
                self._set_state("unconfigured", "model released")

        def request_stop(self) -> None:
            """Any thread: from now on nothing new starts, and a running model load / engine build is cancelled."""
            self._stopping = True
            self._cancel.set()

        def shutdown_node(self, hurry: bool = False) -> None:
            """Bounded teardown (main thread, after the executor stopped): cancel a build, stop inference."""
            self._stopping = True
            self._state, self._state_msg = "shutting_down", ""
            self._cancel.set()
            timeout = 0.5 if hurry else SHUTDOWN_WAIT
            loader = getattr(self, "_loader", None)
            if loader is not None:  # plain node stopped while loading: the build saw the cancel event
                if not loader.join(timeout):
                    self.get_logger().warning(f"model loading did not stop within {timeout} s; exiting anyway")
                elif self.backend is None:
                    if isinstance(loader.error, LoadCancelled):
                        self.get_logger().info(f"model loading cancelled: {loader.error}")
                    loader.discard()
            self._cleanup(timeout)

        def _init_outputs(self) -> None:
            out_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
            self.pub_mask = self.create_publisher(Image, "~/mask", out_qos)
            self.pub_overlay = self.create_publisher(Image, "~/overlay", out_qos)
            self.pub_conf = self.create_publisher(Image, "~/confidence", out_qos)
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.pub_label = self.create_publisher(String, "~/label_info", latched)
            self._pubs = [self.pub_mask, self.pub_overlay, self.pub_conf, self.pub_label]
            info = {"classes": list(self.spec.classes), "palette": [list(c) for c in self.spec.palette],
                    "ignore_index": self.spec.ignore_index, "unlabeled": 255, "spec": self.spec.name,
                    "modalities": self.modalities, "mask_encoding": "mono8", "model": self.values["model_path"],
                    "backend": self.backend.name}
            self.pub_label.publish(String(data=json.dumps(info)))

        def _init_inputs(self) -> None:
            rel = (ReliabilityPolicy.BEST_EFFORT if self.values["qos.reliability"] == "best_effort"
                   else ReliabilityPolicy.RELIABLE)
            qos = QoSProfile(depth=self.values["qos.depth"], reliability=rel, history=HistoryPolicy.KEEP_LAST)
            self._subs = []
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
            if not why:  # buffered: a frame may now be emitted later without a new message
                self._last_push_steady = time.monotonic()
                self._arm_poll()
                self._convert_early(m, rec.decoded, rec.stamp)
            self._poll()

        def _convert_early(self, m: str, dec: Any, stamp: float) -> None:
            """Start the conversion of a buffered message to its representation now, if the inference thread is
            idle (it would otherwise compete with a running inference; with the newest-frame policy, frames that
            arrive while inference runs may be dropped anyway). ``_assemble`` uses the result when the frame is
            inferred: the sensor front end passes an image already in its representation through unchanged."""
            w = self._worker
            if not self.values["convert.on_arrival"] or w is None or w.busy or w.pending or self._pool is None:
                return
            dec.prepared = self._pool.submit(self._frontend.represent, m, dec.data, dec.encoding, stamp)

        def _arm_poll(self) -> None:
            """Start the poll timer (if stopped): a modality is alive, so time alone may now complete a frame."""
            timer = self._poll_timer
            if timer is not None and timer.is_canceled():
                timer.reset()

        def _keep_polling(self) -> bool:
            """Whether the poll timer must keep running. A frame needs an alive anchor (a good message within
            ``sync.max_age``), so once no modality is alive no poll can emit anything until a new message arrives
            - whose callback polls and re-arms the timer. Polls stopped this way would all have returned None: the
            frames emitted are those of a timer that never stops. With sim time, the clock may pause: stop also
            after 4 x (max_age + wait) of real time without a new message."""
            if not time_can_emit(self.sync):
                return False
            if self._sim_time:
                horizon = 4.0 * (self.values["sync.max_age"] + self.values["sync.wait"])
                return time.monotonic() - self._last_push_steady < horizon
            return True

        def _on_poll_timer(self) -> None:
            if not self._active:
                return
            self._poll()
            if not self._keep_polling() and self._poll_timer is not None:
                self._poll_timer.cancel()

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
            waited = time.monotonic() - item.handed  # behind a running inference
            self._wait_ms.add(time.monotonic(), waited * 1e3)
            rate = self.sync.stats()[frame.anchor].rate_hz
            if rate and waited > 1.0 / rate:  # newest-frame policy: should not happen (a newer frame replaces it)
                self._waits_over_period += 1
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
            with self._out_lock:  # deactivate destroys the publishers under this lock
                if not self._active:
                    return
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
            items = dict(frame.items)
            early = 0
            for m, item in items.items():
                fut = getattr(item, "prepared", None)
                if fut is None:
                    continue
                try:
                    items[m] = (fut.result(), "rgb8")  # uint8 [H, W, 3] at the input size: passed through as is
                    early += 1
                except Exception:  # noqa: BLE001 - converted again below, which reports the reason
                    pass
            self._converted_early += early
            x, present, failed = self._frontend.assemble_with_reasons(items, self._pool)
            self._convert_ms.add(time.monotonic(), (time.perf_counter() - t0) * 1e3)
            for m in self.modalities:
                if failed.get(m, "") != self._conversion_failed[m] and failed.get(m):
                    self.get_logger().warning(f"{m}: cannot convert to {self._representation[m]}: {failed[m]}")
                self._conversion_failed[m] = failed.get(m, "")
            return x, present

        # ---- diagnostics ----------------------------------------------------------------------------------

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
                       "queue_wait_p95_ms": None if wait is None else wait[1],
                       "waits_over_sensor_period": self._waits_over_period,
                       "converted_on_arrival": self._converted_early,
                       "dropped_in_sync": self.sync.dropped_total, "dropped_before_inference": w.dropped,
                       "sync_resets": self.sync.resets, "camera_info": self._camera_info is not None,
                       "camera_info_malformed": self._camera_malformed})

        def _publish_diagnostics(self) -> None:
            """One status per sensor and one for inference while active; otherwise the node's state (loading with
            the last progress line, inactive, unconfigured, error with its message). Any thread."""
            name = self.get_fully_qualified_name()
            try:
                if self._active and self.backend is not None:
                    statuses = [diag.sensor_status(name, r) for r in self.sensor_reports()]
                    statuses.append(diag.inference_status(name, self.inference_report()))
                else:
                    backend = self.backend.name if self.backend is not None else ""
                    model = self.values.get("model_path") or self._raw.get("model_path", "")
                    statuses = [diag.node_state_status(name, self._state, self._state_msg, str(model),
                                                       self._progress, backend)]
                self.pub_diag.publish(diag.to_msg(statuses, self.get_clock().now().to_msg()))
            except Exception:  # during teardown the publisher or the context may be gone
                if not self._stopping:
                    raise

        def _check_transport(self) -> None:
            t = time.monotonic()
            stats = self.sync.stats()
            for m in self.modalities:
                topic = self._topics[m]
                warn = self._transport.check_silent(topic, self.count_publishers(topic),
                                                    stats[m].received + stats[m].malformed, t)
                if warn:
                    self.get_logger().warning(warn)


    class PerceptionNode(PerceptionCore, Node):
        """The plain node: configures itself in a background thread at start and activates when the model is
        loaded. Raises ParamError from __init__ on bad global parameters; a failed load calls ``on_fatal``."""

        managed = False

        def __init__(self, on_fatal: Any = None, **kwargs: Any) -> None:
            Node.__init__(self, kwargs.pop("node_name", NODE_NAME), **kwargs)
            self._setup()
            self.fatal: BaseException | None = None
            self._on_fatal = on_fatal or (lambda: None)
            self._begin_load()
            self._t_load = time.perf_counter()
            # the load thread ends by triggering this guard condition: configure/activate run on the executor
            self._loaded_gc = self.create_guard_condition(self._on_loaded)
            self._loader = BackgroundLoad(self.values, on_progress=self._say_progress,
                                          done=self._loaded_gc.trigger, cancel=self._cancel).start()

        def _on_loaded(self) -> None:
            loader = self._loader
            if self._stopping or loader is None or not loader.finished.is_set() or self.backend is not None:
                return
            err = loader.error
            if err is None:
                try:
                    self._configure_with(loader.backend, time.perf_counter() - self._t_load)
                    self._activate()
                    return
                except Exception as exc:  # noqa: BLE001 - ParamError (spec vs parameters) or rclpy errors
                    err = exc
                    loader.discard()
                    self.backend = None
            self.fatal = err
            self._set_state("error", _error_text(err))
            self._on_fatal()

    class ManagedPerceptionNode(PerceptionCore, LifecycleNode):
        """The lifecycle node: configure loads (and may build) the model, activate subscribes and publishes,
        deactivate pauses, cleanup releases. A failure is logged, shown in /diagnostics and returns ERROR:
        ErrorProcessing tidies up and goes back to unconfigured, so a fixed parameter and configure recover."""

        managed = True

        def __init__(self, **kwargs: Any) -> None:
            LifecycleNode.__init__(self, kwargs.pop("node_name", NODE_NAME), **kwargs)
            self._setup()
            self.fatal = None
            self._set_state("unconfigured", f"waiting for configure ({self.get_fully_qualified_name()}"
                                            "/change_state)")

        def _fail(self, stage: str, exc: BaseException) -> Any:
            text = _error_text(exc)
            if self._stopping and isinstance(exc, LoadCancelled):
                self.get_logger().info(f"{stage} cancelled by shutdown: {text}")
            else:
                self.get_logger().error(f"{stage} failed: {text}")
            self._error = f"{stage} failed: {text}"
            return TransitionCallbackReturn.ERROR

        def on_configure(self, state: Any) -> Any:
            try:
                self._begin_load()
                t0 = time.perf_counter()
                backend = self._load()
                try:
                    self._configure_with(backend, time.perf_counter() - t0)
                except BaseException:
                    backend.close()
                    self.backend = None
                    raise
            except Exception as exc:  # noqa: BLE001 - any failure is a transition error with its message
                return self._fail("configure", exc)
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state: Any) -> Any:
            try:
                self._activate()
            except Exception as exc:  # noqa: BLE001
                return self._fail("activate", exc)
            return TransitionCallbackReturn.SUCCESS

        def on_deactivate(self, state: Any) -> Any:
            self._deactivate()
            return TransitionCallbackReturn.SUCCESS

        def on_cleanup(self, state: Any) -> Any:
            self._cleanup()
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state: Any) -> Any:
            self._cleanup()
            return TransitionCallbackReturn.SUCCESS

        def on_error(self, state: Any) -> Any:
            """ErrorProcessing: release whatever the failed transition left, then back to unconfigured."""
            self._cleanup()
            if not self._stopping:  # (a build cancelled by shutdown is no error to fix)
                msg = getattr(self, "_error", "") or "transition failed"
                self._set_state("error", f"{msg}; unconfigured again: fix the parameter and configure")
            return TransitionCallbackReturn.SUCCESS

    return ManagedPerceptionNode if managed else PerceptionNode


def _error_text(exc: BaseException) -> str:
    """One line per problem: a ParamError's list, otherwise the exception's message (type for bare ones)."""
    if isinstance(exc, ParamError):
        return "; ".join(exc.errors)
    text = str(exc)
    return text if text else type(exc).__name__


def _print_help() -> None:
    print(__doc__)
    print("Options before --ros-args:\n  --managed   run the lifecycle (managed) variant: configure/activate through "
          "/<node>/change_state\n")
    print("Parameters (set with -p name:=value or --params-file; see config/perception.yaml):")
    for p in PARAMS:
        print(f"  {p.name} [{p.kind}, default {p.default!r}{', dynamic' if p.dynamic else ''}]: {p.doc}")
    print("  inputs.<modality>.{topic,type,extrinsic}: per model modality (declared once the model is loaded)")


def main(argv: list[str] | None = None) -> int:
    """Console script ``perception_node`` [``--managed``] ``--ros-args -p model_path:=... --params-file ...``.

    Exit codes: 0 after SIGINT/SIGTERM (any number of them), 2 on a configuration or model-loading error, 1 if the
    executor died."""
    args = list(sys.argv if argv is None else argv)
    own = args[1:args.index("--ros-args")] if "--ros-args" in args else args[1:]
    if any(a in ("-h", "--help") for a in own):
        _print_help()
        return 0
    managed = "--managed" in own
    if managed:
        args.remove("--managed")
    from equiseg_ros.ros._runtime import Waker, spin_in_thread

    waker = Waker().install()  # first: a signal during start-up already takes the bounded path
    import logging

    import rclpy  # here, not at module import: ``--help`` and the unit tests stay light
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    logging.basicConfig(format="[perception_node] %(message)s")
    log = logging.getLogger("perception_node")
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node: Any = None
    code = 0
    try:
        cls = build_node_class(managed)
        try:
            node = cls() if managed else cls(on_fatal=lambda: waker.wake("fatal"))
        except ParamError as exc:
            for e in exc.errors:
                log.error(f"configuration error: {e}")
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        crashed: list[BaseException] = []

        def on_crash(exc: BaseException) -> None:
            crashed.append(exc)
            waker.wake("executor")

        spin = spin_in_thread(executor, on_crash)
        waker.wait()  # a signal, a failed model load (plain node) or a dead executor
        if node.fatal is not None:
            for e in _error_text(node.fatal).split("; "):
                log.error(f"configuration error: {e}")
            code = 2
        elif crashed and not waker.signals:
            node.get_logger().error(f"executor died: {type(crashed[0]).__name__}: {crashed[0]}")
            code = 1
        else:
            node.get_logger().info(f"shutting down ({waker.names()})")
        node.request_stop()  # an engine build stops now (and keeps its timing cache)
        executor.shutdown(timeout_sec=0)  # wakes the spin thread, which returns after its current callback
        spin.join(0.5 if waker.hurry else SHUTDOWN_WAIT)
        node.shutdown_node(hurry=waker.hurry)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
        waker.ignore_from_now()  # interpreter finalisation resets Python handlers to the default: a late signal
        # would kill the exiting process (-2); ignored ones are left alone
    return code


def main_managed(argv: list[str] | None = None) -> int:
    """``perception_node --managed``: the lifecycle variant."""
    args = list(sys.argv if argv is None else argv)
    return main(args[:1] + ["--managed"] + args[1:])


if __name__ == "__main__":
    sys.exit(main())
