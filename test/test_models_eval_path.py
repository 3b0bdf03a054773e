"""Eager inference takes faster routes (channels-last maps, the re-associated SegFormer head) that must compute the
published function: checked here against the plain route on non-trivial weights and BatchNorm statistics."""
from __future__ import annotations

import pytest
import torch

from equiseg_ros.config import ModelConfig
from equiseg_ros.models.build import build_model
from equiseg_ros.models.fusion import stack_maps
from equiseg_ros.models.head import SegFormerHead
from equiseg_ros.models.mit import map_to_tokens, tokens_to_map
from equiseg_ros.spec import deliver_spec


def _randomise_bn(model: torch.nn.Module, seed: int = 3) -> None:
    """Trained-looking BatchNorm buffers and affine parameters (defaults would make the BN fold trivial)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
            m.weight.data.copy_(torch.randn(c, generator=g))
            m.bias.data.copy_(torch.randn(c, generator=g))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_head_reassociated_equals_published():
    torch.manual_seed(0)
    head = SegFormerHead((32, 64, 160, 256), 7, 48)
    _randomise_bn(head)
    head.eval()
    feats = [torch.randn(2, c, 64 // 2 ** s, 48 // 2 ** s) for s, c in enumerate((32, 64, 160, 256))]
    with torch.inference_mode():
        fast = head(feats)
        SegFormerHead.reassociate = False
        try:
            ref = head(feats)
        finally:
            SegFormerHead.reassociate = True
    assert fast.shape == ref.shape == (2, 7, 64, 48)
    assert fast.is_contiguous()
    assert _rel(fast, ref) < 1e-5


def test_head_training_uses_published_route():
    """In training BatchNorm uses batch statistics: the fold would be wrong, so the published route must run."""
    torch.manual_seed(0)
    head = SegFormerHead((8, 16, 24, 32), 3, 16).train()
    feats = [torch.randn(2, c, 32 // 2 ** s, 32 // 2 ** s) for s, c in enumerate((8, 16, 24, 32))]
    out = head(feats)
    # batch statistics were used and updated: running_mean moved away from its initial zeros
    assert head.linear_fuse.bn.running_mean.abs().sum() > 0
    out.sum().backward()
    assert head.linear_fuse.conv.weight.grad is not None


@pytest.mark.parametrize("arch", ["equiseg", "cmnext", "m_segformer"])
def test_models_fast_eval_equals_published(arch):
    """Whole models (channels-last maps and the head) against the published route on the same weights."""
    torch.manual_seed(0)
    spec = deliver_spec()
    model = build_model(ModelConfig(name=arch, backbone="mit_b0", drop_path=0.0), spec)
    _randomise_bn(model)
    model.eval()
    x = torch.randn(1, 4, 3, 64, 96)
    present = torch.tensor([[True, False, True, True]])
    with torch.inference_mode():
        fast = model(x, present)
        SegFormerHead.reassociate = False
        try:
            ref = model(x.contiguous(), present)
        finally:
            SegFormerHead.reassociate = True
    assert _rel(fast, ref) < 1e-5


def test_layout_helpers_keep_values():
    x = torch.randn(2, 12, 5, 8)
    t = map_to_tokens(x)
    m = tokens_to_map(t.contiguous(), 5, 8)
    assert m.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(m, x)
    for batch in (1, 2):
        maps = [torch.randn(batch, 6, 4, 3).contiguous(memory_format=torch.channels_last) for _ in range(3)]
        st = stack_maps(maps)
        assert torch.equal(st, torch.stack(maps, 1))
        assert st[:, 1].stride()[1:] == (1, 3 * 6, 6)  # each slice: channels innermost, dense rows
    assert st[:1, 1].is_contiguous(memory_format=torch.channels_last)


def test_exclusive_max_is_masked_max_bitwise():
    """EQUISeg's shared prefix/suffix maxima equal the masked max over the other present maps, bit for bit."""
    from equiseg_ros.models.equiseg import _exclusive_max
    from equiseg_ros.models.fusion import masked_max

    g = torch.Generator().manual_seed(5)
    for m in (2, 3, 4):
        stack = torch.randn(3, m, 5, 4, 6, generator=g)
        present = torch.rand(3, m, generator=g) > 0.4
        present[0] = True
        for i, got in enumerate(_exclusive_max(stack, present)):
            others = (torch.arange(m) != i)[None, :]
            assert torch.equal(got, masked_max(stack, present & others)), (m, i, present)


@pytest.mark.parametrize("arch", ["equiseg", "cmnext", "m_segformer"])
def test_summary_counts_published_and_executed_macs(arch):
    """``summary`` (meta device) counts the published head and the re-associated one, for every architecture."""
    from equiseg_ros.models.__main__ import summarize

    out = summarize(ModelConfig(name=arch, backbone="mit_b0"), deliver_spec(), 64)
    assert 0 < out["gmacs_executed"] < out["gmacs"]
    assert SegFormerHead.reassociate is True
