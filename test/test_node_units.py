"""The node's pure parts without DDS: parameter schema and YAML, rendering, newest-frame worker, diagnostics,
transport warnings and the conversion of decoded messages to the model input."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from equiseg_ros.ros import diagnostics as diag
from equiseg_ros.ros import overlay
from equiseg_ros.ros._stats import Window
from equiseg_ros.ros._transport import TransportWatch
from equiseg_ros.ros.params import (
    PARAMS,
    ParamError,
    check_all,
    check_value,
    flatten,
    modality_params,
)
from equiseg_ros.ros.worker import InferenceWorker, LatestSlot
from equiseg_ros.sensors.frontend import SensorFrontend, health_kind
from equiseg_ros.sensors.geometry import CameraModel
from equiseg_ros.spec import synthetic_spec

ROOT = Path(__file__).resolve().parents[1]
MODS = ["rgb", "depth", "event", "lidar"]


# ---- parameters ----------------------------------------------------------------------------------------------
def _yaml_values() -> dict:
    data = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    return flatten(data["/**"]["ros__parameters"])


def test_params_yaml_documents_exactly_the_schema_and_validates():
    values = _yaml_values()
    defs = PARAMS + modality_params(MODS)
    assert set(values) == {p.name for p in defs}
    text = (ROOT / "config" / "perception.yaml").read_text()
    for p in PARAMS:  # every leaf has a comment line right above it or above its block
        leaf = p.name.split(".")[-1]
        assert f"{leaf}:" in text
    with pytest.raises(ParamError, match="model_path: is required"):
        check_all(values, defs, MODS)
    ok = check_all({**values, "model_path": "m.onnx"}, defs, MODS)
    assert ok["sync.priority"] == [] and ok["inputs.lidar.extrinsic"] == []
    for p in PARAMS:  # the YAML's values are the schema defaults (one source of truth)
        if p.name != "model_path":
            assert ok[p.name] == p.default, p.name


@pytest.mark.parametrize("name,value,fragment", [
    ("output.overlay_alpha", 1.5, "output.overlay_alpha: must be in [0, 1], got 1.5"),
    ("output.overlay_alpha", "half", "output.overlay_alpha: expected float, got str"),
    ("qos.reliability", "maybe", "qos.reliability: must be one of ['best_effort', 'reliable'], got 'maybe'"),
    ("qos.depth", 0, "qos.depth: must be in [1, 100], got 0"),
    ("sync.slop", 0.0, "sync.slop: must be in (0, 1], got 0.0"),
    ("backend.prefer", ["cuda"], "backend.prefer: unknown backend(s) ['cuda']"),
    ("camera_info_topic", "a b", "camera_info_topic: topic names cannot contain spaces"),
])
def test_params_reject_with_clear_messages(name, value, fragment):
    p = next(p for p in PARAMS if p.name == name)
    msg = check_value(p, value)
    assert msg is not None and fragment in msg
    assert check_value(p, p.default) is None or name == "model_path"


def test_params_cross_checks_and_modality_params():
    base = {p.name: p.default for p in PARAMS} | {"model_path": "m.onnx"}
    with pytest.raises(ParamError, match="sync.slop: must be smaller than sync.max_age"):
        check_all(base | {"sync.slop": 0.5, "sync.max_age": 0.4}, PARAMS)
    with pytest.raises(ParamError, match=r"sync.priority: \['radar'\] not in the model's modalities"):
        check_all(base | {"sync.priority": ["radar"]}, PARAMS, MODS)
    assert check_all(base | {"sync.slop": 1, "sync.max_age": 2}, PARAMS)["sync.slop"] == 1.0  # int -> float
    defs = modality_params(["lidar"])
    ext = next(p for p in defs if p.name.endswith("extrinsic"))
    assert check_value(ext, [0, 0, 0, 0, 0, 0, 1]) is None  # tx ty tz qx qy qz qw
    assert "last row" in check_value(ext, [1.0] * 16)
    typ = next(p for p in defs if p.name.endswith("type"))
    assert "must be one of" in check_value(typ, "laserscan")


# ---- rendering ---------------------------------------------------------------------------------------------
def test_mask_resize_keeps_ids_and_overlay_blends():
    spec = synthetic_spec()
    lut = spec.palette_array()
    labels = np.zeros((8, 8), np.uint8)
    labels[:, 4:] = 6
    labels[0, 0] = 255
    big = overlay.resize_nearest(labels, (24, 32))
    assert big.shape == (24, 32) and set(np.unique(big)) == {0, 6, 255}
    image = np.full((16, 16, 3), 100, np.uint8)
    out = overlay.overlay(labels, lut, image, 0.5)
    expect = (0.5 * np.asarray(spec.palette[6]) + 50).round()
    assert np.abs(out[4, 6].astype(float) - expect).max() <= 1
    assert (out[0, 0] == 100).all()  # unlabeled pixels show the image
    assert (overlay.overlay(labels, lut, image, 0.0)[4, 6] == 100).all()
    assert (overlay.overlay(labels, lut, None, 1.0)[4, 6] == spec.palette[6]).all()
    conf = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert overlay.confidence_image(conf, "mono8").tolist() == [[0, 128, 255]]
    assert overlay.confidence_image(conf, "32FC1").dtype == np.float32


# ---- newest-frame worker -------------------------------------------------------------------------------------
def test_latest_slot_keeps_only_the_newest():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False and slot.put(2) is True and slot.put(3) is True
    assert slot.take(0.01) == 3 and slot.take(0.01) is None and slot.replaced == 2


def test_worker_runs_newest_frame_off_thread_with_bounded_lag():
    done: list[tuple[int, float, str]] = []

    def slow(item: tuple[int, float]) -> None:
        time.sleep(0.05)
        done.append((item[0], time.monotonic() - item[1], threading.current_thread().name))

    w = InferenceWorker(slow).start()
    for i in range(40):  # 200 Hz producer, 20 Hz consumer
        w.submit((i, time.monotonic()))
        time.sleep(0.005)
    time.sleep(0.15)
    w.stop()
    assert done[-1][0] == 39, "the newest frame is always processed"
    assert w.processed + w.dropped == 40 and w.dropped >= 25
    assert max(lag for _, lag, _ in done) < 0.2  # <= one running + one waiting frame
    assert all(name == "equiseg-inference" for *_, name in done)


def test_worker_survives_errors():
    errors: list[str] = []

    def bad(item: int) -> None:
        if item == 1:
            raise ValueError("boom")

    w = InferenceWorker(bad, on_error=errors.append).start()
    for i in range(3):
        w.submit(i)
        time.sleep(0.05)
    w.stop()
    assert w.errors == 1 and "ValueError: boom" in w.last_error and errors and w.processed == 2


# ---- diagnostics and stats --------------------------------------------------------------------------------
def test_diagnostics_round_trip_and_levels():
    s = diag.sensor_status("/n", diag.SensorReport("depth", "/depth/image", "stale", "last message 0.8 s ago",
                                                   rate_hz=0.0, age_s=0.8, received=10))
    assert s["level"] == diag.WARN and s["message"].startswith("stale: last message")
    i = diag.inference_status("/n", diag.InferenceReport("onnxruntime", "cpu", "m.onnx", (64, 64), 12.0, 20.0,
                                                         rate_hz=9.5, dropped_frames=3, modalities_present="RDL"))
    assert i["level"] == diag.OK and i["values"]["latency_p95_ms"] == "20"
    from builtin_interfaces.msg import Time

    back = diag.from_msg(diag.to_msg([s, i], Time(sec=5)))
    assert back == [s, i]


def test_window_rate_and_percentiles():
    w = Window(1.0)
    for k in range(11):
        w.add(10.0 + k * 0.1, k)
    assert w.rate(11.0) == pytest.approx(10.0, rel=0.05)
    p50, p95 = w.percentiles(11.0)
    assert p50 == pytest.approx(5.0) and p95 > 9
    w.add(3.0)  # time went backwards: history dropped
    assert w.count(3.0) == 1


def test_transport_watch_warns_once():
    tw = TransportWatch(large_bytes=1000, late_threshold=0.05, silent_timeout=2.0, samples=3)
    assert tw.observe("/a", 10, 1.0) is None  # small frames are not watched
    msgs = [tw.observe("/a", 5000, 0.2) for _ in range(5)]
    assert sum(m is not None for m in msgs) == 1 and "fastdds_shm.xml" in next(m for m in msgs if m)
    assert tw.check_silent("/b", 1, 0, 0.0) is None
    warn = tw.check_silent("/b", 1, 0, 2.5)
    assert warn and "best-effort" in warn and tw.check_silent("/b", 1, 0, 5.0) is None


# ---- decoded messages -> model input (the node's SensorFrontend) ------------------------------------------------
def _item(kind, data, encoding):
    return SimpleNamespace(kind=kind, data=data, encoding=encoding)


def test_node_assembles_every_input_kind_like_the_training_data():
    from concurrent.futures import ThreadPoolExecutor

    from equiseg_ros.data.transforms import resize_modality
    from equiseg_ros.sensors.depth import depth_to_image
    from equiseg_ros.sensors.lidar import lidar_to_image

    spec = synthetic_spec()
    cam = CameraModel.pinhole(40.0, 40.0, 24.0, 18.0, 48, 36)
    rgb = np.random.default_rng(0).integers(0, 255, (36, 48, 3), dtype=np.uint8)
    depth = np.full((36, 48), 5.0, np.float32)
    depth[:, :8] = 12.0
    ev = np.zeros((36, 48, 3), np.uint8)
    ev[10, 10] = (3, 0, 0)
    pts = np.zeros(2000, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    pts["x"] = np.linspace(-3, 3, 2000)
    pts["z"] = np.linspace(2, 30, 2000)
    items = {"rgb": _item("image", rgb, "rgb8"), "depth": _item("image", depth, "32FC1"),
             "event": _item("compressed", ev, "rgb8"), "lidar": _item("pointcloud2", pts, "pointcloud2")}
    fe = SensorFrontend(spec, extrinsics={"lidar": np.eye(4)}, size=(32, 32))
    fe.set_camera(cam)  # as the node does when CameraInfo arrives
    x, present, failed = fe.assemble_with_reasons(items)
    assert x.shape == (1, 4, 3, 32, 32) and present.all() and not failed
    np.testing.assert_allclose(x[0, 0], spec.normalize("rgb", resize_modality(rgb, "rgb8", 32, 32)), atol=1e-5)
    hha = resize_modality(depth_to_image(depth, "hha", cam), "hha", 32, 32)  # HHA at native size, then resize
    np.testing.assert_allclose(x[0, 1], spec.normalize("depth", hha), atol=1e-5)
    pts4 = np.stack([pts["x"], pts["y"], pts["z"], pts["intensity"]], axis=1)
    lid = resize_modality(lidar_to_image(pts4, np.eye(4), cam, encoding="lidar_image", dilation=2), "lidar_image",
                          32, 32)  # the training LiDAR dilation (2)
    np.testing.assert_allclose(x[0, 3], spec.normalize("lidar", lid), atol=1e-5)
    # the node's concurrent conversion gives the very same input
    with ThreadPoolExecutor(4) as pool:
        xp, presentp, failedp = fe.assemble_with_reasons(items, pool)
    assert (xp == x).all() and (presentp == present).all() and failedp == failed
    # convert.on_arrival: representations computed per message beforehand pass through assemble unchanged, alone
    # or mixed with raw payloads (the node converts early only while inference is idle)
    pre = {m: (fe.represent(m, it.data, it.encoding, None), "rgb8") for m, it in items.items()}
    for mixed in (pre, {**items, "rgb": pre["rgb"], "lidar": pre["lidar"]}):
        xe, presente, failede = fe.assemble_with_reasons(mixed)
        assert (xe == x).all() and (presente == present).all() and failede == failed
    # without CameraInfo a point cloud cannot be projected: absent with a reason, the rest still present
    fe.set_camera(None)
    x2, present2, failed2 = fe.assemble_with_reasons({**items, "event": None})
    assert present2.tolist() == [[True, True, False, False]] and "camera_info" in failed2["lidar"]
    assert not x2[0, 2].any() and not x2[0, 3].any()  # absent = zero-filled
    # no extrinsic parameter: no silent identity any more, absent with a reason naming the extrinsic
    fe2 = SensorFrontend(spec, camera=cam, size=(32, 32))
    with ThreadPoolExecutor(2) as pool:
        _, present3, failed3 = fe2.assemble_with_reasons(items, pool)
    assert present3.tolist() == [[True, True, True, False]] and "extrinsic" in failed3["lidar"]


def test_health_kind_routing():
    assert health_kind("rgb8", np.zeros((2, 2, 3), np.uint8)) == "image"
    assert health_kind("hha", np.zeros((2, 2), np.float32)) == "depth"
    assert health_kind("hha", np.zeros((2, 2, 3), np.uint8)) == "other"
    assert health_kind("lidar_image", np.zeros(2, [("x", "<f4")])) == "pointcloud"
    assert health_kind("event_frame", np.zeros(2, [("x", "<f4")])) == "events"
    assert health_kind("event_frame", np.zeros((2, 2, 3), np.uint8)) == "events"


def test_events_as_pointcloud_become_the_training_event_frame():
    from equiseg_ros.sensors.events import events_to_frame

    spec = synthetic_spec()
    cam = CameraModel.pinhole(40.0, 40.0, 32.0, 32.0, 64, 64)
    ev = np.zeros(5, dtype=[("x", "<f8"), ("y", "<f8"), ("t", "<f8"), ("polarity", "<f8")])
    ev["x"], ev["y"] = [10, 10, 11, 40, 63], [20, 20, 21, 5, 63]
    ev["t"] = [0.99, 0.995, 0.999, 1.0, 0.5]  # the last one is outside the accumulation window
    ev["polarity"] = [1, 1, 0, 1, 1]
    fe = SensorFrontend(spec, camera=cam, size=(64, 64))
    img = fe.represent("event", ev, "pointcloud2", stamp=1.0)
    window = fe.options["event"].event_window
    want = events_to_frame(ev["x"], ev["y"], ev["t"], ev["polarity"], 64, 64, t_end=1.0, window_s=window)
    assert (img == want).all() and img[20, 10, 0] == 2 and img[21, 11, 1] == 1 and img[63, 63].sum() == 0


# ---- FramePipeline: the node's message path without DDS ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    from ros_helpers import export_tiny

    return export_tiny(tmp_path_factory.mktemp("pipeline") / "tiny32.onnx", 32)


def _header(sec: float):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    ns = int(round(sec * 1e9))
    return Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id="camera")


def test_event_pointcloud_goes_through_the_pipeline(tiny_onnx: Path):
    """Raw events (x, y, t, polarity: no z) are an event_frame input, not a malformed cloud missing z."""
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

    from equiseg_ros.inference.backend import load_backend
    from equiseg_ros.ros import codecs
    from equiseg_ros.ros.pipeline import FramePipeline

    pipe = FramePipeline(load_backend(str(tiny_onnx), prefer=["onnxruntime"]), {
        "inputs.event.type": "pointcloud2", "inputs.event.topic": "event/events", "health.enabled": False})
    h, w = 36, 48
    pipe.on_camera_info(CameraInfo(height=h, width=w, k=[40.0, 0, 24, 0, 40.0, 18, 0, 0, 1]))
    assert pipe.camera is not None
    stamp = 100.0
    rng = np.random.default_rng(0)
    ev = np.zeros(400, dtype=[("x", "<f4"), ("y", "<f4"), ("t", "<f8"), ("polarity", "u1")])
    ev["x"], ev["y"] = rng.integers(0, w, 400), rng.integers(0, h, 400)
    ev["t"] = stamp - rng.uniform(0, 0.02, 400)  # inside the accumulation window before the stamp
    ev["polarity"] = rng.integers(0, 2, 400)
    cloud = codecs.fill_pointcloud2(PointCloud2(), ev, PointField, _header(stamp))
    rgb = codecs.fill_image(Image(), rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "rgb8", _header(stamp))
    assert pipe.on_sensor("event", cloud, now=stamp) is None  # buffered, not "malformed: missing field(s) ['z']"
    assert pipe.on_sensor("rgb", rgb, now=stamp) is None
    assert pipe.malformed["event"] == 0
    frame = None
    for k in range(100):  # the node's poll timer: the anchor waits sync.wait for the modalities still in flight
        frame = frame or pipe.poll(stamp + 0.01 * k)
    assert frame is not None and "event" in frame.items
    x, present = pipe.assemble(frame)
    ie = pipe.modalities.index("event")
    assert present[0, ie] and pipe.conversion_failed["event"] == 0
    ev_img = pipe.frontend.represent("event", ev, "pointcloud2", stamp)
    assert ev_img.any()  # the events are counted, not an empty frame
    np.testing.assert_allclose(x[0, ie], pipe.spec.normalize("event", ev_img), atol=1e-5)
    # a cloud without time/polarity is malformed for an event modality, with the reason naming the field
    bad = np.zeros(10, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    why = pipe.on_sensor("event", codecs.fill_pointcloud2(PointCloud2(), bad, PointField, _header(stamp + 0.1)),
                         now=stamp + 0.1)
    assert why is not None and why.startswith("malformed") and "time" in why and pipe.malformed["event"] == 1


def test_pipeline_synchronises_like_the_node(tiny_onnx: Path):
    """Same Synchronizer set-up as the node: a partial priority list is completed in spec order, sync.wait is used."""
    from equiseg_ros.inference.backend import load_backend
    from equiseg_ros.ros.pipeline import FramePipeline

    pipe = FramePipeline(load_backend(str(tiny_onnx), prefer=["onnxruntime"]),
                         {"sync.priority": ["lidar"], "sync.wait": 0.2})
    rest = [m for m in pipe.modalities if m != "lidar"]
    assert pipe.sync.priority == ("lidar", *rest) and pipe.sync.wait == 0.2


# ---- model loading (issue 18.10) and deactivate (issue 13.6) -------------------------------------------------------
ENGINE_VALUES = {"backend.threads": 2, "engine.precision": "fp16", "engine.cache_dir": "/cache",
                 "engine.build_on_start": False}


def test_backend_options_only_what_a_backend_declares():
    from equiseg_ros.ros._loader import backend_options

    cancel = threading.Event()
    everything = frozenset({"intra_op_threads", "precision", "cache_dir", "build_on_start", "on_progress", "cancel"})
    opts, notes = backend_options(ENGINE_VALUES, on_progress=print, cancel=cancel, declared=everything)
    assert opts == {"intra_op_threads": 2, "precision": "fp16", "cache_dir": "/cache", "build_on_start": False,
                    "on_progress": print, "cancel": cancel} and not notes
    # an older inference package: nothing undeclared is passed (load_backend would raise TypeError), and a
    # non-default engine parameter that cannot be honoured is named
    opts, notes = backend_options(ENGINE_VALUES, on_progress=print, cancel=cancel,
                                  declared=frozenset({"intra_op_threads", "precision"}))
    assert opts == {"intra_op_threads": 2, "precision": "fp16"}
    assert len(notes) == 2 and any("engine.cache_dir" in n for n in notes) and any(
        "engine.build_on_start" in n for n in notes)
    # defaults need no note; "" cache_dir = the backend's default, not passed
    opts, notes = backend_options({"backend.threads": 0, "engine.precision": "fp32", "engine.cache_dir": "",
                                   "engine.build_on_start": True}, declared=frozenset())
    assert opts == {} and notes == []


def test_backend_options_accepted_by_the_installed_load_backend(tiny_onnx: Path):
    """What the node passes must never make load_backend raise TypeError, whatever the inference package has."""
    from equiseg_ros.ros._loader import backend_options, declared_options, load_model

    opts, _ = backend_options(ENGINE_VALUES, on_progress=lambda line: None, cancel=threading.Event())
    assert set(opts) <= declared_options()
    lines: list[str] = []
    values = {**ENGINE_VALUES, "engine.cache_dir": "", "model_path": str(tiny_onnx),
              "backend.prefer": ["onnxruntime"]}
    backend = load_model(values, on_progress=lines.append, warmup=1)
    try:
        assert backend.name == "onnxruntime" and any("loaded in" in line for line in lines)
    finally:
        backend.close()


def test_load_cancelled_and_background_load_reports(tiny_onnx: Path, tmp_path: Path):
    from equiseg_ros.ros._loader import BackgroundLoad, LoadCancelled, load_model

    values = {"backend.threads": 1, "model_path": str(tiny_onnx), "backend.prefer": ["onnxruntime"]}
    cancel = threading.Event()
    cancel.set()  # shutdown before the load returned: the loaded backend is released, not used
    with pytest.raises(LoadCancelled, match="cancelled"):
        load_model(values, cancel=cancel)
    done = threading.Event()
    ok = BackgroundLoad(values, done=done.set).start()
    assert done.wait(60) and ok.error is None and ok.backend is not None
    ok.discard()
    assert ok.backend is None
    bad = BackgroundLoad({**values, "model_path": str(tmp_path / "missing.onnx")}, done=done.clear).start()
    assert bad.join(60) and bad.backend is None and "model file not found" in str(bad.error)


def test_worker_drain_drops_pending_and_waits_for_the_running_frame():
    started, release, seen = threading.Event(), threading.Event(), []

    def slow(item: int) -> None:
        started.set()
        release.wait(10)
        seen.append(item)

    w = InferenceWorker(slow).start()
    w.submit(1)
    assert started.wait(10)
    w.submit(2)  # pending behind the running one
    assert not w.drain(timeout=0.05)  # still running
    release.set()
    assert w.drain(timeout=10) and w.pending == 0
    w.submit(3)
    deadline = time.monotonic() + 10
    while 3 not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [1, 3]  # 2 was dropped by drain; the worker still takes new frames
    assert w.stop(10) and not w.alive


def test_node_state_diagnostics():
    s = diag.node_state_status("/n", "error", "configure failed: x.onnx: model file not found", model="x.onnx")
    assert s["level"] == diag.ERROR and s["name"] == "/n: inference" and s["values"]["state"] == "error"
    assert "model file not found" in s["message"]
    loading = diag.node_state_status("/n", "loading", "building engine", progress="tactic 12/40")
    assert loading["level"] == diag.WARN and loading["values"]["progress"] == "tactic 12/40"
    assert set(diag.NODE_STATES) >= {"loading", "unconfigured", "inactive", "error"}
