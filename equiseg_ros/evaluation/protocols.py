"""Robustness protocols over any ``predict(x, present)`` callable: full, EMM, RMM, NM and the any-modality table.

Definitions follow the sensor-failure benchmark (Liao et al., CVPR 2025) as recorded in
``reference/peers.md`` section 3:

- EMM: every non-empty subset of modalities is kept (2^M - 1 subsets; all-missing excluded), the others zeroed after
  normalisation. EMM Avg = unweighted mean of the subset mIoUs; EMM(p) = sum_s w_s mIoU_s with
  w_s = p^k (1-p)^(M-k) (k = number missing) renormalised over the subsets, for p in {0.2, 0.1, 0.05}.
- RMM: same subsets and aggregation, but the "missing" modalities are damaged (each element zeroed with
  probability r) instead of removed. EQUISeg Table 1 reports r = 0.5 (``table_rmm_rate``).
- NM: one pass per level with every modality corrupted (salt-and-pepper, then Gaussian except events).
- Any-modality (AnySeg / RMMSS Table 1): the per-subset mIoU under EMM, named R, D, ..., RDEL, plus their Mean.
- Robustness score: mean of [mIoU, EMM Avg, EMM p=0.1, RMM Avg, RMM p=0.1, NM Low, NM Mid] (EQUISeg "Mean").

Two settings (DESIGN.md): *benchmark* - missing inputs zeroed and the model told nothing (``present`` as loaded,
normally all true; comparable to the papers) - and *deployed* - zeroed and ``present`` false, what the ROS node
does. Only EMM and the any-modality table differ between the two: in RMM and NM every sensor still delivers a
(degraded) frame, so ``present`` stays true in both settings and those figures are computed once and reported
under both.

Efficiency: every batch is loaded once and all variants (subset x setting x rate x level) run on it while it is in
memory; identical variants are run once (the full-modality input is EMM's and RMM's all-kept subset and the
"full" row). Corruptions are seeded per (seed, batch index, variant), so results do not depend on which other
protocols were requested, and a re-run reproduces them exactly.
"""
from __future__ import annotations

import itertools
import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from equiseg_ros.data.corruptions import emm as emm_corrupt
from equiseg_ros.data.corruptions import make_generator, nm_level
from equiseg_ros.data.corruptions import nm as nm_corrupt
from equiseg_ros.data.corruptions import rmm as rmm_corrupt
from equiseg_ros.evaluation.metrics import ConfusionMatrix, LabelKeys
from equiseg_ros.spec import ModelSpec

PROTOCOLS = ("full", "emm", "rmm", "nm", "anymodal")
SETTINGS = ("benchmark", "deployed")
EXPECTATION_PS = (0.2, 0.1, 0.05)
TABLE1_COLUMNS = ("mIoU", "EMM Avg", "EMM p=0.1", "RMM Avg", "RMM p=0.1", "NM Low", "NM Mid", "Mean")
SCORE_COLUMNS = TABLE1_COLUMNS[:-1]

Keep = tuple[bool, ...]
Predict = Callable[[torch.Tensor, torch.Tensor], Any]


# ---- subsets and weights ---------------------------------------------------------------------------------

def subsets(num_modalities: int) -> list[Keep]:
    """Every non-empty kept subset as a presence tuple, ordered like the papers' tables (R, D, ..., RD, ..., RDEL):
    by number kept, then lexicographically by modality index."""
    if num_modalities <= 0:
        raise ValueError(f"num_modalities: must be positive, got {num_modalities}")
    out: list[Keep] = []
    for k in range(1, num_modalities + 1):
        for kept in itertools.combinations(range(num_modalities), k):
            out.append(tuple(i in kept for i in range(num_modalities)))
    return out


