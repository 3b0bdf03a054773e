"""PointCloud2, CameraInfo and TransformStamped codecs on rclpy messages and rosbags dataclasses."""
from __future__ import annotations

import numpy as np
import pytest

from equiseg_ros.ros.codecs import (
    DecodeError,
    array_to_pointcloud2_fields,
    camera_info_to_camera,
    fill_pointcloud2,
    pointcloud2_to_array,
    xyz_finite,
)
from equiseg_ros.sensors.geometry import project_points
from equiseg_ros.sensors.transforms_tf import (
    extrinsic_from_param,
    invert_transform,
    lookup_extrinsic,
    matrix_to_translation_quaternion,
    transform_stamped_to_matrix,
)

sensor_msgs = pytest.importorskip("sensor_msgs.msg")
geometry_msgs = pytest.importorskip("geometry_msgs.msg")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types


def _rb_cloud() -> object:
    hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=5), frame_id="lidar")
    return T["sensor_msgs/msg/PointCloud2"](header=hdr, height=0, width=0, fields=[], is_bigendian=False,
                                            point_step=0, row_step=0, data=np.zeros(0, np.uint8), is_dense=True)


def _points(n: int = 50, seed: int = 0) -> np.ndarray:
    """xyz float32, intensity float32 at a padded offset, ring uint16, a count-3 normal field; 40-byte points."""
    dt = np.dtype({"names": ["x", "y", "z", "intensity", "ring", "normal"],
                   "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", ("<f4", (3,))],
                   "offsets": [0, 4, 8, 16, 20, 24], "itemsize": 40})
    rng = np.random.default_rng(seed)
    p = np.zeros(n, dt)
    for k in ("x", "y", "z", "intensity"):
        p[k] = rng.normal(size=n)
    p["ring"] = rng.integers(0, 64, n)
    p["normal"] = rng.normal(size=(n, 3))
    p["x"][3] = np.nan
    p["z"][7] = np.inf
    return p


# A driver-style layout: x y z float32, 4 padding bytes, intensity float32, ring uint16, 2 padding bytes,
# normal float32 count 3, 4 padding bytes at the end of each 40-byte point.
LAYOUT = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 16, 7, 1), ("ring", 20, 4, 1),
          ("normal", 24, 7, 3)]
PADDING = [12, 13, 14, 15, 22, 23, 36, 37, 38, 39]


def _family(family: str):
    if family == "rclpy":
        return sensor_msgs.PointCloud2, sensor_msgs.PointField
    return _rb_cloud, T["sensor_msgs/msg/PointField"]


def _message(family: str, layout, data: np.ndarray, h: int, w: int, point_step: int, row_step: int,
             big: bool = False):
    """A PointCloud2 of ``family`` built field by field, as a driver would (not through the encoder)."""
    cloud_cls, pf = _family(family)
    msg = cloud_cls()
    msg.fields = [pf(name=n, offset=o, datatype=d, count=c) for n, o, d, c in layout]
    msg.height, msg.width, msg.point_step, msg.row_step = h, w, point_step, row_step
    msg.is_bigendian, msg.is_dense = big, False
    msg.data = data.tobytes() if family == "rclpy" else data.copy()
    return msg


def _signature(msg) -> tuple:
    return ([(f.name, f.offset, f.datatype, f.count) for f in msg.fields],
            (msg.height, msg.width, msg.point_step, msg.row_step, bool(msg.is_bigendian)))


