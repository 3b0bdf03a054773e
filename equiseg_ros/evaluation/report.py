"""Reports in the papers' formats: JSON with every figure, markdown tables, PNG charts.

- EQUISeg Table 1 layout: mIoU | EMM (Avg) | EMM (p=0.1) | RMM (Avg) | RMM (p=0.1) | NM (Low) | NM (Mid) | Mean,
  one row per model, one table per setting (benchmark = the papers' zero-fill; deployed = zero-fill + present).
- RMMSS Table 1 layout (AnySeg's any-modality metric): one column per modality subset named from the spec's short
  letters (R, D, E, L, RD, ..., RDEL) and Mean.
- Per-condition / corner-case Table-1 rows, and per-class IoU of the full-modality input.
The best value of each column is bold when several models are compared, as in the papers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from equiseg_ros.evaluation.protocols import TABLE1_COLUMNS, EvalResult, subsets
from equiseg_ros.spec import ModelSpec

# Table-1 column keys -> the header text printed in EQUISeg Table 1.
TABLE1_HEADERS = {"mIoU": "mIoU", "EMM Avg": "EMM (Avg)", "EMM p=0.1": "EMM (p=0.1)", "RMM Avg": "RMM (Avg)",
                  "RMM p=0.1": "RMM (p=0.1)", "NM Low": "NM (Low)", "NM Mid": "NM (Mid)", "Mean": "Mean"}


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return str(v) if isinstance(v, int) else f"{v:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[tuple[str | Sequence[str], Sequence[float | None]]],
                   bold_best: bool = True) -> str:
    """A markdown table. A row is (label or labels, values); the header names the label columns then the values.

    With ``bold_best`` the largest value of each column is bold, compared among rows sharing their first label (one
    model per row: the whole column; several label columns, e.g. condition + model: within each condition), and
    only where 2+ values compete.
    """
    def labels(r: tuple) -> list[str]:
        return [r[0]] if isinstance(r[0], str) else list(r[0])

    n_labels = len(labels(rows[0])) if rows else 1
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(labels(r)[0] if n_labels > 1 else "", []).append(i)
    best: dict[tuple[int, int], float] = {}
    if bold_best:
        for members in groups.values():
            for j in range(len(header) - n_labels):
                vals = [rows[i][1][j] for i in members if rows[i][1][j] is not None]
                if len(vals) > 1:
                    for i in members:
                        best[(i, j)] = max(vals)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * n_labels + ["---:"] * (len(header) - n_labels)) + "|"]
    for i, r in enumerate(rows):
        cells = []
        for j, v in enumerate(r[1]):
            b = best.get((i, j))
            cells.append(f"**{_fmt(v)}**" if v is not None and b is not None and round(v, 2) == round(b, 2)
                         else _fmt(v))
        lines.append("| " + " | ".join([*(t.replace("|", "/") for t in labels(r)), *cells]) + " |")
    return "\n".join(lines) + "\n"


def table1_markdown(results: Mapping[str, EvalResult], setting: str = "benchmark") -> str:
    """EQUISeg Table 1 (one row per model) for one setting."""
    rows = [(name, [r.table1_row(setting)[c] for c in TABLE1_COLUMNS]) for name, r in results.items()
            if setting in r.results]
    return markdown_table(["Model", *(TABLE1_HEADERS[c] for c in TABLE1_COLUMNS)], rows)


def subset_columns(spec: ModelSpec | None, result: EvalResult) -> list[str]:
    """Any-modality column names in table order (R, D, E, L, RD, ..., RDEL) from the result's own modalities
    (``spec`` is used only when it has the same modalities, e.g. to rename them)."""
    shorts = result.modality_shorts
    if spec is not None and list(spec.modality_names) == list(result.modality_names):
        shorts = [m.short for m in spec.modalities]
    return ["".join(s for s, k in zip(shorts, keep) if k) for keep in subsets(len(shorts))]


def anymodal_markdown(results: Mapping[str, EvalResult], spec: ModelSpec | None = None,
                      setting: str = "benchmark") -> str | None:
    """RMMSS Table 1 (any-modality evaluation) for one setting; None if no model has it. Models with different
    modality sets (e.g. RGB-D next to RGB-D-E-L) get one table each, since their columns differ."""
    tables: dict[tuple[str, ...], list] = {}
    for name, r in results.items():
        row = r.anymodal_row(setting) if setting in r.results else None
        if row is None:
            continue
        cols = tuple(subset_columns(spec, r))
        tables.setdefault(cols, []).append((name, [row.get(c) for c in cols] + [row.get("Mean")]))
    if not tables:
        return None
    return "\n".join(markdown_table(["Method", *cols, "Mean"], rows) for cols, rows in tables.items())


def conditions_markdown(results: Mapping[str, EvalResult], setting: str = "benchmark") -> str | None:
    """One table of Table-1 rows per weather condition, then per corner case, models side by side."""
    rows = []
    for attr in ("by_condition", "by_corner_case"):
        for g in sorted({g for r in results.values() for g in getattr(r, attr)}):
            for model, r in results.items():
                entry = getattr(r, attr).get(g)
                if entry is None or setting not in entry:
                    continue
                rows.append(((g, model, str(entry.get("frames", 0))),
                             [entry[setting]["table1"][c] for c in TABLE1_COLUMNS]))
    if not rows:
        return None
    return markdown_table(["Condition / case", "Model", "Frames", *(TABLE1_HEADERS[c] for c in TABLE1_COLUMNS)], rows)


def per_class_markdown(results: Mapping[str, EvalResult], setting: str = "benchmark") -> str | None:
    """Per-class IoU of the full-modality input, one column per model."""
    cols, per = [], []
    for name, r in results.items():
        full = r.results.get(setting, {}).get("full")
        if full is not None:
            cols.append(name)
            per.append(full["per_class_iou"])
    if not cols:
        return None
    classes = list(per[0])
    rows = [(c, [p.get(c) for p in per]) for c in classes]
    return markdown_table(["Class", *cols], rows, bold_best=False)


def chart(results: Mapping[str, EvalResult], path: str | Path, settings: Sequence[str] = ("benchmark", "deployed")
          ) -> Path | None:
    """Grouped bars: one group per Table-1 column, one bar per model, one panel per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [s for s in settings if any(s in r.results for r in results.values())]
    if not settings:
        return None
    fig, axes = plt.subplots(len(settings), 1, figsize=(max(8, 1.2 * len(TABLE1_COLUMNS) * max(1, len(results)) / 2),
                                                        3.6 * len(settings)), squeeze=False)
    width = 0.8 / max(1, len(results))
    for ax, setting in zip(axes[:, 0], settings):
        for i, (name, r) in enumerate(results.items()):
            if setting not in r.results:
                continue
            row = r.table1_row(setting)
            vals = [row[c] if row[c] is not None else 0.0 for c in TABLE1_COLUMNS]
            xs = [j + (i - (len(results) - 1) / 2) * width for j in range(len(TABLE1_COLUMNS))]
            bars = ax.bar(xs, vals, width, label=name)
            for b, c in zip(bars, TABLE1_COLUMNS):
                if row[c] is None:
                    b.set_hatch("//")
                    b.set_alpha(0.3)
        ax.set_xticks(range(len(TABLE1_COLUMNS)), [TABLE1_HEADERS[c] for c in TABLE1_COLUMNS], fontsize=8)
        ax.set_ylabel("mIoU (%)")
        ax.set_title(f"{setting} setting")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: Mapping[str, EvalResult], out_dir: str | Path, spec: ModelSpec | None = None
                 ) -> dict[str, Path]:
    """Write ``results.json``, ``report.md`` and ``robustness.png`` into ``out_dir``; returns their paths."""
    if not results:
        raise ValueError("results: nothing to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    payload: dict[str, Any] = {"models": {name: r.to_dict() for name, r in results.items()}}
    paths["json"] = out / "results.json"
    paths["json"].write_text(json.dumps(payload, indent=1, allow_nan=False))

    first = next(iter(results.values()))
    settings = list(dict.fromkeys(s for r in results.values() for s in r.settings))
    lines = [f"# Robustness report ({first.spec_name}: {', '.join(first.modality_names)})", "",
             f"{first.frames} frames, seed {first.seed}. Figures are mIoU in percent (reference semantics: "
             "absent classes count as 0). RMM columns of Table 1 use r = "
             f"{first.table_rmm_rate if first.table_rmm_rate is not None else '–'}. Settings: *benchmark* = missing "
             "inputs zeroed after normalisation, model told nothing (the papers); *deployed* = zeroed and "
             "`present` false (the ROS node).", ""]
    for setting in settings:
        lines += [f"## {setting} setting", "", "### EQUISeg Table 1 layout", "", table1_markdown(results, setting)]
        any_md = anymodal_markdown(results, spec, setting)
        if any_md:
            lines += ["### Any-modality (RMMSS Table 1 layout)", "", any_md]
        cond = conditions_markdown(results, setting)
        if cond:
            lines += ["### Per condition", "", cond]
    pc = per_class_markdown(results, settings[0])
    if pc:
        lines += ["## Per-class IoU, full modalities", "", pc]
    lines += ["## Runs", "", markdown_table(["Model", "frames", "predict calls", "seconds"],
                                             [(n, [r.frames, r.predict_calls, r.seconds]) for n, r in results.items()],
                                             bold_best=False)]
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text("\n".join(lines))
    png = chart(results, out / "robustness.png", settings)
    if png is not None:
        paths["png"] = png
    return paths


def load_results(path: str | Path) -> dict[str, EvalResult]:
    """Read a ``results.json`` written by ``write_report`` back into EvalResults (to merge or re-render)."""
    data = json.loads(Path(path).read_text())
    return {name: EvalResult.from_dict(d) for name, d in data["models"].items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Merge ``results.json`` files of separate runs into one report (models side by side)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m equiseg_ros.evaluation.report", description=main.__doc__)
    ap.add_argument("results", nargs="+", help="results.json files written by training/evaluate.py")
    ap.add_argument("--out", required=True, help="output folder for the merged results.json, report.md, PNG")
    args = ap.parse_args(argv)
    merged: dict[str, EvalResult] = {}
    for path in args.results:
        for name, res in load_results(path).items():
            key, k = name, 2
            while key in merged:
                key, k = f"{name}#{k}", k + 1
            merged[key] = res
    paths = write_report(merged, args.out)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
