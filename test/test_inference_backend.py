"""One Backend interface: ONNX Runtime and PyTorch agree, the spec comes from the artefact, fallbacks and errors."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]

from equiseg_ros.checkpoint import save_checkpoint  # noqa: E402
from equiseg_ros.config import ModelConfig, to_dict  # noqa: E402
from equiseg_ros.inference import bench  # noqa: E402
from equiseg_ros.inference._onnx_meta import read_onnx_info  # noqa: E402
from equiseg_ros.inference._toy import ToyModel  # noqa: E402
from equiseg_ros.inference.backend import (  # noqa: E402
    BackendError,
    BackendUnavailable,
    InputError,
    ModelFileNotFound,
    load_backend,
    read_onnx_spec,
)
from equiseg_ros.inference.engine_cache import DeviceInfo, EngineRequest, make_sidecar, sidecar_path  # noqa: E402
from equiseg_ros.inference.onnx_backend import (  # noqa: E402
    OnnxRuntimeBackend,
    choose_providers,
    provider_options,
)
from equiseg_ros.spec import synthetic_spec  # noqa: E402
from training.export import export_onnx  # noqa: E402

SPEC3 = synthetic_spec(["rgb", "depth", "lidar"])
NO_TRT = pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None,
                            reason="TensorRT is installed here: the fallback is not exercised")


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("toy")
    export_onnx(ToyModel(SPEC3), SPEC3, folder / "dyn.onnx", (64, 64), dynamic=True)
    export_onnx(ToyModel(SPEC3), SPEC3, folder / "static.onnx", (64, 96), batch=1)
    return folder


def _inputs(b, h, w, m=3, seed=0):
    x = np.random.default_rng(seed).standard_normal((b, m, 3, h, w)).astype(np.float32)
    return x, np.ones((b, m), np.bool_)


def test_onnx_meta_reader_matches_onnx_package(toy_onnx):
    for name in ("dyn.onnx", "static.onnx"):
        info = read_onnx_info(toy_onnx / name)
        proto = onnx.load(str(toy_onnx / name))
        assert info.metadata == {p.key: p.value for p in proto.metadata_props}
        assert info.opset == 17 and [t.name for t in info.inputs] == ["x", "present"]
        assert [(t.name, t.dtype) for t in info.outputs] == [("labels", "uint8"), ("confidence", "float16")]
    assert read_onnx_info(toy_onnx / "static.onnx").inputs[0].shape == [1, 3, 3, 64, 96]
    assert read_onnx_info(toy_onnx / "dyn.onnx").inputs[0].shape == ["batch", 3, 3, "height", "width"]


def test_onnxruntime_backend_contract(toy_onnx):
    b = OnnxRuntimeBackend(toy_onnx / "dyn.onnx", intra_op_threads=1)
    assert b.name == "onnxruntime" and b.device == "cpu" and b.providers == ["CPUExecutionProvider"]
    assert b.spec.modality_names == ("rgb", "depth", "lidar") and b.dynamic_size and b.input_size == (64, 64)
    b.warmup(2)
    assert b.timings == []  # warm-up timings are forgotten
    for h, w, batch in ((64, 64, 1), (96, 128, 2)):  # two sizes, and a batch, on one dynamic graph
        labels, conf = b.infer(*_inputs(batch, h, w))
        assert labels.shape == conf.shape == (batch, h, w)
        assert labels.dtype == np.uint8 and conf.dtype == np.float32 and labels.max() < SPEC3.num_classes
    assert len(b.timings) == 2 and all(t > 0 for t in b.timings)
    s = OnnxRuntimeBackend(toy_onnx / "static.onnx")
    assert not s.dynamic_size and s.input_size == (64, 96) and s.fixed_batch == 1


def test_clear_input_errors(toy_onnx):
    s = OnnxRuntimeBackend(toy_onnx / "static.onnx")
    x, p = _inputs(1, 64, 96)
    with pytest.raises(InputError, match="x: expected a float32 array .*got dtype float64"):
        s.infer(x.astype(np.float64), p)
    with pytest.raises(InputError, match=r"x: expected shape \[B,3,3,H,W\] .*got \[1, 2, 3, 64, 96\]"):
        s.infer(x[:, :2], p)
    with pytest.raises(InputError, match=r"exported for H,W = \[64, 96\], got \[64, 64\]"):
        s.infer(x[..., :64], p)
    with pytest.raises(InputError, match="exported for batch 1, got batch 2"):
        s.infer(np.concatenate([x, x]), np.concatenate([p, p]))
    with pytest.raises(InputError, match="present: expected a bool array .*got dtype float32"):
        s.infer(x, p.astype(np.float32))
    with pytest.raises(InputError, match=r"present: expected shape \[1, 3\], got \[1, 2\]"):
        s.infer(x, p[:, :2])
    d = OnnxRuntimeBackend(toy_onnx / "dyn.onnx")
    with pytest.raises(InputError, match="multiples of 32, got"):
        d.infer(*_inputs(1, 64, 80))


def test_clear_file_errors(tmp_path):
    with pytest.raises(ModelFileNotFound, match="missing.onnx: model file not found"):
        load_backend(tmp_path / "missing.onnx")
    foreign = tmp_path / "foreign.onnx"
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(BackendError, match="foreign.onnx: ONNX file has no 'equiseg_ros.spec'.*not exported by"):
        load_backend(foreign)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(BackendError, match="junk.onnx: not an ONNX model"):
        read_onnx_spec(junk)
    weird = tmp_path / "model.bin"
    weird.write_bytes(b"x")
    with pytest.raises(BackendError, match="unknown model file type '.bin'"):
        load_backend(weird)


def test_provider_order_and_missing_providers(toy_onnx):
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    avail = ["CPUExecutionProvider", "CUDAExecutionProvider", "AzureExecutionProvider", "TensorrtExecutionProvider"]
    assert choose_providers(avail) == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CUDAExecutionProvider",
                                                                                   "CPUExecutionProvider"]
    opts = provider_options(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                            cache_dir=Path("/cache"), precision="fp16", device_id=1)
    assert opts[0] == {"device_id": 1, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
                       "trt_engine_cache_path": "/cache"}
    assert opts[1:] == [{"device_id": 1}, {}]
    with pytest.raises(BackendUnavailable, match="none of the execution providers"):
        OnnxRuntimeBackend(toy_onnx / "dyn.onnx", providers=["CUDAExecutionProvider"])  # this onnxruntime: CPU only


@NO_TRT
def test_fallback_chain_logs_one_line(toy_onnx, caplog):
    with caplog.at_level(logging.INFO, logger="equiseg_ros.inference"):
        b = load_backend(toy_onnx / "dyn.onnx")
    assert b.name == "onnxruntime"
    lines = [r for r in caplog.records if r.name == "equiseg_ros.inference"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "onnxruntime" in lines[0].getMessage() and "tensorrt: TensorRT is not installed" in lines[0].getMessage()
    with pytest.raises(BackendUnavailable, match="no backend can run this onnx here: tensorrt: TensorRT is not"):
        load_backend(toy_onnx / "dyn.onnx", prefer=["tensorrt"])
    with pytest.raises(BackendError, match=r"runs on \['torch'\], but prefer=\['onnxruntime'\]"):
        (toy_onnx / "m.pt").write_bytes(b"")
        load_backend(toy_onnx / "m.pt", prefer="onnxruntime")
    with pytest.raises(TypeError, match="unknown option"):
        load_backend(toy_onnx / "dyn.onnx", colour="blue")


@NO_TRT
def test_engine_without_tensorrt_falls_back_to_its_onnx(toy_onnx, tmp_path):
    onnx_path = toy_onnx / "static.onnx"
    engine = tmp_path / "static.fp16.sm87.engine"
    engine.write_bytes(b"not a real engine")
    dev = DeviceInfo("Orin", "8.7", "10.3.0")
    req = EngineRequest("0" * 64, read_onnx_spec(onnx_path), "fp16", {})
    sidecar_path(engine).write_text(json.dumps(make_sidecar(req, dev, "1" * 64, onnx_path)))
    b = load_backend(engine)
    assert b.name == "onnxruntime" and b.path == onnx_path and b.spec == read_onnx_spec(onnx_path)
    sidecar_path(engine).unlink()
    with pytest.raises(BackendUnavailable, match="engine sidecar not found"):
        load_backend(engine)


def test_onnx_runs_without_torch(toy_onnx):
    """A vehicle with ONNX Runtime only: loading and inferring never imports torch."""
    code = ("import sys, numpy as np; from equiseg_ros.inference.backend import load_backend; "
            f"b = load_backend({str(toy_onnx / 'dyn.onnx')!r}, prefer=['onnxruntime']); "
            "b.infer(*b.example_inputs()); assert 'torch' not in sys.modules, 'torch was imported'; print(b.name)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "onnxruntime"


@pytest.mark.slow
def test_torch_backend_matches_onnxruntime_on_a_real_model(tmp_path):
    from equiseg_ros.models.build import build_model

    spec = synthetic_spec(["rgb", "lidar"])
    cfg = ModelConfig(name="m_segformer", decoder_dim=32, drop_path=0.0)
    torch.manual_seed(0)
    model = build_model(cfg, spec).eval()
    ckpt = save_checkpoint(tmp_path / "m.pt", model.state_dict(), spec, {"model": to_dict(cfg)})
    export_onnx(model, spec, tmp_path / "m.onnx", (64, 64), dynamic=True)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    tb = load_backend(ckpt, intra_op_threads=2)  # the node's generic thread option reaches torch too
    assert torch.get_num_threads() == 2
    torch.set_num_threads(before)
    ob = load_backend(tmp_path / "m.onnx", prefer=["onnxruntime"])
    assert tb.name == "torch" and tb.spec == spec and tb.describe()["model"] == "m_segformer"
    for h, w in ((64, 64), (64, 128)):
        x, p = _inputs(1, h, w, m=2, seed=3)
        p[0, 1] = False
        x[:, 1] = 0
        (tl, tc), (ol, oc) = tb.infer(x, p), ob.infer(x, p)
        assert (tl == ol).mean() >= 0.999 and np.abs(tc - oc).max() < 1e-2


def test_bench_reports_each_backend(toy_onnx, capsys):
    assert bench.main(["--model", str(toy_onnx / "dyn.onnx"), "--size", "64", "--modalities", "rgb,lidar",
                       "--runs", "3", "--warmup", "1", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    ort_res = out["results"]["onnxruntime:dyn.onnx"]
    assert ort_res["runs"] == 3 and 0 < ort_res["p50_ms"] <= ort_res["p95_ms"] <= ort_res["max_ms"]
    assert out["modalities"] == ["rgb", "lidar"] and out["size"] == [64, 64]
    assert "skipped" in out["results"]["tensorrt:dyn.onnx"] or "p50_ms" in out["results"]["tensorrt:dyn.onnx"]
    assert bench.main(["--model", str(toy_onnx / "dyn.onnx"), "--modalities", "radar", "--size", "64"]) == 1
    assert "no modality named 'radar'" in capsys.readouterr().err


def test_inference_modules_import_downwards_only():
    """Issue 13 (8.2): errors and sidecar helpers live below backend and engine_cache, which no longer import each
    other; nothing in the package imports upwards at module level (no import circles)."""
    import ast

    pkg = ROOT / "equiseg_ros" / "inference"
    floor = {"errors": 0, "_sidecar": 1, "_onnx_meta": 1, "_cuda": 1, "_fp16": 1, "_trt_ops": 1, "_toy": 1,
             "backend": 2, "engine_cache": 2, "_onnx_prep": 3, "onnx_backend": 3, "torch_backend": 3,
             "tensorrt_backend": 4, "build_engine": 5, "bench": 5}
    for name, level in floor.items():
        tree = ast.parse((pkg / f"{name}.py").read_text())
        top = [n for n in tree.body if isinstance(n, ast.ImportFrom) and (n.module or "").startswith(
            "equiseg_ros.inference.")]
        for node in top:
            dep = node.module.rsplit(".", 1)[-1]
            assert floor[dep] < level, f"{name} (floor {level}) imports {dep} (floor {floor[dep]}) at module level"
