"""Published weights to the car: convert -> training/export.py (ONNX, parity gate) -> load_backend -> the node's
message pipeline, checked against the reference's own argmax (fixtures in ../shared/fixtures/reference_models)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_convert_reference import MIN_ARGMAX, fixture

from equiseg_ros.models.__main__ import main as models_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """Both kinds of reference model converted by the CLI and exported by training/export.py at the fixtures' 128²."""
    sys.path.insert(0, str(ROOT))
    from training.export import main as export_main

    d = tmp_path_factory.mktemp("deploy")
    out = {}
    for fmt, src in (("deliver", "dlv_cmnext_b0.pth"), ("anyseg", "mseg_b0_k19.pth")):
        ckpt, onnx = d / f"{fmt}.pt", d / f"{fmt}.onnx"
        assert models_main(["convert", "--format", fmt, str(fixture(src)), "--out", str(ckpt),
                            "--size", "128", "128"]) == 0
        assert export_main(["--checkpoint", str(ckpt), "--out", str(onnx), "--threads", "1"]) == 0  # parity gate
        out[fmt], out[fmt + "_ckpt"] = onnx, ckpt
    return out


def backend(path: Path):
    from equiseg_ros.inference.backend import load_backend

    return load_backend(str(path), prefer=["onnxruntime"], intra_op_threads=1)


def agreement(labels: np.ndarray, ref_logits: np.ndarray) -> float:
    return float((labels.astype(np.int64) == ref_logits.argmax(1)).mean())


# (format, io file, reference order, logits key, absent modality: zero-filled and present=false as the node does)
CASES = [
    ("deliver", "dlv_cmnext_b0_io.npz", ("img", "depth", "event", "lidar"), "logits_full", None),
    ("deliver", "dlv_cmnext_b0_io.npz", ("img", "depth", "event", "lidar"), "logits_missing_depth", "depth"),
    ("anyseg", "any_mseg_b0_io.npz", ("frame_camera", "event_camera", "lidar"), "logits_full", None),
    ("anyseg", "any_mseg_b0_io.npz", ("frame_camera", "event_camera", "lidar"), "logits_missing_event_camera",
     "event_camera"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_onnx_backend_mask_equals_reference_argmax(exported, case):
    fmt, io, order, key, absent = case
    data = np.load(fixture(io))
    be = backend(exported[fmt])
    assert be.spec.modality_names[0] == "rgb" and be.input_size == (128, 128)
    present = np.array([[m != absent for m in order]])
    for b in range(data[key].shape[0]):  # the export is batch 1; AnySeg's fixture is batch 2
        x = np.stack([data[f"x_{m}"][b] for m in order])[None] * present[:, :, None, None, None]
        labels, conf = be.infer(x.astype(np.float32), present)
        assert labels.shape == (1, 128, 128) and labels.dtype == np.uint8
        assert agreement(labels, data[key][b:b + 1]) >= MIN_ARGMAX, f"{fmt} {key} sample {b}"


def test_node_pipeline_feeds_anyseg_raw_and_masks_like_the_converted_model(exported):
    """Through the node's message path (decode -> sync -> front end -> backend): the AnySeg model gets raw 0..255
    from its spec, with a sensor silent it is marked absent (AnySeg's list-dropping), and the published mask is the
    converted model's argmax at input size."""
    from sensor_msgs.msg import Image

    from equiseg_ros.ros import codecs
    from equiseg_ros.ros.pipeline import FramePipeline
    from training.export import model_from_checkpoint

    model, spec, _, _ = model_from_checkpoint(exported["anyseg_ckpt"])
    pipe = FramePipeline(backend(exported["anyseg"]), {"health.enabled": False})
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:128, 0:128]
    imgs = {m: ((np.stack([xx * (i + 1), yy * (i + 2), xx + yy], 2) + rng.integers(0, 40, (128, 128, 3))) % 256)
            .astype(np.uint8) for i, m in enumerate(spec.modality_names)}

    def header(sec: float):
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        return Header(stamp=Time(sec=int(sec), nanosec=int(round((sec % 1) * 1e9))), frame_id="camera")

    for sent, stamp in ((("rgb", "event", "lidar"), 10.0), (("rgb", "lidar"), 20.0)):
        for m in sent:
            assert pipe.on_sensor(m, codecs.fill_image(Image(), imgs[m], "rgb8", header(stamp)), now=stamp) is None
        frame = None
        for k in range(200):  # the node's poll timer
            frame = frame or pipe.poll(stamp + 0.01 * k)
        assert frame is not None
        x, present = pipe.assemble(frame)
        assert present[0].tolist() == [m in sent for m in spec.modality_names]
        for i, m in enumerate(spec.modality_names):
            if m in sent:  # raw 0..255, no ImageNet normalisation, as AnySeg's MUSES loader feeds it
                np.testing.assert_allclose(x[0, i], imgs[m].transpose(2, 0, 1).astype(np.float32), rtol=1e-5)
        result = pipe.infer(frame)
        with torch.no_grad():
            xt, pt = torch.from_numpy(x), torch.from_numpy(present)
            logits = model(xt * pt[:, :, None, None, None].float(), pt)
        want = F.interpolate(logits, size=(128, 128), mode="bilinear", align_corners=False).argmax(1)[0].numpy()
        assert float((result.labels.astype(np.int64) == want).mean()) >= MIN_ARGMAX
