"""Exact resume after SIGKILL, and a 2-process DDP run on CPU (gloo) that ends with identical weights on both ranks.

Both run ``training/train.py`` as real subprocesses, the way a user (or torchrun) does.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from equiseg_ros.checkpoint import load_checkpoint
from training._testdata import make_tiny_deliver

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(ROOT / "training/train.py"), "--config", str(ROOT / "config/train/tiny_test.yaml")]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_tiny_deliver(tmp_path_factory.mktemp("resume_data") / "synthetic", frames=8, size=64, seed=1)


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _sets(data_root, *extra: str) -> list[str]:
    out = []
    for s in (f"data.root={data_root}", "max_iters=12", "checkpoint.every=3", "tensorboard=false",
              "val.at_end=false", "method=equiseg", "model.drop_path=0.1", *extra):
        out += ["--set", s]
    return out


def test_sigkill_then_resume_gives_identical_weights(data_root, tmp_path):
    # method equiseg (on M-SegFormer, for speed): SGM draws random pairs and drop-path draws masks every step, so
    # the RNG state must be restored exactly for the weights to match
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    done = subprocess.run(TRAIN + _sets(data_root) + ["--out", str(ref)], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    proc = subprocess.Popen(TRAIN + _sets(data_root) + ["--out", str(killed)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    at = load_checkpoint(last)["iteration"]
    assert 3 <= at < 12
    done = subprocess.run(TRAIN + _sets(data_root) + ["--out", str(killed), "--resume", "auto"], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = load_checkpoint(ref / "checkpoints/last.pt"), load_checkpoint(last)
    assert a["iteration"] == b["iteration"] == 12
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"{k} differs after resume from iteration {at}"
    # the resumed run's CSV continues the killed one without duplicated steps
    steps = [line.split(",")[0] for line in (killed / "scalars.csv").read_text().splitlines()[1:]
             if ",train/loss," in line]
    assert steps == [str(i) for i in range(1, 13)]


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed beside this Python")
def test_two_process_ddp_on_cpu_ends_with_identical_weights(data_root, tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--nproc_per_node", "2", "--standalone", *TRAIN[1:], *_sets(data_root, "max_iters=4",
           "dist.dump_rank_weights=true", "val.at_end=true"),
           "--out", str(tmp_path)]
    env = _env()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    w0 = torch.load(tmp_path / "rank0_weights.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1_weights.pt", weights_only=True)
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k  # parameters and BatchNorm running statistics
    ck = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["iteration"] == 4
    for k in w0:
        assert torch.equal(ck["model"][k], w0[k])
    assert (tmp_path / "val" / "iter_0000004.json").is_file()