def emm_weights(num_modalities: int, p: float) -> dict[Keep, float]:
    """Expectation weights p^k (1-p)^(M-k) per kept subset (k = number missing), renormalised to sum to 1."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: must be in [0, 1), got {p}")
    raw = {s: p ** s.count(False) * (1.0 - p) ** s.count(True) for s in subsets(num_modalities)}
    total = sum(raw.values())
    return {s: w / total for s, w in raw.items()}


def expectation(miou_by_subset: Mapping[Keep, float], p: float) -> float:
    """EMM(p) / RMM(p): the weighted mean of per-subset mIoUs with ``emm_weights``."""
    m = len(next(iter(miou_by_subset)))
    weights = emm_weights(m, p)
    missing = set(weights) - set(miou_by_subset)
    if missing:
        raise ValueError(f"miou_by_subset: missing {len(missing)} of {len(weights)} subsets")
    return float(sum(weights[s] * miou_by_subset[s] for s in weights))


def robustness_score(row: Mapping[str, float | None]) -> float | None:
    """EQUISeg's "Mean": mean of mIoU, EMM Avg, EMM p=0.1, RMM Avg, RMM p=0.1, NM Low, NM Mid (None if any is
    missing, so a partial evaluation never prints a score that means something else)."""
    vals = [row.get(c) for c in SCORE_COLUMNS]
    if any(v is None for v in vals):
        return None
    return float(sum(vals) / len(vals))  # type: ignore[arg-type]


# ---- variants: one model input per batch -------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """One way of feeding a batch to the model. ``keep`` = intact modalities; ``tell`` = deployed present mask."""

    kind: str  # clean | emm | rmm | nm
    keep: Keep
    tell: bool = False
    param: float | str | None = None

    @property
    def key(self) -> str:
        bits = "".join("1" if k else "0" for k in self.keep)
        return f"{self.kind}/{bits}/{int(self.tell)}/{self.param}"

    def build(self, x: torch.Tensor, present: torch.Tensor, names: Sequence[str], generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The corrupted input and the present mask the model is given."""
        keep = torch.tensor(self.keep, dtype=torch.bool, device=x.device)
        if self.kind == "clean":
            return x, present
        if self.kind == "emm":
            return emm_corrupt(x, keep), (present & keep) if self.tell else present
        if self.kind == "rmm":
            return rmm_corrupt(x, ~keep, float(self.param), generator), present
        if self.kind == "nm":
            return nm_corrupt(x, str(self.param), names, generator), present
        raise ValueError(f"variant kind: unknown {self.kind!r}")


def plan(num_modalities: int, protocols: Sequence[str], settings: Sequence[str],
         rmm_rates: Sequence[float], nm_levels: Sequence[str]) -> dict[tuple, Variant]:
    """Result key -> variant. Keys that need the same input share one (deduplicated) variant."""
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"protocols: unknown {unknown}; known: {list(PROTOCOLS)}")
    bad = [s for s in settings if s not in SETTINGS]
    if bad or not settings:
        raise ValueError(f"settings: expected a non-empty subset of {list(SETTINGS)}, got {list(settings)}")
    full: Keep = (True,) * num_modalities
    clean = Variant("clean", full)
    out: dict[tuple, Variant] = {}
    for setting in settings:
        deployed = setting == "deployed"
        if "full" in protocols:
            out[("full", setting)] = clean
        if "emm" in protocols or "anymodal" in protocols:
            for s in subsets(num_modalities):
                out[("emm", setting, s)] = clean if s == full else Variant("emm", s, deployed)
        if "rmm" in protocols:
            for r in rmm_rates:
                for s in subsets(num_modalities):
                    out[("rmm", setting, float(r), s)] = clean if s == full else Variant("rmm", s, False, float(r))
        if "nm" in protocols:
            for level in nm_levels:
                out[("nm", setting, nm_level(level)[0])] = Variant("nm", full, False, nm_level(level)[0])
    return out


def to_labels(out: Any, size: tuple[int, int]) -> torch.Tensor:
    """A predictor's output -> class ids [B, H, W]: logits [B, K, h, w] are upsampled bilinearly and argmaxed;
    tuples/lists use their first item, mappings their "labels" (else "logits") entry."""
    if isinstance(out, Mapping):
        out = out["labels"] if "labels" in out else out["logits"]
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(out)
    if out.dim() == 4:
        if tuple(out.shape[-2:]) != tuple(size):
            out = torch.nn.functional.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
        return out.argmax(1)
    if out.dim() == 3:
        if tuple(out.shape[-2:]) != tuple(size):
            raise ValueError(f"predict: returned labels of size {tuple(out.shape[-2:])}, the label is {tuple(size)}; "
                             "return logits [B, K, h, w] to have them upsampled")
        return out.long()
    raise ValueError(f"predict: expected labels [B, H, W] or logits [B, K, h, w], got shape {tuple(out.shape)}")


