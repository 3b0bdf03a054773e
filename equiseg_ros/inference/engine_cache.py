"""TensorRT engine cache: an engine is only ever run on the GPU, TensorRT and graph it was built for.

Engines are not portable across TensorRT versions or GPUs (TensorRT support matrix), and the ROS anchors either
rebuild on every start (Isaac ROS) or never check (Autoware, jetson-inference). Here every engine sits beside a
sidecar JSON (format in ``_sidecar``) recording what it was built from and for, and the cache key hashes all of it:

- the source ONNX's SHA-256, the spec, precision and the input shapes of its single optimisation profile;
- the *graph recipe*: what turns the source ONNX into the graph TensorRT parses (the FP16 rewrite's code, the INT8
  quantiser's code and options, the onnx / onnxruntime versions that run them, the calibration set). A change to
  any of these rebuilds, so a stale fp16/int8 engine is never reused after an upgrade;
- the device: TensorRT version, GPU name, compute capability, multiprocessor count and total memory (AGX Orin,
  Orin NX and Orin Nano all say "Orin"/sm87; the SM count and memory tell them apart).

File names carry the precision, a device tag and the input size, so one model folder holds engines for several
GPUs and sizes side by side: ``<stem>.<precision>.<gpu>-sm<XY>-<N>sm-<G>g.<H>x<W>b<B>.engine``. On a mismatch the
cache rebuilds or, when building is not allowed here, refuses with every differing field and the command to run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from equiseg_ros.checkpoint import atomic_write, sha256_file
from equiseg_ros.inference._sidecar import (  # noqa: F401  (re-exported)
    KEY_FIELD_NAMES,
    SIDECAR_FORMAT,
    read_sidecar,
    sidecar_path,
    sidecar_spec,
)
from equiseg_ros.inference.errors import EngineCacheError, EngineMismatchError  # noqa: F401  (re-exported)
from equiseg_ros.spec import ModelSpec

log = logging.getLogger("equiseg_ros.inference")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class DeviceInfo:
    """What an engine is bound to on the machine that runs it."""

    gpu_name: str
    compute_capability: str  # "8.7"
    tensorrt_version: str  # "10.3.0.30"
    multiprocessors: int = 0  # SM count: 16 on AGX Orin 64 GB, 8 on Orin NX 16 GB, 4..8 on Orin Nano
    total_memory_mib: int = 0

    @property
    def sm(self) -> str:
        return "sm" + self.compute_capability.replace(".", "")

    @property
    def tag(self) -> str:
        """Short file-name tag naming this GPU: ``orin-sm87-16sm-61g``."""
        name = re.sub(r"^nvidia[ _-]*", "", self.gpu_name.strip().lower())
        slug = re.sub(r"[^a-z0-9]+", "-", re.sub(r"\(.*?\)", "", name)).strip("-")[:24] or "gpu"
        gib = round(self.total_memory_mib / 1024) if self.total_memory_mib else 0
        return f"{slug}-{self.sm}-{self.multiprocessors}sm-{gib}g"


@dataclass(frozen=True)
class EngineRequest:
    """What an engine must be built from: the ONNX, its spec, precision, profile and the graph recipe."""

    onnx_sha256: str
    spec: ModelSpec
    precision: str = "fp32"
    # input name -> {"min": shape, "opt": shape, "max": shape}; one shape per engine (min == opt == max)
    input_shapes: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    calibration_sha256: str | None = None  # int8: which calibration frames produced the Q/DQ scales
    graph_recipe: str = "fp32"  # hash of how the parsed graph is made from the ONNX (see _onnx_prep.graph_recipe)
    # Not part of the key: where an int8 build finds its calibration frames, and its Q/DQ graph once made.
    calibration_dir: str | None = None
    prepared_onnx: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")

    @property
    def hw_batch(self) -> tuple[int, int, int] | None:
        x = self.input_shapes.get("x", {}).get("opt")
        return (int(x[3]), int(x[4]), int(x[0])) if x and len(x) == 5 else None


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
        "graph_recipe": req.graph_recipe,
        "tensorrt_version": dev.tensorrt_version,
        "gpu_name": dev.gpu_name,
        "compute_capability": dev.compute_capability,
        "multiprocessors": dev.multiprocessors,
        "total_memory_mib": dev.total_memory_mib,
    }


def key_fields_names() -> tuple[str, ...]:
    return KEY_FIELD_NAMES


def cache_key(req: EngineRequest, dev: DeviceInfo) -> str:
    return hashlib.sha256(_canonical(key_fields(req, dev)).encode()).hexdigest()[:24]


def engine_path_for(onnx_path: str | Path, req: EngineRequest, dev: DeviceInfo,
                    cache_dir: str | Path | None = None) -> Path:
    """THE engine file name, used by the loader, ``build_engine`` and ``export.py --engine`` alike:
    ``<cache_dir or beside the ONNX>/<stem>.<precision>.<device tag>.<H>x<W>b<B>.engine``."""
    onnx_path = Path(onnx_path)
    folder = Path(cache_dir) if cache_dir else onnx_path.parent
    hwb = req.hw_batch
    size = f".{hwb[0]}x{hwb[1]}b{hwb[2]}" if hwb else ""
    return folder / f"{onnx_path.stem}.{req.precision}.{dev.tag}{size}.engine"


def timing_cache_path(folder: str | Path, dev: DeviceInfo) -> Path:
    """One timing cache per device and TensorRT version in an engine folder (shared by its models): TensorRT
    refuses a cache from another version or another device's properties, so the file name carries both."""
    return Path(folder) / f"trt{dev.tensorrt_version}.{dev.tag}.timing.cache"


