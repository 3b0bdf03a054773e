"""Managed (lifecycle) node and shutdown, for real: node and driver in separate processes over Fast DDS.

The managed node is driven the way a lifecycle manager drives it - through ``/perception_node/change_state`` and
``get_state`` (lifecycle_msgs) from another participant - including a configure that fails (model file missing),
goes through ErrorProcessing back to unconfigured with the reason in /diagnostics, and recovers once the parameter
is fixed. Shutdown: SIGINT, a second SIGINT and a SIGTERM in quick succession (what an impatient user and launch's
SIGINT-then-SIGTERM escalation do) end the node with exit code 0 and no traceback, while sensors stream and during
start-up. Own ROS_DOMAIN_IDs (31-34), localhost-only discovery; no timing assertions, generous timeouts.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import ros_helpers as rh

pytestmark = pytest.mark.ros

FAST = ["diagnostics.period:=0.3", "backend.threads:=1"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return rh.export_tiny(tmp_path_factory.mktemp("lifecycle_model") / "tiny64.onnx", 64)


def _wait_log(path: Path, text: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        assert proc.poll() is None, f"node exited ({proc.returncode}) before {text!r}:\n{path.read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in the node log within {timeout} s:\n{path.read_text()}")


def _stop(proc: subprocess.Popen, signals=(signal.SIGINT,), gap: float = 0.0, timeout: float = 30.0) -> int:
    for sig in signals:
        if proc.poll() is None:
            proc.send_signal(sig)
        time.sleep(gap)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -999  # hung: never a pass


def _clean_exit(code: int, log: str) -> None:
    assert code == 0, f"exit code {code}\n{log}"
    for bad in ("Traceback", "KeyboardInterrupt", "Exception"):
        assert bad not in log, f"{bad} in the node log:\n{log}"


def _steps(record: dict[str, Any]) -> list[dict[str, Any]]:
    assert not record["error"], record["error"]
    return record["steps"]


def test_managed_node_transitions_failing_configure_recovers(model, tmp_path):
    env = rh.ros_env(31)
    bad = tmp_path / "missing" / "model.onnx"
    scenario = {"rate": 10, "steps": [
        {"do": "configure"},                          # 0: model file missing -> ErrorProcessing -> unconfigured
        {"idle": 0.8},                                # 1: diagnostics say why
        {"set": {"model_path": str(model)}},          # 2: allowed while unconfigured
        {"do": "configure"},                          # 3: -> inactive (model loaded)
        {"stream": 1.5},                              # 4: inactive: no masks
        {"do": "activate"},                           # 5: -> active
        {"stream": 2.5},                              # 6: masks flow
        {"set": {"model_path": str(bad)}},            # 7: refused while configured
        {"do": "deactivate"},                         # 8: -> inactive, model kept
        {"stream": 1.5},                              # 9: no masks
        {"do": "activate"},                           # 10: -> active again, no reload
        {"stream": 2.0},                              # 11: masks flow again
        {"do": "deactivate"},                         # 12
        {"do": "cleanup"},                            # 13: -> unconfigured, model released
        {"idle": 0.8},                                # 14: diagnostics say unconfigured
    ]}
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        node = subprocess.Popen(rh.node_command(bad, *FAST, managed=True), env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            _wait_log(log_path, "waiting for configure", node)
            drv = subprocess.run([sys.executable, str(Path(rh.__file__)), "lifecycle-drive",
                                  str(tmp_path / "scenario.json"), str(tmp_path / "result.json")], env=env,
                                 capture_output=True, text=True, timeout=240)
            alive = node.poll() is None
        finally:
            code = _stop(node)
    text = log_path.read_text()
    assert drv.returncode == 0, f"{drv.stdout}\n{drv.stderr}\n{text}"
    record = json.loads((tmp_path / "result.json").read_text())
    steps = _steps(record)
    assert record["initial_state"] == "unconfigured"
    # 0: the failed configure went through ErrorProcessing back to unconfigured, with the reason
    assert steps[0]["success"] is False and steps[0]["state"] == "unconfigured", steps[0]
    goals = [e["goal"] for e in record["events"] if e["step"] == 0]
    assert "errorprocessing" in goals and goals[-1] == "unconfigured", record["events"]
    assert "configure failed" in text and "model file not found" in text, text
    err_diag = [d for d in record["diagnostics"] if d["step"] == 1 and d["values"].get("state") == "error"]
    assert err_diag and "model file not found" in err_diag[-1]["message"], record["diagnostics"][:5]
    # 2, 3: fixed parameter, configure again
    assert steps[2]["results"][0]["successful"], steps[2]
    assert steps[3]["success"] is True and steps[3]["state"] == "inactive", steps[3]
    # the labels launch's OnStateTransition(start_state="configuring", goal_state="inactive") matches for autostart
    assert ("configuring", "inactive") in [(e["start"], e["goal"]) for e in record["events"] if e["step"] == 3]
    # configure said on /diagnostics what it was doing while it blocked the node's executor (loading + progress)
    loading = [d for d in record["diagnostics"] if d["step"] == 3 and d["values"].get("state") == "loading"]
    assert loading and "loading" in loading[0]["message"], record["diagnostics"]
    assert any("loaded in" in d["values"].get("progress", "") for d in loading), loading
    assert "model: onnxruntime on cpu loaded in" in text  # the same line on /rosout
    # 4: inactive -> nothing published; 5, 6: active -> masks
    assert not [m for m in record["masks"] if m["step"] == 4]
    assert steps[5]["success"] is True and steps[5]["state"] == "active"
    assert len([m for m in record["masks"] if m["step"] == 6]) >= 3, (len(record["masks"]), text)
    # 7: structural parameters are read-only while configured
    res7 = steps[7]["results"][0]
    assert not res7["successful"] and "model_path" in res7["reason"] and "configured" in res7["reason"], res7
    # 8, 9: deactivated -> no masks after the transition returned (0.3 s for messages already in flight)
    assert steps[8]["success"] is True and steps[8]["state"] == "inactive"
    late = [m for m in record["masks"] if m["step"] == 9 and m["t"] > steps[8]["end"] + 0.3]
    assert not late, late
    # 10, 11: active again without reloading the model (deactivate keeps it)
    assert steps[10]["success"] is True and steps[10]["state"] == "active"
    assert len([m for m in record["masks"] if m["step"] == 11]) >= 3
    assert text.count("(loaded in") == 1, text
    # 12-14: cleanup releases the model; diagnostics report the state
    assert steps[13]["success"] is True and steps[13]["state"] == "unconfigured"
    assert "model released" in text
    states = [d["values"].get("state") for d in record["diagnostics"] if d["step"] == 14]
    assert states and states[-1] == "unconfigured", states
    assert alive
    _clean_exit(code, text)


def test_node_shutdown_two_sigints_and_sigterm_while_streaming(model, tmp_path):
    """The escalation launch performs, compressed: SIGINT, SIGINT, SIGTERM while frames are being inferred."""
    env = rh.ros_env(32)
    scenario = {"rate": 15, "record_all_outputs": False, "startup_timeout": 60.0,
                "phases": [{"name": "stream", "duration": 10.0}]}
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    log_path = tmp_path / "node.log"
    common = ["inputs.event.type:=compressed", "inputs.lidar.type:=pointcloud2", "inputs.lidar.topic:=lidar/points",
              "inputs.lidar.extrinsic:=[0.0,0.0,0.0,0.0,0.0,0.0,1.0]"]
    with open(log_path, "w") as log:
        node = subprocess.Popen(rh.node_command(model, *FAST, *common, "debug.extra_latency:=0.2"), env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        driver = subprocess.Popen([sys.executable, str(Path(rh.__file__)), "drive", str(tmp_path / "scenario.json"),
                                   str(tmp_path / "result.json")], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            _wait_log(log_path, "subscribed to", node)
            time.sleep(4.0)  # the driver discovers the node and streams; inference runs (checked below)
            assert node.poll() is None, log_path.read_text()
            t_signal = time.time()
            code = _stop(node, (signal.SIGINT, signal.SIGINT, signal.SIGTERM), gap=0.05)
        finally:
            if node.poll() is None:
                node.kill()
            driver.wait(timeout=120)
    text = log_path.read_text()
    assert "shutting down (SIGINT" in text, text
    _clean_exit(code, text)
    record = json.loads((tmp_path / "result.json").read_text())
    assert [m for m in record["masks"] if m["recv"] < t_signal], "no mask before the signals: nothing was in flight"


@pytest.mark.parametrize("managed", [False, True], ids=["plain", "managed"])
def test_node_shutdown_during_startup(model, tmp_path, managed):
    """Signals right after start-up began (plain: while the model loads in the background; managed: before any
    transition): still exit code 0, no traceback."""
    env = rh.ros_env(33 if managed else 34)
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        node = subprocess.Popen(rh.node_command(model, *FAST, managed=managed), env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            _wait_log(log_path, "waiting for configure" if managed else "loading:", node)
            code = _stop(node, (signal.SIGINT, signal.SIGTERM, signal.SIGINT), gap=0.02)
        finally:
            if node.poll() is None:
                node.kill()
    text = log_path.read_text()
    _clean_exit(code, text)
    assert "shutting down" in text, text


@pytest.mark.parametrize("managed", [False, True], ids=["plain", "managed"])
def test_shutdown_cancels_a_long_model_load(model, tmp_path, managed):
    """A load that would take 120 s (``debug.load_delay`` stands in for a TensorRT build and waits on the same cancel
    event): the plain node meanwhile answers its parameter service and reports ``loading`` with the progress line on
    /diagnostics; SIGINT mid-load ends the node long before the 120 s, exit code 0 - plain node (background load)
    and managed node (inside configure, which blocks its executor)."""
    env = rh.ros_env(35 if managed else 36)
    log_path = tmp_path / "node.log"
    client = None
    with open(log_path, "w") as log:
        node = subprocess.Popen(rh.node_command(model, *FAST, "debug.load_delay:=120.0", managed=managed), env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            if managed:
                _wait_log(log_path, "waiting for configure", node)
                client = subprocess.Popen([sys.executable, str(Path(rh.__file__)), "lifecycle", rh.NODE, "configure"],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait_log(log_path, "debug.load_delay: waiting", node)
            if not managed:  # the plain node answers and reports while it loads
                probe = subprocess.run([sys.executable, str(Path(rh.__file__)), "probe", rh.NODE, "4.0",
                                        str(tmp_path / "probe.json")], env=env, capture_output=True, text=True,
                                       timeout=120)
                assert probe.returncode == 0, probe.stdout + probe.stderr
                seen = json.loads((tmp_path / "probe.json").read_text())
                assert seen["model_path"] == str(model), seen
                loading = [d for d in seen["diagnostics"] if d["values"].get("state") == "loading"]
                assert loading and "emulated engine build" in loading[-1]["values"]["progress"], seen
            code = _stop(node, (signal.SIGINT,), timeout=60)  # would be > 120 s if the cancel did not reach the load
        finally:
            if node.poll() is None:
                node.kill()
            if client is not None and client.poll() is None:
                client.kill()
                client.wait()
    text = log_path.read_text()
    _clean_exit(code, text)
    assert "cancelled" in text and "shutting down (SIGINT)" in text, text
