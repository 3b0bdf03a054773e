"""Synthetic multimodal driving scenes in the exact DeLiVER layout, plus the raw sensor data for the vehicle path.

``python -m equiseg_ros.data.synthetic --out DIR --frames N --size 256 --seed 0 [--splits train:0.8,val:0.2]``

Each scene is a procedural street (``_scene.py``) seen by a pinhole camera (90 degree field of view, 1.5 m high) and a
spinning LiDAR (1.9 m high, 0.2 m behind the camera, 96 beams from -30 to +10 degrees), both ray-cast against the
same boxes. Per frame the generator writes (``<c>`` condition, ``<s>`` split, ``<scene>``, ``<f>`` 6-digit frame):

- ``img/<c>/<s>/<scene>/<f>_rgb_front.png``       RGB, lit and degraded by the condition (3 channels)
- ``hha/.../<f>_depth_front.png``                 HHA of the metric depth (``sensors.depth``; the "depth" input)
- ``depth/.../<f>_depth_front.png``               depth8, 1 channel (DeLiVER's ground-truth depth folder)
- ``event/.../<f>_event_front.png``               event frame (``sensors.events``; half size for ``eventlowres``)
- ``lidar/.../<f>_lidar_front.png``               LiDAR image (``sensors.lidar`` "lidar_image", dilation 2)
- ``semantic/.../<f>_semantic_front.png``         label, RGBA, channel 0 = class id + 1 (0 = unlabeled)
- ``raw/<c>/<s>/<scene>/<f>_depth.npy``           float32 metres (camera z), NaN where nothing is hit (sky)
- ``raw/.../<f>_lidar.npy``                       float32 [N, 4] x, y, z, intensity in the LiDAR frame
                                                  (x forward, y left, z up); ``_lidar_label.npy`` uint8 [N] classes
- ``raw/.../<f>_events.npy``                      float64 [N, 4] x, y, t (s), p (1/0) over the 30 ms before the frame
- ``raw/.../<f>_calib.json``                      camera K/size, T_cam_from_lidar (4x4), stamp, event window/size
- ``manifest.json``                               generator arguments, classes used, frame list

Conditions degrade the modalities as in reality: ``night`` makes RGB dark and noisy (headlights only) and floods the
event camera with noise, depth and LiDAR untouched; ``fog`` blends RGB to the fog colour with distance and drops far
LiDAR returns; ``rain`` darkens, adds streaks and LiDAR dropout; ``cloud`` flattens the light; ``sun`` is the clean
case. Corner cases (about a quarter of the scenes; in the scene folder name, as filtered by substring):
``overexposure``, ``underexposure``, ``motionblur`` (RGB), ``lidarjitter`` (5-15 cm point noise), ``eventlowres``
(event image at half resolution). Complementarity by design: road lines differ from the road only in colour (same
LiDAR reflectance, same geometry); a third of the vehicles are building-grey (separable only by geometry); terrain
and vegetation share their green (flat vs raised); night defeats RGB.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from equiseg_ros.data import _scene as S
from equiseg_ros.data._io import read_png, write_png
from equiseg_ros.data._types import FrameRecord
from equiseg_ros.data.deliver import CONDITIONS, CORNER_CASES, decode_label, encode_label
from equiseg_ros.sensors.depth import depth8, depth_to_image
from equiseg_ros.sensors.events import events_to_frame
from equiseg_ros.sensors.geometry import CameraModel
from equiseg_ros.sensors.lidar import lidar_to_image

CAMERA_HEIGHT = 1.5
LIDAR_OFFSET = (0.0, 0.4, -0.2)  # LiDAR position relative to the camera in the world frame (X, Y up, Z fwd)
LIDAR_BEAMS, LIDAR_ELEV = 96, (-30.0, 10.0)
LIDAR_AZ, LIDAR_AZ_STEP = 60.0, 0.35
LIDAR_DILATION = 2
EVENT_DT = 0.03  # the event window before each frame's stamp (= the MUSES 30 ms window)
EVENT_THRESHOLD = 0.1  # nominal contrast threshold C: log-irradiance change per event
EVENT_THRESHOLD_SIGMA = 0.1  # per-pixel threshold mismatch (relative), fixed for the sensor
EVENT_LOG_EPS = 2e-3  # photoreceptor dark level in the log (radiance units 0..1): darkness compresses contrast
EVENT_REFRACTORY_S = 1e-3  # refractory period: at most window / refractory events per pixel and window
EVENT_BA_HZ = {"night": 5.0}  # background activity per pixel (shot / leak noise; far more in the dark) ...
EVENT_BA_HZ_DEFAULT = 1.0  # ... and by day
EVENT_HOT_FRACTION, EVENT_HOT_HZ = 1e-3, 200.0  # hot pixels of the sensor and their rate
FRAMES_PER_SCENE = 4

# Optical camera frame (x right, y down, z fwd) -> world (X right, Y up, Z fwd)
R_WORLD_FROM_CAM = np.diag([1.0, -1.0, 1.0])
# LiDAR frame (x fwd, y left, z up) -> world
R_WORLD_FROM_LIDAR = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def camera_for(size: int) -> CameraModel:
    f = size / 2.0
    return CameraModel.pinhole(f, f, (size - 1) / 2.0, (size - 1) / 2.0, size, size)


def t_cam_from_lidar() -> np.ndarray:
    T_world_cam = np.eye(4)
    T_world_cam[:3, :3] = R_WORLD_FROM_CAM
    T_world_lidar = np.eye(4)
    T_world_lidar[:3, :3] = R_WORLD_FROM_LIDAR
    T_world_lidar[:3, 3] = LIDAR_OFFSET
    return np.linalg.inv(T_world_cam) @ T_world_lidar


# ---- ray grids -----------------------------------------------------------------------------------------------

def _yaw(deg: float) -> np.ndarray:
    """Rotation about the world's up axis (positive turns the view to the left)."""
    a = np.radians(deg)
    return np.array([[np.cos(a), 0.0, -np.sin(a)], [0.0, 1.0, 0.0], [np.sin(a), 0.0, np.cos(a)]])


