"""ONNX Runtime backend: TensorRT EP → CUDA EP → CPU, whichever this onnxruntime build offers."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from equiseg_ros.inference.backend import (
    Backend,
    BackendError,
    BackendUnavailable,
    onnx_fixed_sizes,
    read_onnx_info_checked,
    read_onnx_spec,
)

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: Sequence[str], wanted: Sequence[str] | None = None) -> list[str]:
    """``wanted`` (default: TensorRT EP, CUDA EP, CPU) filtered to what this onnxruntime build has, in order."""
    order = list(wanted) if wanted else list(PROVIDER_ORDER)
    chosen = [p for p in order if p in available]
    if not chosen:
        raise BackendUnavailable(f"none of the execution providers {order} is available (have {list(available)})")
    return chosen


def provider_options(providers: Sequence[str], *, cache_dir: str | Path | None, precision: str,
                     device_id: int = 0) -> list[dict[str, Any]]:
    """Per-provider options: the TensorRT EP caches its engines (keyed by ORT on graph, GPU arch and precision)."""
    opts: list[dict[str, Any]] = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            o: dict[str, Any] = {"device_id": device_id, "trt_fp16_enable": precision == "fp16"}
            if cache_dir is not None:
                o.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
            opts.append(o)
        elif p == "CUDAExecutionProvider":
            opts.append({"device_id": device_id})
        else:
            opts.append({})
    return opts


class OnnxRuntimeBackend(Backend):
    """Runs an exported ONNX (spec in metadata) with onnxruntime."""

    name = "onnxruntime"
    OPTIONS = frozenset({"providers", "intra_op_threads", "inter_op_threads", "device_id", "cache_dir",
                         "precision", "timing_window"})

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed"
        return None

    def __init__(self, path: str | Path, *, providers: Sequence[str] | None = None,
                 intra_op_threads: int = 0, inter_op_threads: int = 1, device_id: int = 0,
                 cache_dir: str | Path | None = None, precision: str = "fp32", timing_window: int = 200) -> None:
        path = Path(path)
        info = read_onnx_info_checked(path)
        spec = read_onnx_spec(path)
        fixed_hw, fixed_batch = onnx_fixed_sizes(info, path)
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        import onnxruntime as ort

        chosen = choose_providers(ort.get_available_providers(), providers)
        if cache_dir is None and "TensorrtExecutionProvider" in chosen:
            cache_dir = path.parent / "ort_trt_cache"  # else the TensorRT EP rebuilds its engines on every start
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(intra_op_threads)  # 0 = onnxruntime's default (one per physical core)
        so.inter_op_num_threads = int(inter_op_threads)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=so, providers=chosen,
                provider_options=provider_options(chosen, cache_dir=cache_dir, precision=precision,
                                                  device_id=device_id))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BackendError(f"{path}: onnxruntime cannot load this model ({type(exc).__name__}: {exc})") from None
        self.providers = self.session.get_providers()
        names = [i.name for i in self.session.get_inputs()]
        if names != ["x", "present"]:
            raise BackendError(f"{path}: expected ONNX inputs ['x', 'present'], got {names}")
        gpu = any(p in self.providers for p in PROVIDER_ORDER[:2])
        super().__init__(path, spec, device=f"cuda:{device_id}" if gpu else "cpu", fixed_hw=fixed_hw,
                         fixed_batch=fixed_batch, timing_window=timing_window)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "providers": list(self.providers)}

    def _run(self, x: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels, confidence = self.session.run(["labels", "confidence"], {"x": x, "present": present})
        return labels, confidence

    def close(self) -> None:
        self.session = None
