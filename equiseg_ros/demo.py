"""``make demo``: the whole job on the embedded synthetic data, on CPU, in a few minutes.

Steps (each skips when its outputs are up to date - same arguments, inputs unchanged - unless ``--force``):

  1. data     synthetic scenes in the DeLiVER layout + raw sensor data   python -m equiseg_ros.data.synthetic
  2. model    the shipped demo model (M-SegFormer-B0, experiments/demo_model/, rebuilt (same quality) by
              ``make demo-model``), checked against its SHA-256; with ``--recipe`` a short training on CPU
              instead                                                      python training/train.py
  3. report   robustness report: the EQUISeg Table 1 columns (full, EMM,  python training/evaluate.py
              RMM r=0.5, NM low/mid) and the any-modality table, in the benchmark and deployed settings;
              the summary gives every figure over the world's own classes beside the 25-class reference figure
  4. export   ONNX with the spec in its metadata                          python training/export.py
  5. bag      the validation split as a rosbag2 with injected failures   python -m equiseg_ros.bag.convert
  6. live     the node on a replay over real DDS (use_sim_time, /clock), online mIoU and latency, plus the same
              bag through the node's pipeline offline, and a PNG contact sheet of inputs, masks and overlays per
              condition                                                    python -m equiseg_ros.bag.evaluate --live

A step whose tool is not in this tree yet is reported as missing, the steps that need its output are skipped, and
the rest runs. The summary at the end says where every output lies.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from equiseg_ros import __version__

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "config" / "train" / "synthetic_equiseg_b0.yaml"  # the --recipe quick look (live training)
SHIPPED = ROOT / "experiments" / "demo_model" / "demo_m_segformer_b0.pt"  # make demo-model rebuilds it
SHIPPED_RECIPE = ROOT / "config" / "train" / "synthetic_demo_m_segformer_b0.yaml"
DATA_YAML = ROOT / "config" / "datasets" / "synthetic.yaml"
# The failures injected into the demo bag (seconds from the bag start; the default val split is 24 frames = 2.4 s at
# 10 Hz): LiDAR dead for 0.7 s, a fifth of the depth messages lost, 10 % malformed event messages, and the camera
# frozen for 0.8 s (the node's health check notices after a few identical frames and fails over to the next sensor).
FAILURES = ("--blackout", "lidar:0.5-1.2", "--drop", "depth:0.2", "--corrupt", "event:0.1",
            "--freeze", "rgb:1.4-2.2")


@dataclass
class Step:
    name: str
    title: str
    outputs: list[Path]
    run: Callable[[], None]
    signature: dict[str, Any]
    needs: list[str] = field(default_factory=list)  # names of steps whose outputs this one reads
    missing: str | None = None  # why it cannot run in this tree
    status: str = "pending"
    seconds: float = 0.0
    note: str = ""


class StepFailed(RuntimeError):
    pass


def _run(cmd: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
    """Run a tool, its output to ``log``; on failure show the end of the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        f.write("$ " + " ".join(str(c) for c in cmd) + "\n")
        f.flush()
        proc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                              env=env or dict(os.environ, PYTHONUNBUFFERED="1"))
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise StepFailed(f"exit code {proc.returncode}; end of {log}:\n{tail}")