def _camera_rays(cam: CameraModel, R_world_from_cam: np.ndarray) -> np.ndarray:
    u, v = np.meshgrid(np.arange(cam.width), np.arange(cam.height))
    pix = np.stack([u, v, np.ones_like(u)], -1).astype(np.float64)
    d = pix @ np.linalg.inv(cam.K).T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return (d @ R_world_from_cam.T).astype(np.float32)


def _camera_bbox(cam: CameraModel, origin: np.ndarray, R_world_from_cam: np.ndarray):
    def fn(corners: np.ndarray):
        pc = (corners - origin) @ R_world_from_cam  # world -> optical
        if np.any(pc[:, 2] <= 0.05):
            if np.all(pc[:, 2] <= 0.05):
                return None
            return 0, cam.height, 0, cam.width
        u = cam.K[0, 0] * pc[:, 0] / pc[:, 2] + cam.K[0, 2]
        v = cam.K[1, 1] * pc[:, 1] / pc[:, 2] + cam.K[1, 2]
        c0, c1 = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 2, cam.width)
        r0, r1 = max(int(np.floor(v.min())) - 1, 0), min(int(np.ceil(v.max())) + 2, cam.height)
        return None if c0 >= c1 or r0 >= r1 else (r0, r1, c0, c1)
    return fn


_EL = np.radians(np.linspace(LIDAR_ELEV[0], LIDAR_ELEV[1], LIDAR_BEAMS))[::-1]  # row 0 = highest beam
_AZ = np.radians(np.arange(LIDAR_AZ, -LIDAR_AZ - 1e-6, -LIDAR_AZ_STEP))  # col 0 = leftmost (+y)


def _lidar_rays() -> np.ndarray:
    el, az = np.meshgrid(_EL, _AZ, indexing="ij")
    d_lidar = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1)
    return (d_lidar @ R_WORLD_FROM_LIDAR.T).astype(np.float32)


def _lidar_bbox(origin: np.ndarray):
    step_el = np.radians((LIDAR_ELEV[1] - LIDAR_ELEV[0]) / (LIDAR_BEAMS - 1))
    step_az = np.radians(LIDAR_AZ_STEP)

    def fn(corners: np.ndarray):
        pl = (corners - origin) @ R_WORLD_FROM_LIDAR  # world -> lidar
        if np.any(pl[:, 0] <= 0.05):
            return (0, LIDAR_BEAMS, 0, len(_AZ)) if not np.all(pl[:, 0] <= 0.05) else None
        az = np.arctan2(pl[:, 1], pl[:, 0])
        el = np.arctan2(pl[:, 2], np.hypot(pl[:, 0], pl[:, 1]))
        c0 = max(int(np.floor((np.radians(LIDAR_AZ) - az.max()) / step_az)) - 1, 0)
        c1 = min(int(np.ceil((np.radians(LIDAR_AZ) - az.min()) / step_az)) + 2, len(_AZ))
        r0 = max(int(np.floor((_EL[0] - el.max()) / step_el)) - 1, 0)
        r1 = min(int(np.ceil((_EL[0] - el.min()) / step_el)) + 2, LIDAR_BEAMS)
        return None if c0 >= c1 or r0 >= r1 else (r0, r1, c0, c1)
    return fn


# ---- shading and conditions ----------------------------------------------------------------------------------

@dataclass
class Look:
    ambient: float
    diffuse: float
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    noise: float  # sensor noise sigma, 0..1 units
    sun: np.ndarray = field(default_factory=lambda: np.array([0.4, 0.8, -0.45]))


