"""Issue 15 recipe switches: masking.mode (UMMSS per-batch k ~ U{1..M} vs per-sample subsets), the masked samples'
present flags, FSM teacher normalisation and the Table 4 "Basic" 0.5/0.5 mode, the SGM KL reduction, init_from,
and the paper-scale recipes."""
from pathlib import Path

import numpy as np
import pytest
import torch

from equiseg_ros.checkpoint import save_checkpoint
from equiseg_ros.config import ModelConfig
from equiseg_ros.models.build import build_model
from equiseg_ros.spec import synthetic_spec
from training.config import MaskingConfig, load_train_config
from training.losses import SGMLoss
from training.methods import Method, draw_keep, ummss_subset, unify_teachers

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "config/train/tiny_test.yaml"
RECIPES = ROOT / "config/train"


def _cfg(**kw):
    return load_train_config(TINY, ["data.root=/nonexistent"] + [f"{k}={v}" for k, v in kw.items()])


def _tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = build_model(ModelConfig(name="m_segformer", backbone="mit_b0", decoder_dim=32, pretrained=None),
                    synthetic_spec())
    return m.eval().requires_grad_(False)


def _batch(b: int = 2, size: int = 32):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(b, 4, 3, size, size, generator=g)
    present = torch.ones(b, 4, dtype=torch.bool)
    labels = torch.randint(0, 13, (b, size, size), generator=g)
    return x, present, labels


def test_ummss_draw_is_one_subset_per_batch_with_k_uniform():
    g = torch.Generator().manual_seed(0)
    ks, per_k_kept = [], np.zeros((5, 4))
    for _ in range(3000):
        keep = ummss_subset(3, 4, generator=g)
        assert keep.shape == (3, 4) and (keep == keep[0]).all() and keep[0].any()
        k = int(keep[0].sum())
        ks.append(k)
        per_k_kept[k] += keep[0].numpy()
    share = np.bincount(ks, minlength=5)[1:] / len(ks)
    assert np.abs(share - 0.25).max() < 0.035, share  # k ~ U{1..4}
    for k in (1, 2, 3):  # given k, every modality is one of the k equally often
        frac = per_k_kept[k] / per_k_kept[k].sum()
        assert np.abs(frac - 0.25).max() < 0.06, (k, frac)


def test_subsets_mode_is_uniform_over_the_15_subsets_per_sample():
    g = torch.Generator().manual_seed(1)
    keep = draw_keep("subsets", 6000, 4, generator=g)
    codes = (keep.long() * (2 ** torch.arange(4))).sum(1).numpy()
    share = np.bincount(codes, minlength=16)[1:] / len(codes)
    assert codes.min() >= 1 and np.abs(share - 1 / 15).max() < 0.02
    k_share = np.bincount(keep.sum(1).numpy(), minlength=5)[1:] / len(codes)
    assert abs(k_share[1] - 6 / 15) < 0.03  # k is not uniform here: two of four is drawn 6/15 of the time
    assert not (keep == keep[0]).all()  # per sample


def test_masking_prob_and_none_and_auto():
    g = torch.Generator().manual_seed(2)
    assert draw_keep("none", 3, 4).all()
    assert draw_keep("ummss", 3, 4, prob=0.0, generator=g).all()
    full = [bool(draw_keep("ummss", 2, 4, prob=0.5, generator=g).all()) for _ in range(2000)]
    assert 0.55 < np.mean(full) < 0.7  # 1/2 unmasked + 1/2 * 1/4 (k = 4 drawn)
    mc = MaskingConfig()
    assert mc.resolved_mode("rmmss_stage1") == "ummss" and mc.resolved_mode("rmmss_stage2") == "ummss"
    assert mc.resolved_mode("equiseg") == "none" and mc.resolved_mode("supervised") == "none"
    with pytest.raises(ValueError):
        draw_keep("bogus", 2, 4)


def test_masked_inputs_are_zeroed_and_flagged_or_zero_only():
    x, present, _ = _batch(64, 8)
    for zero_only, expect_flagged in ((0.0, True), (1.0, False)):
        method = Method(_cfg(**{"masking.mode": "subsets", "masking.zero_only_prob": zero_only}), 25, 255, {},
                        torch.no_grad)
        torch.manual_seed(0)
        xs, ps, keep = method._mask(x, present)
        assert (xs[~keep] == 0).all() and torch.equal(xs[keep], x[keep])
        assert torch.equal(ps, keep if expect_flagged else present)
    method = Method(_cfg(**{"masking.mode": "subsets", "masking.zero_only_prob": 0.5}), 25, 255, {}, torch.no_grad)
    torch.manual_seed(0)
    _, ps, keep = method._mask(x, present)
    flagged = (ps == keep).all(1) & ~keep.all(1)
    assert 0.2 < flagged.float().mean() < 0.8  # a mix of both semantics


