"""Records shared by the dataset readers: one frame on disk and one frame read into memory."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FrameRecord:
    """Where one frame lives: its id, the file of every modality and of the label, and its conditions."""

    frame: str  # unique id, e.g. "fog/val/SYN_0003/000012"
    dataset: str
    split: str
    condition: str  # DeLiVER: cloud/fog/night/rain/sun; MUSES: "<weather>_<time>", e.g. "fog_night"
    corner_case: str | None
    scene: str
    name: str  # the frame's file stem, e.g. "000012"
    paths: dict[str, str]  # modality name -> file; "label" -> label file


@dataclass
class Frame:
    """One frame in memory: uint8 [H, W, 3] per modality, the decoded label uint8 [H, W] (255 = ignore)."""

    images: dict[str, np.ndarray]
    label: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    record: FrameRecord | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        return self.images[name]


def meta_of(record: FrameRecord) -> dict[str, Any]:
    return {"dataset": record.dataset, "split": record.split, "condition": record.condition,
            "corner_case": record.corner_case, "frame": record.frame, "paths": dict(record.paths)}
