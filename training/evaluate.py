"""Robustness report for one or more models: full, EMM, RMM, NM and the any-modality table, in both settings.

    python training/evaluate.py --checkpoint runs/a/best.pt runs/b/best.pt --data config/datasets/synthetic.yaml \\
        --protocols full,emm,rmm,nm,anymodal --settings benchmark,deployed --out runs/eval

Models come from project checkpoints (``--checkpoint``, built with ``equiseg_ros.models.build``) or exported
artefacts (``--model-onnx``, run through ``equiseg_ros.inference.backend.load_backend``). Every model is evaluated
on the validation split of ``--data`` with its own modalities (taken from the model's spec), and the report lands
in ``--out``: ``results.json`` (every figure), ``report.md`` (EQUISeg Table 1 and RMMSS any-modality layouts,
per-condition tables, per-class IoU) and ``robustness.png``, beside the resolved data config and the arguments.

Under ``torchrun --nproc_per_node N training/evaluate.py ...`` the frames are sharded over the processes (nccl on GPUs,
gloo on CPU), the confusion matrices all-reduced, and rank 0 writes the report.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from equiseg_ros.config import ConfigError, DataConfig, ModelConfig, from_dict, load_config, save_config  # noqa: E402
from equiseg_ros.evaluation.protocols import PROTOCOLS, SETTINGS  # noqa: E402
from equiseg_ros.spec import ModelSpec  # noqa: E402


class EvalError(RuntimeError):
    """A model or dataset cannot be evaluated; the message names the file and the reason."""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python training/evaluate.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", nargs="*", default=[], metavar="PT",
                    help="project checkpoint(s) (equiseg_ros.checkpoint format); one report row per checkpoint")
    ap.add_argument("--model-onnx", nargs="*", default=[], metavar="PATH",
                    help="exported model(s) (.onnx, or a TensorRT engine with its sidecar) run through the inference "
                         "backends; their spec is read from the artefact")
    ap.add_argument("--name", nargs="*", default=[],
                    help="row names, in the order checkpoints then ONNX models (default: file stem, made unique)")
    ap.add_argument("--data", required=True, help="dataset YAML (DataConfig), e.g. config/datasets/synthetic.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a data config key, e.g. --set root=data/deliver --set image_size=1024 (repeatable)")
    ap.add_argument("--split", default=None, help="split to evaluate (default: the config's val_split)")
    ap.add_argument("--protocols", default=",".join(PROTOCOLS),
                    help=f"comma-separated subset of {','.join(PROTOCOLS)} (default: all)")
    ap.add_argument("--settings", default=",".join(SETTINGS),
                    help="benchmark (zero-fill, model told nothing: the papers) and/or deployed (zero-fill and "
                         "present=false: the ROS node); default both")
    ap.add_argument("--rmm-rates", default="0.25,0.5,0.75", help="RMM drop rates (default 0.25,0.5,0.75)")
    ap.add_argument("--table-rmm-rate", type=float, default=0.5,
                    help="RMM rate of the Table-1 columns (EQUISeg reports 0.5; default 0.5)")
    ap.add_argument("--nm-levels", default="low,mid,high", help="NM levels (default low,mid,high)")
    ap.add_argument("--out", required=True, help="output folder for results.json, report.md, robustness.png")
    ap.add_argument("--batch-size", type=int, default=1,
                    help="frames per batch (default 1: NM's max/min are per batch tensor, as in the reference)")
    ap.add_argument("--stack", type=int, default=1,
                    help="input variants per model call (concatenated on the batch axis; >1 keeps a GPU busy; "
                         "exported models need a dynamic batch axis); default 1")
    ap.add_argument("--max-batches", type=int, default=None,
                    help="stop after N batches (quick looks; per process under torchrun)")
    ap.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: the config's)")
    ap.add_argument("--device", default="cpu", help="torch device for checkpoints and metrics (default cpu)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the RMM/NM corruptions (default 0)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    args = ap.parse_args(argv)
    if not args.checkpoint and not args.model_onnx:
        ap.error("give at least one --checkpoint or --model-onnx")
    return args


def _unique_names(paths: Sequence[str], names: Sequence[str]) -> list[str]:
    if names and len(names) != len(paths):
        raise EvalError(f"--name: {len(names)} names for {len(paths)} models")
    out: list[str] = []
    for i, p in enumerate(paths):
        base = names[i] if names else (Path(p).parent.name + "/" + Path(p).stem if Path(p).stem in
                                       ("best", "last", "model", "checkpoint") else Path(p).stem)
        name, k = base, 2
        while name in out:
            name, k = f"{base}#{k}", k + 1
        out.append(name)
    return out


def load_checkpoint_predictor(path: str, device: str) -> tuple[Callable, ModelSpec]:
    """Checkpoint -> (predict(x, present) -> logits, spec), via build_model and a checked state-dict load."""
    import torch

    from equiseg_ros.checkpoint import load_checkpoint

    try:
        from equiseg_ros.models.build import build_model, load_checked_checkpoint
    except ImportError as exc:
        raise EvalError(f"{path}: equiseg_ros.models.build is not available ({exc}); "
                        "the protocol runner itself works with any predict callable") from None
    ckpt = load_checkpoint(path, map_location="cpu")
    model_dict = dict((ckpt.get("config") or {}).get("model") or {})
    if not model_dict:
        raise EvalError(f"{path}: checkpoint config has no 'model' section (ModelConfig fields)")
    model_dict["pretrained"] = None  # weights come from the checkpoint; the ImageNet file may not be here
    try:
        cfg = from_dict(ModelConfig, model_dict, "config.model")
    except ConfigError as exc:
        raise EvalError(f"{path}: {exc}") from None
    spec: ModelSpec = ckpt["spec"]
    model = build_model(cfg, spec)
    try:
        load_checked_checkpoint(model, ckpt)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise EvalError(f"{path}: weights do not fit {cfg.name}/{cfg.backbone}: {exc}") from None
    model.to(device).eval()

    def predict(x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = model(x, present)
        return out["logits"] if isinstance(out, dict) else out

    return predict, spec


def load_onnx_predictor(path: str, device: str) -> tuple[Callable, ModelSpec]:
    """Exported model -> (predict(x, present) -> labels, spec) through the inference backend chain."""
    import numpy as np
    import torch

    try:
        from equiseg_ros.inference.backend import load_backend
    except ImportError as exc:
        raise EvalError(f"{path}: no inference backend available ({exc})") from None
    backend = load_backend(path)

    def predict(x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        labels, _ = backend.infer(x.detach().cpu().numpy().astype(np.float32), present.detach().cpu().numpy())
        return torch.from_numpy(labels.astype(np.int64)).to(x.device)

    if backend.fixed_hw is not None:
        predict.fixed_hw = tuple(backend.fixed_hw)  # type: ignore[attr-defined]
    return predict, backend.spec


def make_loader(data_cfg: DataConfig, spec: ModelSpec, split: str, batch_size: int, num_workers: int,
                rank: int = 0, world: int = 1) -> Any:
    """Validation DataLoader of ``data_cfg`` restricted to (and ordered by) the model's modalities; under torchrun
    each rank reads frames rank, rank + world, ... (no padding, so no frame is counted twice)."""
    from torch.utils.data import DataLoader, Subset

    from equiseg_ros.data.dataset import build_dataset, collate

    cfg = from_dict(DataConfig, {**_as_dict(data_cfg), "modalities": list(spec.modality_names)})
    data_spec = cfg.spec()
    if tuple(data_spec.classes) != tuple(spec.classes):
        raise EvalError(f"--data {cfg.dataset}: {data_spec.num_classes} classes, the model {spec.num_classes} "
                        f"(spec {spec.name!r}); evaluate a model on the dataset it was trained for")
    for mine, theirs in zip(data_spec.modalities, spec.modalities):
        if mine.representation != theirs.representation:
            raise EvalError(f"--data {cfg.dataset}: modality {mine.name!r} is read as {mine.representation!r}, "
                            f"the model takes {theirs.representation!r}")
    # The representation comes from the data, the normalisation from the model (it is part of what it learned).
    ds = build_dataset(cfg, split, train=False, spec=spec)
    if len(ds) == 0:
        raise EvalError(f"--data {cfg.root}: split {split!r} has no frames")
    data = ds if world <= 1 else Subset(ds, list(range(rank, len(ds), world)))
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)


def _as_dict(cfg: Any) -> dict[str, Any]:
    from equiseg_ros.config import to_dict

    return to_dict(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """Single process, or one process per GPU / CPU slot under torchrun (frames sharded, matrices all-reduced,
    rank 0 writes the report)."""
    args = parse_args(argv)
    import torch

    from training import distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = distributed.init("auto", device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    code = run(args, device, info.rank, info.world_size)
    distributed.finish(info, code)  # returns normally for a single process
    return code


def run(args: argparse.Namespace, device: Any, rank: int = 0, world: int = 1) -> int:
    from equiseg_ros.evaluation.protocols import evaluate
    from equiseg_ros.evaluation.report import table1_markdown, write_report

    main_rank = rank == 0
    try:
        data_cfg = load_config(DataConfig, args.data, args.set)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    split = args.split or data_cfg.val_split
    workers = data_cfg.num_workers if args.num_workers is None else args.num_workers
    models = [("ckpt", p) for p in args.checkpoint] + [("onnx", p) for p in args.model_onnx]
    out = Path(args.out)
    try:
        names = _unique_names([p for _, p in models], args.name)
        results: dict[str, Any] = {}
        spec = None
        for (kind, path), name in zip(models, names):
            loader_fn = load_checkpoint_predictor if kind == "ckpt" else load_onnx_predictor
            predict, spec = loader_fn(path, str(device))
            fixed = getattr(predict, "fixed_hw", None)
            if fixed is not None and tuple(fixed) != (data_cfg.image_size, data_cfg.image_size):
                raise EvalError(f"{path}: exported for H,W = {list(fixed)}; evaluate it with "
                                f"--set image_size={fixed[0]} (square data) or export a dynamic-size model")
            loader = make_loader(data_cfg, spec, split, args.batch_size, workers, rank, world)
            if main_rank:
                print(f"[evaluate] {name}: {path} on {data_cfg.dataset}/{split} ({len(loader.dataset)} frames"
                      f"{f' on rank 0 of {world}' if world > 1 else ''}, modalities {list(spec.modality_names)})",
                      file=sys.stderr)
            results[name] = evaluate(predict, loader, spec, protocols=_csv(args.protocols),
                                     settings=_csv(args.settings), rmm_rates=[float(r) for r in _csv(args.rmm_rates)],
                                     nm_levels=_csv(args.nm_levels), seed=args.seed, device=device,
                                     max_batches=args.max_batches, progress=main_rank and not args.no_progress,
                                     table_rmm_rate=args.table_rmm_rate, stack=args.stack, all_reduce=world > 1)
    except (EvalError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error{f' (rank {rank})' if world > 1 else ''}: {exc}", file=sys.stderr)
        return 1
    if not main_rank:
        return 0
    paths = write_report(results, out, spec)
    save_config(data_cfg, out / "data_config.yaml")
    (out / "args.json").write_text(json.dumps({**vars(args), "world_size": world}, indent=1))
    for setting in _csv(args.settings):
        print(f"\n{setting} setting (EQUISeg Table 1 layout)\n")
        print(table1_markdown(results, setting))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
