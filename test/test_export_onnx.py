"""ONNX export: the deployed graph, spec and checkpoint hash in metadata, parity gate, every model of the project."""
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

from equiseg_ros.checkpoint import save_checkpoint, sha256_file  # noqa: E402
from equiseg_ros.config import ModelConfig, to_dict  # noqa: E402
from equiseg_ros.inference._toy import ToyModel  # noqa: E402
from equiseg_ros.inference.backend import META_CHECKPOINT, META_MODEL, read_onnx_spec  # noqa: E402
from equiseg_ros.models.deploy import DeployedModel  # noqa: E402
from equiseg_ros.spec import synthetic_spec  # noqa: E402
from training.export import ExportError, export_onnx, main  # noqa: E402

SPEC2 = synthetic_spec(["rgb", "depth"])


def _run(path, x, present):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["labels", "confidence"], {"x": x, "present": present})


def test_deployed_model_outputs_and_matches_manual_softmax():
    torch.manual_seed(0)
    model = ToyModel(SPEC2).eval()
    x, present = torch.randn(2, 2, 3, 64, 32), torch.tensor([[True, True], [True, False]])
    labels, conf = DeployedModel(model)(x, present)
    assert labels.dtype == torch.uint8 and conf.dtype == torch.float16 and labels.shape == (2, 64, 32)
    logits = nn.functional.interpolate(model(x, present), size=(64, 32), mode="bilinear", align_corners=False)
    prob = logits.softmax(1)
    assert torch.equal(labels.long(), prob.argmax(1))
    assert torch.allclose(conf.float(), prob.max(1).values, atol=1e-3)


def test_toy_export_dynamic_two_sizes_metadata_and_single_file(tmp_path):
    torch.manual_seed(1)
    out = tmp_path / "toy.onnx"
    rep = export_onnx(ToyModel(SPEC2), SPEC2, out, (64, 96), "ab" * 32, dynamic=True, model_config={"name": "toy"})
    assert [p.name for p in tmp_path.iterdir()] == ["toy.onnx"]  # one file, no external .data, no temp left
    assert {p.size for p in rep.parity} == {(64, 96), (32, 64)}  # checked at two sizes, each with 2 masks
    assert len(rep.parity) == 4 and rep.min_agreement >= 0.999 and rep.sha256 == sha256_file(out)
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[META_CHECKPOINT] == "ab" * 32 and json.loads(meta[META_MODEL]) == {"name": "toy"}
    spec = read_onnx_spec(out)
    assert spec == SPEC2.with_input_size(64, 96) and spec.input_size == (64, 96)
    ins = {i.name: (i.type.tensor_type.elem_type, len(i.type.tensor_type.shape.dim)) for i in proto.graph.input}
    assert ins == {"x": (onnx.TensorProto.FLOAT, 5), "present": (onnx.TensorProto.BOOL, 2)}
    outs = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    assert outs == {"labels": onnx.TensorProto.UINT8, "confidence": onnx.TensorProto.FLOAT16}
    # A third size, batch 2, never seen during export.
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 128, 64)).astype(np.float32)
    labels, conf = _run(out, x, np.ones((2, 2), bool))
    assert labels.shape == (2, 128, 64) and labels.dtype == np.uint8 and conf.dtype == np.float16
    assert 1.0 / SPEC2.num_classes - 1e-3 <= conf.min() and conf.max() <= 1.0


def test_present_changes_onnx_output(tmp_path):
    """The mask must reach the graph (not be constant-folded into the all-present case)."""
    torch.manual_seed(2)
    out = tmp_path / "toy.onnx"
    export_onnx(ToyModel(SPEC2), SPEC2, out, (64, 64))
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 64, 64)).astype(np.float32)
    l_all, c_all = _run(out, x, np.array([[True, True]]))
    l_drop, c_drop = _run(out, x, np.array([[True, False]]))
    assert np.abs(c_all.astype(np.float32) - c_drop).max() > 1e-3
    # With depth marked absent, the depth input no longer matters (the toy model leaves it out of fusion).
    x2 = x.copy()
    x2[:, 1] = 0
    l_zero, c_zero = _run(out, x2, np.array([[True, False]]))
    np.testing.assert_array_equal(l_zero, l_drop)


