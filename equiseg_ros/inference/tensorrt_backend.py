"""TensorRT backend (TensorRT 10 Python API, strongly typed networks), with the safe engine cache.

Written against the documented TensorRT 10 API and tested against stand-ins that model its documented behaviour,
including how it fails (no GPU or TensorRT exists on the machines this project was built on). The rules:

- Every failure on the way is a ``BackendUnavailable`` (``load_backend`` logs it and falls back to ONNX Runtime):
  no TensorRT, no libcudart or GPU, a graph the onnx-tensorrt 10 table rejects, parser errors, a build that returns
  None, an engine that does not deserialise (rebuilt once first), no execution context, a profile or input shape
  refused, a CUDA allocation that fails, unexpected engine outputs. Only a cancelled build (``BuildCancelled``)
  and errors in the model itself propagate.
- libcudart is loaded and ``cudaSetDevice(device_id)`` made current *before* anything is built, so a missing
  runtime is known before a minutes-long build, and the engine is built on the GPU it is labelled with.
- Builds report progress (``on_progress`` and the ``equiseg_ros.inference`` logger; TensorRT's own messages go to
  the logger too), can be cancelled (``cancel`` event, checked by the IProgressMonitor), and save the timing cache
  atomically after every build, finished or not. A timing cache TensorRT refuses (``set_timing_cache`` returns
  False: another device or version) is replaced by a fresh one instead of failing the build at the end.
- Host buffers are pinned (``cudaHostAlloc``) and allocated once; each input is copied once into them.
- ``labels`` stay uint8 in the engine (onnx-tensorrt 10: UINT8 is allowed at network outputs, and it is a quarter of
  the bytes of int32); an engine with int32/int64 labels is accepted as well and cast on the host.
"""
from __future__ import annotations

import importlib.util
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from equiseg_ros.checkpoint import atomic_write
from equiseg_ros.inference._sidecar import read_sidecar, sidecar_onnx, sidecar_path, sidecar_spec
from equiseg_ros.inference.backend import Backend, artifact_kind
from equiseg_ros.inference.engine_cache import (
    DeviceInfo,
    EngineCache,
    EngineRequest,
    check_engine_file,
    device_mismatches,
    engine_path_for,
)
from equiseg_ros.inference.errors import (
    BackendError,
    BackendUnavailable,
    BuildCancelled,
    EngineBuildError,
    EngineCacheError,
    EngineMismatchError,
)

log = logging.getLogger("equiseg_ros.inference")
Progress = Callable[[str], None]


