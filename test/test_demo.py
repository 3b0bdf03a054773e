"""The demo runs what exists, names what is missing, skips up-to-date steps and redoes them with --force."""
from __future__ import annotations

from pathlib import Path

import pytest

from equiseg_ros import demo


def _run(out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    rc = demo.main(["--out", str(out), "--frames", "80", "--size", "32", "--recipe", str(out / "no_recipe.yaml"),
                    *extra])
    text = capsys.readouterr().out
    assert rc == 0, text
    return text


def test_demo_missing_step_skips_and_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    first = _run(out, capsys)
    assert "[1/6] synthetic data: done" in first
    assert "MISSING in this tree" in first and "no_recipe.yaml" in first  # the training recipe is missing
    assert "[4/6] ONNX export: skipped (needs the output of train)" in first
    assert "[5/6] rosbag2 of val with failures: done" in first
    assert "node on a DDS replay: skipped" in first
    assert (out / "bag_val_failures" / "metadata.yaml").exists() and (out / "data" / "manifest.json").exists()
    assert str(out / "bag_val_failures") in first  # the summary says where the outputs are

    bag_mtime = (out / "bag_val_failures" / "metadata.yaml").stat().st_mtime_ns
    second = _run(out, capsys)
    assert "[1/6] synthetic data: up to date, skipped" in second
    assert "[5/6] rosbag2 of val with failures: up to date, skipped" in second
    assert (out / "bag_val_failures" / "metadata.yaml").stat().st_mtime_ns == bag_mtime

    third = _run(out, capsys, "--raw-bag")  # a changed argument redoes that step only
    assert "[1/6] synthetic data: up to date, skipped" in third
    assert "[5/6] rosbag2 of val with failures: done" in third

    (out / "bag_val_failures" / "metadata.yaml").unlink()  # a missing output redoes the step
    assert "[5/6] rosbag2 of val with failures: done" in _run(out, capsys, "--raw-bag")

    forced = _run(out, capsys, "--raw-bag", "--force")
    assert "[1/6] synthetic data: done" in forced and "[5/6] rosbag2 of val with failures: done" in forced
