"""The other published formats: NVlabs MiT / mmseg SegFormer, HuggingFace SegFormer (hub names in .bin and
.safetensors, transformers >= 5 in-memory names), and UMMSS's released FSM against its golden fixture."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from equiseg_ros.checkpoint import load_checkpoint
from equiseg_ros.config import ModelConfig
from equiseg_ros.models.__main__ import main as models_main
from equiseg_ros.models.build import build_model
from equiseg_ros.spec import CITYSCAPES_CLASSES, deliver_spec

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference_models"


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"reference fixture {name} not found: looked for {path} (../shared must sit beside the repo)")
    return path


def _segformer(classes: int = 19, seed: int = 3) -> dict[str, torch.Tensor]:
    """Official-name SegFormer-B0 weights (encoder + head) with a given class count."""
    torch.manual_seed(seed)
    spec = deliver_spec(["rgb"])
    from dataclasses import replace

    spec = replace(spec, classes=tuple(f"c{i}" for i in range(classes)), palette=((0, 0, 0),) * classes)
    seg = build_model(ModelConfig(name="segformer", backbone="mit_b0"), spec)
    return {**seg.encoder.state_dict(), **seg.head.state_dict()}


def _to_hf_hub(sd: dict) -> dict:
    """peers.md §4's official -> HF table, written out independently of the code under test."""
    parts = {"norm1": "layer_norm_1", "norm2": "layer_norm_2", "attn.q": "attention.self.query",
             "attn.sr": "attention.self.sr", "attn.norm": "attention.self.layer_norm",
             "attn.proj": "attention.output.dense", "mlp.fc1": "mlp.dense1", "mlp.fc2": "mlp.dense2",
             "mlp.dwconv.dwconv": "mlp.dwconv.dwconv"}
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        if p[0].startswith("patch_embed"):
            out[f"segformer.encoder.patch_embeddings.{int(p[0][-1]) - 1}."
                f"{ {'proj': 'proj', 'norm': 'layer_norm'}[p[1]] }.{p[2]}"] = v
        elif p[0].startswith("block"):
            pre, rest, leaf = f"segformer.encoder.block.{int(p[0][-1]) - 1}.{p[1]}.", ".".join(p[2:-1]), p[-1]
            if rest == "attn.kv":
                c = v.shape[0] // 2
                out[pre + f"attention.self.key.{leaf}"], out[pre + f"attention.self.value.{leaf}"] = v[:c], v[c:]
            else:
                out[pre + f"{parts[rest]}.{leaf}"] = v
        elif p[0].startswith("norm"):
            out[f"segformer.encoder.layer_norm.{int(p[0][-1]) - 1}.{p[1]}"] = v
        elif p[0].startswith("linear_c"):
            out[f"decode_head.linear_c.{int(p[0][-1]) - 1}.proj.{p[-1]}"] = v
        elif p[0] == "linear_fuse":
            out[("decode_head.linear_fuse." if p[1] == "conv" else "decode_head.batch_norm.") + p[-1]] = v
        elif p[0] == "linear_pred":
            out[f"decode_head.classifier.{p[-1]}"] = v
    return out


# transformers 5.x conversion mapping for Segformer (hub name -> in-memory name), as published in its source
_HF5 = ((r"encoder\.patch_embeddings\.(\d+)\.", r"stages.\1.patch_embeddings."),
        (r"encoder\.block\.(\d+)\.", r"stages.\1.blocks."), (r"encoder\.layer_norm\.(\d+)", r"stages.\1.layer_norm"),
        ("attention.self.query", "attention.q_proj"), ("attention.self.key", "attention.k_proj"),
        ("attention.self.value", "attention.v_proj"),
        ("attention.self.sr", "attention.sequence_reduction.sequence_reduction"),
        ("attention.self.layer_norm", "attention.sequence_reduction.layer_norm"),
        ("attention.output.dense", "attention.o_proj"), ("mlp.dense1", "mlp.fc1"), ("mlp.dense2", "mlp.fc2"),
        ("layer_norm_1", "layernorm_before"), ("layer_norm_2", "layernorm_after"),
        ("decode_head.linear_c", "decode_head.linear_projections"))


def _to_hf5(hub: dict) -> dict:
    out = {}
    for k, v in hub.items():
        for a, b in _HF5:
            k = re.sub(a, b, k) if a.startswith("encoder") else k.replace(a, b)
        out[k] = v
    return out


