"""Experiment: do SGM and RMMSS's two stages buy robustness on the synthetic data, at a fixed CPU budget?

Six trainings per seed, all from scratch on the same synthetic dataset, same budget (iterations x batch x crop):

- ``EQUISeg-B0 + SGM``      method equiseg (OHEM + 60 SGM)
- ``EQUISeg-B0 (no SGM)``   method equiseg with loss.sgm_weight = 0, same network
- ``M-SegFormer-B0``        method supervised (also the RMMSS full-modality teacher)
- ``CMNeXt-B0``             method supervised
- ``RMMSS stage 1``         M-SegFormer-B0 student, UMMSS modality masking, teacher = the run above (same seed)
- ``RMMSS stage 2``         M-SegFormer-B0 student, teachers = M-SegFormer-B0 + stage 1, two FSMs

The converged run of issue 15 (item 4; ~2.5 h of an idle 2-core machine, planned from bench/bench_training.py):

    python experiments/synthetic_robustness.py --out runs/converged --frames 400 --size 64 --iters 1000 --batch 8 \
        --decoder-dim 256 --seeds 0,1,2 --val-every 100 --jobs 2 --md experiments/converged_experiment.md

``--val-every`` validates (full modalities, benchmark) during training so the curves show whether they flattened
(``curves.png`` beside the report); ``--jobs 2`` trains the seeds in two processes (one thread each).

Each final checkpoint is evaluated on the validation split with the robustness protocols (full, EMM, RMM at
r=0.5, NM low/mid; benchmark and deployed settings) and the tables are written with the evaluation helper's
report module: per-seed rows and the mean +- std over seeds. Runs already finished are reused, so an interrupted
experiment continues where it stopped.

    python experiments/synthetic_robustness.py --out runs/experiment --seeds 0,1,2 --iters 150
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RUNS = (  # name, recipe, extra overrides, teachers (run names)
    ("EQUISeg-B0 + SGM", "synthetic_equiseg_b0.yaml", [], {}),
    ("EQUISeg-B0 (no SGM)", "synthetic_equiseg_b0.yaml", ["loss.sgm_weight=0"], {}),
    ("M-SegFormer-B0", "synthetic_m_segformer_b0_teacher.yaml", [], {}),
    ("CMNeXt-B0", "synthetic_m_segformer_b0_teacher.yaml", ["model.name=cmnext"], {}),
    ("RMMSS stage 1", "synthetic_rmmss_stage1_b0.yaml", [], {"full": "M-SegFormer-B0"}),
    ("RMMSS stage 2", "synthetic_rmmss_stage2_b0.yaml", [], {"full": "M-SegFormer-B0", "robust": "RMMSS stage 1"}),
)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_").replace("__", "_")


def train_one(name: str, recipe: str, extra: list[str], teachers: dict[str, str], seed: int, args, out: Path) -> Path:
    from equiseg_ros.checkpoint import load_checkpoint
    from training.config import load_train_config
    from training.loop import Trainer

    run_dir = out / "runs" / f"{slug(name)}_seed{seed}"
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file() and load_checkpoint(last).get("iteration") == args.iters:
        print(f"[experiment] {name} seed {seed}: done already ({last})")
        return last
    sets = [f"data.root={args.data}", f"data.image_size={args.size}", f"max_iters={args.iters}",
            f"batch_size={args.batch}", f"seed={args.seed_base + seed}", f"threads={args.threads}",
            "progress=false", "tensorboard=false", "val.at_end=false", f"val.every={args.val_every}",
            "val.protocols=[full]", "val.settings=[benchmark]", "val.best_metric=mIoU",
            f"checkpoint.every={max(args.iters // 3, 1)}", *extra, *args.set]
    if args.decoder_dim and "equiseg" not in recipe:
        sets.append(f"model.decoder_dim={args.decoder_dim}")
    for role, run_name in teachers.items():
        sets.append(f"teachers.{role}={out / 'runs' / f'{slug(run_name)}_seed{seed}' / 'checkpoints' / 'last.pt'}")
    cfg = load_train_config(ROOT / "config" / "train" / recipe, sets)
    t0 = time.time()
    trainer = Trainer(cfg, run_dir, resume="auto")
    trainer.fit()
    print(f"[experiment] {name} seed {seed}: {args.iters} iterations in {time.time() - t0:.0f} s")
    return last


def evaluate_one(ckpt_path: Path, args, json_path: Path):
    import torch

    from equiseg_ros.checkpoint import load_checkpoint
    from equiseg_ros.config import ModelConfig, from_dict
    from equiseg_ros.data.dataset import build_dataset, collate
    from equiseg_ros.evaluation.protocols import EvalResult, evaluate
    from equiseg_ros.models.build import build_model, load_checked_checkpoint
    from training.config import load_train_config

    if json_path.is_file():
        return EvalResult.from_dict(json.loads(json_path.read_text()))
    ckpt = load_checkpoint(ckpt_path)
    model = build_model(from_dict(ModelConfig, {**ckpt["config"]["model"], "pretrained": None}), ckpt["spec"])
    load_checked_checkpoint(model, ckpt)
    model.eval()
    data_cfg = load_train_config(None, [f"data.root={args.data}", f"data.image_size={args.size}"]).data
    loader = torch.utils.data.DataLoader(build_dataset(data_cfg, data_cfg.val_split, train=False, seed=0),
                                         batch_size=8, collate_fn=collate)

    def predict(x, present):
        with torch.inference_mode():
            return model(x, present)

    res = evaluate(predict, loader, ckpt["spec"], protocols=("full", "emm", "anymodal", "rmm", "nm"),
                   settings=("benchmark", "deployed"), rmm_rates=(0.5,), nm_levels=("low", "mid"),
                   progress=False)
    res.save_json(json_path)
    return res


def mean_std_rows(results: dict, names: list[str], seeds: list[int], setting: str, columns: list[str]):
    rows_mean, rows_std = [], []
    for name in names:
        per = [results[(name, s)].table1_row(setting) for s in seeds]
        means, stds = [], []
        for c in columns:
            vals = [r[c] for r in per if r.get(c) is not None]
            means.append(statistics.fmean(vals) if vals else None)
            stds.append(statistics.stdev(vals) if len(vals) > 1 else None)
        rows_mean.append((name, means))
        rows_std.append((name, stds))
    return rows_mean, rows_std


def _parallel(seeds: list[int], args, argv: list[str]) -> None:
    """Train the seeds in ``args.jobs`` child processes (one thread each); the caller then reports (reusing runs)."""
    groups = [seeds[i::args.jobs] for i in range(args.jobs)]
    base = [a for a in argv if not a.startswith("--jobs") and not a.startswith("--seeds")]
    clean, skip = [], False
    for a in base:  # drop the values of --jobs / --seeds given as separate arguments
        if skip:
            skip = False
            continue
        if a in ("--jobs", "--seeds"):
            skip = True
            continue
        clean.append(a)
    procs = [subprocess.Popen([sys.executable, __file__, *clean, "--seeds", ",".join(map(str, g)), "--jobs", "1",
                               "--no-report"]) for g in groups if g]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a training process failed (exit codes {codes})")


def anymodal_mean_std(results: dict, names: list[str], seeds: list[int], setting: str) -> str:
    """Markdown: one row per model, each subset's mean +- std over seeds (reference mIoU, 25 classes)."""
    first = results[(names[0], seeds[0])].anymodal_row(setting) or {}
    subsets = list(first)
    lines = ["| Model | " + " | ".join(subsets) + " |", "|---|" + "---:|" * len(subsets)]
    for n in names:
        rows = [results[(n, s)].anymodal_row(setting) or {} for s in seeds]
        cells = []
        for k in subsets:
            vals = [r[k] for r in rows if k in r]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.fmean(vals):.2f} +- {sd:.2f}" if vals else "-")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims(results: dict, names: list[str], seeds: list[int], setting: str = "benchmark") -> list[str]:
    """Each paper claim as a difference of seed means against the seed spread (pooled std)."""
    def vals(name: str, col: str) -> list[float]:
        return [results[(name, s)].table1_row(setting)[col] for s in seeds]

    def diff(a: str, b: str, col: str) -> str:
        va, vb = vals(a, col), vals(b, col)
        d = statistics.fmean(va) - statistics.fmean(vb)
        sd = ((statistics.stdev(va) ** 2 + statistics.stdev(vb) ** 2) / 2) ** 0.5 if len(seeds) > 1 else 0.0
        verdict = "holds" if d > 2 * sd and d > 0 else ("reversed" if d < -2 * sd else "within the seed spread")
        return f"{a} - {b} on {col}: {d:+.2f} (pooled seed std {sd:.2f}): {verdict}"

    out = ["## The papers' claims here (benchmark setting; 'holds' = difference > 2 pooled seed std)", ""]
    for base in ("M-SegFormer-B0", "CMNeXt-B0"):
        for col in ("EMM Avg", "Mean"):
            out.append("- EQUISeg beats the baselines: " + diff("EQUISeg-B0 + SGM", base, col))
    for col in ("EMM Avg", "Mean"):
        out.append("- SGM raises robustness: " + diff("EQUISeg-B0 + SGM", "EQUISeg-B0 (no SGM)", col))
    out.append("- Stage 1 trades full-modality mIoU: " + diff("M-SegFormer-B0", "RMMSS stage 1", "mIoU"))
    out.append("- ... for robustness: " + diff("RMMSS stage 1", "M-SegFormer-B0", "EMM Avg"))
    out.append("- Stage 2 recovers full-modality mIoU: " + diff("RMMSS stage 2", "RMMSS stage 1", "mIoU"))
    out.append("- ... keeping robustness (>= stage 1): " + diff("RMMSS stage 2", "RMMSS stage 1", "EMM Avg"))
    return out


