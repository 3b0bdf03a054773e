"""Model contract: shapes for every subset of present modalities, masking, features, gradients (tiny MiT-B0, 64 px)."""
from __future__ import annotations

import itertools

import pytest
import torch

from equiseg_ros.config import ModelConfig
from equiseg_ros.models.build import ARCHITECTURES, build_model
from equiseg_ros.spec import deliver_spec

SIZE = 64


def _model(arch: str, modalities=("rgb", "depth", "event"), **kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(name=arch, backbone="mit_b0", **kw), deliver_spec(list(modalities)))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_shapes_for_every_subset(arch):
    model = _model(arch).eval()
    m = model.num_modalities
    subsets = torch.tensor(list(itertools.product([True, False], repeat=m)))  # includes all-absent
    x = torch.randn(len(subsets), m, 3, SIZE, SIZE)
    with torch.no_grad():
        out = model(x, subsets, return_features=True)
    assert out["logits"].shape == (len(subsets), 25, SIZE // 4, SIZE // 4)
    assert torch.isfinite(out["logits"]).all()
    assert len(out["modal_features"]) == m
    for s, f in enumerate(out["fused_features"]):
        assert f.shape[2:] == (SIZE // 2 ** (s + 2),) * 2
        for mod in out["modal_features"]:
            assert mod[s].shape == f.shape


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_absent_modality_changes_nothing(arch):
    """Changing an absent modality's input leaves the output unchanged; marking it absent changes the output.

    Row j of the batch has modality j absent (one forward for all j)."""
    model = _model(arch).eval()
    m = model.num_modalities
    x = torch.randn(m, m, 3, SIZE, SIZE)
    present = ~torch.eye(m, dtype=torch.bool)
    x2 = x.clone()
    for j in range(m):
        x2[j, j] = torch.randn(3, SIZE, SIZE) * 5
    with torch.no_grad():
        a, b = model(x, present), model(x2, present)
        full = model(x, torch.ones(m, m, dtype=torch.bool))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    for j in range(m):
        assert (full[j] - a[j]).abs().max() > 1e-4, f"modality {j}: present has no effect"


def test_benchmark_semantics_mean_includes_zero_input():
    """M-SegFormer: present all true with a zeroed input averages the zeros in; absent leaves them out."""
    model = _model("m_segformer").eval()
    x = torch.randn(1, 3, 3, SIZE, SIZE)
    x[:, 2] = 0
    with torch.no_grad():
        zero_in = model(x, torch.tensor([[True, True, True]]), return_features=True)["fused_features"]
        left_out = model(x, torch.tensor([[True, True, False]]), return_features=True)["fused_features"]
        feats = model(x, torch.ones(1, 3, dtype=torch.bool), return_features=True)["modal_features"]
    torch.testing.assert_close(zero_in[0], sum(f[0] for f in feats) / 3)
    torch.testing.assert_close(left_out[0], (feats[0][0] + feats[1][0]) / 2)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_gradients_reach_every_parameter(arch):
    model = _model(arch, drop_path=0.0).train()  # stochastic depth could drop a whole block for both samples
    x = torch.randn(2, 3, 3, SIZE, SIZE)
    out = model(x, torch.ones(2, 3, dtype=torch.bool), return_features=True)
    loss = out["logits"].square().mean() + sum(f.square().mean() for f in out["fused_features"])
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no (finite) gradient for {missing[:5]}"
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, f"zero gradient for {zero[:5]}"


def test_all_absent_is_finite_and_trains():
    model = _model("equiseg").train()
    x = torch.randn(1, 3, 3, SIZE, SIZE)
    out = model(x, torch.zeros(1, 3, dtype=torch.bool))
    out.mean().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_segformer_uses_first_modality_only():
    model = _model("segformer")
    assert model.num_modalities == 1 and model.spec.modality_names == ("rgb",)


@pytest.mark.parametrize("kw", [{"fusion": "mean"}, {"cross_attention": False}, {"residual": False}])
def test_equiseg_ablations_run_and_mask(kw):
    model = _model("equiseg", **kw).eval()
    x = torch.randn(2, 3, 3, SIZE, SIZE)
    present = torch.tensor([[True, False, True], [False, False, True]])
    x2 = x.clone()
    x2[:, 1] = 7.0
    with torch.no_grad():
        torch.testing.assert_close(model(x, present), model(x2, present), rtol=0, atol=1e-5)
    assert (model.cmtb[0][0].mhca is None) == (kw.get("cross_attention") is False)


def test_bad_input_shape_names_the_problem():
    model = _model("m_segformer")
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 3, 3, 48, 48), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="present must be"):
        model(torch.zeros(1, 3, 3, 64, 64), torch.ones(1, 2, dtype=torch.bool))


def test_cross_attention_key_mask_hides_absent_maps():
    from equiseg_ros.models.fusion import CrossModalAttention

    torch.manual_seed(0)
    att = CrossModalAttention(16, 2, 2).eval()
    q = torch.randn(2, 16, 8, 8)
    kv = [torch.randn(2, 16, 8, 8) for _ in range(3)]
    mask = torch.tensor([[True, False, True], [False, False, False]])
    changed = [kv[0], kv[1] * 9 + 3, kv[2]]
    with torch.no_grad():
        a, b = att(q, kv, mask), att(q, changed, mask)
        only = att(q, [kv[0], kv[2]], mask[:, [0, 2]])
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[0], only[0])  # hiding a map == leaving it out
    assert torch.equal(a[1], torch.zeros_like(a[1]))  # nothing present: no attention output, no NaN
