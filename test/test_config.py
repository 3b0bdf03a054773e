"""The one YAML loader: typed dataclasses, --set overrides, errors naming file, key and expected type."""
from pathlib import Path

import pytest

from equiseg_ros.config import ConfigError, DataConfig, ModelConfig, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "datasets").glob("*.yaml")))
def test_dataset_configs_load(path):
    cfg = load_config(DataConfig, path)
    spec = cfg.spec()
    assert spec.modality_names == tuple(cfg.modalities)


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "models").glob("*.yaml")))
def test_model_configs_load(path):
    assert isinstance(load_config(ModelConfig, path), ModelConfig)


def test_overrides_and_types(tmp_path):
    cfg = load_config(DataConfig, ROOT / "config/datasets/synthetic.yaml",
                      ["image_size=64", "modalities=[rgb,lidar]", "conditions=[night]"])
    assert cfg.image_size == 64 and cfg.modalities == ["rgb", "lidar"] and cfg.conditions == ["night"]
    m = load_config(ModelConfig, None, ["decoder_dim=512", "cross_attention=false"])
    assert m.decoder_dim == 512 and m.cross_attention is False


def test_unknown_key_names_file_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("dataset: synthetic\nimage_sise: 64\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: image_sise: unknown key"):
        load_config(DataConfig, p)


def test_wrong_type_names_expected_type(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("image_size: big\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: image_size: expected int"):
        load_config(DataConfig, p)
    with pytest.raises(ConfigError, match=r"name: expected one of"):
        load_config(ModelConfig, None, ["name=unet"])
    with pytest.raises(ConfigError, match="image_size: must be a positive multiple of 32"):
        load_config(DataConfig, None, ["image_size=50"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(DataConfig, None, ["image_size"])


def test_missing_file_and_save_round_trip(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(DataConfig, tmp_path / "nope.yaml")
    cfg = load_config(DataConfig, None, ["image_size=96"])
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(DataConfig, out) == cfg


def test_depth_source_sets_the_depth_representation():
    assert load_config(DataConfig, None, ["dataset=deliver"]).spec().modality("depth").representation == "hha"
    cfg = load_config(DataConfig, None, ["dataset=deliver", "depth_source=depth"])
    assert cfg.spec().modality("depth").representation == "depth8"
