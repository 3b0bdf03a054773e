"""Benchmark: ONNX Runtime vs PyTorch eager on CPU for EQUISeg-B0 with 4 modalities, plus export time and size.

    .venv/bin/python bench/bench_export.py [--sizes 512 1024] [--runs 3] [--threads 2]

Builds EQUISeg-B0 (random weights; speed does not depend on them) for the DeLiVER spec (RGB, depth, event, LiDAR;
25 classes), saves it as a checkpoint, exports it with training/export.py's API (dynamic H, W; parity checked), then
times both backends on the same inputs, side by side in one run, through the common Backend interface (so both
include the deployed graph's upsampling, argmax and confidence). Prints ONE JSON line.
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

from equiseg_ros.checkpoint import save_checkpoint, sha256_file  # noqa: E402
from equiseg_ros.config import ModelConfig, to_dict  # noqa: E402
from equiseg_ros.inference.bench import bench_backend  # noqa: E402
from equiseg_ros.inference.onnx_backend import OnnxRuntimeBackend  # noqa: E402
from equiseg_ros.inference.torch_backend import TorchBackend  # noqa: E402
from equiseg_ros.models.build import build_model, count_params  # noqa: E402
from equiseg_ros.spec import deliver_spec  # noqa: E402
from training.export import export_onnx  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[512, 1024], help="square input sizes to time")
    p.add_argument("--runs", type=int, default=3, help="timed runs per backend and size (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs per backend and size (default 1)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both backends (default 2)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = deliver_spec()
    cfg = ModelConfig(name="equiseg", backbone="mit_b0", drop_path=0.0)
    model = build_model(cfg, spec).eval()
    out = {"bench": "export", "model": "equiseg mit_b0", "modalities": list(spec.modality_names),
           "classes": spec.num_classes, "params": count_params(model), "threads": args.threads,
           "torch": torch.__version__, "load_avg_start": [round(v, 2) for v in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(Path(tmp) / "equiseg_b0.pt", model.state_dict(), spec, {"model": to_dict(cfg)})
        t0 = time.perf_counter()
        rep = export_onnx(model, spec, Path(tmp) / "equiseg_b0.onnx", (512, 512), sha256_file(ckpt), dynamic=True,
                          model_config=to_dict(cfg), parity_sizes=[(512, 512)], threads=args.threads)
        out.update(export_s=round(rep.export_seconds, 2), export_with_parity_s=round(time.perf_counter() - t0, 2),
                   onnx_mb=round(rep.bytes / 2**20, 2), onnx_nodes=rep.num_nodes,
                   parity_min_label_agreement=rep.min_agreement,
                   parity_max_conf_diff=rep.max_confidence_diff)
        del model
        ort_b = OnnxRuntimeBackend(rep.path, intra_op_threads=args.threads)
        torch_b = TorchBackend(ckpt, torch_threads=args.threads)
        for size in args.sizes:
            r_ort = bench_backend(ort_b, (size, size), runs=args.runs, warmup=args.warmup)
            r_torch = bench_backend(torch_b, (size, size), runs=args.runs, warmup=args.warmup)
            out[str(size)] = {"ort_p50_ms": r_ort["p50_ms"], "ort_max_ms": r_ort["max_ms"],
                              "torch_p50_ms": r_torch["p50_ms"], "torch_max_ms": r_torch["max_ms"],
                              "ratio_torch_over_ort": round(r_torch["p50_ms"] / r_ort["p50_ms"], 2)}
    out["runs"] = args.runs
    out["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    out["note"] = "CPU only, shared 2-core machine under load from other jobs; p50 of few runs"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
