"""Reports render in the papers' layouts; training/evaluate.py runs end to end on a checkpoint and synthetic data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from equiseg_ros.evaluation.protocols import evaluate
from equiseg_ros.evaluation.report import load_results, write_report
from equiseg_ros.spec import muses_spec, synthetic_spec

TABLE1_HEADER = "| Model | mIoU | EMM (Avg) | EMM (p=0.1) | RMM (Avg) | RMM (p=0.1) | NM (Low) | NM (Mid) | Mean |"
ROOT = Path(__file__).resolve().parents[1]
ANY_HEADER = "| Method | R | D | E | L | RD | RE | RL | DE | DL | EL | RDE | RDL | REL | DEL | RDEL | Mean |"


def _batches(spec, n=2, size=16):
    g = torch.Generator().manual_seed(0)
    k = spec.num_classes
    return [{"x": torch.randn(1, spec.num_modalities, 3, size, size, generator=g),
             "present": torch.ones(1, spec.num_modalities, dtype=torch.bool),
             "label": torch.randint(0, k, (1, size, size), generator=g),
             "meta": [{"condition": ["night", "sun"][i], "corner_case": None, "frame": str(i)}]} for i in range(n)]


def _model(c):
    def predict(x, present):
        return ((x[:, :, 0] * present[:, :, None, None]).sum(1) > 0).long() * c
    return predict


def test_report_renders_papers_layouts(tmp_path):
    spec = synthetic_spec()
    b = _batches(spec)
    results = {"A": evaluate(_model(6), b, spec, rmm_rates=(0.5,), progress=False),
               "B": evaluate(_model(12), b, spec, protocols=("full", "emm"), progress=False)}
    paths = write_report(results, tmp_path, spec)
    md = paths["markdown"].read_text()
    assert md.count(TABLE1_HEADER) == 2  # one per setting
    cond_header = "| Condition / case | Model | Frames | " + TABLE1_HEADER.split("| Model | ")[1]
    assert md.count(cond_header) == 2
    night = [line for line in md.splitlines() if line.startswith("| night |")]
    assert len(night) == 4 and night[0].startswith("| night | A | 1 |")  # 2 models x 2 settings
    assert "**" in night[0] + night[1]  # best of the two models within the condition is bold
    assert md.count(ANY_HEADER) == 2
    row_a = results["A"].table1_row("benchmark")
    assert f"| A | {row_a['mIoU']:.2f} |" in md.replace("**", "")
    b_line = next(line for line in md.splitlines() if line.startswith("| B |"))
    assert b_line.count("–") == 5  # B has no RMM, NM and hence no Mean
    back = load_results(paths["json"])
    assert back["A"].table1_row("deployed") == results["A"].table1_row("deployed")
    assert json.loads(paths["json"].read_text())["models"]["B"]["protocols"] == ["full", "emm"]
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    from equiseg_ros.evaluation.report import main

    assert main([str(paths["json"]), str(paths["json"]), "--out", str(tmp_path / "merged")]) == 0
    merged = load_results(tmp_path / "merged" / "results.json")
    assert list(merged) == ["A", "B", "A#2", "B#2"]


def test_anymodal_columns_follow_the_spec():
    from equiseg_ros.evaluation.report import anymodal_markdown

    spec = muses_spec(["rgb", "event", "lidar"])
    res = evaluate(_model(1), _batches(spec), spec, protocols=("anymodal",), settings=("deployed",), progress=False)
    md = anymodal_markdown({"AnySeg-like": res}, spec, "deployed")
    assert md.splitlines()[0] == "| Method | F | E | L | FE | FL | EL | FEL | Mean |"
    assert anymodal_markdown({"x": res}, spec, "benchmark") is None
    spec2 = muses_spec(["rgb", "lidar"])
    res2 = evaluate(_model(1), _batches(spec2), spec2, protocols=("anymodal",), settings=("deployed",), progress=False)
    both = anymodal_markdown({"FEL": res, "FL": res2}, spec2, "deployed").splitlines()
    assert both[0] == "| Method | F | E | L | FE | FL | EL | FEL | Mean |" and both[2].startswith("| FEL |")
    assert "| Method | F | L | FL | Mean |" in both and both[-1].startswith("| FL |")


def test_evaluate_cli_on_checkpoint(tmp_path):
    pytest.importorskip("equiseg_ros.models.build")
    from equiseg_ros.checkpoint import save_checkpoint
    from equiseg_ros.config import ModelConfig, to_dict
    from equiseg_ros.data.synthetic import generate
    from equiseg_ros.models.build import build_model
    from training.evaluate import main

    generate(tmp_path / "syn", frames=2, size=64, splits=(("val", 1.0),))
    spec = synthetic_spec().with_input_size(64, 64)
    cfg = ModelConfig(name="m_segformer", backbone="mit_b0", decoder_dim=16)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model(cfg, spec).state_dict(), spec, {"model": to_dict(cfg)})
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:
        rc = main(["--checkpoint", str(ckpt), "--data", str(ROOT / "config/datasets/synthetic.yaml"), "--set",
                   f"root={tmp_path / 'syn'}", "--set", "image_size=64", "--protocols", "full,nm", "--nm-levels",
                   "low", "--settings", "deployed", "--max-batches", "1", "--threads", "1", "--out", str(out),
                   "--stack", "2", "--no-progress"])
    finally:
        torch.set_num_threads(threads)  # --threads is process-wide: do not slow down the rest of the suite
    assert rc == 0
    res = load_results(out / "results.json")["m"]
    assert res.frames == 1 and res.predict_calls == 1 and res.settings == ["deployed"]  # 2 inputs stacked
    row = res.table1_row("deployed")
    assert 0.0 <= row["NM Low"] <= 100.0 and 0.0 <= row["mIoU"] <= 100.0 and row["EMM Avg"] is None
    assert (out / "report.md").is_file() and (out / "robustness.png").is_file() and (out / "data_config.yaml").is_file()
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--data", str(ROOT / "config/datasets/synthetic.yaml"),
                 "--out", str(out)]) == 1


def test_evaluate_cli_on_exported_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from equiseg_ros.data.synthetic import generate
    from equiseg_ros.inference._toy import ToyModel
    from training.evaluate import main
    from training.export import export_onnx

    generate(tmp_path / "syn", frames=1, size=64, splits=(("val", 1.0),))
    spec = synthetic_spec().with_input_size(64, 64)
    torch.manual_seed(0)
    export_onnx(ToyModel(spec), spec, tmp_path / "toy.onnx", (64, 64))
    out = tmp_path / "out"
    args = ["--model-onnx", str(tmp_path / "toy.onnx"), "--name", "toy", "--data",
            str(ROOT / "config/datasets/synthetic.yaml"), "--set", f"root={tmp_path / 'syn'}", "--protocols", "emm",
            "--settings", "benchmark,deployed", "--out", str(out), "--no-progress"]
    assert main(args + ["--set", "image_size=64"]) == 0
    res = load_results(out / "results.json")["toy"]
    assert res.predict_calls == 1 + 14 * 2  # clean input shared, 14 zeroed subsets per setting
    assert res.table1_row("deployed")["EMM Avg"] is not None
    assert main(args + ["--set", "image_size=96"]) == 1  # exported for 64x64: refused with a clear message
