"""Per-frame cost of the sensor path (decode + health + sync + representation + assembly) vs model inference.

    .venv/bin/python bench/bench_sensor_io.py --size 1024 --points 100000 --repeats 5 --model-repeats 2

Four sensors as a vehicle publishes them: rgb8 camera, 32FC1 metric depth, rgb8 event frame (all ``--size``²) and
a 360-degree LiDAR PointCloud2 of ``--points`` points (Ouster-like 32-byte points: x, y, z, intensity, t, ring).
Each frame goes through exactly the node's code: ``ros.codecs`` decoding, ``sensors.health`` checks,
``ros.sync.Synchronizer`` push/poll and ``sensors.frontend.SensorFrontend.assemble`` (HHA for depth, LiDAR
projection with the z-buffer, normalisation). In the same run the model is timed: an EQUISeg MiT-B0 (4 modalities,
DeLiVER spec) wrapped like the deployed graph, in PyTorch eager and exported to ONNX and run by ONNX Runtime.
Zero-copy decoding is compared with a copying decoder on the same messages. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from equiseg_ros.ros import codecs  # noqa: E402
from equiseg_ros.ros.sync import Synchronizer  # noqa: E402
from equiseg_ros.sensors.frontend import SensorFrontend, health_kind  # noqa: E402
from equiseg_ros.sensors.geometry import CameraModel  # noqa: E402
from equiseg_ros.sensors.health import HealthMonitor  # noqa: E402
from equiseg_ros.spec import deliver_spec  # noqa: E402

# LiDAR frame (x forward, y left, z up) -> camera optical frame (x right, y down, z forward), 0.3 m above it
T_CAM_FROM_LIDAR = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.3], [1.0, 0.0, 0.0, 0.0], [0, 0, 0, 1.0]])


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def make_messages(size: int, n_points: int, seed: int = 0) -> tuple[dict[str, Any], str]:
    """The four sensor messages (rclpy when importable, else rosbags dataclasses)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    rgb = np.clip(np.stack([80 + 0.1 * y, 100 + 0.05 * x, 140 - 0.08 * y], 2) + rng.normal(0, 3, (size, size, 3)),
                  0, 255).astype(np.uint8)
    depth = np.where(y > size / 2, 1.5 * size / np.maximum(y - size / 2, 1.0), np.nan).astype(np.float32)
    event = np.zeros((size, size, 3), np.uint8)
    idx = rng.integers(0, size * size, size * size // 20)
    event.reshape(-1, 3)[idx, rng.integers(0, 2, idx.size)] = rng.integers(1, 5, idx.size)
    az = rng.uniform(-np.pi, np.pi, n_points)
    el = np.deg2rad(rng.uniform(-25, 15, n_points))
    r = rng.uniform(2.0, 80.0, n_points)
    dt = np.dtype({"names": ["x", "y", "z", "intensity", "t", "ring"], "formats": ["<f4"] * 4 + ["<u4", "<u2"],
                   "offsets": [0, 4, 8, 16, 20, 24], "itemsize": 32})
    pts = np.zeros(n_points, dt)
    pts["x"], pts["y"], pts["z"] = r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)
    pts["intensity"] = rng.uniform(0, 1, n_points)
    pts["x"][: n_points // 50] = np.nan  # no-return points, as organised clouds carry them
    try:
        from sensor_msgs.msg import Image, PointCloud2, PointField

        family = "rclpy"
        mk_img, mk_pc, pf = Image, PointCloud2, PointField
    except ImportError:
        from rosbags.typesys import Stores, get_typestore

        ts = get_typestore(Stores.ROS2_KILTED)
        family = "rosbags"
        hdr = ts.types["std_msgs/msg/Header"](stamp=ts.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0),
                                               frame_id="")
        mk_img = lambda: ts.types["sensor_msgs/msg/Image"](header=hdr, height=0, width=0, encoding="",  # noqa: E731
                                                           is_bigendian=0, step=0, data=np.zeros(0, np.uint8))
        mk_pc = lambda: ts.types["sensor_msgs/msg/PointCloud2"](  # noqa: E731
            header=hdr, height=0, width=0, fields=[], is_bigendian=False, point_step=0, row_step=0,
            data=np.zeros(0, np.uint8), is_dense=False)
        pf = ts.types["sensor_msgs/msg/PointField"]
    msgs = {"rgb": codecs.fill_image(mk_img(), rgb, "rgb8"), "depth": codecs.fill_image(mk_img(), depth, "32FC1"),
            "event": codecs.fill_image(mk_img(), event, "rgb8"),
            "lidar": codecs.fill_pointcloud2(mk_pc(), pts, pf)}
    return msgs, family


