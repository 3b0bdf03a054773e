"""Forward latency of every model on CPU: eager vs channels-last vs torch.compile, as ratios measured in one run.

Prints ONE JSON line. Defaults: MiT-B0, 4 modalities (DeLiVER), 512 x 512, batch 1, all modalities present, median of
``--repeats`` timed runs after ``--warmup`` runs, under ``torch.inference_mode``. Variants compared are run
round-robin (eager/channels-last in this process, eager/compiled in the child) so load shifts hit both sides.
torch.compile runs in a child process per model with a time cap (``--compile-timeout``), since inductor's first
compile can take minutes on a loaded CPU (``compile_speedup`` = eager / compiled, both timed in the child); a compile
that fails or exceeds the cap is reported, not fatal. The machine may be shared: the 1-minute load average is recorded
next to the figures.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from equiseg_ros.config import ModelConfig  # noqa: E402
from equiseg_ros.models.build import ARCHITECTURES, build_model  # noqa: E402
from equiseg_ros.spec import deliver_spec  # noqa: E402


def _time(fns: dict, x, present, warmup: int, repeats: int) -> dict[str, float]:
    """Median ms per variant; variants are run round-robin so a shared machine's load hits all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn(x, present)
        for _ in range(repeats):
            for k, fn in fns.items():
                t = time.perf_counter()
                fn(x, present)
                times[k].append((time.perf_counter() - t) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def _setup(arch: str, backbone: str, size: int, modalities: int):
    torch.manual_seed(0)
    spec = deliver_spec(["rgb", "depth", "event", "lidar"][:modalities])
    model = build_model(ModelConfig(name=arch, backbone=backbone), spec).eval()
    m = model.num_modalities
    return model, torch.randn(1, m, 3, size, size), torch.ones(1, m, dtype=torch.bool)


def run_compiled(args) -> dict:
    """Child process: compile one model, time it against eager (interleaved); prints one JSON object."""
    model, x, present = _setup(args.only_compile, args.backbone, args.size, args.modalities)
    compiled = torch.compile(model)
    t = time.perf_counter()
    with torch.inference_mode():
        compiled(x, present)
    compile_s = time.perf_counter() - t
    ms = _time({"eager": model, "compiled": compiled}, x, present, max(args.warmup - 1, 0), args.repeats)
    return {"compile_ms": round(ms["compiled"], 1), "compile_eager_ms": round(ms["eager"], 1),
            "compile_speedup": round(ms["eager"] / ms["compiled"], 3), "compile_s": round(compile_s, 1)}


def bench_compiled(arch: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--only-compile", arch, "--backbone", args.backbone,
           "--size", str(args.size), "--modalities", str(args.modalities), "--warmup", str(args.warmup),
           "--repeats", str(args.repeats), "--threads", str(args.threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.compile_timeout)
    except subprocess.TimeoutExpired:
        return {"compile_error": f"exceeded --compile-timeout {args.compile_timeout} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"compile_error": tail[:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(ARCHITECTURES), help="comma-separated architectures")
    parser.add_argument("--backbone", default="mit_b0", help="MiT variant (default mit_b0)")
    parser.add_argument("--size", type=int, default=512, help="square input side (default 512)")
    parser.add_argument("--modalities", type=int, default=4, help="number of DeLiVER modalities, 1-4 (default 4)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--compile-timeout", type=float, default=600.0,
                        help="seconds allowed per model for compile + timing (default 600)")
    parser.add_argument("--only-compile", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.only_compile:
        print(json.dumps(run_compiled(args)))
        return 0
    out: dict = {"bench": "models", "backbone": args.backbone, "size": args.size, "modalities": args.modalities,
                 "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
                 "load_avg_1m_start": round(os.getloadavg()[0], 2), "models": {}}
    for arch in [a.strip() for a in args.models.split(",") if a.strip()]:
        model, x, present = _setup(arch, args.backbone, args.size, args.modalities)
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        ms = _time({"eager": model, "cl": model_cl}, x, present, args.warmup, args.repeats)
        row = {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
               "eager_ms": round(ms["eager"], 1), "channels_last_ms": round(ms["cl"], 1),
               "channels_last_speedup": round(ms["eager"] / ms["cl"], 3)}
        if not args.no_compile:
            row.update(bench_compiled(arch, args))
        out["models"][arch] = row
        print(f"{arch}: {row}", file=sys.stderr)
    out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
