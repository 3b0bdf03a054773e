"""Checked state-dict loading: a mismatch names the first offending key."""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, Any]) -> None:
    """``load_state_dict(strict=True)`` that fails with a ValueError naming the FIRST mismatching key (missing,
    unexpected, or of another shape), in the model's parameter order, instead of PyTorch's long list."""
    own = model.state_dict()
    for key, val in own.items():
        if key not in state_dict:
            raise ValueError(f"checkpoint does not fit the model: missing key {key!r} "
                             f"(model expects shape {tuple(val.shape)})")
        got = state_dict[key]
        if tuple(got.shape) != tuple(val.shape):
            raise ValueError(f"checkpoint does not fit the model: key {key!r} has shape {tuple(got.shape)}, "
                             f"the model expects {tuple(val.shape)}")
    for key in state_dict:
        if key not in own:
            raise ValueError(f"checkpoint does not fit the model: unexpected key {key!r}")
    model.load_state_dict(state_dict, strict=True)
