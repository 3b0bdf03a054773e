"""SensorFrontend: raw data carried through real ROS messages and the codecs reaches the model exactly as the
training data preparation made it (synthetic and MUSES layouts), and assemble() follows the model contract."""
from __future__ import annotations

import numpy as np
import pytest

from equiseg_ros.data.synthetic import generate_frame, plan
from equiseg_ros.data.transforms import resize_modality
from equiseg_ros.ros.codecs import (
    camera_info_to_camera,
    fill_image,
    fill_pointcloud2,
    image_to_numpy,
    pointcloud2_to_array,
)
from equiseg_ros.sensors.frontend import ModalityOptions, SensorFrontend, health_kind
from equiseg_ros.sensors.geometry import CameraModel
from equiseg_ros.sensors.lidar import metric_rih_to_image
from equiseg_ros.sensors.transforms_tf import matrix_to_translation_quaternion, transform_stamped_to_matrix
from equiseg_ros.spec import muses_spec, synthetic_spec

sensor_msgs = pytest.importorskip("sensor_msgs.msg")
geometry_msgs = pytest.importorskip("geometry_msgs.msg")

SIZE = 64


@pytest.fixture(scope="module")
def frames() -> dict[str, dict]:
    specs = plan(40, 0, [("train", 1.0)])
    return {"plain": generate_frame(specs[0], SIZE, 0), "lowres": generate_frame(specs[36], SIZE, 0)}


def _camera_info(cam) -> object:
    m = sensor_msgs.CameraInfo(height=cam.height, width=cam.width, k=cam.K.reshape(-1).tolist())
    if cam.P is not None:
        m.p = cam.P.reshape(-1).tolist()
    return m


def _via_ros(d: dict) -> dict[str, object]:
    """The raw data of a synthetic frame as a vehicle publishes it, decoded back by the codecs."""
    rgb = image_to_numpy(fill_image(sensor_msgs.Image(), d["rgb"][..., ::-1], "bgr8"))
    depth = image_to_numpy(fill_image(sensor_msgs.Image(), d["depth_m"], "32FC1"))
    pts = np.zeros(len(d["points"]), [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    for i, k in enumerate(pts.dtype.names):
        pts[k] = d["points"][:, i]
    cloud = pointcloud2_to_array(fill_pointcloud2(sensor_msgs.PointCloud2(), pts, sensor_msgs.PointField))
    e = d["events"]
    ev = np.zeros(len(e), [("x", "<u2"), ("y", "<u2"), ("t", "<f8"), ("polarity", "u1")])
    ev["x"], ev["y"], ev["t"], ev["polarity"] = e[:, 0], e[:, 1], e[:, 2], e[:, 3]
    events = pointcloud2_to_array(fill_pointcloud2(sensor_msgs.PointCloud2(), ev, sensor_msgs.PointField),
                                  require=("x", "y", "t", "polarity"))
    return {"rgb": (rgb, "bgr8"), "depth": (depth, "32FC1"), "lidar": cloud,
            "event": (events, "", d["calib"]["stamp"])}


def test_representations_equal_the_synthetic_data_preparation(frames: dict) -> None:
    d = frames["plain"]
    cam = camera_info_to_camera(_camera_info(CameraModel.from_dict(d["calib"]["camera"])))
    T = np.asarray(d["calib"]["T_cam_from_lidar"])
    fe = SensorFrontend(synthetic_spec().with_input_size(SIZE, SIZE), cam, {"lidar": T})
    ros = _via_ros(d)
    assert np.array_equal(fe.represent("rgb", *ros["rgb"]), d["rgb"])
    assert np.array_equal(fe.represent("depth", *ros["depth"]), d["hha"])
    assert np.array_equal(fe.represent("lidar", ros["lidar"]), d["lidar"])
    assert np.array_equal(fe.represent("event", *ros["event"]), d["event"])
    assert d["lidar"].any() and d["event"].any() and d["hha"].any()  # non-trivial inputs
    # depth as 16UC1 millimetres: the same representation up to the millimetre quantisation
    mm = np.where(np.isfinite(d["depth_m"]), np.rint(d["depth_m"] * 1000), 0).astype(np.uint16)
    hha_mm = fe.represent("depth", image_to_numpy(fill_image(sensor_msgs.Image(), mm, "16UC1")), "16UC1")
    assert np.mean(np.abs(hha_mm.astype(int) - d["hha"])) < 1.0
    assert np.array_equal(hha_mm[..., 0] == 0, d["hha"][..., 0] == 0)


def test_extrinsic_from_a_tf_transform_gives_the_same_lidar_image(frames: dict) -> None:
    d = frames["plain"]
    T = np.asarray(d["calib"]["T_cam_from_lidar"])
    t, q = matrix_to_translation_quaternion(T)
    msg = geometry_msgs.TransformStamped()
    msg.header.frame_id, msg.child_frame_id = "camera", "lidar"
    msg.transform.translation = geometry_msgs.Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2]))
    msg.transform.rotation = geometry_msgs.Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
    fe = SensorFrontend(synthetic_spec().with_input_size(SIZE, SIZE), CameraModel.from_dict(d["calib"]["camera"]))
    fe.set_extrinsic("lidar", transform_stamped_to_matrix(msg))
    img = fe.represent("lidar", _via_ros(d)["lidar"])
    assert np.mean(np.any(img != d["lidar"], axis=2)) < 0.002  # at most a rounding-boundary pixel or so


