"""TensorRT backend (TensorRT 10 Python API, strongly typed networks), with the safe engine cache.

Written against the documented TensorRT 10 API; no GPU or TensorRT exists on the machines this project was built on,
so the GPU path here has NOT been run. Everything around it (cache keys, sidecars, mismatch handling, ONNX
preparation, the "no TensorRT / no CUDA device" guards) is tested. Every GPU entry point raises
:class:`BackendUnavailable` with a plain reason, which ``load_backend`` turns into a fallback to ONNX Runtime.
"""
from __future__ import annotations

import importlib.util
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from equiseg_ros.inference.backend import Backend, BackendError, BackendUnavailable, artifact_kind
from equiseg_ros.inference.engine_cache import (
    DeviceInfo,
    EngineCache,
    EngineMismatchError,
    EngineRequest,
    check_engine_file,
    device_mismatches,
    read_sidecar,
    sidecar_path,
    sidecar_spec,
)

log = logging.getLogger("equiseg_ros.inference")


def _trt():
    """Import tensorrt or say plainly that it is missing."""
    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailable("TensorRT is not installed (no Python module 'tensorrt'; install the TensorRT "
                                 "wheels from NVIDIA's index or use JetPack)")
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # e.g. libnvinfer.so missing behind a bindings-only install
        raise BackendUnavailable(f"TensorRT is not usable: import tensorrt failed ({exc})") from None
    return trt


def current_device(device_id: int = 0) -> DeviceInfo:
    """TensorRT version and GPU of this machine; BackendUnavailable when either is missing."""
    from equiseg_ros.inference._cuda import cuda_device

    trt = _trt()
    dev = cuda_device(device_id)
    return DeviceInfo(gpu_name=dev.name, compute_capability=dev.compute_capability, tensorrt_version=trt.__version__)


def build_serialized_engine(onnx_path: Path, req: EngineRequest, timing_cache: Path, *, workspace_mb: int = 2048,
                            int8_calib: str | Path | None = None) -> bytes:
    """Parse the (prepared) ONNX into a strongly typed network and build a serialized engine.

    fp32: the ONNX as exported. fp16: Conv/MatMul/Gemm rewritten to FP16 in the graph (to_mixed_fp16), since the
    FP16 builder flag is a weak-typing API (deprecated in 10.12, removed in 11). int8: Q/DQ inserted with scales
    calibrated on ``int8_calib`` frames. The timing cache beside the engine is read and written back.
    """
    import onnx

    from equiseg_ros.inference._onnx_prep import quantize_qdq, to_mixed_fp16

    trt = _trt()
    if req.precision == "fp16":
        data = to_mixed_fp16(onnx.load(str(onnx_path))).SerializeToString()
    elif req.precision == "int8":
        if not int8_calib:
            raise BackendError("precision int8 needs a calibration folder (--int8-calib DIR)")
        with tempfile.TemporaryDirectory() as tmp:
            data = quantize_qdq(onnx_path, int8_calib, Path(tmp) / "qdq.onnx").read_bytes()
    else:
        data = Path(onnx_path).read_bytes()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(f"{onnx_path}: TensorRT's ONNX parser failed: {'; '.join(errors) or 'no detail'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    for name, shp in req.input_shapes.items():
        profile.set_shape(name, shp["min"], shp["opt"], shp["max"])
    config.add_optimization_profile(profile)
    blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, False)  # ignore_mismatch=False: a cache from another TRT/GPU is not merged
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT log above)")
    from equiseg_ros.checkpoint import atomic_write

    timing = bytes(config.get_timing_cache().serialize())
    atomic_write(timing_cache, lambda f: f.write(timing))
    return bytes(serialized)


def resolve_engine(path: Path, dev: DeviceInfo, *, cache_dir: str | Path | None, precision: str, rebuild: bool,
                   builder: Callable[[Path, EngineRequest, Path], bytes], size: tuple[int, int] | None = None,
                   batch: int = 1, calibration_sha256: str | None = None) -> tuple[Path, dict[str, Any]]:
    """(engine path, sidecar) that is valid for ``dev``: from an ONNX via the cache, or an engine checked
    against its sidecar (rebuilt from the sidecar's ONNX when allowed). Pure logic: ``dev`` and ``builder``
    are parameters so the tests can use fake devices."""
    from equiseg_ros.inference._onnx_prep import request_for_onnx

    kind = artifact_kind(path)
    if kind == "engine":
        side = read_sidecar(sidecar_path(path))
        problems = device_mismatches(side, dev) + check_engine_file(path, side)
        if not problems:
            return path, side
        onnx = Path(side.get("onnx_path") or "")
        if not onnx.is_file():
            onnx = path.parent / side.get("onnx_file", "")
        if not rebuild or not onnx.is_file():
            why = "rebuilding is disabled" if not rebuild else f"its ONNX ({side.get('onnx_file')}) is not available"
            raise EngineMismatchError(f"{path}: will not run this engine ({'; '.join(problems)}) and {why}")
        shapes = side["input_shapes"]["x"]["opt"]
        cache_dir = cache_dir or path.parent  # the rebuilt engine goes where the stale one was
        path, precision = onnx, side["precision"]
        size, batch = (shapes[3], shapes[4]), shapes[0]
    elif kind != "onnx":
        raise BackendError(f"{path}: TensorRT runs .onnx or .engine files, not a {kind}")
    req = request_for_onnx(path, precision, size, batch, calibration_sha256)
    result = EngineCache(cache_dir, rebuild).resolve(path, req, dev, builder)
    if result.built:
        log.info("built TensorRT engine %s (%s)", result.engine_path, result.reason)
    return result.engine_path, result.sidecar


