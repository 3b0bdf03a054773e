"""Protocol runner: subsets and weights, settings' present masks, oracle/constant predictors, one pass == naive."""
from __future__ import annotations

import json

import pytest
import torch

from equiseg_ros.evaluation.protocols import (
    EXPECTATION_PS,
    TABLE1_COLUMNS,
    EvalResult,
    emm_weights,
    evaluate,
    expectation,
    plan,
    robustness_score,
    run_variants,
    subsets,
)
from equiseg_ros.spec import Modality, ModelSpec, muses_spec, synthetic_spec

SPEC = synthetic_spec()  # rgb, depth, event, lidar; 25 classes
K = SPEC.num_classes
CONDITIONS = ("cloud", "fog", "night")


def _batches(n=3, b=2, size=16, seed=0, all_classes=True):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        if all_classes:  # every class present, so the reference mIoU of a perfect predictor is exactly 100
            lab = (torch.arange(size * size) % K).view(size, size).repeat(b, 1, 1)
            lab = lab[:, torch.randperm(size, generator=g)]
        else:
            lab = torch.randint(0, K, (b, size, size), generator=g)
        lab[:, 0, :3] = 255
        out.append({"x": torch.randn(b, 4, 3, size, size, generator=g), "present": torch.ones(b, 4, dtype=torch.bool),
                    "label": lab, "meta": [{"condition": CONDITIONS[i % 3], "corner_case": "motionblur" if i == 0
                                            else None, "frame": f"{i}_{j}"} for j in range(b)]})
    return out


class Oracle:
    """Knows the label of the batch being evaluated (the loader tells it), whatever the input looks like."""

    def __init__(self, batches):
        self.batches, self.label = batches, None

    def loader(self):
        for b in self.batches:
            self.label = b["label"]
            yield b

    def __call__(self, x, present):
        return self.label.clamp(max=K - 1)  # ignore pixels: any valid id


def test_subsets_order_and_names():
    subs = subsets(4)
    assert len(subs) == 15 and (True,) * 4 in subs and (False,) * 4 not in subs
    names = [SPEC.subset_name(s) for s in subs]
    assert names == ["R", "D", "E", "L", "RD", "RE", "RL", "DE", "DL", "EL", "RDE", "RDL", "REL", "DEL", "RDEL"]
    assert [muses_spec().subset_name(s) for s in subsets(4)][:5] == ["F", "L", "R", "E", "FL"]
    assert len(subsets(3)) == 7 and subsets(1) == [(True,)]


def test_emm_weights_m4_p01():
    w = emm_weights(4, 0.1)
    assert sum(w.values()) == pytest.approx(1.0)
    z = 1 - 0.1 ** 4  # all-missing excluded, renormalised
    for s, v in w.items():
        k = s.count(False)
        assert v == pytest.approx({0: 0.6561, 1: 0.0729, 2: 0.0081, 3: 0.0009}[k] / z)
    assert w[(True,) * 4] == pytest.approx(0.65617, abs=1e-5)
    for p in EXPECTATION_PS:
        assert sum(emm_weights(3, p).values()) == pytest.approx(1.0)


def test_expectation_and_score_by_hand():
    subs = subsets(2)  # R, D, RD ; weights at p: p(1-p), p(1-p), (1-p)^2
    mious = dict(zip(subs, [10.0, 20.0, 60.0]))
    p = 0.2
    w = [0.16, 0.16, 0.64]
    assert expectation(mious, p) == pytest.approx(sum(a * b for a, b in zip(w, [10, 20, 60])) / 0.96)
    row = dict(zip(TABLE1_COLUMNS[:-1], [70.0, 50, 60, 55, 65, 30, 20]))
    assert robustness_score(row) == pytest.approx(350 / 7)
    assert robustness_score({**row, "NM Mid": None}) is None


def test_settings_pass_the_right_present():
    calls = []

    def record(x, present):
        zero = (x.flatten(2) == 0).all(-1)  # [B, M] modality entirely zero
        calls.append((zero.clone(), present.clone()))
        return torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.long)

    batches = _batches(n=1)
    evaluate(record, batches, SPEC, protocols=("emm",), settings=("benchmark",), progress=False)
    assert len(calls) == 15
    assert sorted(tuple((~z[0]).tolist()) for z, _ in calls) == sorted(subsets(4))  # every subset zero-filled
    assert all(p.all() for _, p in calls)  # benchmark: the model is told nothing
    calls.clear()
    evaluate(record, batches, SPEC, protocols=("emm",), settings=("deployed",), progress=False)
    assert len(calls) == 15
    assert sorted(tuple((~z[0]).tolist()) for z, _ in calls) == sorted(subsets(4))
    for zero, present in calls:
        assert torch.equal(present, ~zero)  # deployed: zeroed <=> marked absent
    calls.clear()
    evaluate(record, batches, SPEC, protocols=("rmm", "nm"), settings=("deployed",), rmm_rates=(0.5,),
             progress=False)
    assert len(calls) == 14 + 1 + 3  # RMM damaged subsets + clean + 3 NM levels
    assert all(p.all() for _, p in calls)  # damaged or noisy sensors still deliver frames


