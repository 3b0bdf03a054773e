"""Latency and throughput of every inference backend that can run a model on this machine; one JSON line.

    python -m equiseg_ros.inference.bench --model model.onnx [ckpt.pt] --size 1024 --modalities rgb,depth,event,lidar

Each backend gets warm-up runs first, then ``--runs`` timed calls on random normalised inputs of the requested size
(modalities not listed are zero-filled and marked absent, as the node does). Backends that cannot run here are
listed with the reason instead of numbers.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from equiseg_ros.inference.backend import (
    ACCEPTS,
    DEFAULT_PREFER,
    Backend,
    BackendError,
    BackendUnavailable,
    artifact_kind,
    load_backend,
)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q))


def inputs_for(backend: Backend, size: tuple[int, int], modalities: Sequence[str] | None, batch: int = 1,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random normalised x at ``size`` with only ``modalities`` present (absent ones zero-filled)."""
    spec = backend.spec
    names = list(modalities) if modalities else list(spec.modality_names)
    for n in names:
        spec.modality(n)  # raises SpecError naming the unknown modality
    present = np.array([[m in names for m in spec.modality_names]] * batch, np.bool_)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, spec.num_modalities, 3, *size), dtype=np.float32)
    return x * present[:, :, None, None, None], present


def bench_backend(backend: Backend, size: tuple[int, int], modalities: Sequence[str] | None = None,
                  runs: int = 10, warmup: int = 2, batch: int = 1) -> dict[str, Any]:
    """Warm up, then time ``runs`` calls; latency percentiles (ms) and frames per second."""
    x, present = inputs_for(backend, size, modalities, batch)
    for _ in range(max(0, warmup)):
        backend.infer(x, present)
    times = []
    t0 = time.perf_counter()
    for _ in range(max(1, runs)):
        t = time.perf_counter()
        backend.infer(x, present)
        times.append((time.perf_counter() - t) * 1e3)
    wall = time.perf_counter() - t0
    return {"device": backend.device, "runs": len(times), "warmup": warmup, "batch": batch,
            "p50_ms": round(percentile(times, 50), 2), "p95_ms": round(percentile(times, 95), 2),
            "max_ms": round(max(times), 2), "mean_ms": round(float(np.mean(times)), 2),
            "fps": round(batch * len(times) / wall, 3)}


def run(models: Sequence[str | Path], size: tuple[int, int], modalities: Sequence[str] | None,
        backends: Sequence[str] = DEFAULT_PREFER, runs: int = 10, warmup: int = 2, threads: int = 0,
        batch: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"size": list(size), "modalities": list(modalities) if modalities else "all",
                           "host": platform.node(), "cpu": platform.processor() or platform.machine(),
                           "threads": threads, "results": {}}
    for model in models:
        kind = artifact_kind(model)
        for name in backends:
            if name not in ACCEPTS[kind]:
                continue
            label = f"{name}:{Path(model).name}"
            opts: dict[str, Any] = {}
            if threads and name == "onnxruntime":
                opts["intra_op_threads"] = threads
            if threads and name == "torch":
                opts["torch_threads"] = threads
            if name == "tensorrt":
                opts["size"] = tuple(size)
                opts["batch"] = batch
            try:
                backend = load_backend(model, prefer=[name], **opts)
            except BackendUnavailable as exc:
                out["results"][label] = {"skipped": str(exc)}
                continue
            if not backend.dynamic_size and tuple(backend.input_size) != tuple(size):
                out["results"][label] = {"skipped": f"model is fixed at {list(backend.input_size)}"}
                continue
            out.setdefault("spec", backend.spec.name)
            out["results"][label] = bench_backend(backend, size, modalities, runs, warmup, batch)
            backend.close()
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m equiseg_ros.inference.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", required=True,
                   help="model file(s): .onnx (TensorRT, ONNX Runtime), .engine, .pt checkpoint (PyTorch)")
    p.add_argument("--size", nargs="+", type=int, default=[1024], metavar="N",
                   help="input size: N for N x N, or H W (default 1024)")
    p.add_argument("--modalities", help="comma-separated modalities present (default: all of the spec's)")
    p.add_argument("--backends", default=",".join(DEFAULT_PREFER),
                   help=f"comma-separated backends to try (default {','.join(DEFAULT_PREFER)})")
    p.add_argument("--runs", type=int, default=10, help="timed runs per backend (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up runs per backend (default 2)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for ORT/torch (0 = library default)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if len(args.size) not in (1, 2):
        print("bench: --size takes N or H W", file=sys.stderr)
        return 2
    size = (args.size[0], args.size[-1])
    mods = [m.strip() for m in args.modalities.split(",") if m.strip()] if args.modalities else None
    try:
        result = run(args.model, size, mods, [b.strip() for b in args.backends.split(",") if b.strip()],
                     args.runs, args.warmup, args.threads, args.batch)
    except (BackendError, ValueError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
