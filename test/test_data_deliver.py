"""DeLiVER reader on fixtures written in the real layout and encodings (4-channel labels, 4- and 1-channel PNGs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from equiseg_ros.data._io import read_png, write_png
from equiseg_ros.data.deliver import DeliverReader, decode_label, encode_label

H, W = 24, 32


def _frame(root: Path, cond: str, split: str, scene: str, name: str, seed: int, event_lowres: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    rel = Path(cond) / split / scene
    rgba = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)  # real DeLiVER RGB may carry alpha: dropped
    write_png(root / "img" / rel / f"{name}_rgb_front.png", rgba)
    hha = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)  # 4-channel modality: alpha dropped
    write_png(root / "hha" / rel / f"{name}_depth_front.png", hha)
    gt_depth = rng.integers(0, 256, (H, W), dtype=np.uint8)  # 1-channel: repeated to 3
    write_png(root / "depth" / rel / f"{name}_depth_front.png", gt_depth)
    eh, ew = (H // 2, W // 2) if event_lowres else (H, W)
    event = rng.integers(0, 256, (eh, ew, 3), dtype=np.uint8)
    write_png(root / "event" / rel / f"{name}_event_front.png", event)
    lidar = rng.integers(0, 256, (H, W), dtype=np.uint8)
    write_png(root / "lidar" / rel / f"{name}_lidar_front.png", lidar)
    raw = rng.integers(0, 26, (H, W), dtype=np.uint8)
    raw[0, :4] = [0, 255, 1, 25]
    lab = np.zeros((H, W, 4), np.uint8)
    lab[..., 0] = raw
    lab[..., 1] = 200  # other channels are not the label
    lab[..., 3] = 255
    write_png(root / "semantic" / rel / f"{name}_semantic_front.png", lab)
    return {"rgb": rgba[..., :3], "hha": hha[..., :3], "depth": gt_depth, "event": event, "lidar": lidar, "raw": raw}


@pytest.fixture(scope="module")
def deliver_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("DELIVER")
    truth = {}
    truth["a"] = _frame(root, "fog", "val", "MAP_10_point102", "045050", 1)
    truth["b"] = _frame(root, "night", "val", "MAP_1_point4_eventlowres", "000101", 2, event_lowres=True)
    truth["c"] = _frame(root, "sun", "val", "MAP_3_point7_motionblur", "000200", 3)
    truth["d"] = _frame(root, "sun", "train", "MAP_5_point1", "000300", 4)
    return root, truth


def test_png_io_roundtrip_keeps_rgb_order_and_depth(tmp_path):
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0] = 200
    write_png(tmp_path / "a.png", img)
    assert read_png(tmp_path / "a.png")[0, 0].tolist() == [200, 0, 0]
    img16 = np.full((2, 3, 3), 40000, np.uint16)
    write_png(tmp_path / "b.png", img16)
    assert read_png(tmp_path / "b.png").dtype == np.uint16


def test_label_decoding_matches_reference():
    raw = np.array([0, 1, 2, 25, 255], np.uint8)
    assert decode_label(raw).tolist() == [255, 0, 1, 24, 255]
    assert encode_label(np.array([255, 0, 24], np.uint8)).tolist() == [0, 1, 25]


def test_reader_reads_real_layout(deliver_root):
    root, truth = deliver_root
    r = DeliverReader(root, "val", ["rgb", "depth", "event", "lidar"])
    assert len(r) == 3
    names = [rec.name for rec in r.frames]
    f = r[names.index("045050")]
    t = truth["a"]
    assert np.array_equal(f["rgb"], t["rgb"])
    assert np.array_equal(f["depth"], t["hha"])  # "depth" comes from hha/ by default
    assert np.array_equal(f["event"], t["event"])
    assert np.array_equal(f["lidar"], np.repeat(t["lidar"][..., None], 3, 2))
    assert np.array_equal(f.label, decode_label(t["raw"]))
    assert f.label[0, :4].tolist() == [255, 255, 0, 24]
    assert f.meta["condition"] == "fog" and f.meta["corner_case"] is None
    assert f.meta["frame"] == "fog/val/MAP_10_point102/045050"
    for arr in f.images.values():
        assert arr.dtype == np.uint8 and arr.shape == (H, W, 3)


def test_low_res_event_is_resized_nearest(deliver_root):
    root, truth = deliver_root
    r = DeliverReader(root, "val", ["event", "rgb"], corner_cases=["eventlowres"])
    assert len(r) == 1 and list(r[0].images) == ["event", "rgb"]  # any subset, any order
    ev = truth["b"]["event"]
    assert np.array_equal(r[0]["event"], np.repeat(np.repeat(ev, 2, 0), 2, 1))


def test_depth_source_and_filters(deliver_root):
    root, truth = deliver_root
    r = DeliverReader(root, "val", ["depth"], conditions=["fog"], depth_source="depth")
    assert len(r) == 1
    assert np.array_equal(r[0]["depth"], np.repeat(truth["a"]["depth"][..., None], 3, 2))
    assert len(DeliverReader(root, "val", ["rgb"], conditions=["sun", "night"])) == 2
    assert [x.corner_case for x in DeliverReader(root, "val", ["rgb"], corner_cases=["motionblur"]).frames] == [
        "motionblur"]
    assert len(DeliverReader(root, "train", ["rgb"])) == 1


def test_errors_name_the_problem(deliver_root, tmp_path):
    root, _ = deliver_root
    with pytest.raises(FileNotFoundError, match=r"img/\*/test/\*/\*\.png"):
        DeliverReader(root, "test", ["rgb"])
    with pytest.raises(FileNotFoundError, match="none for conditions"):
        DeliverReader(root, "train", ["rgb"], conditions=["rain"])
    with pytest.raises(ValueError, match="unknown DeLiVER condition"):
        DeliverReader(root, "val", ["rgb"], conditions=["snow"])
    with pytest.raises(ValueError, match="unknown DeLiVER modality"):
        DeliverReader(root, "val", ["radar"])
    # a missing modality file names the file and the frame
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "lidar" / "fog" / "val" / "MAP_10_point102" / "045050_lidar_front.png").unlink()
    r = DeliverReader(copy, "val", ["rgb", "lidar"], conditions=["fog"])
    with pytest.raises(FileNotFoundError, match=r"lidar of frame fog/val/MAP_10_point102/045050.*045050_lidar_front"):
        r[0]
