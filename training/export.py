"""Export a checkpoint to the deployed ONNX graph (spec inside, parity-checked), optionally a TensorRT engine.

    python training/export.py --checkpoint runs/x/best.pt --out model.onnx [--size H W] [--dynamic]

The ONNX takes ``x f32 [B,M,3,H,W]`` and ``present bool [B,M]`` and returns ``labels u8 [B,H,W]`` and
``confidence f16 [B,H,W]`` (DESIGN.md, deployed graph). The ModelSpec JSON, the checkpoint's SHA-256, the model config
and the export facts ride in ``metadata_props``. The legacy TorchScript exporter is used (``dynamo=False``): it
writes one self-contained file and handles dynamic H, W without the dynamo traps in environment.md §4. Before the
file is written, ONNX Runtime and PyTorch run the same inputs (all modalities, and one modality marked absent) and
the export is refused unless labels agree on >= 99.9 % of pixels.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

if __package__ in (None, ""):  # run as `python training/export.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from equiseg_ros.checkpoint import atomic_write, sha256_file  # noqa: E402
from equiseg_ros.inference.backend import META_CHECKPOINT, META_EXPORT, META_MODEL, META_SPEC  # noqa: E402
from equiseg_ros.models.deploy import INPUT_NAMES, OUTPUT_NAMES, DeployedModel  # noqa: E402
from equiseg_ros.spec import ModelSpec  # noqa: E402

log = logging.getLogger("equiseg_ros.export")
MIN_AGREEMENT = 0.999


class ExportError(RuntimeError):
    """Export failed or the exported graph disagrees with PyTorch; nothing was written."""


@dataclass
class ParityResult:
    size: tuple[int, int]
    present: list[bool]
    label_agreement: float
    max_confidence_diff: float
    passed: bool


@dataclass
class ExportReport:
    path: str
    bytes: int
    sha256: str
    opset: int
    dynamic: bool
    size: tuple[int, int]
    batch: int
    export_seconds: float
    num_nodes: int
    simplified: str | None
    parity: list[ParityResult] = field(default_factory=list)

    @property
    def min_agreement(self) -> float:
        return min(p.label_agreement for p in self.parity) if self.parity else float("nan")

    @property
    def max_confidence_diff(self) -> float:
        return max(p.max_confidence_diff for p in self.parity) if self.parity else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "min_agreement": self.min_agreement, "max_confidence_diff": self.max_confidence_diff}


def smooth_sample(spec: ModelSpec, size: tuple[int, int], batch: int = 1, seed: int = 0) -> np.ndarray:
    """Image-like inputs (smooth random fields plus a little noise, normalised), used when no real sample is given.

    White noise gives a trained network almost tied logits everywhere, which tests float noise rather than the
    graph; low-frequency structure looks more like a scene to it.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    m = spec.num_modalities
    coarse = rng.uniform(0, 1, (batch, m, 3, max(2, h // 16), max(2, w // 16))).astype(np.float32)
    t = torch.nn.functional.interpolate(torch.from_numpy(coarse).flatten(0, 1), size=(h, w), mode="bicubic",
                                        align_corners=False).view(batch, m, 3, h, w).numpy()
    img = np.clip(t + rng.normal(0, 0.02, t.shape).astype(np.float32), 0, 1)
    mean, std = spec.norm_arrays()
    return ((img - mean[None]) / std[None]).astype(np.float32)


def load_sample(path: str | Path, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """A real frame saved as .npz with ``x`` [M,3,H,W] or [B,M,3,H,W] (normalised) and optional ``present``."""
    data = np.load(path)
    if "x" not in data:
        raise ExportError(f"{path}: sample .npz needs an array 'x' [B,M,3,H,W], has {list(data.keys())}")
    x = data["x"].astype(np.float32)
    x = x[None] if x.ndim == 4 else x
    if x.ndim != 5 or x.shape[1] != spec.num_modalities or x.shape[2] != 3:
        raise ExportError(f"{path}: x must be [B,{spec.num_modalities},3,H,W], got {list(x.shape)}")
    present = data["present"].astype(np.bool_).reshape(x.shape[0], -1) if "present" in data else None
    return x, present


def parity_masks(m: int, batch: int) -> list[np.ndarray]:
    """All modalities present, and (with >1 modality) the last one marked absent: `present` must matter."""
    masks = [np.ones((batch, m), np.bool_)]
    if m > 1:
        drop = np.ones((batch, m), np.bool_)
        drop[:, -1] = False
        masks.append(drop)
    return masks


@torch.inference_mode()
def check_parity(deployed: nn.Module, onnx_bytes: bytes, samples: Sequence[tuple[np.ndarray, np.ndarray]],
                 min_agreement: float = MIN_AGREEMENT, threads: int = 0) -> list[ParityResult]:
    """Run PyTorch and ONNX Runtime (CPU) on the same inputs; zero-fill absent modalities as the node does."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(onnx_bytes, sess_options=so, providers=["CPUExecutionProvider"])
    results = []
    for x, present in samples:
        x = (x * present[:, :, None, None, None]).astype(np.float32)
        ol, oc = sess.run(list(OUTPUT_NAMES), {"x": x, "present": present})
        tl, tc = deployed(torch.from_numpy(x), torch.from_numpy(present))
        agree = float((ol == tl.numpy()).mean())
        diff = float(np.abs(oc.astype(np.float32) - tc.float().numpy()).max())
        results.append(ParityResult(size=(int(x.shape[3]), int(x.shape[4])), present=present[0].tolist(),
                                    label_agreement=agree, max_confidence_diff=diff, passed=agree >= min_agreement))
    return results


def _simplify(model_proto, how: str | None):
    """Optional onnxslim pass (only if installed); returns (model, tool name or None)."""
    if not how:
        return model_proto, None
    if how != "onnxslim":
        raise ExportError(f"--simplify: unknown tool {how!r} (supported: onnxslim)")
    try:
        import onnxslim
    except ImportError:
        raise ExportError("--simplify onnxslim: onnxslim is not installed (pip install onnxslim)") from None
    return onnxslim.slim(model_proto), f"onnxslim {onnxslim.__version__}"


def export_onnx(model: nn.Module, spec: ModelSpec, out_path: str | Path, size: tuple[int, int] | None = None,
                checkpoint_hash: str | None = None, *, batch: int = 1, opset: int = 17, dynamic: bool = False,
                model_config: dict[str, Any] | None = None, sample: tuple[np.ndarray, np.ndarray | None] | None = None,
                parity_sizes: Sequence[tuple[int, int]] | None = None, min_agreement: float = MIN_AGREEMENT,
                simplify: str | None = None, threads: int = 0) -> ExportReport:
    """Export ``model`` (model contract) as the deployed graph to ``out_path``; refuse if parity fails.

    ``size`` (H, W) defaults to ``spec.input_size`` and is stored as the spec's input size. With ``dynamic`` the
    batch, H and W axes are symbolic and parity is also checked at a second size (``parity_sizes`` overrides).
    """
    import onnx

    out_path = Path(out_path)
    h, w = size or spec.input_size
    if h % 32 or w % 32:
        raise ExportError(f"--size: H and W must be multiples of 32, got {h}x{w}")
    if spec.num_classes > 255:
        raise ExportError(f"spec {spec.name!r}: {spec.num_classes} classes do not fit uint8 labels")
    spec = spec.with_input_size(h, w)
    m = spec.num_modalities
    deployed = DeployedModel(model).eval()
    dummy = (torch.from_numpy(smooth_sample(spec, (h, w), batch)), torch.ones(batch, m, dtype=torch.bool))
    axes = None
    if dynamic:
        img = {0: "batch", 3: "height", 4: "width"}
        out = {0: "batch", 1: "height", 2: "width"}
        axes = {"x": img, "present": {0: "batch"}, "labels": out, "confidence": out}
    t0 = time.perf_counter()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's DeprecationWarning and tracer warnings
            torch.onnx.export(deployed, dummy, buf, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                              opset_version=opset, dynamic_axes=axes, do_constant_folding=True, dynamo=False)
    except Exception as exc:  # the legacy exporter can dump a whole graph in its message: keep the first line
        first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {first}") from None
    proto = onnx.load_from_string(buf.getvalue())
    proto, simplified = _simplify(proto, simplify)
    export_facts = {"torch": torch.__version__, "onnx": onnx.__version__, "opset": opset, "dynamic": dynamic,
                    "batch": None if dynamic else batch, "size": [h, w], "exporter": "torch.onnx legacy",
                    "simplified": simplified}
    meta = {META_SPEC: spec.to_json(), META_EXPORT: json.dumps(export_facts, sort_keys=True)}
    if checkpoint_hash:
        meta[META_CHECKPOINT] = checkpoint_hash
    if model_config is not None:
        meta[META_MODEL] = json.dumps(model_config, sort_keys=True)
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.producer_name, proto.doc_string = "equiseg_ros", f"equiseg_ros deployed graph for spec {spec.name!r}"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the exported graph: {exc}") from None
    data = proto.SerializeToString()
    export_seconds = time.perf_counter() - t0

    # Parity on a real sample if given, else image-like inputs; each with all present and one modality absent.
    sizes = list(parity_sizes) if parity_sizes else [(h, w)]
    if dynamic and not parity_sizes:
        sizes.append((max(32, (h // 2) // 32 * 32), max(32, (w // 2 + 32) // 32 * 32)))
    samples: list[tuple[np.ndarray, np.ndarray]] = []
    if sample is not None:
        sx, sp = sample
        samples += [(sx, sp)] if sp is not None else [(sx, p) for p in parity_masks(m, sx.shape[0])]
    for i, (ph, pw) in enumerate(sizes if sample is None else sizes[1:]):
        x = smooth_sample(spec, (ph, pw), batch, seed=i)
        samples += [(x, p) for p in parity_masks(m, batch)]
    parity = check_parity(deployed, data, samples, min_agreement, threads)
    failed = [p for p in parity if not p.passed]
    if failed:
        raise ExportError("ONNX Runtime disagrees with PyTorch, not writing " f"{out_path}: "
                          + "; ".join(f"{p.size} present={p.present}: label agreement {p.label_agreement:.5f} "
                                      f"(need {min_agreement}), max confidence diff {p.max_confidence_diff:.2e}"
                                      for p in failed))
    atomic_write(out_path, lambda f: f.write(data))
    return ExportReport(path=str(out_path), bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), opset=opset,
                        dynamic=dynamic, size=(h, w), batch=batch, export_seconds=round(export_seconds, 3),
                        num_nodes=len(proto.graph.node), simplified=simplified, parity=parity)


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, ModelSpec, dict[str, Any], str]:
    """(model in eval mode, spec, model config dict, checkpoint sha256) from an equiseg_ros checkpoint."""
    from equiseg_ros.checkpoint import load_checkpoint
    from equiseg_ros.config import ModelConfig, from_dict
    from equiseg_ros.models.build import build_model, load_checked_checkpoint

    ckpt = load_checkpoint(path)
    cfg_dict = dict(ckpt["config"].get("model") or {})
    cfg_dict["pretrained"] = None  # the checkpoint holds all weights; never read backbone files at export
    cfg = from_dict(ModelConfig, cfg_dict, "config.model")
    model = build_model(cfg, ckpt["spec"])
    load_checked_checkpoint(model, ckpt)
    return model.eval(), ckpt["spec"], cfg_dict, sha256_file(path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="equiseg_ros checkpoint (.pt) with model, spec and config")
    p.add_argument("--out", required=True, help="ONNX file to write (one file, weights inside)")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"),
                   help="input size to export (multiples of 32); default: the spec's input size")
    p.add_argument("--batch", type=int, default=1, help="batch size of the static graph (default 1)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17; 18 is also tested)")
    p.add_argument("--dynamic", action="store_true",
                   help="symbolic batch, H and W (one file for every input size); parity is checked at 2 sizes")
    p.add_argument("--sample", help=".npz with a real frame: x [M,3,H,W] normalised, optional present [M]; "
                                    "default: image-like random inputs")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT,
                   help="refuse to write unless ORT/PyTorch labels agree on this fraction of pixels (0.999)")
    p.add_argument("--simplify", choices=["onnxslim"], help="run onnxslim after export (must be installed)")
    p.add_argument("--threads", type=int, default=0, help="torch and ORT CPU threads (0 = library default)")
    p.add_argument("--engine", nargs="?", const="", default=None, metavar="DIR",
                   help="also build a TensorRT engine (+ sidecar) into DIR (default: beside the ONNX), with "
                        "`python -m equiseg_ros.inference.build_engine`, under the name the node looks for with the "
                        "same precision and engine.cache_dir; needs TensorRT and a CUDA GPU")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="with --engine: FP16 engine (FP16 graph, strongly typed)")
    prec.add_argument("--int8-calib", metavar="DIR", help="with --engine: INT8 engine calibrated on DIR/*.npz frames")
    p.add_argument("--workspace", type=int, default=2048, help="with --engine: builder workspace limit in MB")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, spec, cfg, digest = model_from_checkpoint(args.checkpoint)
        sample = load_sample(args.sample, spec) if args.sample else None
        report = export_onnx(model, spec, args.out, tuple(args.size) if args.size else None, digest,
                             batch=args.batch, opset=args.opset, dynamic=args.dynamic, model_config=cfg,
                             sample=sample, min_agreement=args.min_agreement, simplify=args.simplify,
                             threads=args.threads)
    except (ExportError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict()))
    if args.engine is not None:
        from equiseg_ros.inference.build_engine import main as build_main

        build = ["--onnx", args.out, "--workspace", str(args.workspace)]
        build += ["--fp16"] if args.fp16 else ["--int8-calib", args.int8_calib] if args.int8_calib else []
        return build_main(build + (["--cache-dir", args.engine] if args.engine else []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
