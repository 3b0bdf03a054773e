"""Transforms keep modalities and labels aligned; the dataset wrapper returns the contract's sample format."""
from __future__ import annotations

import numpy as np
import pytest

from equiseg_ros.config import DataConfig
from equiseg_ros.data import synthetic as G
from equiseg_ros.data.dataset import SegmentationDataset, build_dataset, collate
from equiseg_ros.data.deliver import DeliverReader
from equiseg_ros.data.transforms import TrainTransform, ValTransform, color_jitter
from equiseg_ros.spec import deliver_spec, synthetic_spec

SPEC = deliver_spec()


def _sample(h: int = 48, w: int = 64):
    """Label blocks of 8x8 pixels; every modality encodes the label (value = 10 * label) so alignment is testable."""
    yy, xx = np.mgrid[0:h, 0:w]
    label = ((yy // 8) * 3 + (xx // 8)) % 20
    label = label.astype(np.uint8)
    img = np.repeat((label * 10).astype(np.uint8)[..., None], 3, 2)
    return {m: img.copy() for m in SPEC.modality_names}, label


def test_flip_of_a_known_pattern():
    images, label = _sample()
    label[:, :5] = 255
    t = TrainTransform(SPEC, (48, 64), scale=(1.0, 1.0), p_jitter=0, p_flip=1.0, p_blur=0)
    out, lab = t(images, label, np.random.default_rng(0))
    assert np.array_equal(lab, label[:, ::-1]) and (lab[:, -5:] == 255).all()
    for m in SPEC.modality_names:
        assert np.array_equal(out[m], images[m][:, ::-1]), m


@pytest.mark.parametrize("seed", range(6))
def test_random_resized_crop_keeps_alignment(seed):
    images, label = _sample()
    t = TrainTransform(SPEC, (32, 32), p_jitter=0, p_blur=0)
    out, lab = t(images, label, np.random.default_rng(seed))
    assert lab.shape == (32, 32) and all(o.shape == (32, 32, 3) for o in out.values())
    pad = lab == 255
    for m in ("event", "lidar"):  # sparse representations resize NEAREST: exact alignment
        assert np.array_equal(out[m][..., 0][~pad], lab[~pad].astype(np.uint8) * 10), m
        assert (out[m][pad] == 0).all()  # images are padded with 0, labels with 255
    # dense ones resize bilinearly: aligned away from block borders
    agree = np.abs(out["rgb"][..., 0].astype(int) - lab.astype(int) * 10) <= 1
    assert agree[~pad].mean() > 0.6


def test_torch_tensors_in_and_out():
    import torch

    images, label = _sample()
    timgs = {m: torch.from_numpy(v.transpose(2, 0, 1).copy()) for m, v in images.items()}
    t = TrainTransform(SPEC, (48, 64), scale=(1.0, 1.0), p_jitter=0, p_flip=1.0, p_blur=0)
    out, lab = t(timgs, torch.from_numpy(label), np.random.default_rng(0))
    assert isinstance(lab, torch.Tensor) and out["event"].shape == (3, 48, 64)
    assert torch.equal(out["event"][0], lab.to(torch.uint8) * 10)
    out, lab = ValTransform(SPEC, 32)(timgs, torch.from_numpy(label))
    assert out["rgb"].shape == (3, 32, 64) and lab.shape == (32, 64)


def test_jitter_and_blur_touch_rgb_only():
    images, label = _sample()
    t = TrainTransform(SPEC, (48, 64), scale=(1.0, 1.0), p_jitter=1.0, p_flip=0, p_blur=1.0)
    out, lab = t(images, label, np.random.default_rng(1))
    assert not np.array_equal(out["rgb"], images["rgb"])
    for m in ("depth", "event", "lidar"):
        assert np.array_equal(out[m], images[m])
    assert color_jitter(images["rgb"], np.random.default_rng(0)).dtype == np.uint8


def test_val_resize_short_side_multiple_of_32():
    images, label = _sample(100, 150)
    out, lab = ValTransform(SPEC, 64)(images, label)
    assert lab.shape == (64, 96) and out["rgb"].shape == (64, 96, 3)
    assert set(np.unique(lab)) <= set(np.unique(label))  # NEAREST: no invented ids
    out, lab = ValTransform(SPEC, 70)(images, label)
    assert lab.shape == (96, 128)  # 70 x 105 rounded up to multiples of 32


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn_ds")
    G.generate(root, 8, 64, seed=0, splits=[("train", 0.5), ("val", 0.5)])
    return root


def test_dataset_sample_format_and_collate(syn):
    import torch

    spec = synthetic_spec(["lidar", "rgb"])  # spec order decides the stacking order
    reader = DeliverReader(syn, "train", ["rgb", "lidar"])
    ds = SegmentationDataset(reader, spec, transform=None)
    s = ds[0]
    frame = reader[0]
    assert s["x"].shape == (2, 3, 64, 64) and s["x"].dtype == torch.float32
    assert np.allclose(s["x"][0].numpy(), spec.normalize("lidar", frame["lidar"]), atol=1e-6)
    assert np.allclose(s["x"][1].numpy(), spec.normalize("rgb", frame["rgb"]), atol=1e-6)
    assert s["present"].dtype == torch.bool and s["present"].all()
    assert s["label"].dtype == torch.int64 and s["label"].shape == (64, 64)
    assert set(s["meta"]) >= {"dataset", "split", "condition", "corner_case", "frame", "paths"}
    b = collate([ds[0], ds[1]])
    assert b["x"].shape == (2, 2, 3, 64, 64) and b["present"].shape == (2, 2) and len(b["meta"]) == 2


def test_build_dataset_from_config(syn):
    import torch

    cfg = DataConfig(dataset="synthetic", root=str(syn), image_size=32)
    train = build_dataset(cfg, "train", train=True, seed=0)
    val = build_dataset(cfg, "val", train=False)
    assert train[0]["x"].shape == (4, 3, 32, 32) and val[0]["x"].shape == (4, 3, 32, 32)
    assert val[0]["meta"]["dataset"] == "synthetic" and val[0]["meta"]["split"] == "val"
    loader = torch.utils.data.DataLoader(train, batch_size=2, collate_fn=collate, num_workers=0)
    batch = next(iter(loader))
    assert batch["x"].shape == (2, 4, 3, 32, 32)
    labels = batch["label"]
    assert ((labels >= 0) & (labels < 25) | (labels == 255)).all()
