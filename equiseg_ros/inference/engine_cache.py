"""TensorRT engine cache: an engine is only ever run on the GPU, TensorRT and model it was built for.

Engines are not portable across TensorRT versions or GPU architectures (TensorRT support matrix), and the ROS anchors
either rebuild on every start (Isaac ROS) or never check (Autoware, jetson-inference). Here every engine sits beside
a sidecar JSON recording what it was built from and for: the spec, the ONNX's SHA-256, the TensorRT version, GPU
name and compute capability, precision, input shapes (and the engine's own SHA-256, so a truncated or swapped file
is caught). The cache key hashes all of these. On a mismatch the cache rebuilds, or, when rebuilding is disabled,
refuses with a message that names every field that differs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from equiseg_ros.checkpoint import atomic_write
from equiseg_ros.inference.backend import BackendError, BackendUnavailable
from equiseg_ros.spec import ModelSpec, SpecError

log = logging.getLogger("equiseg_ros.inference")
SIDECAR_FORMAT = "equiseg_ros.engine/1"
PRECISIONS = ("fp32", "fp16", "int8")


class EngineCacheError(BackendError):
    """A sidecar is missing or unreadable."""


class EngineMismatchError(BackendUnavailable):
    """The cached engine does not match this machine or model and rebuilding is disabled."""


@dataclass(frozen=True)
class DeviceInfo:
    """What an engine is bound to on the machine that runs it."""

    gpu_name: str
    compute_capability: str  # "8.7"
    tensorrt_version: str  # "10.9.0.34"

    @property
    def sm(self) -> str:
        return "sm" + self.compute_capability.replace(".", "")


@dataclass(frozen=True)
class EngineRequest:
    """What an engine must be built from: the ONNX, its spec, precision and the optimisation profile."""

    onnx_sha256: str
    spec: ModelSpec
    precision: str = "fp32"
    # input name -> {"min": shape, "opt": shape, "max": shape}; static inputs have min == opt == max
    input_shapes: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    calibration_sha256: str | None = None  # int8: which calibration frames produced the Q/DQ scales

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def key_fields(req: EngineRequest, dev: DeviceInfo) -> dict[str, Any]:
    """The facts an engine is valid for (all of them go into the key and the sidecar)."""
    return {
        "format": SIDECAR_FORMAT,
        "onnx_sha256": req.onnx_sha256,
        "spec_sha256": hashlib.sha256(req.spec.to_json().encode()).hexdigest(),
        "precision": req.precision,
        "input_shapes": req.input_shapes,
        "calibration_sha256": req.calibration_sha256,
        "tensorrt_version": dev.tensorrt_version,
        "gpu_name": dev.gpu_name,
        "compute_capability": dev.compute_capability,
    }


def cache_key(req: EngineRequest, dev: DeviceInfo) -> str:
    return hashlib.sha256(_canonical(key_fields(req, dev)).encode()).hexdigest()[:24]


def sidecar_path(engine_path: str | Path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def engine_path_for(onnx_path: str | Path, precision: str, dev: DeviceInfo,
                    cache_dir: str | Path | None = None) -> Path:
    """``<cache_dir or beside the ONNX>/<stem>.<precision>.<smXY>.engine``: one slot per model, precision and GPU
    architecture, so a shared model folder can hold engines for several vehicles."""
    onnx_path = Path(onnx_path)
    folder = Path(cache_dir) if cache_dir else onnx_path.parent
    return folder / f"{onnx_path.stem}.{precision}.{dev.sm}.engine"


def timing_cache_path(engine_path: str | Path, dev: DeviceInfo) -> Path:
    """Kept beside the engine; TensorRT only reuses a timing cache of the exact same version."""
    p = Path(engine_path)
    return p.parent / f"{p.stem.split('.')[0]}.{dev.sm}.trt{dev.tensorrt_version}.timing.cache"


def make_sidecar(req: EngineRequest, dev: DeviceInfo, engine_sha256: str, onnx_path: str | Path,
                 **extra: Any) -> dict[str, Any]:
    onnx_path = Path(onnx_path)
    side = key_fields(req, dev)
    side.update(key=cache_key(req, dev), spec=req.spec.to_dict(), engine_sha256=engine_sha256,
                onnx_file=onnx_path.name, onnx_path=str(onnx_path.resolve()),
                built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra)
    return side


def read_sidecar(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise EngineCacheError(f"{path}: engine sidecar not found (an engine without its sidecar is never run)")
    try:
        side = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EngineCacheError(f"{path}: sidecar is not valid JSON ({exc})") from None
    if not isinstance(side, dict) or side.get("format") != SIDECAR_FORMAT:
        found = side.get("format") if isinstance(side, dict) else None
        raise EngineCacheError(f"{path}: not an equiseg_ros engine sidecar (format {found!r}, "
                               f"expected {SIDECAR_FORMAT!r})")
    missing = [k for k in ("key", "spec", "engine_sha256", *key_fields_names()) if k not in side]
    if missing:
        raise EngineCacheError(f"{path}: sidecar lacks {missing}")
    return side


def key_fields_names() -> tuple[str, ...]:
    return ("onnx_sha256", "spec_sha256", "precision", "input_shapes", "tensorrt_version", "gpu_name",
            "compute_capability")


def sidecar_spec(side: dict[str, Any], where: str | Path = "sidecar") -> ModelSpec:
    try:
        return ModelSpec.from_dict(side["spec"])
    except SpecError as exc:
        raise EngineCacheError(f"{where}: invalid spec in engine sidecar: {exc}") from None


def device_mismatches(side: dict[str, Any], dev: DeviceInfo) -> list[str]:
    """Fields where the engine's build machine differs from ``dev`` (for an engine loaded directly)."""
    out = []
    for name in ("tensorrt_version", "gpu_name", "compute_capability"):
        if side.get(name) != getattr(dev, name):
            out.append(f"{name}: engine built for {side.get(name)!r}, this machine has {getattr(dev, name)!r}")
    return out