def test_low_resolution_event_camera_reaches_the_model_like_training_data(frames: dict) -> None:
    d = frames["lowres"]
    w, h = d["calib"]["event_size"]
    assert (w, h) == (SIZE // 2, SIZE // 2)
    spec = synthetic_spec().with_input_size(SIZE, SIZE)
    fe = SensorFrontend(spec, CameraModel.from_dict(d["calib"]["camera"]),
                        options={"event": ModalityOptions(event_window=0.05, event_size=(w, h))})
    got = fe.represent("event", *_via_ros(d)["event"])
    assert np.array_equal(got, resize_modality(d["event"], "event_frame", SIZE, SIZE))


def test_muses_metric_rih_images_and_camera_resize() -> None:
    spec = muses_spec().with_input_size(32, 64)
    fe = SensorFrontend(spec)
    rng = np.random.default_rng(0)
    rih = np.zeros((24, 48, 3), np.float32)
    hit = rng.random((24, 48)) < 0.2
    rih[hit] = np.stack([rng.uniform(1, 90, hit.sum()), rng.uniform(0, 255, hit.sum()),
                         rng.uniform(-4, 4, hit.sum())], axis=1)
    want = resize_modality(metric_rih_to_image(rih, "lidar_rih"), "lidar_rih", 32, 64)
    assert np.array_equal(fe.represent("lidar", rih, "32FC3"), want)
    cam_img = rng.integers(0, 256, (24, 48, 3), dtype=np.uint8)
    assert np.array_equal(fe.represent("rgb", cam_img, "rgb8"), resize_modality(cam_img, "rgb8", 32, 64))
    # an already encoded 8-bit event frame passes through (nearest resize)
    ev = rng.integers(0, 4, (24, 48, 3), dtype=np.uint8)
    assert np.array_equal(fe.represent("event", ev, "rgb8"), resize_modality(ev, "event_frame", 32, 64))


def test_assemble_follows_the_model_contract(frames: dict) -> None:
    d = frames["plain"]
    spec = synthetic_spec().with_input_size(SIZE, SIZE)
    fe = SensorFrontend(spec, camera=None, extrinsics={"lidar": np.asarray(d["calib"]["T_cam_from_lidar"])})
    ros = _via_ros(d)
    items = {"rgb": ros["rgb"], "depth": ros["depth"], "event": None, "lidar": ros["lidar"]}
    x, present, failed = fe.assemble_with_reasons(items)
    assert x.shape == (1, 4, 3, SIZE, SIZE) and x.dtype == np.float32 and present.dtype == np.bool_
    # lidar cannot be projected without a camera model: absent, zero-filled, with the reason
    assert present.tolist() == [[True, True, False, False]]
    assert "camera" in failed["lidar"] and "event" not in failed
    assert not x[0, 2].any() and not x[0, 3].any()
    np.testing.assert_allclose(x[0, 0], spec.normalize("rgb", d["rgb"]), atol=1e-5)
    fe.set_camera(camera_info_to_camera(_camera_info(CameraModel.from_dict(d["calib"]["camera"]))))
    x2, present2 = fe.assemble(items)
    assert present2.tolist() == [[True, True, False, True]]
    np.testing.assert_allclose(x2[0, 3], spec.normalize("lidar", d["lidar"]), atol=1e-6)
    np.testing.assert_allclose(x2[0, 1], spec.normalize("depth", d["hha"]), atol=1e-6)


def test_errors_name_the_modality_and_health_kinds() -> None:
    spec = synthetic_spec().with_input_size(32, 32)
    fe = SensorFrontend(spec)
    with pytest.raises(ValueError, match="depth: depth must be"):
        fe.represent("depth", np.zeros((4, 4, 2), np.float32))
    with pytest.raises(ValueError, match="rgb: rgb8 needs"):
        fe.represent("rgb", np.zeros((4, 4), np.float32))
    cloud = np.zeros(3, [("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    with pytest.raises(ValueError, match="lidar: no camera"):
        fe.represent("lidar", cloud)
    with pytest.raises(ValueError, match="unknown modality"):
        SensorFrontend(spec, options={"radar": ModalityOptions()})
    assert health_kind("lidar_image", cloud) == "pointcloud"
    assert health_kind("rgb8", np.zeros((2, 2, 3), np.uint8)) == "image"
    assert health_kind("hha", np.zeros((2, 2), np.float32)) == "depth"
    assert health_kind("hha", np.zeros((2, 2, 3), np.uint8)) == "other"


def test_a_known_point_lands_on_its_pixel_with_its_range_and_others_are_dropped() -> None:
    """LiDAR (x fwd, y left, z up) -> optical camera frame; one point in view, one behind, one outside, one NaN."""
    T = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    cam = CameraModel.pinhole(32.0, 32.0, 31.5, 31.5, 64, 64)
    fe = SensorFrontend(synthetic_spec().with_input_size(64, 64), cam, {"lidar": T},
                        options={"lidar": ModalityOptions(dilation=0)})
    pts = np.zeros(4, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    pts[0] = (10.0, -1.0, 0.5, 0.6)  # camera (1, -0.5, 10): u = 32*0.1 + 31.5 = 34.7 -> 35, v = 29.9 -> 30
    pts[1] = (-5.0, 0.0, 0.0, 0.9)  # behind the camera
    pts[2] = (1.0, 5.0, 0.0, 0.9)  # in front but far outside the image on the left
    pts[3] = (np.nan, 0.0, 0.0, 0.9)  # no return
    cloud = pointcloud2_to_array(fill_pointcloud2(sensor_msgs.PointCloud2(), pts, sensor_msgs.PointField))
    img = fe.represent("lidar", cloud)
    hits = np.argwhere(img.any(axis=2))
    assert hits.tolist() == [[30, 35]]
    r = np.sqrt(10.0 ** 2 + 1.0 + 0.25)
    expect = [255 - 254 * r / 100, 1 + 254 * 0.6, 1 + 254 * (0.5 + 3) / 6]  # the lidar_image encoding
    assert img[30, 35].tolist() == np.rint(np.float32(expect)).astype(int).tolist()


def test_node_style_payloads_with_header_stamps(frames: dict) -> None:
    """The node buffers objects with .data/.encoding/.header; the event window then ends at the header stamp."""
    from dataclasses import dataclass

    @dataclass
    class Decoded:
        data: np.ndarray
        encoding: str
        header: object

    d = frames["plain"]
    ros = _via_ros(d)
    stamp = d["calib"]["stamp"]
    hdr = sensor_msgs.Image().header
    hdr.stamp.sec, hdr.stamp.nanosec = int(stamp), int(round((stamp - int(stamp)) * 1e9))
    spec = synthetic_spec().with_input_size(SIZE, SIZE)
    fe = SensorFrontend(spec, CameraModel.from_dict(d["calib"]["camera"]),
                        {"lidar": np.asarray(d["calib"]["T_cam_from_lidar"])})
    items = {"rgb": Decoded(ros["rgb"][0], "bgr8", hdr), "depth": Decoded(ros["depth"][0], "32FC1", hdr),
             "event": Decoded(ros["event"][0], "", hdr), "lidar": Decoded(ros["lidar"], "pointcloud2", hdr)}
    x, present, failed = fe.assemble_with_reasons(items)
    assert present.all() and not failed
    np.testing.assert_allclose(x[0, 2], spec.normalize("event", d["event"]), atol=1e-6)
