"""One inference interface for every runtime, and ``load_backend``: the path decides, the machine's abilities pick.

The vehicle runs TensorRT, a laptop or CI runs ONNX Runtime or PyTorch; the node only ever holds a :class:`Backend`.
The model's facts (the :class:`~equiseg_ros.spec.ModelSpec`) always come from the artefact itself (ONNX
``metadata_props``, engine sidecar, checkpoint), never from a separate argument, so a node cannot pair a model
with the wrong classes or normalisation. Nothing here imports torch, onnxruntime or tensorrt at module level.
"""
from __future__ import annotations

import importlib
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from equiseg_ros.inference._onnx_meta import OnnxFormatError, OnnxInfo, read_onnx_info
from equiseg_ros.inference._sidecar import engine_onnx
from equiseg_ros.inference.errors import (  # noqa: F401  (re-exported: callers import the errors from here)
    BackendError,
    BackendUnavailable,
    BuildCancelled,
    EngineBuildError,
    InputError,
    ModelFileNotFound,
)
from equiseg_ros.spec import ModelSpec, SpecError

log = logging.getLogger("equiseg_ros.inference")

# metadata_props keys written by training/export.py and read back here.
META_SPEC = "equiseg_ros.spec"
META_CHECKPOINT = "equiseg_ros.checkpoint_sha256"
META_MODEL = "equiseg_ros.model_config"
META_EXPORT = "equiseg_ros.export"

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
DEFAULT_PREFER = ("tensorrt", "onnxruntime", "torch")


