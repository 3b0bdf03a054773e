"""ONNX preparation for TensorRT engines: the optimisation profile, and precision moved into the graph.

TensorRT 10.12 deprecates the weak-typing precision flags (``BuilderFlag.FP16``) and 11.0 removes them: a strongly
typed network takes every tensor's type from the ONNX. So an FP16 engine needs an FP16 ONNX. :func:`to_mixed_fp16`
rewrites the heavy ops (Conv, ConvTranspose, MatMul, Gemm) to run in FP16 with FP32 at their boundaries: the bulk
of the arithmetic goes to FP16 tensor cores while normalisation, softmax, resize and shape arithmetic stay FP32
(shape arithmetic in FP16 would be wrong beyond 2048 pixels). This is the same split mixed-precision autocasting
makes; NVIDIA's ModelOpt AutoCast is the heavier tool for the same job. Requires the ``onnx`` package.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from equiseg_ros.inference._onnx_meta import OnnxInfo, read_onnx_info
from equiseg_ros.inference.backend import BackendError, read_onnx_spec
from equiseg_ros.inference.engine_cache import EngineRequest, sha256_file

FP16_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16


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


def request_for_onnx(onnx_path: str | Path, precision: str = "fp32", size: tuple[int, int] | None = None,
                     batch: int = 1, calibration_sha256: str | None = None) -> EngineRequest:
    """The cache request for an exported ONNX (spec from its metadata, hash of its bytes)."""
    onnx_path = Path(onnx_path)
    spec = read_onnx_spec(onnx_path)
    shapes = profile_shapes(read_onnx_info(onnx_path), size, batch, tuple(spec.input_size), onnx_path)
    return EngineRequest(onnx_sha256=sha256_file(onnx_path), spec=spec, precision=precision, input_shapes=shapes,
                         calibration_sha256=calibration_sha256)


def to_mixed_fp16(model: Any, ops: tuple[str, ...] = FP16_OPS) -> Any:
    """Return a copy of ``model`` (onnx.ModelProto) whose ``ops`` compute in FP16 with FP32 tensors outside them.

    Weights of those ops become FP16 initializers (halving their size); activations are cast at the boundary.
    Graph inputs and outputs keep their types, so the deployed interface is unchanged.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    new_nodes = []
    half_inits: dict[str, str] = {}
    count = 0
    for node in g.node:
        if node.op_type not in ops:
            new_nodes.append(node)
            continue
        count += 1
        for k, name in enumerate(node.input):
            if not name:
                continue
            if name in inits and inits[name].data_type == _FLOAT:
                if name not in half_inits:  # a weight: store an FP16 copy (shared if several heavy ops use it)
                    arr = numpy_helper.to_array(inits[name]).astype(np.float16)
                    half = f"{name}__fp16"
                    g.initializer.append(numpy_helper.from_array(arr, half))
                    half_inits[name] = half
                node.input[k] = half_inits[name]
            else:  # an activation (assumed FP32, as the exporter writes it): cast in
                cast_out = f"{name}__to_fp16_{count}_{k}"
                new_nodes.append(helper.make_node("Cast", [name], [cast_out], to=_FLOAT16,
                                                  name=f"{node.name or node.op_type}_in{k}_fp16"))
                node.input[k] = cast_out
        new_nodes.append(node)
        for k, name in enumerate(node.output):
            half_out = f"{name}__fp16"
            node.output[k] = half_out
            new_nodes.append(helper.make_node("Cast", [half_out], [name], to=_FLOAT,
                                              name=f"{node.name or node.op_type}_out{k}_fp32"))
    # Drop FP32 weights no longer used by anything.
    still_used = {i for n in new_nodes for i in n.input}
    keep = [t for t in g.initializer if t.name in still_used or t.name in {o.name for o in g.output}]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.node[:]
    g.node.extend(_toposort(new_nodes, {i.name for i in g.input} | {t.name for t in g.initializer}))
    del g.value_info[:]  # stale types; re-inferred below
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model


def _toposort(nodes: list[Any], available: set[str]) -> list[Any]:
    """Order nodes so every input is produced before use (Cast nodes were appended around their op)."""
    ready = set(available) | {""}
    out, pending = [], list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                out.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise BackendError(f"ONNX graph has a cycle or undefined inputs near {rest[0].name!r}")
        pending = rest
    return out


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
