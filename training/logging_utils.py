"""Scalars of a run: a CSV of every logged value (always) and TensorBoard event files (when available).

Only rank 0 creates a ``ScalarLog``; other ranks get ``NullLog``. The CSV is long-format (step, tag, value) so new
tags can appear at any time, and it is appended to on resume (rows past the resume step are dropped first, so a
resumed run's CSV equals an uninterrupted run's).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path


class NullLog:
    def add(self, step: int, values: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class ScalarLog(NullLog):
    def __init__(self, run_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "scalars.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        self._file = self.path.open("w", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(["step", "tag", "value"])
        for r in rows:
            self._csv.writerow([r["step"], r["tag"], r["value"]])
        self._file.flush()
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=resume_step)
            except Exception as exc:  # tensorboard missing or broken: the CSV is the record
                print(f"[train] TensorBoard disabled ({type(exc).__name__}: {exc}); scalars go to {self.path}")

    def add(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            v = float(value)
            if math.isnan(v):
                continue
            self._csv.writerow([step, tag, repr(v)])
            if self._tb is not None:
                self._tb.add_scalar(tag, v, step)
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def read_scalars(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """scalars.csv -> {tag: [(step, value), ...]} in file order."""
    out: dict[str, list[tuple[int, float]]] = {}
    with Path(path).open(newline="") as f:
        for r in csv.DictReader(f):
            out.setdefault(r["tag"], []).append((int(r["step"]), float(r["value"])))
    return out
