"""TensorRT without a GPU: cache keys, sidecars, mismatch handling, ONNX preparation and the 'no device' guards.

Fake device descriptions stand in for GPUs; the builder is a function returning bytes. The real TensorRT build and
run path cannot execute here (no TensorRT, no GPU) and is not claimed to.
"""
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from equiseg_ros.inference import build_engine  # noqa: E402
from equiseg_ros.inference._cuda import CudaRuntime, NoCudaDevice, cuda_device  # noqa: E402
from equiseg_ros.inference._onnx_meta import read_onnx_info  # noqa: E402
from equiseg_ros.inference._onnx_prep import (  # noqa: E402
    calibration_files,
    calibration_sha256,
    profile_shapes,
    quantize_qdq,
    request_for_onnx,
    to_mixed_fp16,
)
from equiseg_ros.inference._toy import ToyModel  # noqa: E402
from equiseg_ros.inference.backend import BackendError, BackendUnavailable  # noqa: E402
from equiseg_ros.inference.engine_cache import (  # noqa: E402
    DeviceInfo,
    EngineCache,
    EngineMismatchError,
    cache_key,
    engine_path_for,
    read_sidecar,
    sidecar_path,
)
from equiseg_ros.inference.tensorrt_backend import TensorRTBackend, current_device, resolve_engine  # noqa: E402
from equiseg_ros.spec import synthetic_spec  # noqa: E402
from training.export import export_onnx  # noqa: E402

SPEC = synthetic_spec(["rgb", "depth"])
ORIN = DeviceInfo("Orin (nvgpu)", "8.7", "10.3.0.30")
NO_TRT = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("trt")
    export_onnx(ToyModel(SPEC, width=16), SPEC, d / "dyn.onnx", (64, 64), dynamic=True)
    export_onnx(ToyModel(SPEC, width=16), SPEC, d / "static.onnx", (64, 96))
    return d


class FakeBuilder:
    """Stands in for TensorRT's builder: records calls, returns bytes that depend on what was asked."""

    def __init__(self):
        self.calls = []

    def __call__(self, onnx_path, req, timing_cache):
        self.calls.append((Path(onnx_path), req.precision, timing_cache))
        return f"engine:{req.onnx_sha256}:{req.precision}:{req.input_shapes['x']['opt']}".encode()


def test_cache_key_covers_every_field(onnx_files):
    req = request_for_onnx(onnx_files / "dyn.onnx", "fp16", (64, 64))
    base = cache_key(req, ORIN)
    assert base == cache_key(request_for_onnx(onnx_files / "dyn.onnx", "fp16", (64, 64)), ORIN)  # deterministic
    variants = [
        cache_key(req, DeviceInfo("RTX 4090", "8.7", ORIN.tensorrt_version)),
        cache_key(req, DeviceInfo(ORIN.gpu_name, "8.6", ORIN.tensorrt_version)),
        cache_key(req, DeviceInfo(ORIN.gpu_name, ORIN.compute_capability, "10.9.0.34")),
        cache_key(request_for_onnx(onnx_files / "dyn.onnx", "fp32", (64, 64)), ORIN),
        cache_key(request_for_onnx(onnx_files / "dyn.onnx", "fp16", (96, 64)), ORIN),
        cache_key(request_for_onnx(onnx_files / "dyn.onnx", "fp16", (64, 64), batch=2), ORIN),
        cache_key(request_for_onnx(onnx_files / "static.onnx", "fp16"), ORIN),
        cache_key(request_for_onnx(onnx_files / "dyn.onnx", "int8", (64, 64), calibration_sha256="ab"), ORIN),
    ]
    assert len({base, *variants}) == len(variants) + 1
    from dataclasses import replace

    assert cache_key(replace(req, spec=SPEC.with_input_size(64, 64).with_modalities(["depth", "rgb"])), ORIN) != base
    assert engine_path_for(onnx_files / "dyn.onnx", "fp16", ORIN).name == "dyn.fp16.sm87.engine"


def test_profile_shapes_from_onnx(onnx_files):
    dyn = read_onnx_info(onnx_files / "dyn.onnx")
    shapes = profile_shapes(dyn, (128, 96), 2, (64, 64))
    assert shapes["x"] == {"min": [2, 2, 3, 128, 96], "opt": [2, 2, 3, 128, 96], "max": [2, 2, 3, 128, 96]}
    assert shapes["present"]["opt"] == [2, 2]
    assert profile_shapes(dyn, None, 1, (64, 64))["x"]["opt"] == [1, 2, 3, 64, 64]  # default: spec input size
    static = read_onnx_info(onnx_files / "static.onnx")
    assert profile_shapes(static, None, 1, (64, 96))["x"]["opt"] == [1, 2, 3, 64, 96]
    with pytest.raises(BackendError, match=r"static at \[64, 96\], cannot build for \[128, 128\]"):
        profile_shapes(static, (128, 128), 1, (64, 96))