def test_unify_teachers_puts_both_on_one_scale():
    g = torch.Generator().manual_seed(3)
    t_logits = torch.randn(2, 5, 4, 4, generator=g)
    r_logits = 7.0 * torch.randn(2, 5, 4, 4, generator=g) + 3.0
    pt = torch.randn(2, 5, 8, generator=g)
    scale = torch.rand(2, 1, 8, generator=g) * 20 + 5
    pr = pt.flip(1) * scale  # another pattern over classes, 5-25x the magnitude per channel
    mask = torch.tensor([[True, True, True, False, True], [True, True, True, True, True]])
    tl, rl, tp, rp = unify_teachers(t_logits, r_logits, [[(pt, mask)]], [[(pr, mask)]])
    for lg in (tl, rl):
        assert torch.allclose(lg.exp().sum(1), torch.ones(2, 4, 4), atol=1e-5)
    assert torch.allclose(torch.softmax(rl, 1), torch.softmax(r_logits, 1), atol=1e-6)  # KD targets unchanged
    m = mask[..., None].float()
    rms = [((p * p * m).sum(1) / m.sum(1)).sqrt() for p in (tp[0][0][0], rp[0][0][0])]
    assert torch.allclose(rms[0], rms[1], rtol=1e-5)
    assert torch.equal(tp[0][0][0], pt)  # the full teacher's prototypes keep their scale
    # raw values: a max-selection would take the robust teacher almost everywhere; unified: about half
    raw_share = (pr.abs() > pt.abs())[mask].float().mean()
    uni_share = (rp[0][0][0].abs() > pt.abs())[mask].float().mean()
    assert raw_share > 0.9 and 0.2 < uni_share < 0.8


def test_fsm_basic_mode_weighs_the_two_teachers_half_half():
    teacher, robust, student = _tiny_model(0), _tiny_model(1), _tiny_model(2)
    x, present, labels = _batch()
    common = {"loss.hpdm_weight": 0.0, "masking.robust_teacher_input": "full"}
    basic = Method(_cfg(method="rmmss_stage2", **{"teachers.full": "t", "teachers.robust": "r",
                                                   "loss.fsm_mode": "basic", **common}),
                   13, 255, {"full": teacher, "robust": robust}, torch.no_grad)
    assert basic.fsm == {}
    parts = {}
    for name, teachers in (("full", {"full": teacher}), ("robust", {"full": robust})):
        one = Method(_cfg(method="rmmss_stage1", **{"teachers.full": "t", **common}), 13, 255, teachers,
                     torch.no_grad)
        torch.manual_seed(7)
        parts[name] = one(student, x, present, labels).parts["kd"]
    torch.manual_seed(7)
    got = basic(student, x, present, labels).parts["kd"]
    assert got == pytest.approx(0.5 * parts["full"] + 0.5 * parts["robust"], rel=1e-5)
    assert parts["full"] != pytest.approx(parts["robust"], rel=1e-3)  # two different teachers really


def test_sgm_reduction_switch():
    g = torch.Generator().manual_seed(4)
    feats = [[torch.randn(2, 8, 8, 8, generator=g)] for _ in range(2)]
    labels = torch.randint(0, 6, (2, 32, 32), generator=g)
    mean = SGMLoss(6, reduction="mean")(feats, labels, pairs=[(0, 1)])
    total = SGMLoss(6, reduction="sum")(feats, labels, pairs=[(0, 1)])
    assert total.item() == pytest.approx(6 * mean.item(), rel=1e-5)  # the paper's sum = K x the reference's mean
    assert Method(_cfg(), 6, 255, {}, torch.no_grad).sgm.reduction == "mean"  # lambda = 60's scale by default
    assert Method(_cfg(**{"loss.sgm_reduction": "sum"}), 6, 255, {}, torch.no_grad).sgm.reduction == "sum"
    assert Method(_cfg(**{"loss.kl_reduction": "sum"}), 6, 255, {}, torch.no_grad).sgm.reduction == "sum"


def test_init_from_loads_the_student_weights(tmp_path):
    from training._testdata import make_tiny_deliver
    from training.loop import Trainer

    root = make_tiny_deliver(tmp_path / "data", frames=4, size=64, seed=0)
    cfg = load_train_config(TINY, [f"data.root={root}", "tensorboard=false", "val.at_end=false"])
    source = build_model(cfg.model, cfg.data.spec())
    ckpt = save_checkpoint(tmp_path / "src.pt", source.state_dict(), cfg.data.spec(), {"model": {}})
    trainer = Trainer(load_train_config(TINY, [f"data.root={root}", "tensorboard=false", f"init_from={ckpt}"]),
                      tmp_path / "run")
    for k, v in source.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[k], v), k


def test_paper_scale_recipes():
    for model in ("m_segformer_b0", "cmnext_b2"):
        s1 = load_train_config(RECIPES / f"deliver_rmmss_stage1_{model}.yaml")
        s2 = load_train_config(RECIPES / f"deliver_rmmss_stage2_{model}.yaml")
        for c in (s1, s2):
            assert c.data.image_size == 1024 and c.batch_size == 2 and c.masking.mode == "ummss"
        assert s1.epochs == 200 and s2.epochs == 150
        assert s2.loss.fsm_normalize == "unified" and s2.loss.fsm_mode == "select" and s2.init_from is None
    four = load_train_config(RECIPES / "muses_equiseg_b0.yaml")
    three = load_train_config(RECIPES / "muses_equiseg_b0_three_modal.yaml")
    assert set(four.data.modalities) == {"rgb", "lidar", "radar", "event"}
    assert set(three.data.modalities) == {"rgb", "lidar", "event"}
