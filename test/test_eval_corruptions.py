"""EMM / RMM / NM corruptions: exact zeroing, RMM rate, exact salt-and-pepper counts, events without Gaussian."""
from __future__ import annotations

import math

import pytest
import torch

from equiseg_ros.data.corruptions import (
    NM_LEVELS,
    emm,
    make_generator,
    nm,
    nm_level,
    rmm,
    salt_and_pepper,
    salt_pepper_indices,
)
from equiseg_ros.spec import deliver_spec, muses_spec


def _x(b=2, m=4, h=16, w=16, seed=0) -> torch.Tensor:
    return torch.randn(b, m, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_emm_zeroes_whole_modalities_only():
    x = _x()
    before = x.clone()
    y = emm(x, [True, False, True, False])
    assert torch.equal(x, before)  # input untouched
    assert (y[:, 1] == 0).all() and (y[:, 3] == 0).all()
    assert torch.equal(y[:, 0], x[:, 0]) and torch.equal(y[:, 2], x[:, 2])
    per_sample = emm(x, torch.tensor([[True, True, True, False], [False, True, True, True]]))
    assert (per_sample[0, 3] == 0).all() and (per_sample[1, 0] == 0).all()
    assert torch.equal(per_sample[0, :3], x[0, :3]) and torch.equal(per_sample[1, 1:], x[1, 1:])
    with pytest.raises(ValueError, match="keep_mask"):
        emm(x, [True, False])


@pytest.mark.parametrize("rate", [0.25, 0.5, 0.75])
def test_rmm_zero_fraction_matches_rate(rate):
    x = torch.rand(1, 3, 3, 128, 128) + 1.0  # no zeros before
    y = rmm(x, [False, True, True], rate, make_generator(1))
    for m in (1, 2):
        frac = float((y[:, m] == 0).float().mean())
        assert abs(frac - rate) < 0.01, (m, frac)
    assert torch.equal(y[:, 0], x[:, 0])
    kept = y[:, 1] != 0
    assert torch.equal(y[:, 1][kept], x[:, 1][kept])  # survivors unchanged
    # per element, not per pixel: the 3 channels of a pixel are dropped independently
    drops = (y[0, 1] == 0)
    assert not torch.equal(drops[0], drops[1])


def test_rmm_is_seeded():
    x = _x()
    a = rmm(x, [True, False, False, True], 0.5, make_generator(7))
    b = rmm(x, [True, False, False, True], 0.5, make_generator(7))
    c = rmm(x, [True, False, False, True], 0.5, make_generator(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_salt_pepper_exact_counts():
    t = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(3))  # unique values, one max, one min
    density = 0.1
    n = math.ceil(density * t.numel() * 0.5)
    salt, pepper = salt_pepper_indices(t.numel(), density, make_generator(5))
    assert len(salt) == len(pepper) == n
    assert len(set(salt.tolist()) | set(pepper.tolist())) == 2 * n  # unique and disjoint
    y = salt_and_pepper(t, density, make_generator(5))
    flat, src = y.view(-1), t.view(-1)
    assert (flat[salt] == t.max()).all() and (flat[pepper] == t.min()).all()
    untouched = torch.ones(t.numel(), dtype=torch.bool)
    untouched[salt] = False
    untouched[pepper] = False
    assert torch.equal(flat[untouched], src[untouched])
    hi_elsewhere = int(untouched[src.argmax()])  # the original max element survives unless it was drawn
    lo_elsewhere = int(untouched[src.argmin()])
    assert int((y == t.max()).sum()) == n + hi_elsewhere
    assert int((y == t.min()).sum()) == n + lo_elsewhere


@pytest.mark.parametrize("spec_fn", [deliver_spec, muses_spec])
@pytest.mark.parametrize("level", ["low", "mid", 2])
def test_nm_salt_pepper_everywhere_gaussian_except_events(spec_fn, level):
    spec = spec_fn()
    names = spec.modality_names
    x = torch.randn(2, len(names), 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = nm(x, level, names, make_generator(11))
    _, density, std = nm_level(level)
    # replay: salt-and-pepper on every modality in order with the same generator, then the Gaussian draws
    g = make_generator(11)
    sp = [salt_and_pepper(x[:, m], density, g) for m in range(len(names))]
    n = math.ceil(density * x[:, 0].numel() * 0.5)
    for m, name in enumerate(names):
        if name == "event":
            assert torch.equal(y[:, m], sp[m])  # events: salt-and-pepper only, no Gaussian
            assert int((y[:, m] == x[:, m].max()).sum()) in (n, n + 1)
            assert int((y[:, m] == x[:, m].min()).sum()) in (n, n + 1)
        else:
            noise = y[:, m] - sp[m]
            assert abs(float(noise.std()) - std) < 0.15 * std and abs(float(noise.mean())) < 0.1 * std
    assert torch.equal(y, nm(x, level, names, make_generator(11)))  # reproducible


def test_nm_levels_and_errors():
    assert NM_LEVELS == {"low": (0.05, 0.1), "mid": (0.1, 0.2), "high": (0.2, 0.5)}
    assert nm_level(0)[0] == "low" and nm_level("MID")[0] == "mid"
    with pytest.raises(ValueError, match="level"):
        nm_level("extreme")
    with pytest.raises(ValueError, match="modality_names"):
        nm(_x(), "low", ["rgb"])