def _trt():
    """Import tensorrt or say plainly that it is missing."""
    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailable("TensorRT is not installed (no Python module 'tensorrt'; RTX/desktop: pip install "
                                 "'tensorrt-cu12==10.*'; Jetson: the python3-libnvinfer package of JetPack)")
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # e.g. libnvinfer.so missing behind a bindings-only install
        raise BackendUnavailable(f"TensorRT is not usable: import tensorrt failed ({exc})") from None
    major = str(getattr(trt, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < 10:
        raise BackendUnavailable(f"TensorRT {getattr(trt, '__version__', '?')} is too old: strongly typed builds "
                                 "need TensorRT 10 (JetPack 6.1 or newer; RTX: pip install 'tensorrt-cu12==10.*')")
    return trt


def current_device(device_id: int = 0) -> DeviceInfo:
    """TensorRT version and GPU of this machine; BackendUnavailable when either is missing."""
    from equiseg_ros.inference import _cuda

    trt = _trt()
    dev = _cuda.cuda_device(device_id)
    return DeviceInfo(gpu_name=dev.name, compute_capability=dev.compute_capability, tensorrt_version=trt.__version__,
                      multiprocessors=dev.multiprocessors, total_memory_mib=dev.total_memory_mib)


class _Reporter:
    """Progress lines to the logger and to ``on_progress`` (whose failures are logged, never raised)."""

    def __init__(self, on_progress: Progress | None) -> None:
        self.on_progress = on_progress
        self.lock = threading.Lock()

    def __call__(self, msg: str, level: int = logging.INFO) -> None:
        log.log(level, msg)
        if self.on_progress is not None:
            with self.lock:
                try:
                    self.on_progress(msg)
                except Exception:
                    log.exception("on_progress callback failed")


def _make_logger(trt: Any) -> Any:
    """A TensorRT ILogger that forwards to Python logging and keeps the errors for the failure message."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            sev = int(severity)  # INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3, VERBOSE 4
            if sev <= 1:
                self.errors.append(str(msg))
                log.error("TensorRT: %s", msg)
            elif sev == 2:
                log.warning("TensorRT: %s", msg)
            elif sev == 3:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def _make_monitor(trt: Any, report: _Reporter, cancel: threading.Event | None, interval_s: float = 2.0) -> Any:
    """An IProgressMonitor: top-level phases always reported, steps at most every ``interval_s``; returns False
    from ``step_complete`` once ``cancel`` is set, which asks TensorRT to stop the build."""

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.phases: dict[str, tuple[str | None, int]] = {}
            self.last = 0.0
            self.lock = threading.Lock()

        def _path(self, name: str) -> str:
            parts, seen = [name], {name}
            parent = self.phases.get(name, (None, 0))[0]
            while parent and parent not in seen:
                parts.append(parent)
                seen.add(parent)
                parent = self.phases.get(parent, (None, 0))[0]
            return " > ".join(reversed(parts))

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self.lock:
                self.phases[phase_name] = (parent_phase, int(num_steps))
                now = time.monotonic()
                if parent_phase is None or now - self.last >= interval_s:
                    self.last = now
                    report(f"TensorRT build: {self._path(phase_name)} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self.lock:
                n = self.phases.get(phase_name, (None, 0))[1]
                now = time.monotonic()
                if now - self.last >= interval_s or (self.phases.get(phase_name, (None,))[0] is None
                                                     and step + 1 == n):
                    self.last = now
                    report(f"TensorRT build: {self._path(phase_name)} step {step + 1}/{n}")
            if cancel is not None and cancel.is_set():
                report("TensorRT build: cancel requested, stopping", logging.WARNING)
                return False
            return True

        def phase_finish(self, phase_name: str) -> None:
            with self.lock:
                self.phases.pop(phase_name, None)

    return _Monitor()


def prepared_onnx_path(onnx_path: str | Path, req: EngineRequest, folder: str | Path) -> Path:
    """Where an INT8 build keeps its Q/DQ graph (device independent; reused by rebuilds after an upgrade)."""
    calib = (req.calibration_sha256 or "nocalib")[:12]
    recipe = req.graph_recipe.split(":")[-1][:8]
    return Path(folder) / f"{Path(onnx_path).stem}.int8.{recipe}.{calib}.qdq.onnx"


def prepare_graph(onnx_path: Path, req: EngineRequest, report: _Reporter) -> bytes:
    """The bytes TensorRT parses: the ONNX as exported (fp32, no onnx import), its FP16 rewrite, or its Q/DQ graph."""
    if req.precision == "fp32":
        return Path(onnx_path).read_bytes()
    try:
        import onnx
    except ImportError as exc:
        raise EngineBuildError(f"a {req.precision} engine needs the 'onnx' package to prepare its graph "
                               f"({exc})") from None
    if req.precision == "fp16":
        from equiseg_ros.inference._fp16 import cast_count, to_fp16

        report("preparing the FP16 graph (FP16 end to end; statistics and shape arithmetic FP32)")
        model = to_fp16(onnx.load(str(onnx_path)))
        report(f"FP16 graph ready: {len(model.graph.node)} nodes, {cast_count(model)} casts")
        return model.SerializeToString()
    prepared = Path(req.prepared_onnx) if req.prepared_onnx else None
    if prepared is not None and prepared.is_file():
        report(f"reusing the INT8 Q/DQ graph {prepared.name}")
        return prepared.read_bytes()
    calib = Path(req.calibration_dir) if req.calibration_dir else None
    if calib is None or not calib.is_dir():
        raise EngineBuildError(f"{onnx_path}: an int8 engine needs its calibration frames, and neither the folder "
                               f"({req.calibration_dir!r}) nor a saved Q/DQ graph ({req.prepared_onnx!r}) exists; "
                               "rebuild with --int8-calib DIR")
    from equiseg_ros.inference._onnx_prep import calibration_files, calibration_sha256, quantize_qdq

    if req.calibration_sha256 and calibration_sha256(calibration_files(calib)) != req.calibration_sha256:
        raise EngineBuildError(f"{calib}: calibration frames changed since this engine was keyed; rebuild with "
                               "--int8-calib")
    target = prepared or Path(onnx_path).with_suffix(".qdq.onnx")
    report(f"calibrating INT8 on {calib} (ONNX Runtime static quantizer)")
    tmp = target.with_name(f".{target.name}.tmp")
    quantize_qdq(onnx_path, calib, tmp)
    tmp.replace(target)
    return target.read_bytes()


def _save_timing_cache(config: Any, path: Path, report: _Reporter) -> None:
    try:
        blob = bytes(memoryview(config.get_timing_cache().serialize()))
        atomic_write(path, lambda f: f.write(blob))
        report(f"timing cache saved: {path.name} ({len(blob)} bytes)", logging.DEBUG)
    except Exception as exc:  # never lose the build over the cache
        log.warning("could not save the TensorRT timing cache %s: %s", path, exc)


def build_serialized_engine(onnx_path: Path, req: EngineRequest, timing_cache: Path, *, workspace_mb: int = 2048,
                            int8_calib: str | Path | None = None, on_progress: Progress | None = None,
                            cancel: threading.Event | None = None, cuda: Any = None) -> bytes:
    """Parse the prepared graph into a strongly typed network and build a serialized engine.

    fp32: the ONNX as exported. fp16: the FP16 graph (``_fp16.to_fp16``), since the FP16 builder flag is a
    weak-typing API (deprecated in 10.12, removed in 11). int8: Q/DQ with scales calibrated on the request's
    calibration folder (or the Q/DQ graph saved by an earlier build). Runs on ``cuda``'s device when given.
    """
    report = _Reporter(on_progress)
    trt = _trt()
    if cuda is not None:
        cuda.use()
    if int8_calib and not req.calibration_dir:
        from dataclasses import replace

        req = replace(req, calibration_dir=str(int8_calib))
    if cancel is not None and cancel.is_set():
        raise BuildCancelled(f"{onnx_path}: engine build cancelled before it started")
    data = prepare_graph(Path(onnx_path), req, report)
    try:
        import onnx

        from equiseg_ros.inference._trt_ops import trt_problems

        problems = trt_problems(onnx.ModelProto.FromString(data))
    except ImportError:
        problems = []  # fp32 without the onnx package: TensorRT's parser is the judge
    if problems:
        raise EngineBuildError(f"{onnx_path}: the {req.precision} graph has {len(problems)} op(s) TensorRT 10's "
                               f"ONNX parser rejects: {'; '.join(problems[:5])}")
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    if builder is None:
        raise EngineBuildError("TensorRT could not create a builder (see the TensorRT log)")
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    report(f"parsing the {req.precision} graph ({len(data) >> 20} MiB)")
    if not parser.parse(data):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed: {'; '.join(errors) or 'no detail'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    dynamic = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        if any(int(d) < 0 for d in t.shape):
            if t.name not in req.input_shapes:
                raise EngineBuildError(f"{onnx_path}: no profile shape for dynamic input {t.name!r}")
            dynamic[t.name] = req.input_shapes[t.name]
    if dynamic:  # a static network needs no profile; a dynamic one gets exactly one shape
        profile = builder.create_optimization_profile()
        for name, shp in dynamic.items():
            profile.set_shape(name, shp["min"], shp["opt"], shp["max"])
        if config.add_optimization_profile(profile) < 0:
            raise EngineBuildError(f"{onnx_path}: TensorRT refused the optimisation profile {dynamic}")
    monitor = _make_monitor(trt, report, cancel) if hasattr(trt, "IProgressMonitor") else None
    if monitor is not None:  # kept referenced until the build is over (TensorRT does not own it)
        config.progress_monitor = monitor
    blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, False):  # False: TensorRT refused it (other device or version)
        report(f"timing cache {timing_cache.name} refused by TensorRT (another device or version); starting a fresh "
               "one", logging.WARNING)
        cache = config.create_timing_cache(b"")
        if not config.set_timing_cache(cache, False):
            report("TensorRT refused an empty timing cache too; building without one", logging.WARNING)
            cache = None
    report("building the engine (kernel timing; minutes on a Jetson)")
    t0 = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if cache is not None:
            _save_timing_cache(config, timing_cache, report)
    if serialized is None:
        if cancel is not None and cancel.is_set():
            raise BuildCancelled(f"{onnx_path}: engine build cancelled; the timing cache keeps what was learned")
        detail = "; ".join(logger.errors[-3:]) or "see the TensorRT log"
        raise EngineBuildError(f"{onnx_path}: TensorRT failed to build a {req.precision} engine ({detail})")
    report(f"engine built in {time.perf_counter() - t0:.0f} s")
    return bytes(memoryview(serialized))


def _int8_from_slot(onnx_path: Path, req: EngineRequest, dev: DeviceInfo, cache_dir: str | Path | None
                    ) -> dict[str, Any]:
    """For int8 without a calibration folder: the calibration facts of the engine already in this slot."""
    try:
        side = read_sidecar(sidecar_path(engine_path_for(onnx_path, req, dev, cache_dir)))
    except EngineCacheError:
        return {}
    return {k: side.get(k) for k in ("calibration_sha256", "calibration_dir", "prepared_onnx") if side.get(k)}


def resolve_engine(path: Path, dev: DeviceInfo, *, cache_dir: str | Path | None, precision: str, rebuild: bool,
                   builder: Callable[[Path, EngineRequest, Path], bytes], size: tuple[int, int] | None = None,
                   batch: int = 1, calibration_sha256: str | None = None, calibration_dir: str | Path | None = None,
                   force: str | None = None, on_progress: Progress | None = None) -> tuple[Path, dict[str, Any]]:
    """(engine path, sidecar) that is valid for ``dev``: from an ONNX via the cache, or an engine checked
    against its sidecar (rebuilt from the sidecar's ONNX when allowed). ``force`` (a reason) rebuilds even a
    matching engine. Pure logic: ``dev`` and ``builder`` are parameters so the tests can use fake devices."""
    from dataclasses import replace

    from equiseg_ros.inference._onnx_prep import request_for_onnx

    path = Path(path)
    kind = artifact_kind(path)
    if kind == "engine":
        side = read_sidecar(sidecar_path(path))
        problems = ([force] if force else []) + device_mismatches(side, dev) + check_engine_file(path, side)
        if not problems:
            return path, side
        onnx = sidecar_onnx(side, path)
        if not rebuild or onnx is None:
            why = "rebuilding is disabled" if not rebuild else f"its ONNX ({side.get('onnx_file')}) is not available"
            raise EngineMismatchError(f"{path}: will not run this engine ({'; '.join(problems)}) and {why}")
        shapes = side["input_shapes"]["x"]["opt"]
        cache_dir = cache_dir or path.parent  # the rebuilt engine goes where the stale one was
        precision, size, batch = side["precision"], (shapes[3], shapes[4]), shapes[0]
        calibration_sha256 = calibration_sha256 or side.get("calibration_sha256")
        calibration_dir = calibration_dir or side.get("calibration_dir")
        force = "; ".join(problems)
        path = onnx
    elif kind != "onnx":
        raise BackendError(f"{path}: TensorRT runs .onnx or .engine files, not a {kind}")
    req = request_for_onnx(path, precision, size, batch, calibration_sha256, calibration_dir=calibration_dir)
    extra: dict[str, Any] = {}
    if precision == "int8":
        if req.calibration_sha256 is None:
            slot = _int8_from_slot(path, req, dev, cache_dir)
            req = replace(req, calibration_sha256=slot.get("calibration_sha256"),
                          calibration_dir=req.calibration_dir or slot.get("calibration_dir"))
        prepared = prepared_onnx_path(path, req, cache_dir or path.parent)
        req = replace(req, prepared_onnx=str(prepared))
        extra = {"calibration_dir": req.calibration_dir, "prepared_onnx": str(prepared)}
    result = EngineCache(cache_dir, rebuild).resolve(path, req, dev, builder, force=force, on_progress=on_progress,
                                                     **extra)
    if result.built:
        log.info("built TensorRT engine %s (%s)", result.engine_path, result.reason)
    else:
        _Reporter(on_progress)(f"using prebuilt TensorRT engine {result.engine_path}", logging.DEBUG)
    return result.engine_path, result.sidecar


class TensorRTBackend(Backend):
    """Runs a TensorRT engine with ``execute_async_v3``; pinned host and device buffers are allocated once."""

    name = "tensorrt"
    OPTIONS = frozenset({"cache_dir", "precision", "rebuild", "build_on_start", "device_id", "workspace_mb",
                         "int8_calib", "size", "batch", "timing_window", "on_progress", "cancel"})

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("tensorrt") is None:
            return "TensorRT is not installed (no Python module 'tensorrt')"
        return None

    def __init__(self, path: str | Path, *, cache_dir: str | Path | None = None, precision: str = "fp32",
                 rebuild: bool = True, build_on_start: bool = True, device_id: int = 0, workspace_mb: int = 2048,
                 int8_calib: str | Path | None = None, size: tuple[int, int] | None = None, batch: int = 1,
                 timing_window: int = 200, on_progress: Progress | None = None,
                 cancel: threading.Event | None = None) -> None:
        from equiseg_ros.inference import _cuda

        path = Path(path)
        trt = _trt()
        dev = current_device(device_id)
        # libcudart found and this GPU made current before any build: a missing runtime is known now, not after
        # minutes of building, and the engine is built on the GPU whose name it carries.
        self.cuda = _cuda.CudaRuntime(device_id)
        self._trt = trt
        try:
            self._open(path, dev, cache_dir=cache_dir, precision=precision, may_build=rebuild and build_on_start,
                       device_id=device_id, workspace_mb=workspace_mb, int8_calib=int8_calib, size=size,
                       batch=batch, timing_window=timing_window, on_progress=on_progress, cancel=cancel)
        except BackendError:
            self.close()
            raise
        except Exception as exc:  # TensorRT's bindings raise RuntimeError/TypeError...: fall back, with the reason
            self.close()
            log.debug("TensorRT backend failed", exc_info=True)
            raise EngineBuildError(f"{path}: TensorRT failed ({type(exc).__name__}: {exc})") from exc

    def _open(self, path: Path, dev: DeviceInfo, *, cache_dir, precision, may_build, device_id, workspace_mb,
              int8_calib, size, batch, timing_window, on_progress, cancel) -> None:
        trt, cuda = self._trt, self.cuda
        calib_sha = None
        if precision == "int8" and int8_calib:
            from equiseg_ros.inference._onnx_prep import calibration_files, calibration_sha256

            calib_sha = calibration_sha256(calibration_files(int8_calib))

        def builder(onnx: Path, req: EngineRequest, timing: Path) -> bytes:
            return build_serialized_engine(onnx, req, timing, workspace_mb=workspace_mb, on_progress=on_progress,
                                           cancel=cancel, cuda=cuda)

        def resolve(force: str | None = None) -> tuple[Path, dict[str, Any]]:
            return resolve_engine(path, dev, cache_dir=cache_dir, precision=precision, rebuild=may_build,
                                  builder=builder, size=size, batch=batch, calibration_sha256=calib_sha,
                                  calibration_dir=int8_calib, force=force, on_progress=on_progress)

        engine_path, side = resolve()
        self._logger = _make_logger(trt)
        self.runtime = trt.Runtime(self._logger)
        if self.runtime is None:
            raise EngineBuildError("TensorRT could not create a runtime (see the TensorRT log)")
        cuda.use()
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            why = f"TensorRT could not deserialize {engine_path.name} ({'; '.join(self._logger.errors[-2:])})"
            if not may_build:
                raise EngineBuildError(f"{engine_path}: {why}, and building is disabled here")
            _Reporter(on_progress)(f"{why}; rebuilding it once", logging.WARNING)
            engine_path, side = resolve(force=why)
            cuda.use()
            self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if self.engine is None:
                raise EngineBuildError(f"{engine_path}: TensorRT could not deserialize the engine it just built")
        self.sidecar = side
        spec = sidecar_spec(side, sidecar_path(engine_path))
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineBuildError(f"{engine_path}: TensorRT could not create an execution context (out of device "
                                   "memory?)")
        shapes = {k: v["opt"] for k, v in side["input_shapes"].items()}
        self.host: dict[str, np.ndarray] = {}
        self.device_ptr: dict[str, int] = {}
        inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs.append(name)
                if any(int(d) < 0 for d in self.engine.get_tensor_shape(name)):  # static inputs need no shape
                    if name not in shapes or not self.context.set_input_shape(name, shapes[name]):
                        raise EngineBuildError(f"{engine_path}: TensorRT refused input shape {shapes.get(name)} "
                                               f"for {name!r}")
            else:
                self.outputs.append(name)
        if sorted(inputs) != ["present", "x"] or sorted(self.outputs) != ["confidence", "labels"]:
            raise EngineBuildError(f"{engine_path}: engine has inputs {inputs} and outputs {self.outputs}, expected "
                                   "x, present -> labels, confidence")
        for name in inputs + self.outputs:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            want = {"x": ("float32",), "present": ("bool",), "labels": ("uint8", "int32", "int64"),
                    "confidence": ("float16", "float32")}[name]
            if dtype.name not in want:
                raise EngineBuildError(f"{engine_path}: engine tensor {name!r} is {dtype.name}, expected {want}")
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineBuildError(f"{engine_path}: shape of {name!r} unresolved: {shape}")
            self.host[name] = cuda.host_array(shape, dtype)  # pinned, filled in place by infer
            self.device_ptr[name] = cuda.malloc(self.host[name].nbytes)
            if self.context.set_tensor_address(name, self.device_ptr[name]) is False:
                raise EngineBuildError(f"{engine_path}: TensorRT refused the address of {name!r}")
        x = shapes["x"]
        super().__init__(engine_path, spec, device=f"cuda:{device_id}", fixed_hw=(x[3], x[4]), fixed_batch=x[0],
                         timing_window=timing_window)

    def describe(self) -> dict[str, Any]:
        keep = ("precision", "tensorrt_version", "gpu_name", "compute_capability", "multiprocessors", "key")
        return {**super().describe(), **{k: self.sidecar.get(k) for k in keep}}

    def _run(self, x: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cuda = self.cuda
        cuda.use()  # the caller may be another thread than the one that opened the backend
        for name, arr in (("x", x), ("present", present)):
            host = self.host[name]
            host[...] = arr  # the one host copy: straight into pinned memory
            cuda.to_device(self.device_ptr[name], host.ctypes.data, host.nbytes)
        if not self.context.execute_async_v3(cuda.stream):
            raise BackendError(f"{self.path}: TensorRT execute_async_v3 failed")
        for name in self.outputs:
            host = self.host[name]
            cuda.to_host(host.ctypes.data, self.device_ptr[name], host.nbytes)
        cuda.synchronize()
        return self.host["labels"].astype(np.uint8), self.host["confidence"].astype(np.float32)

    def close(self) -> None:
        self.context = None
        self.engine = None
        if getattr(self, "cuda", None) is not None:
            self.cuda.close()
            self.cuda = None
