"""equiseg_ros: robust multimodal semantic segmentation, from training to a ROS 2 node."""
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

try:
    __version__ = _dist_version("equiseg_ros")
except PackageNotFoundError:  # running from a source tree without install
    import re
    from pathlib import Path

    _xml = Path(__file__).resolve().parent.parent / "package.xml"
    _m = re.search(r"<version>([^<]+)</version>", _xml.read_text()) if _xml.is_file() else None
    __version__ = _m.group(1) if _m else "0+unknown"
