"""Published checkpoints -> ordinary project checkpoints: ``python -m equiseg_ros.models convert``.

A released weights file says nothing about the function it was trained with beyond its key names. This module
renames the keys to the project's, infers the backbone and class count from the shapes, and writes a checkpoint
whose model config carries a compatibility switch (``ModelConfig.compat`` and ``mit_eps``) so the project's network
computes exactly the source's function, and whose spec carries the source's modality order, normalisation, classes
and palette. Everything downstream (training/export.py, training/evaluate.py, load_backend, the node) reads it like
any other checkpoint. The facts per source are in ``FORMATS`` and in ``../shared/fixtures/reference_models/README.md``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from equiseg_ros.checkpoint import sha256_file
from equiseg_ros.config import ModelConfig, to_dict
from equiseg_ros.models.mit import LN_EPS_ALL_1E5, LN_EPS_OFFICIAL, MIT_CONFIGS, hf_to_official, is_hf_state_dict
from equiseg_ros.spec import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    DELIVER_CLASSES,
    DELIVER_PALETTE,
    Modality,
    ModelSpec,
    SpecError,
    get_preset,
)


class ConvertError(ValueError):
    """The source file does not fit the chosen format; the message names the file and the first key or shape."""


@dataclass(frozen=True)
class Format:
    """One published source: which project architecture and compat switch compute its function, and its facts."""

    name: str
    arch: str
    compat: str
    preset: str
    modalities: tuple[str, ...]  # the source's default modality order, in project names
    eps: tuple[float, float, float, float]
    source: str  # where the files come from (shown by --help)


FORMATS: dict[str, Format] = {
    "deliver": Format(
        "deliver", "cmnext", "deliver", "deliver", ("rgb", "depth", "event", "lidar"), LN_EPS_ALL_1E5,
        "DELIVER's CMNeXt (jamycheung/DELIVER, now InSAI-Lab/DELIVER; Google Drive links in its README): "
        "cmnext_b2_deliver_{rgb,rgbd,rgbe,rgbl,rgbde,rgbdl,rgbdel}.pth (plain state_dict, keys backbone.*/"
        "decode_head.*), or a *_checkpoint.pth training dict (model_state_dict). The modalities follow from the file "
        "name (..._rgbdel.pth) or --modalities; order img, depth, event, lidar."),
    "anyseg": Format(
        "anyseg", "m_segformer", "anyseg", "muses", ("rgb", "event", "lidar"), LN_EPS_OFFICIAL,
        "AnySeg's M-SegFormer (zhengxuJosh/AnySeg; Google Drive link in its README): MUSES_SegB0_FEL.pth, MiT-B0, "
        "19 Cityscapes classes, modalities frame_camera, event_camera, lidar fed as raw 0..255 (the spec says so). "
        "Keys encoder.*/decoder.*, unused classifier.weight dropped."),
    "ummss": Format(
        "ummss", "m_segformer", "ummss", "deliver", ("rgb", "depth", "event", "lidar"), LN_EPS_OFFICIAL,
        "UMMSS / RMMSS authors' M-SegFormer (RobustSeg/UMMSS, weights/ folder): Full-Modality-Teacher.pth, "
        "M-SegFormer-Stage1.pth, M-SegFormer-Stage2.pth (DeLiVER, 25 classes, img, depth, event, lidar, ImageNet "
        "normalisation for img and /255 for the rest). Stage1 and Stage2 are byte-identical in that repository (the "
        "same git blob): converting either gives the same model. *_checkpoint.pth training dicts are unwrapped."),
    "mit": Format(
        "mit", "segformer", "none", "deliver", ("rgb",), LN_EPS_OFFICIAL,
        "NVlabs SegFormer (NVlabs/SegFormer README links): ImageNet mit_b0..mit_b5.pth (encoder only: the "
        "--model's other parts are freshly initialised, fine-tune before use) or an mmseg SegFormer checkpoint "
        "segformer.b*.*.pth (state_dict with backbone.*/decode_head.*; decode_head.conv_seg is unused and dropped)."),
    "hf": Format(
        "hf", "segformer", "none", "deliver", ("rgb",), LN_EPS_ALL_1E5,
        "HuggingFace SegFormer (hub nvidia/segformer-b*-finetuned-*, nvidia/mit-b*): pytorch_model.bin or "
        "model.safetensors with hub names (segformer.encoder.block.0.0...) or a state_dict saved from "
        "transformers >= 5 (segformer.stages.0.blocks.0...). LayerNorm eps 1e-5 everywhere, as transformers runs it."),
}

# The references' modality names -> the project's.
REFERENCE_NAMES = {"img": "rgb", "frame_camera": "rgb", "event_camera": "event", "depth": "depth", "event": "event",
                   "lidar": "lidar", "radar": "radar", "rgb": "rgb", "hha": "depth"}
RAW_STD = (1.0 / 255.0,) * 3  # spec normalisation (v/255 - 0) / (1/255) = v: raw 0..255, as AnySeg feeds MUSES
WRAPPERS = ("model_state_dict", "state_dict", "model", "module", "net")


# ---- reading ---------------------------------------------------------------------------------------------------

def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file (8-byte header length, JSON header, raw little-endian data) without the package."""
    import numpy as np

    dtypes = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
              "BF16": np.int16, "U8": np.uint8, "BOOL": np.bool_}
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info["dtype"] not in dtypes:
            raise ConvertError(f"{path}: {key}: unsupported safetensors dtype {info['dtype']}")
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[8 + n + a:8 + n + b], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        t = torch.from_numpy(arr.copy())
        out[key] = t.view(torch.bfloat16).float() if info["dtype"] == "BF16" else t
    return out


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Load a weights file and unwrap it to a flat {key: tensor}; returns (state, notes on what was unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: file not found")
    if path.suffix == ".safetensors":
        return read_safetensors(path), []
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConvertError(f"{path}: not a readable PyTorch file ({type(exc).__name__}: {str(exc)[:300]})") from None
    notes: list[str] = []
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            raise ConvertError(f"{path}: no tensors at the top level and none of the wrappers {list(WRAPPERS)}; "
                               f"top-level keys: {list(obj)[:10]}")
        notes.append(f"unwrapped {key!r}")
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ConvertError(f"{path}: expected a state dict, got {type(obj).__name__}")
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
        notes.append("stripped the DDP 'module.' prefix")
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise ConvertError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
    return sd, notes


def guess_format(sd: Mapping[str, torch.Tensor]) -> str | None:
    """The format whose key names the state dict has (for error hints; anyseg and ummss share a layout)."""
    keys = list(sd)
    if any(k.startswith("backbone.extra_") or k.startswith("backbone.FFMs") for k in keys):
        return "deliver"
    if any(k.startswith("encoder.patch_embed1") for k in keys) and any(k.startswith("decoder.") for k in keys):
        return "anyseg or ummss"
    if is_hf_state_dict(sd):
        return "hf"
    if any(k.startswith(("patch_embed1.", "backbone.patch_embed1.")) for k in keys):
        return "mit"
    return None


# ---- renaming --------------------------------------------------------------------------------------------------

def _stage(m: re.Match, i: int = 1) -> int:
    return int(m.group(i)) - 1


_DELIVER_RULES: tuple[tuple[str, Callable[[re.Match], str]], ...] = (
    (r"^backbone\.((?:patch_embed|block|norm)\d)\.", lambda m: f"encoder.{m.group(1)}."),
    (r"^backbone\.extra_downsample_layers\.(\d+)\.proj\.module\.",
     lambda m: f"extra_downsample_layers.{m.group(1)}.proj."),
    (r"^backbone\.extra_downsample_layers\.(\d+)\.norm\.ln_(\d+)\.",
     lambda m: f"extra_downsample_layers.{m.group(1)}.norms.{m.group(2)}."),
    (r"^backbone\.extra_score_predictor\.(\d+)\.score_nets\.",
     lambda m: f"extra_score_predictor.{m.group(1)}.score_nets."),
    (r"^backbone\.extra_block(\d)\.(\d+)\.c_nets\.0\.",
     lambda m: f"extra_ppx.{_stage(m)}.blocks.{m.group(2)}.c_nets."),
    (r"^backbone\.extra_block(\d)\.(\d+)\.mlp\.dwconv\.dwconv\.",
     lambda m: f"extra_ppx.{_stage(m)}.blocks.{m.group(2)}.mlp.dwconv."),
    (r"^backbone\.extra_block(\d)\.(\d+)\.", lambda m: f"extra_ppx.{_stage(m)}.blocks.{m.group(2)}."),
    (r"^backbone\.extra_norm(\d)\.", lambda m: f"extra_ppx.{_stage(m)}.norm."),
    (r"^backbone\.FRMs\.(\d+)\.channel_weights\.mlp\.", lambda m: f"frms.{m.group(1)}.channel_mlp."),
    (r"^backbone\.FRMs\.(\d+)\.spatial_weights\.mlp\.", lambda m: f"frms.{m.group(1)}.spatial."),
    (r"^backbone\.FFMs\.(\d+)\.", lambda m: f"ffms.{m.group(1)}."),
    (r"^decode_head\.(linear_c\d|linear_fuse|linear_pred)\.", lambda m: f"head.{m.group(1)}."),
)
_MSEG_RULES: tuple[tuple[str, Callable[[re.Match], str]], ...] = (
    (r"^encoder\.", lambda m: "encoder."),
    (r"^decoder\.(linear_c\d|linear_fuse|linear_pred)\.", lambda m: f"head.{m.group(1)}."),
)
_SEGFORMER_RULES: tuple[tuple[str, Callable[[re.Match], str]], ...] = (
    (r"^(?:backbone\.)?((?:patch_embed|block|norm)\d)\.", lambda m: f"encoder.{m.group(1)}."),
    (r"^(?:decode_head\.)?(linear_c\d|linear_fuse|linear_pred)\.", lambda m: f"head.{m.group(1)}."),
)


def _rename(sd: Mapping[str, torch.Tensor], rules, drop: Sequence[str], where: str, fmt: str
            ) -> tuple[dict[str, torch.Tensor], list[str]]:
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, val in sd.items():
        if key in drop or any(key.startswith(d) for d in drop if d.endswith(".")):
            dropped.append(key)
            continue
        for pattern, repl in rules:
            m = re.match(pattern, key)
            if m:
                out[repl(m) + key[m.end():]] = val
                break
        else:
            guess = guess_format(sd)
            hint = f" (its keys look like --format {guess})" if guess and guess != fmt else ""
            raise ConvertError(f"{where}: key {key!r} does not fit --format {fmt}{hint}")
    return out, dropped


def rename_state(fmt_name: str, sd: Mapping[str, torch.Tensor], where: str = "state dict"
                 ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The source's keys -> the project model's keys (values untouched, except HF's k/v concatenation); returns
    (state, dropped unused keys). Refuses naming the first key that fits no rule of ``fmt_name``."""
    if fmt_name == "deliver":
        return _rename(sd, _DELIVER_RULES, (), where, fmt_name)
    if fmt_name in ("anyseg", "ummss"):
        return _rename(sd, _MSEG_RULES, ("classifier.weight",), where, fmt_name)
    if fmt_name == "hf":
        dropped = [k for k in sd if k.startswith("classifier.")]
        try:
            official = hf_to_official(sd, drop=("classifier.",))
        except ValueError as exc:
            raise ConvertError(f"{where}: {exc}") from None
        state, _ = _rename(official, _SEGFORMER_RULES, (), where, fmt_name)
        return state, dropped
    if fmt_name == "mit":  # ImageNet encoder (+ classifier head.*) or mmseg SegFormer (+ unused conv_seg)
        return _rename(sd, _SEGFORMER_RULES, ("head.weight", "head.bias", "decode_head.conv_seg."), where, fmt_name)
    raise ConvertError(f"--format: unknown {fmt_name!r}; known: {sorted(FORMATS)}")


# ---- inference from shapes ---------------------------------------------------------------------------------

def infer_backbone(sd: Mapping[str, torch.Tensor], prefix: str, where: str, wanted: str | None) -> str:
    """MiT variant from the patch-embedding widths and the number of blocks per stage."""
    dims, depths = [], []
    for s in range(1, 5):
        key = f"{prefix}patch_embed{s}.proj.weight"
        if key not in sd:
            raise ConvertError(f"{where}: missing key {key!r} (needed to infer the backbone)")
        dims.append(int(sd[key].shape[0]))
        blocks = {int(m.group(1)) for k in sd if (m := re.match(re.escape(f"{prefix}block{s}.") + r"(\d+)\.", k))}
        depths.append(len(blocks))
    found = [n for n, c in MIT_CONFIGS.items()
             if tuple(c.embed_dims) == tuple(dims) and tuple(c.depths) == tuple(depths)]
    if not found:
        raise ConvertError(f"{where}: widths {dims} and depths {depths} (key {prefix}patch_embed1.proj.weight) "
                           f"match no MiT variant {sorted(MIT_CONFIGS)}")
    if wanted and wanted != found[0]:
        raise ConvertError(f"{where}: --backbone {wanted} but the weights are {found[0]} (widths {dims}, "
                           f"depths {depths}; key {prefix}patch_embed1.proj.weight)")
    return found[0]


def _classes_for(preset: ModelSpec, k: int) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...], str | None]:
    """The preset's classes if the count fits, else a known list of that length, else generic names."""
    if k == preset.num_classes:
        return preset.classes, preset.palette, None
    for names, palette in ((DELIVER_CLASSES, DELIVER_PALETTE), (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)):
        if len(names) == k:
            return names, palette, f"{k} classes do not fit preset {preset.name!r}: using the {k}-class list"
    names = tuple(f"class{i}" for i in range(k))
    palette = tuple(preset.palette[i % preset.num_classes] for i in range(k))
    return names, palette, f"{k} classes fit no preset: generic names class0..class{k - 1}"


def make_spec(fmt: Format, preset: str, modalities: Sequence[str], num_classes: int,
              size: tuple[int, int] | None) -> tuple[ModelSpec, list[str]]:
    """The source's spec: its modality order, its normalisation, classes by count, input size."""
    notes: list[str] = []
    names = [REFERENCE_NAMES.get(m, m) for m in modalities]
    try:
        base = get_preset(preset)
        pool = {m.name: m for m in base.modalities}
        if preset != "muses":
            pool.update({m.name: m for m in get_preset("muses").modalities if m.name not in pool})
        missing = [n for n in names if n not in pool]
        if missing:
            raise SpecError(f"--modalities: unknown {missing}; known: {sorted(pool)} (or the references' names "
                            f"{sorted(REFERENCE_NAMES)})")
        mods: list[Modality] = [pool[n] for n in names]
        if fmt.compat == "anyseg":
            mods = [replace(m, mean=(0.0, 0.0, 0.0), std=RAW_STD) for m in mods]
            notes.append("normalisation: raw 0..255 (AnySeg's MUSES loader applies none), written into the spec")
        classes, palette, note = _classes_for(base, num_classes)
        if note:
            notes.append(note)
        spec = replace(base, name=f"{base.name}-{fmt.name}", modalities=tuple(mods), classes=classes,
                       palette=palette, extra={"converted_from": fmt.name})
        if size:
            spec = spec.with_input_size(*size)
    except SpecError as exc:
        raise ConvertError(str(exc)) from None
    return spec, notes


def _deliver_modalities(path: Path, num_aux: int, given: Sequence[str] | None) -> list[str]:
    if given:
        return list(given)
    m = re.search(r"_rgb(d?)(e?)(l?)(?:[_.]|$)", path.name)
    if m:
        names = ["rgb"] + [n for n, flag in zip(("depth", "event", "lidar"), m.groups()) if flag]
        if len(names) == 1 + num_aux:
            return names
    if num_aux == 3:
        return ["rgb", "depth", "event", "lidar"]
    if num_aux == 0:
        return ["rgb"]
    raise ConvertError(f"{path}: {num_aux} auxiliary modalities, and the file name does not say which: "
                       "pass --modalities (e.g. rgb,depth)")


# ---- the conversion ----------------------------------------------------------------------------------------

@dataclass
class Converted:
    state: dict[str, torch.Tensor]
    spec: ModelSpec
    config: ModelConfig
    notes: list[str]
    dropped: list[str]


def convert_state(fmt_name: str, path: str | Path, *, preset: str | None = None,
                  modalities: Sequence[str] | None = None, backbone: str | None = None, model: str | None = None,
                  size: tuple[int, int] | None = None, seed: int = 0) -> Converted:
    """Read ``path`` as ``fmt_name`` and return the project state dict, spec and model config (checked by loading
    into the built model, strict, first misfit named)."""
    from equiseg_ros.models.build import build_model, load_state_dict_checked

    if fmt_name not in FORMATS:
        raise ConvertError(f"--format: unknown {fmt_name!r}; known: {sorted(FORMATS)}")
    fmt = FORMATS[fmt_name]
    path = Path(path)
    where = f"{path} (--format {fmt_name})"
    sd, notes = read_state_dict(path)
    state, dropped = rename_state(fmt_name, sd, where)
    arch, encoder_only = fmt.arch, False
    if fmt_name == "deliver":
        num_aux = len({k.split(".")[3] for k in state if k.startswith("extra_downsample_layers.0.norms.")})
        mods = _deliver_modalities(path, num_aux, modalities)
        if len(mods) != 1 + num_aux:
            raise ConvertError(f"{where}: the weights have 1 + {num_aux} modalities (keys "
                               f"backbone.extra_downsample_layers.0.norm.ln_*), --modalities names {len(mods)}")
    elif fmt_name == "mit":
        encoder_only = not any(k.startswith("head.") for k in state)
        if encoder_only:
            arch = model or "segformer"
            notes.append(f"ImageNet encoder only: the {arch}'s head and fusion are freshly initialised (seed {seed}); "
                         "fine-tune before use")
        mods = list(modalities or (("rgb",) if arch == "segformer" else ("rgb", "depth", "event", "lidar")))
    else:
        mods = list(modalities or fmt.modalities)
    if "classifier.weight" in dropped:
        notes.append("classifier.weight is stored by the reference but unused by its forward: dropped")
    if dropped:
        notes.append(f"dropped {len(dropped)} unused key(s): {dropped[:4]}")
    bb = infer_backbone(state, "encoder.", where, backbone)
    if encoder_only:
        num_classes, dim = get_preset(preset or fmt.preset).num_classes, None
    else:
        for key in ("head.linear_pred.weight", "head.linear_c1.proj.weight"):
            if key not in state:
                raise ConvertError(f"{where}: missing head key {key!r}")
        num_classes = int(state["head.linear_pred.weight"].shape[0])
        dim = int(state["head.linear_c1.proj.weight"].shape[0])
    if arch == "segformer" and len(mods) != 1:
        raise ConvertError(f"{where}: a SegFormer takes one modality, --modalities names {mods}")
    spec, spec_notes = make_spec(fmt, preset or fmt.preset, mods, num_classes, size)
    notes += spec_notes
    cfg = ModelConfig(name=arch, backbone=bb, decoder_dim=dim, pretrained=None,  # type: ignore[arg-type]
                      compat=fmt.compat, mit_eps=fmt.eps)  # type: ignore[arg-type]
    cfg.check()
    torch.manual_seed(seed)
    net = build_model(cfg, spec)
    try:
        if encoder_only:  # every MiT the model initialises from ImageNet (CMNeXt: the RGB branch only, as DELIVER)
            net.load_pretrained_backbone(str(path))
        else:
            load_state_dict_checked(net, state)
    except ValueError as exc:
        raise ConvertError(f"{where}: {exc}") from None
    if fmt_name == "ummss" and re.search(r"stage[12]", path.name, re.I):
        notes.append("M-SegFormer-Stage1.pth and M-SegFormer-Stage2.pth are byte-identical in RobustSeg/UMMSS "
                     "(one git blob): this is the stage-1 model whichever name it has")
    return Converted(net.state_dict(), spec, cfg, notes, dropped)



def convert_file(fmt_name: str, src: str | Path, out: str | Path, **kw: Any) -> dict[str, Any]:
    """Convert ``src`` and write the project checkpoint ``out``; returns a summary dict."""
    from equiseg_ros.checkpoint import save_checkpoint

    conv = convert_state(fmt_name, src, **kw)
    source = {"format": fmt_name, "file": Path(src).name, "sha256": sha256_file(src), "notes": conv.notes,
              "dropped_keys": conv.dropped}
    save_checkpoint(out, conv.state, conv.spec, {"model": to_dict(conv.config)}, converted_from=source)
    return {"out": str(out), "format": fmt_name, "model": conv.config.name, "backbone": conv.config.backbone,
            "compat": conv.config.compat, "decoder_dim": conv.config.decoder_dim,
            "modalities": list(conv.spec.modality_names), "classes": conv.spec.num_classes,
            "input_size": list(conv.spec.input_size), "source_sha256": source["sha256"], "notes": conv.notes}


# ---- CLI -------------------------------------------------------------------------------------------------------

def epilog() -> str:
    lines = ["formats (where the files come from):"]
    for f in FORMATS.values():
        lines.append(f"  {f.name:8s} -> {f.arch} (compat {f.compat}, spec preset {f.preset}): {f.source}")
    lines += ["", "missing sensors: deliver ignores `present` beyond zero-fill (the reference has no notion of it); "
              "anyseg/ummss average over the present modalities only when `present` is false (AnySeg's own "
              "list-dropping), and average a zero image in when it is true (UMMSS's zero-fill, the benchmark)."]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="the published weights file (.pth/.pt/.bin/.safetensors)")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="which source wrote SRC (see below)")
    p.add_argument("--out", required=True, help="project checkpoint to write (.pt)")
    p.add_argument("--preset", choices=("deliver", "muses"), default=None,
                   help="spec preset for classes, palette and modality representations (default: the format's)")
    p.add_argument("--modalities", default=None,
                   help="comma-separated modalities in the source's input order (project names rgb,depth,event,"
                        "lidar,radar or the references' img,frame_camera,event_camera...; default: the format's)")
    p.add_argument("--backbone", default=None, choices=sorted(MIT_CONFIGS),
                   help="check that the weights are this MiT variant (default: inferred from the shapes)")
    p.add_argument("--model", default=None, choices=("segformer", "m_segformer", "cmnext", "equiseg"),
                   help="--format mit with an ImageNet encoder only: which project model to initialise")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), default=None,
                   help="deployed input size written into the spec (default: the preset's, 1024 1024)")
    p.add_argument("--seed", type=int, default=0, help="seed for parts the file does not hold (--format mit)")


def run(args: argparse.Namespace) -> int:
    mods = [m.strip() for m in args.modalities.split(",") if m.strip()] if args.modalities else None
    try:
        summary = convert_file(args.format, args.src, args.out, preset=args.preset, modalities=mods,
                               backbone=args.backbone, model=args.model,
                               size=tuple(args.size) if args.size else None, seed=args.seed)
    except ConvertError as exc:
        print(f"convert: {exc}", file=sys.stderr)
        return 2
    for note in summary["notes"]:
        print(f"convert: note: {note}", file=sys.stderr)
    print(json.dumps(summary))
    return 0
