"""Evaluation from bags: offline equals the in-memory evaluation on the same frames; failures are seen as injected;
a short --live run scores what the real node published and agrees with the offline pipeline."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_bag_fixtures import make_deliver, ros_env

from equiseg_ros.bag import convert
from equiseg_ros.bag._sources import FrameSource
from equiseg_ros.bag.evaluate import evaluate_live, evaluate_offline, run_offline
from equiseg_ros.evaluation.metrics import ConfusionMatrix
from equiseg_ros.inference.backend import load_backend

SIZE = 32


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ros_helpers import export_tiny
    return export_tiny(tmp_path_factory.mktemp("model") / "tiny.onnx", size=SIZE, spec_name="deliver")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_deliver(tmp_path_factory.mktemp("deliver"), frames_per_condition=3, size=(SIZE, SIZE))


def _in_memory(backend, source: FrameSource) -> tuple[list[np.ndarray], ConfusionMatrix, dict[str, ConfusionMatrix]]:
    """The dataset frames straight from the reader into the backend, all modalities present."""
    spec = backend.spec
    cm = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    per: dict[str, ConfusionMatrix] = {}
    preds = []
    for frame in source:
        x = np.stack([spec.normalize(m, frame.images[m]) for m in spec.modality_names])[None]
        labels, _ = backend.infer(x.astype(np.float32), np.ones((1, spec.num_modalities), bool))
        preds.append(labels[0])
        p, g = torch.from_numpy(labels[0]).long(), torch.from_numpy(frame.label).long()
        cm.update(p, g)
        per.setdefault(frame.condition, ConfusionMatrix(spec.num_classes, spec.ignore_index)).update(p, g)
    return preds, cm, per


def test_offline_equals_in_memory_evaluation(tmp_path: Path, model: Path, data: Path) -> None:
    bag = tmp_path / "bag"
    assert convert.main(["--dataset", "deliver", "--root", str(data), "--out", str(bag), "--quiet"]) == 0
    backend = load_backend(model)
    source = FrameSource("deliver", data, "val")
    preds, cm, per = _in_memory(backend, source)
    run = run_offline(bag, backend)
    assert len(run.results) == len(source)  # one inferred frame per recorded frame, every modality present
    for r, p in zip(run.results, preds):
        assert all(r.present.values()) and r.anchor == "rgb"
        np.testing.assert_array_equal(r.labels, p)
    rep = evaluate_offline(bag, backend)
    assert rep["frames_answered"] == rep["frames"] == len(source)
    assert rep["miou"] == pytest.approx(cm.miou(), abs=1e-9)
    assert rep["pixel_accuracy"] == pytest.approx(cm.pixel_accuracy(), abs=1e-9)
    assert set(rep["per_condition"]) == set(per)
    for c, m in per.items():
        assert rep["per_condition"][c]["miou"] == pytest.approx(m.miou(), abs=1e-9)


def test_offline_sees_the_injected_failures(tmp_path: Path, model: Path, data: Path) -> None:
    bag = tmp_path / "bag"
    # 6 frames at 10 Hz: lidar dead for frames 2-3, every event message malformed, rgb (the anchor) dropped 50 %
    assert convert.main(["--dataset", "deliver", "--root", str(data), "--out", str(bag), "--quiet",
                         "--blackout", "lidar:0.2-0.4", "--corrupt", "event:1", "--drop", "rgb:0.5",
                         "--seed", "3"]) == 0
    backend = load_backend(model)
    rep = evaluate_offline(bag, backend)
    inj = {i["kind"]: i for i in rep["injections"]}
    assert rep["malformed"]["event"] == inj["corrupt"]["counts"]["event"] == 6
    assert rep["absent"]["event"]["malformed"] == rep["frames_inferred"]
    dropped_rgb = inj["drop"]["counts"]["rgb"]
    assert 0 < dropped_rgb < 6
    # a single missing rgb message does not make rgb stale (max_age 0.5 s): that frame has no anchor, unanswered
    assert rep["anchors"]["rgb"] == rep["frames_answered"] == 6 - dropped_rgb
    assert sum(rep["absent"]["lidar"].values()) >= 2


@pytest.mark.ros
def test_live_scores_what_the_node_published(tmp_path: Path, model: Path, data: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bag = tmp_path / "bag"
    assert convert.main(["--dataset", "deliver", "--root", str(data), "--out", str(bag), "--quiet",
                         "--rate", "5"]) == 0
    for k, v in ros_env(60).items():
        monkeypatch.setenv(k, v)
    seen: list[tuple[int, np.ndarray]] = []
    rep = evaluate_live(bag, model, log_path=tmp_path / "node.log", on_mask=lambda s, m: seen.append((s, m)),
                        settle=1.5)
    assert rep["mode"] == "live" and rep["frames"] == 6
    assert rep["answered_fraction"] >= 5 / 6, (tmp_path / "node.log").read_text()[-2000:]
    assert rep["latency_ms"]["n"] >= 5 and 0 < rep["latency_ms"]["p50"] < 1000
    offline = {r.stamp_ns: r.labels for r in run_offline(bag, load_backend(model)).results}
    matched = [(s, m) for s, m in seen if s in offline]
    assert len(matched) >= 5
    for s, m in matched:
        np.testing.assert_array_equal(m, offline[s])  # the node computed what the offline pipeline computes
    (tmp_path / "live.json").write_text(json.dumps(rep))


def test_offline_frozen_camera_fails_over(tmp_path: Path, model: Path) -> None:
    from equiseg_ros.bag._inject import parse
    from equiseg_ros.bag._sources import SourceFrame
    from equiseg_ros.spec import deliver_spec
    spec = deliver_spec()
    rng = np.random.default_rng(5)
    frames = [SourceFrame(i, f"f{i}", {m: rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                                       for m in spec.modality_names},
                          rng.integers(0, 25, (SIZE, SIZE), dtype=np.uint8), condition="sun") for i in range(20)]
    bag = tmp_path / "bag"
    convert.write_bag(frames, spec, bag, injections=[parse("freeze", "rgb:0.5-1.5")], progress=False)
    rep = evaluate_offline(bag, load_backend(model))
    # 10 identical rgb frames: the health check flags the camera after a few, the synchroniser fails over to depth
    assert rep["unhealthy"]["rgb"] >= 3 and rep["anchors"]["depth"] >= 3
    assert rep["absent"]["rgb"]["unhealthy"] == rep["anchors"]["depth"]
    assert rep["frames_answered"] == 20