class TensorRTBackend(Backend):
    """Runs a TensorRT engine with ``execute_async_v3``; device buffers are allocated once at load time."""

    name = "tensorrt"
    OPTIONS = frozenset({"cache_dir", "precision", "rebuild", "device_id", "workspace_mb", "int8_calib", "size",
                         "batch", "timing_window"})

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("tensorrt") is None:
            return "TensorRT is not installed (no Python module 'tensorrt')"
        return None

    def __init__(self, path: str | Path, *, cache_dir: str | Path | None = None, precision: str = "fp32",
                 rebuild: bool = True, device_id: int = 0, workspace_mb: int = 2048,
                 int8_calib: str | Path | None = None, size: tuple[int, int] | None = None, batch: int = 1,
                 timing_window: int = 200) -> None:
        from equiseg_ros.inference._cuda import CudaRuntime

        path = Path(path)
        trt = _trt()
        dev = current_device(device_id)
        calib_sha = None
        if precision == "int8" and int8_calib:
            from equiseg_ros.inference._onnx_prep import calibration_files, calibration_sha256

            calib_sha = calibration_sha256(calibration_files(int8_calib))

        def builder(onnx: Path, req: EngineRequest, timing: Path) -> bytes:
            return build_serialized_engine(onnx, req, timing, workspace_mb=workspace_mb, int8_calib=int8_calib)

        engine_path, side = resolve_engine(path, dev, cache_dir=cache_dir, precision=precision, rebuild=rebuild,
                                           builder=builder, size=size, batch=batch, calibration_sha256=calib_sha)
        spec = sidecar_spec(side, sidecar_path(engine_path))
        self.sidecar = side
        self.cuda = CudaRuntime(device_id)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self._logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{engine_path}: TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        shapes = {k: v["opt"] for k, v in side["input_shapes"].items()}
        self.buffers: dict[str, tuple[int, np.ndarray]] = {}  # name -> (device pointer, host array)
        self.outputs: list[str] = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if is_input:
                self.context.set_input_shape(name, shapes[name])
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = tuple(self.context.get_tensor_shape(name))
            host = np.empty(shape, dtype)
            ptr = self.cuda.malloc(host.nbytes)
            self.context.set_tensor_address(name, ptr)
            self.buffers[name] = (ptr, host)
            if self.engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                self.outputs.append(name)
        if set(self.outputs) != {"labels", "confidence"}:
            raise BackendError(f"{engine_path}: engine outputs {self.outputs}, expected labels and confidence")
        x = shapes["x"]
        super().__init__(engine_path, spec, device=f"cuda:{device_id}", fixed_hw=(x[3], x[4]), fixed_batch=x[0],
                         timing_window=timing_window)

    def describe(self) -> dict[str, Any]:
        keep = ("precision", "tensorrt_version", "gpu_name", "compute_capability", "key")
        return {**super().describe(), **{k: self.sidecar.get(k) for k in keep}}

    def _run(self, x: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for name, arr in (("x", x), ("present", present)):
            ptr, host = self.buffers[name]
            np.copyto(host, arr, casting="same_kind" if host.dtype != np.bool_ else "unsafe")
            self.cuda.to_device(ptr, host.ctypes.data, host.nbytes)
        if not self.context.execute_async_v3(self.cuda.stream):
            raise BackendError(f"{self.path}: TensorRT execute_async_v3 failed")
        for name in self.outputs:
            ptr, host = self.buffers[name]
            self.cuda.to_host(host.ctypes.data, ptr, host.nbytes)
        self.cuda.synchronize()
        return self.buffers["labels"][1].copy(), self.buffers["confidence"][1].astype(np.float32)

    def close(self) -> None:
        self.context = None
        self.engine = None
        if getattr(self, "cuda", None) is not None:
            self.cuda.close()
