"""Tiny on-disk dataset fixtures in the real DeLiVER and MUSES layouts, shared by the bag tests (and checked here).

Written with the project's PNG writer so the readers under test decode exactly what the converter must reproduce.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from equiseg_ros.data._io import write_png

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def make_deliver(root: Path, frames_per_condition: int = 2, conditions: tuple[str, ...] = ("sun", "night"),
                 size: tuple[int, int] = (24, 32), seed: int = 0) -> Path:
    """root/{img,hha,event,lidar,semantic}/<cond>/val/<scene>/<name>_<mod>_front.png; labels raw k+1, some 255."""
    rng = np.random.default_rng(seed)
    h, w = size
    for cond in conditions:
        for i in range(frames_per_condition):
            name = f"{i:06d}"
            scene = "MAP_1_point1"
            for folder, suffix in (("img", "rgb"), ("hha", "depth"), ("event", "event"), ("lidar", "lidar")):
                write_png(root / folder / cond / "val" / scene / f"{name}_{suffix}_front.png",
                          rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            raw = rng.integers(1, 26, (h, w), dtype=np.uint8)
            raw[0, :4] = 255
            write_png(root / "semantic" / cond / "val" / scene / f"{name}_semantic_front.png", raw)
    return root


def make_muses(root: Path, frames_per_condition: int = 2, conditions: tuple[tuple[str, str], ...] = (
        ("clear", "day"), ("fog", "night")), size: tuple[int, int] = (18, 32), seed: int = 1) -> Path:
    """root/{frame_camera,event_camera,lidar,radar,gt_semantic}/val/<weather>/<time>/<name>_<folder>.png."""
    rng = np.random.default_rng(seed)
    h, w = size
    for weather, time in conditions:
        for i in range(frames_per_condition):
            name = f"REC{i:04d}"
            for folder in ("frame_camera", "event_camera", "lidar", "radar"):
                write_png(root / folder / "val" / weather / time / f"{name}_{folder}.png",
                          rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            lab = rng.integers(0, 19, (h, w), dtype=np.uint8)
            lab[-1, -3:] = 255
            write_png(root / "gt_semantic" / "val" / weather / time / f"{name}_gt_labelTrainIds.png", lab)
    return root


def has_synthetic() -> bool:
    return importlib.util.find_spec("equiseg_ros.data.synthetic") is not None


def make_synthetic(root: Path, frames: int = 4, size: int = 32) -> Path:
    """The project's generator (DeLiVER layout plus raw sensor data); skips the calling test if it is missing."""
    if not has_synthetic():
        pytest.skip("equiseg_ros.data.synthetic is not in this tree yet")
    subprocess.run([PY, "-m", "equiseg_ros.data.synthetic", "--out", str(root), "--frames", str(frames),
                    "--size", str(size), "--seed", "0", "--splits", "val:1", "--workers", "1"],
                   check=True, cwd=ROOT, capture_output=True, env=dict(os.environ))
    return root


def ros_env(domain: int) -> dict[str, str]:
    """Environment for a DDS subprocess of the bag tests (domain ids 50-89 are this area's)."""
    assert 50 <= domain <= 89
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def test_fixtures_read_back(tmp_path: Path) -> None:
    from equiseg_ros.data.deliver import DeliverReader
    from equiseg_ros.data.muses import MusesReader
    d = DeliverReader(make_deliver(tmp_path / "d"), "val", ("rgb", "depth", "event", "lidar"))
    assert len(d) == 4 and d[0].images["rgb"].shape == (24, 32, 3) and d[0].label[0, 0] == 255
    m = MusesReader(make_muses(tmp_path / "m"), "val", ("rgb", "lidar", "radar", "event"), resize=None)
    assert len(m) == 4 and m[0].images["radar"].shape == (18, 32, 3)