def _variant_seed(seed: int, batch_index: int, variant: Variant) -> int:
    return zlib.crc32(f"{seed}:{batch_index}:{variant.key}".encode()) | (int(seed) & 0xFFFF_FFFF) << 32


def _groups_of(meta: Any, batch_size: int) -> dict[tuple[str, str], list[int]]:
    """(kind, value) -> sample indices for weather conditions and corner cases named in the batch meta."""
    groups: dict[tuple[str, str], list[int]] = {}
    if not isinstance(meta, (list, tuple)) or len(meta) != batch_size:
        return groups
    for i, m in enumerate(meta):
        if not isinstance(m, Mapping):
            continue
        for kind in ("condition", "corner_case"):
            value = m.get(kind)
            if value:
                groups.setdefault((kind, str(value)), []).append(i)
    return groups


class _Accumulator:
    """Confusion matrices of one variant: overall and per condition / corner-case group."""

    def __init__(self, num_classes: int, ignore_index: int, device: torch.device) -> None:
        self.args = (num_classes, ignore_index, device)
        self.overall = ConfusionMatrix(*self.args)
        self.groups: dict[tuple[str, str], ConfusionMatrix] = {}

    def add(self, mats: torch.Tensor, groups: Mapping[tuple[str, str], list[int]]) -> None:
        self.overall.add(mats.sum(0))
        for g, idx in groups.items():
            cm = self.groups.get(g)
            if cm is None:
                cm = self.groups[g] = ConfusionMatrix(*self.args)
            cm.add(mats[idx].sum(0))


def _unpack(batch: Any, num_modalities: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor,
                                                                          torch.Tensor, Any]:
    if not isinstance(batch, Mapping) or "x" not in batch or "label" not in batch:
        raise ValueError("loader: each batch must be a dict with 'x' [B,M,3,H,W], 'present' [B,M], 'label' [B,H,W] "
                         f"and optional 'meta'; got {type(batch).__name__}"
                         + (f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else ""))
    x = batch["x"].to(device)
    if x.dim() != 5 or x.shape[1] != num_modalities:
        raise ValueError(f"batch['x']: expected [B, {num_modalities}, 3, H, W] (spec order), got {tuple(x.shape)}")
    present = batch.get("present")
    if present is None:
        present = torch.ones(x.shape[:2], dtype=torch.bool)
    present = present.to(device=device, dtype=torch.bool)
    label = batch["label"].to(device)
    if label.dim() != 3 or label.shape[0] != x.shape[0]:
        raise ValueError(f"batch['label']: expected [B, H, W] with B={x.shape[0]}, got {tuple(label.shape)}")
    return x, present, label, batch.get("meta")


