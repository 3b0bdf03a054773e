"""Dataset -> rosbag2 -> read back with rosbags: messages, stamps, encodings and ground truth equal the source."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosReliability
from test_bag_fixtures import make_deliver, make_muses, make_synthetic

from equiseg_ros.bag import convert
from equiseg_ros.bag._sources import FrameSource
from equiseg_ros.bag._writer import read_custom
from equiseg_ros.ros import codecs


def _read(bag: Path) -> dict[str, list[tuple[int, object]]]:
    out: dict[str, list[tuple[int, object]]] = {}
    with AnyReader([bag]) as r:
        for conn, ts, raw in r.messages():
            out.setdefault(conn.topic, []).append((ts, r.deserialize(raw, conn.msgtype)))
    return out


def _check_bag(bag: Path, source: FrameSource, rate: float = 10.0) -> None:
    msgs = _read(bag)
    n = len(source)
    spec = source.spec
    start = int(convert.DEFAULT_START_S * 1e9)
    period = int(round(1e9 / rate))
    assert len(msgs[convert.GT_TOPIC]) == n
    for m in spec.modality_names:
        assert len(msgs[convert.image_topic(m)]) == n, m
    for i in range(n):
        frame = source.frame(i)
        stamp = start + i * period
        for m in spec.modality_names:
            ts, msg = msgs[convert.image_topic(m)][i]
            assert ts == stamp and msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
            assert msg.encoding == "rgb8" and msg.header.frame_id == convert.CAMERA_FRAME
            np.testing.assert_array_equal(codecs.image_to_numpy(msg, m), frame.images[m])
        ts, gt = msgs[convert.GT_TOPIC][i]
        assert ts == stamp and gt.encoding == "mono8"
        np.testing.assert_array_equal(codecs.image_to_numpy(gt), frame.label)
        info = json.loads(msgs[convert.INFO_TOPIC][i][1].data)
        assert info["condition"] == frame.condition and info["name"] == frame.name and info["stamp_ns"] == stamp
        ci = msgs[convert.CAMERA_INFO_TOPIC][i][1]
        assert (ci.height, ci.width) == frame.label.shape and ci.k[0] > 0


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("dataset", ["deliver", "muses", "synthetic"])
def test_convert_each_dataset_both_storages(tmp_path: Path, dataset: str, storage: str) -> None:
    root = {"deliver": make_deliver, "muses": make_muses, "synthetic": make_synthetic}[dataset](tmp_path / "data")
    bag = tmp_path / "bag"
    assert convert.main(["--dataset", dataset, "--root", str(root), "--split", "val", "--out", str(bag),
                         "--storage", storage, "--quiet"]) == 0
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == storage and meta["version"] == 9
    source = FrameSource(dataset, root, "val")
    _check_bag(bag, source)
    custom = read_custom(bag)
    assert custom["source"]["frames"] == len(source) and custom["source"]["dataset"] == dataset
    assert custom["spec"]["name"] == source.spec.name
    with AnyReader([bag]) as r:
        qos = {c.topic: c.ext.offered_qos_profiles[0] for c in r.connections}
    assert qos["/rgb/image" if dataset != "muses" else "/lidar/image"].reliability == QosReliability.BEST_EFFORT
    assert qos[convert.GT_TOPIC].reliability == QosReliability.RELIABLE


def test_conditions_filter_and_rate(tmp_path: Path) -> None:
    root = make_deliver(tmp_path / "d")
    bag = tmp_path / "night"
    assert convert.main(["--dataset", "deliver", "--root", str(root), "--conditions", "night", "--rate", "4",
                         "--out", str(bag), "--quiet"]) == 0
    source = FrameSource("deliver", root, "val", conditions=["night"])
    assert len(source) == 2
    _check_bag(bag, source, rate=4.0)


def test_humble_target(tmp_path: Path) -> None:
    root = make_deliver(tmp_path / "d")
    bag = tmp_path / "humble"
    assert convert.main(["--dataset", "deliver", "--root", str(root), "--distro", "humble", "--out", str(bag),
                         "--quiet"]) == 0
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "sqlite3" and meta["version"] == 5
    assert "ros_distro" not in meta
    for t in meta["topics_with_message_count"]:
        assert "type_description_hash" not in t["topic_metadata"]
        # Humble parses offered_qos_profiles as a YAML string with integer enums
        qos = yaml.safe_load(t["topic_metadata"]["offered_qos_profiles"])
        assert isinstance(qos[0]["reliability"], int)
    _check_bag(bag, FrameSource("deliver", root, "val"))
    assert read_custom(bag)["distro"] == "humble"
    # mcap is refused for Humble (its default install has no mcap plugin)
    assert convert.main(["--dataset", "deliver", "--root", str(root), "--distro", "humble", "--storage", "mcap",
                         "--out", str(tmp_path / "x"), "--quiet"]) == 2


def test_existing_output_never_overwritten_silently(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_deliver(tmp_path / "d", frames_per_condition=1)
    bag = tmp_path / "bag"
    args = ["--dataset", "deliver", "--root", str(root), "--out", str(bag), "--quiet"]
    assert convert.main(args) == 0
    before = (bag / "metadata.yaml").read_text()
    assert convert.main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert (bag / "metadata.yaml").read_text() == before
    assert convert.main(args + ["--overwrite", "--rate", "5"]) == 0
    assert read_custom(bag)["source"]["rate"] == 5.0
    other = tmp_path / "notabag"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert convert.main(["--dataset", "deliver", "--root", str(root), "--out", str(other), "--overwrite",
                         "--quiet"]) == 2
    assert (other / "keep.txt").exists()


def test_bad_root_and_empty_selection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert convert.main(["--dataset", "deliver", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "b"),
                         "--quiet"]) == 2
    root = make_deliver(tmp_path / "d", frames_per_condition=1)
    assert convert.main(["--dataset", "deliver", "--root", str(root), "--conditions", "fog",
                         "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "fog" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_raw_forms_of_the_synthetic_data(tmp_path: Path) -> None:
    from equiseg_ros.data.synthetic import load_raw_frame
    from equiseg_ros.sensors.transforms_tf import transform_stamped_to_matrix
    root = make_synthetic(tmp_path / "syn", frames=2)
    bag = tmp_path / "raw"
    assert convert.main(["--dataset", "synthetic", "--root", str(root), "--raw", "--out", str(bag), "--quiet"]) == 0
    msgs = _read(bag)
    source = FrameSource("synthetic", root, "val")
    layout = read_custom(bag)["topics"]["modalities"]
    assert layout["lidar"]["type"] == "pointcloud2" and layout["depth"]["encoding"] == "32FC1"
    assert layout["event"]["type"] == "pointcloud2" and layout["event"]["topic"] == convert.EVENTS_TOPIC
    for i in range(len(source)):
        raw = load_raw_frame(root, source.reader[i].record)
        depth = codecs.image_to_numpy(msgs["/depth/image"][i][1])
        np.testing.assert_array_equal(depth, raw.depth_m)  # NaN where nothing is hit, kept as NaN
        pts = codecs.pointcloud2_to_array(msgs["/lidar/points"][i][1])
        cols = np.stack([pts[n] for n in ("x", "y", "z", "intensity")], 1)
        np.testing.assert_array_equal(cols, raw.lidar_points)
        assert msgs["/lidar/points"][i][1].header.frame_id == "lidar_link"
        ev = codecs.pointcloud2_to_array(msgs[convert.EVENTS_TOPIC][i][1], require=("x", "y", "t", "polarity"))
        np.testing.assert_array_equal(np.stack([ev[n] for n in ("x", "y", "t", "polarity")], 1), raw.events)
        ci = msgs[convert.CAMERA_INFO_TOPIC][i][1]
        np.testing.assert_allclose(np.asarray(ci.k).reshape(3, 3), raw.camera.K)
    tf = msgs[convert.TF_STATIC_TOPIC][0][1].transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == (convert.CAMERA_FRAME, "lidar_link")
    raw0 = load_raw_frame(root, source.reader[0].record)
    np.testing.assert_allclose(transform_stamped_to_matrix(tf), raw0.T_cam_from_lidar, atol=1e-9)
    np.testing.assert_allclose(np.asarray(layout["lidar"]["extrinsic"]).reshape(4, 4), raw0.T_cam_from_lidar)


def test_node_params_file_points_the_node_at_the_bag(tmp_path: Path) -> None:
    from equiseg_ros.ros.params import flatten
    root = make_deliver(tmp_path / "d", frames_per_condition=1)
    bag, params = tmp_path / "bag", tmp_path / "node.yaml"
    assert convert.main(["--dataset", "deliver", "--root", str(root), "--out", str(bag), "--quiet",
                         "--node-params", str(params)]) == 0
    values = flatten(yaml.safe_load(params.read_text())["/**"]["ros__parameters"])
    assert values["camera_info_topic"] == convert.CAMERA_INFO_TOPIC
    for m in ("rgb", "depth", "event", "lidar"):
        assert values[f"inputs.{m}.topic"] == convert.image_topic(m) and values[f"inputs.{m}.type"] == "image"
