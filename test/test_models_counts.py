"""Parameter and multiply-accumulate counts against the papers' / reference figures (meta device: no memory)."""
from __future__ import annotations

import json

import pytest
import torch

from equiseg_ros.config import ModelConfig
from equiseg_ros.models.__main__ import main, make_spec, summarize
from equiseg_ros.models.build import build_model, count_params
from equiseg_ros.models.mit import MixTransformer, mit_config
from equiseg_ros.spec import deliver_spec

RGBDEL = ["rgb", "depth", "event", "lidar"]


def _params(name: str, modalities=RGBDEL, backbone: str = "mit_b2") -> int:
    with torch.device("meta"):
        return count_params(build_model(ModelConfig(name=name, backbone=backbone), deliver_spec(modalities)))


@pytest.mark.parametrize("variant,expected", [("mit_b0", 3.32e6), ("mit_b2", 24.20e6)])
def test_mit_encoder_params(variant, expected):
    with torch.device("meta"):
        n = count_params(MixTransformer(mit_config(variant)))
    assert abs(n - expected) / expected < 0.005, n


def test_equiseg_b2_params_near_paper():
    n = _params("equiseg")
    assert abs(n - 52.77e6) / 52.77e6 < 0.03, n


@pytest.mark.parametrize("modalities,expected", [(RGBDEL, 58.73e6), (["rgb"], 25.79e6)])
def test_cmnext_b2_params(modalities, expected):
    n = _params("cmnext", modalities)
    assert abs(n - expected) / expected < 0.02, n


def test_cmnext_b2_macs_at_512():
    out = summarize(ModelConfig(name="cmnext", backbone="mit_b2"), make_spec(RGBDEL, 25), 512)
    assert abs(out["gmacs"] - 65.4) / 65.4 < 0.05, out
    assert out["gflops"] == pytest.approx(2 * out["gmacs"], rel=1e-3)


def test_head_widths_follow_the_papers():
    """SegFormer-B2 768, M-SegFormer 768 even at B0, CMNeXt-B2 512 (peers.md §4)."""
    with torch.device("meta"):
        spec = deliver_spec(RGBDEL)
        assert build_model(ModelConfig(name="segformer", backbone="mit_b2"), spec).head.embed_dim == 768
        assert build_model(ModelConfig(name="m_segformer", backbone="mit_b0"), spec).head.embed_dim == 768
        assert build_model(ModelConfig(name="cmnext", backbone="mit_b2"), spec).head.embed_dim == 512
        assert build_model(ModelConfig(name="cmnext", backbone="mit_b0"), spec).head.embed_dim == 256


def test_summary_cli_prints_one_json_line(capsys):
    assert main(["summary", "--model", "m_segformer", "--backbone", "mit_b0", "--modalities", "rgb,depth",
                 "--classes", "19", "--size", "64"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["classes"] == 19 and out["modalities"] == ["rgb", "depth"]
    assert out["params"] > 3.32e6 and out["gmacs"] > 0


def test_summary_cli_rejects_unknown_modality(capsys):
    assert main(["summary", "--modalities", "rgb,sonar", "--params-only"]) == 2
    assert "sonar" in capsys.readouterr().err