def run_variants(predict: Predict, loader: Iterable, spec: ModelSpec, variants: Sequence[Variant], seed: int = 0,
                 device: str | torch.device = "cpu", max_batches: int | None = None,
                 bar: Any = None, stack: int = 1) -> tuple[dict[Variant, _Accumulator], dict[str, int]]:
    """One pass over ``loader``; every variant runs on each batch while it is in memory.

    ``stack`` > 1 concatenates that many variants along the batch axis into one ``predict`` call (a batch of B
    frames becomes B * stack model inputs): fewer, larger calls keep a GPU busy when frames come one at a time.
    The predictor must then treat samples independently (eval-mode networks do).
    """
    if stack < 1:
        raise ValueError(f"stack: must be >= 1, got {stack}")
    device = torch.device(device)
    names = spec.modality_names
    accs = {v: _Accumulator(spec.num_classes, spec.ignore_index, device) for v in variants}
    stats = {"frames": 0, "batches": 0, "predict_calls": 0}
    group_frames: dict[str, int] = {}
    with torch.no_grad():
        for bi, batch in enumerate(loader):
            if max_batches is not None and bi >= max_batches:
                break
            x, present, label, meta = _unpack(batch, spec.num_modalities, device)
            b = x.shape[0]
            groups = _groups_of(meta, b)
            keys = LabelKeys(label, spec.num_classes, spec.ignore_index)
            for (kind, value), idx in groups.items():
                group_frames[f"{kind}:{value}"] = group_frames.get(f"{kind}:{value}", 0) + len(idx)
            for start in range(0, len(variants), stack):
                chunk = variants[start:start + stack]
                built = [v.build(x, present, names, make_generator(_variant_seed(seed, bi, v), device)) for v in chunk]
                if len(built) == 1:
                    xi, pi = built[0]
                else:
                    xi, pi = torch.cat([t[0] for t in built]), torch.cat([t[1] for t in built])
                pred = to_labels(predict(xi, pi), tuple(label.shape[-2:])).to(device)
                if pred.shape[0] != b * len(chunk):
                    raise ValueError(f"predict: returned {pred.shape[0]} predictions for {b * len(chunk)} inputs")
                for j, v in enumerate(chunk):
                    accs[v].add(keys.confusion(pred[j * b:(j + 1) * b]), groups)
                stats["predict_calls"] += 1
                if bar is not None:
                    bar.update(len(chunk))
            stats["frames"] += b
            stats["batches"] += 1
    stats["group_frames"] = group_frames  # type: ignore[assignment]
    return accs, stats


# ---- aggregation ---------------------------------------------------------------------------------------------

def _summary(miou: Callable[[tuple], float], keys: Iterable[tuple], spec: ModelSpec, settings: Sequence[str],
             rmm_rates: Sequence[float], nm_levels: Sequence[str], table_rmm_rate: float | None,
             detail: Callable[[tuple], dict] | None = None) -> dict[str, Any]:
    """Per-setting nested figures from a key -> mIoU function (shared by overall and per-condition summaries)."""
    keys = set(keys)
    m = spec.num_modalities
    subs = subsets(m)

    def fig(key: tuple) -> dict[str, Any]:
        return detail(key) if detail is not None else {"miou": miou(key)}

    out: dict[str, Any] = {}
    for setting in settings:
        s: dict[str, Any] = {}
        if ("full", setting) in keys:
            s["full"] = fig(("full", setting))
        if ("emm", setting, subs[0]) in keys:
            by = {sub: miou(("emm", setting, sub)) for sub in subs}
            s["emm"] = {"subsets": {spec.subset_name(sub): fig(("emm", setting, sub)) for sub in subs},
                        "avg": sum(by.values()) / len(by),
                        "expectation": {str(p): expectation(by, p) for p in EXPECTATION_PS}}
            s["anymodal"] = {**{spec.subset_name(sub): by[sub] for sub in subs}, "Mean": sum(by.values()) / len(by)}
        rm: dict[str, Any] = {}
        for r in rmm_rates:
            if ("rmm", setting, float(r), subs[0]) not in keys:
                continue
            by = {sub: miou(("rmm", setting, float(r), sub)) for sub in subs}
            rm[str(float(r))] = {"subsets": {spec.subset_name(sub): fig(("rmm", setting, float(r), sub))
                                             for sub in subs},
                                 "avg": sum(by.values()) / len(by),
                                 "expectation": {str(p): expectation(by, p) for p in EXPECTATION_PS}}
        if rm:
            s["rmm"] = rm
        nmd = {lv: fig(("nm", setting, lv)) for lv in (nm_level(v)[0] for v in nm_levels)
               if ("nm", setting, lv) in keys}
        if nmd:
            s["nm"] = nmd
        row = {c: None for c in TABLE1_COLUMNS}
        if "full" in s:
            row["mIoU"] = s["full"]["miou"]
        if "emm" in s:
            row["EMM Avg"] = s["emm"]["avg"]
            row["EMM p=0.1"] = s["emm"]["expectation"]["0.1"]
        if rm and table_rmm_rate is not None and str(float(table_rmm_rate)) in rm:
            row["RMM Avg"] = rm[str(float(table_rmm_rate))]["avg"]
            row["RMM p=0.1"] = rm[str(float(table_rmm_rate))]["expectation"]["0.1"]
        if nmd:
            row["NM Low"] = nmd.get("low", {}).get("miou")
            row["NM Mid"] = nmd.get("mid", {}).get("miou")
        row["Mean"] = robustness_score(row)
        s["table1"] = row
        s["robustness_score"] = row["Mean"]
        out[setting] = s
    return out


