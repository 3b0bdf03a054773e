"""Modality balance (EQUISeg Table 3) on real model features and on constructed ones."""
from __future__ import annotations

import math

import torch

from equiseg_ros.config import ModelConfig
from equiseg_ros.models.analysis import ModalityBalance, modality_balance
from equiseg_ros.models.build import build_model
from equiseg_ros.spec import deliver_spec


def test_constructed_features_give_known_similarities():
    f = torch.randn(2, 8, 4, 4)
    feats = {"modal_features": [[f] * 4, [-f] * 4, [torch.zeros_like(f)] * 4], "fused_features": [f] * 4}
    out = ModalityBalance(["a", "b", "c"])
    out.update(feats)
    res = out.compute()
    assert math.isclose(res["a"]["mean"], 1.0, abs_tol=1e-5)
    assert math.isclose(res["b"]["mean"], -1.0, abs_tol=1e-5)
    assert math.isclose(res["c"]["mean"], 0.0, abs_tol=1e-5)


def test_absent_samples_are_not_counted():
    f = torch.randn(2, 8, 4, 4)
    g = f.clone()
    g[1] = -f[1]  # sample 1 anti-correlated, but absent for modality "a"
    acc = ModalityBalance(["a"], mode="pixel")
    acc.update({"modal_features": [[g] * 4], "fused_features": [f] * 4}, torch.tensor([[True], [False]]))
    assert math.isclose(acc.compute()["a"]["mean"], 1.0, abs_tol=1e-5)
    never = ModalityBalance(["a"])
    never.update({"modal_features": [[g] * 4], "fused_features": [f] * 4}, torch.tensor([[False], [False]]))
    assert math.isnan(never.compute()["a"]["mean"])


def test_balance_on_m_segformer_features():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="m_segformer", backbone="mit_b0"), deliver_spec(["rgb", "depth"])).eval()
    x = torch.randn(2, 2, 3, 64, 64)
    res = modality_balance(model, x, torch.ones(2, 2, dtype=torch.bool))
    assert set(res) == {"rgb", "depth"}
    for v in res.values():
        assert len(v["stages"]) == 4 and all(-1.0 <= s <= 1.0 for s in v["stages"])
    # with depth absent the fused feature IS the rgb feature
    res = modality_balance(model, x, torch.tensor([[True, False], [True, False]]))
    assert all(math.isclose(s, 1.0, abs_tol=1e-4) for s in res["rgb"]["stages"])
    assert math.isnan(res["depth"]["mean"])
