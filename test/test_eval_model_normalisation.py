"""Evaluation feeds a model with the normalisation its weights came with, not the dataset preset's.

A converted AnySeg M-SegFormer expects MUSES images as raw 0-255 values (its spec: mean 0, std 1/255); the project's
own MUSES preset uses ImageNet statistics. Refusing such a model made published weights impossible to score.
"""
from dataclasses import replace

import numpy as np
import pytest

from equiseg_ros.config import DataConfig
from equiseg_ros.data import synthetic as G
from training.evaluate import EvalError, make_loader


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    assert G.main(["--out", str(root), "--frames", "2", "--size", "64", "--seed", "3", "--splits", "val:1",
                   "--workers", "1"]) == 0
    return DataConfig(dataset="synthetic", root=str(root), modalities=["rgb", "depth"], image_size=64)


def _first_x(cfg, spec):
    batch = next(iter(make_loader(cfg, spec, "val", batch_size=2, num_workers=0)))
    return batch["x"].numpy()


def test_raw_0_255_model_gets_raw_values(data):
    own = data.spec()
    raw = replace(own, modalities=tuple(replace(m, mean=(0.0,) * 3, std=(1 / 255,) * 3) for m in own.modalities))
    x_own, x_raw = _first_x(data, own), _first_x(data, raw)
    assert x_raw.min() >= 0 and x_raw.max() <= 255 and x_raw.max() > 100  # 8-bit values, unnormalised
    # the same frames: undoing each spec's normalisation gives the same 8-bit representation
    for i, m in enumerate(own.modalities):
        mean = np.array(m.mean, np.float32)[:, None, None]
        std = np.array(m.std, np.float32)[:, None, None]
        np.testing.assert_allclose((x_own[:, i] * std + mean) * 255, x_raw[:, i], atol=1e-3)


def test_other_representation_is_still_refused(data):
    own = data.spec()
    other = replace(own, modalities=(replace(own.modalities[0], representation="hha"), *own.modalities[1:]))
    with pytest.raises(EvalError, match="rgb.*read as"):
        make_loader(data, other, "val", batch_size=1, num_workers=0)
