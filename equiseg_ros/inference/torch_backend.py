"""PyTorch backend: runs an equiseg_ros checkpoint directly (development machines, CPU or CUDA).

torch is imported only when this backend is constructed, so ONNX Runtime and TensorRT vehicles never load it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from equiseg_ros.inference.backend import Backend, BackendError, BackendUnavailable, ModelFileNotFound


class TorchBackend(Backend):
    """Checkpoint → ``build_model`` → :class:`~equiseg_ros.models.deploy.DeployedModel` in inference mode."""

    name = "torch"
    OPTIONS = frozenset({"device", "torch_threads", "intra_op_threads", "timing_window"})

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("torch") is None:
            return "PyTorch is not installed"
        return None

    def __init__(self, path: str | Path, *, device: str = "cpu", torch_threads: int = 0, intra_op_threads: int = 0,
                 timing_window: int = 200) -> None:
        """``intra_op_threads`` is the node's generic thread option (as for ONNX Runtime); ``torch_threads`` wins."""
        path = Path(path)
        torch_threads = torch_threads or intra_op_threads
        if not path.is_file():
            raise ModelFileNotFound(f"{path}: model file not found")
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        import torch

        from equiseg_ros.checkpoint import CheckpointError, load_checkpoint
        from equiseg_ros.config import ConfigError, ModelConfig, from_dict
        from equiseg_ros.models.build import build_model, load_checked_checkpoint
        from equiseg_ros.models.deploy import DeployedModel

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(f"no CUDA device: torch.cuda.is_available() is False (asked for {device})")
        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        try:
            ckpt = load_checkpoint(path)
            cfg_dict = dict(ckpt["config"].get("model") or {})
            cfg_dict["pretrained"] = None  # all weights are in the checkpoint
            cfg = from_dict(ModelConfig, cfg_dict, "config.model")
            model = build_model(cfg, ckpt["spec"])
            load_checked_checkpoint(model, ckpt)
        except (CheckpointError, ConfigError, KeyError, ValueError, RuntimeError) as exc:
            raise BackendError(f"{path}: cannot build the model from this checkpoint: {exc}") from None
        self._torch = torch
        self.model = DeployedModel(model).eval().to(device)
        self.model_config = cfg_dict
        super().__init__(path, ckpt["spec"], device=device, timing_window=timing_window)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.model_config.get("name"),
                "backbone": self.model_config.get("backbone")}

    def _run(self, x: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            labels, conf = self.model(torch.from_numpy(x).to(self.device), torch.from_numpy(present).to(self.device))
        return labels.cpu().numpy(), conf.float().cpu().numpy()
