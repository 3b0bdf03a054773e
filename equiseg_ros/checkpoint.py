"""Checkpoints: one format shared by training (writes), export and the PyTorch backend (read).

A checkpoint is a dict saved with ``torch.save``::

    {"format": "equiseg_ros.checkpoint/1", "model": state_dict, "spec": ModelSpec.to_dict(),
     "config": resolved config as a plain dict (at least {"model": ModelConfig fields}), ...training state...}

It is written atomically (temporary file in the same folder, fsync, rename) so a crash never leaves a half file
where a good one was, and read with ``weights_only=True`` so loading never runs pickled code.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from equiseg_ros.spec import ModelSpec, SpecError

FORMAT = "equiseg_ros.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, foreign or inconsistent; the message names the file."""


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_checkpoint(path: str | Path, model_state: dict, spec: ModelSpec, config: dict[str, Any],
                    **extra: Any) -> Path:
    """Write a checkpoint atomically; ``extra`` holds training state (optimizer, scheduler, rng, iteration...)."""
    import torch

    payload = {"format": FORMAT, "model": model_state, "spec": spec.to_dict(), "config": config, **extra}
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint (``weights_only=True``); errors name the file and what is wrong."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, unsafe globals...
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not an equiseg_ros checkpoint (format {found!r}, expected {FORMAT!r}); "
                              "official MiT weights go to model.pretrained instead")
    for key in ("model", "spec", "config"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
    try:
        ckpt["spec"] = ModelSpec.from_dict(ckpt["spec"])
    except SpecError as exc:
        raise CheckpointError(f"{path}: invalid spec in checkpoint: {exc}") from None
    return ckpt


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (checkpoints, ONNX files and engines are hashed alike)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
