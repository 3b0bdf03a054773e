"""ament_python package: builds with ``colcon build`` in a ROS 2 workspace and with ``pip install -e .`` here."""
import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "equiseg_ros"
HERE = Path(__file__).resolve().parent
VERSION = re.search(r"<version>([^<]+)</version>", (HERE / "package.xml").read_text()).group(1)



def _config_data_files() -> list[tuple[str, list[str]]]:
    """Every file under config/ (YAML, Fast DDS XML), installed to share/equiseg_ros/config/ keeping sub-folders."""
    groups: dict[str, list[str]] = {}
    for path in sorted(glob("config/**/*", recursive=True)):
        if Path(path).is_file():
            groups.setdefault(f"share/{PACKAGE}/{Path(path).parent.as_posix()}", []).append(path)
    return sorted(groups.items())


# Console scripts: name -> entry point. Kept here and listed by `python -m equiseg_ros --help`.
CONSOLE_SCRIPTS = {
    "perception_node": "equiseg_ros.ros.node:main",
    "equiseg": "equiseg_ros.__main__:main",
}

setup(
    name=PACKAGE,
    version=VERSION,
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.py"))),
        *_config_data_files(),
    ],
    install_requires=["setuptools", "numpy", "pyyaml"],
    extras_require={"train": ["torch", "tqdm", "matplotlib", "tensorboard"],
                    "export": ["onnx", "onnxruntime"], "bags": ["rosbags"]},
    zip_safe=True,
    maintainer="equiseg_ros developers",
    maintainer_email="dev@equiseg-ros.invalid",
    description="Robust multimodal semantic segmentation for autonomous vehicles (EQUISeg, RMMSS) with a ROS 2 node.",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{k} = {v}" for k, v in CONSOLE_SCRIPTS.items()]},
)
