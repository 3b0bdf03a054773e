"""``python -m equiseg_ros.models summary|convert``.

``summary``: parameters and multiply-accumulates of a model, as one JSON line.
``convert``: a published checkpoint (DELIVER CMNeXt, AnySeg / UMMSS M-SegFormer, NVlabs MiT/SegFormer, HuggingFace
SegFormer) -> a project checkpoint that computes the source's function (see ``equiseg_ros.models.convert``).

The model is built on the meta device (no memory, no weights), so B2 at 1024 px costs a few seconds. ``gflops`` is
torch's FlopCounterMode (2 FLOPs per multiply-accumulate, attention included); ``gmacs`` is half of it, the
convention of the papers' tables (fvcore's "GFLOPs" count multiply-accumulates). ``gmacs_executed`` is what eager
inference runs: the SegFormer head's re-associated eval route (``head.SegFormerHead``) computes the same function
with fewer multiply-accumulates.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import torch

from equiseg_ros.config import ModelConfig
from equiseg_ros.models.build import ARCHITECTURES, build_model, count_params
from equiseg_ros.models.head import SegFormerHead, default_decoder_dim
from equiseg_ros.spec import ModelSpec, SpecError, deliver_spec, muses_spec


def make_spec(modalities: list[str], classes: int) -> ModelSpec:
    """DeLiVER's modalities (or MUSES' for ``radar``) in the given order, with ``classes`` classes."""
    pool = {m.name: m for m in (*muses_spec().modalities, *deliver_spec().modalities)}
    missing = [m for m in modalities if m not in pool]
    if missing:
        raise SpecError(f"--modalities: unknown {missing}; known: {sorted(pool)}")
    base = deliver_spec()
    names = tuple(base.classes[i] if i < base.num_classes else f"class{i}" for i in range(classes))
    palette = tuple(base.palette[i % base.num_classes] for i in range(classes))
    return replace(base, name="summary", modalities=tuple(pool[m] for m in modalities), classes=names,
                   palette=palette)


def summarize(cfg: ModelConfig, spec: ModelSpec, size: int, count_macs: bool = True) -> dict:
    """Parameter count and (optionally) multiply-accumulates of one forward at ``size`` x ``size``, batch 1."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_model(replace(cfg, pretrained=None), spec).eval()
        m = model.num_modalities
        out = {"model": cfg.name, "backbone": cfg.backbone, "modalities": list(model.spec.modality_names),
               "classes": spec.num_classes, "size": size,
               "decoder_dim": cfg.decoder_dim or default_decoder_dim(cfg.name, cfg.backbone),
               "params": count_params(model), "params_m": round(count_params(model) / 1e6, 3)}
        if count_macs:
            def count(reassociate: bool) -> int:
                counter = FlopCounterMode(display=False)
                SegFormerHead.reassociate = reassociate
                try:
                    with counter, torch.no_grad():
                        model(torch.zeros(1, m, 3, size, size), torch.ones(1, m, dtype=torch.bool))
                finally:
                    SegFormerHead.reassociate = True
                return counter.get_total_flops()

            flops = count(False)  # the architecture as published (the papers' count)
            out["gflops"] = round(flops / 1e9, 3)
            out["gmacs"] = round(flops / 2e9, 3)
            out["gmacs_executed"] = round(count(True) / 2e9, 3)  # what eager inference runs (re-associated head)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m equiseg_ros.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="print params, gmacs and gflops of a model as one JSON line")
    p.add_argument("--model", choices=ARCHITECTURES, default="equiseg", help="architecture (default equiseg)")
    p.add_argument("--backbone", default="mit_b2", help="MiT variant mit_b0..mit_b5 (default mit_b2)")
    p.add_argument("--modalities", default="rgb,depth,event,lidar",
                   help="comma-separated modality names in model order (DeLiVER/MUSES names; default rgb,depth,event,"
                        "lidar). segformer uses only the first")
    p.add_argument("--classes", type=int, default=25, help="number of classes (default 25, DeLiVER)")
    p.add_argument("--size", type=int, default=1024, help="square input side in pixels, multiple of 32 (default 1024)")
    p.add_argument("--decoder-dim", type=int, default=None, help="head width (default: the architecture's own)")
    p.add_argument("--fusion", choices=("sqhub", "mean"), default="sqhub", help="EQUISeg ablation: hub or mean")
    p.add_argument("--no-cross-attention", action="store_true", help="EQUISeg ablation: no cross-attention")
    p.add_argument("--no-residual", action="store_true", help="EQUISeg ablation: no residual add")
    p.add_argument("--params-only", action="store_true", help="skip the multiply-accumulate count")
    from equiseg_ros.models import convert

    c = sub.add_parser("convert", help="published weights -> project checkpoint computing the source's function",
                       description=convert.__doc__, epilog=convert.epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_arguments(c)
    args = parser.parse_args(argv)
    if args.command == "convert":
        return convert.run(args)
    if args.size <= 0 or args.size % 32:
        parser.error(f"--size: must be a positive multiple of 32, got {args.size}")
    try:
        cfg = ModelConfig(name=args.model, backbone=args.backbone, decoder_dim=args.decoder_dim,
                          fusion=args.fusion, cross_attention=not args.no_cross_attention,
                          residual=not args.no_residual)
        cfg.check()
        spec = make_spec([m.strip() for m in args.modalities.split(",") if m.strip()], args.classes)
        print(json.dumps(summarize(cfg, spec, args.size, not args.params_only)))
    except (ValueError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
