"""PyTorch eager models against the machine: each model's multiply-accumulate rate as a fraction of an fp32 GEMM's,
both timed in the same rounds (issue 16, goals 1 and 5), optionally against another checkout of the code.

    nice .venv/bin/python bench/bench_models_gemm.py [--models cmnext,m_segformer,equiseg] [--backbone mit_b2]
        [--size 512] [--threads 2] [--rounds 3] [--baseline-tree /tmp/worktree-of-the-parent-commit]

Each round times, alternately, a ``--gemm`` x ``--gemm`` fp32 ``torch.mm`` (the best of ``--gemm-calls`` calls) and
one forward of each model (batch 1, all ``--modalities`` present, ``eval()`` + ``inference_mode``), so load from
other jobs hits both sides alike; the minimum over rounds is reported for both (the least-disturbed run). MACs come
from torch's FlopCounterMode on the meta device (``python -m equiseg_ros.models summary``; attention included,
elementwise ops not). ``gmacs`` is the architecture as published (the papers' count, the same in every version of
the code, so rates compare across commits); ``gmacs_executed`` is what eager inference runs after the head's
re-association (fewer MACs, same function). ``ratio_to_gemm`` = model G MAC/s (published MACs / time) / GEMM G MAC/s,
``ratio_executed_to_gemm`` the same with the executed MACs; ``goal`` is issue 16's 0.40.
``equiseg_vs_cmnext.time_per_mac_ratio`` = (EQUISeg ms / its G MACs) / (CMNeXt ms / its G MACs): EQUISeg's cost per
unit of work against the reference architecture's (1.0 = equally efficient), next to the plain time and MAC ratios.

Under load a short GEMM catches quiet moments that a seconds-long forward never does, so the wall-clock ratio
understates a model; ``cpu_ratio_to_gemm`` divides process CPU time instead (all threads; OpenMP spin-waits while a
sibling thread is descheduled still count, so it is not load-free either). Both are printed; on an idle machine they
agree.

``--baseline-tree`` runs the same models from another checkout (e.g. a git worktree of the parent commit) in a child
process that waits while this one runs, and interleaves its forwards with ours in every round: ``speedup_vs_baseline``
= baseline ms / ms (min over rounds), ``speedup_paired_median`` the median of the per-round ratios.
CMNeXt runs with ``--cmnext-compat`` (default ``deliver``, the baseline config ``config/models/cmnext_b2.yaml``).
Random weights (speed does not depend on them). Prints ONE JSON line; progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.40
MODALITIES = ("rgb", "depth", "event", "lidar")


def _use_tree(root: Path) -> None:
    """Import ``equiseg_ros`` from ``root`` (this checkout, or the baseline's in the child)."""
    sys.path.insert(0, str(root))


def _gemm_ms(a: torch.Tensor, b: torch.Tensor, calls: int) -> tuple[float, float]:
    """Best of ``calls`` timed ``torch.mm`` calls: (wall ms, process CPU ms)."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(calls):
        t, c = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        best = min(best, (time.perf_counter() - t) * 1e3)
        best_cpu = min(best_cpu, (time.process_time() - c) * 1e3)
    return best, best_cpu


def _git_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _build(args, archs: list[str], with_macs: bool):
    """Models (seeded), inputs and (optionally) published/executed G MACs per architecture."""
    from equiseg_ros.config import ModelConfig
    from equiseg_ros.models.__main__ import summarize
    from equiseg_ros.models.build import build_model
    from equiseg_ros.spec import deliver_spec

    spec = deliver_spec(list(MODALITIES[:args.modalities]))
    torch.manual_seed(0)
    models, macs, executed = {}, {}, {}
    for arch in archs:
        kw = {"compat": args.cmnext_compat} if arch == "cmnext" else {}
        cfg = ModelConfig(name=arch, backbone=args.backbone, drop_path=0.0, **kw)
        if with_macs:
            summary = summarize(cfg, spec, args.size)
            macs[arch] = summary["gmacs"]
            executed[arch] = summary.get("gmacs_executed", summary["gmacs"])  # older trees: no re-associated head
        models[arch] = build_model(cfg, spec).eval()
    m = spec.num_modalities
    x = torch.randn(1, m, 3, args.size, args.size)
    present = torch.ones(1, m, dtype=torch.bool)
    return spec, models, x, present, macs, executed


def _forward_ms(model, x, present) -> tuple[float, float]:
    """One forward: (wall ms, process CPU ms of all threads)."""
    t, c = time.perf_counter(), time.process_time()
    model(x, present)
    return (time.perf_counter() - t) * 1e3, (time.process_time() - c) * 1e3


def serve(args, archs: list[str]) -> int:
    """Child of ``--baseline-tree``: build the models, then time one forward per line read from stdin."""
    _, models, x, present, _, _ = _build(args, archs, with_macs=False)
    with torch.inference_mode():
        for arch in archs:
            for _ in range(args.warmup):
                models[arch](x, present)
        print("ready", flush=True)
        for line in sys.stdin:
            arch = line.strip()
            if not arch:
                break
            wall, cpu = _forward_ms(models[arch], x, present)
            print(f"{wall:.3f} {cpu:.3f}", flush=True)
    return 0


class _Baseline:
    """The baseline checkout's models in a child process, one forward per request (the child idles in between)."""

    def __init__(self, tree: Path, args, archs: list[str]) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", "--tree", str(tree), "--models", ",".join(archs),
               "--backbone", args.backbone, "--size", str(args.size), "--modalities", str(args.modalities),
               "--threads", str(args.threads), "--warmup", str(args.warmup), "--cmnext-compat", args.cmnext_compat]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"--baseline-tree {tree}: the child did not start (said {line!r}); see its stderr")

    def time(self, arch: str) -> tuple[float, float]:
        self.proc.stdin.write(arch + "\n")
        self.proc.stdin.flush()
        wall, cpu = self.proc.stdout.readline().split()
        return float(wall), float(cpu)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="cmnext,m_segformer,equiseg",
                   help="comma-separated architectures (default cmnext,m_segformer,equiseg)")
    p.add_argument("--backbone", default="mit_b2", help="MiT variant of every model (default mit_b2)")
    p.add_argument("--size", type=int, default=512, help="square input side in pixels (default 512)")
    p.add_argument("--modalities", type=int, default=4, help="DeLiVER modalities, 1-4, all present (default 4)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads for GEMM and models (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds; the minimum is reported (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed forwards per model before round 1 (default 1)")
    p.add_argument("--gemm", type=int, default=2048, help="side of the square fp32 GEMM (default 2048)")
    p.add_argument("--gemm-calls", type=int, default=3, help="GEMM calls per timing, best taken (default 3)")
    p.add_argument("--cmnext-compat", default="deliver", choices=("deliver", "none"),
                   help="CMNeXt carry (default deliver: DELIVER's function, the baseline config)")
    p.add_argument("--goal", type=float, default=GOAL, help="ratio-to-GEMM goal printed with each model (0.40)")
    p.add_argument("--baseline-tree", type=Path, default=None,
                   help="another checkout (e.g. `git worktree add /tmp/base <commit>`) whose models are timed in the "
                        "same rounds, in a child process")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tree", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    archs = [a.strip() for a in args.models.split(",") if a.strip()]
    _use_tree(args.tree)
    if args.serve:
        return serve(args, archs)
    spec, models, x, present, macs, executed = _build(args, archs, with_macs=True)
    out: dict = {"bench": "models_gemm", "commit": _git_commit(ROOT), "backbone": args.backbone, "size": args.size,
                 "modalities": list(spec.modality_names), "threads": args.threads, "rounds": args.rounds,
                 "torch": torch.__version__, "load_avg_start": [round(v, 2) for v in os.getloadavg()],
                 "goal_ratio_to_gemm": args.goal}
    base = None
    if args.baseline_tree is not None:
        out["baseline_commit"] = _git_commit(args.baseline_tree)
        base = _Baseline(args.baseline_tree, args, archs)
    a = torch.randn(args.gemm, args.gemm)
    b = torch.randn(args.gemm, args.gemm)
    gemm_gmacs = args.gemm ** 3 / 1e9
    gemm_ms: list[float] = []
    gemm_cpu: list[float] = []
    cpu_ms: dict[str, list[float]] = {k: [] for k in archs}
    base_cpu: dict[str, list[float]] = {k: [] for k in archs}
    model_ms: dict[str, list[float]] = {k: [] for k in archs}
    base_ms: dict[str, list[float]] = {k: [] for k in archs}
    paired: dict[str, list[float]] = {k: [] for k in archs}  # ratio against the GEMM timed just before
    try:
        with torch.inference_mode():
            _gemm_ms(a, b, 1)
            for arch in archs:
                for _ in range(args.warmup):
                    models[arch](x, present)
            for r in range(args.rounds):
                for arch in archs:
                    sides = ["own", "base"] if base is not None else ["own"]
                    if r % 2:
                        sides.reverse()  # alternate who goes first
                    for side in sides:
                        g, gc = _gemm_ms(a, b, args.gemm_calls)
                        gemm_ms.append(g)
                        gemm_cpu.append(gc)
                        if side == "own":
                            ms, cpu = _forward_ms(models[arch], x, present)
                            model_ms[arch].append(ms)
                            cpu_ms[arch].append(cpu)
                            paired[arch].append((macs[arch] / ms) / (gemm_gmacs / g))
                        else:
                            ms, cpu = base.time(arch)
                            base_ms[arch].append(ms)
                            base_cpu[arch].append(cpu)
                        print(f"round {r + 1}/{args.rounds} {arch} {side}: {ms:.0f} ms, gemm {g:.1f} ms",
                              file=sys.stderr)
    finally:
        if base is not None:
            base.close()
    g_best = min(gemm_ms)
    gemm_rate = gemm_gmacs / g_best * 1e3
    gemm_cpu_rate = gemm_gmacs / min(gemm_cpu) * 1e3  # G MAC per CPU-second (all threads)
    out["gemm"] = {"n": args.gemm, "gmacs": round(gemm_gmacs, 3), "ms_min": round(g_best, 1),
                   "ms_all": [round(v, 1) for v in gemm_ms], "gmac_per_s": round(gemm_rate, 1),
                   "cpu_ms_min": round(min(gemm_cpu), 1), "gmac_per_cpu_s": round(gemm_cpu_rate, 1)}
    out["models"] = {}
    for arch in archs:
        best = min(model_ms[arch])
        rate = macs[arch] / best * 1e3
        paired_sorted = sorted(paired[arch])
        row = {"gmacs": macs[arch], "gmacs_executed": executed[arch], "ms_min": round(best, 1),
               "ms_all": [round(v, 1) for v in model_ms[arch]], "gmac_per_s": round(rate, 2),
               "ratio_to_gemm": round(rate / gemm_rate, 3),
               "ratio_paired_median": round(paired_sorted[len(paired_sorted) // 2], 3),
               "ratio_executed_to_gemm": round(executed[arch] / best * 1e3 / gemm_rate, 3),
               "goal": args.goal, "meets_goal": rate / gemm_rate >= args.goal,
               "cpu_ms_min": round(min(cpu_ms[arch]), 1),
               "cpu_ratio_to_gemm": round(macs[arch] / min(cpu_ms[arch]) * 1e3 / gemm_cpu_rate, 3)}
        if base is not None:
            bbest = min(base_ms[arch])
            per_round = sorted(bm / om for bm, om in zip(base_ms[arch], model_ms[arch]))
            row.update(baseline_ms_min=round(bbest, 1), baseline_ms_all=[round(v, 1) for v in base_ms[arch]],
                       baseline_ratio_to_gemm=round(macs[arch] / bbest * 1e3 / gemm_rate, 3),
                       speedup_vs_baseline=round(bbest / best, 3),
                       speedup_paired_median=round(per_round[len(per_round) // 2], 3),
                       baseline_cpu_ms_min=round(min(base_cpu[arch]), 1),
                       baseline_cpu_ratio_to_gemm=round(macs[arch] / min(base_cpu[arch]) * 1e3 / gemm_cpu_rate, 3),
                       cpu_speedup_vs_baseline=round(min(base_cpu[arch]) / min(cpu_ms[arch]), 3))
        out["models"][arch] = row
    if "equiseg" in model_ms and "cmnext" in model_ms:
        e, c = out["models"]["equiseg"], out["models"]["cmnext"]
        out["equiseg_vs_cmnext"] = {
            "time_ratio": round(e["ms_min"] / c["ms_min"], 3), "mac_ratio": round(e["gmacs"] / c["gmacs"], 3),
            "time_per_mac_ratio": round((e["ms_min"] / e["gmacs"]) / (c["ms_min"] / c["gmacs"]), 3)}
        if base is not None:
            out["equiseg_vs_cmnext"]["baseline_time_per_mac_ratio"] = round(
                (e["baseline_ms_min"] / e["gmacs"]) / (c["baseline_ms_min"] / c["gmacs"]), 3)
    out["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    out["note"] = "CPU, shared 2-core machine under load from other jobs; min over rounds; ratios side by side"
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
