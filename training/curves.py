"""PNG curves of a run from its scalars.csv: training losses, learning rate and validation metrics.

Usable on its own: ``python -m training.curves RUN_DIR`` redraws ``RUN_DIR/curves_*.png``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .logging_utils import read_scalars


def _smooth(values: list[float], k: int) -> list[float]:
    if k <= 1 or len(values) < 3:
        return values
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= k:
            acc -= values[i - k]
        out.append(acc / min(i + 1, k))
    return out


def plot_curves(run_dir: str | Path) -> list[Path]:
    """Write one PNG per tag group (train losses, lr, validation metrics); returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    scalars = read_scalars(run_dir / "scalars.csv")
    groups = {
        "losses": [t for t in scalars if t.startswith("train/loss")],
        "lr": [t for t in scalars if t == "train/lr"],
        "val": [t for t in scalars if t.startswith("val/")],
        "fsm": [t for t in scalars if t.startswith("train/fsm")],
    }
    written = []
    for name, tags in groups.items():
        if not tags:
            continue
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        for tag in sorted(tags):
            steps = [s for s, _ in scalars[tag]]
            values = [v for _, v in scalars[tag]]
            smooth = _smooth(values, 5) if name == "losses" else values
            ax.plot(steps, smooth, marker="o" if len(steps) < 20 else None, label=tag.split("/", 1)[1])
        ax.set_xlabel("iteration")
        ax.set_title({"losses": "training losses (moving mean of 5 logs)", "lr": "learning rate",
                      "val": "validation", "fsm": "FSM: share of elements from the full-modality teacher"}[name])
        if name == "losses" and all(v > 0 for t in tags for _, v in scalars[t]):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = run_dir / f"curves_{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", help="a training run directory holding scalars.csv")
    args = parser.parse_args(argv)
    for p in plot_curves(args.run_dir):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