def test_engine_cache_build_hit_mismatch_and_refusal(onnx_files, tmp_path):
    onnx_path = onnx_files / "static.onnx"
    req = request_for_onnx(onnx_path, "fp16")
    fb = FakeBuilder()
    cache = EngineCache(tmp_path)
    r1 = cache.resolve(onnx_path, req, ORIN, fb)
    assert r1.built and r1.engine_path == tmp_path / "static.fp16.sm87.engine" and len(fb.calls) == 1
    side = read_sidecar(sidecar_path(r1.engine_path))
    assert side["key"] == cache_key(req, ORIN) and side["gpu_name"] == ORIN.gpu_name
    assert side["tensorrt_version"] == "10.3.0.30" and side["compute_capability"] == "8.7"
    assert side["precision"] == "fp16" and side["input_shapes"]["x"]["opt"] == [1, 2, 3, 64, 96]
    assert side["onnx_file"] == "static.onnx" and side["spec"]["name"] == SPEC.name
    assert fb.calls[0][2].name == "static.sm87.trt10.3.0.30.timing.cache"  # timing cache beside the engine
    # Same machine, same model: reused, nothing built.
    r2 = cache.resolve(onnx_path, req, ORIN, fb)
    assert not r2.built and r2.reason == "cache hit" and len(fb.calls) == 1
    # TensorRT upgraded on the vehicle: rebuilt, and the reason names the field.
    upgraded = DeviceInfo(ORIN.gpu_name, ORIN.compute_capability, "10.9.0.34")
    r3 = cache.resolve(onnx_path, req, upgraded, fb)
    assert r3.built and "tensorrt_version" in r3.reason and len(fb.calls) == 2
    # Rebuilding disabled: refuse with every differing field named.
    other_gpu = DeviceInfo("Orin Nano", ORIN.compute_capability, "10.3.0.30")
    with pytest.raises(EngineMismatchError, match=r"tensorrt_version: engine has '10.9.0.34', need '10.3.0.30'; "
                                                  r"gpu_name: engine has 'Orin \(nvgpu\)', need 'Orin Nano'\) and "
                                                  "rebuilding is disabled"):
        EngineCache(tmp_path, rebuild=False).resolve(onnx_path, req, other_gpu, fb)
    assert len(fb.calls) == 2
    # A new export of the model (different ONNX bytes) invalidates the engine.
    req2 = request_for_onnx(onnx_files / "dyn.onnx", "fp16", (64, 96))
    _, problems = EngineCache(tmp_path).lookup(onnx_path, req2, upgraded)
    assert any(p.startswith("onnx_sha256") for p in problems)


def test_damaged_engine_or_sidecar_is_rebuilt(onnx_files, tmp_path):
    onnx_path = onnx_files / "static.onnx"
    req = request_for_onnx(onnx_path, "fp32")
    fb = FakeBuilder()
    cache = EngineCache(tmp_path)
    eng = cache.resolve(onnx_path, req, ORIN, fb).engine_path
    eng.write_bytes(eng.read_bytes()[:5])  # truncated copy
    r = cache.resolve(onnx_path, req, ORIN, fb)
    assert r.built and "SHA-256" in r.reason
    sidecar_path(eng).write_text("{not json")
    r = cache.resolve(onnx_path, req, ORIN, fb)
    assert r.built and "not valid JSON" in r.reason
    sidecar_path(eng).unlink()
    with pytest.raises(EngineMismatchError, match="sidecar not found"):
        EngineCache(tmp_path, rebuild=False).resolve(onnx_path, req, ORIN, fb)
    assert len(fb.calls) == 3