@dataclass
class EvalResult:
    """Every figure of one evaluation, JSON-serialisable; ``table1_row`` / ``anymodal_row`` give the papers' rows."""

    spec_name: str
    modality_names: list[str]
    modality_shorts: list[str]
    class_names: list[str]
    protocols: list[str]
    settings: list[str]
    rmm_rates: list[float]
    nm_levels: list[str]
    table_rmm_rate: float | None
    seed: int
    frames: int
    batches: int
    predict_calls: int
    seconds: float
    results: dict[str, Any] = field(default_factory=dict)  # setting -> nested figures
    by_condition: dict[str, Any] = field(default_factory=dict)  # condition -> {"frames", setting -> figures}
    by_corner_case: dict[str, Any] = field(default_factory=dict)
    confusion: list[list[int]] | None = None  # full-modality confusion matrix (rows = ground truth)

    def table1_row(self, setting: str = "benchmark") -> dict[str, float | None]:
        """EQUISeg Table 1 columns: mIoU, EMM Avg, EMM p=0.1, RMM Avg, RMM p=0.1, NM Low, NM Mid, Mean."""
        self._check_setting(setting)
        return dict(self.results[setting]["table1"])

    def anymodal_row(self, setting: str = "benchmark") -> dict[str, float] | None:
        """RMMSS Table 1 columns (R, D, ..., RDEL, Mean), or None when EMM/anymodal was not evaluated."""
        self._check_setting(setting)
        row = self.results[setting].get("anymodal")
        return dict(row) if row is not None else None

    def robustness_score(self, setting: str = "benchmark") -> float | None:
        return self.table1_row(setting)["Mean"]

    def _check_setting(self, setting: str) -> None:
        if setting not in self.results:
            raise KeyError(f"setting {setting!r} not evaluated (have {sorted(self.results)})")

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvalResult":
        return cls(**dict(data))

    def save_json(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=False, allow_nan=False))
        return p