def bench_io(size: int, n_points: int, repeats: int) -> dict[str, Any]:
    msgs, family = make_messages(size, n_points)
    spec = deliver_spec().with_input_size(size, size)
    cam = CameraModel.pinhole(size / 2, size / 2, (size - 1) / 2, (size - 1) / 2, size, size)
    fe = SensorFrontend(spec, cam, {"lidar": T_CAM_FROM_LIDAR})
    health = HealthMonitor()
    sync = Synchronizer(spec.modality_names, slop=0.05, max_age=0.5, wait=0.0)
    decoders = {"rgb": lambda m: codecs.image_to_numpy(m, "/rgb"), "depth": lambda m: codecs.image_to_numpy(m, "/d"),
                "event": lambda m: codecs.image_to_numpy(m, "/ev"),
                "lidar": lambda m: codecs.pointcloud2_to_array(m, "/points")}
    stages: dict[str, list[float]] = {}

    def add(key: str, t0: float) -> float:
        t1 = time.perf_counter()
        stages.setdefault(key, []).append((t1 - t0) * 1e3)
        return t1

    frames_ok = 0
    for k in range(repeats + 1):  # the first frame warms up caches and the health baselines
        stamp = 0.1 * k
        t = time.perf_counter()
        decoded = {}
        for m, msg in msgs.items():
            decoded[m] = (decoders[m](msg), msg.encoding if hasattr(msg, "encoding") else "")
            t = add(f"decode_{m}", t)
        for m, (arr, _) in decoded.items():
            health.check(m, health_kind(spec.modality(m).representation, arr), arr)
            t = add(f"health_{m}", t)
        for m, payload in decoded.items():
            sync.push(m, stamp, payload, now=stamp + 0.01)
        frame = sync.poll(stamp + 0.02)
        t = add("sync", t)
        for m in spec.modality_names:
            arr, enc = frame.items[m]
            fe.represent(m, arr, enc)
            t = add(f"represent_{m}", t)
        x, present = fe.assemble(frame.items)  # (represents again; timed as the node's single call)
        add("assemble_total", t)
        frames_ok += int(present.all())
    med = {k: round(float(np.median(v[1:])), 2) for k, v in stages.items()}
    node_ms = (sum(v for k, v in med.items() if k.startswith(("decode_", "health_")) or k == "sync")
               + med["assemble_total"])
    return {"family": family, "stages_ms": med, "per_frame_ms": round(node_ms, 2), "frames": repeats,
            "frames_all_present": frames_ok - 1 if frames_ok > repeats else frames_ok}


