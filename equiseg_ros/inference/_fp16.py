"""FP16 end to end for a strongly typed TensorRT network: every tensor that can be FP16 is FP16 in the ONNX.

TensorRT 10.12 deprecates the weak-typing precision flags (``BuilderFlag.FP16``) and 11.0 removes them: a strongly
typed network takes every tensor's type from the ONNX, so an FP16 engine needs an FP16 graph. Casting only around
Conv/MatMul (the first version of this module) left norms, activations, attention, resize and argmax in FP32 with a
cast pair around every heavy op. This rewrite instead gives each tensor one type:

- FP16: activations and weights of every op in :data:`FP16_OPS` (convolutions, matmuls, elementwise arithmetic,
  activations, layout ops, pooling, resize, argmax...), including ``Cast(to=FLOAT)`` of the ``present`` mask.
- FP32 (:data:`KEEP_FP32`): statistics, where FP16's range or precision is not enough — LayerNormalization (its
  mean/variance), Softmax, Exp/Log, reductions that sum (ReduceMean/ReduceSum...), Pow/Sqrt/Reciprocal. One cast in
  and one out each; the inputs of the model's final max-softmax confidence are FP32 for the same reason.
- FP32 as well: *shape arithmetic*. Anything computed only from ``Shape``/``Size`` outputs (sizes cast to float,
  scaled and floored for Resize) stays FP32: FP16 counts integers exactly only up to 2048.
- Graph inputs and outputs keep their types (``x`` f32, ``present`` bool, ``labels`` u8, ``confidence`` f16).

One Cast per tensor and direction is shared by all consumers. The result passes ``onnx.checker`` and strict shape
inference; the tests measure its label agreement with FP32 in ONNX Runtime and its cast count, and check every op
against the onnx-tensorrt 10 operator table (``_trt_ops``). Requires the ``onnx`` package (imported on call).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from equiseg_ros.inference.errors import BackendError

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16
FP16_MAX = 65504.0

# op -> indices of the inputs typed like the data (type parameter T); None = every input.
FP16_OPS: dict[str, tuple[int, ...] | None] = {
    "Conv": None, "ConvTranspose": None, "MatMul": None, "Gemm": None, "BatchNormalization": None,
    "Add": None, "Sub": None, "Mul": None, "Div": None, "Max": None, "Min": None, "Sum": None, "Mean": None,
    "Relu": None, "LeakyRelu": None, "PRelu": None, "Sigmoid": None, "HardSigmoid": None, "HardSwish": None,
    "Tanh": None, "Erf": None, "Gelu": None, "Abs": None, "Neg": None, "Clip": None, "Softplus": None,
    "Identity": None, "Transpose": None, "Flatten": None, "Concat": None, "Split": (0,), "Squeeze": (0,),
    "Unsqueeze": (0,), "Reshape": (0,), "Expand": (0,), "Tile": (0,), "Slice": (0,), "Gather": (0,),
    "GatherElements": (0,), "Pad": (0, 2), "Resize": (0,), "Where": (1, 2), "MaxPool": (0,), "AveragePool": (0,),
    "GlobalAveragePool": (0,), "GlobalMaxPool": (0,), "ReduceMax": (0,), "ReduceMin": (0,), "ArgMax": (0,),
    "ArgMin": (0,), "Dropout": (0,),
}
# Always FP16 (the bulk of the arithmetic); every other op of FP16_OPS follows its inputs: FP16 when one of its
# computed (non-constant) data inputs is FP16, else FP32, so a chain of statistics stays FP32 without casts.
ANCHORS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm",  # and layout ops: one cast of x, not one per use
                     "Gather", "Slice", "Split", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                     "Concat"})
ACCEPTS_ANY = frozenset({"Cast", "Shape", "Size"})  # read any float type: no cast in front of them
KEEP_FP32 = frozenset({"LayerNormalization", "Softmax", "LogSoftmax", "Exp", "Log", "ReduceMean", "ReduceSum",
                       "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "Pow", "Sqrt", "Reciprocal",
                       "InstanceNormalization", "GroupNormalization"})
_SHAPE_SOURCES = frozenset({"Shape", "Size"})


def _tensor_types(model: Any) -> dict[str, int]:
    """elem_type of every tensor (inputs, outputs, initializers, inferred intermediates)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _constants_to_initializers(model: Any) -> None:
    """Float Constant nodes, and Identity nodes that merely rename an initializer (the legacy exporter's shared
    weights), become initializers, so weights and scalars are converted one way and need no cast."""
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    outputs = {o.name for o in g.output}
    keep = []
    for n in g.node:
        attr = {a.name: a for a in n.attribute}
        if n.op_type == "Constant" and "value" in attr and attr["value"].t.data_type == FLOAT:
            t = numpy_helper.from_array(numpy_helper.to_array(attr["value"].t), n.output[0])
        elif n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs:
            t = numpy_helper.from_array(numpy_helper.to_array(inits[n.input[0]]), n.output[0])
        else:
            keep.append(n)
            continue
        g.initializer.append(t)
        inits[t.name] = t
    del g.node[:]
    g.node.extend(keep)


def _shape_derived(nodes: list[Any], initializers: set[str], constants: set[str]) -> set[str]:
    """Tensors computed only from Shape/Size outputs (and constants): shape arithmetic, kept out of FP16."""
    tainted: set[str] = set()
    for n in nodes:
        if n.op_type in _SHAPE_SOURCES:
            tainted.update(n.output)
            continue
        live = [i for i in n.input if i and i not in initializers and i not in constants]
        if live and all(i in tainted for i in live):
            tainted.update(n.output)
    return tainted


