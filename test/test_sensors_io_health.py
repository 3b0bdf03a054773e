"""Each health check fires on its fault and stays quiet on clean data."""
from __future__ import annotations

import numpy as np
import pytest

from equiseg_ros.sensors.health import HealthConfig, HealthMonitor, estimate_noise_sigma


def scene(h: int = 96, w: int = 128, seed: int = 0, noise: float = 2.0) -> np.ndarray:
    """A textured street-like frame: gradient sky, a darker road, some boxes, plus sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([90 + 0.8 * y, 110 + 0.5 * y, 160 - 0.3 * y], axis=2)
    img[h // 2:] = 70 + 0.2 * x[h // 2:, :, None]
    for _ in range(6):
        y0, x0 = rng.integers(0, h - 20), rng.integers(0, w - 20)
        img[y0:y0 + 20, x0:x0 + 15] = rng.uniform(30, 220, 3)
    img += rng.normal(0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def cloud(n: int, nan: int = 0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = np.zeros(n, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    for k in ("x", "y", "z"):
        c[k] = rng.normal(0, 10, n)
    c["x"][:nan] = np.nan
    return c


def test_clean_streams_stay_quiet() -> None:
    mon = HealthMonitor()
    for k in range(31):  # enough frames for a noise baseline: 10 estimates, one every 3rd frame
        assert mon.check("rgb", "image", scene(seed=k % 3, noise=2.0 + 0.3 * (k % 2))) == (True, "")
        d = np.full((48, 64), 12.0, np.float32) + k
        d[:20] = np.nan  # the sky has no depth: 40 % invalid is normal
        assert mon.check("depth", "depth", d)[0]
        assert mon.check("lidar", "pointcloud", cloud(5000, nan=800, seed=k))[0]
        assert mon.check("event", "events", np.zeros((32, 32, 3), np.uint8))[0]  # no motion: not frozen
    assert mon.baseline("rgb") is not None


def test_frozen_fires_after_n_identical_frames_and_recovers() -> None:
    mon = HealthMonitor(HealthConfig(frozen_frames=4))
    img = scene()
    assert [mon.check("rgb", "image", img)[0] for _ in range(5)] == [True, True, True, False, False]
    assert mon.status("rgb")[1].startswith("frozen: 5 identical")
    assert mon.check("rgb", "image", scene(seed=1)) == (True, "")
    c = cloud(3000)
    assert [mon.check("lidar", "pointcloud", c)[0] for _ in range(4)] == [True, True, True, False]
    ev = np.zeros((16, 16, 3), np.uint8)
    ev[3, 4, 0] = 7  # a hung event driver republishing a non-empty frame
    assert [mon.check("event", "events", ev)[0] for _ in range(4)] == [True, True, True, False]
    off = HealthMonitor(HealthConfig(frozen_frames=0))
    assert all(off.check("rgb", "image", img)[0] for _ in range(10))


@pytest.mark.parametrize("value,needle", [(0, "black"), (3, "black"), (255, "saturated"), (253, "saturated")])
def test_black_and_saturated_camera(value: int, needle: str) -> None:
    mon = HealthMonitor()
    rng = np.random.default_rng(0)
    img = np.clip(value + rng.integers(-3, 4, (96, 128, 3)), 0, 255).astype(np.uint8)
    ok, why = mon.check("rgb", "image", img)
    assert not ok and why.startswith(needle)
    # a dark night frame with headlights is not "black"
    night = (scene() * 0.15).astype(np.uint8)
    night[60:80, 30:100] = 230
    assert mon.check("rgb2", "image", night)[0]
    # 16-bit cameras are judged on their top byte
    assert not mon.check("rgb16", "image", np.full((32, 32), 65535, np.uint16))[0]


def test_noise_estimator_is_close_to_the_true_sigma() -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:200, 0:200].astype(np.float32)
    base = 60 + 0.3 * x + 0.2 * y
    for sigma in (2.0, 5.0, 12.0):
        est = estimate_noise_sigma(base + rng.normal(0, sigma, base.shape), row_stride=1)
        assert est == pytest.approx(sigma, rel=0.1)


def test_camera_far_noisier_than_its_baseline() -> None:
    mon = HealthMonitor(HealthConfig(noise_warmup=5, frozen_frames=0, noise_every=1))
    for k in range(5):
        assert mon.check("rgb", "image", scene(seed=k, noise=2.0))[0]
    base = mon.baseline("rgb")
    assert base is not None and 1.0 < base < 4.0
    assert mon.check("rgb", "image", scene(seed=7, noise=3.0))[0]  # a little noisier is fine
    ok, why = mon.check("rgb", "image", scene(seed=8, noise=20.0))
    assert not ok and why.startswith("noisy")
    assert mon.check("rgb", "image", scene(seed=9, noise=2.0))[0]  # and it recovers
    # a known baseline from the configuration applies from the first frame
    known = HealthMonitor(HealthConfig(noise_baseline={"rgb": 2.0}))
    assert not known.check("rgb", "image", scene(noise=20.0))[0]
    # estimated every 3rd frame by default, the verdict held in between (the noise level changes slowly)
    assert [known.check("rgb", "image", scene(seed=k, noise=2.0))[0] for k in range(4)] == [False, False, True, True]


def test_depth_mostly_invalid() -> None:
    mon = HealthMonitor()
    d = np.full((48, 64), np.nan, np.float32)
    d[:2] = 5.0
    assert mon.check("depth", "depth", d)[1].startswith("depth invalid")
    z = np.zeros((48, 64), np.float32)
    assert not mon.check("depth", "depth", z)[0]
    mm = np.zeros((48, 64), np.uint16)
    mm[:3] = 1200
    assert not mon.check("depth16", "depth", mm)[0]
    mm[:30] = 1200
    assert mon.check("depth16", "depth", mm)[0]


def test_lidar_with_too_few_points() -> None:
    mon = HealthMonitor(HealthConfig(min_points=1000))
    assert mon.check("lidar", "pointcloud", cloud(1200))[0]
    ok, why = mon.check("lidar", "pointcloud", cloud(1500, nan=1000, seed=1))
    assert not ok and why == "too few points: 500 finite < 1000"
    assert not mon.check("lidar", "pointcloud", np.zeros((10, 3), np.float32))[0]  # plain [N, 3] arrays too
    assert mon.check("lidar", "pointcloud", np.ones((2000, 4), np.float32))[0]


def test_disabled_monitor_and_bad_kind() -> None:
    mon = HealthMonitor(HealthConfig(enabled=False))
    assert mon.check("rgb", "image", np.zeros((8, 8, 3), np.uint8)) == (True, "")
    with pytest.raises(ValueError, match="unknown kind"):
        mon.check("rgb", "camera", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="black_fraction"):
        HealthConfig(black_fraction=2.0)
