"""Each training method runs a few steps on tiny synthetic data and lowers its own loss on a fixed batch;
the recipes under config/train load; a corrupt or foreign checkpoint is refused with a clear error."""
from pathlib import Path

import pytest
import torch

from equiseg_ros.checkpoint import CheckpointError, load_checkpoint
from equiseg_ros.config import ConfigError
from training._testdata import make_tiny_deliver
from training.config import TrainConfig, load_train_config
from training.loop import Trainer, select_metric

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "config/train/tiny_test.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_tiny_deliver(tmp_path_factory.mktemp("train_data") / "synthetic", frames=8, size=64, seed=0)


def _cfg(data_root, **kw) -> TrainConfig:
    sets = [f"data.root={data_root}", "tensorboard=false", "val.at_end=false"] + [f"{k}={v}" for k, v in kw.items()]
    return load_train_config(TINY, sets)


def _fixed_loss(trainer: Trainer, batch: dict, seed: int = 123) -> float:
    """The method's loss on one batch with the randomness (subsets, pairs, permutation) pinned by ``seed``."""
    torch.manual_seed(seed)
    with torch.no_grad():
        out = trainer.method(trainer.model, batch["x"], batch["present"], batch["label"])
    return out.loss.item()


def _train_and_check(cfg: TrainConfig, run_dir: Path) -> Trainer:
    trainer = Trainer(cfg, run_dir)
    batch = next(trainer.batches.stream(0))[1]
    before = _fixed_loss(trainer, batch)
    trainer.fit()
    after = _fixed_loss(trainer, batch)
    assert after < before, f"{cfg.method}: loss did not fall ({before:.4f} -> {after:.4f})"
    return trainer


@pytest.fixture(scope="module")
def teacher_ckpt(data_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher")
    _train_and_check(_cfg(data_root, method="supervised", max_iters=8), run)
    return run / "checkpoints" / "last.pt"


def test_supervised_teacher_checkpoint_is_complete(teacher_ckpt):
    ck = load_checkpoint(teacher_ckpt)
    assert ck["iteration"] == 8 and ck["method"] == "supervised"
    assert ck["config"]["model"]["name"] == "m_segformer" and ck["config"]["data"]["image_size"] == 64
    for key in ("optimizer", "scheduler", "scaler", "rng", "best_value"):
        assert key in ck
    scalars = (teacher_ckpt.parents[1] / "scalars.csv").read_text()
    assert "train/loss_ohem" in scalars and "train/lr" in scalars
    assert (teacher_ckpt.parents[1] / "curves_losses.png").stat().st_size > 1000
    assert (teacher_ckpt.parents[1] / "config.yaml").is_file()


def test_equiseg_with_sgm_trains(data_root, tmp_path):
    t = _train_and_check(_cfg(data_root, method="equiseg", max_iters=6, **{"model.name": "equiseg"}), tmp_path)
    assert "train/loss_sgm" in (tmp_path / "scalars.csv").read_text()
    assert t.iteration == 6


def test_rmmss_stage1_and_stage2_train(data_root, teacher_ckpt, tmp_path):
    s1 = tmp_path / "s1"
    _train_and_check(_cfg(data_root, method="rmmss_stage1", max_iters=8, **{"teachers.full": teacher_ckpt}), s1)
    text = (s1 / "scalars.csv").read_text()
    assert "train/loss_kd" in text and "train/loss_hpdm" in text
    s2 = tmp_path / "s2"
    t2 = _train_and_check(_cfg(data_root, method="rmmss_stage2", max_iters=8,
                               **{"teachers.full": teacher_ckpt, "teachers.robust": s1 / "checkpoints/last.pt"}), s2)
    assert set(t2.method.fsm) == {"fsm_proto", "fsm_logit"}
    ck = load_checkpoint(s2 / "checkpoints/last.pt")
    assert set(ck["aux"]) == {"fsm_proto", "fsm_logit"}
    assert all(not p.requires_grad for m in t2.method.teachers.values() for p in m.parameters())
    assert "train/fsm_logit_full_share" in (s2 / "scalars.csv").read_text()


def test_corrupt_or_foreign_checkpoint_gives_a_clear_error(data_root, teacher_ckpt, tmp_path):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(teacher_ckpt.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable checkpoint"):
        Trainer(_cfg(data_root), tmp_path / "run", resume=str(bad))
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable checkpoint"):
        Trainer(_cfg(data_root, method="rmmss_stage1", **{"teachers.full": bad}), tmp_path / "run2")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an equiseg_ros checkpoint"):
        Trainer(_cfg(data_root), tmp_path / "run3", resume=str(foreign))
    with pytest.raises(CheckpointError, match="written by method 'supervised'"):
        Trainer(_cfg(data_root, method="equiseg", **{"model.name": "equiseg"}), tmp_path / "run4",
                resume=str(teacher_ckpt))


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "train").glob("*.yaml")), ids=lambda p: p.stem)
def test_recipes_load(path):
    cfg = load_train_config(path)
    assert cfg.data.spec().num_modalities == len(cfg.data.modalities)


