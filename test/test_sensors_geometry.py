"""The numpy geometric core and the sensor representations: known points land on known pixels with known values."""
from __future__ import annotations

import numpy as np
import pytest

from equiseg_ros.sensors.depth import depth_from_millimetres, depth_to_image
from equiseg_ros.sensors.events import event_frame_from_images, events_from_images, events_to_frame
from equiseg_ros.sensors.geometry import (
    CameraModel,
    as_matrix,
    dilate_nearest,
    project_points,
    transform_from_quaternion,
    zbuffer_nearest,
)
from equiseg_ros.sensors.lidar import decode_rih, encode_rih, lidar_to_image

CAM = CameraModel.pinhole(50.0, 40.0, 31.5, 23.5, 64, 48)
# LiDAR frame x fwd, y left, z up -> optical x right, y down, z fwd, LiDAR 0.5 m above the camera
T_CAM_LIDAR = np.array([[0, -1, 0, 0], [0, 0, -1, -0.5], [1, 0, 0, 0], [0, 0, 0, 1]], np.float64)


def test_camera_info_and_projection_matrix():
    k = [100, 0, 32, 0, 90, 24, 0, 0, 1]
    cam = CameraModel.from_camera_info(k, [0.0] * 12, 64, 48)
    assert cam.P is None and np.allclose(cam.projection_matrix()[:, :3], np.reshape(k, (3, 3)))
    p = [100, 0, 30, -10, 0, 90, 20, 0, 0, 0, 1, 0]
    cam = CameraModel.from_camera_info(k, p, 64, 48)
    assert np.allclose(cam.projection_matrix(), np.reshape(p, (3, 4)))
    with pytest.raises(ValueError, match="CameraInfo.k"):
        CameraModel.from_camera_info(k[:8], None, 64, 48)