def build_command(onnx_path: str | Path, req: EngineRequest, cache_dir: str | Path | None) -> str:
    """The command that builds exactly the engine ``req`` asks for on this machine."""
    parts = ["python -m equiseg_ros.inference.build_engine", f"--onnx {onnx_path}"]
    if req.precision == "fp16":
        parts.append("--fp16")
    elif req.precision == "int8":
        parts.append(f"--int8-calib {req.calibration_dir or 'CALIB_DIR'}")
    if cache_dir:
        parts.append(f"--cache-dir {cache_dir}")
    hwb = req.hw_batch
    if hwb:
        parts.append(f"--size {hwb[0]} {hwb[1]}")
        if hwb[2] != 1:
            parts.append(f"--batch {hwb[2]}")
    return " ".join(parts)


def make_sidecar(req: EngineRequest, dev: DeviceInfo, engine_sha256: str, onnx_path: str | Path,
                 **extra: Any) -> dict[str, Any]:
    onnx_path = Path(onnx_path)
    side = key_fields(req, dev)
    side.update(key=cache_key(req, dev), spec=req.spec.to_dict(), engine_sha256=engine_sha256,
                onnx_file=onnx_path.name, onnx_path=str(onnx_path.resolve()),
                built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra)
    return side


def device_mismatches(side: dict[str, Any], dev: DeviceInfo) -> list[str]:
    """Fields where the engine's build machine differs from ``dev`` (for an engine loaded directly)."""
    out = []
    for name in ("tensorrt_version", "gpu_name", "compute_capability", "multiprocessors", "total_memory_mib"):
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
        engine = engine_path_for(onnx_path, req, dev, self.cache_dir)
        if not engine.exists():
            return engine, [f"no engine at {engine}"]
        try:
            side = read_sidecar(sidecar_path(engine))
        except EngineCacheError as exc:
            return engine, [str(exc)]
        return engine, mismatches(side, req, dev) + check_engine_file(engine, side)

    def resolve(self, onnx_path: str | Path, req: EngineRequest, dev: DeviceInfo, builder: Builder, *,
                force: str | None = None, on_progress: Callable[[str], None] | None = None,
                **sidecar_extra: Any) -> CacheResult:
        """The cached engine, or a new one from ``builder``. ``force`` (a reason) rebuilds even on a cache hit,
        e.g. after TensorRT failed to deserialise the cached engine."""
        onnx_path = Path(onnx_path)
        engine, problems = self.lookup(onnx_path, req, dev)
        if force:
            problems = [force] + problems
        if not problems:
            return CacheResult(engine, read_sidecar(sidecar_path(engine)), False, "cache hit")
        reason = "; ".join(problems)
        if not self.rebuild:
            raise EngineMismatchError(f"{engine}: no usable prebuilt TensorRT engine ({reason}) and building on "
                                      f"start is disabled; build it on this machine with `"
                                      f"{build_command(onnx_path, req, self.cache_dir)}`")
        msg = f"building TensorRT engine {engine.name} ({reason}); this can take minutes"
        log.warning(msg)
        if on_progress is not None:
            try:
                on_progress(msg)
            except Exception:  # a reporting problem must never stop the build
                log.exception("on_progress callback failed")
        t0 = time.perf_counter()
        data = builder(onnx_path, req, timing_cache_path(engine.parent, dev))
        seconds = round(time.perf_counter() - t0, 2)
        engine.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(engine, lambda f: f.write(data))
        side = make_sidecar(req, dev, hashlib.sha256(data).hexdigest(), onnx_path, build_seconds=seconds,
                            **sidecar_extra)
        # The sidecar is written last: a crash in between leaves an engine without a sidecar, which is rebuilt.
        atomic_write(sidecar_path(engine), lambda f: f.write(json.dumps(side, indent=1, sort_keys=True).encode()))
        return CacheResult(engine, side, True, reason)


def describe(side: dict[str, Any]) -> dict[str, Any]:
    """The sidecar without the bulky spec, for logs."""
    return {k: v for k, v in side.items() if k != "spec"} | {"spec": side.get("spec", {}).get("name")}
