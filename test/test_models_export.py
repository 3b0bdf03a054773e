"""Each tiny model exports with the legacy ONNX exporter (opset 17, dynamic H/W) and matches ONNX Runtime at two
sizes, with ``present`` kept as a live input (it changes the ORT output)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from equiseg_ros.config import ModelConfig
from equiseg_ros.models.build import ARCHITECTURES, build_model
from equiseg_ros.spec import deliver_spec

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_export_matches_ort_at_two_sizes(arch, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=arch, backbone="mit_b0"), deliver_spec(["rgb", "depth"])).eval()
    m = model.num_modalities
    path = tmp_path / f"{arch}.onnx"
    x = torch.randn(1, m, 3, 64, 64)
    present = torch.ones(1, m, dtype=torch.bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x, present), str(path), dynamo=False, opset_version=17,
                          input_names=["x", "present"], output_names=["logits"],
                          dynamic_axes={"x": {0: "b", 3: "h", 4: "w"}, "present": {0: "b"}, "logits": {0: "b"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x", "present"]
    for h, w in ((64, 64), (96, 128)):
        xs = torch.randn(2, m, 3, h, w)
        ps = torch.ones(2, m, dtype=torch.bool)
        ps[1, m - 1] = False
        with torch.no_grad():
            ref = model(xs, ps).numpy()
        got = sess.run(None, {"x": xs.numpy(), "present": ps.numpy()})[0]
        assert got.shape == ref.shape == (2, 25, h // 4, w // 4)
        np.testing.assert_allclose(got, ref, atol=2e-4, rtol=1e-3)
    off = ps.clone()
    off[:, 0] = False
    changed = sess.run(None, {"x": xs.numpy(), "present": off.numpy()})[0]
    assert np.abs(changed - got).max() > 1e-4
