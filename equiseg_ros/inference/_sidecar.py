"""The engine sidecar format: where a sidecar sits, how it is read and checked, and which ONNX it names.

Shared by ``backend`` (an ``.engine`` falls back to ONNX Runtime on the ONNX its sidecar names) and
``engine_cache`` (which writes sidecars), so it lives below both. Format ``equiseg_ros.engine/2``: the key fields
(see ``engine_cache.key_fields``), the key, the full spec, the engine's own SHA-256, the source ONNX's path and name,
and build facts. A sidecar of another format is unreadable here, so an engine from an older release is rebuilt.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from equiseg_ros.inference.errors import BackendUnavailable, EngineCacheError
from equiseg_ros.spec import ModelSpec, SpecError

SIDECAR_FORMAT = "equiseg_ros.engine/2"
KEY_FIELD_NAMES = ("onnx_sha256", "spec_sha256", "precision", "input_shapes", "graph_recipe", "tensorrt_version",
                   "gpu_name", "compute_capability", "multiprocessors", "total_memory_mib")


def sidecar_path(engine_path: str | Path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar as a dict; EngineCacheError when missing, not JSON, of another format or incomplete."""
    path = Path(path)
    if not path.is_file():
        raise EngineCacheError(f"{path}: engine sidecar not found (an engine without its sidecar is never run)")
    try:
        side = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EngineCacheError(f"{path}: sidecar is not valid JSON ({exc})") from None
    if not isinstance(side, dict) or side.get("format") != SIDECAR_FORMAT:
        found = side.get("format") if isinstance(side, dict) else None
        raise EngineCacheError(f"{path}: not an equiseg_ros engine sidecar of this release (format {found!r}, "
                               f"expected {SIDECAR_FORMAT!r})")
    missing = [k for k in ("key", "spec", "engine_sha256", *KEY_FIELD_NAMES) if k not in side]
    if missing:
        raise EngineCacheError(f"{path}: sidecar lacks {missing}")
    return side


def sidecar_spec(side: dict[str, Any], where: str | Path = "sidecar") -> ModelSpec:
    try:
        return ModelSpec.from_dict(side["spec"])
    except SpecError as exc:
        raise EngineCacheError(f"{where}: invalid spec in engine sidecar: {exc}") from None


def sidecar_onnx(side: dict[str, Any], engine_path: str | Path) -> Path | None:
    """The ONNX an engine was built from: the recorded absolute path, else a file of that name beside the engine."""
    candidates = [Path(side["onnx_path"])] if side.get("onnx_path") else []
    if side.get("onnx_file"):
        candidates.append(Path(engine_path).parent / side["onnx_file"])
    return next((c for c in candidates if c.is_file()), None)


def engine_onnx(engine_path: str | Path) -> Path:
    """The ONNX an engine was built from, for the ONNX Runtime fallback; BackendUnavailable if it cannot be found."""
    try:
        side = read_sidecar(sidecar_path(engine_path))
    except EngineCacheError as exc:
        raise BackendUnavailable(str(exc)) from None
    onnx = sidecar_onnx(side, engine_path)
    if onnx is None:
        raise BackendUnavailable(f"{engine_path}: the ONNX it was built from ({side.get('onnx_path')!r}, "
                                 f"{side.get('onnx_file')!r}) is not there")
    return onnx
