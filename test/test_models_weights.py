"""Official MiT checkpoints (strict, head dropped), the HuggingFace key mapping, and checked state loading."""
from __future__ import annotations

import pytest
import torch

from equiseg_ros.config import ModelConfig
from equiseg_ros.models.build import build_model, load_checked_checkpoint, load_state_dict_checked
from equiseg_ros.models.mit import MixTransformer, hf_to_official, mit_config
from equiseg_ros.spec import deliver_spec


def _official_ckpt(path, variant="mit_b0", seed=1):
    """A file laid out like the official mit_b*.pth: encoder keys plus the ImageNet classifier ``head.*``."""
    torch.manual_seed(seed)
    sd = MixTransformer(mit_config(variant)).state_dict()
    sd["head.weight"] = torch.randn(1000, mit_config(variant).embed_dims[-1])
    sd["head.bias"] = torch.randn(1000)
    torch.save(sd, path)
    return sd


def test_official_key_names():
    keys = set(MixTransformer(mit_config("mit_b0")).state_dict())
    for k in ("patch_embed1.proj.weight", "patch_embed4.norm.bias", "block1.0.attn.q.weight", "block1.1.attn.kv.bias",
              "block1.0.attn.sr.weight", "block3.1.attn.norm.weight", "block2.0.mlp.dwconv.dwconv.weight",
              "block4.1.mlp.fc2.bias", "norm4.weight"):
        assert k in keys, k
    assert not any(k.startswith("block4.") and ".attn.sr." in k for k in keys)  # sr only in stages 1-3


@pytest.mark.parametrize("arch", ["segformer", "m_segformer", "equiseg", "cmnext"])
def test_pretrained_round_trip_strict(arch, tmp_path):
    ref = _official_ckpt(tmp_path / "mit_b0.pth")
    model = build_model(ModelConfig(name=arch, backbone="mit_b0", pretrained=str(tmp_path / "mit_b0.pth")),
                        deliver_spec(["rgb", "depth", "event"]))
    got = model.encoder.state_dict()
    assert set(got) == set(ref) - {"head.weight", "head.bias"}
    for k, v in got.items():
        assert torch.equal(v, ref[k]), k


def test_pretrained_wrong_variant_names_the_key(tmp_path):
    _official_ckpt(tmp_path / "mit_b1.pth", "mit_b1")
    model = build_model(ModelConfig(name="m_segformer", backbone="mit_b0"), deliver_spec(["rgb"]))
    with pytest.raises(ValueError, match="patch_embed1.proj.weight"):
        model.load_pretrained_backbone(str(tmp_path / "mit_b1.pth"))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        model.load_pretrained_backbone(str(tmp_path / "missing.pth"))


def _official_to_hf(sd: dict) -> dict:
    """The HF conversion table of peers.md §4 applied forwards (independent of the code under test)."""
    out = {}
    block_parts = {"norm1": "layer_norm_1", "norm2": "layer_norm_2", "attn.q": "attention.self.query",
                   "attn.sr": "attention.self.sr", "attn.norm": "attention.self.layer_norm",
                   "attn.proj": "attention.output.dense", "mlp.fc1": "mlp.dense1", "mlp.fc2": "mlp.dense2",
                   "mlp.dwconv.dwconv": "mlp.dwconv.dwconv"}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0].startswith("patch_embed"):
            i = int(parts[0][-1]) - 1
            sub = {"proj": "proj", "norm": "layer_norm"}[parts[1]]
            out[f"segformer.encoder.patch_embeddings.{i}.{sub}.{parts[2]}"] = v
        elif parts[0].startswith("block"):
            i, j, rest, leaf = int(parts[0][-1]) - 1, parts[1], ".".join(parts[2:-1]), parts[-1]
            pre = f"segformer.encoder.block.{i}.{j}."
            if rest == "attn.kv":
                c = v.shape[0] // 2
                out[pre + f"attention.self.key.{leaf}"] = v[:c]
                out[pre + f"attention.self.value.{leaf}"] = v[c:]
            else:
                out[pre + f"{block_parts[rest]}.{leaf}"] = v
        elif parts[0].startswith("norm"):
            out[f"segformer.encoder.layer_norm.{int(parts[0][-1]) - 1}.{parts[1]}"] = v
        elif parts[0].startswith("linear_c"):
            out[f"decode_head.linear_c.{int(parts[0][-1]) - 1}.proj.{parts[-1]}"] = v
        elif parts[0] == "linear_fuse":
            out[("decode_head.linear_fuse." if parts[1] == "conv" else "decode_head.batch_norm.") + parts[-1]] = v
        elif parts[0] == "linear_pred":
            out[f"decode_head.classifier.{parts[-1]}"] = v
    return out


def test_hf_mapping_round_trip_and_load(tmp_path):
    torch.manual_seed(2)
    seg = build_model(ModelConfig(name="segformer", backbone="mit_b0"), deliver_spec(["rgb"]))
    official = {f"{k}": v for k, v in seg.encoder.state_dict().items()}
    official.update({k: v for k, v in seg.head.state_dict().items()})
    hf = _official_to_hf(official)
    assert "segformer.encoder.block.0.0.attention.self.key.weight" in hf
    assert "decode_head.batch_norm.running_mean" in hf
    back = hf_to_official(hf)
    assert set(back) == set(official)
    for k in official:
        assert torch.equal(back[k], official[k]), k
    bare = {k[len("segformer."):]: v for k, v in hf.items() if k.startswith("segformer.")}  # SegformerModel
    assert set(hf_to_official(bare)) == set(seg.encoder.state_dict())
    torch.save(hf, tmp_path / "hf.pth")
    other = build_model(ModelConfig(name="segformer", backbone="mit_b0"), deliver_spec(["rgb"]))
    other.load_pretrained_backbone(str(tmp_path / "hf.pth"))
    assert torch.equal(other.encoder.block2[1].attn.kv.weight, seg.encoder.block2[1].attn.kv.weight)
    with pytest.raises(ValueError, match="no mapping"):
        hf_to_official({"segformer.encoder.block.0.0.mystery.weight": torch.zeros(1)})


def test_load_state_dict_checked_names_first_mismatch():
    spec = deliver_spec(["rgb", "depth"])
    a = build_model(ModelConfig(name="equiseg", backbone="mit_b0"), spec)
    sd = a.state_dict()
    b = build_model(ModelConfig(name="equiseg", backbone="mit_b0"), spec)
    load_state_dict_checked(b, sd)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in sd.items())
    other = build_model(ModelConfig(name="equiseg", backbone="mit_b0", decoder_dim=128), spec)
    with pytest.raises(ValueError, match=r"head\.linear_c1\.proj\.weight.*shape"):
        load_state_dict_checked(other, sd)
    bad = dict(sd)
    bad.pop("encoder.norm1.weight")
    with pytest.raises(ValueError, match=r"missing key 'encoder\.norm1\.weight'"):
        load_state_dict_checked(b, bad)
    bad = dict(sd, extra_thing=torch.zeros(1))
    with pytest.raises(ValueError, match="unexpected key 'extra_thing'"):
        load_state_dict_checked(b, bad)
    with pytest.raises(ValueError, match="modalities"):
        load_checked_checkpoint(b, {"model": sd, "spec": deliver_spec(["rgb", "lidar"])})
    load_checked_checkpoint(b, {"model": sd, "spec": spec})
    seg = build_model(ModelConfig(name="segformer", backbone="mit_b0"), spec)  # spec narrowed to rgb
    load_checked_checkpoint(seg, {"model": seg.state_dict(), "spec": spec})
