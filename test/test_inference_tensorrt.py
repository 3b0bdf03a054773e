"""TensorRT without a GPU: cache keys and names, sidecars, and the whole TensorRT path against stand-ins.

TensorRT and a GPU cannot run here. The stand-ins below implement the documented TensorRT 10 Python API and the
CUDA driver/runtime C API our code calls, *including how they fail*: ``OnnxParser.parse`` returning False with
errors, ``build_serialized_network`` / ``deserialize_cuda_engine`` / ``create_execution_context`` returning None,
``add_optimization_profile`` returning -1, ``set_input_shape`` returning False, ``set_timing_cache`` returning False
for a cache from another device, ``cudaMalloc`` returning cudaErrorMemoryAllocation (2), the real enum values
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is 1, ``DataType`` as in TensorRT 10, ``nptype``), per-thread
``cudaSetDevice``. The "engine" is the parsed graph run by ONNX Runtime and device memory is host memory. They test
OUR plumbing and failure handling; they say nothing about TensorRT's own behaviour.
"""
import ctypes
import enum
import importlib.machinery
import json
import logging
import sys
import threading
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from equiseg_ros.inference import _cuda, build_engine
from equiseg_ros.inference._cuda import CudaRuntime, NoCudaDevice, cuda_device
from equiseg_ros.inference._onnx_meta import read_onnx_info
from equiseg_ros.inference._onnx_prep import (
    calibration_files,
    calibration_sha256,
    graph_recipe,
    profile_shapes,
    request_for_onnx,
)
from equiseg_ros.inference._toy import ToyModel
from equiseg_ros.inference.backend import BackendError, BackendUnavailable, BuildCancelled, load_backend
from equiseg_ros.inference.engine_cache import (
    DeviceInfo,
    EngineCache,
    EngineMismatchError,
    cache_key,
    engine_path_for,
    read_sidecar,
    sidecar_path,
    timing_cache_path,
)
from equiseg_ros.inference.onnx_backend import OnnxRuntimeBackend
from equiseg_ros.inference.tensorrt_backend import TensorRTBackend, current_device, resolve_engine
from equiseg_ros.spec import synthetic_spec
from training.export import export_onnx

SPEC = synthetic_spec(["rgb", "depth"])
AGX = DeviceInfo("Orin (nvgpu)", "8.7", "10.3.0.30", 16, 62800)
NX = DeviceInfo("Orin (nvgpu)", "8.7", "10.3.0.30", 8, 15400)  # same name and SM as AGX Orin
REAL_RUNTIME = _cuda._runtime  # before any test replaces it
NO_TRT = pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None,
                            reason="TensorRT is installed here")


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("trt")
    export_onnx(ToyModel(SPEC, width=16), SPEC, d / "dyn.onnx", (64, 64), dynamic=True)
    export_onnx(ToyModel(SPEC, width=16), SPEC, d / "static.onnx", (64, 96))
    return d


class FakeBuilder:
    """A builder function: records calls, returns bytes that depend on what was asked."""

    def __init__(self):
        self.calls = []

    def __call__(self, onnx_path, req, timing_cache):
        self.calls.append((Path(onnx_path), req.precision, timing_cache))
        return f"engine:{req.onnx_sha256}:{req.precision}:{req.input_shapes['x']['opt']}".encode()


# ---- cache keys, names and sidecars (pure logic, fake devices) ------------------------------------------------

