"""Converted DELIVER CMNeXt (compat "deliver") against the project's own CMNeXt (compat "none"), side by side.

Both run the SAME weights (the fixture ``dlv_cmnext_b0.pth`` converted by ``python -m equiseg_ros.models convert``):
only the carry between stages and the LayerNorm eps differ. Prints ONE JSON line: PyTorch eager latency (median
over round-robin runs, so load hits both alike) and ONNX Runtime latency of each at ``--size``, the exported ONNX
sizes, the converted model's agreement with the reference logits of the fixture (128²) and how far the project's
default function is from it on the same weights. The machine may be shared: the load average is recorded.

    python bench/bench_convert.py [--size 256] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from equiseg_ros.checkpoint import load_checkpoint  # noqa: E402
from equiseg_ros.config import ModelConfig, from_dict  # noqa: E402
from equiseg_ros.models.build import build_model, load_checked_checkpoint  # noqa: E402
from equiseg_ros.models.convert import convert_file  # noqa: E402
from training.export import export_onnx  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "reference_models"


def _median_ms(fns: dict, args: dict, warmup: int, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(warmup):
        for k, fn in fns.items():
            fn(*args[k])
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn(*args[k])
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="square input side for the timings (multiple of 32)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per variant (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per variant first")
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    src = FIXTURES / "dlv_cmnext_b0.pth"
    if not src.is_file():
        print(f"bench_convert: fixture not found at {src}", file=sys.stderr)
        return 2
    out: dict = {"bench": "convert", "size": args.size, "threads": args.threads, "loadavg_1m": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_path = Path(tmp) / "dlv.pt"
        t = time.perf_counter()
        convert_file("deliver", src, ckpt_path)
        out["convert_s"] = round(time.perf_counter() - t, 2)
        ckpt = load_checkpoint(ckpt_path)
        spec = ckpt["spec"]
        models = {}
        for compat in ("deliver", "none"):
            cfg = from_dict(ModelConfig, {**ckpt["config"]["model"], "compat": compat,
                                          "mit_eps": None if compat == "none" else ckpt["config"]["model"]["mit_eps"]})
            m = build_model(cfg, spec)
            load_checked_checkpoint(m, ckpt)
            models[compat] = m.eval()

        io = np.load(FIXTURES / "dlv_cmnext_b0_io.npz")
        x = torch.from_numpy(np.stack([io[f"x_{k}"][0] for k in ("img", "depth", "event", "lidar")])[None])
        ones = torch.ones(1, 4, dtype=torch.bool)
        ref = torch.from_numpy(io["logits_full"])
        with torch.inference_mode():
            for compat, m in models.items():
                got = F.interpolate(m(x, ones), size=(128, 128), mode="bilinear", align_corners=False)
                out[f"{compat}_rel_diff_vs_reference"] = float((got - ref).abs().max() / ref.abs().max())
                out[f"{compat}_argmax_agreement_vs_reference"] = float((got.argmax(1) == ref.argmax(1)).float().mean())

        s = args.size
        xs = torch.randn(1, 4, 3, s, s)
        with torch.inference_mode():
            eager = _median_ms({k: m for k, m in models.items()}, {k: (xs, ones) for k in models}, args.warmup,
                               args.repeats)
        out.update({f"torch_ms_{k}": v for k, v in eager.items()})
        out["torch_ratio_deliver_over_none"] = round(eager["deliver"] / eager["none"], 3)

        import onnxruntime as ort

        sessions, feeds = {}, {}
        for compat, m in models.items():
            onnx_path = Path(tmp) / f"{compat}.onnx"
            rep = export_onnx(m, spec, onnx_path, (s, s), threads=args.threads)
            out[f"onnx_bytes_{compat}"] = rep.bytes
            out[f"onnx_parity_{compat}"] = rep.min_agreement
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            sessions[compat] = lambda feed, sess=sess: sess.run(None, feed)
            feeds[compat] = ({"x": xs.numpy(), "present": ones.numpy()},)
        ort_ms = _median_ms(sessions, feeds, args.warmup, args.repeats)
        out.update({f"ort_ms_{k}": v for k, v in ort_ms.items()})
        out["ort_ratio_deliver_over_none"] = round(ort_ms["deliver"] / ort_ms["none"], 3)
    out["loadavg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