def test_loading_an_engine_checks_its_sidecar_against_this_machine(onnx_files, tmp_path):
    fb = FakeBuilder()
    eng, side = resolve_engine(onnx_files / "static.onnx", ORIN, cache_dir=tmp_path, precision="fp16", rebuild=True,
                               builder=fb)
    same, _ = resolve_engine(eng, ORIN, cache_dir=None, precision="fp32", rebuild=False, builder=fb)
    assert same == eng and len(fb.calls) == 1  # the sidecar's precision rules, not the argument
    ampere = DeviceInfo("NVIDIA A100", "8.0", "10.3.0.30")
    with pytest.raises(EngineMismatchError, match="compute_capability: engine built for '8.7', this machine has "
                                                  "'8.0'.*rebuilding is disabled"):
        resolve_engine(eng, ampere, cache_dir=None, precision="fp16", rebuild=False, builder=fb)
    rebuilt, side2 = resolve_engine(eng, ampere, cache_dir=None, precision="fp32", rebuild=True, builder=fb)
    assert rebuilt == tmp_path / "static.fp16.sm80.engine" and side2["precision"] == "fp16"
    assert fb.calls[-1][0] == onnx_files / "static.onnx"  # rebuilt from the ONNX named in the sidecar
    # Without the ONNX, a mismatched engine is refused even when rebuilding is allowed.
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for p in (eng, sidecar_path(eng)):
        p.rename(moved / p.name)
    data = json.loads((moved / sidecar_path(eng).name).read_text())
    data["onnx_path"] = str(tmp_path / "gone.onnx")
    data["onnx_file"] = "gone.onnx"
    (moved / sidecar_path(eng).name).write_text(json.dumps(data))
    with pytest.raises(EngineMismatchError, match="its ONNX \\(gone.onnx\\) is not available"):
        resolve_engine(moved / eng.name, ampere, cache_dir=None, precision="fp16", rebuild=True, builder=fb)


def test_mixed_fp16_onnx_keeps_interface_and_agrees(onnx_files):
    src = onnx.load(str(onnx_files / "dyn.onnx"))
    half = to_mixed_fp16(src)
    ops = Counter(n.op_type for n in half.graph.node)
    convs = [n for n in half.graph.node if n.op_type == "Conv"]
    inits = {t.name: t.data_type for t in half.graph.initializer}
    assert convs and all(inits[n.input[1]] == onnx.TensorProto.FLOAT16 for n in convs)
    assert ops["Cast"] >= 2 * len(convs)
    assert [(i.name, i.type.tensor_type.elem_type) for i in half.graph.input] == \
        [(i.name, i.type.tensor_type.elem_type) for i in src.graph.input]
    assert {p.key for p in half.metadata_props} == {p.key for p in src.metadata_props}
    assert sum(t.ByteSize() for t in half.graph.initializer) < 0.6 * sum(t.ByteSize() for t in src.graph.initializer)
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 96, 64)).astype(np.float32)
    p = np.ones((1, 2), bool)
    a = ort.InferenceSession(src.SerializeToString()).run(None, {"x": x, "present": p})
    b = ort.InferenceSession(half.SerializeToString()).run(None, {"x": x, "present": p})
    assert (a[0] == b[0]).mean() >= 0.99 and np.abs(a[1].astype(np.float32) - b[1]).max() < 1e-2


def test_int8_qdq_from_calibration_frames(onnx_files, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    with pytest.raises(BackendError, match="no calibration frames"):
        calibration_files(calib)
    rng = np.random.default_rng(0)
    for i in range(3):
        np.savez(calib / f"{i}.npz", x=rng.standard_normal((2, 3, 64, 96)).astype(np.float32))
    files = calibration_files(calib)
    h1 = calibration_sha256(files)
    out = quantize_qdq(onnx_files / "static.onnx", calib, tmp_path / "q.onnx")
    q = onnx.load(str(out))
    ops = Counter(n.op_type for n in q.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    assert "equiseg_ros.spec" in {p.key for p in q.metadata_props}
    x = np.load(files[0])["x"][None]
    p = np.ones((1, 2), bool)
    a = ort.InferenceSession(str(onnx_files / "static.onnx")).run(None, {"x": x, "present": p})
    b = ort.InferenceSession(str(out)).run(None, {"x": x, "present": p})
    assert (a[0] == b[0]).mean() >= 0.95
    np.savez(calib / "3.npz", x=rng.standard_normal((2, 3, 64, 96)).astype(np.float32))
    assert calibration_sha256(calibration_files(calib)) != h1  # new frames, new engine key


def test_no_cuda_device_errors_are_clear():
    with pytest.raises(NoCudaDevice, match="no CUDA device"):
        cuda_device(0)
    with pytest.raises(NoCudaDevice, match="no CUDA device"):
        CudaRuntime(0)


@NO_TRT
def test_tensorrt_missing_is_a_clear_error(onnx_files, capsys):
    assert TensorRTBackend.unavailable_reason().startswith("TensorRT is not installed")
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        TensorRTBackend(onnx_files / "dyn.onnx")
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        current_device()
    assert build_engine.main(["--onnx", str(onnx_files / "dyn.onnx"), "--fp16"]) == 2
    assert "cannot build a TensorRT engine here: TensorRT is not installed" in capsys.readouterr().err
    assert build_engine.main(["--onnx", str(onnx_files / "missing.onnx")]) == 1
    assert "missing.onnx: ONNX file not found" in capsys.readouterr().err