def test_cache_key_covers_every_field(onnx_files):
    req = request_for_onnx(onnx_files / "dyn.onnx", "fp16", (64, 64))
    base = cache_key(req, AGX)
    assert base == cache_key(request_for_onnx(onnx_files / "dyn.onnx", "fp16", (64, 64)), AGX)  # deterministic
    from dataclasses import replace

    variants = [
        cache_key(req, replace(AGX, gpu_name="RTX 4090")),
        cache_key(req, replace(AGX, compute_capability="8.6")),
        cache_key(req, replace(AGX, tensorrt_version="10.9.0.34")),
        cache_key(req, NX),  # item 9: same name and SM, fewer SMs and less memory
        cache_key(req, replace(AGX, total_memory_mib=31000)),
        cache_key(request_for_onnx(onnx_files / "dyn.onnx", "fp32", (64, 64)), AGX),
        cache_key(request_for_onnx(onnx_files / "dyn.onnx", "fp16", (96, 64)), AGX),
        cache_key(request_for_onnx(onnx_files / "dyn.onnx", "fp16", (64, 64), batch=2), AGX),
        cache_key(request_for_onnx(onnx_files / "static.onnx", "fp16"), AGX),
        cache_key(request_for_onnx(onnx_files / "dyn.onnx", "int8", (64, 64), calibration_sha256="ab"), AGX),
        cache_key(replace(req, graph_recipe="fp16:another-rewrite"), AGX),  # item 9: the graph actually parsed
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert cache_key(replace(req, spec=SPEC.with_input_size(64, 64).with_modalities(["depth", "rgb"])), AGX) != base


def test_graph_recipe_follows_the_preparation_code_and_tool_versions(monkeypatch):
    """Item 9: the key names how the parsed graph is made, so an fp16/int8 engine from an older rewrite, quantiser
    or onnxruntime is rebuilt (e.g. every INT8 engine made before float biases)."""
    from equiseg_ros.inference import _onnx_prep

    fp16, int8 = graph_recipe("fp16"), graph_recipe("int8")
    assert graph_recipe("fp32") == "fp32:as-exported" and fp16.startswith("fp16:") and int8.startswith("int8:")
    monkeypatch.setattr(_onnx_prep, "QDQ_RECIPE", _onnx_prep.QDQ_RECIPE + ",changed")
    assert graph_recipe("int8") != int8 and graph_recipe("fp16") == fp16
    real = _onnx_prep._version
    monkeypatch.setattr(_onnx_prep, "_version", lambda d: "9.9.9" if d.startswith("onnxruntime") else real(d))
    assert graph_recipe("fp16") == fp16
    monkeypatch.setattr(_onnx_prep, "_version", lambda d: "9.9.9")
    assert graph_recipe("fp16") != fp16
    monkeypatch.setattr(_onnx_prep, "_source", lambda obj: "edited")
    assert graph_recipe("fp16") not in (fp16,)


def test_engine_names_tell_gpus_and_sizes_apart(onnx_files):
    """Item 9: two Orin modules (same name and SM) or two sizes never share one file; timing caches likewise."""
    req = request_for_onnx(onnx_files / "dyn.onnx", "fp16", (64, 96))
    a = engine_path_for(onnx_files / "dyn.onnx", req, AGX)
    assert a.name == "dyn.fp16.orin-sm87-16sm-61g.64x96b1.engine"
    assert engine_path_for(onnx_files / "dyn.onnx", req, NX).name == "dyn.fp16.orin-sm87-8sm-15g.64x96b1.engine"
    other = request_for_onnx(onnx_files / "dyn.onnx", "fp16", (128, 96))
    assert engine_path_for(onnx_files / "dyn.onnx", other, AGX).name == "dyn.fp16.orin-sm87-16sm-61g.128x96b1.engine"
    assert DeviceInfo("NVIDIA GeForce RTX 4090", "8.9", "10.9", 128, 24564).tag == "geforce-rtx-4090-sm89-128sm-24g"
    assert timing_cache_path(a.parent, AGX) != timing_cache_path(a.parent, NX)  # item 4
    assert timing_cache_path(a.parent, AGX).name == "trt10.3.0.30.orin-sm87-16sm-61g.timing.cache"


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
    r1 = cache.resolve(onnx_path, req, AGX, fb)
    assert r1.built and r1.engine_path == tmp_path / "static.fp16.orin-sm87-16sm-61g.64x96b1.engine"
    side = read_sidecar(sidecar_path(r1.engine_path))
    assert side["key"] == cache_key(req, AGX) and side["gpu_name"] == AGX.gpu_name and side["multiprocessors"] == 16
    assert side["precision"] == "fp16" and side["input_shapes"]["x"]["opt"] == [1, 2, 3, 64, 96]
    assert side["onnx_file"] == "static.onnx" and side["spec"]["name"] == SPEC.name
    assert side["graph_recipe"] == graph_recipe("fp16")
    assert fb.calls[0][2] == timing_cache_path(tmp_path, AGX)
    r2 = cache.resolve(onnx_path, req, AGX, fb)
    assert not r2.built and r2.reason == "cache hit" and len(fb.calls) == 1
    upgraded = DeviceInfo(AGX.gpu_name, "8.7", "10.9.0.34", 16, 62800)
    r3 = cache.resolve(onnx_path, req, upgraded, fb)
    assert r3.built and "tensorrt_version" in r3.reason and len(fb.calls) == 2
    # Building disabled: refuse, name every differing field and the exact command to run.
    with pytest.raises(EngineMismatchError, match=r"tensorrt_version: engine has '10.9.0.34', need '10.3.0.30'.*"
                                                  r"building on start is disabled; build it on this machine with "
                                                  r"`python -m equiseg_ros.inference.build_engine --onnx .*static.onnx "
                                                  r"--fp16 --cache-dir .* --size 64 96`"):
        EngineCache(tmp_path, rebuild=False).resolve(onnx_path, req, AGX, fb)
    assert len(fb.calls) == 2


def test_damaged_engine_or_sidecar_is_rebuilt(onnx_files, tmp_path):
    onnx_path = onnx_files / "static.onnx"
    req = request_for_onnx(onnx_path, "fp32")
    fb = FakeBuilder()
    cache = EngineCache(tmp_path)
    eng = cache.resolve(onnx_path, req, AGX, fb).engine_path
    eng.write_bytes(eng.read_bytes()[:5])  # truncated copy
    r = cache.resolve(onnx_path, req, AGX, fb)
    assert r.built and "SHA-256" in r.reason
    sidecar_path(eng).write_text("{not json")
    r = cache.resolve(onnx_path, req, AGX, fb)
    assert r.built and "not valid JSON" in r.reason
    side = json.loads(sidecar_path(eng).read_text())
    sidecar_path(eng).write_text(json.dumps({**side, "format": "equiseg_ros.engine/1"}))  # an older release's
    r = cache.resolve(onnx_path, req, AGX, fb)
    assert r.built and "of this release" in r.reason
    sidecar_path(eng).unlink()
    with pytest.raises(EngineMismatchError, match="sidecar not found"):
        EngineCache(tmp_path, rebuild=False).resolve(onnx_path, req, AGX, fb)
    assert len(fb.calls) == 4


def test_loading_an_engine_checks_its_sidecar_against_this_machine(onnx_files, tmp_path):
    fb = FakeBuilder()
    eng, side = resolve_engine(onnx_files / "static.onnx", AGX, cache_dir=tmp_path, precision="fp16", rebuild=True,
                               builder=fb)
    same, _ = resolve_engine(eng, AGX, cache_dir=None, precision="fp32", rebuild=False, builder=fb)
    assert same == eng and len(fb.calls) == 1  # the sidecar's precision rules, not the argument
    with pytest.raises(EngineMismatchError, match="multiprocessors: engine built for 16, this machine has 8.*"
                                                  "rebuilding is disabled"):
        resolve_engine(eng, NX, cache_dir=None, precision="fp16", rebuild=False, builder=fb)
    rebuilt, side2 = resolve_engine(eng, NX, cache_dir=None, precision="fp32", rebuild=True, builder=fb)
    assert rebuilt == tmp_path / "static.fp16.orin-sm87-8sm-15g.64x96b1.engine" and side2["precision"] == "fp16"
    assert fb.calls[-1][0] == onnx_files / "static.onnx"  # rebuilt from the ONNX named in the sidecar
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for p in (eng, sidecar_path(eng)):
        p.rename(moved / p.name)
    data = json.loads((moved / sidecar_path(eng).name).read_text())
    data.update(onnx_path=str(tmp_path / "gone.onnx"), onnx_file="gone.onnx")
    (moved / sidecar_path(eng).name).write_text(json.dumps(data))
    with pytest.raises(EngineMismatchError, match="its ONNX \\(gone.onnx\\) is not available"):
        resolve_engine(moved / eng.name, NX, cache_dir=None, precision="fp16", rebuild=True, builder=fb)


def test_int8_calibration_frames(onnx_files, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    with pytest.raises(BackendError, match="no calibration frames"):
        calibration_files(calib)
    rng = np.random.default_rng(0)
    for i in range(3):
        np.savez(calib / f"{i}.npz", x=rng.standard_normal((2, 3, 64, 96)).astype(np.float32))
    h1 = calibration_sha256(calibration_files(calib))
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
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed.*tensorrt-cu12==10"):
        TensorRTBackend(onnx_files / "dyn.onnx")
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        current_device()
    assert build_engine.main(["--onnx", str(onnx_files / "dyn.onnx"), "--fp16"]) == 2
    assert "cannot build a TensorRT engine here: TensorRT is not installed" in capsys.readouterr().err
    assert build_engine.main(["--onnx", str(onnx_files / "missing.onnx")]) == 1
    assert "missing.onnx: ONNX file not found" in capsys.readouterr().err


# ---- stand-ins for libcuda/libcudart and for the tensorrt module --------------------------------------------

def _out(ref):
    """The object behind ctypes.byref(...)."""
    return ref._obj


class FakeCuda:
    """libcuda + libcudart: the C calls ``_cuda`` makes, CUDA's return codes, per-thread current device.
    'Device' memory is host memory; every copy and allocation is recorded."""

    def __init__(self, gpus=(("Orin (nvgpu)", 8, 7, 16, 62800),)):
        self.gpus = list(gpus)
        self.fail: dict[str, int] = {}  # C function name -> cudaError_t to return
        self.local = threading.local()
        self.keep, self.pinned, self.device_mem, self.copies = [], [], [], []
        self.set_device_calls = []

    @property
    def current(self):
        return getattr(self.local, "dev", 0)  # CUDA: device 0 unless this thread called cudaSetDevice

    def _alloc(self, ref, size, table, what):
        if what in self.fail:
            return self.fail[what]
        buf = np.zeros(max(1, size.value), np.uint8)
        self.keep.append(buf)
        _out(ref).value = buf.ctypes.data
        table.append((buf.ctypes.data, buf.ctypes.data + buf.nbytes))
        return 0

    # driver API
    def cuInit(self, flags):
        return 0

    def cuDeviceGetCount(self, ref):
        _out(ref).value = len(self.gpus)
        return 0

    def cuDeviceGet(self, ref, i):
        _out(ref).value = i
        return 0

    def cuDeviceGetName(self, buf, n, dev):
        buf.value = self.gpus[dev.value][0].encode()
        return 0

    def cuDeviceGetAttribute(self, ref, attr, dev):
        g = self.gpus[dev.value]
        _out(ref).value = {75: g[1], 76: g[2], 16: g[3]}[attr]
        return 0

    def cuDeviceTotalMem_v2(self, ref, dev):
        _out(ref).value = self.gpus[dev.value][4] << 20
        return 0

    # runtime API
    def cudaGetErrorString(self, rc):
        return {2: b"out of memory", 101: b"invalid device ordinal"}.get(rc, b"unknown error")

    def cudaGetDeviceCount(self, ref):
        _out(ref).value = len(self.gpus)
        return self.fail.get("cudaGetDeviceCount", 0)

    def cudaSetDevice(self, d):
        if d >= len(self.gpus):
            return 101
        self.local.dev = d
        self.set_device_calls.append((threading.get_ident(), d))
        return 0

    def cudaStreamCreate(self, ref):
        _out(ref).value = 0x5000 + self.current
        return 0

    def cudaMalloc(self, ref, size):
        return self._alloc(ref, size, self.device_mem, "cudaMalloc")

    def cudaHostAlloc(self, ref, size, flags):
        return self._alloc(ref, size, self.pinned, "cudaHostAlloc")

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        ctypes.memmove(dst.value, src.value, n.value)
        host = src.value if kind == _cuda.H2D else dst.value
        self.copies.append((kind, host, n.value, any(a <= host < b for a, b in self.pinned)))
        return 0

    def cudaStreamSynchronize(self, s):
        return 0

    def cudaFree(self, p):
        return 0

    def cudaFreeHost(self, p):
        return 0

    def cudaStreamDestroy(self, s):
        return 0


class TrtKnobs:
    """How the TensorRT stand-in behaves in one test (its documented failure returns)."""

    def __init__(self, cuda):
        self.cuda = cuda
        self.version = "10.3.0.30"
        self.parse_errors: list[str] = []
        self.build_none = False
        self.profile_refused = False
        self.deserialize_fail = 0  # how many deserialisations return None (-1: all)
        self.context_none = False
        self.input_shape_refused = False
        self.builds = []  # (current device at Builder(), at build) per build
        self.flags = []
        self.profiles = []
        self.executed_on = []
        self.steps = 4


def make_tensorrt(k: TrtKnobs) -> types.ModuleType:
    """A ``tensorrt`` module with the TensorRT 10 names our code uses and their real enum values."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = k.version

    class ILogger:
        class Severity(enum.IntEnum):
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

        def __init__(self):
            pass

    class Logger(ILogger):
        WARNING = ILogger.Severity.WARNING

        def __init__(self, level=ILogger.Severity.WARNING):
            super().__init__()

    class IProgressMonitor:
        def __init__(self):
            pass

    trt.ILogger, trt.Logger, trt.IProgressMonitor = ILogger, Logger, IProgressMonitor
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag",
                                                     {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5,
                                         "FP8": 6, "BF16": 7, "INT64": 8, "INT4": 9})
    trt.DataType = DataType
    np_of = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
             DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}
    trt.nptype = lambda t: np_of[t]
    ort_type = {"tensor(float)": DataType.FLOAT, "tensor(float16)": DataType.HALF, "tensor(bool)": DataType.BOOL,
                "tensor(uint8)": DataType.UINT8, "tensor(int64)": DataType.INT64, "tensor(int32)": DataType.INT32}

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, [d if isinstance(d, int) else -1 for d in shape]

    class Network:
        data = b""
        inputs: list = []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class ParserError:
        def __init__(self, msg):
            self.msg = msg

        def __str__(self):
            return self.msg

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse(self, data):
            if k.parse_errors:
                self.errors = [ParserError(e) for e in k.parse_errors]
                return False
            sess = ort.InferenceSession(bytes(data), providers=["CPUExecutionProvider"])
            self.network.data = bytes(data)
            self.network.inputs = [Tensor(i.name, i.shape) for i in sess.get_inputs()]
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class TimingCache:
        def __init__(self, blob):
            self.blob = bytes(blob)

        def serialize(self):
            return self.blob

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, opt, mx):
            self.shapes[name] = (list(mn), list(opt), list(mx))

    class Config:
        def __init__(self):
            self.limits, self.profiles, self.cache, self.progress_monitor = {}, [], None, None

        def set_memory_pool_limit(self, pool, n):
            self.limits[pool] = n

        def add_optimization_profile(self, p):
            if k.profile_refused:
                return -1
            self.profiles.append(p)
            return len(self.profiles) - 1

        def create_timing_cache(self, blob):
            return TimingCache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            # TensorRT refuses a cache whose header names another device unless ignore_mismatch is True.
            if cache.blob.startswith(b"device:") and not cache.blob.startswith(f"device:{k.cuda.current}".encode()) \
                    and not ignore_mismatch:
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache  # None when no cache was accepted

    class Builder:
        def __init__(self, logger):
            self.logger, self.device = logger, k.cuda.current

        def create_network(self, flags):
            k.flags.append(flags)
            assert flags == 1 << 1, "TensorRT 10: STRONGLY_TYPED is flag 1"
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            k.builds.append((self.device, k.cuda.current))
            k.profiles.append([p.shapes for p in config.profiles])
            self.logger.log(ILogger.Severity.WARNING, "stand-in: a builder warning")
            mon = config.progress_monitor
            if mon is not None:
                mon.phase_start("Building engine", None, k.steps)
                for i in range(k.steps):
                    if config.cache is not None:  # tactics timed so far are in the cache
                        config.cache.blob = (config.cache.blob or f"device:{k.cuda.current};".encode()) + b"t"
                    if not mon.step_complete("Building engine", i):
                        mon.phase_finish("Building engine")
                        return None
                mon.phase_finish("Building engine")
            if k.build_none:
                self.logger.log(ILogger.Severity.ERROR, "stand-in: out of workspace")
                return None
            return network.data

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            if k.deserialize_fail:
                k.deserialize_fail -= 1 if k.deserialize_fail > 0 else 0
                self.logger.log(ILogger.Severity.ERROR, "stand-in: serialization assertion failed")
                return None
            return Engine(bytes(data))

    class Engine:
        def __init__(self, data):
            self.sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            self.io = [(i.name, trt.TensorIOMode.INPUT, i) for i in self.sess.get_inputs()] + \
                      [(o.name, trt.TensorIOMode.OUTPUT, o) for o in self.sess.get_outputs()]
            self.num_io_tensors = len(self.io)

        def get_tensor_name(self, i):
            return self.io[i][0]

        def get_tensor_mode(self, name):
            return next(m for n, m, _ in self.io if n == name)

        def get_tensor_dtype(self, name):
            return ort_type[next(t.type for n, _, t in self.io if n == name)]

        def get_tensor_shape(self, name):
            return [d if isinstance(d, int) else -1 for d in next(t.shape for n, _, t in self.io if n == name)]

        def create_execution_context(self):
            return None if k.context_none else Context(self)

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addr = engine, {}, {}

        def set_input_shape(self, name, shape):
            if k.input_shape_refused:
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            shape = self.engine.get_tensor_shape(name)
            if -1 not in shape:
                return shape
            if name in self.shapes:
                return self.shapes[name]
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                return shape  # not set: unresolved
            b, _, _, h, w = self.get_tensor_shape("x")
            return (b, h, w)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return True

        def _view(self, name):
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = tuple(self.get_tensor_shape(name))
            buf = (ctypes.c_char * (int(np.prod(shape)) * dtype.itemsize)).from_address(self.addr[name])
            return np.frombuffer(buf, dtype).reshape(shape)

        def execute_async_v3(self, stream):
            k.executed_on.append(k.cuda.current)
            outs = self.engine.sess.run(["labels", "confidence"], {"x": self._view("x"),
                                                                     "present": self._view("present")})
            for name, arr in zip(["labels", "confidence"], outs):
                self._view(name)[...] = arr
            return True

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


@pytest.fixture
def gpu(monkeypatch):
    """Stand-ins installed: a tensorrt module and libcuda/libcudart with two GPUs."""
    cuda = FakeCuda(gpus=[("Orin (nvgpu)", 8, 7, 16, 62800), ("NVIDIA RTX A2000", 8, 6, 26, 6138)])
    k = TrtKnobs(cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(k))
    monkeypatch.setattr(_cuda, "_driver", lambda: cuda)
    monkeypatch.setattr(_cuda, "_runtime", lambda: cuda)
    return k


def _frame(h=64, w=96, seed=0):
    x = np.random.default_rng(seed).standard_normal((1, 2, 3, h, w)).astype(np.float32)
    return x, np.array([[True, False]])


# ---- the TensorRT path against the stand-ins: one test per defect of issue 18 ---------------------------------

def test_item1_node_uses_the_engine_build_engine_wrote(onnx_files, tmp_path, gpu, capsys, caplog):
    """`build_engine --fp16` (what `export.py --engine --fp16` runs) and `load_backend(precision="fp16")` agree on
    the file; with build_on_start=False the node never builds, and without a prebuilt engine it falls back to ONNX
    Runtime naming the command to run."""
    onnx = onnx_files / "dyn.onnx"
    assert build_engine.main(["--onnx", str(onnx), "--fp16", "--cache-dir", str(tmp_path), "--size", "64", "96"]) == 0
    built = Path(json.loads(capsys.readouterr().out)["engine"])
    assert len(gpu.builds) == 1 and built.is_file()
    b = load_backend(onnx, precision="fp16", cache_dir=tmp_path, size=(64, 96), build_on_start=False)
    assert b.name == "tensorrt" and b.path == built and b.describe()["precision"] == "fp16" and len(gpu.builds) == 1
    labels, conf = b.infer(*_frame())
    ref_l, ref_c = OnnxRuntimeBackend(onnx).infer(*_frame())
    assert labels.dtype == np.uint8 and conf.dtype == np.float32 and labels.shape == (1, 64, 96)
    assert (labels == ref_l).mean() >= 0.995 and np.abs(conf - ref_c).max() < 1e-2  # FP16 graph vs FP32
    b.close()
    with caplog.at_level(logging.WARNING, logger="equiseg_ros.inference"):
        fb = load_backend(onnx, precision="fp32", cache_dir=tmp_path, size=(64, 96), build_on_start=False)
    assert fb.name == "onnxruntime" and len(gpu.builds) == 1
    assert f"python -m equiseg_ros.inference.build_engine --onnx {onnx} --cache-dir {tmp_path} --size 64 96" \
        in caplog.text


@pytest.mark.slow
def test_item1_node_uses_the_engine_export_wrote(tmp_path, gpu, capsys):
    """`training/export.py --engine DIR --fp16` writes the engine under the name `load_backend(precision="fp16",
    cache_dir=DIR)` looks for: the node finds it with building disabled."""
    from equiseg_ros.checkpoint import save_checkpoint
    from equiseg_ros.config import ModelConfig, to_dict
    from equiseg_ros.models.build import build_model
    from training.export import main as export_main

    cfg = ModelConfig(name="segformer", decoder_dim=32, drop_path=0.0)
    torch.manual_seed(0)
    model = build_model(cfg, SPEC)
    ckpt = save_checkpoint(tmp_path / "seg.pt", model.state_dict(), model.spec, {"model": to_dict(cfg)})
    engines = tmp_path / "engines"
    assert export_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "seg.onnx"), "--size", "64", "64",
                        "--engine", str(engines), "--fp16"]) == 0
    written = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["engine"])
    assert written.parent == engines and written.name.startswith("seg.fp16.orin-sm87-16sm-61g.64x64b1")
    b = load_backend(tmp_path / "seg.onnx", precision="fp16", cache_dir=engines, build_on_start=False)
    assert b.name == "tensorrt" and b.path == written and len(gpu.builds) == 1


FAILURES = {
    "parse": ("parse_errors", ["In node 12 (Conv): INVALID_NODE: weights must be an initializer"],
              "ONNX parser failed: In node 12"),
    "build returns None": ("build_none", True, "failed to build a fp32 engine \\(stand-in: out of workspace\\)"),
    "profile refused": ("profile_refused", True, "refused the optimisation profile"),
    "no execution context": ("context_none", True, "could not create an execution context"),
    "input shape refused": ("input_shape_refused", True, "refused input shape"),
    "deserialise, rebuild, deserialise": ("deserialize_fail", -1, "could not deserialize the engine it just built"),
    "cudaMalloc": ("cuda:cudaMalloc", 2, "cudaMalloc\\(.*cudaErrorMemoryAllocation 2: out of memory"),
    "cudaHostAlloc": ("cuda:cudaHostAlloc", 2, "cudaHostAlloc\\(.*out of memory"),
}


@pytest.mark.parametrize("kind", list(FAILURES))
def test_item3_every_tensorrt_failure_falls_back_to_onnxruntime(onnx_files, tmp_path, gpu, caplog, kind):
    knob, value, reason = FAILURES[kind]
    if knob.startswith("cuda:"):
        gpu.cuda.fail[knob[5:]] = value
    else:
        setattr(gpu, knob, value)
    with caplog.at_level(logging.WARNING, logger="equiseg_ros.inference"):
        b = load_backend(onnx_files / "dyn.onnx", cache_dir=tmp_path, size=(64, 96))
    assert b.name == "onnxruntime"
    assert any(r.levelno == logging.WARNING and "skipped tensorrt" in r.getMessage() for r in caplog.records)
    import re

    assert re.search(reason, caplog.text), caplog.text


def test_item3_engine_that_fails_to_deserialise_is_rebuilt_once(onnx_files, tmp_path, gpu, caplog):
    gpu.deserialize_fail = 1
    with caplog.at_level(logging.WARNING, logger="equiseg_ros.inference"):
        b = load_backend(onnx_files / "dyn.onnx", cache_dir=tmp_path, size=(64, 96))
    assert b.name == "tensorrt" and len(gpu.builds) == 2 and "rebuilding it once" in caplog.text
    b.close()
    gpu.deserialize_fail = 1  # and with building disabled: no rebuild, fall back
    assert load_backend(onnx_files / "dyn.onnx", cache_dir=tmp_path, size=(64, 96), build_on_start=False).name == \
        "onnxruntime"
    assert len(gpu.builds) == 2


def test_item4_timing_cache_from_another_device_is_replaced_not_fatal(onnx_files, tmp_path, gpu, caplog):
    dev = current_device(0)
    cache = timing_cache_path(tmp_path, dev)
    cache.write_bytes(b"device:7;ttt")  # TensorRT refuses it: another device's properties
    with caplog.at_level(logging.WARNING, logger="equiseg_ros.inference"):
        b = load_backend(onnx_files / "dyn.onnx", cache_dir=tmp_path, size=(64, 96))
    assert b.name == "tensorrt" and "refused by TensorRT" in caplog.text
    assert cache.read_bytes() == b"device:0;tttt"  # a fresh cache, learned by this build, saved


def test_item5_int8_engine_is_rebuilt_after_a_tensorrt_upgrade(onnx_files, tmp_path, gpu, monkeypatch):
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        np.savez(calib / f"{i}.npz", x=rng.standard_normal((2, 3, 64, 96)).astype(np.float32))
    b = load_backend(onnx_files / "dyn.onnx", precision="int8", int8_calib=calib, cache_dir=tmp_path, size=(64, 96))
    assert b.name == "tensorrt" and b.describe()["precision"] == "int8"
    engine = b.path
    b.close()
    # The node restarts with precision int8 and no calibration folder: it finds the engine in its slot.
    again = load_backend(onnx_files / "dyn.onnx", precision="int8", cache_dir=tmp_path, size=(64, 96),
                         build_on_start=False)
    assert again.name == "tensorrt" and again.path == engine
    again.close()
    # JetPack upgrade: TensorRT 10.3 -> 10.7, and the calibration frames are gone from the vehicle.
    monkeypatch.setattr(sys.modules["tensorrt"], "__version__", "10.7.0.23")
    for f in calib.iterdir():
        f.unlink()
    calib.rmdir()
    rebuilt = load_backend(engine)
    assert rebuilt.name == "tensorrt" and len(gpu.builds) == 2  # from the Q/DQ graph saved by the first build
    assert rebuilt.sidecar["tensorrt_version"] == "10.7.0.23" and rebuilt.sidecar["precision"] == "int8"
    labels, _ = rebuilt.infer(*_frame())
    assert labels.shape == (1, 64, 96)


def test_item6_build_and_inference_run_on_the_chosen_gpu(onnx_files, tmp_path, gpu):
    b = load_backend(onnx_files / "dyn.onnx", device_id=1, cache_dir=tmp_path, size=(64, 96))
    assert b.name == "tensorrt" and b.device == "cuda:1"
    assert gpu.builds == [(1, 1)]  # Builder created and build run with GPU 1 current
    assert "rtx-a2000-sm86-26sm-6g" in b.path.name and b.sidecar["gpu_name"] == "NVIDIA RTX A2000"
    worker = threading.Thread(target=lambda: b.infer(*_frame()))  # the node infers in its own thread
    worker.start()
    worker.join()
    b.infer(*_frame())
    assert gpu.executed_on == [1, 1]


def test_item7_libcudart_of_pip_wheels_is_found_and_checked_before_building(onnx_files, tmp_path, gpu,
                                                                             monkeypatch):
    site = tmp_path / "site"
    lib = site / "nvidia" / "cuda_runtime" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcudart.so.12").write_bytes(b"")
    monkeypatch.syspath_prepend(str(site))
    __import__("importlib").invalidate_caches()
    tried = []

    def cdll(name):
        tried.append(name)
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(_cuda.ctypes, "CDLL", cdll)
    with pytest.raises(NoCudaDevice, match="libcudart not found"):
        REAL_RUNTIME()
    assert str(lib / "libcudart.so.12") in tried
    monkeypatch.setattr(_cuda, "_runtime", REAL_RUNTIME)  # no libcudart at all now
    b = load_backend(onnx_files / "dyn.onnx", cache_dir=tmp_path, size=(64, 96))
    assert b.name == "onnxruntime" and gpu.builds == []  # known before a minutes-long build, not after it


def test_item8_host_buffers_are_pinned_and_inputs_copied_once(onnx_files, tmp_path, gpu):
    b = load_backend(onnx_files / "dyn.onnx", cache_dir=tmp_path, size=(64, 96))
    assert len(gpu.cuda.pinned) == 4 and len(gpu.cuda.device_mem) == 4  # x, present, labels, confidence, once
    gpu.cuda.copies.clear()
    b.infer(*_frame())
    b.infer(*_frame(seed=1))
    assert len(gpu.cuda.copies) == 8 and all(pinned for *_, pinned in gpu.cuda.copies)
    assert sum(kind == _cuda.H2D for kind, *_ in gpu.cuda.copies) == 4  # x and present, each once per frame
    assert len(gpu.cuda.pinned) == 4  # nothing allocated per frame


def test_item10_build_reports_progress_and_cancels_keeping_the_timing_cache(onnx_files, tmp_path, gpu, caplog):
    lines = []
    b = load_backend(onnx_files / "dyn.onnx", cache_dir=tmp_path, size=(64, 96), on_progress=lines.append)
    assert b.name == "tensorrt"
    assert lines[0].startswith("building TensorRT engine dyn.fp32.orin-sm87-16sm-61g.64x96b1.engine (no engine at")
    assert "TensorRT build: Building engine (4 steps)" in lines and "TensorRT build: Building engine step 4/4" in lines
    assert any(line.startswith("engine built in") for line in lines)
    assert "TensorRT: stand-in: a builder warning" in caplog.text  # TensorRT's logger goes to Python logging
    b.close()
    cancel = threading.Event()

    def progress(line):
        if "(50 steps)" in line:
            cancel.set()  # e.g. the launch system shuts the node down mid-build

    gpu.steps = 50
    engine_dir = tmp_path / "second"
    with pytest.raises(BuildCancelled, match="cancelled"):
        load_backend(onnx_files / "dyn.onnx", precision="fp16", cache_dir=engine_dir, size=(64, 96),
                     on_progress=progress, cancel=cancel)
    assert not list(engine_dir.glob("*.engine"))
    learned = timing_cache_path(engine_dir, current_device(0)).read_bytes()
    assert learned.startswith(b"device:0;t") and len(learned) < len(b"device:0;") + 50  # saved what it had timed


def test_item12_fp32_build_needs_no_onnx_package(onnx_files, tmp_path, gpu, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    b = load_backend(onnx_files / "dyn.onnx", cache_dir=tmp_path, size=(64, 96))
    assert b.name == "tensorrt" and b.describe()["precision"] == "fp32"
    with caplog.at_level(logging.WARNING, logger="equiseg_ros.inference"):
        fb = load_backend(onnx_files / "dyn.onnx", precision="fp16", cache_dir=tmp_path, size=(64, 96))
    assert fb.name == "onnxruntime" and "needs the 'onnx' package" in caplog.text


def test_static_onnx_is_built_without_a_profile_and_labels_stay_uint8(onnx_files, tmp_path, gpu):
    """Open questions of issue 18, settled: a static ONNX gets no optimisation profile (a dynamic one exactly one
    shape), and `labels` leave the engine as uint8."""
    s = load_backend(onnx_files / "static.onnx", cache_dir=tmp_path)
    d = load_backend(onnx_files / "dyn.onnx", cache_dir=tmp_path, size=(64, 96))
    assert gpu.profiles[0] == [] and gpu.profiles[1] == [{"x": ([1, 2, 3, 64, 96],) * 3, "present": ([1, 2],) * 3}]
    assert s.host["labels"].dtype == np.uint8 and d.host["labels"].dtype == np.uint8
    assert s.input_size == (64, 96)
    for backend, onnx in ((s, "static.onnx"), (d, "dyn.onnx")):
        np.testing.assert_array_equal(backend.infer(*_frame())[0], OnnxRuntimeBackend(onnx_files / onnx).infer(
            *_frame())[0])


def test_tensorrt_8_is_refused_with_the_reason(onnx_files, tmp_path, gpu, monkeypatch, caplog):
    monkeypatch.setattr(sys.modules["tensorrt"], "__version__", "8.6.2")  # JetPack 6.0
    with caplog.at_level(logging.WARNING, logger="equiseg_ros.inference"):
        assert load_backend(onnx_files / "dyn.onnx", cache_dir=tmp_path, size=(64, 96)).name == "onnxruntime"
    assert "TensorRT 8.6.2 is too old" in caplog.text and gpu.builds == []


def test_stand_in_models_the_real_constants(gpu):
    trt = sys.modules["tensorrt"]
    assert int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1 and int(trt.TensorIOMode.INPUT) == 1
    assert trt.nptype(trt.DataType.HALF) is np.float16 and trt.nptype(trt.DataType.BOOL) is np.bool_
    assert int(trt.DataType.UINT8) == 5 and int(trt.DataType.INT64) == 8
