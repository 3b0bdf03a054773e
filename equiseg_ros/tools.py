"""The registry of command-line tools, listed by ``python -m equiseg_ros --help`` and checked by the tests."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Tool:
    command: str  # how a user runs it
    module: str  # the module that implements it (checked for existence)
    summary: str


TOOLS: tuple[Tool, ...] = (
    Tool("make demo", "equiseg_ros.demo", "the end-to-end demo on synthetic data"),
    Tool("python -m equiseg_ros.data.synthetic", "equiseg_ros.data.synthetic",
         "generate synthetic multimodal driving scenes in the DeLiVER layout"),
    Tool("python -m equiseg_ros.data.muses_project", "equiseg_ros.data.muses_project",
         "project raw MUSES LiDAR/radar/events to camera images"),
    Tool("python -m equiseg_ros.models summary", "equiseg_ros.models.__main__",
         "parameter count and multiply-accumulates of a model"),
    Tool("python training/train.py", "training.train", "train EQUISeg, RMMSS and the baselines (torchrun for DDP)"),
    Tool("python training/evaluate.py", "training.evaluate", "robustness report (EMM/RMM/NM, any-modality)"),
    Tool("python training/export.py", "training.export", "export a checkpoint to ONNX (and a TensorRT engine)"),
    Tool("python -m equiseg_ros.inference.bench", "equiseg_ros.inference.bench",
         "latency and throughput per inference backend"),
    Tool("python -m equiseg_ros.inference.build_engine", "equiseg_ros.inference.build_engine",
         "build or verify the TensorRT engine (+ sidecar) for an exported ONNX on this machine"),
    Tool("perception_node / ros2 launch equiseg_ros perception.launch.py", "equiseg_ros.ros.node",
         "the ROS 2 segmentation node"),
    Tool("python -m equiseg_ros.bag.convert", "equiseg_ros.bag.convert", "dataset -> rosbag2 with failure injection"),
    Tool("python -m equiseg_ros.bag.replay", "equiseg_ros.bag.replay", "publish a rosbag2 through rclpy (+/clock)"),
    Tool("python -m equiseg_ros.bag.evaluate", "equiseg_ros.bag.evaluate", "score the node's pipeline on a bag"),
)


def is_available(tool: Tool) -> bool:
    """True when the tool's module exists in this install (later issues add the missing ones)."""
    try:
        return importlib.util.find_spec(tool.module) is not None
    except ModuleNotFoundError:
        return False