def to_fp16(model: Any, keep_fp32: frozenset[str] | set[str] = KEEP_FP32) -> Any:
    """A copy of ``model`` (onnx.ModelProto) computing in FP16 wherever :data:`FP16_OPS` allow; see the module doc.

    Interface (input and output names and types) and metadata are unchanged.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    _constants_to_initializers(model)
    g = model.graph
    types = _tensor_types(model)
    inits = {t.name: t for t in g.initializer}
    constants = {o for n in g.node if n.op_type == "Constant" for o in n.output}
    tainted = _shape_derived(list(g.node), set(inits), constants)
    graph_inputs = {i.name for i in g.input}

    def is_float(name: str) -> bool:
        return bool(name) and types.get(name) == FLOAT

    def data_inputs(n: Any) -> list[int]:
        idx = FP16_OPS.get(n.op_type)
        return [i for i in (range(len(n.input)) if idx is None else idx) if i < len(n.input) and n.input[i]]

    half_nodes: set[int] = set()
    half_tensors: set[str] = set()
    for k, n in enumerate(g.node):
        if any(o in tainted for o in n.output):
            continue
        if n.op_type == "Cast":
            to = next((a.i for a in n.attribute if a.name == "to"), None)
            # To FLOAT from a non-float (the present mask) or from an FP16 tensor (a float->float identity such
            # as the head's `.float()` on its logits): produce FP16 directly.
            if to == FLOAT and (not is_float(n.input[0]) or n.input[0] in half_tensors):
                half_nodes.add(k)
                half_tensors.update(n.output)
            continue
        if n.op_type not in FP16_OPS or n.op_type in keep_fp32:
            continue
        data = data_inputs(n)
        if not data or not all(is_float(n.input[i]) for i in data):
            continue
        live = [n.input[i] for i in data if n.input[i] not in inits and n.input[i] not in constants]
        if n.op_type not in ANCHORS and not any(i in half_tensors for i in live):
            continue  # a follower of FP32 tensors (statistics, the FP32 graph input) stays FP32
        half_nodes.add(k)
        half_tensors.update(o for o in n.output if is_float(o))

    new_nodes: list[Any] = []
    casts: dict[tuple[str, int], str] = {}
    half_inits: dict[str, str] = {}

    def as_type(name: str, to: int) -> str:
        """``name`` as FP16 or FP32: an initializer copy or one shared Cast node."""
        if name in inits and to == FLOAT16:
            if name not in half_inits:
                arr = numpy_helper.to_array(inits[name]).astype(np.float32)
                half = f"{name}__fp16"
                g.initializer.append(numpy_helper.from_array(
                    np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16), half))
                half_inits[name] = half
            return half_inits[name]
        key = (name, to)
        if key not in casts:
            out = f"{name}__{'fp16' if to == FLOAT16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"cast_{out}"))
            casts[key] = out
        return casts[key]

    for k, n in enumerate(g.node):
        if k in half_nodes:
            if n.op_type == "Cast":  # reads its input as it is; only its output type changes
                for a in n.attribute:
                    if a.name == "to":
                        a.i = FLOAT16
                new_nodes.append(n)
                continue
            for i in data_inputs(n):
                name = n.input[i]
                if name not in half_tensors:
                    n.input[i] = as_type(name, FLOAT16)
        else:
            any_type = n.op_type in ACCEPTS_ANY
            for i, name in enumerate(n.input):
                if name in half_tensors and not any_type:
                    n.input[i] = as_type(name, FLOAT)
        new_nodes.append(n)

    # No cast pairs: a shared cast of a Cast from bool/int reads that Cast's input directly (exact), and a Cast
    # nobody reads any more is dropped.
    producer = {o: n for n in new_nodes for o in n.output}
    for n in new_nodes:
        src = producer.get(n.input[0]) if n.op_type == "Cast" and n.name.startswith("cast_") else None
        if src is not None and src.op_type == "Cast" and not is_float(src.input[0]):
            n.input[0] = src.input[0]
    read = {i for n in new_nodes for i in n.input} | {o.name for o in g.output}
    new_nodes = [n for n in new_nodes if n.op_type != "Cast" or any(o in read for o in n.output)]

    # Graph outputs declared FLOAT keep FLOAT: the producer writes an FP16 tensor, one Cast restores the name.
    for o in g.output:
        if o.name in half_tensors and o.type.tensor_type.elem_type == FLOAT:
            inner = f"{o.name}__fp16_out"
            for n in new_nodes:
                n.output[:] = [inner if x == o.name else x for x in n.output]
                n.input[:] = [inner if x == o.name else x for x in n.input]
            new_nodes.append(helper.make_node("Cast", [inner], [o.name], to=FLOAT, name=f"cast_{o.name}_out"))

    used = {i for n in new_nodes for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.node[:]
    g.node.extend(toposort(new_nodes, graph_inputs | {t.name for t in g.initializer}))
    del g.value_info[:]  # stale types; re-inferred below
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model


def toposort(nodes: list[Any], available: set[str]) -> list[Any]:
    """Order nodes so every input is produced before use (Cast nodes were appended where first needed)."""
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


def cast_count(model: Any) -> int:
    """Cast nodes in a graph (the FP16 rewrite's cost on the GPU: each one is a memory pass)."""
    return sum(n.op_type == "Cast" for n in model.graph.node)
