"""Multi-process harness for the perception node tests and benchmark: a tiny exported model, and a driver process.

The driver (``python test/ros_helpers.py drive SCENARIO.json RESULT.json``) is a separate ROS process that
streams synthetic sensor data (camera rgb8, metric depth 32FC1, PNG-compressed event frames, a LiDAR PointCloud2,
CameraInfo) phase by phase as the scenario says (drop, freeze, malformed messages of every kind, out-of-order or
shifted stamps, /clock with jumps, parameter changes), and records everything the node publishes (mask, overlay,
confidence, label_info, /diagnostics) with receive times. The test process then judges the JSON result. Nothing is
mocked: two real processes talk over Fast DDS on their own ROS_DOMAIN_ID, discovery limited to localhost.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NODE_EXE = ROOT / ".venv" / "bin" / "perception_node"
PARAMS_FILE = ROOT / "config" / "perception.yaml"
SHM_PROFILE = ROOT / "config" / "fastdds_shm.xml"
CAMERA_HW = (72, 96)  # camera images differ from the model size on purpose: the node must resize
NODE = "/perception_node"


# ---- environment ------------------------------------------------------------------------------------------
def ros_env(domain_id: int, shm: bool = False) -> dict[str, str]:
    """Environment of one test's processes: its own domain, localhost discovery, optional SHM profile."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               RCUTILS_LOGGING_BUFFERED_STREAM="0", PYTHONUNBUFFERED="1")
    env.pop("ROS_LOCALHOST_ONLY", None)
    if shm:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(SHM_PROFILE)
    else:
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    return env