def plot_curves(out: Path, names: list[str], seeds: list[int]) -> Path:
    """One line per run: validation mIoU over the present classes against the iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.logging_utils import read_scalars

    fig, ax = plt.subplots(figsize=(9, 5))
    for i, n in enumerate(names):
        for s in seeds:
            csv_path = out / "runs" / f"{slug(n)}_seed{s}" / "scalars.csv"
            pts = sorted(read_scalars(csv_path).get("val/benchmark/mIoU_present", [])) if csv_path.is_file() else []
            if pts:
                ax.plot(*zip(*pts), color=f"C{i}", alpha=0.8, label=n if s == seeds[0] else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel("val mIoU, world classes (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    path = out / "curves.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/experiment", help="runs, evaluations and the report go here")
    ap.add_argument("--data", default=None, help="existing synthetic dataset root (default: generate OUT/data)")
    ap.add_argument("--frames", type=int, default=96, help="frames to generate when --data is not given")
    ap.add_argument("--size", type=int, default=64, help="image size (generation and training crop)")
    ap.add_argument("--iters", type=int, default=150, help="optimiser steps per training (the fixed budget)")
    ap.add_argument("--batch", type=int, default=4, help="batch size per step")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    ap.add_argument("--seed-base", type=int, default=3407, help="training seed = seed-base + seed")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    ap.add_argument("--md", default=None, help="also write the markdown report to this path")
    ap.add_argument("--val-every", type=int, default=0, help="validate every N iterations (curves; 0 = never)")
    ap.add_argument("--decoder-dim", type=int, default=None, help="head width of the M-SegFormer/CMNeXt runs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument("--jobs", type=int, default=1, help="train the seeds in this many processes, then report")
    ap.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.data is None:
        args.data = str(out / "data")
        if not (Path(args.data) / "img").is_dir():
            subprocess.run([sys.executable, "-m", "equiseg_ros.data.synthetic", "--out", args.data, "--frames",
                            str(args.frames), "--size", str(args.size), "--seed", "0"], check=True)
    if args.jobs > 1 and len(seeds) > 1:
        _parallel(seeds, args, argv if argv is not None else sys.argv[1:])
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    results = {}
    for seed in seeds:
        for name, recipe, extra, teachers in RUNS:
            ckpt = train_one(name, recipe, extra, teachers, seed, args, out)
            results[(name, seed)] = evaluate_one(ckpt, args, out / "eval" / f"{slug(name)}_seed{seed}.json")
    if args.no_report:
        return 0
    from equiseg_ros.evaluation.protocols import TABLE1_COLUMNS
    from equiseg_ros.evaluation.report import TABLE1_HEADERS, markdown_table, table1_markdown

    names = [r[0] for r in RUNS]
    cols = list(TABLE1_COLUMNS)
    cmd = "python experiments/synthetic_robustness.py " + " ".join(argv if argv is not None else sys.argv[1:])
    any_res = next(iter(results.values()))
    lines = ["# Synthetic robustness experiment: SGM and RMMSS stages at a fixed budget", "",
             f"Command: `{cmd}`", "",
             f"Budget per training: {args.iters} iterations x batch {args.batch} at {args.size}x{args.size}, from "
             f"scratch (no ImageNet weights), {len(seeds)} seeds ({args.seeds}; training seed = {args.seed_base} + "
             f"seed), one CPU thread per run on a CPU shared with other jobs. Validation: {any_res.frames} frames "
             f"of the synthetic val split. Wall time: {(time.time() - t0) / 60:.1f} min (includes reused runs).",
             "", "mIoU follows the reference (mean over all 25 DeLiVER classes, absent ones count 0; the synthetic "
             "world uses 12 of them, so 48 is the ceiling; over the world's own classes every figure is x 25/12, "
             "exactly, "
             "since a class absent from the ground truth scores 0 whatever is predicted). RMM at r = 0.5, NM Low/Mid.",
             ""]
    for setting in ("benchmark", "deployed"):
        mean_rows, std_rows = mean_std_rows(results, names, seeds, setting, cols)
        header = ["Model"] + [TABLE1_HEADERS[c] for c in cols]
        lines += [f"## Mean over seeds ({setting} setting)", "", markdown_table(header, mean_rows), "",
                  f"Standard deviation over seeds ({setting}):", "", markdown_table(header, std_rows, bold_best=False),
                  ""]
    per_seed = {f"{n} / seed {s}": results[(n, s)] for s in seeds for n in names}
    lines += ["## Every run (benchmark setting)", "", table1_markdown(per_seed, "benchmark"), ""]
    for setting in ("benchmark", "deployed"):
        lines += [f"## Any-modality mIoU, mean +- std over seeds ({setting} setting)", "",
                  anymodal_mean_std(results, names, seeds, setting), ""]
    lines += claims(results, names, seeds)
    if args.val_every:
        curves = plot_curves(out, names, seeds)
        lines += ["", f"Validation curves (full-modality mIoU over the world's classes): `{curves}`"]
    report = "\n".join(lines)
    (out / "report.md").write_text(report)
    if args.md:
        Path(args.md).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