def test_oracle_scores_100_everywhere():
    oracle = Oracle(_batches())
    res = evaluate(oracle, oracle.loader(), SPEC, progress=False)
    for setting in ("benchmark", "deployed"):
        row = res.table1_row(setting)
        assert all(row[c] == pytest.approx(100.0) for c in TABLE1_COLUMNS), row
        assert all(v == pytest.approx(100.0) for v in res.anymodal_row(setting).values())
        assert res.results[setting]["emm"]["expectation"]["0.05"] == pytest.approx(100.0)
    assert res.by_condition["cloud"]["benchmark"]["table1"]["Mean"] == pytest.approx(100.0)


def test_constant_predictor_expected_value():
    batches = _batches(all_classes=False)
    c = 3
    labels = torch.stack([b["label"] for b in batches])
    valid = labels != 255
    frac = float((labels[valid] == c).sum()) / int(valid.sum())
    expected = 100.0 * frac / K  # IoU_c = |gt=c| / |labelled|, every other class 0, mean over all K
    present = len(torch.unique(labels[valid]))

    def const(x, p):
        return torch.full((x.shape[0], *x.shape[-2:]), c, dtype=torch.long)

    res = evaluate(const, batches, SPEC, progress=False)
    row = res.table1_row("deployed")
    assert all(row[col] == pytest.approx(expected) for col in TABLE1_COLUMNS)
    full = res.results["benchmark"]["full"]
    assert full["miou_present"] == pytest.approx(100.0 * frac / present)
    assert full["pixel_accuracy"] == pytest.approx(100.0 * frac)


def _toy_model(x, present):
    """Depends on every modality and on present, so corruptions and settings change its output."""
    score = (x * present[:, :, None, None, None]).sum(2)  # [B, M, H, W]
    absent = (~present).sum(1).float()[:, None, None]  # what only the deployed setting tells the model
    logits = torch.stack([score[:, m] for m in range(x.shape[1])] + [absent.expand_as(score[:, 0])], 1)
    return logits  # K' = M+1 logits at full size -> ids 0..M


