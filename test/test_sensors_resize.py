"""The resize rule of representations lives in sensors; data and the front end use that one function."""
from __future__ import annotations

import numpy as np
import pytest

from equiseg_ros.sensors import resize as R
from equiseg_ros.spec import REPRESENTATIONS


def test_data_and_frontend_use_the_sensors_rule_itself() -> None:
    from equiseg_ros.data import _io, transforms
    from equiseg_ros.sensors import frontend

    assert transforms.resize_modality is R.resize_modality  # re-exported by import, not copied
    assert transforms.is_sparse is R.is_sparse and transforms.SPARSE_REPRESENTATIONS is R.SPARSE_REPRESENTATIONS
    assert _io.resize is R.resize
    assert frontend.resize_modality is R.resize_modality


def test_every_representation_is_classified() -> None:
    assert R.SPARSE_REPRESENTATIONS <= set(REPRESENTATIONS)
    assert {r for r in REPRESENTATIONS if R.is_sparse(r)} == {"event_frame", "lidar_image", "lidar_rih", "radar_rih"}


@pytest.mark.parametrize("rep", sorted(REPRESENTATIONS))
def test_sparse_never_blends_dense_interpolates(rep: str) -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    img[::2, ::2] = 200  # isolated measured pixels between empty ones
    out = R.resize_modality(img, rep, 12, 12)
    assert out.shape == (12, 12, 3) and out.dtype == np.uint8
    values = set(np.unique(out).tolist())
    if R.is_sparse(rep):
        assert values == {0, 200}  # a measured value or empty, never a mixture
    else:
        assert values - {0, 200}  # bilinear produces values in between


def test_same_size_is_the_input_and_a_single_channel_axis_is_kept() -> None:
    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert R.resize_modality(img, "rgb8", 4, 4) is img
    one = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    assert R.resize(one, 8, 2, nearest=True).shape == (8, 2, 1)
    assert R.resize(one[..., 0], 8, 2, nearest=False).shape == (8, 2)
