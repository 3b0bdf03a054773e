"""What each modality carries: the any-modality table with the classes that tell modalities apart, and night.

    python experiments/modality_analysis.py --checkpoint experiments/demo_model/demo_m_segformer_b0.pt \\
        --data runs/demo/data --size 96 [--md experiments/modality_analysis.md]

For every non-empty modality subset (the others zeroed; *benchmark* = the model told nothing, *deployed* = present
false as the node does) on the val split: mIoU over the classes present in the ground truth (the synthetic world's
own), and the IoU of the classes the world makes modality-specific: RoadLine (colour only: the road's geometry and
LiDAR reflectance), Terrain vs Vegetation (the same green: flat vs raised, geometry only), Cars (30 % of them
building-grey: geometry separates them), and the mIoU of the night frames (RGB dark, events and range sensors work).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLASSES = ("RoadLine", "Terrain", "Vegetation", "Cars")


def main(argv: list[str] | None = None) -> int:
    import torch

    from equiseg_ros.checkpoint import load_checkpoint
    from equiseg_ros.config import ModelConfig, from_dict
    from equiseg_ros.data.dataset import build_dataset, collate
    from equiseg_ros.evaluation.metrics import ConfusionMatrix
    from equiseg_ros.models.build import build_model, load_checked_checkpoint
    from training.config import load_train_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="project checkpoint")
    ap.add_argument("--data", required=True, help="synthetic dataset root")
    ap.add_argument("--size", type=int, default=96, help="image size (the model's)")
    ap.add_argument("--md", default=None, help="write the markdown table here too")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    ckpt = load_checkpoint(a.checkpoint)
    spec = ckpt["spec"]
    model = build_model(from_dict(ModelConfig, {**ckpt["config"]["model"], "pretrained": None}), spec)
    load_checked_checkpoint(model, ckpt)
    model.eval()
    data_cfg = load_train_config(None, [f"data.root={a.data}", f"data.image_size={a.size}"]).data
    ds = build_dataset(data_cfg, data_cfg.val_split, train=False, seed=0)
    batches = list(torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=collate))
    m = spec.num_modalities
    shorts = [mod.short for mod in spec.modalities]
    subsets = [s for k in range(1, m + 1) for s in itertools.combinations(range(m), k)]
    idx = {c: spec.classes.index(c) for c in CLASSES}
    rows = []
    for setting in ("benchmark", "deployed"):
        for sub in subsets:
            cm_all, cm_night, cm_day = (ConfusionMatrix(spec.num_classes, spec.ignore_index) for _ in range(3))
            for b in batches:
                keep = torch.zeros(m, dtype=torch.bool)
                keep[list(sub)] = True
                x = b["x"] * keep[None, :, None, None, None]
                present = b["present"] & keep[None] if setting == "deployed" else b["present"]
                with torch.inference_mode():
                    out = model(x, present)
                pred = (out["logits"] if isinstance(out, dict) else out)
                pred = torch.nn.functional.interpolate(pred, size=b["label"].shape[-2:], mode="bilinear",
                                                       align_corners=False).argmax(1)
                for j in range(len(pred)):
                    cm_all.update(pred[j], b["label"][j])
                    (cm_night if b["meta"][j]["condition"] == "night" else cm_day).update(pred[j], b["label"][j])
            iou = cm_all.per_class_iou()
            rows.append((setting, "".join(shorts[i] for i in sub), cm_all.miou_present(),
                         *(iou[idx[c]] for c in CLASSES), cm_day.miou_present(), cm_night.miou_present()))
    head = ("Setting", "Inputs", "mIoU (world)", *CLASSES, "mIoU day", "mIoU night")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    lines += ["| " + " | ".join([r[0], r[1]] + [f"{v:.1f}" for v in r[2:]]) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    if a.md:
        Path(a.md).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
