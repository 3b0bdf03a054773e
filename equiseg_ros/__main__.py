"""``python -m equiseg_ros``: version and the list of tools."""
from __future__ import annotations

import argparse
import sys

from equiseg_ros import __version__
from equiseg_ros.tools import TOOLS, is_available


def _tool_list() -> str:
    width = max(len(t.command) for t in TOOLS)
    lines = ["tools:"]
    for t in TOOLS:
        mark = "" if is_available(t) else "  [not in this build yet]"
        lines.append(f"  {t.command:<{width}}  {t.summary}{mark}")
    lines.append("\nEvery tool takes --help for its options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m equiseg_ros",
        description="equiseg_ros: robust multimodal semantic segmentation from training to a ROS 2 node.",
        epilog=_tool_list(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"equiseg_ros {__version__}")
    parser.add_argument("--tools", action="store_true", help="print the list of tools and exit")
    args = parser.parse_args(argv)
    if args.tools or argv == [] or (argv is None and len(sys.argv) == 1):
        print(_tool_list())
    return 0


if __name__ == "__main__":
    sys.exit(main())