def _write_safetensors(path: Path, sd: dict) -> None:
    header, blobs, off = {}, [], 0
    for k, v in sd.items():
        b = v.detach().contiguous().numpy().tobytes()
        header[k] = {"dtype": {torch.float32: "F32", torch.int64: "I64"}[v.dtype], "shape": list(v.shape),
                     "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


@pytest.mark.parametrize("flavour", ["hub_bin", "hub_safetensors", "transformers5"])
def test_hf_segformer_converts_to_the_same_weights(tmp_path, flavour):
    official = _segformer()
    hub = _to_hf_hub(official)
    if flavour == "hub_bin":
        src = tmp_path / "pytorch_model.bin"
        torch.save(hub, src)
    elif flavour == "hub_safetensors":
        src = tmp_path / "model.safetensors"
        _write_safetensors(src, hub)
    else:
        src = tmp_path / "in_memory.pth"
        v5 = _to_hf5(hub)
        assert "segformer.stages.0.blocks.0.attention.k_proj.weight" in v5
        assert "decode_head.linear_projections.0.proj.weight" in v5
        torch.save(v5, src)
    out = tmp_path / "hf.pt"
    assert models_main(["convert", "--format", "hf", str(src), "--out", str(out)]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["model"]["name"] == "segformer" and ckpt["config"]["model"]["mit_eps"] == [1e-5] * 4
    assert ckpt["spec"].classes == CITYSCAPES_CLASSES  # 19 classes -> the Cityscapes list
    for k, v in official.items():
        got = ckpt["model"][("encoder." if not k.startswith("linear") else "head.") + k]
        assert torch.equal(got, v), k


def test_nvlabs_imagenet_and_mmseg_files(tmp_path, capsys):
    official = _segformer(classes=25)
    enc = {k: v for k, v in official.items() if not k.startswith("linear")}
    torch.save({**enc, "head.weight": torch.randn(1000, 256), "head.bias": torch.randn(1000)}, tmp_path / "mit_b0.pth")
    out = tmp_path / "mseg.pt"
    assert models_main(["convert", "--format", "mit", str(tmp_path / "mit_b0.pth"), "--out", str(out),
                        "--model", "m_segformer"]) == 0
    assert "fine-tune" in capsys.readouterr().err
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["model"]["name"] == "m_segformer"
    assert all(torch.equal(ckpt["model"]["encoder." + k], v) for k, v in enc.items())
    head = {f"decode_head.{k}": v for k, v in official.items() if k.startswith("linear")}
    mmseg = {"meta": {}, "state_dict": {**{f"backbone.{k}": v for k, v in enc.items()}, **head,
                                        "decode_head.conv_seg.weight": torch.zeros(25, 256, 1, 1)}}
    torch.save(mmseg, tmp_path / "segformer.b0.city.pth")
    out2 = tmp_path / "seg.pt"
    assert models_main(["convert", "--format", "mit", str(tmp_path / "segformer.b0.city.pth"), "--out", str(out2)]) == 0
    seg = load_checkpoint(out2)
    assert seg["config"]["model"]["name"] == "segformer" and seg["spec"].num_classes == 25
    assert torch.equal(seg["model"]["head.linear_pred.weight"], official["linear_pred.weight"])
    assert seg["converted_from"]["dropped_keys"] == ["decode_head.conv_seg.weight"]


def test_ummss_fsm_reproduces_its_fixture():
    from equiseg_ros.models._state import load_state_dict_checked
    from equiseg_ros.models.ummss_fsm import UMMSSTokenSelection

    data = np.load(fixture("ums_fsm_io.npz"))
    fsm = UMMSSTokenSelection("mit_b0")
    load_state_dict_checked(fsm, torch.load(fixture("ums_fsm.pth"), weights_only=True))
    a = [torch.from_numpy(data[f"a_s{s}"]) for s in range(1, 5)]
    b = [torch.from_numpy(data[f"b_s{s}"]) for s in range(1, 5)]
    with torch.no_grad():
        fused, p = fsm.eval()(a, b)
    for s in range(4):
        ref = torch.from_numpy(data[f"fused_s{s + 1}"])
        assert float((fused[s] == ref).float().mean()) >= 0.9999, f"stage {s + 1}"
    np.testing.assert_allclose(p, data["p"], atol=1e-6)
