"""ONNX preparation for TensorRT engines: the optimisation profile, the cache request, precision in the graph.

TensorRT 10.12 deprecates the weak-typing precision flags (``BuilderFlag.FP16``) and 11.0 removes them: a strongly
typed network takes every tensor's type from the ONNX. So an FP16 engine is built from an FP16 graph
(:func:`equiseg_ros.inference._fp16.to_fp16`: FP16 end to end, statistics and shape arithmetic FP32) and an INT8
engine from a Q/DQ graph (:func:`quantize_qdq`). :func:`graph_recipe` names how that graph is made, for the cache
key. Only the fp16/int8 paths need the ``onnx`` / ``onnxruntime`` packages, and they import them on call.

Optimisation profile: one shape per engine (min = opt = max). A vehicle feeds one camera size, and a single-shape
profile lets TensorRT pick kernels for exactly that shape. A static ONNX needs no profile at all: the builder adds
one only for inputs that have dynamic dimensions (see ``tensorrt_backend``), and a static ONNX built for another
size is refused here with a clear message.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
from pathlib import Path
from typing import Any

import numpy as np

from equiseg_ros.checkpoint import sha256_file
from equiseg_ros.inference._onnx_meta import OnnxInfo, read_onnx_info
from equiseg_ros.inference.backend import read_onnx_spec
from equiseg_ros.inference.engine_cache import EngineRequest
from equiseg_ros.inference.errors import BackendError


def profile_shapes(info: OnnxInfo, size: tuple[int, int] | None, batch: int, default_hw: tuple[int, int],
                   path: str | Path = "?") -> dict[str, dict[str, list[int]]]:
    """min/opt/max shape per input: fixed dims as exported, dynamic ones set to (batch, H, W); one shape per engine.

    A single-shape profile gives TensorRT the most freedom; a vehicle feeds one camera size anyway.
    """
    h, w = size or default_hw
    out: dict[str, dict[str, list[int]]] = {}
    for t in info.inputs:
        if t.name not in ("x", "present"):
            raise BackendError(f"{path}: unexpected ONNX input {t.name!r}")
        concrete = []
        for i, d in enumerate(t.shape):
            if isinstance(d, int):
                concrete.append(d)
            elif i == 0:
                concrete.append(batch)
            elif t.name == "x" and i == 3:
                concrete.append(h)
            elif t.name == "x" and i == 4:
                concrete.append(w)
            else:
                raise BackendError(f"{path}: input {t.name} has a dynamic dim {i} ({d!r}) that cannot be chosen")
        if size and t.name == "x" and isinstance(t.shape[3], int) and tuple(concrete[3:]) != tuple(size):
            raise BackendError(f"{path}: the ONNX is static at {concrete[3:]}, cannot build for {list(size)}; "
                               "export with --dynamic or at that size")
        out[t.name] = {"min": concrete, "opt": concrete, "max": concrete}
    if set(out) != {"x", "present"}:
        raise BackendError(f"{path}: expected inputs x and present, got {sorted(out)}")
    return out


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):  # no source on disk (zipped install): fall back to the module name
        return getattr(obj, "__name__", repr(obj))


def graph_recipe(precision: str) -> str:
    """A hash of how the graph TensorRT parses is made from the exported ONNX: the code of the FP16 rewrite or of
    the INT8 quantiser (and its options), and the versions of onnx / onnxruntime that run it. Part of the engine
    key, so an engine built from an older recipe is rebuilt. Cheap: imports neither onnx nor onnxruntime."""
    if precision == "fp32":
        return "fp32:as-exported"
    if precision == "fp16":
        from equiseg_ros.inference import _fp16

        parts = ["fp16", _source(_fp16), _version("onnx")]
    elif precision == "int8":
        parts = ["int8", QDQ_RECIPE, _source(quantize_qdq), _source(calibration_files), _version("onnx"),
                 _version("onnxruntime") if _version("onnxruntime") != "missing" else _version("onnxruntime-gpu")]
    else:
        raise BackendError(f"precision: expected fp32, fp16 or int8, got {precision!r}")
    return f"{precision}:" + hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def request_for_onnx(onnx_path: str | Path, precision: str = "fp32", size: tuple[int, int] | None = None,
                     batch: int = 1, calibration_sha256: str | None = None, *,
                     calibration_dir: str | Path | None = None, prepared_onnx: str | Path | None = None
                     ) -> EngineRequest:
    """The cache request for an exported ONNX (spec from its metadata, hash of its bytes, the graph recipe)."""
    onnx_path = Path(onnx_path)
    spec = read_onnx_spec(onnx_path)
    shapes = profile_shapes(read_onnx_info(onnx_path), size, batch, tuple(spec.input_size), onnx_path)
    return EngineRequest(onnx_sha256=sha256_file(onnx_path), spec=spec, precision=precision, input_shapes=shapes,
                         calibration_sha256=calibration_sha256, graph_recipe=graph_recipe(precision),
                         calibration_dir=str(Path(calibration_dir).resolve()) if calibration_dir else None,
                         prepared_onnx=str(prepared_onnx) if prepared_onnx else None)


def to_fp16(model: Any) -> Any:
    """FP16 end to end (see ``_fp16.to_fp16``)."""
    from equiseg_ros.inference._fp16 import to_fp16 as convert

    return convert(model)


# ---- INT8 by explicit quantization (Q/DQ), the route strongly typed TensorRT accepts ---------------------

QDQ_OPS = ("Conv", "MatMul", "Gemm")
QDQ_WEIGHT_LIMIT = 64  # 7-bit symmetric weights: no int16 saturation in u8×s8 pairs (see quantize_qdq)
# Names what quantize_qdq does; an engine cache key that includes it goes stale when the recipe changes.
QDQ_RECIPE = "qdq2:" + ",".join(QDQ_OPS) + ":act=int8-sym,w=int7-sym-per-channel,bias=float"


def calibration_files(folder: str | Path) -> list[Path]:
    """The ``*.npz`` frames of a calibration folder: ``x`` [M,3,H,W] or [B,M,3,H,W] normalised, opt. ``present``."""
    folder = Path(folder)
    files = sorted(folder.glob("*.npz")) if folder.is_dir() else []
    if not files:
        raise BackendError(f"{folder}: no calibration frames (*.npz with an array 'x' [M,3,H,W]) found")
    return files


def calibration_sha256(files: list[Path]) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + bytes.fromhex(sha256_file(f)))
    return h.hexdigest()


def quantize_qdq(onnx_path: str | Path, calib_dir: str | Path, out_path: str | Path,
                 ops: tuple[str, ...] = QDQ_OPS) -> Path:
    """Insert INT8 Q/DQ pairs before ``ops`` with scales calibrated on real frames (ONNX Runtime's static
    quantizer); TensorRT 10/11 builds the result strongly typed without any calibrator API.

    The options are chosen so that every x86-64 CPU computes the same integers and TensorRT can parse the graph:

    - *7-bit weights* (``reduce_range``, per output channel, symmetric: values in [-64, 64]). Without VNNI,
      ONNX Runtime's x86 kernels multiply activations as uint8 (0..255) by int8 weights with VPMADDUBSW, which
      adds two products into a saturating int16: 2·255·127 = 64770 overflows, 2·255·64 = 32640 does not. With
      8-bit weights an AVX2-only CPU disagreed with the fp32 model on 11 % of the pixels where a VNNI CPU
      disagreed on 2 % (notes/issue-13.md); with 7-bit weights both give the same labels.
    - *Symmetric INT8 activations* (zero point 0), the only activation quantization TensorRT's explicit
      INT8 takes.
    - *Float biases* (``QuantizeBias`` off): a quantized bias is an INT32 DequantizeLinear, which onnx-tensorrt
      10 rejects (it dequantizes INT8/FP8/INT4 only); TensorRT fuses the float bias into the INT8 conv itself.
    - Only the GEMM-like ops are quantized; normalisation, softmax, resize and the deployed head stay float.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    files = calibration_files(calib_dir)
    info = read_onnx_info(onnx_path)
    fixed = {t.name: t.shape for t in info.inputs}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(files)

        def get_next(self) -> dict[str, np.ndarray] | None:
            f = next(self.it, None)
            if f is None:
                return None
            data = np.load(f)
            x = data["x"].astype(np.float32)
            x = x[None] if x.ndim == 4 else x
            present = (data["present"].astype(np.bool_).reshape(x.shape[0], -1) if "present" in data
                       else np.ones(x.shape[:2], np.bool_))
            want = fixed["x"]
            if any(isinstance(d, int) and d != s for d, s in zip(want, x.shape)):
                raise BackendError(f"{f}: calibration frame x has shape {list(x.shape)}, the ONNX expects {want}")
            return {"x": x, "present": present}

    quantize_static(str(onnx_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    reduce_range=True, op_types_to_quantize=list(ops),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    return Path(out_path)
