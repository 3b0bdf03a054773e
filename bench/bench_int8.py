"""Benchmark: INT8 (Q/DQ) and FP16 graphs against FP32 in ONNX Runtime, side by side in one run: speed, label
agreement and mIoU against the ground truth.

    .venv/bin/python bench/bench_int8.py [--checkpoint runs/demo/train/best.pt --data config/datasets/synthetic.yaml]
                                          [--size 512] [--calib 8] [--frames 16] [--runs 3] [--threads 2]

Exports the checkpoint (default: a randomly initialised EQUISeg-B0 on the DeLiVER spec, whose accuracy figures
mean nothing, only its speed does) as a static graph at ``--size``, calibrates the INT8 graph on ``--calib``
validation frames of ``--data`` (real frames; smooth random inputs without ``--data``), evaluates FP32, INT8 and the
FP16 graph TensorRT would build on the next ``--frames`` frames, and times FP32 and INT8 alternately (min of
``--runs``). Goals (issue 16): INT8 >= 1.8x the FP32 speed, >= 98 % label agreement, <= 1.0 mIoU loss; FP16
>= 99.5 % agreement. Prints ONE JSON line.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from equiseg_ros.config import DataConfig, ModelConfig, from_dict, load_config, to_dict  # noqa: E402
from equiseg_ros.evaluation.metrics import ConfusionMatrix  # noqa: E402
from equiseg_ros.inference._onnx_prep import QDQ_RECIPE, quantize_qdq  # noqa: E402
from equiseg_ros.models.build import build_model  # noqa: E402
from equiseg_ros.spec import ModelSpec, deliver_spec  # noqa: E402
from training.export import export_onnx, model_from_checkpoint, smooth_sample  # noqa: E402

GOALS = {"int8_speedup": 1.8, "int8_agreement": 0.98, "int8_miou_loss": 1.0, "fp16_agreement": 0.995}


def frames(args: argparse.Namespace, spec: ModelSpec, n: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(x [1,M,3,H,W] normalised as the model expects, label [1,H,W] or None) for n validation frames."""
    if not args.data:
        return [(smooth_sample(spec, (args.size, args.size), 1, seed), None) for seed in range(n)]
    from equiseg_ros.data.dataset import build_dataset

    cfg = load_config(DataConfig, args.data, [])
    cfg = from_dict(DataConfig, {**to_dict(cfg), "modalities": list(spec.modality_names), "image_size": args.size})
    ds = build_dataset(cfg, cfg.val_split, train=False, spec=spec)
    if len(ds) < n:
        raise SystemExit(f"--data {cfg.root}: split {cfg.val_split!r} has {len(ds)} frames, {n} are needed")
    out = []
    for i in range(n):
        s = ds[i]
        x = np.asarray(s["x"], np.float32)[None]
        if x.shape[-2:] != (args.size, args.size):
            raise SystemExit(f"--data frames are {x.shape[-2:]}, the graph is static at {args.size}²")
        out.append((x, np.asarray(s["label"])[None]))
    return out


def run_all(session, xs: list[np.ndarray]) -> list[np.ndarray]:
    return [session.run(None, {"x": x, "present": np.ones(x.shape[:2], bool)})[0] for x in xs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="project checkpoint (default: random EQUISeg-B0, DeLiVER spec)")
    p.add_argument("--data", help="dataset YAML for real calibration/evaluation frames (the val split)")
    p.add_argument("--size", type=int, default=512, help="square input size of the static graph (default 512)")
    p.add_argument("--calib", type=int, default=8, help="calibration frames (default 8)")
    p.add_argument("--frames", type=int, default=16, help="evaluation frames after the calibration ones (default 16)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per graph, alternated (default 3)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    args = p.parse_args()
    import onnx
    import onnxruntime as ort

    from equiseg_ros.inference._fp16 import cast_count, to_fp16

    torch.manual_seed(0)
    if args.checkpoint:
        model, spec, cfg, _ = model_from_checkpoint(args.checkpoint)
    else:
        spec = deliver_spec()
        cfg = to_dict(ModelConfig(name="equiseg", backbone="mit_b0", drop_path=0.0))
        model = build_model(from_dict(ModelConfig, cfg), spec).eval()
    data = frames(args, spec, args.calib + args.frames)
    out: dict = {"bench": "int8", "model": f"{cfg['name']} {cfg['backbone']}", "checkpoint": args.checkpoint,
                 "data": args.data, "size": args.size, "threads": args.threads, "qdq_recipe": QDQ_RECIPE,
                 "calib_frames": args.calib, "eval_frames": args.frames, "onnxruntime": ort.__version__,
                 "load_avg_start": [round(v, 2) for v in os.getloadavg()], "goals": GOALS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_onnx(model, spec, tmp / "fp32.onnx", (args.size, args.size), parity_sizes=[])
        del model
        (tmp / "calib").mkdir()
        for i, (x, _) in enumerate(data[:args.calib]):
            np.savez(tmp / "calib" / f"{i:04d}.npz", x=x[0])
        t0 = time.perf_counter()
        quantize_qdq(tmp / "fp32.onnx", tmp / "calib", tmp / "int8.onnx")
        out["quantize_s"] = round(time.perf_counter() - t0, 1)
        half = to_fp16(onnx.load(str(tmp / "fp32.onnx")))
        out["fp16_casts"] = cast_count(half)
        onnx.save(half, str(tmp / "fp16.onnx"))
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
        sess = {k: ort.InferenceSession(str(tmp / f"{k}.onnx"), so, providers=["CPUExecutionProvider"])
                for k in ("fp32", "int8", "fp16")}
        evals = data[args.calib:]
        xs = [x for x, _ in evals]
        labels = {k: run_all(s, xs) for k, s in sess.items()}
        for k in ("int8", "fp16"):
            same = sum(int((a == b).sum()) for a, b in zip(labels["fp32"], labels[k]))
            out[f"{k}_agreement"] = round(same / sum(a.size for a in labels["fp32"]), 5)
        if evals[0][1] is not None:
            for k in ("fp32", "int8", "fp16"):
                cm = ConfusionMatrix(spec.num_classes, spec.ignore_index)
                for pred, (_, gt) in zip(labels[k], evals):
                    cm.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(gt.astype(np.int64)))
                out[f"{k}_miou_present"] = round(100 * cm.miou_present(), 2)
            out["int8_miou_loss"] = round(out["fp32_miou_present"] - out["int8_miou_present"], 2)
        times: dict[str, list[float]] = {"fp32": [], "int8": []}
        for _ in range(args.runs):
            for k in times:
                t0 = time.perf_counter()
                sess[k].run(None, {"x": xs[0], "present": np.ones(xs[0].shape[:2], bool)})
                times[k].append(time.perf_counter() - t0)
        for k, v in times.items():
            out[f"{k}_ms"] = round(1e3 * min(v), 1)
        out["int8_speedup"] = round(min(times["fp32"]) / min(times["int8"]), 2)
    out["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
