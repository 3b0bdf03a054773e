"""Failure injection at conversion time: what is in the bag matches what the metadata says was injected."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from test_bag_fixtures import make_deliver

from equiseg_ros.bag import convert
from equiseg_ros.bag._inject import NM_DENSITY, NM_STD, InjectionError, Injector, nm_noise_uint8, parse
from equiseg_ros.bag._sources import FrameSource, SourceFrame
from equiseg_ros.bag._writer import read_custom
from equiseg_ros.ros import codecs
from equiseg_ros.spec import synthetic_spec

N = 30
RATE = 10.0


def _frames(n: int = N, size: int = 16):
    rng = np.random.default_rng(3)
    spec = synthetic_spec()
    for i in range(n):
        yield SourceFrame(i, f"f{i}", {m: rng.integers(1, 255, (size, size, 3), dtype=np.uint8)
                                       for m in spec.modality_names},
                          rng.integers(0, 25, (size, size), dtype=np.uint8), condition="sun")


def _write(path: Path, injections: list[str], seed: int = 0) -> dict:
    inj = [parse(*s.split(" ", 1)) for s in injections]
    convert.write_bag(_frames(), synthetic_spec(), path, injections=inj, seed=seed, progress=False, rate=RATE)
    out: dict = {}
    with AnyReader([path]) as r:
        for conn, ts, raw in r.messages():
            out.setdefault(conn.topic, []).append((ts, r.deserialize(raw, conn.msgtype), bytes(raw)))
    return out


def _counts(path: Path) -> list[dict]:
    return read_custom(path)["injections"]["items"]


def test_drop_blackout_freeze_counts_and_metadata(tmp_path: Path) -> None:
    bag = tmp_path / "b"
    msgs = _write(bag, ["drop depth:0.3", "blackout lidar:1.0-2.0", "freeze rgb:0.5-1.0"])
    items = _counts(bag)
    dropped = items[0]["counts"]["depth"]
    assert 0 < dropped < N and len(msgs["/depth/image"]) == N - dropped
    assert items[1]["counts"]["lidar"] == 10 and len(msgs["/lidar/image"]) == N - 10
    start = int(convert.DEFAULT_START_S * 1e9)
    lidar_t = [(ts - start) / 1e9 for ts, _, _ in msgs["/lidar/image"]]
    assert not any(1.0 <= t < 2.0 - 1e-9 for t in lidar_t)
    # freeze: frames 5..9 repeat frame 4's content with their own fresh stamps
    rgb = msgs["/rgb/image"]
    assert items[2]["counts"]["rgb"] == 5
    held = codecs.image_to_numpy(rgb[4][1])
    for i in range(5, 10):
        np.testing.assert_array_equal(codecs.image_to_numpy(rgb[i][1]), held)
        assert rgb[i][0] == start + i * int(1e9 / RATE)
    assert not np.array_equal(codecs.image_to_numpy(rgb[10][1]), held)
    # the frame-info records say per frame what happened
    infos = [json.loads(m.data) for _, m, _ in msgs[convert.INFO_TOPIC]]
    assert sum("dropped" in i["injected"].get("depth", []) for i in infos) == dropped
    assert sum("dropped" in i["injected"].get("lidar", []) for i in infos) == 10


def test_corrupt_messages_are_refused_by_the_codec(tmp_path: Path) -> None:
    bag = tmp_path / "b"
    msgs = _write(bag, ["corrupt event:0.4"])
    n_bad = _counts(bag)[0]["counts"]["event"]
    assert n_bad > 0 and len(msgs["/event/image"]) == N  # malformed, not missing
    refused = 0
    for _, m, _ in msgs["/event/image"]:
        try:
            codecs.image_to_numpy(m, "/event/image")
        except codecs.DecodeError:
            refused += 1
    assert refused == n_bad
    kinds = {k for i in (json.loads(m.data) for _, m, _ in msgs[convert.INFO_TOPIC])
             for k in i["injected"].get("event", [])}
    assert kinds == {"corrupt:truncated", "corrupt:bad_step", "corrupt:bad_encoding"} or n_bad < 3


def test_jitter_and_noise(tmp_path: Path) -> None:
    bag = tmp_path / "b"
    msgs = _write(bag, ["jitter all:20", "noise rgb:high", "noise event:0"])
    start = int(convert.DEFAULT_START_S * 1e9)
    offsets = []
    for m in ("rgb", "depth"):
        for i, (ts, msg, _) in enumerate(msgs[f"/{m}/image"]):
            h = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            assert h == ts  # header stamp and receive time move together
            offsets.append(h - (start + i * int(1e9 / RATE)))
    offsets = np.asarray(offsets) / 1e6
    assert np.abs(offsets).max() <= 20.0 and offsets.std() > 3.0
    gt_ts = [ts for ts, _, _ in msgs[convert.GT_TOPIC]]
    assert gt_ts == [start + i * int(1e9 / RATE) for i in range(N)]  # ground truth keeps the true stamps
    clean = list(_frames())
    rgb = codecs.image_to_numpy(msgs["/rgb/image"][0][1]).astype(int)
    assert np.abs(rgb - clean[0].images["rgb"]).mean() > 20  # high-level noise changes the image a lot
    np.testing.assert_array_equal(codecs.image_to_numpy(msgs["/depth/image"][0][1]), clean[0].images["depth"])
    items = _counts(bag)
    assert items[1]["counts"]["rgb"] == N and items[1]["density"] == NM_DENSITY[2]


def test_same_seed_same_bag_other_seed_other_bag(tmp_path: Path) -> None:
    args = ["drop depth:0.5", "corrupt lidar:0.5", "jitter rgb:5"]
    a = _write(tmp_path / "a", args, seed=1)
    b = _write(tmp_path / "b", args, seed=1)
    c = _write(tmp_path / "c", args, seed=2)
    assert all([x[2] for x in a[t]] == [x[2] for x in b[t]] for t in a)
    assert any([x[2] for x in a[t]] != [x[2] for x in c.get(t, [])] for t in a)


def test_nm_levels_match_the_benchmark_definition() -> None:
    torch = pytest.importorskip("torch")  # noqa: F841 - corruptions imports torch
    from equiseg_ros.data.corruptions import nm_level
    for level in range(3):
        _, density, std = nm_level(level)
        assert (density, std) == (NM_DENSITY[level], NM_STD[level])
    img = np.full((40, 50, 3), 128, np.uint8)
    img[0, 0] = (3, 3, 3)
    img[0, 1] = (250, 250, 250)
    out = nm_noise_uint8(img, 1, (1.0, 1.0, 1.0), gaussian=False, rng=np.random.default_rng(0))
    n = int(np.ceil(NM_DENSITY[1] * img.size * 0.5))
    assert (out == 250).sum() <= n + 3 and (out == 250).sum() > 0.8 * n  # collisions may reduce the count
    assert (out == 3).sum() > 0.8 * n


def test_bad_arguments_name_the_flag() -> None:
    for kind, text, needle in [("drop", "depth", "MODALITY:P"), ("drop", "depth:1.5", "[0, 1]"),
                               ("blackout", "lidar:3-1", "T0 < T1"), ("noise", "rgb:7", "0/1/2"),
                               ("jitter", "rgb:x", "MS")]:
        with pytest.raises(InjectionError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            parse(kind, text)
    with pytest.raises(InjectionError, match="no such modality"):
        Injector([parse("drop", "thermal:0.1")], ["rgb", "depth"])


def test_cli_injection_recorded(tmp_path: Path) -> None:
    root = make_deliver(tmp_path / "d")
    bag = tmp_path / "b"
    assert convert.main(["--dataset", "deliver", "--root", str(root), "--out", str(bag), "--quiet",
                         "--blackout", "depth:0-0.25", "--drop", "all:0", "--seed", "7"]) == 0
    inj = read_custom(bag)["injections"]
    assert inj["seed"] == 7 and [i["kind"] for i in inj["items"]] == ["drop", "blackout"]
    assert inj["items"][1]["counts"] == {"depth": 3}
    assert len(FrameSource("deliver", root, "val")) == 4
