"""Unit tests of the training losses: prototypes, OHEM, SGM pairing, HPDM permutation, logit KD, FSM selection."""
import math
from collections import Counter

import pytest
import torch

from training.losses import (
    FeatureSelectionModule,
    HPDMLoss,
    OhemCrossEntropy,
    SGMLoss,
    class_prototypes,
    hpdm_permutation,
    logit_kd,
    prototype_kl,
    sgm_pairs,
    teacher_prototypes,
)


def test_prototypes_on_hand_made_feature_map():
    # 1 sample, 2 channels, 2x2 map; labels at 4x4 so NEAREST downsampling picks the top-left of each 2x2 block.
    feat = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]]])
    labels = torch.full((1, 4, 4), 255, dtype=torch.long)
    labels[0, 0, 0] = 0  # -> feature pixel (0, 0)
    labels[0, 0, 2] = 0  # -> (0, 1)
    labels[0, 2, 0] = 2  # -> (1, 0)
    labels[0, 1, 1] = 1  # not a sampled position: class 1 must be absent after downsampling
    protos, mask = class_prototypes(feat, labels, num_classes=4)
    assert mask.tolist() == [[True, False, True, False]]
    assert protos[0, 0].tolist() == [1.5, 15.0]  # mean of (1, 10) and (2, 20): divided by the count once
    assert protos[0, 2].tolist() == [3.0, 30.0]
    assert protos[0, 1].tolist() == [0.0, 0.0] and protos[0, 3].tolist() == [0.0, 0.0]


def test_prototype_kl_zero_for_equal_and_ignores_absent_classes():
    a = torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, False, True, False], [True, False, False, False, False]])
    assert torch.allclose(prototype_kl(a, a, mask), torch.zeros(2), atol=1e-6)
    b = a.clone()
    b[:, 2] += 100.0  # class 2 is absent in both samples: changing it changes nothing
    assert torch.allclose(prototype_kl(a, b, mask), torch.zeros(2), atol=1e-6)
    c = a.clone()
    c[0, 0] += 3.0
    kl = prototype_kl(a, c, mask)
    assert kl[0] > 1e-3 and kl[1] == 0  # sample 1 has a single class: a one-point distribution, KL 0
    # with every class present, "mean" is the reference's kl_div(log_softmax(s, 0), softmax(t, 0), "mean")
    full = torch.ones(2, 5, dtype=torch.bool)
    ref = (a[0].softmax(0) * (a[0].log_softmax(0) - c[0].log_softmax(0))).mean()  # mean over all K*d elements
    assert prototype_kl(a, c, full)[0].item() == pytest.approx(ref.item(), rel=1e-5)


def test_ohem_keeps_hard_pixels_or_at_least_one_sixteenth():
    ce = OhemCrossEntropy(ignore_index=255, thresh=0.7, min_kept_div=16)
    k = 3
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 0, :4] = 255  # 60 valid pixels -> at least 60 // 16 = 3 kept
    logits = torch.zeros(1, k, 8, 8)
    logits[0, 0] = 10.0  # every pixel easy (p ~ 1) ...
    hard_vals = [1.0, 0.5, 0.0, -1.0, -2.0]  # ... except 5 whose class-0 logit is lowered (p < 0.7 each)
    for i, v in enumerate(hard_vals):
        logits[0, 0, 7, i] = v
    pix = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255, reduction="none")[0]
    hard = pix[7, :5]
    assert (hard > -math.log(0.7)).all()
    assert torch.allclose(ce(logits, labels), hard.mean())  # 5 hard pixels >= 3: exactly the hard ones
    logits[0, 0, 7, :5] = 10.0
    logits[0, 0, 7, 0] = 5.0  # now nothing is hard: the 3 largest losses are kept
    pix = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255, reduction="none")[0]
    top3 = torch.topk(pix[labels[0] != 255], 3).values
    assert torch.allclose(ce(logits, labels), top3.mean())
    assert ce(logits, torch.full_like(labels, 255)).item() == 0.0


def test_sgm_pairing_covers_every_modality_and_never_self_pairs():
    g = torch.Generator().manual_seed(0)
    for m in (2, 3, 4, 5):
        seen_teacher, seen_student, ordered = Counter(), Counter(), set()
        for _ in range(400):
            pairs = sgm_pairs(m, g)
            assert len(pairs) == m // 2
            flat = [x for p in pairs for x in p]
            assert len(set(flat)) == len(flat)  # disjoint, so never with itself
            for t, s in pairs:
                assert t != s
                seen_teacher[t] += 1
                seen_student[s] += 1
                ordered.add((t, s))
        assert set(seen_teacher) == set(range(m)) and set(seen_student) == set(range(m))
        assert len(ordered) == m * (m - 1)  # every ordered pair happens
    assert sgm_pairs(1) == []


