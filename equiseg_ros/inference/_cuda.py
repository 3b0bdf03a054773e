"""The few CUDA calls the TensorRT backend needs, through ctypes: no torch, pycuda or cuda-python on the vehicle.

Driver API (``libcuda``) for the device description that keys the engine cache (name, compute capability);
runtime API (``libcudart``) for device buffers allocated once, a stream and async copies. Every entry point raises
:class:`NoCudaDevice` with a plain reason when there is no driver, no runtime library or no GPU.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

from equiseg_ros.inference.backend import BackendUnavailable

_CU_ATTR_CC_MAJOR, _CU_ATTR_CC_MINOR = 75, 76  # CUdevice_attribute
H2D, D2H = 1, 2  # cudaMemcpyKind


class NoCudaDevice(BackendUnavailable):
    """No usable CUDA device (no driver, no runtime library, or no GPU)."""


def _load(names: list[str], what: str) -> ctypes.CDLL:
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            errors.append(str(exc).split(":")[-1].strip() or name)
    raise NoCudaDevice(f"no CUDA device: {what} not found ({', '.join(names)})")


def _driver() -> ctypes.CDLL:
    return _load(["libcuda.so.1", "libcuda.so"], "the NVIDIA driver library libcuda")


def _runtime() -> ctypes.CDLL:
    names = ["libcudart.so", "libcudart.so.13", "libcudart.so.12"]
    found = ctypes.util.find_library("cudart")
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    return _load(([found] if found else []) + names + [f"{home}/lib64/libcudart.so"], "the CUDA runtime libcudart")


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    compute_capability: str  # "8.6"


def cuda_device(index: int = 0) -> CudaDevice:
    """Name and compute capability of GPU ``index`` via the driver API; NoCudaDevice if there is none."""
    cu = _driver()
    rc = cu.cuInit(0)
    if rc != 0:
        raise NoCudaDevice(f"no CUDA device: cuInit failed with CUresult {rc} (driver not loaded or no GPU)")
    count = ctypes.c_int(0)
    if cu.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value <= index:
        raise NoCudaDevice(f"no CUDA device: device {index} requested, {count.value} present")
    dev = ctypes.c_int(0)
    cu.cuDeviceGet(ctypes.byref(dev), index)
    name = ctypes.create_string_buffer(256)
    cu.cuDeviceGetName(name, 256, dev)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    cu.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, dev)
    cu.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, dev)
    return CudaDevice(index, name.value.decode(errors="replace"), f"{major.value}.{minor.value}")


class CudaRuntime:
    """Device memory, one stream and async copies through libcudart (pointers are plain ints)."""

    def __init__(self, device: int = 0) -> None:
        self.lib = _runtime()
        count = ctypes.c_int(0)
        rc = self.lib.cudaGetDeviceCount(ctypes.byref(count))
        if rc != 0 or count.value <= device:
            raise NoCudaDevice(f"no CUDA device: cudaGetDeviceCount returned error {rc}, {count.value} device(s)")
        self._check(self.lib.cudaSetDevice(device), "cudaSetDevice")
        stream = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        self.stream = stream.value or 0
        self._allocs: list[int] = []

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            self.lib.cudaGetErrorString.restype = ctypes.c_char_p
            msg = self.lib.cudaGetErrorString(rc)
            raise RuntimeError(f"{what} failed: CUDA error {rc} ({(msg or b'?').decode()})")

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(1, nbytes))), "cudaMalloc")
        self._allocs.append(ptr.value)
        return ptr.value

    def to_device(self, dst: int, host_ptr: int, nbytes: int) -> None:
        self._check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(host_ptr),
                                             ctypes.c_size_t(nbytes), H2D, ctypes.c_void_p(self.stream)),
                    "cudaMemcpyAsync(H2D)")

    def to_host(self, host_ptr: int, src: int, nbytes: int) -> None:
        self._check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(host_ptr), ctypes.c_void_p(src),
                                             ctypes.c_size_t(nbytes), D2H, ctypes.c_void_p(self.stream)),
                    "cudaMemcpyAsync(D2H)")

    def synchronize(self) -> None:
        self._check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(self.stream)), "cudaStreamSynchronize")

    def close(self) -> None:
        for p in self._allocs:
            self.lib.cudaFree(ctypes.c_void_p(p))
        self._allocs.clear()
        if self.stream:
            self.lib.cudaStreamDestroy(ctypes.c_void_p(self.stream))
            self.stream = 0