LOOKS = {
    "sun": Look(0.45, 0.75, (0.35, 0.55, 0.90), (0.70, 0.80, 0.95), 0.008),
    "cloud": Look(0.75, 0.18, (0.62, 0.64, 0.67), (0.75, 0.76, 0.78), 0.010),
    "rain": Look(0.50, 0.12, (0.40, 0.42, 0.45), (0.52, 0.54, 0.56), 0.015),
    "fog": Look(0.70, 0.10, (0.74, 0.75, 0.77), (0.78, 0.79, 0.80), 0.010),
    "night": Look(0.035, 0.0, (0.01, 0.012, 0.03), (0.03, 0.03, 0.05), 0.030),
}


def _shade(hits: S.Hits, dirs: np.ndarray, depth: np.ndarray, cond: str, fog_beta: float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(camera RGB, scene radiance) of one rendered view under ``cond``: the camera's linear-light RGB in [0, 1]
    with sensor noise, and the noise-free, unclipped radiance the event camera sees (float32 [H, W, 3] each)."""
    look = LOOKS[cond]
    sun = look.sun / np.linalg.norm(look.sun)
    lam = np.clip(hits.normal @ sun.astype(np.float32), 0, 1)
    light = look.ambient + look.diffuse * lam
    rgb = hits.albedo * light[..., None]
    if cond == "night":  # headlights: a cone ahead, falling off with distance
        ang = np.degrees(np.arccos(np.clip(dirs[..., 2], -1, 1)))
        head = 1.4 * np.exp(-((ang / 22.0) ** 2)) * np.clip(12.0 / np.maximum(depth, 1e-3), 0, 1) ** 2
        rgb = rgb + hits.albedo * np.nan_to_num(head)[..., None]
    if cond == "rain":
        wet = hits.label == S.ROAD
        rgb[wet] *= 0.7
    up = np.clip(dirs[..., 1], 0, 1)[..., None]
    sky = (np.asarray(look.sky_horizon) * (1 - up) + np.asarray(look.sky_top) * up).astype(np.float32)
    sky_mask = ~np.isfinite(hits.t)
    rgb[sky_mask] = sky[sky_mask]
    if cond == "fog":
        trans = np.exp(-np.where(np.isfinite(hits.t), hits.t, 1e4) / fog_beta)[..., None]
        rgb = rgb * trans + np.asarray(look.sky_horizon, np.float32) * (1 - trans)
    if cond == "rain":
        streaks = (rng.random(rgb.shape[:2]) < 0.004).astype(np.float32)
        k = max(3, rgb.shape[0] // 24)
        streaks = cv2.filter2D(streaks, -1, np.ones((k, 1), np.float32) / 2.0)
        rgb = rgb + 0.5 * np.clip(streaks, 0, 1)[..., None]
    radiance = rgb.astype(np.float32)
    rgb = rgb + rng.normal(0.0, look.noise, rgb.shape).astype(np.float32)
    return np.clip(rgb, 0, 1), radiance


def _corner_rgb(rgb: np.ndarray, case: str | None, rng: np.random.Generator) -> np.ndarray:
    if case == "overexposure":
        rgb = rgb * rng.uniform(2.5, 4.0)
    elif case == "underexposure":
        rgb = rgb * rng.uniform(0.12, 0.25) + rng.normal(0, 0.01, rgb.shape)
    elif case == "motionblur":
        k = max(5, rgb.shape[1] // 20) | 1
        rgb = cv2.filter2D(rgb.astype(np.float32), -1, np.full((1, k), 1.0 / k, np.float32))
    return np.clip(rgb, 0, 1).astype(np.float32)


def _to_u8(rgb: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(rgb, 0, 1) ** (1 / 1.6) * 255).astype(np.uint8)  # a mild display gamma


# ---- the event camera ----------------------------------------------------------------------------------------

def _warp_to_previous(hits: S.Hits, rays: np.ndarray, radiance: np.ndarray, cam: CameraModel, origin: np.ndarray,
                      speed: float, yaw_rate: float, dt: float, box_velocity: np.ndarray) -> np.ndarray:
    """The radiance the camera saw ``dt`` seconds earlier, by warping the current view with the exact motion field.

    Every pixel's world point (moved back by its box's velocity; sky points at infinity) is projected into the
    previous pose (``speed * dt`` further back, yaw ``-yaw_rate * dt``); with the backward flow b = x_prev - x the
    previous image at x is the current one at x - b (constant flow locally: the standard brightness-constancy
    approximation of event simulators). Bilinear sampling makes sub-pixel motion at small resolutions fire events
    at edges in proportion to the swept area, as a real pixel's photocurrent does.
    """
    R_prev = _yaw(-yaw_rate * dt) @ R_WORLD_FROM_CAM
    o_prev = origin.astype(np.float64) - np.array([0.0, 0.0, speed * dt])
    hit = np.isfinite(hits.t)
    vel = np.zeros(hits.point.shape, np.float64)
    on_box = hits.box_id >= 0
    if on_box.any():
        vel[on_box] = box_velocity[hits.box_id[on_box]]
    p_prev = np.where(hit[..., None], hits.point.astype(np.float64) - vel * dt - o_prev, rays.astype(np.float64))
    pc = p_prev @ R_prev  # world -> previous optical frame (directions for the sky)
    z = np.maximum(pc[..., 2], 1e-3)
    u_prev = cam.K[0, 0] * pc[..., 0] / z + cam.K[0, 2]
    v_prev = cam.K[1, 1] * pc[..., 1] / z + cam.K[1, 2]
    v, u = np.mgrid[0:cam.height, 0:cam.width].astype(np.float64)
    map_x = (2 * u - u_prev).astype(np.float32)
    map_y = (2 * v - v_prev).astype(np.float32)
    out = cv2.remap(radiance, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # no estimate for points behind the previous pose or whose source lies outside the view: no change there
    unknown = (pc[..., 2] <= 1e-3) | (map_x < 0) | (map_x > cam.width - 1) | (map_y < 0) | (map_y > cam.height - 1)
    out[unknown] = radiance[unknown]
    return out


def _sensor_rng(seed: int, shape: tuple[int, int]) -> np.random.Generator:
    """The event sensor's fixed-pattern randomness (threshold mismatch, hot pixels): one sensor per dataset."""
    return np.random.default_rng([seed, shape[0], shape[1], 99])


