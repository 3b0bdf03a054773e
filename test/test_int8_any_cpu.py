"""INT8 gives the same labels on every x86-64 CPU: AVX2-only machines included, not just the one the suite runs on.

ONNX Runtime picks its integer kernels by CPUID. Without VNNI, u8×s8 products are summed in pairs into a saturating
int16 (VPMADDUBSW), so 8-bit weights overflow where a VNNI machine does not (a fresh AVX2-only EPYC measured 89 %
label agreement where this suite's VNNI machine measured 98 %). To test the AVX2 path on any host, the quantized
model also runs under ``qemu-x86_64 -cpu Haswell`` (user-mode emulation of an AVX2 + FMA CPU without AVX-512):
TCG implements the instructions exactly, so the emulated result does not depend on the host.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from equiseg_ros.inference._onnx_prep import QDQ_OPS, QDQ_WEIGHT_LIMIT, quantize_qdq
from equiseg_ros.inference._toy import ToyModel
from equiseg_ros.spec import synthetic_spec
from training.export import export_onnx

SPEC = synthetic_spec(["rgb", "depth"])
QEMU = shutil.which("qemu-x86_64")
AVX2_ONLY_CPU = "Haswell"

# Runs one ONNX model single-threaded on x and writes labels; prints the CPU features numpy detected at run time.
_RUN = """
import sys, numpy as np, onnxruntime as ort
from numpy._core._multiarray_umath import __cpu_features__ as f
so = ort.SessionOptions(); so.intra_op_num_threads = 1
x = np.load(sys.argv[2]); present = np.ones(x.shape[:2], bool)
labels = ort.InferenceSession(sys.argv[1], so).run(None, {"x": x, "present": present})[0]
np.save(sys.argv[3], labels)
print("AVX2" if f["AVX2"] else "-", "AVX512F" if f["AVX512F"] else "-", "VNNI" if f["AVX512VNNI"] else "-")
"""


def _run(model: Path, x: Path, out: Path, cpu: str | None) -> tuple[np.ndarray, str]:
    cmd = [sys.executable, "-c", _RUN, str(model), str(x), str(out)]
    env = dict(os.environ)
    if cpu:
        cmd = [QEMU, "-cpu", cpu, *cmd]
        # The ROS wheels' .pth re-executes Python to set LD_LIBRARY_PATH; under qemu-user that exec would leave the
        # emulator and run natively. The variables are already set in this process, so tell it not to.
        env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{' '.join(cmd[:4])} failed:\n{res.stderr[-2000:]}"
    return np.load(out), res.stdout.strip().splitlines()[-1]


class _Frames(CalibrationDataReader):
    def __init__(self, files: list[Path]) -> None:
        self.it = iter(files)

    def get_next(self) -> dict[str, np.ndarray] | None:
        f = next(self.it, None)
        if f is None:
            return None
        x = np.load(f)["x"][None]
        return {"x": x, "present": np.ones(x.shape[:2], bool)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    ToyModel(SPEC, width=16)  # the weights of test_inference_tensorrt's static model, where 89 % was reported
    export_onnx(ToyModel(SPEC, width=16), SPEC, d / "fp32.onnx", (64, 96))
    calib = d / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.savez(calib / f"{i}.npz", x=rng.standard_normal((2, 3, 64, 96)).astype(np.float32))
    quantize_qdq(d / "fp32.onnx", calib, d / "int8.onnx")
    # The recipe before the fix (8-bit weights), as a control that the emulated CPU really saturates.
    quantize_static(str(d / "fp32.onnx"), str(d / "int8_w8.onnx"), _Frames(sorted(calib.glob("*.npz"))),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True, op_types_to_quantize=list(QDQ_OPS),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    np.save(d / "x.npy", np.load(calib / "0.npz")["x"][None])
    return d


def test_int8_weights_fit_seven_bits_and_biases_stay_float(models):
    """The invariant that makes every CPU agree, checked on the graph itself (no emulator needed)."""
    m = onnx.load(str(models / "int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    weights = [inits[n.input[0]] for n in dq if n.input[0] in inits]
    assert weights, "no quantized weights in the INT8 graph"
    assert all(w.dtype == np.int8 for w in weights), sorted({str(w.dtype) for w in weights})  # no INT32 biases
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= QDQ_WEIGHT_LIMIT
    zero_points = [inits[n.input[2]] for n in m.graph.node
                   if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits]
    assert zero_points and all(not zp.any() for zp in zero_points)  # symmetric activations (TensorRT's INT8)


def test_int8_labels_do_not_depend_on_the_cpu(models):
    if QEMU is None:
        msg = "qemu-x86_64 not found: `make emulator` (Debian: apt-get install qemu-user) runs this test"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    x = models / "x.npy"
    fp32 = ort.InferenceSession(str(models / "fp32.onnx")).run(
        None, {"x": np.load(x), "present": np.ones((1, 2), bool)})[0]
    native, _ = _run(models / "int8.onnx", x, models / "native.npy", None)
    emulated, features = _run(models / "int8.onnx", x, models / "avx2.npy", AVX2_ONLY_CPU)
    assert features == "AVX2 - -", f"the emulated CPU should be AVX2-only, numpy saw {features!r}"
    control, _ = _run(models / "int8_w8.onnx", x, models / "avx2_w8.npy", AVX2_ONLY_CPU)
    # The emulator reproduces the defect (deterministic there: 89.0 % for this model and input)...
    assert (control == fp32).mean() < 0.95
    # ...which 7-bit weights remove: the same agreement as on this CPU, whatever its kernels.
    assert (native == fp32).mean() >= 0.95
    assert (emulated == fp32).mean() >= 0.95
    print(f"fp32 agreement: int8 native {(native == fp32).mean():.4f}, AVX2-only {(emulated == fp32).mean():.4f}, "
          f"8-bit weights AVX2-only {(control == fp32).mean():.4f}; native vs AVX2-only "
          f"{(emulated == native).mean():.4f}")
    assert (emulated == native).mean() >= 0.999
