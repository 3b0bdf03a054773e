"""Evaluation throughput: the one-pass protocol runner vs the reference's one-pass-per-subset loop.

    python bench/bench_evaluation.py [--frames 2] [--size 1024]

Writes ``--frames`` frames in the DeLiVER layout at ``--size``² (4 modalities + label, PNG), reads them with the
project's reader and validation transform (the real loading cost), and evaluates a trivial predictor (so the
figures measure the evaluation machinery, not a network) on the full protocol set - full, EMM (15 subsets), RMM
(3 rates x 15), NM (3 levels), any-modality - in both settings:

- one pass: ``evaluate`` - each batch loaded once, every distinct input variant run on it, duplicates shared;
- naive: what the reference scripts do - one pass over the data per (protocol, setting, subset / rate / level).

Both use the same seeded corruptions, so their figures must be identical (checked). Prints ONE JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from equiseg_ros.config import DataConfig  # noqa: E402
from equiseg_ros.evaluation.protocols import PROTOCOLS, SETTINGS, evaluate, plan, run_variants  # noqa: E402

RATES = (0.25, 0.5, 0.75)
LEVELS = ("low", "mid", "high")


def write_frames(root: Path, frames: int, size: int, seed: int = 0) -> None:
    """Smooth random scenes (so PNG sizes are realistic) in the DeLiVER layout, val split, condition folders."""
    import cv2

    from equiseg_ros.data.deliver import encode_label

    rng = np.random.default_rng(seed)
    folders = {"rgb": ("img", "rgb"), "depth": ("hha", "depth"), "event": ("event", "event"),
               "lidar": ("lidar", "lidar"), "label": ("semantic", "semantic")}
    conds = ("cloud", "fog", "night", "rain", "sun")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(frames):
        cond = conds[i % len(conds)]
        for name, (folder, suffix) in folders.items():
            d = root / folder / cond / "val" / "MAP_bench"
            d.mkdir(parents=True, exist_ok=True)
            if name == "label":
                lab = ((xx * 5).astype(np.int64) + 5 * (yy * 5).astype(np.int64)) % 25
                lab[: size // 16] = 255
                img = encode_label(lab)
            else:
                base = (np.sin(xx * rng.uniform(3, 9) + yy * rng.uniform(3, 9)) * 100 + 128)[..., None]
                img = np.clip(base + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(d / f"{i:06d}_{suffix}_front.png"), img)


def trivial_predict(x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Cheapest input-dependent labels: RGB channel 0 above the mean -> class 6, else 0."""
    return (x[:, 0, 0] > 0).long() * 6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2, help="frames to evaluate (default 2; naive = 128 passes each)")
    ap.add_argument("--size", type=int, default=1024, help="square frame side (default 1024, the papers' eval size)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared machine more threads spin and run slower)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from torch.utils.data import DataLoader

    from equiseg_ros.data.dataset import build_dataset, collate

    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        root = Path(tmp)
        write_frames(root, args.frames, args.size)
        cfg = DataConfig(dataset="deliver", root=str(root), image_size=args.size, num_workers=args.workers)
        spec = cfg.spec()
        ds = build_dataset(cfg, "val", train=False)
        loader = DataLoader(ds, batch_size=1, shuffle=False, num_workers=args.workers, collate_fn=collate)

        t0 = time.perf_counter()
        batches = list(loader)
        load_s = (time.perf_counter() - t0) / len(batches)

        t0 = time.perf_counter()
        res = evaluate(trivial_predict, loader, spec, protocols=PROTOCOLS, settings=SETTINGS, rmm_rates=RATES,
                       nm_levels=LEVELS, seed=0, progress=False)
        one_s = time.perf_counter() - t0

        keymap = plan(spec.num_modalities, PROTOCOLS, SETTINGS, RATES, LEVELS)
        t0 = time.perf_counter()
        naive: dict = {}
        for n, (key, variant) in enumerate(keymap.items()):
            accs, _ = run_variants(trivial_predict, loader, spec, [variant], seed=0)
            naive[key] = accs[variant].overall.miou()
            if n % 16 == 0:
                print(f"naive pass {n + 1}/{len(keymap)}", file=sys.stderr)
        naive_s = time.perf_counter() - t0

    identical = True
    for key, value in naive.items():
        s = res.results[key[1]]
        if key[0] == "full":
            got = s["full"]["miou"]
        elif key[0] == "emm":
            got = s["emm"]["subsets"][spec.subset_name(key[2])]["miou"]
        elif key[0] == "rmm":
            got = s["rmm"][str(key[2])]["subsets"][spec.subset_name(key[3])]["miou"]
        else:
            got = s["nm"][key[2]]["miou"]
        identical &= got == value
    print(json.dumps({
        "bench": "evaluation", "size": args.size, "frames": res.frames, "modalities": spec.num_modalities,
        "protocols": list(PROTOCOLS), "settings": list(SETTINGS), "rmm_rates": list(RATES), "nm_levels": list(LEVELS),
        "one_pass": {"passes": 1, "predict_calls": res.predict_calls, "seconds": round(one_s, 3),
                     "frames_per_s": round(res.frames / one_s, 4)},
        "naive": {"passes": len(keymap), "predict_calls": len(keymap) * res.frames, "seconds": round(naive_s, 3),
                  "frames_per_s": round(res.frames / naive_s, 4)},
        "speedup": round(naive_s / one_s, 2),
        "reference_scripts_passes_benchmark_setting_only": len(plan(spec.num_modalities, PROTOCOLS, ("benchmark",),
                                                                    RATES, LEVELS)),
        "load_seconds_per_frame": round(load_s, 4),
        "identical_results": bool(identical),
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "note": "2 cores shared with other jobs: absolute times are under load; the ratio is measured side by side",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
