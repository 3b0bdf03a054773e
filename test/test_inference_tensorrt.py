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


# ---- our call sequence against a stand-in for TensorRT ----------------------------------------------------
# TensorRT cannot run here. This stand-in implements only the documented TRT 10 Python calls our code makes, and
# "builds" an engine that is the parsed ONNX run by ONNX Runtime; device memory is host memory. It checks OUR
# plumbing (ONNX preparation, cache, buffer allocation, copies, shapes, dtypes, outputs); it says nothing about
# TensorRT itself.

class _FakeTRT:
    __version__ = "10.99.0-stub"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 0

    class MemoryPoolType:
        WORKSPACE = 0

    class TensorIOMode:
        INPUT, OUTPUT = 1, 2

    @staticmethod
    def nptype(dtype):
        return dtype

    class _Holder:
        def __init__(self, data=b""):
            self.data = data

        def serialize(self):
            return self.data

    class Builder:
        def __init__(self, logger):
            self.calls = []

        def create_network(self, flags):
            assert flags == 1 << 0, "the network must be created strongly typed"
            return _FakeTRT._Holder()

        def create_builder_config(self):
            cfg = _FakeTRT._Holder()
            cfg.profiles, cfg.limits = [], {}
            cfg.set_memory_pool_limit = lambda pool, n: cfg.limits.__setitem__(pool, n)
            cfg.add_optimization_profile = cfg.profiles.append
            cfg.create_timing_cache = lambda blob: _FakeTRT._Holder(bytes(blob) + b"+t")
            cfg.set_timing_cache = lambda cache, ignore: setattr(cfg, "timing", cache)
            cfg.get_timing_cache = lambda: cfg.timing
            return cfg

        def create_optimization_profile(self):
            prof = _FakeTRT._Holder()
            prof.shapes = {}
            prof.set_shape = lambda name, a, b, c: prof.shapes.__setitem__(name, (a, b, c))
            return prof

        def build_serialized_network(self, network, config):
            assert config.limits[0] == 64 << 20 and len(config.profiles) == 1
            return network.data  # the "engine" is the parsed ONNX

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse(self, data):
            self.network.data = bytes(data)
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return _FakeEngine(data)


class _FakeEngine:
    def __init__(self, data):
        self.sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        self.io = [(i.name, _FakeTRT.TensorIOMode.INPUT) for i in self.sess.get_inputs()] + \
                  [(o.name, _FakeTRT.TensorIOMode.OUTPUT) for o in self.sess.get_outputs()]
        types = {"tensor(float)": np.float32, "tensor(bool)": np.bool_, "tensor(uint8)": np.uint8,
                 "tensor(float16)": np.float16}
        self.dtypes = {i.name: types[i.type] for i in self.sess.get_inputs() + self.sess.get_outputs()}
        self.num_io_tensors = len(self.io)

    def get_tensor_name(self, i):
        return self.io[i][0]

    def get_tensor_mode(self, name):
        return dict(self.io)[name]

    def get_tensor_dtype(self, name):
        return self.dtypes[name]

    def create_execution_context(self):
        return _FakeContext(self)


class _FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addr = engine, {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)

    def get_tensor_shape(self, name):
        b, _, _, h, w = self.shapes["x"]
        return self.shapes.get(name, (b, h, w))

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr

    def _view(self, name):
        import ctypes

        dtype = np.dtype(self.engine.dtypes[name])
        shape = self.get_tensor_shape(name)
        buf = (ctypes.c_char * (int(np.prod(shape)) * dtype.itemsize)).from_address(self.addr[name])
        return np.frombuffer(buf, dtype).reshape(shape)

    def execute_async_v3(self, stream):
        outs = self.engine.sess.run(["labels", "confidence"], {"x": self._view("x"), "present": self._view("present")})
        for name, arr in zip(["labels", "confidence"], outs):
            self._view(name)[...] = arr
        return True


class _HostAsDevice:
    """CudaRuntime stand-in: 'device' buffers are host buffers, copies are memmove."""

    def __init__(self, device=0):
        self.stream, self.keep, self.closed = 0, [], False

    def malloc(self, nbytes):
        buf = np.zeros(max(1, nbytes), np.uint8)
        self.keep.append(buf)
        return buf.ctypes.data

    def to_device(self, dst, src, n):
        import ctypes

        ctypes.memmove(dst, src, n)

    to_host = to_device

    def synchronize(self):
        pass

    def close(self):
        self.closed = True


def test_tensorrt_backend_plumbing_against_a_stand_in(onnx_files, tmp_path, monkeypatch):
    import importlib.machinery
    import types

    from equiseg_ros.inference import _cuda
    from equiseg_ros.inference.backend import load_backend
    from equiseg_ros.inference.onnx_backend import OnnxRuntimeBackend

    fake = types.ModuleType("tensorrt")
    fake.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    for k, v in vars(_FakeTRT).items():
        if not k.startswith("__") or k == "__version__":
            setattr(fake, k, v)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(_cuda, "cuda_device", lambda i=0: _cuda.CudaDevice(i, "Stub GPU", "8.9"))
    monkeypatch.setattr(_cuda, "CudaRuntime", _HostAsDevice)
    b = load_backend(onnx_files / "dyn.onnx", cache_dir=tmp_path, precision="fp16", workspace_mb=64, size=(64, 96))
    assert b.name == "tensorrt" and b.device == "cuda:0" and b.input_size == (64, 96) and b.fixed_batch == 1
    assert b.path == tmp_path / "dyn.fp16.sm89.engine" and b.describe()["precision"] == "fp16"
    assert (tmp_path / "dyn.sm89.trt10.99.0-stub.timing.cache").read_bytes() == b"+t"  # written back
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 64, 96)).astype(np.float32)
    present = np.array([[True, False]])
    labels, conf = b.infer(x, present)
    ref_l, ref_c = OnnxRuntimeBackend(onnx_files / "dyn.onnx").infer(x, present)
    assert labels.dtype == np.uint8 and conf.dtype == np.float32 and labels.shape == (1, 64, 96)
    assert (labels == ref_l).mean() >= 0.99 and np.abs(conf - ref_c).max() < 1e-2  # mixed-FP16 graph vs FP32
    b.close()
    # Second start: the engine comes from the cache (the builder would fail now).
    monkeypatch.setattr(_FakeTRT.Builder, "build_serialized_network", lambda *a: None)
    again = load_backend(onnx_files / "dyn.onnx", cache_dir=tmp_path, precision="fp16", size=(64, 96))
    np.testing.assert_array_equal(again.infer(x, present)[0], labels)
