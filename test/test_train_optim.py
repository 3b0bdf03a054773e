"""Optimiser groups, the WarmupPolyLR schedule, modality-subset sampling and the exact-resume sampler."""
import torch
from torch import nn

from training._data import ResumableSampler
from training.config import OptimConfig
from training.methods import random_subsets
from training.optim import WarmupPolyLR, build_optimizer


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)


def test_no_weight_decay_on_1d_parameters():
    net = _Net()
    opt = build_optimizer([("", net)], OptimConfig(lr=1e-3, weight_decay=0.01))
    by_id = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in net.named_parameters():
        assert by_id[id(p)] == (0.01 if p.ndim > 1 else 0.0), name
    opt = build_optimizer([("", net)], OptimConfig(lr=1e-3, head_lr_mult=10.0))
    head = {id(p) for p in net.head.parameters()}
    for g in opt.param_groups:
        assert g["lr"] == (1e-2 if id(g["params"][0]) in head else 1e-3)


def test_warmup_poly_schedule_and_state_round_trip():
    net = _Net()
    cfg = OptimConfig(lr=1.0, warmup_iters=10, warmup_ratio=0.1, power=0.9)
    opt = build_optimizer([("", net)], cfg)
    sched = WarmupPolyLR.build(opt, cfg, total_iters=100, iters_per_epoch=20)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert abs(lrs[0] - 0.1) < 1e-9 and abs(lrs[5] - 0.55) < 1e-9 and abs(lrs[10] - 1.0) < 1e-9
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))  # strictly decreasing after warmup
    horizon = 100 + 20  # the reference's (epochs + 1) * iters_per_epoch: the last step keeps a non-zero lr
    assert abs(lrs[99] - (1 - 89 / (horizon - 10)) ** 0.9) < 1e-9
    opt2 = build_optimizer([("", _Net())], cfg)
    sched2 = WarmupPolyLR.build(opt2, cfg, total_iters=100, iters_per_epoch=20)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    # warmup given in epochs (the reference's 10 epochs) when warmup_iters is unset
    s3 = WarmupPolyLR.build(build_optimizer([("", _Net())], OptimConfig(warmup_epochs=2)), OptimConfig(
        warmup_epochs=2), total_iters=100, iters_per_epoch=7)
    assert s3.warmup_iters == 14


def test_random_subsets_are_non_empty_and_cover_all():
    g = torch.Generator().manual_seed(0)
    keep = random_subsets(3000, 4, generator=g)
    assert keep.shape == (3000, 4) and bool(keep.any(1).all())
    codes = {tuple(r) for r in keep.tolist()}
    assert len(codes) == 15
    full = random_subsets(2000, 4, full_prob=0.5, generator=g).all(1).float().mean()
    assert 0.45 < full < 0.6  # 0.5 + 0.5/15


def test_resumable_sampler_continues_the_same_epoch_order():
    data = list(range(23))
    for world in (1, 2):
        for rank in range(world):
            s = ResumableSampler(data, world, rank, shuffle=True, seed=7)
            s.set_epoch(3)
            full = list(iter(s))
            s.start = 6
            assert list(iter(s)) == full[6:] and len(s) == len(full) - 6
    a, b = ResumableSampler(data, 2, 0, True, 7), ResumableSampler(data, 2, 1, True, 7)
    a.set_epoch(1)
    b.set_epoch(1)
    assert set(a) | set(b) == set(data)  # ranks share the epoch between them