# ---- a tiny model following the model contract, exported with the project's exporter ------------------------
def tiny_model(num_modalities: int, num_classes: int, seed: int = 0):
    """A few-thousand-parameter net with the contract ``forward(x [B,M,3,H,W], present [B,M]) -> logits [B,K,H/4,W/4]``.

    Presence-aware (absent modalities are left out of the mean), so which sensors are alive changes the output.
    """
    import torch
    from torch import nn

    class TinySeg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Conv2d(3, 8, 3, stride=4, padding=1)
            self.head = nn.Conv2d(8, num_classes, 1)

        def forward(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
            b, m, c, h, w = x.shape
            f = torch.relu(self.enc(x.reshape(b * m, c, h, w)))
            f = f.reshape(b, m, 8, f.shape[-2], f.shape[-1])
            p = present.to(f.dtype).reshape(b, m, 1, 1, 1)
            f = (f * p).sum(1) / p.sum(1).clamp(min=1.0)
            return self.head(f)

    torch.manual_seed(seed)
    return TinySeg().eval()


def export_tiny(out: Path, size: int = 64, spec_name: str = "synthetic") -> Path:
    """Export the tiny model for the synthetic spec (rgb, depth, event, lidar) at ``size``² with training/export.py."""
    sys.path.insert(0, str(ROOT))
    from equiseg_ros.spec import get_preset
    from training.export import export_onnx

    spec = get_preset(spec_name)
    export_onnx(tiny_model(spec.num_modalities, spec.num_classes), spec, out, size=(size, size))
    return out


# ---- synthetic sensor content -----------------------------------------------------------------------------
class Scene:
    """Deterministic, always-changing sensor content (so no health check fires unless a test wants it to)."""

    def __init__(self, hw: tuple[int, int] = CAMERA_HW, points: int = 1500, seed: int = 1) -> None:
        self.h, self.w = hw
        self.rng = np.random.default_rng(seed)
        self.points = points
        yy, xx = np.mgrid[0:self.h, 0:self.w].astype(np.float32)
        self.xx, self.yy = xx, yy

    def rgb(self, k: int) -> np.ndarray:
        r = (self.xx * 2 + k * 7) % 200 + 30
        g = (self.yy * 3 + k * 3) % 180 + 40
        b = ((self.xx + self.yy) + k * 5) % 160 + 50
        return np.stack([r, g, b], axis=2).astype(np.uint8)

    def depth(self, k: int) -> np.ndarray:
        return (2.0 + self.yy / self.h * 30.0 + (self.xx + k) % 7 * 0.5).astype(np.float32)

    def event_png(self, k: int) -> bytes:
        import cv2

        img = np.zeros((self.h, self.w, 3), np.uint8)
        idx = self.rng.integers(0, self.h * self.w, 200)
        img.reshape(-1, 3)[idx, k % 2] = 1 + k % 5
        ok, buf = cv2.imencode(".png", img[:, :, ::-1])
        return buf.tobytes()

    def cloud(self, k: int) -> np.ndarray:
        n = self.points
        pts = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
        pts["x"] = self.rng.uniform(-10, 10, n)
        pts["y"] = self.rng.uniform(-2, 2, n)
        pts["z"] = self.rng.uniform(2, 40, n)  # camera optical frame (give the node the identity extrinsic)
        pts["intensity"] = self.rng.uniform(0, 1, n)
        return pts


# ---- the driver process -----------------------------------------------------------------------------------
MALFORMED_IMAGE = ("unknown_encoding", "short_step", "truncated_data", "zero_size")
MALFORMED_COMPRESSED = ("garbage_bytes", "empty")
MALFORMED_CLOUD = ("missing_field", "truncated_data")


def _drive(scenario: dict[str, Any], out_path: str) -> None:
    import rclpy
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.msg import Parameter as ParamMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
    from std_msgs.msg import String

    from equiseg_ros.ros import codecs

    rclpy.init()
    node = rclpy.create_node("equiseg_test_driver")
    node_name = scenario.get("node", NODE)
    rate = float(scenario.get("rate", 15.0))
    sim = bool(scenario.get("sim_time", False))
    scene = Scene(tuple(scenario.get("camera_hw", CAMERA_HW)), points=int(scenario.get("points", 1500)),
                  seed=scenario.get("seed", 1))
    sensor_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT
                            if scenario.get("sensor_reliability", "best_effort") == "best_effort"
                            else ReliabilityPolicy.RELIABLE)
    pubs = {"rgb": node.create_publisher(Image, "/rgb/image", sensor_qos),
            "depth": node.create_publisher(Image, "/depth/image", sensor_qos),
            "event": node.create_publisher(Image if scenario.get("event_raw") else CompressedImage, "/event/image",
                                           sensor_qos),
            "lidar": node.create_publisher(PointCloud2, "/lidar/points", sensor_qos)}
    pub_info = node.create_publisher(CameraInfo, "/camera_info", sensor_qos)
    pub_clock = node.create_publisher(Clock, "/clock", 10) if sim else None
    record: dict[str, Any] = {"masks": [], "overlays": [], "confidences": [], "diagnostics": [], "label_info": None,
                              "param_results": [], "phases": [], "published": {}}
    phase_name = ["startup"]
    now = time.time

    def on_mask(msg: Any, key: str) -> None:
        arr = codecs.image_to_numpy(msg, key)
        entry = {"recv": now(), "stamp": codecs.stamp_to_sec(msg.header), "phase": phase_name[0],
                 "hw": list(arr.shape[:2]), "encoding": msg.encoding, "frame_id": msg.header.frame_id}
        if key == "masks" and scenario.get("mask_ids", True):
            entry["ids"] = sorted(int(v) for v in np.unique(arr))
        record[key].append(entry)

    out_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    subs = [node.create_subscription(Image, f"{node_name}/mask", lambda m: on_mask(m, "masks"), out_qos)]
    if scenario.get("record_all_outputs", True):
        subs += [node.create_subscription(Image, f"{node_name}/overlay", lambda m: on_mask(m, "overlays"), out_qos),
                 node.create_subscription(Image, f"{node_name}/confidence", lambda m: on_mask(m, "confidences"),
                                          out_qos)]
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    subs.append(node.create_subscription(String, f"{node_name}/label_info",
                                         lambda m: record.__setitem__("label_info", json.loads(m.data)), latched))

    def on_diag(msg: Any) -> None:
        from equiseg_ros.ros.diagnostics import from_msg

        record["diagnostics"].append({"recv": now(), "phase": phase_name[0],
                                      "stamp": codecs.stamp_to_sec(msg.header), "status": from_msg(msg)})

    subs.append(node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10))
    param_client = node.create_client(SetParameters, f"{node_name}/set_parameters")

    sim_base = 1000.0
    offset = [0.0]
    t_start = now()

    def ros_time(t: float) -> float:
        return (sim_base + (t - t_start) if sim else t) + offset[0]

    def to_time(sec: float) -> Any:
        ns = int(round(sec * 1e9))
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    # wait for the node: label_info (transient local) + every sensor topic subscribed
    deadline = now() + float(scenario.get("startup_timeout", 40.0))
    while now() < deadline:
        if pub_clock is not None:
            pub_clock.publish(Clock(clock=to_time(ros_time(now()))))
        rclpy.spin_once(node, timeout_sec=0.05)
        if record["label_info"] is not None and all(p.get_subscription_count() > 0 for p in pubs.values()) \
                and pub_info.get_subscription_count() > 0:
            break
    record["startup_s"] = now() - t_start
    if record["label_info"] is None:
        record["error"] = "node did not come up (no label_info)"
    counts = dict.fromkeys(list(pubs) + ["camera_info"], 0)
    k = 0

    event_raw = bool(scenario.get("event_raw", False))
    pregen = int(scenario.get("pregen", 0))
    cache: dict[tuple[str, int], Any] = {}

    def make(m: str, kk: int, frozen: bool) -> Any:
        """A fresh sensor message of modality ``m`` (content index ``kk``); cached when ``pregen`` is set."""
        key = (m, kk % pregen if pregen else kk)
        if pregen and key in cache and not frozen:
            return cache[key]
        if m == "rgb":
            msg = codecs.fill_image(Image(), scene.rgb(kk), "rgb8")
        elif m == "depth":
            msg = codecs.fill_image(Image(), scene.depth(kk), "32FC1")
        elif m == "event" and event_raw:
            msg = codecs.fill_image(Image(), scene.rgb(kk + 17)[:, :, ::-1].copy(), "rgb8")
        elif m == "event":
            msg = CompressedImage(format="png", data=_frozen_png(scene) if frozen else scene.event_png(kk))
        else:
            cloud = _frozen_cloud(scene) if frozen else scene.cloud(kk)
            msg = codecs.fill_pointcloud2(PointCloud2(), cloud, PointField)
        if pregen and not frozen:
            cache[key] = msg
        return msg

    if pregen:
        for kk in range(pregen):
            for m in pubs:
                make(m, kk, False)

    def publish_frame(ph: dict[str, Any], k: int, j: int) -> None:
        drop = set(ph.get("drop", []))
        freeze = set(ph.get("freeze", []))
        bad = set(ph.get("malformed", []))
        bad_now = bad and j % 2 == 0  # every other frame malformed, the rest good: masks keep coming
        shuffle = set(ph.get("shuffle", []))
        msgs = {}
        for m in pubs:
            if m in drop:
                continue
            msg = make(m, 0 if m in freeze else k, m in freeze)
            if m in bad and bad_now:
                msg = _copy_msg(msg)
                _break(m, msg, (j // 2))
            msgs[m] = msg
        stamp = ros_time(now())  # stamped like a driver: at capture, right before publishing
        for m, msg in msgs.items():
            st = stamp
            if m in shuffle:  # swap pairs of stamps: ..., t1, t0, t3, t2, ...
                st = stamp + (1.0 / rate if j % 2 == 0 else -1.0 / rate)
            msg.header.stamp = to_time(st)
            msg.header.frame_id = "lidar" if m == "lidar" else "camera"
            pubs[m].publish(msg)
            counts[m] += 1
        info = CameraInfo(height=scene.h, width=scene.w)
        info.k = [80.0, 0.0, scene.w / 2, 0.0, 80.0, scene.h / 2, 0.0, 0.0, 1.0]
        info.p = [80.0, 0.0, scene.w / 2, 0.0, 0.0, 80.0, scene.h / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
        if "camera_info" in bad and bad_now:
            info.k = [0.0] * 9
        info.header.stamp = to_time(stamp)
        info.header.frame_id = "camera"
        pub_info.publish(info)
        counts["camera_info"] += 1

    for ph in scenario["phases"]:
        phase_name[0] = ph["name"]
        t_phase = now()
        record["phases"].append({"name": ph["name"], "start": t_phase, "offset_before": offset[0]})
        if "offset" in ph:
            offset[0] += float(ph["offset"])
        for change in ph.get("set_params", []):
            req = SetParameters.Request()
            for name, value in change.items():
                pv = ParameterValue()
                if isinstance(value, bool):
                    pv.type, pv.bool_value = ParameterType.PARAMETER_BOOL, value
                elif isinstance(value, int):
                    pv.type, pv.integer_value = ParameterType.PARAMETER_INTEGER, value
                elif isinstance(value, float):
                    pv.type, pv.double_value = ParameterType.PARAMETER_DOUBLE, value
                else:
                    pv.type, pv.string_value = ParameterType.PARAMETER_STRING, str(value)
                req.parameters.append(ParamMsg(name=name, value=pv))
            param_client.wait_for_service(timeout_sec=10.0)
            fut = param_client.call_async(req)
            rclpy.spin_until_future_complete(node, fut, timeout_sec=10.0)
            res = fut.result()
            record["param_results"].append({"request": change, "results": [
                {"successful": r.successful, "reason": r.reason} for r in (res.results if res else [])]})
        j = 0
        next_t = now()
        while now() - t_phase < float(ph.get("duration", 1.0)):
            t = now()
            if pub_clock is not None:
                pub_clock.publish(Clock(clock=to_time(ros_time(t))))
            if t >= next_t:
                publish_frame(ph, k, j)
                k += 1
                j += 1
                next_t += 1.0 / rate
            rclpy.spin_once(node, timeout_sec=max(0.0, min(0.01, next_t - now())))
        record["phases"][-1]["end"] = now()
    # collect what is still in flight
    t_end = now() + float(scenario.get("tail", 0.5))
    phase_name[0] = "tail"
    while now() < t_end:
        rclpy.spin_once(node, timeout_sec=0.02)
    record["published"] = counts
    Path(out_path).write_text(json.dumps(record))
    node.destroy_node()
    rclpy.try_shutdown()


_FROZEN: dict[str, Any] = {}


def _copy_msg(msg: Any) -> Any:
    """A copy of an rclpy message (cached messages must stay intact when one copy is broken)."""
    from rclpy.serialization import deserialize_message, serialize_message

    return deserialize_message(serialize_message(msg), type(msg))


def _frozen_png(scene: Scene) -> bytes:
    if "png" not in _FROZEN:
        _FROZEN["png"] = scene.event_png(12345)
    return _FROZEN["png"]


def _frozen_cloud(scene: Scene) -> np.ndarray:
    if "cloud" not in _FROZEN:
        _FROZEN["cloud"] = scene.cloud(0)
    return _FROZEN["cloud"]


def _break(modality: str, msg: Any, i: int) -> str:
    """Make ``msg`` malformed (still valid CDR) in the i-th way for its type; returns the kind used."""
    if modality == "event":
        kind = MALFORMED_COMPRESSED[i % len(MALFORMED_COMPRESSED)]
        msg.data = b"\x89PNG not really" * 3 if kind == "garbage_bytes" else b""
        return kind
    if modality == "lidar":
        kind = MALFORMED_CLOUD[i % len(MALFORMED_CLOUD)]
        if kind == "missing_field":
            msg.fields = [f for f in msg.fields if f.name != "z"]
        else:
            msg.data = bytes(msg.data)[: len(msg.data) // 2 + 3]
        return kind
    kind = MALFORMED_IMAGE[i % len(MALFORMED_IMAGE)]
    if kind == "unknown_encoding":
        msg.encoding = "rgb9000"
    elif kind == "short_step":
        msg.step = msg.step // 2
    elif kind == "truncated_data":
        msg.data = bytes(msg.data)[: len(msg.data) - 17]
    else:
        msg.height, msg.width, msg.step, msg.data = 0, 0, 0, b""
    return kind


# ---- the lifecycle driver ---------------------------------------------------------------------------------------
TRANSITIONS = {"configure": 1, "cleanup": 2, "activate": 3, "deactivate": 4, "shutdown": 6}


class LifecycleClient:
    """Drives a managed node from another participant through its lifecycle services (what ``ros2 lifecycle set``
    and lifecycle managers do): ``<node>/change_state``, ``<node>/get_state``."""

    def __init__(self, node: Any, target: str) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState

        self.node, self.target = node, target
        self._change = node.create_client(ChangeState, f"{target}/change_state")
        self._get = node.create_client(GetState, f"{target}/get_state")
        self._types = (ChangeState, GetState)

    def wait(self, timeout: float = 60.0) -> bool:
        return self._change.wait_for_service(timeout_sec=timeout) and self._get.wait_for_service(timeout_sec=timeout)

    def _call(self, client: Any, req: Any, timeout: float) -> Any:
        import rclpy

        fut = client.call_async(req)
        rclpy.spin_until_future_complete(self.node, fut, timeout_sec=timeout)
        if not fut.done():
            raise TimeoutError(f"{client.srv_name}: no answer within {timeout} s")
        return fut.result()

    def change(self, transition: str, timeout: float = 60.0) -> bool:
        req = self._types[0].Request()
        req.transition.id = TRANSITIONS[transition]
        return bool(self._call(self._change, req, timeout).success)

    def state(self, timeout: float = 30.0) -> str:
        return str(self._call(self._get, self._types[1].Request(), timeout).current_state.label)


def lifecycle_cli(target: str, transitions: list[str]) -> int:
    """``ros_helpers.py lifecycle NODE configure activate ...``: 0 when every transition succeeded."""
    import rclpy

    rclpy.init()
    node = rclpy.create_node("equiseg_lifecycle_cli")
    try:
        client = LifecycleClient(node, target)
        if not client.wait():
            print(f"{target}: lifecycle services not found", file=sys.stderr)
            return 1
        for t in transitions:
            ok = client.change(t)
            print(f"{t}: {'ok' if ok else 'FAILED'} -> {client.state()}")
            if not ok:
                return 1
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _lifecycle_drive(scenario: dict[str, Any], out_path: str) -> None:
    """Steps: {"do": transition} | {"set": {param: value}} | {"stream": seconds} | {"idle": seconds}. Sensors
    (rgb8, metric depth 32FC1, event rgb8, LiDAR as an 8-bit image, CameraInfo) are published during "stream";
    masks, transition events and /diagnostics are recorded with the index of the step they arrived in."""
    import rclpy
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import TransitionEvent
    from rcl_interfaces.msg import Parameter as ParamMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from equiseg_ros.ros import codecs
    from equiseg_ros.ros.diagnostics import from_msg

    rclpy.init()
    node = rclpy.create_node("equiseg_lifecycle_driver")
    target = scenario.get("node", NODE)
    rate = float(scenario.get("rate", 10.0))
    scene = Scene()
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    pubs = {m: node.create_publisher(Image, f"/{m}/image", qos) for m in ("rgb", "depth", "event", "lidar")}
    pub_info = node.create_publisher(CameraInfo, "/camera_info", qos)
    record: dict[str, Any] = {"steps": [], "masks": [], "events": [], "diagnostics": [], "error": ""}
    step = [-1]
    out_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, f"{target}/mask", lambda m: record["masks"].append(
        {"step": step[0], "t": time.time(), "stamp": codecs.stamp_to_sec(m.header)}), out_qos)
    node.create_subscription(TransitionEvent, f"{target}/transition_event", lambda e: record["events"].append(
        {"step": step[0], "start": e.start_state.label, "goal": e.goal_state.label}), 10)

    def on_diag(msg: Any) -> None:
        for st in from_msg(msg):
            if st["name"].endswith(": inference"):
                record["diagnostics"].append({"step": step[0], "message": st["message"], "values": st["values"]})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    client = LifecycleClient(node, target)
    params = node.create_client(SetParameters, f"{target}/set_parameters")

    def spin_for(seconds: float, publish: bool) -> None:
        end, k, next_t = time.time() + seconds, 0, time.time()
        while time.time() < end:
            if publish and time.time() >= next_t:
                ns = time.time_ns()
                stamp = Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
                msgs = {"rgb": codecs.fill_image(Image(), scene.rgb(k), "rgb8"),
                        "depth": codecs.fill_image(Image(), scene.depth(k), "32FC1"),
                        "event": codecs.fill_image(Image(), scene.rgb(k + 17)[:, :, ::-1].copy(), "rgb8"),
                        "lidar": codecs.fill_image(Image(), scene.rgb(k + 5)[:, :, ::-1].copy(), "rgb8")}
                for m, msg in msgs.items():
                    msg.header.stamp, msg.header.frame_id = stamp, "camera"
                    pubs[m].publish(msg)
                info = CameraInfo(height=scene.h, width=scene.w)
                info.k = [80.0, 0.0, scene.w / 2, 0.0, 80.0, scene.h / 2, 0.0, 0.0, 1.0]
                info.header.stamp, info.header.frame_id = stamp, "camera"
                pub_info.publish(info)
                k += 1
                next_t += 1.0 / rate
            rclpy.spin_once(node, timeout_sec=0.01)

    try:
        if not client.wait(float(scenario.get("startup_timeout", 60.0))):
            raise RuntimeError(f"{target}: lifecycle services did not appear")
        record["initial_state"] = client.state()
        for i, st in enumerate(scenario["steps"]):
            step[0] = i
            entry: dict[str, Any] = {"step": st, "t": time.time()}
            if "do" in st:
                entry["success"] = client.change(st["do"], timeout=float(scenario.get("transition_timeout", 90)))
                entry["state"] = client.state()
            elif "set" in st:
                req = SetParameters.Request()
                for name, value in st["set"].items():
                    pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(value))
                    req.parameters.append(ParamMsg(name=name, value=pv))
                params.wait_for_service(timeout_sec=10.0)
                fut = params.call_async(req)
                rclpy.spin_until_future_complete(node, fut, timeout_sec=10.0)
                entry["results"] = [{"successful": r.successful, "reason": r.reason} for r in fut.result().results]
            else:
                spin_for(float(st.get("stream", st.get("idle", 0.0))), "stream" in st)
            entry["end"] = time.time()
            record["steps"].append(entry)
        spin_for(0.3, False)
    except Exception as exc:  # noqa: BLE001 - reported to the test with the record so far
        record["error"] = f"{type(exc).__name__}: {exc}"
    Path(out_path).write_text(json.dumps(record))
    node.destroy_node()
    rclpy.try_shutdown()


def _probe(target: str, seconds: float, out_path: str) -> None:
    """Record the node's inference status on /diagnostics for ``seconds`` and ask it for ``model_path`` through its
    parameter service: proves the node answers while it loads (the executor is not blocked)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.srv import GetParameters

    from equiseg_ros.ros.diagnostics import from_msg

    rclpy.init()
    node = rclpy.create_node("equiseg_probe")
    record: dict[str, Any] = {"diagnostics": [], "model_path": None}

    def on_diag(msg: Any) -> None:
        record["diagnostics"] += [{"message": st["message"], "values": st["values"]} for st in from_msg(msg)
                                  if st["name"].endswith(": inference")]

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    client = node.create_client(GetParameters, f"{target}/get_parameters")
    end = time.time() + seconds
    if client.wait_for_service(timeout_sec=seconds):
        fut = client.call_async(GetParameters.Request(names=["model_path"]))
        rclpy.spin_until_future_complete(node, fut, timeout_sec=max(1.0, end - time.time()))
        if fut.done() and fut.result() is not None:
            record["model_path"] = fut.result().values[0].string_value
    while time.time() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    Path(out_path).write_text(json.dumps(record))
    node.destroy_node()
    rclpy.try_shutdown()


# ---- process helpers used by the tests and the benchmark ----------------------------------------------------
def node_command(model: Path, *overrides: str, params_file: Path | None = PARAMS_FILE,
                 managed: bool = False) -> list[str]:
    """``perception_node [--managed] --ros-args --params-file config/perception.yaml -p model_path:=... -p k:=v``."""
    cmd = [str(NODE_EXE)] + (["--managed"] if managed else []) + ["--ros-args"]
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    cmd += ["-p", f"model_path:={model}"]
    for o in overrides:
        cmd += ["-p", o]
    return cmd


def rss_mb(pid: int) -> float:
    """Resident memory of a process (MB) from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "drive":
        _drive(json.loads(Path(argv[1]).read_text()), argv[2])
        return 0
    if len(argv) == 3 and argv[0] == "lifecycle-drive":
        _lifecycle_drive(json.loads(Path(argv[1]).read_text()), argv[2])
        return 0
    if len(argv) == 4 and argv[0] == "probe":
        _probe(argv[1], float(argv[2]), argv[3])
        return 0
    if len(argv) >= 3 and argv[0] == "lifecycle":
        return lifecycle_cli(argv[1], argv[2:])
    if len(argv) >= 2 and argv[0] == "export":
        export_tiny(Path(argv[1]), int(argv[2]) if len(argv) > 2 else 64)
        return 0
    print("usage: ros_helpers.py drive SCENARIO.json RESULT.json | lifecycle-drive SCENARIO.json RESULT.json | "
          "lifecycle NODE TRANSITION... | probe NODE SECONDS OUT.json | export OUT.onnx [SIZE]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
