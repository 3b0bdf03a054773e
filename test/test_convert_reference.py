"""Published checkpoints through ``python -m equiseg_ros.models convert`` compute the references' functions.

Golden fixtures (../shared/fixtures/reference_models, README there): random weights saved exactly as DELIVER's
CMNeXt, AnySeg's and UMMSS's M-SegFormer save them, fixed inputs, and each reference's own full-resolution logits for
the full input and with a modality missing. Every case must agree within 1e-5 relative (max|diff| / max|ref|) with
>= 99.99 % argmax agreement, from the files as they are, converted by the CLI's main() in-process.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from equiseg_ros.checkpoint import load_checkpoint
from equiseg_ros.models.__main__ import main as models_main
from equiseg_ros.spec import CITYSCAPES_CLASSES, DELIVER_CLASSES, IMAGENET_MEAN

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference_models"
REL_TOL = 1e-5
MIN_ARGMAX = 0.9999


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"reference fixture {name} not found: looked for {path} (../shared must sit beside the repo)")
    return path


def convert(out_dir: Path, fmt: str, src: Path, *extra: str) -> Path:
    out = out_dir / f"{fmt}_{src.stem}.pt"
    assert models_main(["convert", "--format", fmt, str(src), "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("converted")
    return {"deliver": convert(d, "deliver", fixture("dlv_cmnext_b0.pth")),
            "anyseg": convert(d, "anyseg", fixture("mseg_b0_k19.pth")),
            "ummss": convert(d, "ummss", fixture("mseg_b0_k19.pth"))}


def load_model(path: Path):
    """The converted checkpoint read exactly as training/export.py reads any checkpoint."""
    sys.path.insert(0, str(ROOT))
    from training.export import model_from_checkpoint

    model, spec, _, _ = model_from_checkpoint(path)
    return model, spec


def full_res_logits(model, xs: list[torch.Tensor], present: list[bool]) -> torch.Tensor:
    """Project contract (zero-filled absent inputs, ``present``), logits upsampled to the input size as the
    references do."""
    x = torch.stack(xs, 1)
    p = torch.tensor(present).expand(x.shape[0], -1)
    with torch.no_grad():
        logits = model(x * p[:, :, None, None, None].float(), p)
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def assert_matches(got: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    rel = float((got - ref).abs().max() / ref.abs().max())
    agree = float((got.argmax(1) == ref.argmax(1)).float().mean())
    assert rel <= REL_TOL and agree >= MIN_ARGMAX, f"{what}: relative diff {rel:.2e}, argmax agreement {agree:.6f}"


# (converted model, io file, reference modality order, logits key, zero-filled modality, modality marked absent)
CASES = [
    ("deliver", "dlv_cmnext_b0_io.npz", ("img", "depth", "event", "lidar"), "logits_full", None, None),
    ("deliver", "dlv_cmnext_b0_io.npz", ("img", "depth", "event", "lidar"), "logits_missing_img", "img", None),
    ("deliver", "dlv_cmnext_b0_io.npz", ("img", "depth", "event", "lidar"), "logits_missing_depth", "depth", None),
    # deployed setting: DELIVER has no notion of a missing sensor, present=false gives the benchmark output
    ("deliver", "dlv_cmnext_b0_io.npz", ("img", "depth", "event", "lidar"), "logits_missing_img", "img", "img"),
    ("deliver", "dlv_cmnext_b0_io.npz", ("img", "depth", "event", "lidar"), "logits_missing_depth", "depth", "depth"),
    ("anyseg", "any_mseg_b0_io.npz", ("frame_camera", "event_camera", "lidar"), "logits_full", None, None),
    # AnySeg leaves a missing modality out of the list: the deployed setting (present=false) of the converted model
    ("anyseg", "any_mseg_b0_io.npz", ("frame_camera", "event_camera", "lidar"), "logits_missing_event_camera",
     "event_camera", "event_camera"),
    ("ummss", "ums_mseg_b0_io.npz", ("img", "depth", "event", "lidar"), "logits_full", None, None),
    # UMMSS zero-fills (the benchmark setting); its commented-out dropping variant is the deployed setting
    ("ummss", "ums_mseg_b0_io.npz", ("img", "depth", "event", "lidar"), "logits_missing_depth", "depth", None),
    ("ummss", "ums_mseg_b0_io.npz", ("img", "depth", "event", "lidar"), "logits_dropped_depth", "depth", "depth"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[3]}-absent={c[5]}" for c in CASES])
def test_converted_model_reproduces_reference(converted, case):
    name, io, order, key, zeroed, absent = case
    data = np.load(fixture(io))
    model, _ = load_model(converted[name])
    xs = [torch.zeros_like(torch.from_numpy(data[f"x_{m}"])) if m == zeroed else torch.from_numpy(data[f"x_{m}"])
          for m in order]
    present = [m != absent for m in order]
    assert_matches(full_res_logits(model, xs, present), torch.from_numpy(data[key]), f"{name} {key}")


def test_ummss_and_anyseg_conventions_differ(converted):
    """Zero-fill (present true) and list-dropping (present false) are two different functions on these weights
    (README: 0.43 relative), so the two cases above test two semantics, not one."""
    data = np.load(fixture("ums_mseg_b0_io.npz"))
    ref_zero, ref_drop = torch.from_numpy(data["logits_missing_depth"]), torch.from_numpy(data["logits_dropped_depth"])
    assert float((ref_zero - ref_drop).abs().max() / ref_drop.abs().max()) > 0.05


def test_specs_and_configs_travel_with_the_weights(converted):
    dlv = load_checkpoint(converted["deliver"])
    assert dlv["spec"].modality_names == ("rgb", "depth", "event", "lidar")
    assert dlv["spec"].classes == DELIVER_CLASSES and dlv["spec"].modality("rgb").mean == IMAGENET_MEAN
    assert dlv["spec"].modality("depth").std == (1.0, 1.0, 1.0)  # DELIVER divides by 255 only
    assert dlv["config"]["model"]["compat"] == "deliver" and dlv["config"]["model"]["backbone"] == "mit_b0"
    assert dlv["config"]["model"]["mit_eps"] == [1e-5] * 4
    assert dlv["converted_from"]["sha256"].startswith("3c4b98870c58a360")

    anyseg = load_checkpoint(converted["anyseg"])
    spec = anyseg["spec"]
    assert spec.modality_names == ("rgb", "event", "lidar") and spec.classes == CITYSCAPES_CLASSES
    assert anyseg["config"]["model"]["decoder_dim"] == 768
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for m in spec.modality_names:  # AnySeg feeds MUSES raw 0..255: so does the node through the spec
        np.testing.assert_allclose(spec.normalize(m, img), img.transpose(2, 0, 1).astype(np.float32), rtol=1e-6)
    assert "classifier.weight" in anyseg["converted_from"]["dropped_keys"]
    assert "classifier.weight" not in anyseg["model"]

    ums = load_checkpoint(converted["ummss"])
    assert ums["spec"].modality_names == ("rgb", "depth", "event", "lidar")
    assert ums["spec"].num_classes == 19  # from the weights; the released DeLiVER files give 25
    assert ums["spec"].modality("rgb").mean == IMAGENET_MEAN


def test_refusals_name_the_first_misfit(tmp_path, capsys):
    src = fixture("mseg_b0_k19.pth")
    out = tmp_path / "x.pt"
    assert models_main(["convert", "--format", "deliver", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'encoder.patch_embed1.proj.weight'" in err and "anyseg or ummss" in err
    assert models_main(["convert", "--format", "anyseg", str(src), "--out", str(out), "--backbone", "mit_b2"]) == 2
    assert "mit_b0" in capsys.readouterr().err
    sd = torch.load(src, weights_only=True)
    sd["decoder.linear_fuse.conv.weight"] = sd["decoder.linear_fuse.conv.weight"][:, :-1]
    torch.save(sd, tmp_path / "bad.pth")
    assert models_main(["convert", "--format", "ummss", str(tmp_path / "bad.pth"), "--out", str(out)]) == 2
    assert "'head.linear_fuse.conv.weight'" in capsys.readouterr().err
    assert not out.exists()


def test_wrapped_and_prefixed_files_unwrap(tmp_path):
    """Training dicts (*_checkpoint.pth: model_state_dict) and DDP 'module.' prefixes convert to the same state."""
    sd = torch.load(fixture("mseg_b0_k19.pth"), weights_only=True)
    wrapped = {"epoch": 3, "best_miou": 1.0, "model_state_dict": {f"module.{k}": v for k, v in sd.items()}}
    torch.save(wrapped, tmp_path / "x_checkpoint.pth")
    a = load_checkpoint(convert(tmp_path, "ummss", tmp_path / "x_checkpoint.pth"))["model"]
    for k, v in sd.items():
        if not k.startswith("classifier."):
            assert torch.equal(a[k.replace("decoder.", "head.")], v), k


def test_released_layouts_map_onto_the_project_models():
    """The released DELIVER CMNeXt-B2 (960 keys) and UMMSS 25-class layouts rename key for key, shape for shape."""
    import json

    from equiseg_ros.config import ModelConfig
    from equiseg_ros.models.build import build_model
    from equiseg_ros.models.convert import infer_backbone, rename_state
    from equiseg_ros.spec import deliver_spec

    layouts = json.loads(fixture("released_layouts.json").read_text())
    for fmt, key, arch in (("deliver", "dlv_cmnext_b2_25cls_rgbdel", "cmnext"),
                           ("ummss", "ums_mseg_b0_25cls", "m_segformer")):
        entries = layouts[key]
        with torch.device("meta"):
            sd = {k: torch.empty(v[1:]) for k, v in entries.items()}  # entries are [dtype, *shape]
            state, _ = rename_state(fmt, sd)
            bb = infer_backbone(state, "encoder.", key, None)
            want = build_model(ModelConfig(name=arch, backbone=bb, compat=fmt), deliver_spec()).state_dict()
        assert set(state) == set(want), (key, sorted(set(state) ^ set(want))[:5])
        for k, v in want.items():
            assert tuple(state[k].shape) == tuple(v.shape), k
    assert len(layouts["dlv_cmnext_b2_25cls_rgbdel"]) == 960


def test_cli_subprocess_help_and_convert(tmp_path):
    env_py = sys.executable
    out = subprocess.run([env_py, "-m", "equiseg_ros.models", "convert", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0
    for fmt in ("deliver", "anyseg", "ummss", "mit", "hf"):
        assert f"  {fmt}" in out.stdout
    assert "byte-identical" in out.stdout
    dst = tmp_path / "any.pt"
    run = subprocess.run([env_py, "-m", "equiseg_ros.models", "convert", "--format", "anyseg",
                          str(fixture("mseg_b0_k19.pth")), "--out", str(dst)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert '"compat": "anyseg"' in run.stdout and "raw 0..255" in run.stderr
    assert load_checkpoint(dst)["spec"].modality_names == ("rgb", "event", "lidar")


def test_deliver_compat_holds_in_channels_last(converted):
    """The [B,C,H,W]-as-[B,H,W,C] carry reads the logical element order, whatever the memory format (guards later
    speed work: channels-last must not change the reference function)."""
    data = np.load(fixture("dlv_cmnext_b0_io.npz"))
    model, _ = load_model(converted["deliver"])
    model = model.to(memory_format=torch.channels_last)
    xs = [torch.from_numpy(data[f"x_{m}"]).contiguous(memory_format=torch.channels_last)
          for m in ("img", "depth", "event", "lidar")]
    assert_matches(full_res_logits(model, xs, [True] * 4), torch.from_numpy(data["logits_full"]), "channels-last")


def test_deliver_modalities_from_the_released_file_names():
    from equiseg_ros.models.convert import ConvertError, _deliver_modalities

    assert _deliver_modalities(Path("cmnext_b2_deliver_rgbdel.pth"), 3, None) == ["rgb", "depth", "event", "lidar"]
    assert _deliver_modalities(Path("cmnext_b2_deliver_rgbl.pth"), 1, None) == ["rgb", "lidar"]
    assert _deliver_modalities(Path("cmnext_b2_deliver_rgbde.pth"), 2, None) == ["rgb", "depth", "event"]
    assert _deliver_modalities(Path("mine.pth"), 1, ["rgb", "event"]) == ["rgb", "event"]
    with pytest.raises(ConvertError, match="--modalities"):
        _deliver_modalities(Path("mine.pth"), 2, None)


@pytest.mark.parametrize("compat", ["deliver", "none"])
def test_deliver_single_auxiliary_carry(compat):
    """With one auxiliary modality DELIVER carries x_f alone to the next stage (no fixture covers RGB-X files:
    checked on the carried tensor itself); the project's carry adds x_f to the modality's own map."""
    from equiseg_ros.config import ModelConfig
    from equiseg_ros.models.build import build_model
    from equiseg_ros.spec import deliver_spec

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="cmnext", backbone="mit_b0", compat=compat), deliver_spec(["rgb", "depth"]))
    seen: dict[str, object] = {}
    model.extra_downsample_layers[0].register_forward_hook(lambda m, i, o: seen.__setitem__("raw", o[0]))
    model.frms[0].register_forward_hook(lambda m, i, o: seen.__setitem__("x_f", o[1]))
    model.extra_downsample_layers[1].register_forward_pre_hook(lambda m, i: seen.__setitem__("carried", i[0][0]))
    with torch.no_grad():
        model.eval()(torch.randn(1, 2, 3, 64, 64), torch.ones(1, 2, dtype=torch.bool))
    want = seen["x_f"] if compat == "deliver" else seen["raw"] + seen["x_f"]
    assert torch.equal(seen["carried"], want)
