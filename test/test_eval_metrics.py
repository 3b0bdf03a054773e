"""Confusion-matrix metrics against hand-computed matrices (absent class, ignore pixels, DDP merge)."""
from __future__ import annotations

import math

import pytest
import torch

from equiseg_ros.evaluation.metrics import ConfusionMatrix, per_sample_confusion

IGN = 255


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    # 4 classes; class 3 never labelled and never predicted (NaN -> 0); class 2 predicted but never labelled.
    label = torch.tensor([[0, 0, 1, 1], [1, 2, IGN, IGN]])
    label[1, 1] = 0  # keep class 2 absent from the ground truth
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 7]])  # the 7 sits on an ignore pixel: must not count
    return pred, label


def test_hand_computed_matrix_and_ious():
    pred, label = _case()
    cm = ConfusionMatrix(4, IGN).update(pred, label)
    # labelled pixels (gt, pred): (0,0) (0,1) (1,1) (1,1) (1,2) (0,0)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    for g, p in [(0, 0), (0, 1), (1, 1), (1, 1), (1, 2), (0, 0)]:
        expected[g, p] += 1
    assert torch.equal(cm.mat, expected)
    # IoU0 = 2 / (3 + 2 - 2) = 2/3 ; IoU1 = 2 / (3 + 3 - 2) = 1/2 ; IoU2 = 0 / 1 = 0 ; IoU3 = NaN -> 0
    iou = [200 / 3, 50.0, 0.0, 0.0]
    assert cm.per_class_iou() == pytest.approx(iou)
    assert cm.miou() == pytest.approx(sum(iou) / 4)  # reference: mean over ALL classes
    assert cm.miou_present() == pytest.approx((200 / 3 + 50.0) / 2)  # classes 0 and 1 are in the ground truth
    assert cm.pixel_accuracy() == pytest.approx(100 * 4 / 6)
    assert cm.total == 6
    d = cm.as_dict(["a", "b", "c", "d"])
    assert d["per_class_iou"]["a"] == pytest.approx(200 / 3) and d["pixels"] == 6


def test_accumulation_merge_and_per_sample_agree():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 5, (3, 8, 8), generator=g)
    label[:, 0] = IGN
    pred = torch.randint(0, 5, (3, 8, 8), generator=g)
    whole = ConfusionMatrix(5, IGN).update(pred, label)
    parts = ConfusionMatrix(5, IGN)
    for b in range(3):
        parts.update(pred[b:b + 1], label[b:b + 1])
    assert torch.equal(whole.mat, parts.mat)
    per = per_sample_confusion(pred.masked_fill(label == IGN, 200), label, 5, IGN)  # ids on ignore pixels: unused
    assert per.shape == (3, 5, 5) and torch.equal(per.sum(0), whole.mat)
    assert torch.equal(per[1], ConfusionMatrix(5, IGN).update(pred[1], label[1]).mat)
    merged = ConfusionMatrix(5, IGN).merge(parts).merge(parts)
    assert torch.equal(merged.mat, 2 * whole.mat)


def test_perfect_and_empty():
    label = torch.arange(4).repeat(4, 1)
    cm = ConfusionMatrix(4, IGN).update(label.clone(), label)
    assert cm.miou() == 100.0 and cm.pixel_accuracy() == 100.0
    empty = ConfusionMatrix(4, IGN).update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), IGN))
    assert empty.total == 0 and empty.miou() == 0.0 and empty.miou_present() == 0.0 and empty.pixel_accuracy() == 0
    assert not any(math.isnan(v) for v in empty.per_class_iou())


def test_bad_inputs_are_named():
    cm = ConfusionMatrix(3, IGN)
    with pytest.raises(ValueError, match="pred: class ids"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="label: ids"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 9]))
    with pytest.raises(ValueError, match="pred: class ids"):
        per_sample_confusion(torch.tensor([[[0, 3]]]), torch.tensor([[[0, 1]]]), 3, IGN)
    with pytest.raises(ValueError, match="label: ids"):
        per_sample_confusion(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 9]]]), 3, IGN)
    with pytest.raises(ValueError, match="shapes differ"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))


def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        cm = ConfusionMatrix(3, IGN)
        cm.update(torch.full((2, 2), rank), torch.full((2, 2), rank))  # rank r: 4 pixels of class r, correct
        cm.all_reduce()
        if rank == 0:
            torch.save(cm.mat, out)
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_ranks(tmp_path):
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'store'}"
    out = str(tmp_path / "mat.pt")
    mp.start_processes(_ddp_worker, args=(2, init, out), nprocs=2, join=True, start_method="fork")
    mat = torch.load(out)
    assert torch.equal(mat, torch.diag(torch.tensor([4, 4, 0])))


def test_all_reduce_without_process_group_is_identity():
    cm = ConfusionMatrix(2, IGN).update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    before = cm.mat.clone()
    assert torch.equal(cm.all_reduce().mat, before)