def test_one_pass_equals_naive_per_subset_passes_and_is_reproducible():
    batches = _batches(n=2, all_classes=False)
    kw = dict(rmm_rates=(0.25, 0.75), nm_levels=("low", "high"), seed=3, progress=False)
    res = evaluate(_toy_model, batches, SPEC, **kw)
    keymap = plan(4, ("full", "emm", "rmm", "nm"), ("benchmark", "deployed"), (0.25, 0.75), ("low", "high"))
    assert res.predict_calls == 2 * len(set(keymap.values())) < 2 * len(keymap)
    for key, variant in keymap.items():  # naive: one pass over the data per result key
        accs, stats = run_variants(_toy_model, batches, SPEC, [variant], seed=3)
        setting = key[1]
        if key[0] == "full":
            got = res.results[setting]["full"]["miou"]
        elif key[0] == "emm":
            got = res.results[setting]["emm"]["subsets"][SPEC.subset_name(key[2])]["miou"]
        elif key[0] == "rmm":
            got = res.results[setting]["rmm"][str(key[2])]["subsets"][SPEC.subset_name(key[3])]["miou"]
        else:
            got = res.results[setting]["nm"][key[2]]["miou"]
        assert got == accs[variant].overall.miou(), key
    again = evaluate(_toy_model, batches, SPEC, **kw)
    assert again.results == res.results
    other = evaluate(_toy_model, batches, SPEC, **{**kw, "seed": 4})
    assert other.results["benchmark"]["rmm"] != res.results["benchmark"]["rmm"]
    assert other.results["benchmark"]["emm"] == res.results["benchmark"]["emm"]  # EMM has no randomness
    # the toy model uses `present`, so deployed EMM differs from benchmark EMM
    assert res.results["deployed"]["emm"] != res.results["benchmark"]["emm"]
    stacked = evaluate(_toy_model, batches, SPEC, **kw, stack=8)  # 8 variants per predict call, same figures
    n_var = len(set(keymap.values()))
    assert stacked.predict_calls == 2 * -(-n_var // 8) and stacked.results == res.results


def test_per_condition_groups_sum_to_overall():
    batches = _batches(n=3, all_classes=False)
    variant = next(iter(plan(4, ("full",), ("benchmark",), (), ()).values()))
    accs, stats = run_variants(_toy_model, batches, SPEC, [variant])
    acc = accs[variant]
    conds = [g for g in acc.groups if g[0] == "condition"]
    assert sorted(v for _, v in conds) == sorted(CONDITIONS)
    assert torch.equal(sum(acc.groups[g].mat for g in conds), acc.overall.mat)
    res = evaluate(_toy_model, batches, SPEC, protocols=("full",), progress=False)
    assert res.by_condition["fog"]["frames"] == 2 and res.by_corner_case["motionblur"]["frames"] == 2
    assert res.by_condition["fog"]["benchmark"]["table1"]["mIoU"] == acc.groups[("condition", "fog")].miou()


def test_cheap_configuration_and_json_roundtrip(tmp_path):
    batches = _batches(n=2)
    res = evaluate(_toy_model, batches, SPEC, protocols=("full",), settings=("benchmark",), progress=False)
    assert res.predict_calls == 2 and res.frames == 4
    row = res.table1_row()
    assert row["mIoU"] is not None and row["Mean"] is None and row["EMM Avg"] is None
    assert res.anymodal_row() is None
    with pytest.raises(KeyError, match="deployed"):
        res.table1_row("deployed")
    path = res.save_json(tmp_path / "r.json")
    back = EvalResult.from_dict(json.loads(path.read_text()))
    assert back.table1_row() == row and back.confusion == res.confusion


def test_logits_are_upsampled_and_labels_checked():
    batches = _batches(n=1)

    def low_res_logits(x, p):
        lg = torch.zeros(x.shape[0], K, x.shape[-2] // 4, x.shape[-1] // 4)
        lg[:, 5] = 1.0
        return lg

    res = evaluate(low_res_logits, batches, SPEC, protocols=("full",), settings=("benchmark",), progress=False)
    lab = batches[0]["label"]
    valid = lab != 255
    assert res.table1_row()["mIoU"] == pytest.approx(100.0 * float((lab[valid] == 5).sum()) / int(valid.sum()) / K)
    with pytest.raises(ValueError, match="returned labels of size"):
        evaluate(lambda x, p: torch.zeros(x.shape[0], 4, 4, dtype=torch.long), batches, SPEC, protocols=("full",),
                 progress=False)
    with pytest.raises(ValueError, match="batch\\['x'\\]"):
        evaluate(_toy_model, [{"x": torch.zeros(1, 3, 3, 8, 8), "label": torch.zeros(1, 8, 8)}], SPEC,
                 protocols=("full",), progress=False)
    with pytest.raises(ValueError, match="protocols: unknown"):
        evaluate(_toy_model, batches, SPEC, protocols=("fog",), progress=False)


def test_generic_in_modalities():
    spec = ModelSpec(name="two", modalities=(Modality("rgb", "rgb8", "F"), Modality("event", "event_frame", "E")),
                     classes=("a", "b"), palette=((0, 0, 0), (1, 1, 1)), input_size=(32, 32))
    g = torch.Generator().manual_seed(0)
    batches = [{"x": torch.randn(1, 2, 3, 8, 8, generator=g), "present": torch.ones(1, 2, dtype=torch.bool),
                "label": torch.randint(0, 2, (1, 8, 8), generator=g)}]
    res = evaluate(lambda x, p: (x[:, 0, 0] > 0).long(), batches, spec, progress=False)
    assert list(res.anymodal_row()) == ["F", "E", "FE", "Mean"]
    assert res.robustness_score() is not None and res.by_condition == {}


def _ddp_eval_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        shard = _batches(n=3, all_classes=False)[rank::world]  # rank 0: cloud + night, rank 1: fog
        res = evaluate(_toy_model, shard, SPEC, protocols=("full", "emm"), progress=False, all_reduce=True)
        if rank == 0:
            torch.save({"row": res.table1_row("deployed"), "frames": res.frames, "cond": res.by_condition}, out)
    finally:
        dist.destroy_process_group()


def test_ddp_all_reduce_equals_single_process(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "r.pt")
    mp.start_processes(_ddp_eval_worker, args=(2, f"file://{tmp_path / 'store'}", out), nprocs=2, join=True,
                       start_method="fork")
    got = torch.load(out)
    whole = evaluate(_toy_model, _batches(n=3, all_classes=False), SPEC, protocols=("full", "emm"), progress=False)
    assert got["frames"] == whole.frames == 6
    assert got["row"] == pytest.approx(whole.table1_row("deployed"))
    assert sorted(got["cond"]) == sorted(CONDITIONS)  # conditions seen by either rank, reduced on both
    for c in CONDITIONS:
        assert got["cond"][c]["frames"] == 2
        assert got["cond"][c]["deployed"]["table1"] == pytest.approx(whole.by_condition[c]["deployed"]["table1"])
