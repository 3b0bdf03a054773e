"""Train EQUISeg (+SGM), RMMSS stage 1 (HPDM) / stage 2 (FSM) and the supervised baselines.

    python training/train.py --config config/train/synthetic_equiseg_b0.yaml --out runs/equiseg_b0
    python training/train.py --config ... --out RUN_DIR --resume auto          # continue after a crash / kill
    torchrun --nproc_per_node 4 training/train.py --config ... --out RUN_DIR  # DDP (nccl on GPUs, gloo on CPU)

Every key of the recipe can be overridden: ``--set max_iters=100 --set optim.lr=1e-4 --set data.root=/data/DELIVER``.
Outputs in RUN_DIR: config.yaml (resolved), checkpoints/{last,best}.pt, scalars.csv, tb/, val/*.json,
curves_*.png, summary.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable (training/ and equiseg_ros/)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python training/train.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training recipe YAML (config/train/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key (dotted, value parsed as YAML); repeatable")
    parser.add_argument("--resume", default=None, metavar="auto|PATH",
                        help="'auto' continues from RUN_DIR/checkpoints/last.pt when it exists (else starts "
                             "fresh); a PATH resumes from that checkpoint")
    parser.add_argument("--out", required=True, help="run directory for checkpoints, logs, curves and config.yaml")
    parser.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from equiseg_ros.checkpoint import CheckpointError
    from equiseg_ros.config import ConfigError, to_dict
    from training.config import load_train_config

    try:
        cfg = load_train_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    from training.loop import run

    try:
        summary = run(cfg, args.out, args.resume)
    except (CheckpointError, ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("method", "iterations", "train_seconds", "best_metric", "best_value")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
