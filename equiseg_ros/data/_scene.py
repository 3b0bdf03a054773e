"""The procedural 3-D world behind the synthetic generator: a street of boxes on a ground plane, ray-cast.

World frame: X right, Y up, Z forward (metres), ground at Y = 0. A scene is a straight street: a road with lane
lines, raised sidewalks, terrain, buildings, vegetation, parked and driving cars, trucks, pedestrians, poles and
traffic signs, all axis-aligned boxes. Both the camera (pinhole) and the LiDAR (spinning, fixed elevation beams)
are rendered by exact ray casting against the same boxes, so depth, LiDAR, labels and colour are consistent by
construction. Rays are only cast for the pixels inside each box's projected bounding rectangle.

Learnable at small resolutions (issue 15): the demo trains at 64-96 px, where a real 25 cm pole or lane marking is
under one pixel. Thin classes are therefore drawn at the size that keeps them a few pixels wide at those resolutions:
poles 0.5 m square, traffic signs 1.6 x 1.2 m panels, pedestrians 0.8 m wide, lane markings 0.5 m wide on a 10 m
dash period, and terrain verges between sidewalk and facades. Vehicles and pedestrians move (``Boxes.velocity``), so
the event camera sees moving objects as well as the ego-motion of the static scene.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# DeLiVER class ids (spec.DELIVER_CLASSES order)
BUILDING, PEDESTRIAN, POLE, ROADLINE, ROAD, SIDEWALK, VEGETATION, CARS = 0, 3, 4, 5, 6, 7, 8, 9
TRAFFICSIGN, SKY, TERRAIN, TRUCK = 11, 12, 21, 24
USED_CLASSES = (BUILDING, PEDESTRIAN, POLE, ROADLINE, ROAD, SIDEWALK, VEGETATION, CARS, TRAFFICSIGN, SKY, TERRAIN,
                TRUCK)

# Base albedo (0..1) and LiDAR reflectance per class. Road lines reflect like the road on purpose: the issue
# wants road line vs road separable by colour only.
ALBEDO = {ROAD: (0.30, 0.30, 0.32), ROADLINE: (0.92, 0.92, 0.88), SIDEWALK: (0.62, 0.56, 0.56),
          TERRAIN: (0.40, 0.48, 0.24), VEGETATION: (0.20, 0.42, 0.14), POLE: (0.55, 0.55, 0.55),
          TRAFFICSIGN: (0.90, 0.78, 0.10), PEDESTRIAN: (0.60, 0.25, 0.25), CARS: (0.10, 0.20, 0.60),
          TRUCK: (0.75, 0.75, 0.70), BUILDING: (0.50, 0.50, 0.50)}
REFLECTANCE = {ROAD: 0.20, ROADLINE: 0.20, SIDEWALK: 0.35, TERRAIN: 0.45, VEGETATION: 0.55, POLE: 0.50,
               TRAFFICSIGN: 0.90, PEDESTRIAN: 0.30, CARS: 0.60, TRUCK: 0.55, BUILDING: 0.40}
GREYS = ((0.50, 0.50, 0.50), (0.42, 0.42, 0.44), (0.58, 0.57, 0.55))


@dataclass
class Boxes:
    lo: np.ndarray  # [B, 3]
    hi: np.ndarray  # [B, 3]
    label: np.ndarray  # [B] class ids
    albedo: np.ndarray  # [B, 3]
    reflect: np.ndarray  # [B]
    windows: np.ndarray  # [B] bool: facade texture
    velocity: np.ndarray  # [B, 3] world velocity (m/s): moving vehicles and pedestrians, 0 for the static scene


@dataclass
class Street:
    road_x: float  # road centre X
    road_half: float
    sidewalk: float  # sidewalk width
    line_w: float
    boxes: Boxes
    terrain_albedo: np.ndarray
    road_albedo: np.ndarray


def make_street(rng: np.random.Generator, length: float = 160.0) -> Street:
    """A random street from Z = -10 to ``length`` metres: big, simple, structured (learnable by a tiny model)."""
    road_half = rng.uniform(3.2, 5.5)
    road_x = -rng.uniform(1.0, 2.0)
    sw = rng.uniform(2.0, 4.0)
    lo, hi, lab, alb, refl, win, vel = [], [], [], [], [], [], []

    def add(x0, y0, z0, x1, y1, z1, label, albedo, windows=False, velocity=(0.0, 0.0, 0.0)):
        lo.append((x0, y0, z0)), hi.append((x1, y1, z1)), lab.append(label)
        alb.append(np.clip(np.asarray(albedo) * rng.uniform(0.9, 1.1), 0, 1)), refl.append(REFLECTANCE[label])
        win.append(windows), vel.append(velocity)

    curb = 0.15
    for side in (-1, 1):
        inner = road_x + side * road_half
        outer = road_x + side * (road_half + sw)
        add(min(inner, outer), 0, -10, max(inner, outer), curb, length, SIDEWALK, ALBEDO[SIDEWALK])
        # facades: buildings with gaps showing terrain or vegetation
        z = -10.0
        while z < length:
            wz = rng.uniform(8, 26)
            kind = rng.random()
            setback = outer + side * rng.uniform(0.5, 4.0)  # a terrain verge between sidewalk and facade
            far = setback + side * rng.uniform(8, 16)
            if kind < 0.58:
                col = GREYS[rng.integers(len(GREYS))] if rng.random() < 0.5 else rng.uniform(0.35, 0.75, 3)
                add(min(setback, far), 0, z, max(setback, far), rng.uniform(6, 24), z + wz, BUILDING, col, True)
            elif kind < 0.82:
                h = rng.uniform(1.2, 6.0)
                add(min(setback, far), 0, z + 1, max(setback, far), h, z + wz - 1, VEGETATION, ALBEDO[VEGETATION])
            z += wz + (rng.uniform(0, 6) if rng.random() < 0.4 else 0.0)
        # poles and traffic signs on the sidewalk's outer edge
        z = rng.uniform(3, 15)
        while z < length:
            px = outer - side * 0.6
            add(px - 0.25, curb, z - 0.25, px + 0.25, 6.5, z + 0.25, POLE, ALBEDO[POLE])
            if rng.random() < 0.7:
                sx = px - side * 0.8
                col = ((0.9, 0.78, 0.1), (0.8, 0.1, 0.1), (0.1, 0.3, 0.8))[rng.integers(3)]
                add(sx - 0.8, 2.4, z - 0.4, sx + 0.8, 3.6, z - 0.25, TRAFFICSIGN, col)
            z += rng.uniform(10, 22)
        # pedestrians on the sidewalk
        for _ in range(rng.integers(1, 6)):
            pz = rng.uniform(4, 50)
            px = road_x + side * (road_half + rng.uniform(0.5, sw - 0.5))
            add(px - 0.4, curb, pz - 0.3, px + 0.4, curb + rng.uniform(1.7, 1.95), pz + 0.3, PEDESTRIAN,
                rng.uniform(0.1, 0.8, 3))
    # vehicles: in the lanes and parked at the curb; some are building-grey (separable only by geometry)
    for _ in range(rng.integers(2, 8)):
        truck = rng.random() < 0.2
        L, W, Hh = (rng.uniform(7, 10), 2.5, rng.uniform(3.0, 3.8)) if truck else (rng.uniform(4, 4.8), 1.8,
                                                                                   rng.uniform(1.4, 1.7))
        lane = rng.integers(4)
        cx = road_x + (-0.75, -0.25, 0.25, 0.75)[lane] * road_half * 1.1
        cx = float(np.clip(cx, road_x - road_half + W / 2 + 0.1, road_x + road_half - W / 2 - 0.1))
        if abs(cx) < W / 2 + 0.6:  # keep the ego lane in front of the camera clear for the first metres
            z0 = rng.uniform(12, 70)
        else:
            z0 = rng.uniform(4, 70)
        if rng.random() < 0.3:
            col = GREYS[rng.integers(len(GREYS))]
        else:
            col = ((0.6, 0.05, 0.05), (0.05, 0.1, 0.5), (0.85, 0.85, 0.85), (0.05, 0.05, 0.05), (0.1, 0.35, 0.15),
                   (0.8, 0.6, 0.1))[rng.integers(6)]
        add(cx - W / 2, 0.25, z0, cx + W / 2, 0.25 + Hh, z0 + L, TRUCK if truck else CARS, col)
    # motion, drawn after the geometry: vehicles in the two left lanes come towards the camera, the others drive
    # ahead (a few are parked); pedestrians walk along the sidewalk or stand
    for i, label in enumerate(lab):
        if label in (CARS, TRUCK) and rng.random() < 0.8:
            towards = (lo[i][0] + hi[i][0]) / 2 < road_x
            vel[i] = (0.0, 0.0, (-1.0 if towards else 1.0) * rng.uniform(4.0, 14.0))
        elif label == PEDESTRIAN and rng.random() < 0.6:
            vel[i] = (0.0, 0.0, rng.choice((-1.0, 1.0)) * rng.uniform(1.0, 1.7))
    b = Boxes(np.array(lo, np.float32), np.array(hi, np.float32), np.array(lab, np.int64),
              np.array(alb, np.float32), np.array(refl, np.float32), np.array(win, bool),
              np.array(vel, np.float32).reshape(-1, 3))
    return Street(road_x, road_half, sw, 0.5, b,
                  np.clip(np.asarray(ALBEDO[TERRAIN]) * rng.uniform(0.85, 1.15, 3), 0, 1).astype(np.float32),
                  np.clip(np.asarray(ALBEDO[ROAD]) * rng.uniform(0.85, 1.15), 0, 1).astype(np.float32))


@dataclass
class Hits:
    """Per-ray results over a ray grid [R, C]."""

    t: np.ndarray  # distance along the (unit) ray; inf = no hit
    label: np.ndarray  # class id (SKY where nothing is hit)
    albedo: np.ndarray  # [R, C, 3]
    reflect: np.ndarray
    normal: np.ndarray  # [R, C, 3] world normal
    point: np.ndarray  # [R, C, 3] world hit point (undefined where no hit)
    box_id: np.ndarray  # [R, C] index into Street.boxes, -1 for the ground and the sky


def _hash(p: np.ndarray, scale: float) -> np.ndarray:
    """A static pseudo-random texture in [0, 1) from world positions (moves with the world: events see it)."""
    q = np.floor(p * scale)
    v = np.sin(q[..., 0] * 12.9898 + q[..., 1] * 78.233 + q[..., 2] * 37.719) * 43758.5453
    return v - np.floor(v)


def cast(street: Street, origin: np.ndarray, dirs: np.ndarray, bbox_fn) -> Hits:
    """Cast unit rays ``dirs`` [R, C, 3] from ``origin`` against the ground and the street's boxes.

    ``bbox_fn(corners [8, 3]) -> (r0, r1, c0, c1)`` limits the rays tested against one box.
    """
    R, C, _ = dirs.shape
    o = origin.astype(np.float32)
    d = np.where(np.abs(dirs) < 1e-9, 1e-9, dirs).astype(np.float32)
    t = np.full((R, C), np.inf, np.float32)
    label = np.full((R, C), SKY, np.int64)
    normal = np.zeros((R, C, 3), np.float32)
    box_id = np.full((R, C), -1, np.int64)
    # ground plane Y = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = np.where(d[..., 1] < -1e-6, -o[1] / d[..., 1], np.inf).astype(np.float32)
    ground = np.isfinite(tg) & (tg < 1000)
    t[ground] = tg[ground]
    normal[ground] = (0, 1, 0)
    bx = street.boxes
    for i in range(len(bx.label)):
        lo, hi = bx.lo[i], bx.hi[i]
        # Culling only: a box reaching behind the sensor (the sidewalks) is bounded by its part more than 1 m
        # ahead; nothing of it nearer than that is inside either sensor's field of view in these streets.
        zlo = max(float(lo[2]), float(o[2]) + 1.0) if hi[2] > o[2] + 1.0 else float(lo[2])
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (zlo, hi[2])])
        win = bbox_fn(corners)
        if win is None:
            continue
        r0, r1, c0, c1 = win
        dd = d[r0:r1, c0:c1]
        inv = 1.0 / dd
        t1 = (lo - o) * inv
        t2 = (hi - o) * inv
        tmin = np.minimum(t1, t2)
        tnear = tmin.max(axis=-1)
        tfar = np.maximum(t1, t2).min(axis=-1)
        sub_t = t[r0:r1, c0:c1]
        hit = (tfar >= tnear) & (tnear > 1e-3) & (tnear < sub_t)
        if not hit.any():
            continue
        sub_t[hit] = tnear[hit]
        box_id[r0:r1, c0:c1][hit] = i
        axis = tmin.argmax(axis=-1)[hit]
        n = np.zeros((int(hit.sum()), 3), np.float32)
        n[np.arange(len(axis)), axis] = -np.sign(dd[hit][np.arange(len(axis)), axis])
        normal[r0:r1, c0:c1][hit] = n
    valid = np.isfinite(t)
    point = o + d * np.where(valid, t, 0)[..., None]
    albedo = np.zeros((R, C, 3), np.float32)
    reflect = np.zeros((R, C), np.float32)
    on_box = box_id >= 0
    label[on_box] = bx.label[box_id[on_box]]
    albedo[on_box] = bx.albedo[box_id[on_box]]
    reflect[on_box] = bx.reflect[box_id[on_box]]
    # facades: a window grid darkens (RGB only)
    win = np.zeros((R, C), bool)
    win[on_box] = bx.windows[box_id[on_box]]
    if win.any():
        p = point[win]
        along = np.where(np.abs(normal[win][:, 0]) > 0.5, p[:, 2], p[:, 0])
        fy = p[:, 1] / 3.2 - np.floor(p[:, 1] / 3.2)
        fa = along / 2.6 - np.floor(along / 2.6)
        glass = (fy > 0.35) & (fy < 0.8) & (fa > 0.25) & (fa < 0.75) & (p[:, 1] > 1.0)
        albedo[win] = np.where(glass[:, None], albedo[win] * 0.35 + 0.05, albedo[win])
    # ground: road, lines, terrain
    gnd = valid & ~on_box
    if gnd.any():
        p = point[gnd]
        dx = p[:, 0] - street.road_x
        on_road = np.abs(dx) < street.road_half
        hw = street.line_w / 2
        centre = (np.abs(dx) < hw) & ((p[:, 2] % 10.0) < 6.0)
        edge = np.abs(np.abs(dx) - (street.road_half - 0.35)) < hw
        line = on_road & (centre | edge)
        lab = np.where(line, ROADLINE, np.where(on_road, ROAD, TERRAIN))
        label[gnd] = lab
        alb = np.where(on_road[:, None], street.road_albedo, street.terrain_albedo)
        alb = np.where(line[:, None], np.asarray(ALBEDO[ROADLINE], np.float32), alb)
        albedo[gnd] = alb
        reflect[gnd] = np.where(on_road, REFLECTANCE[ROAD], REFLECTANCE[TERRAIN])
    # static texture: +-8% brightness at 25 cm scale
    if valid.any():
        albedo[valid] *= (0.92 + 0.16 * _hash(point[valid], 4.0))[:, None]
    return Hits(t, label, albedo, reflect, normal, point, box_id)