def simulate_events(radiance: np.ndarray, prev_radiance: np.ndarray, shape: tuple[int, int], t0: float, t1: float,
                    cond: str, seed: int, rng: np.random.Generator) -> np.ndarray:
    """A DVS between two radiance images: float64 [N, 4] events (x, y, t, p) in (t0, t1], sorted by time.

    - Signal: each pixel fires floor(|log(I1 + e) - log(I0 + e)| / C_pix) events of the sign of the change, spread
      over the window with a random phase. Log irradiance makes the count a function of the scene's contrast, not
      of its illumination: edges fire at night and in glare as by day (only the dark level e compresses contrast
      in very dark areas). C_pix = C (1 + 0.1 N(0, 1)) is the sensor's fixed threshold mismatch.
    - Refractory period: at most ``window / EVENT_REFRACTORY_S`` events per pixel.
    - Background activity: Poisson events of random polarity at 1 Hz per pixel by day, 5 Hz at night.
    - Hot pixels: 0.1 % of the sensor's pixels fire at 200 Hz, each with its own polarity.
    ``shape`` smaller than the images = a lower-resolution sensor (area-averaged irradiance).
    """
    h, w = shape

    def lum(img: np.ndarray) -> np.ndarray:
        y = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        if y.shape != (h, w):
            y = cv2.resize(y, (w, h), interpolation=cv2.INTER_AREA)
        return np.log(np.maximum(y, 0.0) + EVENT_LOG_EPS)

    d = lum(radiance) - lum(prev_radiance)
    srng = _sensor_rng(seed, shape)
    thr = EVENT_THRESHOLD * np.clip(1.0 + EVENT_THRESHOLD_SIGMA * srng.standard_normal((h, w)), 0.5, 1.5)
    hot = srng.random((h, w)) < EVENT_HOT_FRACTION
    hot_pol = srng.random((h, w)) < 0.5
    window = t1 - t0
    cap = int(window / EVENT_REFRACTORY_S)
    n = np.minimum(np.floor(np.abs(d) / thr).astype(np.int64), cap)
    rows = [_spread(np.flatnonzero(n), n.reshape(-1), np.where(d > 0, 1.0, 0.0).reshape(-1), w, t0, window, rng)]
    rate = EVENT_BA_HZ.get(cond, EVENT_BA_HZ_DEFAULT)
    ba = rng.poisson(rate * window, (h, w))
    ba_lin = np.flatnonzero(ba)
    if len(ba_lin):
        reps = np.repeat(ba_lin, ba.reshape(-1)[ba_lin])
        rows.append(np.stack([reps % w, reps // w, t0 + window * (1.0 - rng.random(len(reps))),
                              (rng.random(len(reps)) < 0.5).astype(np.float64)], axis=1))
    hot_n = rng.poisson(EVENT_HOT_HZ * window, (h, w)) * hot
    rows.append(_spread(np.flatnonzero(hot_n), hot_n.reshape(-1), hot_pol.reshape(-1).astype(np.float64), w, t0,
                        window, rng))
    ev = np.concatenate(rows).astype(np.float64)
    # the refractory cap holds for the sum of signal and noise events of a pixel: keep each pixel's first ``cap``
    ev = ev[np.lexsort((ev[:, 2], ev[:, 1] * w + ev[:, 0]))]
    if len(ev):
        lin = (ev[:, 1] * w + ev[:, 0]).astype(np.int64)
        first = np.r_[0, np.flatnonzero(np.diff(lin)) + 1]
        rank = np.arange(len(lin)) - np.repeat(first, np.diff(np.r_[first, len(lin)]))
        ev = ev[rank < cap]
    return ev[np.argsort(ev[:, 2], kind="stable")]