def test_sgm_loss_zero_when_modalities_agree_and_gradient_flows_to_students():
    labels = torch.randint(0, 4, (2, 16, 16))
    base = [torch.randn(2, c, s, s) for c, s in ((4, 8), (6, 4), (8, 2), (8, 1))]
    same = [[f.clone().requires_grad_() for f in base] for _ in range(4)]
    loss = SGMLoss(num_classes=4)
    assert loss(same, labels).item() == pytest.approx(0.0, abs=1e-6)
    diff = [[torch.randn_like(f).requires_grad_() for f in base] for _ in range(4)]
    value = loss(diff, labels, pairs=[(0, 1), (2, 3)])
    assert value.item() > 0
    value.backward()
    assert diff[0][0].grad is None and diff[1][0].grad is not None  # teacher detached by default
    assert diff[3][2].grad is not None


def test_hpdm_permutation_pairs_student_pi_m_with_teacher_m():
    g = torch.Generator().manual_seed(1)
    perms = {tuple(hpdm_permutation(4, g)) for _ in range(300)}
    assert all(sorted(p) == [0, 1, 2, 3] for p in perms) and len(perms) == 24
    labels = torch.randint(0, 3, (2, 16, 16))
    feats = [[torch.randn(2, 4, 8, 8)] for _ in range(3)]
    teacher = teacher_prototypes(feats, labels, 3)
    loss = HPDMLoss(num_classes=3)
    assert loss(feats, teacher, labels, permutation=[0, 1, 2]).item() == pytest.approx(0.0, abs=1e-6)
    rotated = [feats[2], feats[0], feats[1]]  # student modality k holds what teacher modality k-1 holds
    assert loss(rotated, teacher, labels, permutation=[1, 2, 0]).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(rotated, teacher, labels, permutation=[0, 1, 2]).item() > 1e-3
    # a student modality absent in a sample does not contribute to that sample's terms
    present = torch.tensor([[True, True, False], [True, True, True]])
    swapped = [feats[0], feats[1], [torch.randn(2, 4, 8, 8)]]
    swapped[2][0][1] = feats[2][0][1]  # sample 1 agrees, sample 0 differs but modality 2 is absent there
    assert loss(swapped, teacher, labels, student_present=present, permutation=[0, 1, 2]).item() == \
        pytest.approx(0.0, abs=1e-6)
    assert loss(swapped, teacher, labels, permutation=[0, 1, 2]).item() > 1e-3


def test_logit_kd_directions():
    s = torch.randn(2, 5, 4, 4)
    assert logit_kd(s, s).item() == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(2, 5, 4, 4)
    p_s, p_t = s.softmax(1), t.softmax(1)
    fwd = (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    rev = (p_s * (p_s.log() - p_t.log())).sum(1).mean()
    assert logit_kd(s, t, reduction="sum").item() == pytest.approx(fwd.item(), rel=1e-5)
    assert logit_kd(s, t, direction="reverse", reduction="sum").item() == pytest.approx(rev.item(), rel=1e-5)
    # "mean" is the reference's kl_div(reduction="mean") over all B*K*h*w elements
    ref = (p_t * (p_t.log() - p_s.log())).mean()
    assert logit_kd(s, t).item() == pytest.approx(ref.item(), rel=1e-5)


def test_fsm_selects_each_element_from_the_right_teacher():
    torch.manual_seed(0)
    fsm = FeatureSelectionModule()
    a, b = torch.randn(2, 3, 6, 5), torch.randn(2, 3, 6, 5)
    with torch.no_grad():  # zero convs: f^ = 0, so the score is the raw value and the larger one wins
        for p in fsm.parameters():
            p.zero_()
    assert torch.equal(fsm(a, b), torch.maximum(a, b))
    fsm2 = FeatureSelectionModule()
    out = fsm2(a, b)
    stacked = torch.stack([a.reshape(-1, 6, 5), b.reshape(-1, 6, 5)], 1)
    f_hat = torch.nn.functional.conv2d(stacked, fsm2.dw.weight, fsm2.dw.bias, padding=1, groups=2)
    score = stacked + torch.sigmoid(torch.nn.functional.conv2d(f_hat, fsm2.pw.weight, fsm2.pw.bias)) * f_hat
    expect = torch.where(score[:, 0] >= score[:, 1], stacked[:, 0], stacked[:, 1]).reshape(a.shape)
    assert torch.allclose(out, expect)
    assert ((out == a) | (out == b)).all()  # every element is one teacher's value, never a blend
    assert 0.0 < fsm2.last_fraction_first < 1.0
    # the straight-through path trains the FSM; 'none' does not
    logit_kd(torch.randn(2, 3, 6, 5), out, detach_teacher=False).backward()
    assert fsm2.pw.weight.grad is not None and fsm2.pw.weight.grad.abs().sum() > 0
    fsm3 = FeatureSelectionModule(gradient="none")
    assert not fsm3(a, b).requires_grad
    protos = fsm2(torch.randn(2, 25, 32), torch.randn(2, 25, 32))  # prototypes [B, K, d] work too
    assert protos.shape == (2, 25, 32)
