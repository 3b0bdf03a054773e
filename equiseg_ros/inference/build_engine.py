"""Build (or verify) the TensorRT engine for an exported ONNX on this machine; usable on the vehicle.

    python -m equiseg_ros.inference.build_engine --onnx model.onnx [--fp16] [--int8-calib DIR] [--no-rebuild]

The engine lands beside the ONNX (or in --cache-dir) as
``<stem>.<precision>.<gpu>-sm<XY>-<N>sm-<G>g.<H>x<W>b<B>.engine`` with a sidecar JSON: the very name the node looks
for with the same precision, cache dir and size (one naming function, ``engine_cache.engine_path_for``). An engine
that matches this GPU, TensorRT version, graph recipe, model, precision and size is reused; otherwise it is rebuilt,
or with --no-rebuild the tool refuses and names what differs (exit code 3). Progress goes to stderr; one JSON line
to stdout. Exit code 2: TensorRT or a CUDA device is missing here, or TensorRT failed (parse/build); 130: interrupted
(Ctrl-C; the timing cache keeps what was learned).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Sequence

from equiseg_ros.inference.engine_cache import describe
from equiseg_ros.inference.errors import BackendError, BackendUnavailable, BuildCancelled, EngineMismatchError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m equiseg_ros.inference.build_engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, help="ONNX exported by training/export.py (spec in its metadata)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true",
                      help="FP16 engine: the graph rewritten to FP16 end to end (statistics and shape arithmetic "
                           "FP32), built as a strongly typed network")
    prec.add_argument("--int8-calib", metavar="DIR",
                      help="INT8 engine: Q/DQ scales calibrated on DIR/*.npz frames (x [M,3,H,W] normalised)")
    p.add_argument("--workspace", type=int, default=2048, metavar="MB", help="builder workspace limit (MB)")
    p.add_argument("--cache-dir", help="where engines, sidecars and the timing cache live (default: beside the ONNX)")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"),
                   help="input size for a dynamic ONNX (default: the spec's input size)")
    p.add_argument("--batch", type=int, default=1, help="batch size for a dynamic ONNX (default 1)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    p.add_argument("--no-rebuild", action="store_true",
                   help="never build: succeed only if a matching engine exists, else explain the mismatch")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    from equiseg_ros.inference import _cuda
    from equiseg_ros.inference._onnx_prep import calibration_files, calibration_sha256
    from equiseg_ros.inference.tensorrt_backend import build_serialized_engine, current_device, resolve_engine

    precision = "int8" if args.int8_calib else "fp16" if args.fp16 else "fp32"
    onnx = Path(args.onnx)
    cancel = threading.Event()
    cuda = None
    try:
        if not onnx.is_file():
            raise BackendError(f"{onnx}: ONNX file not found")
        calib = calibration_sha256(calibration_files(args.int8_calib)) if args.int8_calib else None
        dev = current_device(args.device)
        cuda = _cuda.CudaRuntime(args.device)  # libcudart and the right GPU before building

        def builder(path, req, timing):
            return build_serialized_engine(path, req, timing, workspace_mb=args.workspace, cancel=cancel,
                                           cuda=cuda)

        try:
            engine, side = resolve_engine(onnx, dev, cache_dir=args.cache_dir, precision=precision,
                                          rebuild=not args.no_rebuild, builder=builder,
                                          size=tuple(args.size) if args.size else None, batch=args.batch,
                                          calibration_sha256=calib, calibration_dir=args.int8_calib)
        except KeyboardInterrupt:
            cancel.set()
            raise BuildCancelled("interrupted") from None
    except BuildCancelled as exc:
        print(f"build_engine: {exc}", file=sys.stderr)
        return 130
    except EngineMismatchError as exc:
        print(f"build_engine: {exc}", file=sys.stderr)
        return 3
    except BackendUnavailable as exc:
        print(f"build_engine: cannot build a TensorRT engine here: {exc}", file=sys.stderr)
        return 2
    except BackendError as exc:
        print(f"build_engine: {exc}", file=sys.stderr)
        return 1
    finally:
        if cuda is not None:
            cuda.close()
    print(json.dumps({"engine": str(engine), **describe(side)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