def _spread(lin: np.ndarray, counts: np.ndarray, pol: np.ndarray, w: int, t0: float, window: float,
            rng: np.random.Generator) -> np.ndarray:
    """``counts[lin]`` events per pixel, evenly spaced over (t0, t0 + window] with a random phase per pixel."""
    if len(lin) == 0:
        return np.zeros((0, 4), np.float64)
    c = counts[lin]
    rep = np.repeat(lin, c)
    k = np.arange(len(rep)) - np.repeat(np.cumsum(c) - c, c)
    frac = (k + np.repeat(rng.random(len(lin)), c)) / np.repeat(c, c)
    t = t0 + window * np.clip(frac, 1e-9, 1.0)
    return np.stack([rep % w, rep // w, t, np.repeat(pol[lin], c)], axis=1)


# ---- one frame -------------------------------------------------------------------------------------------------

@dataclass
class FrameSpec:
    index: int
    scene_index: int
    scene: str
    split: str
    condition: str
    corner_case: str | None
    frame_in_scene: int
    seed: int


def _render_view(street: S.Street, origin: np.ndarray, cam: CameraModel, yaw_deg: float, cond: str, beta: float,
                 rng: np.random.Generator):
    R = _yaw(yaw_deg) @ R_WORLD_FROM_CAM
    rays = _camera_rays(cam, R)
    hits = S.cast(street, origin, rays, _camera_bbox(cam, origin, R))
    depth = hits.t * (rays @ R[:, 2].astype(np.float32))  # camera z = t * cos(angle to the optical axis)
    depth = np.where(np.isfinite(hits.t), depth, np.nan).astype(np.float32)
    rgb, radiance = _shade(hits, rays, depth, cond, beta, rng)
    return hits, rays, depth, rgb, radiance


def generate_frame(fs: FrameSpec, size: int, seed: int) -> dict[str, Any]:
    """Render one frame: every modality's image, the label and the raw sensor data."""
    street = S.make_street(np.random.default_rng([seed, fs.scene_index]))
    rng = np.random.default_rng([seed, fs.scene_index, fs.frame_in_scene, 7])
    cam = camera_for(size)
    cond, case = fs.condition, fs.corner_case
    beta = rng.uniform(12.0, 28.0)
    speed = rng.uniform(8.0, 15.0)
    yaw_rate = rng.uniform(-30.0, 30.0)  # degrees per second: the view sweeps, so far edges fire events too
    z = fs.frame_in_scene * 7.0 + rng.uniform(0, 1.5)
    origin = np.array([0.0, CAMERA_HEIGHT, z], np.float32)
    hits, rays, depth, rgb_lin, radiance = _render_view(street, origin, cam, 0.0, cond, beta, rng)
    rgb_lin = _corner_rgb(rgb_lin, case, rng)
    rgb = _to_u8(rgb_lin)
    label = hits.label.astype(np.uint8)
    stamp = fs.index * 0.1
    # events: the scene radiance (before the camera's noise, clipping and exposure: the DVS is a separate HDR
    # sensor, so over-/underexposure and motion blur do not reach it), under ego-motion and object motion
    prev_radiance = _warp_to_previous(hits, rays, radiance, cam, origin, speed, yaw_rate, EVENT_DT,
                                      street.boxes.velocity)
    ev_h, ev_w = size, size
    if case == "eventlowres":
        ev_h, ev_w = size // 2, size // 2
    events = simulate_events(radiance, prev_radiance, (ev_h, ev_w), stamp - EVENT_DT, stamp, cond, seed, rng)
    event_frame = events_to_frame(events[:, 0], events[:, 1], events[:, 2], events[:, 3], ev_h, ev_w, stamp, EVENT_DT)
    # LiDAR: cast from the LiDAR origin, points in the LiDAR frame
    l_origin = origin + np.asarray(LIDAR_OFFSET, np.float32)
    l_rays = _lidar_rays()
    lh = S.cast(street, l_origin, l_rays, _lidar_bbox(l_origin))
    ok = np.isfinite(lh.t) & (lh.t < 120.0)
    rng_m = lh.t[ok].astype(np.float64)
    drop = np.zeros(rng_m.shape, bool)
    noise = 0.02
    if cond == "fog":
        drop |= rng.random(rng_m.shape) < 1 - np.exp(-((rng_m / (2.5 * beta)) ** 2))
    if cond == "rain":
        drop |= rng.random(rng_m.shape) < 0.15
        noise = 0.05
    rng_m = rng_m + rng.normal(0, noise, rng_m.shape)
    d_l = (l_rays[ok].astype(np.float64) @ R_WORLD_FROM_LIDAR)  # unit directions in the LiDAR frame
    pts = d_l * rng_m[:, None]
    if case == "lidarjitter":
        pts = pts + rng.normal(0, rng.uniform(0.05, 0.15), pts.shape)
    cos_inc = np.abs(np.sum(lh.normal[ok] * l_rays[ok], axis=1))
    inten = np.clip(lh.reflect[ok] * (0.6 + 0.4 * cos_inc) + rng.normal(0, 0.02, rng_m.shape), 0, 1)
    keep = ~drop
    points = np.concatenate([pts[keep], inten[keep, None]], axis=1).astype(np.float32)
    point_labels = lh.label[ok][keep].astype(np.uint8)
    T = t_cam_from_lidar()
    lidar_img = lidar_to_image(points, T, cam, "lidar_image", dilation=LIDAR_DILATION)
    calib = {"camera": cam.to_dict(), "T_cam_from_lidar": T.tolist(), "camera_frame": "camera",
             "lidar_frame": "lidar", "camera_height": CAMERA_HEIGHT, "stamp": stamp, "event_window_s": EVENT_DT,
             "event_size": [ev_w, ev_h], "event_threshold": EVENT_THRESHOLD, "lidar_dilation": LIDAR_DILATION,
             "lidar_encoding": "lidar_image", "depth_representation": "hha", "condition": cond,
             "corner_case": case, "frame": f"{fs.condition}/{fs.split}/{fs.scene}/{fs.index:06d}"}
    return {"rgb": rgb, "depth_m": depth, "hha": depth_to_image(depth, "hha", cam, CAMERA_HEIGHT),
            "depth8": depth8(depth), "event": event_frame, "events": events, "lidar": lidar_img,
            "points": points, "point_labels": point_labels, "label": label, "calib": calib}


def write_frame(out: Path, fs: FrameSpec, data: dict[str, Any]) -> None:
    rel = Path(fs.condition) / fs.split / fs.scene
    name = f"{fs.index:06d}"
    write_png(out / "img" / rel / f"{name}_rgb_front.png", data["rgb"])
    write_png(out / "hha" / rel / f"{name}_depth_front.png", data["hha"])
    write_png(out / "depth" / rel / f"{name}_depth_front.png", data["depth8"])
    write_png(out / "event" / rel / f"{name}_event_front.png", data["event"])
    write_png(out / "lidar" / rel / f"{name}_lidar_front.png", data["lidar"])
    raw_label = encode_label(data["label"])
    rgba = np.zeros(raw_label.shape + (4,), np.uint8)
    rgba[..., 0] = raw_label
    rgba[..., 3] = 255
    write_png(out / "semantic" / rel / f"{name}_semantic_front.png", rgba)
    raw = out / "raw" / rel
    raw.mkdir(parents=True, exist_ok=True)
    np.save(raw / f"{name}_depth.npy", data["depth_m"])
    np.save(raw / f"{name}_lidar.npy", data["points"])
    np.save(raw / f"{name}_lidar_label.npy", data["point_labels"])
    np.save(raw / f"{name}_events.npy", data["events"])
    (raw / f"{name}_calib.json").write_text(json.dumps(data["calib"], indent=1))


# ---- the plan --------------------------------------------------------------------------------------------------

def parse_splits(text: str) -> list[tuple[str, float]]:
    out = []
    for part in text.split(","):
        if ":" not in part:
            raise ValueError(f"--splits {text!r}: expected name:fraction[,name:fraction...]")
        name, frac = part.split(":", 1)
        out.append((name.strip(), float(frac)))
    total = sum(f for _, f in out)
    if total <= 0 or any(f < 0 for _, f in out):
        raise ValueError(f"--splits {text!r}: fractions must be >= 0 with a positive sum")
    return [(n, f / total) for n, f in out]


def _split_counts(n: int, splits: Sequence[tuple[str, float]]) -> list[int]:
    """Scenes per split: largest remainder, and at least one scene for every split with a positive fraction."""
    raw = [f * n for _, f in splits]
    counts = [int(np.floor(r)) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])[: n - sum(counts)]:
        counts[i] += 1
    for i, (_, f) in enumerate(splits):
        if f > 0 and counts[i] == 0 and n >= len(splits):
            j = int(np.argmax(counts))
            counts[j] -= 1
            counts[i] += 1
    return counts


def plan(frames: int, seed: int, splits: Sequence[tuple[str, float]], conditions: Sequence[str] = CONDITIONS,
         corner_rate: float = 0.25, frames_per_scene: int = FRAMES_PER_SCENE) -> list[FrameSpec]:
    """Frames grouped into scenes of ``frames_per_scene``; conditions round robin over scenes; splits are
    consecutive blocks of scenes (so a split with at least as many scenes as conditions sees every condition, and
    no scene is shared between splits); about ``corner_rate`` of the scenes get a corner case."""
    rng = np.random.default_rng([seed, 1])
    n_scenes = max(1, -(-frames // frames_per_scene))
    scene_split = []
    for (name, _), count in zip(splits, _split_counts(n_scenes, splits)):
        scene_split += [name] * count
    specs = []
    idx = 0
    for s in range(n_scenes):
        cond = conditions[s % len(conditions)]
        case = CORNER_CASES[rng.integers(len(CORNER_CASES))] if rng.random() < corner_rate else None
        scene = f"SYN_{s:04d}" + (f"_{case}" if case else "")
        for j in range(frames_per_scene):
            if idx >= frames:
                break
            specs.append(FrameSpec(idx, s, scene, scene_split[s], cond, case, j, seed))
            idx += 1
    return specs


def _work(args: tuple[FrameSpec, int, int, str]) -> int:
    fs, size, seed, out = args
    write_frame(Path(out), fs, generate_frame(fs, size, seed))
    return fs.index


def generate(out: str | Path, frames: int, size: int = 256, seed: int = 0,
             splits: Sequence[tuple[str, float]] = (("train", 0.8), ("val", 0.2)), workers: int = 1,
             conditions: Sequence[str] = CONDITIONS, corner_rate: float = 0.25, progress: bool = False
             ) -> list[FrameSpec]:
    """Write ``frames`` frames under ``out``; deterministic in (frames, size, seed, splits, conditions)."""
    if size < 32 or size % 2:
        raise ValueError(f"--size: must be an even number >= 32, got {size}")
    out = Path(out)
    specs = plan(frames, seed, list(splits), conditions, corner_rate)
    jobs = [(fs, size, seed, str(out)) for fs in specs]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="synthetic frames", unit="frame")
    if workers > 1:
        with mp.get_context("fork" if sys.platform.startswith("linux") else "spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_work, jobs, chunksize=2):
                bar and bar.update()
    else:
        for j in jobs:
            _work(j)
            bar and bar.update()
    if bar:
        bar.close()
    from equiseg_ros.spec import DELIVER_CLASSES

    manifest = {"generator": "equiseg_ros.data.synthetic", "frames": frames, "size": size, "seed": seed,
                "splits": [list(s) for s in splits], "conditions": list(conditions), "corner_rate": corner_rate,
                "classes_used": {S_id: DELIVER_CLASSES[S_id] for S_id in S.USED_CLASSES},
                "frame_list": [f"{fs.condition}/{fs.split}/{fs.scene}/{fs.index:06d}" for fs in specs]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return specs


# ---- raw frames for the vehicle path -------------------------------------------------------------------------

@dataclass
class RawFrame:
    """One synthetic frame's raw sensor data, as a vehicle would deliver it."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    depth_m: np.ndarray  # float32 [H, W], NaN invalid
    lidar_points: np.ndarray  # float32 [N, 4] x, y, z, intensity in the LiDAR frame
    lidar_labels: np.ndarray  # uint8 [N]
    events: np.ndarray  # float64 [N, 4] x, y, t, p
    event_frame: np.ndarray  # uint8 [h, w, 3] (as stored in event/)
    camera: CameraModel
    T_cam_from_lidar: np.ndarray  # 4x4
    calib: dict[str, Any]
    label: np.ndarray  # uint8 [H, W] class ids, 255 ignore
    meta: dict[str, Any]


def list_frames(root: str | Path, split: str | None = None) -> list[FrameRecord]:
    """Frame records of a synthetic dataset (one split, or every split found), for ``load_raw_frame``."""
    from equiseg_ros.data.deliver import DeliverReader

    root = Path(root)
    splits = [split] if split else sorted({p.name for p in (root / "img").glob("*/*") if p.is_dir()})
    if not splits:
        raise FileNotFoundError(f"synthetic dataset: no frames under {root / 'img'}")
    records: list[FrameRecord] = []
    for sp in splits:
        records += DeliverReader(root, sp, ["rgb"]).frames
    return records


def load_raw_frame(root: str | Path, record: FrameRecord) -> RawFrame:
    """The raw data of a frame record from ``DeliverReader(root, ...)`` over a synthetic dataset."""
    root = Path(root)
    raw = root / "raw" / record.condition / record.split / record.scene
    rel = Path(record.condition) / record.split / record.scene
    n = record.name

    def need(p: Path) -> Path:
        if not p.is_file():
            raise FileNotFoundError(f"frame {record.frame}: raw file not found: {p}")
        return p

    calib = json.loads(need(raw / f"{n}_calib.json").read_text())
    sem = read_png(need(root / "semantic" / rel / f"{n}_semantic_front.png"), f"label of frame {record.frame}")
    return RawFrame(
        rgb=read_png(need(root / "img" / rel / f"{n}_rgb_front.png"), f"rgb of frame {record.frame}")[..., :3],
        depth_m=np.load(need(raw / f"{n}_depth.npy")),
        lidar_points=np.load(need(raw / f"{n}_lidar.npy")),
        lidar_labels=np.load(need(raw / f"{n}_lidar_label.npy")),
        events=np.load(need(raw / f"{n}_events.npy")),
        event_frame=read_png(need(root / "event" / rel / f"{n}_event_front.png"), f"event of frame {record.frame}"),
        camera=CameraModel.from_dict(calib["camera"]),
        T_cam_from_lidar=np.asarray(calib["T_cam_from_lidar"], np.float64),
        calib=calib,
        label=decode_label(sem[..., 0] if sem.ndim == 3 else sem),
        meta={"dataset": "synthetic", "split": record.split, "condition": record.condition,
              "corner_case": record.corner_case, "frame": record.frame, "stamp": calib.get("stamp")},
    )


# ---- preview -------------------------------------------------------------------------------------------------

def write_preview(root: str | Path, path: str | Path, rows: int = 6) -> Path:
    """A PNG contact sheet: one row per frame (one per condition first), columns RGB, HHA, depth, events (x20),
    LiDAR, label."""
    from equiseg_ros.data.deliver import DeliverReader
    from equiseg_ros.spec import synthetic_spec

    root = Path(root)
    mods = ["rgb", "depth", "event", "lidar"]
    records = []
    for sp in sorted({r.split for r in list_frames(root)}):
        records += DeliverReader(root, sp, mods).frames
    chosen, seen = [], set()
    for r in records:
        if r.condition not in seen or (r.corner_case and r.corner_case not in seen):
            chosen.append(r)
            seen.add(r.condition)
            seen.add(r.corner_case)
        if len(chosen) >= rows:
            break
    reader = DeliverReader(root, chosen[0].split, mods)
    reader.frames = chosen
    pal = synthetic_spec().palette_array()
    tiles = []
    for i in range(len(chosen)):
        f = reader[i]
        dpth = read_png(root / "depth" / Path(chosen[i].paths["rgb"]).relative_to(root / "img").parent
                        / f"{chosen[i].name}_depth_front.png")
        dpth = np.repeat(dpth[..., None], 3, 2) if dpth.ndim == 2 else dpth[..., :3]
        ev = np.clip(f["event"].astype(np.int32) * 20, 0, 255).astype(np.uint8)
        tiles.append(np.concatenate([f["rgb"], f["depth"], dpth, ev, f["lidar"], pal[f.label]], axis=1))
    sheet = np.concatenate(tiles, axis=0)
    write_png(path, sheet)
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m equiseg_ros.data.synthetic", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output root (DeLiVER layout plus raw/ and manifest.json)")
    ap.add_argument("--frames", type=int, default=200, help="number of frames in total (default 200)")
    ap.add_argument("--size", type=int, default=256, help="square image side in pixels (default 256)")
    ap.add_argument("--seed", type=int, default=0, help="random seed; same arguments give identical files")
    ap.add_argument("--splits", default="train:0.8,val:0.2",
                    help="split names and fractions of the scenes (default train:0.8,val:0.2)")
    ap.add_argument("--conditions", default=",".join(CONDITIONS),
                    help="comma-separated conditions, assigned round robin to scenes (default all five)")
    ap.add_argument("--corner-rate", type=float, default=0.25,
                    help="fraction of scenes with a corner case (default 0.25)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="worker processes (default: min(2, CPUs))")
    ap.add_argument("--preview", action="store_true", help="also write OUT/preview.png, a contact sheet")
    a = ap.parse_args(argv)
    conds = [c.strip() for c in a.conditions.split(",") if c.strip()]
    bad = [c for c in conds if c not in CONDITIONS]
    if bad:
        ap.error(f"--conditions: unknown {bad[0]!r}; known: {list(CONDITIONS)}")
    t0 = time.perf_counter()
    specs = generate(a.out, a.frames, a.size, a.seed, parse_splits(a.splits), a.workers, conds, a.corner_rate,
                     progress=True)
    dt = time.perf_counter() - t0
    print(f"wrote {len(specs)} frames of {a.size}x{a.size} to {a.out} in {dt:.1f} s")
    if a.preview:
        print(f"preview: {write_preview(a.out, Path(a.out) / 'preview.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
