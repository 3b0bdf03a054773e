"""Checkpoints are atomic, typed and refuse truncated or foreign files with a clear error."""
import pytest
import torch

from equiseg_ros.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from equiseg_ros.spec import synthetic_spec


def test_round_trip_and_errors(tmp_path):
    spec = synthetic_spec(["rgb", "lidar"])
    p = save_checkpoint(tmp_path / "a.pt", {"w": torch.ones(2)}, spec, {"model": {"name": "equiseg"}}, iteration=7)
    ck = load_checkpoint(p)
    assert ck["spec"] == spec and ck["iteration"] == 7 and torch.equal(ck["model"]["w"], torch.ones(2))
    assert [f.name for f in tmp_path.iterdir()] == ["a.pt"]  # no temporary file left behind
    (tmp_path / "trunc.pt").write_bytes(p.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="trunc.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt: not an equiseg_ros checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
