"""Read an ONNX file's ``metadata_props`` and graph input/output shapes without the ``onnx`` package.

A vehicle may carry only ONNX Runtime or TensorRT, and the node must learn the spec from the artefact before it
chooses a backend. ONNX files are protobuf ``ModelProto`` messages; this is a minimal wire-format walker over the few
fields needed (it skips the weights without copying them, so a 60 MB model is read in milliseconds via mmap).
"""
from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path

# ModelProto / GraphProto / ValueInfoProto / TypeProto / TensorShapeProto field numbers (onnx.proto3).
_MODEL_GRAPH, _MODEL_METADATA, _MODEL_OPSET = 7, 14, 8
_GRAPH_INPUT, _GRAPH_OUTPUT = 11, 12
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64",
              16: "bfloat16"}


class OnnxFormatError(ValueError):
    """The file is not a parseable ONNX model."""


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | str]  # int for fixed dims, the symbol (or "?") for dynamic ones


@dataclass
class OnnxInfo:
    metadata: dict[str, str] = field(default_factory=dict)
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    opset: int | None = None


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise OnnxFormatError("varint too long")


def _fields(buf, start: int = 0, end: int | None = None):
    """Yield (field number, wire type, value) where value is an int or a (start, end) slice for bytes."""
    pos, end = start, len(buf) if end is None else end
    while pos < end:
        tag, pos = _varint(buf, pos)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = None, pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = (pos, pos + n), pos + n
        elif wire == 5:
            val, pos = None, pos + 4
        else:
            raise OnnxFormatError(f"unsupported protobuf wire type {wire}")
        if pos > end or num == 0:
            raise OnnxFormatError("field runs past the end of its message")
        yield num, wire, val


def _text(buf, span) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8")


def _value_info(buf, span) -> TensorInfo:
    name, dtype, shape = "", "?", []
    for num, wire, val in _fields(buf, *span):
        if num == 1 and wire == 2:
            name = _text(buf, val)
        elif num == 2 and wire == 2:  # TypeProto
            for tnum, twire, tval in _fields(buf, *val):
                if tnum == 1 and twire == 2:  # tensor_type
                    for knum, kwire, kval in _fields(buf, *tval):
                        if knum == 1 and kwire == 0:
                            dtype = ELEM_TYPES.get(kval, f"onnx:{kval}")
                        elif knum == 2 and kwire == 2:  # shape
                            for dnum, dwire, dval in _fields(buf, *kval):
                                if dnum == 1 and dwire == 2:
                                    dim: int | str = "?"
                                    for enum_, ewire, eval_ in _fields(buf, *dval):
                                        if enum_ == 1 and ewire == 0:
                                            dim = int(eval_)
                                        elif enum_ == 2 and ewire == 2:
                                            dim = _text(buf, eval_)
                                    shape.append(dim)
    return TensorInfo(name, dtype, shape)


def read_onnx_info(path: str | Path) -> OnnxInfo:
    """Metadata, opset and graph I/O of an ONNX file; raises OnnxFormatError for anything else."""
    path = Path(path)
    info = OnnxInfo()
    with open(path, "rb") as f:
        if path.stat().st_size == 0:
            raise OnnxFormatError(f"{path}: empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                seen_graph = False
                for num, wire, val in _fields(buf):
                    if num == _MODEL_METADATA and wire == 2:
                        key = value = ""
                        for knum, kwire, kval in _fields(buf, *val):
                            if knum == 1 and kwire == 2:
                                key = _text(buf, kval)
                            elif knum == 2 and kwire == 2:
                                value = _text(buf, kval)
                        info.metadata[key] = value
                    elif num == _MODEL_OPSET and wire == 2:
                        domain, version = "", None
                        for onum, owire, oval in _fields(buf, *val):
                            if onum == 1 and owire == 2:
                                domain = _text(buf, oval)
                            elif onum == 2 and owire == 0:
                                version = int(oval)
                        if domain in ("", "ai.onnx"):
                            info.opset = version
                    elif num == _MODEL_GRAPH and wire == 2:
                        seen_graph = True
                        for gnum, gwire, gval in _fields(buf, *val):
                            if gnum == _GRAPH_INPUT and gwire == 2:
                                info.inputs.append(_value_info(buf, gval))
                            elif gnum == _GRAPH_OUTPUT and gwire == 2:
                                info.outputs.append(_value_info(buf, gval))
            except (OnnxFormatError, UnicodeDecodeError, IndexError) as exc:
                raise OnnxFormatError(f"{path}: not an ONNX model ({exc})") from None
            if not seen_graph:
                raise OnnxFormatError(f"{path}: not an ONNX model (no graph)")
    return info
