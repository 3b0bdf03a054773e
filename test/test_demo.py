"""The demo runs what exists, names what is missing, skips up-to-date steps and redoes them with --force."""
from __future__ import annotations

from pathlib import Path

import numpy as np
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


def test_shipped_model_is_checked_against_its_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "shipped.pt"
    model.write_bytes(b"not the model make demo-model wrote")
    (tmp_path / "shipped.pt.sha256").write_text("0" * 64 + "  shipped.pt\n")
    rc = demo.main(["--out", str(tmp_path / "demo"), "--frames", "80", "--size", "32", "--model", str(model)])
    text = capsys.readouterr().out
    assert rc == 1 and "demo model (shipped, checked): FAILED" in text and "make demo-model" in text
    assert "[3/6] robustness report: skipped (needs the output of train)" in text
    rc = demo.main(["--out", str(tmp_path / "demo2"), "--frames", "80", "--size", "32", "--model",
                    str(tmp_path / "absent.pt")])
    assert "MISSING in this tree" in capsys.readouterr().out


def test_world_summary_is_exact_over_present_classes() -> None:
    classes = [f"c{i}" for i in range(25)]
    cm = np.zeros((25, 25), int)
    for i in (0, 3, 7, 12):  # four classes occur in the ground truth
        cm[i, i] = 10
    results = {"models": {"m": {"class_names": classes, "confusion": cm.tolist(), "results": {
        "benchmark": {"full": {"per_class_iou": [None] * 25}, "table1": {"mIoU": 8.0, "EMM Avg": 4.0},
                      "anymodal": {"R": 2.0}}}}}}
    text = "\n".join(demo.world_summary(results))
    assert "4 classes occur" in text and "x 6.250" in text
    assert "mIoU 50.0, EMM Avg 25.0" in text and "R=12.5" in text and "mIoU 8.0" in text
