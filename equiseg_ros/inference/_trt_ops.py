"""Does TensorRT's ONNX parser accept this graph? A check against the onnx-tensorrt 10 operator table, without a GPU.

TensorRT cannot run here, so the graphs we hand it (FP32 as exported, the FP16 rewrite, the INT8 Q/DQ graph) are
checked op by op against the "Supported Types" and "Restrictions" columns of onnx-tensorrt's ``docs/operators.md``
for TensorRT 10 (release/10.x). Known traps it catches: an INT32 input to DequantizeLinear (a quantised Conv bias,
onnxruntime#17738, onnx-tensorrt#850: every INT8 build fails at parse), a non-zero Q/DQ zero point, UINT8 anywhere
but at the network's inputs and outputs, DOUBLE tensors, unsupported Resize modes, and ops the table does not list.

:func:`trt_problems` returns readable problems (empty list = accepted by the table). ``build_serialized_engine``
runs it before parsing, so a graph TensorRT would reject fails early with a message naming the node.
"""
from __future__ import annotations

from typing import Any

# ONNX TensorProto.DataType -> the table's names
TYPE_NAMES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 11: "DOUBLE",
              16: "BF16", 17: "FP8", 18: "FP8", 19: "FP8", 20: "FP8", 22: "INT4", 23: "FP4"}

_F = ("FP32", "FP16", "BF16")
_FI = _F + ("INT32", "INT64")
_FIB = _FI + ("BOOL",)
# op -> types its (first data) input may have, from the onnx-tensorrt 10.x operator table.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "Abs": _FI, "Add": _FI, "And": ("BOOL",), "ArgMax": _FI, "ArgMin": _FI, "AveragePool": _F,
    "BatchNormalization": _F, "Cast": _FI + ("UINT8", "BOOL"), "CastLike": _FI + ("UINT8", "BOOL"), "Ceil": _F,
    "Clip": _F, "Concat": _FIB, "Constant": _FIB + ("FP8", "FP4", "INT4"), "ConstantOfShape": _FIB,
    "Conv": _F, "ConvTranspose": _F, "Cos": _F, "CumSum": _F, "DepthToSpace": _FI,
    "DequantizeLinear": ("INT8", "FP8", "FP4", "INT4"), "Div": _FI, "Dropout": _F, "Einsum": _F, "Elu": _F,
    "Equal": _FI, "Erf": _F, "Exp": _F, "Expand": _FIB, "Flatten": _FIB, "Floor": _F, "Gather": _FIB,
    "GatherElements": _FIB, "GatherND": _FIB, "Gelu": _FI + ("INT8",), "Gemm": _F, "GlobalAveragePool": _F,
    "GlobalMaxPool": _F, "Greater": _FI, "GreaterOrEqual": _FI, "GroupNormalization": _F, "HardSigmoid": _F,
    "HardSwish": _F, "Identity": _FIB, "InstanceNormalization": _F, "LayerNormalization": _F, "LeakyRelu": _F,
    "Less": _FI, "LessOrEqual": _FI, "Log": _F, "LogSoftmax": _F, "MatMul": _F, "Max": _FI, "MaxPool": _F,
    "Mean": _FI, "Min": _FI, "Mod": _FI, "Mul": _FI, "Neg": _FI, "Not": ("BOOL",), "Or": ("BOOL",), "Pad": _FI,
    "Pow": _FI, "PRelu": _F, "QuantizeLinear": _F, "Range": _FI, "Reciprocal": _F, "ReduceL2": _FI,
    "ReduceMax": _FI, "ReduceMean": _FI, "ReduceMin": _FI, "ReduceProd": _FI, "ReduceSum": _FI,
    "ReduceSumSquare": _FI, "Relu": _FI, "Reshape": _FIB, "Resize": _F, "Round": _F, "Shape": _FIB,
    "Sigmoid": _F, "Sign": _FI, "Sin": _F, "Size": _FIB, "Slice": _FIB, "Softmax": _F, "Softplus": _F,
    "Split": _FIB, "Sqrt": _F, "Squeeze": _FIB, "Sub": _FI, "Sum": _FI, "Tanh": _F, "Tile": _FIB, "TopK": _FI,
    "Transpose": _FIB, "Unsqueeze": _FIB, "Where": _FIB, "Xor": ("BOOL",),
}
DATA_INPUT = {"Where": 1}  # the typed input checked, when it is not input 0
RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}


def _types(model: Any) -> dict[str, int]:
    import onnx

    g = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def _is_zero(model: Any, name: str) -> bool | None:
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            return not numpy_helper.to_array(t).any()
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return not numpy_helper.to_array(n.attribute[0].t).any()
    return None  # computed at run time: the parser needs a constant


def trt_problems(model: Any) -> list[str]:
    """Every way ``model`` (onnx.ModelProto) breaks the onnx-tensorrt 10 operator table; [] = accepted."""
    types = _types(model)
    g = model.graph
    io = {v.name for v in [*g.input, *g.output]}
    out: list[str] = []
    for name, t in types.items():
        if TYPE_NAMES.get(t) == "UINT8" and name not in io:
            out.append(f"tensor {name!r} is UINT8 inside the network (TensorRT: UINT8 only at network inputs and "
                       "outputs)")
        if TYPE_NAMES.get(t) == "DOUBLE":
            out.append(f"tensor {name!r} is DOUBLE (TensorRT casts it down; export FLOAT)")
    for n in g.node:
        where = f"node {n.name or '?'} ({n.op_type})"
        if n.op_type not in SUPPORTED:
            out.append(f"{where}: not in the onnx-tensorrt 10 operator table")
            continue
        k = DATA_INPUT.get(n.op_type, 0)
        if k < len(n.input) and n.input[k]:
            t = types.get(n.input[k])
            tname = TYPE_NAMES.get(t, f"type {t}") if t else "of unknown type"
            if tname not in SUPPORTED[n.op_type]:
                out.append(f"{where}: input {k} {n.input[k]!r} is {tname}; TensorRT 10 accepts "
                           f"{', '.join(SUPPORTED[n.op_type])}")
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2]:
            zero = _is_zero(model, n.input[2])
            if zero is not True:
                out.append(f"{where}: zero point {n.input[2]!r} must be a constant zero "
                           f"({'non-zero' if zero is False else 'not a constant'})")
        if n.op_type == "Resize":
            attrs = {a.name: (a.s.decode() if a.s else a.i) for a in n.attribute}
            if attrs.get("mode", "nearest") not in RESIZE_MODES:
                out.append(f"{where}: mode {attrs.get('mode')!r} unsupported")
            if attrs.get("coordinate_transformation_mode", "half_pixel") not in RESIZE_COORDS:
                out.append(f"{where}: coordinate_transformation_mode {attrs.get('coordinate_transformation_mode')!r}"
                           " unsupported")
            if attrs.get("antialias", 0):
                out.append(f"{where}: antialiasing unsupported")
    return out