def _all_reduce(accs: Mapping[Variant, _Accumulator], stats: dict[str, Any], device: str | torch.device) -> None:
    """Sum confusion matrices (overall and per condition group) and counts over DDP ranks, in place.

    Ranks may have seen different conditions, so the union of group keys is gathered first and every rank reduces
    the same matrices in the same order (missing ones as zeros). Without a process group nothing changes.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    local = sorted({g for acc in accs.values() for g in acc.groups} | {tuple(k.split(":", 1))
                                                                       for k in stats["group_frames"]})
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    union = sorted({tuple(g) for part in gathered for g in part})
    for acc in accs.values():  # same variants in the same order on every rank
        acc.overall.all_reduce()
        for g in union:
            if g not in acc.groups:
                acc.groups[g] = ConfusionMatrix(*acc.args)
            acc.groups[g].all_reduce()
    keys = ("frames", "batches", "predict_calls")
    frames = stats["group_frames"]
    t = torch.tensor([int(stats[k]) for k in keys] + [int(frames.get(f"{a}:{b}", 0)) for a, b in union],
                     dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    vals = [int(v) for v in t.tolist()]
    stats.update(zip(keys, vals[:3]))
    stats["group_frames"] = {f"{a}:{b}": v for (a, b), v in zip(union, vals[3:])}


def _resolve_table_rate(rmm_rates: Sequence[float], wanted: float) -> float | None:
    rates = [float(r) for r in rmm_rates]
    if not rates:
        return None
    if float(wanted) in rates:
        return float(wanted)
    return sorted(rates)[len(rates) // 2]


def evaluate(predict: Predict, loader: Iterable, spec: ModelSpec, protocols: Sequence[str] = PROTOCOLS,
             settings: Sequence[str] = SETTINGS, rmm_rates: Sequence[float] = (0.25, 0.5, 0.75),
             nm_levels: Sequence[str] = ("low", "mid", "high"), seed: int = 0, device: str | torch.device = "cpu",
             max_batches: int | None = None, progress: bool = True, table_rmm_rate: float = 0.5,
             all_reduce: bool = False, stack: int = 1) -> EvalResult:
    """Run the requested protocols in one pass over ``loader`` and aggregate them.

    ``predict(x [B,M,3,H,W], present [B,M] bool)`` returns class ids [B,H,W] or logits [B,K,h,w]; it must not
    modify its inputs in place (the clean batch is reused for every variant). For cheap periodic validation use
    ``protocols=("full",)`` or ``("full", "emm")`` and one setting. ``all_reduce=True`` sums the confusion matrices
    over DDP ranks (each rank evaluates its shard of the data; shards may differ in size and in conditions) before
    the figures are computed, per-condition ones included. ``stack`` runs that
    many input variants per ``predict`` call (see ``run_variants``); figures equal those of ``stack=1`` up to the
    float rounding of batched kernels (a near-tie pixel may flip).
    """
    protocols = list(dict.fromkeys(protocols))
    settings = list(dict.fromkeys(settings))
    levels = [nm_level(v)[0] for v in nm_levels]
    rates = [float(r) for r in rmm_rates]
    for r in rates:
        if not 0.0 < r <= 1.0:
            raise ValueError(f"rmm_rates: each rate must be in (0, 1], got {r}")
    keymap = plan(spec.num_modalities, protocols, settings, rates, levels)
    variants = list(dict.fromkeys(keymap.values()))
    total = None
    try:
        n = len(loader)  # type: ignore[arg-type]
        total = (min(n, max_batches) if max_batches is not None else n) * len(variants)
    except TypeError:
        pass
    from tqdm import tqdm

    t0 = time.perf_counter()
    with tqdm(total=total, disable=not progress, unit="input", desc=f"evaluate ({len(variants)} inputs/batch)") as bar:
        accs, stats = run_variants(predict, loader, spec, variants, seed, device, max_batches, bar, stack)
    if all_reduce:  # every rank reaches this point with the same variants in the same order
        _all_reduce(accs, stats, device)
    if stats["frames"] == 0:
        raise ValueError("loader: yielded no batches")
    seconds = time.perf_counter() - t0
    table_rate = _resolve_table_rate(rates, table_rmm_rate) if "rmm" in protocols else None
    clean_key = next((k for k, v in keymap.items() if v.kind == "clean"), None)

    def detail(key: tuple) -> dict[str, Any]:
        return accs[keymap[key]].overall.as_dict(spec.classes)

    results = _summary(lambda k: accs[keymap[k]].overall.miou(), keymap, spec, settings, rates, levels,
                       table_rate, detail)
    group_keys = sorted({g for acc in accs.values() for g in acc.groups})
    by_kind: dict[str, dict[str, Any]] = {"condition": {}, "corner_case": {}}
    for g in group_keys:
        def g_miou(k: tuple, g: tuple[str, str] = g) -> float:
            cm = accs[keymap[k]].groups.get(g)
            return cm.miou() if cm is not None else 0.0

        entry = _summary(g_miou, keymap, spec, settings, rates, levels, table_rate)
        entry = {s: {"table1": v["table1"], **({"anymodal": v["anymodal"]} if "anymodal" in v else {})}
                 for s, v in entry.items()}
        clean_cm = accs[keymap[clean_key]].groups.get(g) if clean_key is not None else None
        entry["frames"] = stats["group_frames"].get(f"{g[0]}:{g[1]}", 0)
        entry["miou_present"] = clean_cm.miou_present() if clean_cm is not None else None
        by_kind[g[0]][g[1]] = entry
    confusion = accs[keymap[clean_key]].overall.mat.tolist() if clean_key is not None else None
    return EvalResult(
        spec_name=spec.name, modality_names=list(spec.modality_names),
        modality_shorts=[m.short for m in spec.modalities], class_names=list(spec.classes),
        protocols=protocols, settings=settings, rmm_rates=rates, nm_levels=levels, table_rmm_rate=table_rate,
        seed=int(seed), frames=stats["frames"], batches=stats["batches"], predict_calls=stats["predict_calls"],
        seconds=seconds, results=results, by_condition=by_kind["condition"], by_corner_case=by_kind["corner_case"],
        confusion=confusion,
    )