def test_quaternion_transform_matches_rotation():
    # 90 degrees about z: x -> y
    T = transform_from_quaternion([1, 2, 3], [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    assert np.allclose(T[:3, :3] @ [1, 0, 0], [0, 1, 0])
    assert np.allclose(T[:3, 3], [1, 2, 3])
    assert np.allclose(as_matrix(([1, 2, 3], [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)])), T)
    with pytest.raises(ValueError, match="4x4"):
        as_matrix(np.eye(3))


def test_known_point_lands_on_known_pixel():
    # LiDAR point 10 m ahead, 1 m left, at LiDAR height -> camera (-1, -0.5, 10) -> u = 50*(-1)/10 + 31.5
    pts = np.array([[10.0, 1.0, 0.0], [10.0, -2.0, 0.0], [-5.0, 0.0, 0.0], [10.0, 100.0, 0.0]])
    u, v, d, idx = project_points(pts, T_CAM_LIDAR, CAM)
    assert list(idx) == [0, 1]  # behind the camera and outside the image are dropped
    assert u[0] == int(np.floor(50 * -1 / 10 + 31.5 + 0.5)) and v[0] == int(np.floor(40 * -0.5 / 10 + 23.5 + 0.5))
    assert np.allclose(d, [10.0, 10.0])


def test_zbuffer_keeps_nearest_and_is_vectorised():
    u = np.array([3, 3, 3, 5])
    v = np.array([2, 2, 2, 1])
    depth = np.array([5.0, 2.0, 9.0, 1.0])
    img, hit = zbuffer_nearest(u, v, depth, np.array([[50.0], [20.0], [90.0], [10.0]]), 4, 8)
    assert img[2, 3, 0] == 20.0 and img[1, 5, 0] == 10.0 and hit.sum() == 2


def test_dilation_grows_nearest_point():
    img = np.zeros((5, 5, 1), np.float32)
    depth = np.zeros((5, 5), np.float32)
    hit = np.zeros((5, 5), bool)
    img[2, 2], depth[2, 2], hit[2, 2] = 7, 3.0, True
    img[2, 3], depth[2, 3], hit[2, 3] = 9, 1.0, True
    out, _, h = dilate_nearest(img, depth, hit, 3)
    assert h[1:4, 1:5].all() and not h[0].any()
    assert out[2, 2, 0] == 9  # the nearer neighbour wins the overlap
    assert out[1, 1, 0] == 7


@pytest.mark.parametrize("encoding", ["lidar_image", "lidar_rih", "radar_rih"])
def test_lidar_encoding_known_values(encoding):
    intensity = 0.5 if encoding == "lidar_image" else 100.0
    pts = np.array([[10.0, 1.0, 0.0, intensity]])
    img = lidar_to_image(pts, T_CAM_LIDAR, CAM, encoding)
    u, v = int(np.floor(-5 + 31.5 + 0.5)), int(np.floor(-2 + 23.5 + 0.5))
    assert np.count_nonzero(img.any(-1)) == 1 and img[v, u, 0] > 0
    r, i, h, hit = decode_rih(img, encoding)
    assert hit[v, u]
    assert abs(r[v, u] - np.sqrt(101.0)) < 0.5
    assert abs(i[v, u] - intensity) < intensity * 0.02
    if encoding == "radar_rih":
        assert img[v, u, 2] == 0
    else:
        assert abs(h[v, u] - 0.0) < 0.05
    assert np.array_equal(encode_rih(np.array([np.sqrt(101.0)]), np.array([intensity]), np.array([0.0]),
                                     encoding)[0], img[v, u])


def test_lidar_dilation_and_ranges():
    pts = np.array([[10.0, 1.0, 0.0, 0.5], [0.5, 0.0, -0.4, 0.5]])
    img = lidar_to_image(pts, T_CAM_LIDAR, CAM, "lidar_image", dilation=2, min_range=1.0)
    assert np.count_nonzero(img[..., 0]) == 4  # one point, 2x2 block; the 0.5 m point dropped
    with pytest.raises(ValueError, match="encoding"):
        lidar_to_image(pts, T_CAM_LIDAR, CAM, "bogus")


def test_depth_representations():
    d = np.full((48, 64), 10.0, np.float32)
    d[:, :10] = np.nan
    d8 = depth_to_image(d, "depth8")
    assert d8.shape == (48, 64, 3) and (d8[:, :10] == 0).all() and (d8[:, 10:] == 145).all()
    hha = depth_to_image(d, "hha", CAM, camera_height=1.5)
    assert (hha[:, :10] == 0).all()
    assert abs(int(hha[24, 40, 0]) - round(1 + 254 / 10)) <= 1  # disparity 1/10 m
    assert abs(int(hha[24, 40, 2]) - 128) <= 2  # a fronto-parallel wall is vertical: 90 degrees from up
    # ground plane 1.5 m below the camera: the angle channel says "horizontal", height ~0 m
    v = np.arange(48, dtype=np.float32)[:, None] - CAM.K[1, 2]
    with np.errstate(divide="ignore"):
        ground = np.where(v > 2, 1.5 * CAM.K[1, 1] / np.maximum(v, 1e-6), np.nan) * np.ones((1, 64), np.float32)
    g = depth_to_image(ground, "hha", CAM, camera_height=1.5)
    assert g[40, 32, 2] <= 3 and abs(int(g[40, 32, 1]) - round(1 + 254 * 1 / 21)) <= 1
    mm = np.array([[0, 1500]], np.uint16)
    m = depth_from_millimetres(mm)
    assert np.isnan(m[0, 0]) and m[0, 1] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="representation"):
        depth_to_image(d, "bogus")


def test_event_frame_counts_and_window():
    x = np.array([1, 1, 1, 2, 2, 0])
    y = np.array([0, 0, 0, 1, 1, 0])
    t = np.array([0.99, 0.995, 1.0, 0.98, 0.999, 0.5])
    p = np.array([1, 1, 0, -1, 0, 1])
    f = events_to_frame(x, y, t, p, 2, 3, t_end=1.0, window_s=0.03)
    assert f[0, 1].tolist() == [2, 1, 0] and f[1, 2].tolist() == [0, 2, 0] and f[0, 0].sum() == 0


def test_events_from_images_reproduce_the_frame():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 20)).astype(np.uint8)
    b = rng.integers(0, 256, (16, 20)).astype(np.uint8)
    frame = event_frame_from_images(a, b, 0.2)
    ev = events_from_images(a, b, 0.2, 1.0, 1.05, rng)
    assert np.array_equal(events_to_frame(ev[:, 0], ev[:, 1], ev[:, 2], ev[:, 3], 16, 20, 1.05, 0.05), frame)
    brighter = event_frame_from_images(a, np.clip(a.astype(int) * 2 + 10, 0, 255), 0.2)
    assert brighter[..., 1].sum() == 0 and brighter[..., 0].sum() > 0