class _TraceTrap(nn.Module):
    """Takes a data-dependent branch: the trace keeps the all-present branch, eager flips logits otherwise."""

    def __init__(self):
        super().__init__()
        self.inner = ToyModel(SPEC2)

    def forward(self, x, present):
        logits = self.inner(x, present)
        return logits if bool(present.all()) else -logits


def test_export_refuses_model_that_fails_parity(tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=r"disagrees with PyTorch, not writing .*present=\[True, False\]"):
        export_onnx(_TraceTrap(), SPEC2, out, (64, 64))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_rejects_bad_size():
    with pytest.raises(ExportError, match="multiples of 32"):
        export_onnx(ToyModel(SPEC2), SPEC2, "/nonexistent/x.onnx", (60, 64))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["equiseg", "m_segformer", "cmnext"])
def test_every_model_exports_with_parity_at_two_sizes(tmp_path, name):
    from equiseg_ros.models.build import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, decoder_dim=32, drop_path=0.0), SPEC2).eval()
    out = tmp_path / f"{name}.onnx"
    rep = export_onnx(model, SPEC2, out, (64, 64), dynamic=True, parity_sizes=[(64, 64), (96, 128)])
    assert {p.size for p in rep.parity} == {(64, 64), (96, 128)}
    assert all(p.passed and p.label_agreement >= 0.999 for p in rep.parity)
    assert rep.max_confidence_diff < 1e-2
    # Same pixels, depth marked absent: the exported graph must still see `present`.
    x = np.random.default_rng(4).standard_normal((1, 2, 3, 64, 64)).astype(np.float32)
    _, c_all = _run(out, x, np.array([[True, True]]))
    _, c_drop = _run(out, x, np.array([[True, False]]))
    assert np.abs(c_all.astype(np.float32) - c_drop).max() > 1e-3


@pytest.mark.slow
def test_cli_exports_checkpoint_with_its_hash(tmp_path, capsys):
    from equiseg_ros.models.build import build_model

    cfg = ModelConfig(name="segformer", decoder_dim=32, drop_path=0.0)
    torch.manual_seed(0)
    model = build_model(cfg, SPEC2)
    assert model.spec.modality_names == ("rgb",)  # SegFormer is the RGB-only baseline: its spec says so
    ckpt = save_checkpoint(tmp_path / "seg.pt", model.state_dict(), model.spec, {"model": to_dict(cfg)})
    out = tmp_path / "seg.onnx"
    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--size", "64", "96", "--opset", "18"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["size"] == [64, 96] and report["opset"] == 18 and report["min_agreement"] >= 0.999
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta[META_CHECKPOINT] == sha256_file(ckpt)
    assert json.loads(meta[META_MODEL])["name"] == "segformer"
    assert read_onnx_spec(out).input_size == (64, 96)
    # A missing checkpoint is a clear error, not a traceback.
    assert main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(out)]) == 1
    assert "nope.pt: checkpoint not found" in capsys.readouterr().err


def test_parity_on_a_given_real_sample(tmp_path):
    from training.export import load_sample

    rng = np.random.default_rng(5)
    np.savez(tmp_path / "frame.npz", x=rng.standard_normal((2, 3, 96, 64)).astype(np.float32),
             present=np.array([True, False]))
    x, present = load_sample(tmp_path / "frame.npz", SPEC2)
    assert x.shape == (1, 2, 3, 96, 64) and present.tolist() == [[True, False]]
    rep = export_onnx(ToyModel(SPEC2), SPEC2, tmp_path / "t.onnx", (64, 64), dynamic=True, sample=(x, present))
    assert rep.parity[0].size == (96, 64) and rep.parity[0].present == [True, False]
    np.savez(tmp_path / "bad.npz", image=np.zeros(3))
    with pytest.raises(ExportError, match="bad.npz: sample .npz needs an array 'x'"):
        load_sample(tmp_path / "bad.npz", SPEC2)
