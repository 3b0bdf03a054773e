"""MUSES: the projected layout reader (8-bit, SDK uint16 and .npz files) and the projection tool on raw SDK files
with a known geometry (a point at a known 3-D position lands on the known pixel with the known range)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from equiseg_ros.data._io import write_png
from equiseg_ros.data.muses import MusesReader
from equiseg_ros.data.muses_project import load_lidar_bin, metric_rih, rgb_camera
from equiseg_ros.data.muses_project import main as project_main
from equiseg_ros.sensors.lidar import encode_rih, metric_rih_to_image

h5py = pytest.importorskip("h5py")

W, H = 192, 108  # projection target: the SDK's 1920x1080 scaled by 0.1
# sensor frame (x fwd, y left, z up) -> optical, sensor 0.3 m above the camera
T_CAM_SENSOR = [[0, -1, 0, 0], [0, 0, -1, -0.3], [1, 0, 0, 0], [0, 0, 0, 1]]
CALIB = {"intrinsics": {"rgb": {"K": [[1000, 0, 959.5], [0, 1000, 539.5], [0, 0, 1]]},
                        "event": {"K": [[50, 0, 31.5], [0, 50, 23.5], [0, 0, 1]]}},
         "extrinsics": {"lidar2rgb": T_CAM_SENSOR, "radar2rgb": T_CAM_SENSOR,
                        "event2rgb": [[1, 0, 0, 0.1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}}
STEM = "REC0001_frame_000001"


def _pixel(p_sensor):
    x, y, z = p_sensor
    cam = np.array([-y, -z - 0.3, x])
    u = 100 * cam[0] / cam[2] + 95.95
    v = 100 * cam[1] / cam[2] + 53.95
    return int(np.floor(v + 0.5)), int(np.floor(u + 0.5))


@pytest.fixture(scope="module")
def sdk_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("muses")
    (root / "calib.json").write_text(json.dumps(CALIB))
    rel = "train/clear/day"
    entry = {"path_to_frame_camera": f"frame_camera/{rel}/{STEM}_frame_camera.png",
             "path_to_lidar": f"lidar/{rel}/{STEM}.bin", "path_to_radar": f"radar/{rel}/{STEM}.png",
             "path_to_event_camera": f"event_camera/{rel}/{STEM}.h5", "split": "train", "weather": "clear",
             "time_of_day": "day"}
    (root / "meta.json").write_text(json.dumps({STEM: entry}))
    write_png(root / entry["path_to_frame_camera"], np.full((H, W, 3), 90, np.uint8))
    label = np.full((H, W), 255, np.uint8)
    label[60:, :] = 0
    write_png(root / f"gt_semantic/{rel}/{STEM}_gt_labelTrainIds.png", label)
    # LiDAR .bin, N x 6 float64 (x, y, z, intensity, ring, t): one point in view, one too close, one behind
    pts = np.array([[20.0, 2.0, 0.5, 80.0, 3, 1.0], [0.5, 0.0, 0.0, 10.0, 1, 1.0], [-5.0, 0.0, 0.0, 10.0, 1, 1.0]])
    (root / entry["path_to_lidar"]).parent.mkdir(parents=True)
    pts.astype(np.float64).tofile(root / entry["path_to_lidar"])
    # radar polar image: 11 header rows + 600 range bins, 400 azimuths; column 199 looks straight ahead
    polar = np.zeros((11 + 600, 400), np.uint8)
    polar[10, 199] = 1
    polar[11 + 456, 199] = 120
    polar[11 + 300, 100] = 200  # outside the camera's field of view columns
    (root / entry["path_to_radar"]).parent.mkdir(parents=True)
    cv2.imwrite(str(root / entry["path_to_radar"]), polar)
    # events .h5: 3 positive + 2 negative at event pixel (36, 23) in the last 30 ms, one older event
    (root / entry["path_to_event_camera"]).parent.mkdir(parents=True)
    with h5py.File(root / entry["path_to_event_camera"], "w") as f:
        f["events/x"] = np.array([36, 36, 36, 36, 36, 36], np.uint16)
        f["events/y"] = np.array([23, 23, 23, 23, 23, 23], np.uint16)
        f["events/t"] = np.array([1_000_000, 1_050_000, 1_060_000, 1_070_000, 1_075_000, 1_080_000], np.int64)
        f["events/p"] = np.array([1, 1, 1, 0, 1, 0], np.uint8)
    return root


def test_projection_tool_known_geometry(sdk_root, tmp_path):
    out = tmp_path / "multimodal"
    assert project_main(["--root", str(sdk_root), "--out", str(out), "--width", str(W), "--height", str(H),
                         "--radar-threshold", "1"]) == 0
    r = MusesReader(out, "train", ["rgb", "lidar", "radar", "event"], resize=None)
    f = r[0]
    assert f.meta["condition"] == "clear_day" and len(r) == 1
    lidar = f["lidar"]
    v, u = _pixel((20.0, 2.0, 0.5))
    assert np.count_nonzero(lidar.any(-1)) == 1  # the 0.5 m point and the point behind are dropped
    rng = np.sqrt(20.0 ** 2 + 2.0 ** 2 + 0.5 ** 2)
    want = encode_rih(np.array([rng]), np.array([80.0]), np.array([0.5]), "lidar_rih")[0]
    assert lidar[v, u].tolist() == want.tolist()
    radar = f["radar"]
    d = 0.0438 * 457
    v, u = _pixel((d, 0.0, -1.62))
    assert np.count_nonzero(radar.any(-1)) == 1 and radar[v, u, 2] == 0
    assert radar[v, u].tolist() == encode_rih(np.array([np.hypot(d, 1.62)]), np.array([120.0]), np.array([0.0]),
                                              "radar_rih")[0].tolist()
    ev = f["event"]
    # rotation-only homography: event pixel (36, 23) -> normalised (0.09, -0.01) -> rgb (104.95, 52.95)
    assert ev[53, 105].tolist() == [3, 2, 0] and int(ev.sum()) == 5  # the event 80 ms before the last is out
    assert f.label[0, 0] == 255 and f.label[70, 0] == 0  # ignore stays ignore (AnySeg would make it road)


def test_projection_tool_dilation_and_sdk_threshold(sdk_root, tmp_path):
    out = tmp_path / "mm"
    project_main(["--root", str(sdk_root), "--out", str(out), "--width", str(W), "--height", str(H),
                  "--sensors", "lidar,radar", "--lidar-dilation", "2", "--radar-dilation", "10",
                  "--radar-threshold", "1"])
    f = MusesReader(out, "train", ["lidar", "radar"], resize=None)[0]
    assert np.count_nonzero(f["lidar"].any(-1)) == 4 and np.count_nonzero(f["radar"].any(-1)) == 100
    # the SDK's default threshold 0 keeps every range bin of a valid azimuth column (all 600 here, up to 150 m)
    project_main(["--root", str(sdk_root), "--out", str(out), "--width", str(W), "--height", str(H),
                  "--sensors", "radar"])
    assert np.count_nonzero(MusesReader(out, "train", ["radar"], resize=None)[0]["radar"].any(-1)) > 1
    with pytest.raises(SystemExit):
        project_main(["--root", str(sdk_root), "--out", str(out), "--sensors", "sonar"])


def test_lidar_bin_dtypes(tmp_path):
    pts = np.arange(18, dtype=np.float32).reshape(3, 6)
    pts.tofile(tmp_path / "a.bin")
    assert np.array_equal(load_lidar_bin(tmp_path / "a.bin", "float32"), pts)
    pts.astype(np.float64).tofile(tmp_path / "b.bin")
    assert np.array_equal(load_lidar_bin(tmp_path / "b.bin"), pts)  # the SDK reads float64
    np.arange(7, dtype=np.float64).tofile(tmp_path / "c.bin")
    with pytest.raises(ValueError, match="N x 6"):
        load_lidar_bin(tmp_path / "c.bin")


def test_metric_image_matches_sdk_float_output():
    cam = rgb_camera(CALIB, W, H)
    pts = np.array([[20.0, 2.0, 0.5, 80.0], [30.0, 2.0, 0.5, 10.0]])  # two pixels, two values
    img = metric_rih(pts, np.asarray(T_CAM_SENSOR, float), cam, True, 1.0, None)
    v, u = _pixel((20.0, 2.0, 0.5))
    assert np.allclose(img[v, u], [np.sqrt(404.25), 80.0, 0.5], atol=1e-4)
    assert np.count_nonzero(img[..., 0]) == 2


def _projected_layout(root: Path) -> dict:
    truth = {}
    for i, (weather, time) in enumerate([("clear", "day"), ("fog", "night"), ("snow", "day")]):
        rel = f"val/{weather}/{time}"
        stem = f"REC{i:04d}_frame_00000{i}"
        rgb = np.random.default_rng(i).integers(0, 256, (40, 64, 3), dtype=np.uint8)
        write_png(root / f"frame_camera/{rel}/{stem}_frame_camera.png", rgb)
        label = np.full((40, 64), 255, np.uint8)
        label[20:] = 13
        write_png(root / f"gt_semantic/{rel}/{stem}_gt_labelTrainIds.png", label)
        ev = np.zeros((40, 64, 3), np.uint8)
        ev[5, 7] = (3, 1, 0)
        write_png(root / f"event_camera/{rel}/{stem}_event_camera.png", ev)
        metric = np.zeros((40, 64, 3), np.float32)
        metric[10, 20] = (25.0, 60.0, -1.2)
        if i == 0:  # the SDK's uint16 PNG: (x + 100) * 150, written by OpenCV in the SDK's channel order
            p = root / f"lidar/{rel}/{stem}_lidar.png"
            p.parent.mkdir(parents=True)
            cv2.imwrite(str(p), ((metric + 100) * 150).astype(np.uint16))
        elif i == 1:  # the SDK's default .npz float output
            p = root / f"lidar/{rel}/{stem}_lidar.npz"
            p.parent.mkdir(parents=True)
            np.savez_compressed(p, metric)
        else:  # already 8-bit
            write_png(root / f"lidar/{rel}/{stem}_lidar.png", metric_rih_to_image(metric, "lidar_rih"))
        truth[weather] = (rgb, metric)
    return truth


def test_reader_projected_layout_formats_and_policies(tmp_path):
    truth = _projected_layout(tmp_path)
    r = MusesReader(tmp_path, "val", ["rgb", "lidar", "event"], resize=None)
    assert [x.condition for x in r.frames] == ["clear_day", "fog_night", "snow_day"]
    expect = metric_rih_to_image(truth["clear"][1], "lidar_rih")
    for i in range(3):
        f = r[i]
        assert np.array_equal(f["lidar"], expect), i  # uint16 SDK PNG, .npz and 8-bit agree
        assert f["event"][5, 7].tolist() == [3, 1, 0]
        assert f.label[0, 0] == 255 and f.label[30, 0] == 13
    assert np.array_equal(r[0]["rgb"], truth["clear"][0])
    sq = MusesReader(tmp_path, "val", ["rgb", "lidar"], resize="square", size=32)[0]
    assert sq["rgb"].shape == (32, 32, 3) and sq.label.shape == (32, 32)
    asp = MusesReader(tmp_path, "val", ["rgb"], resize="aspect", size=32)[0]
    assert asp["rgb"].shape == (32, 51, 3) and asp.label.shape == (32, 51)
    assert set(asp.label.ravel().tolist()) <= {13, 255}  # labels NEAREST: no blended ids
    assert len(MusesReader(tmp_path, "val", ["rgb"], conditions=["night"])) == 1
    assert len(MusesReader(tmp_path, "val", ["rgb"], conditions=["clear", "snow", "day"])) == 2
    div = MusesReader(tmp_path, "val", ["lidar"], resize=None, uint16_policy="div256")[0]
    assert div["lidar"][0, 0, 0] == (100 * 150) // 256  # AnySeg's /256 branch, for comparison
    with pytest.raises(FileNotFoundError, match="frame_camera"):
        MusesReader(tmp_path, "test", ["rgb"])
    with pytest.raises(ValueError, match="unknown MUSES condition"):
        MusesReader(tmp_path, "val", ["rgb"], conditions=["sun"])
