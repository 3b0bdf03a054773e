"""Data-loading throughput: the DeLiVER reader (4 modalities, 512x512) with and without worker processes.

Prints one JSON line. The frames are synthetic scenes written in the DeLiVER layout (real PNG content, so decode
costs are realistic). Measured: the bare reader (PNG decode + channel rules + label decoding), and the training
dataset (reader + reference augmentation + normalisation) through a torch DataLoader with 0 and N workers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from equiseg_ros.data import synthetic as G  # noqa: E402
from equiseg_ros.data.dataset import SegmentationDataset, collate  # noqa: E402
from equiseg_ros.data.deliver import DeliverReader  # noqa: E402
from equiseg_ros.data.transforms import TrainTransform  # noqa: E402
from equiseg_ros.spec import deliver_spec  # noqa: E402

MODS = ["rgb", "depth", "event", "lidar"]


def loader_fps(ds, workers: int, passes: int, batch: int) -> float:
    import torch

    dl = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate,
                                     persistent_workers=workers > 0, shuffle=False)
    next(iter(dl))  # warm-up (worker start-up counted once, outside the timing)
    n, t0 = 0, time.perf_counter()
    for _ in range(passes):
        for b in dl:
            n += b["x"].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=16, help="frames generated for the benchmark (default 16)")
    ap.add_argument("--size", type=int, default=512, help="frame side in pixels (default 512)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the parallel run (default 2)")
    ap.add_argument("--passes", type=int, default=2, help="passes over the frames per measurement (default 2)")
    ap.add_argument("--root", default=None, help="existing DeLiVER-layout root (default: generate synthetic)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    tmp = None
    root = a.root
    t_gen = None
    if root is None:
        tmp = tempfile.TemporaryDirectory()
        root = tmp.name
        t0 = time.perf_counter()
        G.generate(root, a.frames, a.size, seed=0, splits=[("train", 1.0)], workers=min(2, os.cpu_count() or 1))
        t_gen = time.perf_counter() - t0
    reader = DeliverReader(root, "train", MODS)
    reader[0]
    t0 = time.perf_counter()
    n = 0
    for _ in range(a.passes):
        for i in range(len(reader)):
            reader[i]
            n += 1
    reader_fps = n / (time.perf_counter() - t0)
    spec = deliver_spec()
    ds = SegmentationDataset(reader, spec, TrainTransform(spec, a.size), seed=0)
    fps0 = loader_fps(ds, 0, a.passes, 2)
    fpsw = loader_fps(ds, a.workers, a.passes, 2)
    out = {"bench": "data", "size": a.size, "modalities": MODS, "frames": len(reader),
           "reader_fps": round(reader_fps, 2), "train_loader_fps_workers0": round(fps0, 2),
           f"train_loader_fps_workers{a.workers}": round(fpsw, 2), "workers_speedup": round(fpsw / fps0, 2),
           "reader_over_train_loader": round(reader_fps / fps0, 2),
           "generate_s_per_frame": None if t_gen is None else round(t_gen / a.frames, 3),
           "cpus": os.cpu_count(), "note": "shared machine, numbers taken under load from other jobs"}
    print(json.dumps(out))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