def bench_zero_copy(size: int, n_points: int, repeats: int) -> dict[str, Any]:
    msgs, _ = make_messages(size, n_points, seed=1)
    out: dict[str, Any] = {}
    for m in ("rgb", "depth", "lidar"):
        msg = msgs[m]
        if m == "lidar":
            view = lambda msg=msg: codecs.pointcloud2_to_array(msg, "/points")  # noqa: E731
            copy = lambda msg=msg: codecs.pointcloud2_to_array(msg, "/points").copy()  # noqa: E731
        else:
            view = lambda msg=msg: codecs.image_to_numpy(msg, "/img")  # noqa: E731
            copy = lambda msg=msg: codecs.image_to_numpy(msg, "/img", copy=True)  # noqa: E731
        base = np.frombuffer(msg.data, np.uint8) if not isinstance(msg.data, np.ndarray) else msg.data
        zc_ms, cp_ms = median_ms(view, repeats), median_ms(copy, repeats)
        out[m] = {"zero_copy_ms": round(zc_ms, 4), "copy_ms": round(cp_ms, 4), "speedup": round(cp_ms / zc_ms, 1),
                  "shares_memory": bool(np.shares_memory(view(), base)), "mbytes": round(len(msg.data) / 1e6, 2)}
    return out


def bench_model(size: int, repeats: int, backbone: str, use_torch: bool, use_onnx: bool) -> dict[str, Any]:
    import torch

    from equiseg_ros.config import ModelConfig
    from equiseg_ros.models.build import build_model, count_params
    from equiseg_ros.models.deploy import DeployedModel

    torch.set_num_threads(2)
    spec = deliver_spec().with_input_size(size, size)
    model = DeployedModel(build_model(ModelConfig(name="equiseg", backbone=backbone, drop_path=0.0), spec)).eval()
    x = torch.randn(1, spec.num_modalities, 3, size, size)
    present = torch.ones(1, spec.num_modalities, dtype=torch.bool)
    out: dict[str, Any] = {"model": f"equiseg_{backbone}", "params_m": round(count_params(model) / 1e6, 2)}
    if use_torch:
        with torch.inference_mode():
            model(x, present)
            out["torch_ms"] = round(median_ms(lambda: model(x, present), repeats), 1)
    if use_onnx:
        try:
            import onnxruntime as ort

            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.onnx")
                t0 = time.perf_counter()
                torch.onnx.export(model, (x, present), path, input_names=["x", "present"],
                                  output_names=["labels", "confidence"], opset_version=17, dynamo=False)
                out["onnx_export_s"] = round(time.perf_counter() - t0, 1)
                so = ort.SessionOptions()
                so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
                sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                feed = {"x": x.numpy(), "present": present.numpy()}
                sess.run(None, feed)
                out["onnxruntime_ms"] = round(median_ms(lambda: sess.run(None, feed), repeats), 1)
        except Exception as exc:  # noqa: BLE001 - report, do not hide, a failing export
            out["onnxruntime_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024, help="image side of the three cameras and of the model input")
    p.add_argument("--points", type=int, default=100_000, help="points in the LiDAR cloud")
    p.add_argument("--repeats", type=int, default=5, help="timed frames through the sensor path (after 1 warm-up)")
    p.add_argument("--copy-repeats", type=int, default=20, help="timed calls for the zero-copy vs copy comparison")
    p.add_argument("--model-repeats", type=int, default=2, help="timed model runs per backend (after 1 warm-up)")
    p.add_argument("--backbone", default="mit_b0", help="MiT backbone of the EQUISeg model timed alongside")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch eager timing")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export + ONNX Runtime timing")
    a = p.parse_args(argv)
    result: dict[str, Any] = {"bench": "sensor_io", "size": a.size, "points": a.points,
                              "load_avg_1m_start": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    result["io"] = bench_io(a.size, a.points, a.repeats)
    result["zero_copy"] = bench_zero_copy(a.size, a.points, a.copy_repeats)
    result["model"] = bench_model(a.size, a.model_repeats, a.backbone, not a.no_torch, not a.no_onnx)
    io_ms = result["io"]["per_frame_ms"]
    for key in ("onnxruntime_ms", "torch_ms"):
        if key in result["model"]:
            result[f"io_over_{key[:-3]}"] = round(io_ms / result["model"][key], 3)
    result["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    result["note"] = "2 shared cores under load from other jobs; medians of few runs"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