class Backend(ABC):
    """``infer(x f32 [B,M,3,H,W], present bool [B,M]) -> (labels u8 [B,H,W], confidence f32 [B,H,W])``.

    Subclasses set ``name``, ``device``, ``spec``, ``path`` and the artefact's fixed sizes (``None`` = dynamic),
    and implement :meth:`_run`. Inputs are validated here once for all backends; per-call wall time goes to
    :attr:`timings` (a recent window, milliseconds).
    """

    name: str = "?"
    OPTIONS: frozenset[str] = frozenset()  # keyword options load_backend may pass to this backend

    def __init__(self, path: str | Path, spec: ModelSpec, *, device: str = "cpu",
                 fixed_hw: tuple[int, int] | None = None, fixed_batch: int | None = None,
                 timing_window: int = 200) -> None:
        self.path = Path(path)
        self.spec = spec
        self.device = device
        self.fixed_hw = fixed_hw
        self.fixed_batch = fixed_batch
        self._timings: deque[float] = deque(maxlen=timing_window)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run on this machine (None = it can); must not import heavy libraries twice."""
        return None

    # ---- facts ------------------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) to feed: the artefact's fixed size, or the spec's deployed size when the graph is dynamic."""
        return tuple(self.fixed_hw) if self.fixed_hw else tuple(self.spec.input_size)

    @property
    def dynamic_size(self) -> bool:
        return self.fixed_hw is None

    @property
    def timings(self) -> list[float]:
        """Wall time of recent ``infer`` calls in milliseconds (oldest first)."""
        return list(self._timings)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "path": str(self.path), "spec": self.spec.name,
                "modalities": list(self.spec.modality_names), "input_size": list(self.input_size),
                "dynamic_size": self.dynamic_size}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.device}: {self.path.name}>"

    # ---- running ----------------------------------------------------------------------------------
    def check_inputs(self, x: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raise InputError (expected vs got) unless x and present match this model; return contiguous arrays."""
        m = self.spec.num_modalities
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
            raise InputError(f"x: expected a float32 array [B,{m},3,H,W], got dtype {got}")
        if x.ndim != 5 or x.shape[1] != m or x.shape[2] != 3:
            raise InputError(f"x: expected shape [B,{m},3,H,W] (modalities {list(self.spec.modality_names)}), "
                             f"got {list(x.shape)}")
        b, h, w = x.shape[0], x.shape[3], x.shape[4]
        if self.fixed_hw and (h, w) != tuple(self.fixed_hw):
            raise InputError(f"x: this model was exported for H,W = {list(self.fixed_hw)}, got {[h, w]}")
        if not self.fixed_hw and (h % 32 or w % 32 or h <= 0 or w <= 0):
            raise InputError(f"x: H and W must be positive multiples of 32, got {[h, w]}")
        if self.fixed_batch is not None and b != self.fixed_batch:
            raise InputError(f"x: this model was exported for batch {self.fixed_batch}, got batch {b}")
        if not isinstance(present, np.ndarray) or present.dtype != np.bool_:
            got = present.dtype if isinstance(present, np.ndarray) else type(present).__name__
            raise InputError(f"present: expected a bool array [B,{m}], got dtype {got}")
        if present.shape != (b, m):
            raise InputError(f"present: expected shape {[b, m]}, got {list(present.shape)}")
        return np.ascontiguousarray(x), np.ascontiguousarray(present)

    def infer(self, x: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validated, timed inference: labels uint8 [B,H,W] and max-softmax confidence float32 [B,H,W]."""
        x, present = self.check_inputs(x, present)
        t0 = time.perf_counter()
        labels, confidence = self._run(x, present)
        self._timings.append((time.perf_counter() - t0) * 1e3)
        return labels.astype(np.uint8, copy=False), confidence.astype(np.float32, copy=False)

    @abstractmethod
    def _run(self, x: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the deployed graph on validated inputs."""

    def example_inputs(self, batch: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Random normalised inputs of the right shape, all modalities present (for warm-up and benchmarks)."""
        h, w = self.input_size
        b = self.fixed_batch or batch
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((b, self.spec.num_modalities, 3, h, w), dtype=np.float32)
        return x, np.ones((b, self.spec.num_modalities), np.bool_)

    def warmup(self, n: int = 3) -> None:
        """Run ``n`` inferences on random inputs (allocations, kernel selection), then forget their timings."""
        x, present = self.example_inputs()
        for _ in range(max(0, n)):
            self._run(*self.check_inputs(x, present))
        self._timings.clear()

    def close(self) -> None:
        """Release runtime resources (sessions, device buffers)."""
        return None

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- reading the spec from artefacts --------------------------------------------------------------------

def read_onnx_info_checked(path: str | Path) -> OnnxInfo:
    path = Path(path)
    if not path.is_file():
        raise ModelFileNotFound(f"{path}: model file not found")
    try:
        return read_onnx_info(path)
    except OnnxFormatError as exc:
        raise BackendError(str(exc)) from None


def read_onnx_spec(path: str | Path) -> ModelSpec:
    """The ModelSpec stored in an exported ONNX file's metadata_props (clear error for a foreign ONNX)."""
    info = read_onnx_info_checked(path)
    text = info.metadata.get(META_SPEC)
    if text is None:
        raise BackendError(f"{path}: ONNX file has no {META_SPEC!r} in metadata_props: not exported by "
                           "equiseg_ros (export it with `python training/export.py`)")
    try:
        return ModelSpec.from_json(text)
    except SpecError as exc:
        raise BackendError(f"{path}: invalid spec in ONNX metadata: {exc}") from None


def onnx_fixed_sizes(info: OnnxInfo, path: str | Path = "?") -> tuple[tuple[int, int] | None, int | None]:
    """(H, W) and batch of the graph input ``x``: ints when fixed, None when dynamic."""
    x = next((t for t in info.inputs if t.name == "x"), None)
    if x is None or len(x.shape) != 5:
        raise BackendError(f"{path}: ONNX input 'x' [B,M,3,H,W] not found (inputs: "
                           f"{[(t.name, t.shape) for t in info.inputs]})")
    h, w = x.shape[3], x.shape[4]
    hw = (h, w) if isinstance(h, int) and isinstance(w, int) else None
    return hw, x.shape[0] if isinstance(x.shape[0], int) else None


def artifact_kind(path: str | Path) -> str:
    """'onnx', 'engine' or 'checkpoint' by file suffix; BackendError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    raise BackendError(f"{path}: unknown model file type {suffix!r}; expected one of "
                       f"{list(ONNX_SUFFIXES + ENGINE_SUFFIXES + CHECKPOINT_SUFFIXES)}")


# ---- choosing a backend ---------------------------------------------------------------------------------

# backend name -> (module, class). Imported only when tried, so a vehicle without torch never imports it.
BACKENDS: dict[str, tuple[str, str]] = {
    "tensorrt": ("equiseg_ros.inference.tensorrt_backend", "TensorRTBackend"),
    "onnxruntime": ("equiseg_ros.inference.onnx_backend", "OnnxRuntimeBackend"),
    "torch": ("equiseg_ros.inference.torch_backend", "TorchBackend"),
}
# artefact kind -> backends that can run it (the engine's ONNX, named in its sidecar, serves ONNX Runtime).
ACCEPTS: dict[str, tuple[str, ...]] = {
    "onnx": ("tensorrt", "onnxruntime"),
    "engine": ("tensorrt", "onnxruntime"),
    "checkpoint": ("torch",),
}


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; known: {list(BACKENDS)}")
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)


def load_backend(path: str | Path, prefer: Sequence[str] | str = DEFAULT_PREFER, **options: Any) -> Backend:
    """Open ``path`` with the first backend of ``prefer`` that can run it here.

    By type: ``.onnx`` → TensorRT (engine built or reused from the cache) or ONNX Runtime; ``.engine/.plan`` →
    TensorRT, else ONNX Runtime on the ONNX named in its sidecar; ``.pt/.pth/.ckpt`` → PyTorch. A backend that is
    unavailable here is skipped; one log line says which backend was chosen and why the others were not. Every
    TensorRT failure on the way (no TensorRT or libcudart, parser errors, a build or deserialisation that returns
    nothing, no execution context, out of device memory, unexpected engine outputs) is such a reason: the node then
    runs ONNX Runtime instead of exiting. An engine that fails to deserialise is rebuilt once (when building is
    allowed) before falling back.

    ``options`` go to the backends that declare them; an option no backend knows is a ``TypeError``:

    - ``intra_op_threads`` (ONNX Runtime, PyTorch): CPU threads, 0 = library default.
    - ``precision``: ``"fp32"`` | ``"fp16"`` | ``"int8"``, the TensorRT engine to use or build (and the ORT
      TensorRT EP's). The engine is ``<cache_dir or beside the ONNX>/<stem>.<precision>.<gpu tag>.<H>x<W>b<B>.engine``
      (``engine_cache.engine_path_for``), the very name ``build_engine`` and ``export.py --engine`` write.
    - ``cache_dir``: folder of engines, sidecars and the timing cache (default: beside the ONNX).
    - ``build_on_start`` (TensorRT, default True): when False and no matching prebuilt engine is found, do not
      build; raise ``BackendUnavailable`` naming the ``build_engine`` command to run, so the chain goes on to ONNX
      Runtime. ``rebuild=False`` is the older spelling of the same switch.
    - ``int8_calib`` (TensorRT): folder of calibration frames for an INT8 build (``*.npz``, ``x`` [M,3,H,W]).
    - ``size`` (H, W) and ``batch`` (TensorRT): the engine's input shape for a dynamic ONNX.
    - ``on_progress`` (TensorRT): ``Callable[[str], None]`` called with short human-readable lines while an engine
      is built (why it is built, graph preparation, TensorRT phases with ``step i/n`` from an IProgressMonitor, the
      result and the time taken), for /rosout and diagnostics. May be called from TensorRT's threads; keep it quick.
      The same lines go to the ``equiseg_ros.inference`` logger. Exceptions it raises are logged and ignored.
    - ``cancel`` (TensorRT): ``threading.Event``; once set, the progress monitor asks TensorRT to stop (its
      ``step_complete`` returns False) and the build raises ``BuildCancelled`` (not a fallback). What the timing
      cache learned so far is saved atomically after every build, finished, failed or cancelled.
    - ``device_id``, ``workspace_mb`` (TensorRT), ``providers``, ``inter_op_threads`` (ONNX Runtime), ``device``,
      ``torch_threads`` (PyTorch), ``timing_window`` (all).
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileNotFound(f"{path}: model file not found")
    kind = artifact_kind(path)
    prefer = [prefer] if isinstance(prefer, str) else list(prefer)
    for name in prefer:
        if name not in BACKENDS:
            raise BackendError(f"prefer: unknown backend {name!r}; known: {list(BACKENDS)}")
    chain = [n for n in prefer if n in ACCEPTS[kind]]
    if not chain:
        raise BackendError(f"{path}: a {kind} file runs on {list(ACCEPTS[kind])}, but prefer={prefer}")
    known = set().union(*(_options_of(n) for n in BACKENDS))
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"load_backend: unknown option(s) {unknown}; known: {sorted(known)}")
    skipped: list[str] = []
    for name in chain:
        try:
            cls = backend_class(name)
        except ImportError as exc:  # the backend module itself needs something missing
            skipped.append(f"{name}: {exc}")
            continue
        try:
            target = path
            if kind == "engine" and name != "tensorrt":
                target = engine_onnx(path)
            reason = cls.unavailable_reason()
            if reason:
                raise BackendUnavailable(reason)
            backend = cls(target, **{k: v for k, v in options.items() if k in cls.OPTIONS})
        except BackendUnavailable as exc:
            skipped.append(f"{name}: {exc}")
            continue
        why = f" (skipped {'; '.join(skipped)})" if skipped else ""
        (log.warning if skipped else log.info)("inference backend %s on %s for %s%s", name, backend.device,
                                               path.name, why)
        return backend
    raise BackendUnavailable(f"{path}: no backend can run this {kind} here: {'; '.join(skipped)}")


def _options_of(name: str) -> Iterable[str]:
    try:
        return backend_class(name).OPTIONS
    except ImportError:
        return ()