def _module_exists(name: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _recipe_image_size(recipe: Path, default: int = 128) -> int:
    import yaml
    try:
        cfg = yaml.safe_load(recipe.read_text()) or {}
        return int((cfg.get("data") or {}).get("image_size", default))
    except (OSError, ValueError, AttributeError):
        return default


class Demo:
    def __init__(self, out: Path, force: bool, frames: int, size: int | None, raw_bag: bool, rate: float,
                 recipe: Path | None = None, train_iters: int | None = None, model: Path = SHIPPED) -> None:
        self.out = out
        self.train_iters = train_iters
        self.recipe = recipe  # None: the shipped model
        self.shipped = model
        self.force = force
        self.frames = frames
        self.size = size or _recipe_image_size(recipe or SHIPPED_RECIPE)
        self.export_size = max(32, int(round(self.size / 32)) * 32)
        self.raw_bag = raw_bag
        self.rate = rate
        self.py = sys.executable
        self.logs = out / "logs"
        self.stamps = out / ".stamps"
        d = out
        ckpt = d / "train" / "checkpoints" / "last.pt" if recipe is not None else model
        self.p = {"data": d / "data", "train": d / "train", "ckpt": ckpt,
                  "report": d / "report", "model": d / "model.onnx", "bag": d / "bag_val_failures",
                  "live": d / "live", "sheet": d / "live" / "contact_sheet.png"}
        self.results: dict[str, Any] = {}

    # ---- steps ---------------------------------------------------------------------------------------------
    def steps(self) -> list[Step]:
        p = self.p
        steps = [
            Step("data", "synthetic data", [p["data"] / "manifest.json"], self.do_data,
                 {"frames": self.frames, "size": self.size, "seed": 0},
                 missing=None if _module_exists("equiseg_ros.data.synthetic") else "equiseg_ros.data.synthetic"),
            self._model_step(),
            Step("report", "robustness report", [p["report"] / "results.json"], self.do_report, {}, needs=["train"],
                 missing=None if (ROOT / "training" / "evaluate.py").exists() else "training/evaluate.py"),
            Step("export", "ONNX export", [p["model"]], self.do_export, {"size": self.export_size}, needs=["train"],
                 missing=None if (ROOT / "training" / "export.py").exists() else "training/export.py"),
            Step("bag", "rosbag2 of val with failures", [p["bag"] / "metadata.yaml"], self.do_bag,
                 {"failures": list(FAILURES), "raw": self.raw_bag, "rate": 10.0}, needs=["data"]),
            Step("live", "node on a DDS replay", [p["live"] / "live.json", p["sheet"]], self.do_live,
                 {"rate": self.rate}, needs=["export", "bag"],
                 missing=None if _module_exists("equiseg_ros.ros.node") and _module_exists("rclpy")
                 else "equiseg_ros.ros.node / rclpy"),
        ]
        return steps

    def _model_step(self) -> Step:
        p = self.p
        if self.recipe is None:
            return Step("train", "demo model (shipped, checked)", [p["ckpt"]], self.do_check_model,
                        {"model": _file_sig(self.shipped), "size": self.size}, needs=["data"],
                        missing=None if self.shipped.exists() else f"{self.shipped} (make demo-model)")
        gone = [str(q) for q in (ROOT / "training" / "train.py", self.recipe) if not q.exists()]
        return Step("train", "training (CPU)", [p["ckpt"]], self.do_train,
                    {"recipe": _file_sig(self.recipe), "size": self.size, "iters": self.train_iters},
                    needs=["data"], missing=" and ".join(gone) or None)

    def do_check_model(self) -> None:
        """The shipped checkpoint must be the one ``make demo-model`` wrote (its SHA-256 file beside it)."""
        want = self.shipped.with_name(self.shipped.name + ".sha256")
        got = hashlib.sha256(self.shipped.read_bytes()).hexdigest()
        if want.exists() and want.read_text().split()[0] != got:
            raise StepFailed(f"{self.shipped}: SHA-256 {got[:16]}... differs from {want} (modified or partly "
                             "checked out); rebuild it with make demo-model")

    def do_data(self) -> None:
        _run([self.py, "-m", "equiseg_ros.data.synthetic", "--out", self.p["data"], "--frames", self.frames,
              "--size", self.size, "--seed", "0", "--workers", "2", "--preview"], self.logs / "data.log")

    def do_train(self) -> None:
        extra = ["--set", f"max_iters={self.train_iters}"] if self.train_iters else []
        # the robustness report is the next step: the training's own final validation only needs the full-modal mIoU
        extra += ["--set", "val.protocols=[full]", "--set", "val.settings=[benchmark]"]
        assert self.recipe is not None
        _run([self.py, "training/train.py", "--config", self.recipe, "--out", self.p["train"],
              "--set", f"data.root={self.p['data']}", "--set", f"data.image_size={self.size}", *extra],
             self.logs / "train.log")

    def do_report(self) -> None:
        name = "demo model" if self.recipe is None else self.recipe.stem
        _run([self.py, "training/evaluate.py", "--checkpoint", self.p["ckpt"], "--name", name,
              "--data", DATA_YAML, "--set", f"root={self.p['data']}", "--set", f"image_size={self.size}",
              "--protocols", "full,emm,anymodal,rmm,nm", "--settings", "benchmark,deployed", "--rmm-rates", "0.5",
              "--nm-levels", "low,mid", "--out", self.p["report"], "--no-progress"], self.logs / "report.log")

    def do_export(self) -> None:
        _run([self.py, "training/export.py", "--checkpoint", self.p["ckpt"], "--out", self.p["model"],
              "--size", self.export_size, self.export_size], self.logs / "export.log")

    def do_bag(self) -> None:
        cmd = [self.py, "-m", "equiseg_ros.bag.convert", "--dataset", "synthetic", "--root", self.p["data"],
               "--split", "val", "--out", self.p["bag"], "--overwrite", "--rate", "10", "--quiet", *FAILURES]
        if self.raw_bag:
            cmd.append("--raw")
        _run(cmd, self.logs / "bag.log")

    def do_live(self) -> None:
        from equiseg_ros.bag.evaluate import evaluate_live, evaluate_offline, summary_lines
        from equiseg_ros.inference.backend import load_backend
        live_dir = self.p["live"]
        live_dir.mkdir(parents=True, exist_ok=True)
        env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")}
        os.environ.update(env)
        masks: dict[int, np.ndarray] = {}
        rep = evaluate_live(self.p["bag"], self.p["model"], rate=self.rate, log_path=live_dir / "node.log",
                            on_mask=lambda s, m: masks.__setitem__(s, m))
        (live_dir / "live.json").write_text(json.dumps(rep, indent=1))
        off = evaluate_offline(self.p["bag"], load_backend(self.p["model"]))
        (live_dir / "offline.json").write_text(json.dumps(off, indent=1))
        write_contact_sheet(self.p["bag"], masks, self.p["sheet"])
        self.results["live"] = summary_lines(rep)
        self.results["offline"] = summary_lines(off)

    # ---- bookkeeping -----------------------------------------------------------------------------------------
    def _sig(self, step: Step, done: dict[str, str]) -> str:
        blob = {"step": step.name, "version": __version__, "args": step.signature,
                "inputs": {n: done.get(n, "") for n in step.needs}}
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.stamps.mkdir(parents=True, exist_ok=True)
        steps = self.steps()
        by_name = {s.name: s for s in steps}
        done: dict[str, str] = {}
        t_all = time.perf_counter()
        for i, step in enumerate(steps, 1):
            head = f"[{i}/{len(steps)}] {step.title}"
            blocked = [n for n in step.needs if by_name[n].status not in ("done", "up to date")]
            if step.missing:
                step.status = "missing"
                print(f"{head}: MISSING in this tree ({step.missing}); skipped", flush=True)
                continue
            if blocked:
                step.status = "skipped"
                step.note = f"needs {', '.join(blocked)}"
                print(f"{head}: skipped (needs the output of {', '.join(blocked)})", flush=True)
                continue
            sig = self._sig(step, done)
            stamp = self.stamps / f"{step.name}.json"
            fresh = (not self.force and stamp.exists() and all(o.exists() for o in step.outputs)
                     and json.loads(stamp.read_text()).get("signature") == sig)
            if fresh:
                step.status = "up to date"
                done[step.name] = sig
                print(f"{head}: up to date, skipped", flush=True)
                continue
            print(f"{head} ...", flush=True)
            t0 = time.perf_counter()
            try:
                step.run()
            except (StepFailed, Exception) as exc:  # noqa: BLE001 - report and go on with what does not need it
                step.status = "FAILED"
                step.note = str(exc)
                step.seconds = time.perf_counter() - t0
                print(f"{head}: FAILED after {step.seconds:.0f} s: {exc}", flush=True)
                stamp.unlink(missing_ok=True)
                continue
            step.seconds = time.perf_counter() - t0
            step.status = "done"
            done[step.name] = sig
            stamp.write_text(json.dumps({"signature": sig, "seconds": step.seconds}))
            print(f"{head}: done in {step.seconds:.0f} s", flush=True)
        self.summary(steps, time.perf_counter() - t_all)
        return 1 if any(s.status == "FAILED" for s in steps) else 0

    def summary(self, steps: list[Step], seconds: float) -> None:
        p = self.p
        where = {
            "data": [f"{p['data']} (DeLiVER layout + raw/), preview {p['data'] / 'preview.png'}"],
            "train": [f"{p['ckpt']}", f"curves and logs in {p['train']}"],
            "report": [f"{p['report'] / 'report.md'}", f"{p['report'] / 'results.json'}",
                       f"{p['report'] / 'robustness.png'}"],
            "export": [f"{p['model']}"],
            "bag": [f"{p['bag']} (failures: {' '.join(FAILURES)})"],
            "live": [f"{p['live'] / 'live.json'} (online, over DDS)", f"{p['live'] / 'offline.json'} (same bag, "
                     "node pipeline without DDS)", f"{p['sheet']}", f"node log {p['live'] / 'node.log'}"],
        }
        print("\n" + "=" * 100)
        print(f"equiseg_ros {__version__} demo summary ({seconds:.0f} s); outputs under {self.out}")
        for s in steps:
            tag = {"done": f"done {s.seconds:.0f} s", "up to date": "up to date"}.get(s.status, s.status)
            print(f"  [{tag:>12}] {s.title}" + (f"  ({s.note.splitlines()[0]})" if s.note else "")
                  + (f"  (missing: {s.missing})" if s.status == "missing" else ""))
            if s.status in ("done", "up to date"):
                for w in where[s.name]:
                    print(f"                 {w}")
        report_json = p["report"] / "results.json"
        if report_json.exists():
            print("\nrobustness report (" + str(p["report"] / "report.md") + "):")
            for line in world_summary(json.loads(report_json.read_text())):
                print("  " + line)
        for key in ("live", "offline"):
            if key in self.results:
                print()
                print("\n".join(self.results[key]))
            elif (p["live"] / f"{key}.json").exists():
                from equiseg_ros.bag.evaluate import summary_lines
                print()
                print("\n".join(summary_lines(json.loads((p["live"] / f"{key}.json").read_text()))))
            if (p["live"] / f"{key}.json").exists():
                rep = json.loads((p["live"] / f"{key}.json").read_text())
                if rep.get("miou_present") is not None:
                    print(f"  over the classes in the ground truth (the world's own): mIoU {rep['miou_present']:.2f} "
                          f"% ({rep.get('frames_answered')}/{rep.get('frames')} frames answered)")
        missing = [s for s in steps if s.status == "missing"]
        if missing:
            print(f"\n{len(missing)} step(s) need tools not in this tree yet: "
                  + "; ".join(f"{s.title}: {s.missing}" for s in missing))


def _file_sig(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"


# ---- figures over the world's classes ------------------------------------------------------------------------
def world_summary(results: dict[str, Any]) -> list[str]:
    """Lines of the report's headline figures over the classes present in the val ground truth (the synthetic
    world's own classes) beside the reference figure over all 25 DeLiVER classes.

    Exact, not an estimate: a class absent from the ground truth has IoU 0 under the reference metric whatever is
    predicted, so for every protocol mIoU_25 = (n / 25) * mIoU_world with n the classes present."""
    lines = []
    for name, r in results.get("models", {}).items():
        cm = np.asarray(r.get("confusion") or [])  # full-modality confusion matrix, rows = ground truth
        classes = r.get("class_names") or []
        per_class = (r["results"].get("benchmark") or next(iter(r["results"].values())))["full"]["per_class_iou"]
        present = _present_classes(cm, per_class, classes)
        k = len(classes) / max(len(present), 1)
        lines.append(f"{name}: {len(present)} classes occur in the val ground truth ({', '.join(present)}); "
                     f"figures over them = 25-class reference x {k:.3f}")
        for setting, figs in r["results"].items():
            t1 = figs.get("table1", {})
            cols = [c for c in ("mIoU", "EMM Avg", "RMM Avg", "NM Low", "NM Mid") if t1.get(c) is not None]
            world = ", ".join(f"{c} {t1[c] * k:.1f}" for c in cols)
            ref = ", ".join(f"{c} {t1[c]:.1f}" for c in cols)
            lines.append(f"  {setting:9s} world classes: {world}")
            lines.append(f"  {setting:9s} 25-class ref.: {ref}")
            any_row = figs.get("anymodal") or {}
            if any_row:
                lines.append(f"  {setting:9s} any-modality (world classes): "
                             + " ".join(f"{s}={v * k:.1f}" for s, v in any_row.items()))
    return lines


def _present_classes(cm: np.ndarray, per_class: Any, classes: list[str]) -> list[str]:
    """Classes with ground-truth pixels: from the confusion matrix when saved, else the classes with an IoU."""
    if cm.ndim == 2 and cm.shape[0] == len(classes) and cm.sum() > 0:
        return [c for c, n in zip(classes, cm.sum(1)) if n > 0]
    if isinstance(per_class, dict):
        return [c for c, v in per_class.items() if v is not None and v > 0]
    return [c for c, v in zip(classes, per_class or []) if v is not None and v > 0]


# ---- contact sheet ----------------------------------------------------------------------------------------------
def write_contact_sheet(bag: Path, masks: dict[int, np.ndarray], out: Path, per_condition: int = 2,
                        tile: int = 160) -> Path:
    """One row per selected frame (``per_condition`` answered frames per condition): every input image of the bag,
    the ground truth, the node's mask and the mask over the camera image, with the condition written on the row."""
    import cv2
    from rosbags.highlevel import AnyReader

    from equiseg_ros.bag._writer import read_custom
    from equiseg_ros.bag.evaluate import read_ground_truth
    from equiseg_ros.data._io import write_png
    from equiseg_ros.ros import codecs
    from equiseg_ros.ros.overlay import overlay, resize_nearest
    from equiseg_ros.spec import ModelSpec

    custom = read_custom(bag)
    spec = ModelSpec.from_json(custom["spec"]) if isinstance(custom["spec"], str) else ModelSpec.from_dict(
        custom["spec"])
    lut = spec.palette_array()
    gt = read_ground_truth(bag)
    chosen: list[int] = []
    per: dict[str, int] = {}
    for stamp in sorted(masks):
        key = gt.match(stamp)
        if key is None:
            continue
        cond = str(gt.info.get(key, {}).get("condition", "")) or "?"
        if per.get(cond, 0) < per_condition:
            per[cond] = per.get(cond, 0) + 1
            chosen.append(stamp)
    layout = custom["topics"]["modalities"]
    image_topics = {f["topic"]: m for m, f in layout.items() if f["type"] == "image"}
    inputs: dict[int, dict[str, np.ndarray]] = {}
    keys = {gt.match(s): s for s in chosen}
    with AnyReader([Path(bag)]) as reader:
        conns = [c for c in reader.connections if c.topic in image_topics]
        for conn, ts, raw in reader.messages(connections=conns):
            k = gt.match(ts)
            if k not in keys:
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            try:
                arr = np.array(codecs.image_to_numpy(msg, conn.topic))
            except codecs.DecodeError:
                continue  # an injected malformed message: shown as a black tile
            inputs.setdefault(k, {})[image_topics[conn.topic]] = _viewable(arr)
    names = [m for m in spec.modality_names if m in layout]

    def fit(img: np.ndarray | None) -> np.ndarray:
        if img is None:
            return np.zeros((tile, tile, 3), np.uint8)
        return cv2.resize(np.ascontiguousarray(img), (tile, tile), interpolation=cv2.INTER_NEAREST)

    rows = []
    header = np.full((24, tile * (len(names) + 3), 3), 255, np.uint8)
    for j, title in enumerate(names + ["ground truth", "node mask", "overlay"]):
        cv2.putText(header, title, (j * tile + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    rows.append(header)
    for stamp in chosen:
        key = gt.match(stamp)
        label = gt.labels[key]
        mask = resize_nearest(masks[stamp], label.shape[:2])
        ins = inputs.get(key, {})
        cam = ins.get(next((m.name for m in spec.modalities if m.representation == "rgb8"), ""), None)
        tiles = [fit(ins.get(m)) for m in names]
        tiles += [fit(lut[label]), fit(lut[mask]), fit(overlay(mask, lut, cam, 0.5, spec.ignore_index))]
        row = np.concatenate(tiles, axis=1)
        cond = str(gt.info.get(key, {}).get("condition", ""))
        cv2.putText(row, f"{cond} t={(key - min(gt.labels)) / 1e9:.1f}s", (4, tile - 6), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, np.concatenate(rows, axis=0))
    return out


def _viewable(arr: np.ndarray) -> np.ndarray:
    """Any decoded image as rgb8 for display (metric depth scaled to its range, NaN black)."""
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        f = np.nan_to_num(a.astype(np.float32), nan=0.0)
        hi = float(np.percentile(f, 99)) or 1.0
        a = np.clip(f / hi * 255.0, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return a[:, :, :3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m equiseg_ros.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="where every output of the demo goes")
    parser.add_argument("--force", action="store_true", help="redo every step even when its output is up to date")
    parser.add_argument("--frames", type=int, default=120,
                        help="synthetic frames in total (about 80 %% train, 20 %% val; default 120: 20 val frames)")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels (default: the training recipe's data.image_size)")
    parser.add_argument("--raw-bag", action="store_true", help="write the demo bag with the raw sensor forms "
                        "(metric depth, LiDAR point cloud) so the node converts them itself")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed of the live step (default 1.0)")
    parser.add_argument("--recipe", default=None,
                        help="train a model live with this recipe instead of using the shipped demo model (e.g. "
                        "config/train/synthetic_equiseg_b0.yaml: ~2 min, far from converged)")
    parser.add_argument("--train-iters", type=int, default=None,
                        help="with --recipe: training iterations (default: the recipe's max_iters)")
    parser.add_argument("--model", default=str(SHIPPED.relative_to(ROOT)),
                        help="the shipped model checkpoint (default experiments/demo_model/demo_m_segformer_b0.pt; "
                        "make demo-model rebuilds it)")
    args = parser.parse_args(argv)
    recipe = None
    if args.recipe:
        recipe = Path(args.recipe)
        if not recipe.is_absolute():
            recipe = (ROOT / recipe) if (ROOT / recipe).exists() or not recipe.exists() else recipe.resolve()
    model = Path(args.model)
    model = model if model.is_absolute() else ROOT / model
    out = Path(args.out)
    if not out.is_absolute():
        out = Path.cwd() / out
    print(f"equiseg_ros {__version__} demo -> {out}", flush=True)
    return Demo(out, args.force, args.frames, args.size, args.raw_bag, args.rate, recipe, args.train_iters,
                model).run()


if __name__ == "__main__":
    sys.exit(main())