def mismatches(side: dict[str, Any], req: EngineRequest, dev: DeviceInfo) -> list[str]:
    """Every key field that differs between a sidecar and what is needed now (empty list = reusable)."""
    want = key_fields(req, dev)
    out = []
    for name, value in want.items():
        if side.get(name) != value:
            out.append(f"{name}: engine has {side.get(name)!r}, need {value!r}")
    return out


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def check_engine_file(engine_path: str | Path, side: dict[str, Any]) -> list[str]:
    """The engine file is there and is the one the sidecar describes."""
    p = Path(engine_path)
    if not p.is_file():
        return [f"{p.name}: engine file missing"]
    if sha256_file(p) != side.get("engine_sha256"):
        return [f"{p.name}: engine file does not match its sidecar's SHA-256 (truncated or replaced)"]
    return []


# builder(onnx_path, request, timing_cache_path) -> serialized engine bytes
Builder = Callable[[Path, EngineRequest, Path], bytes]


@dataclass
class CacheResult:
    engine_path: Path
    sidecar: dict[str, Any]
    built: bool
    reason: str  # why it was (re)built, or "cache hit"


class EngineCache:
    """Find a matching engine for (ONNX, request, device) or build it; ``rebuild=False`` refuses instead."""

    def __init__(self, cache_dir: str | Path | None = None, rebuild: bool = True) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.rebuild = rebuild

    def lookup(self, onnx_path: str | Path, req: EngineRequest, dev: DeviceInfo) -> tuple[Path, list[str]]:
        """(engine path, reasons it cannot be used); no reasons = cache hit."""
        engine = engine_path_for(onnx_path, req.precision, dev, self.cache_dir)
        if not engine.exists():
            return engine, [f"no engine at {engine}"]
        try:
            side = read_sidecar(sidecar_path(engine))
        except EngineCacheError as exc:
            return engine, [str(exc)]
        return engine, mismatches(side, req, dev) + check_engine_file(engine, side)

    def resolve(self, onnx_path: str | Path, req: EngineRequest, dev: DeviceInfo, builder: Builder,
                **sidecar_extra: Any) -> CacheResult:
        onnx_path = Path(onnx_path)
        engine, problems = self.lookup(onnx_path, req, dev)
        if not problems:
            return CacheResult(engine, read_sidecar(sidecar_path(engine)), False, "cache hit")
        reason = "; ".join(problems)
        if not self.rebuild:
            raise EngineMismatchError(f"{engine}: cannot use the cached TensorRT engine ({reason}) and rebuilding "
                                      "is disabled; build it on this machine with `python -m "
                                      f"equiseg_ros.inference.build_engine --onnx {onnx_path}`")
        log.warning("building TensorRT engine %s (%s); this can take minutes", engine.name, reason)
        t0 = time.perf_counter()
        data = builder(onnx_path, req, timing_cache_path(engine, dev))
        seconds = round(time.perf_counter() - t0, 2)
        atomic_write(engine, lambda f: f.write(data))
        side = make_sidecar(req, dev, hashlib.sha256(data).hexdigest(), onnx_path, build_seconds=seconds,
                            **sidecar_extra)
        # The sidecar is written last: a crash in between leaves an engine without a sidecar, which is rebuilt.
        atomic_write(sidecar_path(engine), lambda f: f.write(json.dumps(side, indent=1, sort_keys=True).encode()))
        return CacheResult(engine, side, True, reason)


def describe(side: dict[str, Any]) -> dict[str, Any]:
    """The sidecar without the bulky spec, for logs."""
    return {k: v for k, v in side.items() if k != "spec"} | {"spec": side.get("spec", {}).get("name")}