def _driver_bytes(n: int, big: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw bytes of ``n`` LAYOUT points with recognisable padding (0xA5), and the values written into them."""
    o = ">" if big else "<"
    dt = np.dtype({"names": ["x", "y", "z", "intensity", "ring", "normal"],
                   "formats": [o + "f4"] * 4 + [o + "u2", (o + "f4", (3,))],
                   "offsets": [0, 4, 8, 16, 20, 24], "itemsize": 40})
    raw = np.full(n * 40, 0xA5, np.uint8)
    vals = raw.view(dt)
    rng = np.random.default_rng(seed)
    for k in ("x", "y", "z", "intensity"):
        vals[k] = rng.normal(size=n)
    vals["ring"] = rng.integers(0, 64, n)
    vals["normal"] = rng.normal(size=(n, 3))
    return raw, vals.astype(vals.dtype.newbyteorder("="))


@pytest.mark.parametrize("family", ["rclpy", "rosbags"])
def test_decode_encode_round_trip_keeps_pointfields_and_bytes(family: str) -> None:
    raw, vals = _driver_bytes(30)
    msg = _message(family, LAYOUT, raw, 1, 30, 40, 1200)
    out = pointcloud2_to_array(msg, "/points")
    assert out["normal"].shape == (30, 3)  # count 3 -> one sub-array field, not normal_0..normal_2
    np.testing.assert_array_equal(out["normal"], vals["normal"])
    np.testing.assert_array_equal(out["ring"], vals["ring"])
    cloud_cls, pf = _family(family)
    back = fill_pointcloud2(cloud_cls(), out, pf)
    assert _signature(back) == _signature(msg)
    assert bytes(back.data) == raw.tobytes()  # padding bytes too
    assert back.is_dense is True
    # sensor_msgs_py's naming on request: the same bytes as scalar fields normal_0..normal_2
    split = pointcloud2_to_array(msg, "/points", split_counts=True)
    assert [n for n in split.dtype.names if n.startswith("normal")] == ["normal_0", "normal_1", "normal_2"]
    for j in range(3):
        np.testing.assert_array_equal(split[f"normal_{j}"], vals["normal"][:, j])


@pytest.mark.parametrize("family", ["rclpy", "rosbags"])
def test_count_fields_of_every_width_round_trip(family: str) -> None:
    """uint8 count 4 (rgba), float64 count 2, int16 count 3 and a nameless field, packed without padding."""
    layout = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgba", 12, 2, 4), ("uv", 16, 8, 2),
              ("q", 32, 3, 3), ("", 38, 1, 1)]
    n = 7
    raw = np.random.default_rng(1).integers(0, 256, n * 39, dtype=np.uint8)
    for k in range(n):  # finite floats where floats are
        raw[k * 39: k * 39 + 12] = np.arange(3, dtype="<f4").view(np.uint8)
        raw[k * 39 + 16: k * 39 + 32] = np.array([k, -k], "<f8").view(np.uint8)
    msg = _message(family, layout, raw, 1, n, 39, n * 39)
    out = pointcloud2_to_array(msg, "/points")
    assert out["rgba"].shape == (n, 4) and out["uv"].shape == (n, 2) and out["q"].shape == (n, 3)
    np.testing.assert_array_equal(out["uv"][:, 1], -np.arange(n))
    assert "unnamed_field_6" in out.dtype.names
    back = array_to_pointcloud2_fields(out)
    got = [(d["name"], d["offset"], d["datatype"], d["count"]) for d in back["fields"]]
    assert got == [(name or "unnamed_field_6", o, d, c) for name, o, d, c in layout]
    assert bytes(back["data"]) == raw.tobytes() and back["point_step"] == 39 and back["is_dense"] is True


@pytest.mark.parametrize("family", ["rclpy", "rosbags"])
def test_organized_round_trip_with_row_padding_keeps_height_width_and_point_padding(family: str) -> None:
    H, W, pad = 3, 5, 12
    raw, vals = _driver_bytes(H * W, seed=2)
    rows = np.concatenate([raw.reshape(H, W * 40), np.full((H, pad), 0xEE, np.uint8)], axis=1).reshape(-1)
    msg = _message(family, LAYOUT, rows, H, W, 40, W * 40 + pad)
    org = pointcloud2_to_array(msg, "/os/points", organized=True)
    assert org.shape == (H, W)  # (height, width): not sensor_msgs_py's (width, height)
    np.testing.assert_array_equal(org["intensity"], vals["intensity"].reshape(H, W))
    np.testing.assert_array_equal(org["normal"][2, 4], vals["normal"][2 * W + 4])
    cloud_cls, pf = _family(family)
    back = fill_pointcloud2(cloud_cls(), org, pf)
    assert _signature(back)[0] == _signature(msg)[0]
    assert (back.height, back.width, back.point_step, back.row_step) == (H, W, 40, W * 40)  # row padding dropped
    assert bytes(back.data) == raw.tobytes()  # the padding inside each point survives the copy


def test_organized_order_is_height_width_like_an_image() -> None:
    H, W = 2, 3
    grid = np.zeros((H, W), [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("idx", "<u4")])
    grid["idx"] = np.arange(H * W).reshape(H, W)
    msg = fill_pointcloud2(sensor_msgs.PointCloud2(), grid, sensor_msgs.PointField)
    assert (msg.height, msg.width, msg.row_step) == (H, W, W * 16)
    # row-major in the message: point r*W + c is row r, column c
    assert np.frombuffer(bytes(msg.data), "<u4").reshape(-1, 4)[:, 3].tolist() == list(range(H * W))
    org = pointcloud2_to_array(msg, organized=True)
    assert org.shape == (H, W) and org["idx"][1, 0] == W


@pytest.mark.parametrize("family", ["rclpy", "rosbags"])
def test_big_endian_cloud_decodes_to_native_and_keeps_padding(family: str) -> None:
    raw, vals = _driver_bytes(11, big=True, seed=4)
    msg = _message(family, LAYOUT, raw, 1, 11, 40, 440, big=True)
    out = pointcloud2_to_array(msg, "/points")
    assert out.dtype["normal"].base.isnative and out.dtype["ring"].isnative
    for k in ("x", "intensity", "ring", "normal"):
        np.testing.assert_array_equal(out[k], vals[k])
    assert (out.view(np.uint8).reshape(11, 40)[:, PADDING] == 0xA5).all()
    cloud_cls, pf = _family(family)
    back = fill_pointcloud2(cloud_cls(), out, pf)
    assert _signature(back)[0] == _signature(msg)[0] and back.is_bigendian is False
    np.testing.assert_array_equal(pointcloud2_to_array(back)["normal"], vals["normal"])
    # a big-endian array is written big-endian: the same value bytes as the driver's
    be = out.astype(out.dtype.newbyteorder(">"))
    f = array_to_pointcloud2_fields(be)
    assert f["is_bigendian"] is True
    fields_only = [b for b in range(40) if b not in PADDING]
    np.testing.assert_array_equal(f["data"].reshape(11, 40)[:, fields_only], raw.reshape(11, 40)[:, fields_only])


def test_encoder_rejects_mixed_byte_orders_and_3d_arrays() -> None:
    mixed = np.zeros(2, [("x", ">f4"), ("y", "<f4"), ("z", "<f4")])
    with pytest.raises(DecodeError, match="mix big- and little-endian"):
        array_to_pointcloud2_fields(mixed)
    with pytest.raises(DecodeError, match="shape"):
        array_to_pointcloud2_fields(np.zeros((2, 2, 2), [("x", "<f4")]))


@pytest.mark.parametrize("family", ["rclpy", "rosbags"])
@pytest.mark.parametrize("field,index,value,dense", [
    (None, None, None, True),
    ("x", 3, np.nan, False),
    ("intensity", 5, np.nan, False),  # not x/y/z: sensor_msgs_py's skip_nans must still see it
    ("normal", (6, 1), np.inf, False),
    ("ring", 2, 7, True),
])
def test_is_dense_looks_at_every_float_field(family: str, field, index, value, dense: bool) -> None:
    _, vals = _driver_bytes(10, seed=5)
    if field is not None:
        vals[field][index] = value
    cloud_cls, pf = _family(family)
    msg = fill_pointcloud2(cloud_cls(), vals, pf)
    assert msg.is_dense is dense
    out = pointcloud2_to_array(msg, "/points")
    floats = np.concatenate([out[n].reshape(10, -1) for n in ("x", "y", "z", "intensity", "normal")], axis=1)
    assert dense == bool(np.isfinite(floats).all())


@pytest.mark.parametrize("family", ["rclpy", "rosbags"])
def test_cloud_without_xyz_round_trips_and_is_dense_from_its_floats(family: str) -> None:
    ev = np.zeros(6, [("x", "<u2"), ("y", "<u2"), ("t", "<f8"), ("polarity", "i1")])
    ev["x"], ev["y"], ev["t"], ev["polarity"] = np.arange(6), 5 - np.arange(6), np.linspace(0, 1, 6), [1, -1] * 3
    cloud_cls, pf = _family(family)
    msg = fill_pointcloud2(cloud_cls(), ev, pf)
    assert msg.is_dense is True
    out = pointcloud2_to_array(msg, "/events", require=("x", "y", "t", "polarity"))
    assert out.dtype == ev.dtype and np.array_equal(out, ev)
    assert _signature(fill_pointcloud2(cloud_cls(), out, pf)) == _signature(msg)
    ev["t"][4] = np.nan
    assert fill_pointcloud2(cloud_cls(), ev, pf).is_dense is False
    ints = np.zeros(3, [("x", "<u2"), ("y", "<u2")])
    assert fill_pointcloud2(cloud_cls(), ints, pf).is_dense is True  # nothing can be NaN
    assert array_to_pointcloud2_fields(ev[:0])["is_dense"] is True


@pytest.mark.parametrize("family", ["rclpy", "rosbags"])
def test_pointcloud_encode_decode_with_padding_count_and_nans(family: str) -> None:
    pts = _points()
    cloud_cls, pf = _family(family)
    msg = fill_pointcloud2(cloud_cls(), pts, pf)
    assert msg.point_step == 40 and msg.width == 50 and msg.height == 1 and msg.is_dense is False
    normal = [f for f in msg.fields if f.name == "normal"][0]
    assert normal.count == 3 and normal.offset == 24 and normal.datatype == 7
    out = pointcloud2_to_array(msg, "/points")
    assert out.dtype.names == pts.dtype.names
    for k in pts.dtype.names:
        np.testing.assert_array_equal(out[k], pts[k])
    xyz, keep = xyz_finite(out, return_mask=True)
    assert xyz.shape == (48, 3) and xyz.dtype == np.float32 and not keep[3] and not keep[7]
    np.testing.assert_array_equal(xyz[:, 0], pts["x"][keep])


def test_pointcloud_zero_copy_and_cdr_round_trip() -> None:
    pts = _points(20)
    rb = fill_pointcloud2(_rb_cloud(), pts, T["sensor_msgs/msg/PointField"])
    out = pointcloud2_to_array(rb, "/points")
    assert np.shares_memory(out, rb.data)
    rc = deserialize_message(bytes(TS.serialize_cdr(rb, "sensor_msgs/msg/PointCloud2")), sensor_msgs.PointCloud2)
    out2 = pointcloud2_to_array(rc, "/points")
    np.testing.assert_array_equal(out2["ring"], pts["ring"])
    assert _signature(fill_pointcloud2(sensor_msgs.PointCloud2(), out2, sensor_msgs.PointField)) == _signature(rb)
    back = TS.deserialize_cdr(serialize_message(rc), "sensor_msgs/msg/PointCloud2")
    np.testing.assert_array_equal(pointcloud2_to_array(back)["normal"][:, 2], pts["normal"][:, 2])


def test_organized_cloud_with_row_padding_and_big_endian() -> None:
    H, W = 4, 5
    be = np.dtype({"names": ["x", "y", "z", "intensity"], "formats": [">f4", ">f4", ">f4", ">u2"],
                   "offsets": [0, 4, 8, 12], "itemsize": 16})
    grid = np.zeros((H, W), be)
    rng = np.random.default_rng(3)
    for k in ("x", "y", "z"):
        grid[k] = rng.normal(size=(H, W))
    grid["intensity"] = np.arange(H * W).reshape(H, W) * 1000
    f = array_to_pointcloud2_fields(grid)
    assert f["is_bigendian"] and f["height"] == H and f["width"] == W
    pad = 8
    rows = f["data"].reshape(H, W * 16)
    data = np.concatenate([rows, np.full((H, pad), 0xEE, np.uint8)], axis=1).reshape(-1)
    msg = sensor_msgs.PointCloud2()
    msg.height, msg.width, msg.point_step, msg.row_step = H, W, 16, W * 16 + pad
    msg.is_bigendian = True
    msg.fields = [sensor_msgs.PointField(**d) for d in f["fields"]]
    msg.data = data.tobytes()
    org = pointcloud2_to_array(msg, "/os/points", organized=True)
    assert org.shape == (H, W) and org.dtype["x"].isnative
    np.testing.assert_array_equal(org["intensity"], grid["intensity"])
    flat = pointcloud2_to_array(msg, "/os/points")
    assert flat.shape == (H * W,)
    np.testing.assert_array_equal(flat["z"], grid["z"].reshape(-1).astype("<f4"))


def test_event_cloud_requires_its_own_fields() -> None:
    ev = np.zeros(4, [("x", "<u2"), ("y", "<u2"), ("t", "<f8"), ("polarity", "u1")])
    msg = fill_pointcloud2(sensor_msgs.PointCloud2(), ev, sensor_msgs.PointField)
    out = pointcloud2_to_array(msg, "/events", require=("x", "y", "t", "polarity"))
    assert out.shape == (4,)
    with pytest.raises(DecodeError, match="missing field"):
        pointcloud2_to_array(msg, "/events")  # the default asks for x, y, z


class _Loose:
    pass


def _loose_cloud() -> _Loose:
    m = _Loose()
    f = array_to_pointcloud2_fields(np.zeros(6, [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]))
    for k, v in f.items():
        setattr(m, k, v)
    m.fields = [sensor_msgs.PointField(**d) for d in f["fields"]]
    return m


def _set_field(m: _Loose, name: str, **kw) -> None:
    m.fields = [sensor_msgs.PointField(name=f.name, offset=kw.get("offset", f.offset),
                                       datatype=kw.get("datatype", f.datatype), count=f.count)
                if f.name == name else f for f in m.fields]


@pytest.mark.parametrize("mutate,needle", [
    (lambda m: setattr(m, "fields", [f for f in m.fields if f.name != "z"]), "missing field"),
    (lambda m: setattr(m, "point_step", 8), "point_step 8 too small"),
    (lambda m: setattr(m, "point_step", 0), "point_step 0"),
    (lambda m: _set_field(m, "y", datatype=42), "unknown PointField datatype 42"),
    (lambda m: _set_field(m, "y", offset=10), "too small"),
    (lambda m: setattr(m, "row_step", 5), "row_step"),
    (lambda m: setattr(m, "data", m.data[:-4]), "len(data)"),
    (lambda m: setattr(m, "fields", []), "no fields"),
    (lambda m: setattr(m, "fields", list(m.fields) + [m.fields[0]]), "duplicate"),
])
def test_malformed_clouds_raise_one_error_with_topic_and_reason(mutate, needle: str) -> None:
    m = _loose_cloud()
    mutate(m)
    with pytest.raises(DecodeError) as err:
        pointcloud2_to_array(m, "/velodyne_points")
    assert err.value.topic == "/velodyne_points" and needle in err.value.reason


def _camera_info(family: str, p_zero: bool = False):
    k = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    p = [0.0] * 12 if p_zero else [480.0, 0.0, 330.0, 0.0, 0.0, 490.0, 250.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if family == "rclpy":
        m = sensor_msgs.CameraInfo(height=480, width=640, k=k, p=p)
    else:
        ci = T["sensor_msgs/msg/CameraInfo"]
        m = ci(header=_rb_cloud().header, height=480, width=640, distortion_model="plumb_bob",
               d=np.zeros(5), k=np.array(k), r=np.eye(3).reshape(-1), p=np.array(p), binning_x=0, binning_y=0,
               roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                         do_rectify=False))
    return m


@pytest.mark.parametrize("family", ["rclpy", "rosbags"])
def test_camera_info_to_camera_projects_with_p(family: str) -> None:
    cam = camera_info_to_camera(_camera_info(family), "/camera_info")
    assert (cam.width, cam.height) == (640, 480)
    # a point 10 m ahead, 1 m right, 0.5 m down lands where P says: u = 480*0.1+330 = 378, v = 490*0.05+250 = 274.5
    u, v, z, idx = project_points(np.array([[1.0, 0.5, 10.0], [0.0, 0.0, -5.0]]), np.eye(4), cam)
    assert (u.tolist(), v.tolist(), idx.tolist()) == ([378], [275], [0]) and z[0] == pytest.approx(10.0)
    cam_k = camera_info_to_camera(_camera_info(family, p_zero=True))
    assert cam_k.P is None  # an all-zero P (uncalibrated driver) falls back to K


def test_camera_info_rejects_zero_k() -> None:
    m = sensor_msgs.CameraInfo(height=480, width=640)
    with pytest.raises(DecodeError, match="fx, fy > 0") as err:
        camera_info_to_camera(m, "/cam/info")
    assert err.value.topic == "/cam/info"


def _quat_about_z(deg: float) -> list[float]:
    a = np.deg2rad(deg) / 2
    return [0.0, 0.0, float(np.sin(a)), float(np.cos(a))]


@pytest.mark.parametrize("family", ["rclpy", "rosbags"])
def test_transform_stamped_to_matrix(family: str) -> None:
    t, q = [1.0, 2.0, 3.0], _quat_about_z(90)
    if family == "rclpy":
        msg = geometry_msgs.TransformStamped()
        msg.transform.translation = geometry_msgs.Vector3(x=t[0], y=t[1], z=t[2])
        msg.transform.rotation = geometry_msgs.Quaternion(x=q[0], y=q[1], z=q[2], w=q[3])
    else:
        tr = T["geometry_msgs/msg/Transform"](translation=T["geometry_msgs/msg/Vector3"](x=t[0], y=t[1], z=t[2]),
                                              rotation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2],
                                                                                         w=q[3]))
        msg = T["geometry_msgs/msg/TransformStamped"](header=_rb_cloud().header, child_frame_id="lidar",
                                                      transform=tr)
    M = transform_stamped_to_matrix(msg)
    # rotation of +90 deg about z maps x -> y; then the translation is added
    np.testing.assert_allclose(M @ [1.0, 0.0, 0.0, 1.0], [1.0, 3.0, 3.0, 1.0], atol=1e-12)
    t2, q2 = matrix_to_translation_quaternion(M)
    np.testing.assert_allclose(t2, t)
    np.testing.assert_allclose(q2, q, atol=1e-12)
    np.testing.assert_allclose(invert_transform(M) @ M, np.eye(4), atol=1e-12)

    class Buffer:  # tf2_ros.Buffer's lookup_transform(target, source, time) shape, duck-typed
        def lookup_transform(self, target, source, time=None, timeout=None):
            assert (target, source) == ("camera", "lidar")
            return msg

    np.testing.assert_allclose(lookup_extrinsic(Buffer(), "camera", "lidar"), M)


def test_quaternion_round_trip_for_arbitrary_rotations() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q *= np.sign(q[3])
        M = extrinsic_from_param(list(rng.normal(size=3)) + list(q))
        np.testing.assert_allclose(matrix_to_translation_quaternion(M)[1], q, atol=1e-9)


def test_extrinsic_from_param_forms_and_errors() -> None:
    M = extrinsic_from_param({"translation": [1, 2, 3], "rotation": _quat_about_z(90)})
    np.testing.assert_allclose(extrinsic_from_param(M.reshape(-1).tolist()), M)
    np.testing.assert_allclose(extrinsic_from_param(M.tolist()), M)
    np.testing.assert_allclose(extrinsic_from_param({"matrix": M.tolist()}), M)
    with pytest.raises(ValueError, match="lidar_to_camera: expected 16"):
        extrinsic_from_param([1, 2, 3], "lidar_to_camera")
    bad = M.copy()
    bad[3] = [0, 0, 1, 1]
    with pytest.raises(ValueError, match="last row"):
        extrinsic_from_param(bad)
    bad = M.copy()
    bad[:3, :3] *= 2
    with pytest.raises(ValueError, match="orthonormal"):
        extrinsic_from_param(bad)


def test_decode_any_dispatches_on_fields() -> None:
    import cv2

    from equiseg_ros.ros.codecs import decode_any, fill_image

    pts = _points(9)
    arr, enc = decode_any(fill_pointcloud2(_rb_cloud(), pts, T["sensor_msgs/msg/PointField"]), "/points")
    assert enc == "pointcloud2" and arr.shape == (9,)
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    arr, enc = decode_any(fill_image(sensor_msgs.Image(), img, "32FC1"), "/depth")
    assert enc == "32FC1" and np.array_equal(arr, img)
    comp = sensor_msgs.CompressedImage()
    comp.format = "png"
    comp.data = cv2.imencode(".png", np.full((4, 4, 3), 7, np.uint8))[1].tobytes()
    arr, enc = decode_any(comp, "/cam/compressed")
    assert enc == "rgb8" and arr.shape == (4, 4, 3)
    with pytest.raises(DecodeError, match="missing field"):
        decode_any(fill_pointcloud2(_rb_cloud(), pts, T["sensor_msgs/msg/PointField"]), "/ev", require=("t",))
