"""The perception node for real: its own process, a driver process streaming sensors, Fast DDS in between.

Each test runs on its own ROS_DOMAIN_ID (21-24) with localhost-only discovery. One node launch goes through many
scenarios in sequence (the driver's phases), in the spirit of Autoware's concatenate-node tests: all sensors, each
sensor dropped in turn, the anchor dropped (failover) and back, recovery, a frozen sensor, malformed messages of every
kind, out-of-order stamps, a backward time jump, parameter changes; then sim time with a /clock jump, and a slow
backend (bounded latency, flat memory).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ros_helpers as rh

from equiseg_ros.spec import synthetic_spec

pytestmark = pytest.mark.ros

# the driver's LiDAR points are in the camera optical frame: the identity extrinsic, given explicitly (required)
COMMON = ["inputs.event.type:=compressed", "inputs.lidar.type:=pointcloud2", "inputs.lidar.topic:=lidar/points",
          "inputs.lidar.extrinsic:=[0.0,0.0,0.0,0.0,0.0,0.0,1.0]", "diagnostics.period:=0.3", "backend.threads:=1"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return rh.export_tiny(tmp_path_factory.mktemp("node_model") / "tiny64.onnx", 64)


def run(tmp: Path, domain: int, scenario: dict[str, Any], model: Path, overrides: list[str],
        rss_at: tuple[float, ...] = ()) -> tuple[dict[str, Any], str, list[float], int, bool]:
    """Node + driver processes; returns (driver record, node log, RSS samples in MB, node exit code, alive)."""
    env = rh.ros_env(domain)
    (tmp / "scenario.json").write_text(json.dumps(scenario))
    log_path = tmp / "node.log"
    with open(log_path, "w") as log:
        node = subprocess.Popen(rh.node_command(model, *COMMON, *overrides), env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        rss: list[float] = []

        def sample() -> None:
            t0 = time.monotonic()
            for t in rss_at:
                time.sleep(max(0.0, t - (time.monotonic() - t0)))
                if node.poll() is None:
                    rss.append(rh.rss_mb(node.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        try:
            proc = subprocess.Popen([sys.executable, str(Path(rh.__file__)), "drive", str(tmp / "scenario.json"),
                                     str(tmp / "result.json")], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            deadline = time.monotonic() + 60
            while rss_at and proc.poll() is None and time.monotonic() < deadline:
                if _node_ready(log_path):
                    sampler.start()
                    break
                time.sleep(0.05)
            out, _ = proc.communicate(timeout=120)
            driver = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
            alive = node.poll() is None
        finally:
            node.send_signal(signal.SIGINT)
            try:
                code = node.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.kill()
                code = -9
    text = log_path.read_text()
    assert driver.returncode == 0, f"driver failed:\n{driver.stdout}\n{driver.stderr}\nnode log:\n{text}"
    record = json.loads((tmp / "result.json").read_text())
    assert not record.get("error"), f"{record.get('error')}\nnode log:\n{text}"
    return record, text, rss, code, alive


def _node_ready(log_path: Path) -> bool:
    return "subscribed to" in log_path.read_text()


def phase(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in record["phases"] if p["name"] == name)


def masks_in(record: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [m for m in record["masks"] if m["phase"] == name]


def statuses(record: dict[str, Any], name: str, settle: float = 0.75) -> list[dict[str, dict[str, Any]]]:
    """Diagnostics received in phase ``name`` after ``settle`` s (states need max_age to change), by short name."""
    p = phase(record, name)
    out = []
    for d in record["diagnostics"]:
        if p["start"] + settle <= d["recv"] <= p["end"] + 0.05:
            out.append({s["name"].split(": ", 1)[1]: s for s in d["status"]})
    assert out, f"no diagnostics in phase {name}"
    return out


def some(diags: list[dict[str, Any]], pred) -> bool:
    return any(pred(d) for d in diags)


def test_node_scenarios_all_drop_failover_freeze_malformed_order_jump_params(model, tmp_path):
    spec = synthetic_spec()
    scenario = {"rate": 15, "phases": [
        {"name": "all", "duration": 2.0},
        {"name": "drop_rgb", "duration": 1.4, "drop": ["rgb"]},
        {"name": "rgb_back", "duration": 1.2},
        {"name": "drop_depth", "duration": 1.4, "drop": ["depth"]},
        {"name": "drop_event", "duration": 1.4, "drop": ["event"]},
        {"name": "drop_lidar", "duration": 1.4, "drop": ["lidar"]},
        {"name": "recovered", "duration": 1.2},
        {"name": "freeze_event", "duration": 1.4, "freeze": ["event"]},
        {"name": "malformed", "duration": 2.0, "malformed": ["rgb", "depth", "event", "lidar", "camera_info"]},
        {"name": "out_of_order", "duration": 1.4, "shuffle": ["depth", "lidar"]},
        {"name": "time_jump_back", "duration": 1.4, "offset": -30.0},
        {"name": "params", "duration": 0.6, "set_params": [
            {"output.overlay_alpha": 1.5}, {"qos.depth": 3}, {"sync.slop": 0.6}, {"output.overlay_alpha": 0.25}]},
    ]}
    record, log, _, code, alive = run(tmp_path, 21, scenario, model, [
        "output.resize_to_camera:=true", "transport.large_frame_bytes:=1000", "transport.late_threshold:=0.000001"])
    assert alive, f"node died during the scenarios:\n{log}"
    assert code == 0, log

    info = record["label_info"]
    assert info["classes"] == list(spec.classes) and info["palette"] == [list(c) for c in spec.palette]
    assert info["modalities"] == ["rgb", "depth", "event", "lidar"] and info["unlabeled"] == 255

    # masks: in every phase, at camera resolution (resize_to_camera), class ids only, never the same frame twice
    for p in record["phases"]:
        n = len(masks_in(record, p["name"]))
        assert n >= 4, f"phase {p['name']}: only {n} masks"
    sized = [m["hw"] == list(rh.CAMERA_HW) for m in record["masks"]]
    assert all(sized[sized.index(True):]), "after the first CameraInfo every mask has the camera's size"
    assert sized.index(True) < 5 and record["masks"][0]["hw"] in ([64, 64], list(rh.CAMERA_HW))
    for m in record["masks"]:
        assert m["encoding"] == "mono8"
        assert set(m["ids"]) <= set(range(spec.num_classes)) | {255}
    stamps = [m["stamp"] for m in record["masks"]]
    assert len(set(stamps)) == len(stamps), "a frame was published twice"
    before = [m["stamp"] for m in record["masks"] if m["phase"] != "time_jump_back" and m["stamp"] > 1e9 - 1]
    assert all(b > a for a, b in zip(before, before[1:]) if b - a > -10), "mask stamps went backwards"
    assert record["overlays"] and record["overlays"][-1]["encoding"] == "rgb8"
    assert record["confidences"] and record["confidences"][-1]["encoding"] == "mono8"

    d_all = statuses(record, "all")
    assert some(d_all, lambda d: all(d[f"sensor {m}"]["values"]["state"] == "ok" for m in info["modalities"])
                and d["inference"]["values"]["modalities_present"] == "RDEL"
                and d["inference"]["values"]["anchor"] == "rgb"
                and d["inference"]["values"]["backend"] == "onnxruntime")
    # each sensor dropped in turn: masks keep coming, diagnostics say which and why; rgb (the anchor) fails over
    short = {"rgb": "R", "depth": "D", "event": "E", "lidar": "L"}
    for m in info["modalities"]:
        d = statuses(record, f"drop_{m}")
        assert some(d, lambda d, m=m: d[f"sensor {m}"]["values"]["state"] == "stale"
                    and "max_age" in d[f"sensor {m}"]["values"]["reason"]
                    and short[m] not in d["inference"]["values"]["modalities_present"]), (m, d[-1])
    assert some(statuses(record, "drop_rgb"), lambda d: d["inference"]["values"]["anchor"] == "depth")
    assert some(statuses(record, "rgb_back", 0.3), lambda d: d["inference"]["values"]["anchor"] == "rgb")
    assert some(statuses(record, "recovered"), lambda d: d["inference"]["values"]["modalities_present"] == "RDEL")
    # frozen sensor: health check marks it unhealthy, left out of fusion
    assert some(statuses(record, "freeze_event", 0.6), lambda d: d["sensor event"]["values"]["state"] == "unhealthy"
                and "frozen" in d["sensor event"]["values"]["reason"]
                and "E" not in d["inference"]["values"]["modalities_present"])
    # malformed messages of every kind: dropped and counted (every other frame), node alive, masks keep coming
    last = record["diagnostics"][-1]["status"]
    by = {s["name"].split(": ", 1)[1]: s["values"] for s in last}
    sent_bad = {m: len(masks_in(record, "malformed")) for m in info["modalities"]}
    for m in info["modalities"]:
        assert int(by[f"sensor {m}"]["malformed"]) >= 5, (m, by[f"sensor {m}"], sent_bad)
    assert int(by["inference"]["camera_info_malformed"]) >= 5
    assert some(statuses(record, "malformed", 0.2), lambda d: any(
        d[f"sensor {m}"]["values"]["state"] == "malformed" for m in info["modalities"]))
    for m in info["modalities"]:
        assert f"dropping malformed {m} message" in log
    # out-of-order stamps: still frames, still never twice (checked above); the synchroniser counts them
    assert len(masks_in(record, "out_of_order")) >= 8
    # backward time jump (stamps -30 s): the synchroniser resets and masks follow the new stamps
    jumped = masks_in(record, "time_jump_back")
    assert len(jumped) >= 5 and all(abs((m["recv"] - 30.0) - m["stamp"]) < 1.0 for m in jumped[2:])
    assert int(by["inference"]["sync_resets"]) >= 1
    # parameter changes: rejected with a clear message, accepted when valid
    res = [r["results"][0] for r in record["param_results"]]
    assert not res[0]["successful"] and "output.overlay_alpha" in res[0]["reason"] and "[0, 1]" in res[0]["reason"]
    assert not res[1]["successful"] and "qos.depth" in res[1]["reason"] and "read-only" in res[1]["reason"]
    assert not res[2]["successful"] and "smaller than sync.max_age" in res[2]["reason"]
    assert res[3]["successful"], res[3]
    # one-time transport warning pointing at the SHM profile (thresholds lowered so 20 KB frames trigger it)
    assert log.count("large frames on") == 1 and "config/fastdds_shm.xml" in log, log


def test_node_sim_time_and_clock_jump(model, tmp_path):
    scenario = {"rate": 15, "sim_time": True, "phases": [
        {"name": "sim", "duration": 2.0}, {"name": "clock_back", "duration": 2.0, "offset": -30.0}]}
    record, log, _, code, alive = run(tmp_path, 22, scenario, model, ["use_sim_time:=true"])
    assert alive and code == 0, log
    sim, back = masks_in(record, "sim"), masks_in(record, "clock_back")
    assert len(sim) >= 8 and len(back) >= 8, (len(sim), len(back), log)
    assert all(m["stamp"] < 5000 for m in sim + back), "stamps should be sim time (base 1000 s)"
    assert min(m["stamp"] for m in back[3:]) < min(m["stamp"] for m in sim) - 20
    diag = [d for d in record["diagnostics"] if d["phase"] in ("sim", "clock_back")]
    assert diag and all(d["stamp"] < 5000 for d in diag), "diagnostics must be stamped with sim time"
    last = {s["name"].split(": ", 1)[1]: s["values"] for s in record["diagnostics"][-1]["status"]}
    assert int(last["inference"]["sync_resets"]) >= 1
    assert all(last[f"sensor {m}"]["state"] == "ok" for m in ("rgb", "depth", "event", "lidar")), last


def test_node_slow_backend_bounded_latency_flat_memory(model, tmp_path):
    delay, rate = 0.25, 20.0
    scenario = {"rate": rate, "record_all_outputs": False, "phases": [
        {"name": "slow", "duration": 6.0}, {"name": "fast", "duration": 1.5, "set_params": [
            {"debug.extra_latency": 0.0}]}]}
    record, log, rss, code, alive = run(tmp_path, 23, scenario, model, [f"debug.extra_latency:={delay}"],
                                        rss_at=(2.5, 4.0, 5.5, 7.0))
    assert alive and code == 0, log
    slow = masks_in(record, "slow")[2:]
    lat = np.array([m["recv"] - m["stamp"] for m in slow])
    # newest frame only: latency <= one inference + waiting for the running one + a frame period, not growing
    assert len(slow) >= 10 and np.percentile(lat, 95) < delay * 2 + 2 / rate + 0.25, lat
    assert lat[-5:].mean() < lat[:5].mean() + 0.15, f"latency grows: {lat}"
    rate_slow = len(slow) / 5.0
    assert rate_slow < 1.3 / delay, rate_slow
    fast = masks_in(record, "fast")
    assert len(fast) / 1.5 > 2 * rate_slow, (len(fast), rate_slow)
    diag = [{s["name"].split(": ", 1)[1]: s["values"] for s in d["status"]} for d in record["diagnostics"]
            if d["phase"] == "slow"]
    assert int(diag[-1]["inference"]["dropped_frames"]) > 20
    # statuses published while the model was still loading carry no queue figures yet
    running = [d["inference"] for d in diag if "pending" in d["inference"]]
    assert running and all(int(d["pending"]) <= 1 for d in running)
    assert len(rss) == 4 and rss[-1] - rss[0] < 15.0, f"node memory grows: {rss} MB"


@pytest.mark.parametrize("override,expect", [
    ("output.overlay_alpha:=2.0", "output.overlay_alpha: must be in [0, 1], got 2.0"),
    ("qos.reliability:=sometimes", "qos.reliability: must be one of ['best_effort', 'reliable']"),
    ("model_path:=/nonexistent/model.onnx", "model file not found"),
    ("sync.priority:=[depth,radar]", "sync.priority: ['radar'] not in the model's modalities"),
])
def test_node_rejects_bad_configuration_at_start(model, override, expect):
    proc = subprocess.run(rh.node_command(model, override), env=rh.ros_env(24), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expect in proc.stdout + proc.stderr


def test_node_help_lists_parameters():
    out = subprocess.run([str(rh.NODE_EXE), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for name in ("model_path", "qos.reliability", "output.overlay_alpha", "inputs.<modality>"):
        assert name in out.stdout


def test_node_reports_incompatible_publisher_qos(model, tmp_path):
    # the node asks for reliable, the drivers offer best effort: nothing can arrive, diagnostics say why
    scenario = {"rate": 10, "startup_timeout": 5.0, "phases": [{"name": "mismatch", "duration": 1.5}]}
    record, log, _, code, alive = run(tmp_path, 25, scenario, model, ["qos.reliability:=reliable"])
    assert alive and code == 0, log
    assert not record["masks"]
    last = {s["name"].split(": ", 1)[1]: s["values"] for s in record["diagnostics"][-1]["status"]}
    for m in ("rgb", "depth", "event", "lidar"):
        assert last[f"sensor {m}"]["state"] == "never_seen"
        assert "incompatible QoS (RELIABILITY)" in last[f"sensor {m}"]["reason"], last[f"sensor {m}"]
