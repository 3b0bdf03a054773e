"""``make demo``: the main job on the embedded synthetic default.

The full pipeline (synthetic data -> training -> robustness report -> ONNX -> rosbag with failures -> the node on a
replay over DDS -> online mIoU) lands step by step; until every step exists this runs what does and names the rest.
"""
from __future__ import annotations

import argparse
import sys

from equiseg_ros import __version__
from equiseg_ros.spec import synthetic_spec
from equiseg_ros.tools import TOOLS, is_available


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m equiseg_ros.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="where every output of the demo goes")
    parser.add_argument("--force", action="store_true", help="redo every step even when its output is up to date")
    parser.parse_args(argv)
    spec = synthetic_spec()
    print(f"equiseg_ros {__version__} demo")
    print(f"spec {spec.name}: modalities {list(spec.modality_names)}, {spec.num_classes} classes, "
          f"input {spec.input_size[0]}x{spec.input_size[1]}")
    missing = [t for t in TOOLS if not is_available(t)]
    for t in TOOLS:
        print(f"  [{'ok' if t not in missing else 'missing'}] {t.command}: {t.summary}")
    if missing:
        print(f"{len(missing)} step(s) of the full demo are not built yet; ran what exists.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
