"""Training cost: RMMSS stage 2 vs supervised training of the same student, throughput at 512² with MiT-B0, and the
images/s of every model of the issue-15 experiment at the experiment's size (``experiment`` in the JSON; the
converged-experiment budget is planned from it: experiments/converged_experiment.py).

Prints ONE JSON line. Each measurement runs in its own child process so peak memory is that configuration's alone
(peak RSS of the child from ``wait4``; on CUDA also ``torch.cuda.max_memory_allocated``). Inputs are random tensors
of the real shapes (the cost of a step does not depend on what the pixels show) and the teachers are randomly
initialised models of the student's architecture, so nothing needs to be trained or downloaded first.

    python bench/bench_training.py                    # defaults: 256² batch 2 for the ratio, 512² batch 2 for images/s
    python bench/bench_training.py --steps 5 --size 512
    python bench/bench_training.py --only-experiment --experiment-size 64 --experiment-batch 8

The paper reports 40 GB vs 22 GB (1.82x) for stage 2 vs supervised; our aim is under 1.3x: teachers run under
``torch.inference_mode()`` and only their logits and [B, K, d] prototypes outlive their forward pass.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from equiseg_ros.config import ModelConfig
    from equiseg_ros.models.build import build_model
    from training.config import load_train_config
    from training.methods import Method
    from training.optim import build_optimizer

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_train_config(None, [f"method={args.method}", f"model.name={args.model}", "model.backbone=mit_b0",
                                   f"data.image_size={args.size}", "teachers.full=x", "teachers.robust=x",
                                   f"loss.sgm_weight={args.sgm_weight}"])
    spec = cfg.data.spec()
    mcfg = ModelConfig(name=args.model, backbone="mit_b0", drop_path=0.1,
                       decoder_dim=args.decoder_dim if args.decoder_dim else None)
    model = build_model(mcfg, spec).to(device).train()
    teachers = {}
    if args.method.startswith("rmmss"):
        names = ["full"] + (["robust"] if args.method == "rmmss_stage2" else [])
        for n in names:
            t = build_model(mcfg, spec).to(device).eval()
            t.requires_grad_(False)
            teachers[n] = t
    import contextlib

    method = Method(cfg, spec.num_classes, spec.ignore_index, teachers, contextlib.nullcontext)
    for f in method.fsm.values():
        f.to(device)
    opt = build_optimizer([("", model)] + [(k, m) for k, m in method.fsm.items()], cfg.optim)
    b, m, s = args.batch, spec.num_modalities, args.size
    x = torch.randn(b, m, 3, s, s, device=device)
    present = torch.ones(b, m, dtype=torch.bool, device=device)
    labels = torch.randint(0, 12, (b, s, s), device=device)
    import resource

    base_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # runtime + models, before any step
    times = []
    for i in range(args.steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = method(model, x, present, labels)
        out.loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step pays one-off allocation costs
            times.append(time.perf_counter() - t0)
    res = {"step_s": statistics.median(times), "steps": len(times), "device": device.type, "base_rss_MB": base_rss_mb,
           "params_student_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3)}
    if device.type == "cuda":
        res["cuda_peak_MB"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print("RESULT " + json.dumps(res))


def run_child(method: str, model: str, size: int, batch: int, steps: int, threads: int, decoder_dim: int,
              sgm_weight: float = 60.0) -> dict:
    cmd = [sys.executable, __file__, "--child", "--method", method, "--model", model, "--size", str(size),
           "--batch", str(batch), "--steps", str(steps), "--threads", str(threads),
           "--decoder-dim", str(decoder_dim), "--sgm-weight", str(sgm_weight)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{method}/{model} at {size}: child failed:\n{err[-3000:]}")
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    res["peak_rss_MB"] = usage.ru_maxrss / 1024  # Linux: kilobytes
    return res


# the issue-15 experiment's trainings: (name, method, model, SGM weight); stage 1/2 train the M-SegFormer student
EXPERIMENT = (("m_segformer_b0", "supervised", "m_segformer", 0.0), ("cmnext_b0", "supervised", "cmnext", 0.0),
              ("equiseg_b0", "equiseg", "equiseg", 0.0), ("equiseg_b0_sgm", "equiseg", "equiseg", 60.0),
              ("rmmss_stage1", "rmmss_stage1", "m_segformer", 0.0), ("rmmss_stage2", "rmmss_stage2", "m_segformer",
                                                                       0.0))


def experiment_throughput(args: argparse.Namespace) -> dict:
    """Images/s of each experiment training at its size and batch, one thread (one training per core)."""
    out: dict = {"size": args.experiment_size, "batch": args.experiment_batch,
                 "decoder_dim": args.experiment_decoder_dim}
    for name, method, model, sgm in EXPERIMENT:
        dec = args.experiment_decoder_dim if model in ("m_segformer", "cmnext") else 0
        r = run_child(method, model, args.experiment_size, args.experiment_batch, max(2, args.steps), args.threads,
                      dec, sgm)
        out[name] = {"images_per_s": round(args.experiment_batch / r["step_s"], 2), "step_s": round(r["step_s"], 3),
                     "params_M": r["params_student_M"], "peak_rss_MB": round(r["peak_rss_MB"], 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="crop size of the stage-2 vs supervised comparison")
    p.add_argument("--batch", type=int, default=2, help="batch of the comparison")
    p.add_argument("--throughput-size", type=int, default=512, help="crop size of the images/s figure")
    p.add_argument("--throughput-batch", type=int, default=2, help="batch of the images/s figure")
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration (after one warm-up)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each child (1 avoids spin-waiting on a "
                   "shared CPU)")
    p.add_argument("--decoder-dim", type=int, default=768, help="M-SegFormer head width (768 = AnySeg/RMMSS)")
    p.add_argument("--experiment-size", type=int, default=64, help="image size of the issue-15 experiment's "
                   "throughput figures (default 64)")
    p.add_argument("--experiment-batch", type=int, default=8, help="batch of the experiment figures (default 8)")
    p.add_argument("--experiment-decoder-dim", type=int, default=256,
                   help="M-SegFormer / CMNeXt head width in the experiment (default 256, as --decoder-dim of the run)")
    p.add_argument("--only-experiment", action="store_true", help="measure only the experiment's models")
    p.add_argument("--sgm-weight", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", default="supervised", help=argparse.SUPPRESS)
    p.add_argument("--model", default="m_segformer", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    t0 = time.time()
    exp = experiment_throughput(args)
    if args.only_experiment:
        print(json.dumps({"bench": "training", "threads": args.threads, "experiment": exp,
                          "wall_s": round(time.time() - t0, 1), "load_avg_1m": round(os.getloadavg()[0], 2),
                          "note": "CPU shared with other jobs while measured; one thread per child"}))
        return 0
    sup = run_child("supervised", "m_segformer", args.size, args.batch, args.steps, args.threads, args.decoder_dim)
    s2 = run_child("rmmss_stage2", "m_segformer", args.size, args.batch, args.steps, args.threads,
                   args.decoder_dim)
    s1 = run_child("rmmss_stage1", "m_segformer", args.size, args.batch, args.steps, args.threads,
                   args.decoder_dim)
    tp = {}
    for method, model in (("supervised", "m_segformer"), ("equiseg", "equiseg")):
        r = run_child(method, model, args.throughput_size, args.throughput_batch, max(1, args.steps - 1),
                      args.threads, args.decoder_dim if model == "m_segformer" else 0)
        tp[f"{model}_b0_{method}"] = {"images_per_s": round(args.throughput_batch / r["step_s"], 3),
                                      "step_s": round(r["step_s"], 3), "peak_rss_MB": round(r["peak_rss_MB"], 1)}
    out = {
        "bench": "training", "device": sup["device"], "threads": args.threads,
        "compare": {"student": "m_segformer_b0", "size": args.size, "batch": args.batch, "steps": args.steps},
        **{name: {"step_s": round(r["step_s"], 3), "peak_rss_MB": round(r["peak_rss_MB"], 1),
                  "training_MB": round(r["peak_rss_MB"] - r["base_rss_MB"], 1)}
           for name, r in (("supervised", sup), ("rmmss_stage1", s1), ("rmmss_stage2", s2))},
        "ratio_stage2_vs_supervised": {"memory": round(s2["peak_rss_MB"] / sup["peak_rss_MB"], 3),
                                       "training_memory": round((s2["peak_rss_MB"] - s2["base_rss_MB"])
                                                                / (sup["peak_rss_MB"] - sup["base_rss_MB"]), 3),
                                       "step_time": round(s2["step_s"] / sup["step_s"], 3)},
        "paper_ratio_memory": round(40 / 22, 2),
        "throughput": {"size": args.throughput_size, "batch": args.throughput_batch, **tp},
        "experiment": exp, "load_avg_1m": round(os.getloadavg()[0], 2),
        "wall_s": round(time.time() - t0, 1),
        "note": "CPU shared with other jobs while measured. memory = whole-process peak RSS (runtime, student, "
                "teachers and FSMs included); training_memory = peak minus the RSS before the first step "
                "(activations, gradients, optimiser state, teacher forward passes)",
    }
    if "cuda_peak_MB" in sup:
        out["ratio_stage2_vs_supervised"]["cuda_memory"] = round(s2["cuda_peak_MB"] / sup["cuda_peak_MB"], 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