def test_config_errors_name_file_and_key(tmp_path):
    with pytest.raises(ConfigError, match=r"tiny_test\.yaml: optim\.lr: expected float"):
        load_train_config(TINY, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="teachers.full"):
        load_train_config(TINY, ["method=rmmss_stage1"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_train_config(TINY, ["optim.lrr=1"])


def test_best_metric_selection():
    flat = {"benchmark/mIoU": 40.0, "benchmark/any/R": 30.0, "benchmark/any/RD": 50.0, "deployed/EMM Avg": 20.0}
    assert select_metric(flat, "mIoU", "benchmark") == 40.0
    assert select_metric(flat, "deployed/EMM Avg", "benchmark") == 20.0
    assert select_metric(flat, "mean:R,RD", "benchmark") == 40.0
    with pytest.raises(KeyError, match="best_metric"):
        select_metric(flat, "EMM Avg", "benchmark")


def test_gradient_accumulation_consumes_accumulate_micro_batches_per_step(data_root, tmp_path):
    t = Trainer(_cfg(data_root, accumulate=2, batch_size=1, max_iters=2), tmp_path)
    micro = t.batches.stream(0)
    w0 = {k: v.clone() for k, v in t.model.state_dict().items()}
    parts = t.train_step(micro)
    assert t.iteration == 1 and t.scheduler.last_iter == 1 and "ohem" in parts
    assert any(not torch.equal(w0[k], v) for k, v in t.model.state_dict().items())
    third = [b for _, (_, b) in zip(range(3), t.batches.stream(0))][2]
    assert torch.equal(next(micro)[1]["label"], third["label"])


def test_non_finite_gradients_skip_the_step_then_fail_after_too_many(data_root, tmp_path):
    t = Trainer(_cfg(data_root, max_iters=4, **{"optim.max_consecutive_skips": 1}), tmp_path)
    real = t.method
    first = next(t.model.parameters())

    class Poisoned:  # finite loss, NaN gradient (d sqrt(0 * p) / dp = 0 * inf)
        fsm = real.fsm

        def __call__(self, model, x, present, labels):
            out = real(model, x, present, labels)
            out.loss = out.loss + torch.sqrt(first.flatten()[0] * 0.0)
            return out

    t.method = Poisoned()
    micro = t.batches.stream(0)
    w0 = {k: v.detach().clone() for k, v in t.model.named_parameters()}
    assert t.train_step(micro)["skipped_steps"] == 1.0
    assert all(torch.equal(w0[k], v) for k, v in t.model.named_parameters())  # no update
    assert t.iteration == 1 and t.scheduler.last_iter == 1
    with pytest.raises(FloatingPointError, match="consecutive steps with non-finite gradients"):
        t.train_step(micro)
    t.method = real
    t.consecutive_skips = 0
    t.train_step(micro)
    assert any(not torch.equal(w0[k], v) for k, v in t.model.named_parameters())
