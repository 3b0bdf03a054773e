"""Frames per second of EQUISeg on this machine's CPU: PyTorch eager vs ONNX Runtime, by backbone and resolution
(issue 16, goal 5: what the README's performance section quotes).

    nice .venv/bin/python bench/bench_models_fps.py [--plan mit_b0:256,512,1024 mit_b2:256,512] [--threads 2]

For each ``backbone:sizes`` entry: EQUISeg with the DeLiVER spec (RGB, depth, event, LiDAR, all present; 25
classes; random weights, speed does not depend on them) is saved as a checkpoint and exported as the deployed graph
with ``training/export.py`` (dynamic H, W; its parity gate runs at 256²), then both backends run through the node's
``Backend`` interface (deployed output: labels and confidence at input size), alternating one call each per round;
the minimum over ``--runs`` rounds is reported (the least-disturbed run on a shared machine) with fps = 1000 / ms.
Prints ONE JSON line; progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from equiseg_ros.checkpoint import save_checkpoint  # noqa: E402
from equiseg_ros.config import ModelConfig, to_dict  # noqa: E402
from equiseg_ros.inference.bench import inputs_for  # noqa: E402
from equiseg_ros.inference.onnx_backend import OnnxRuntimeBackend  # noqa: E402
from equiseg_ros.inference.torch_backend import TorchBackend  # noqa: E402
from equiseg_ros.models.build import build_model  # noqa: E402
from equiseg_ros.spec import deliver_spec  # noqa: E402
from training.export import export_onnx, sha256_file  # noqa: E402


def _parse_plan(items: list[str]) -> list[tuple[str, list[int]]]:
    plan = []
    for item in items:
        backbone, _, sizes = item.partition(":")
        if not sizes:
            raise SystemExit(f"--plan {item!r}: expected BACKBONE:SIZE[,SIZE...], e.g. mit_b0:256,512")
        plan.append((backbone, [int(s) for s in sizes.split(",")]))
    return plan


def _time_ms(backend, x, present) -> float:
    t = time.perf_counter()
    backend.infer(x, present)
    return (time.perf_counter() - t) * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", nargs="+", default=["mit_b0:256,512,1024", "mit_b2:256,512"],
                   help="BACKBONE:SIZES entries (square sides; default mit_b0:256,512,1024 mit_b2:256,512)")
    p.add_argument("--runs", type=int, default=2, help="timed rounds per size; the minimum is reported (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per backend and size (default 1)")
    p.add_argument("--threads", type=int, default=2, help="threads of both backends (default 2)")
    p.add_argument("--backends", default="onnxruntime,torch", help="comma-separated: onnxruntime, torch")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    spec = deliver_spec()
    out: dict = {"bench": "models_fps", "model": "equiseg", "modalities": list(spec.modality_names),
                 "threads": args.threads, "runs": args.runs, "torch": torch.__version__,
                 "load_avg_start": [round(v, 2) for v in os.getloadavg()], "results": {}}
    for backbone, sizes in _parse_plan(args.plan):
        torch.manual_seed(0)
        cfg = ModelConfig(name="equiseg", backbone=backbone, drop_path=0.0)
        model = build_model(cfg, spec).eval()
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = save_checkpoint(Path(tmp) / "m.pt", model.state_dict(), spec, {"model": to_dict(cfg)})
            backends = {}
            if "onnxruntime" in wanted:
                t0 = time.perf_counter()
                rep = export_onnx(model, spec, Path(tmp) / "m.onnx", (256, 256), sha256_file(ckpt), dynamic=True,
                                  model_config=to_dict(cfg), parity_sizes=[(256, 256)], threads=args.threads)
                print(f"{backbone}: exported in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
                backends["onnxruntime"] = OnnxRuntimeBackend(rep.path, intra_op_threads=args.threads)
            del model
            if "torch" in wanted:
                backends["torch"] = TorchBackend(ckpt, torch_threads=args.threads)
            rows = {}
            for size in sizes:
                x, present = inputs_for(next(iter(backends.values())), (size, size), None)
                times: dict[str, list[float]] = {k: [] for k in backends}
                for b in backends.values():
                    for _ in range(args.warmup):
                        b.infer(x, present)
                for _ in range(args.runs):
                    for name, b in backends.items():
                        times[name].append(_time_ms(b, x, present))
                row = {}
                for name, ts in times.items():
                    best = min(ts)
                    row[name] = {"ms_min": round(best, 1), "ms_all": [round(t, 1) for t in ts],
                                 "fps": round(1000.0 / best, 2)}
                if len(backends) == 2:
                    row["torch_over_ort"] = round(row["torch"]["ms_min"] / row["onnxruntime"]["ms_min"], 2)
                rows[str(size)] = row
                print(f"{backbone} {size}: {row}", file=sys.stderr)
            out["results"][backbone] = rows
    out["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    out["note"] = "CPU, shared 2-core machine under load from other jobs; min over rounds; batch 1, 4 modalities"
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
