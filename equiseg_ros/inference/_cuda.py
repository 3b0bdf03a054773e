"""The few CUDA calls the TensorRT backend needs, through ctypes: no torch, pycuda or cuda-python on the vehicle.

Driver API (``libcuda``) for the device description that keys the engine cache (name, compute capability,
multiprocessor count, total memory); runtime API (``libcudart``) for the current device, pinned host buffers
(``cudaHostAlloc``: the DMA engine copies them asynchronously, pageable memory is staged through a bounce buffer
first), device buffers allocated once, a stream and async copies. Every failure raises a :class:`CudaError`
(a ``BackendUnavailable``: ``load_backend`` falls back) naming the call, the error code and CUDA's own text.

libcudart is searched on the loader path, in ``$CUDA_HOME`` and the JetPack location, and in the pip wheels a pip
installed TensorRT brings (``nvidia-cuda-runtime-cu12`` puts it in ``site-packages/nvidia/cuda_runtime/lib``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os
import threading
from dataclasses import dataclass

import numpy as np

from equiseg_ros.inference.errors import CudaError, NoCudaDevice

# CUdevice_attribute values (cuda.h)
_CU_ATTR_MULTIPROCESSOR_COUNT, _CU_ATTR_CC_MAJOR, _CU_ATTR_CC_MINOR = 16, 75, 76
H2D, D2H = 1, 2  # cudaMemcpyKind
HOST_ALLOC_DEFAULT = 0  # cudaHostAllocDefault
# a few cudaError_t values, for messages (CUDA runtime API, "Data types": enum cudaError)
CUDA_ERRORS = {1: "cudaErrorInvalidValue", 2: "cudaErrorMemoryAllocation", 3: "cudaErrorInitializationError",
               35: "cudaErrorInsufficientDriver", 100: "cudaErrorNoDevice", 101: "cudaErrorInvalidDevice"}


def _load(names: list[str], what: str) -> ctypes.CDLL:
    tried = []
    for name in dict.fromkeys(names):  # ordered, no duplicates
        try:
            return ctypes.CDLL(name)
        except OSError:
            tried.append(name)
    raise NoCudaDevice(f"no CUDA device: {what} not found (tried {', '.join(tried)})")


def _driver() -> ctypes.CDLL:
    return _load(["libcuda.so.1", "libcuda.so"], "the NVIDIA driver library libcuda")


def pip_library_dirs() -> list[str]:
    """``lib`` folders of NVIDIA's pip wheels (``nvidia/*/lib``, ``nvidia/cu*/lib``, ``tensorrt_libs``)."""
    dirs: list[str] = []
    for pkg in ("nvidia", "tensorrt_libs"):
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        for root in (spec.submodule_search_locations or []) if spec else []:
            dirs += [root] if pkg == "tensorrt_libs" else sorted(glob.glob(os.path.join(root, "*", "lib")))
    return dirs


def runtime_candidates() -> list[str]:
    """Where libcudart is looked for, in order."""
    names = []
    found = ctypes.util.find_library("cudart")
    if found:
        names.append(found)
    names += ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
    for d in pip_library_dirs():
        names += sorted(glob.glob(os.path.join(d, "libcudart.so*")), reverse=True)
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    names += [f"{home}/lib64/libcudart.so", f"{home}/targets/aarch64-linux/lib/libcudart.so",
              "/usr/local/cuda/lib64/libcudart.so"]
    return names


def _runtime() -> ctypes.CDLL:
    return _load(runtime_candidates(), "the CUDA runtime libcudart")


def _error_text(lib: object, rc: int) -> str:
    name = CUDA_ERRORS.get(rc, "cudaError")
    try:
        fn = lib.cudaGetErrorString
        try:
            fn.restype = ctypes.c_char_p
        except AttributeError:
            pass
        text = fn(rc)
        text = text.decode(errors="replace") if isinstance(text, bytes) else str(text or "")
    except (AttributeError, TypeError, OSError):
        text = ""
    return f"{name} {rc}" + (f": {text}" if text else "")


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    compute_capability: str  # "8.6"
    multiprocessors: int = 0
    total_memory_mib: int = 0


def cuda_device(index: int = 0) -> CudaDevice:
    """Name, compute capability, SM count and memory of GPU ``index`` via the driver API; NoCudaDevice if none."""
    cu = _driver()
    rc = cu.cuInit(0)
    if rc != 0:
        raise NoCudaDevice(f"no CUDA device: cuInit failed with CUresult {rc} (driver not loaded or no GPU)")
    count = ctypes.c_int(0)
    if cu.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value <= index:
        raise NoCudaDevice(f"no CUDA device: device {index} requested, {count.value} present")
    dev = ctypes.c_int(0)
    if cu.cuDeviceGet(ctypes.byref(dev), index) != 0:
        raise NoCudaDevice(f"no CUDA device: cuDeviceGet({index}) failed")
    name = ctypes.create_string_buffer(256)
    cu.cuDeviceGetName(name, 256, dev)
    vals = {}
    for key, attr in (("major", _CU_ATTR_CC_MAJOR), ("minor", _CU_ATTR_CC_MINOR),
                      ("sms", _CU_ATTR_MULTIPROCESSOR_COUNT)):
        v = ctypes.c_int(0)
        cu.cuDeviceGetAttribute(ctypes.byref(v), attr, dev)
        vals[key] = v.value
    mem = ctypes.c_size_t(0)
    try:
        cu.cuDeviceTotalMem_v2(ctypes.byref(mem), dev)
    except AttributeError:
        pass
    return CudaDevice(index, name.value.decode(errors="replace"), f"{vals['major']}.{vals['minor']}",
                      vals["sms"], int(mem.value) >> 20)


class CudaRuntime:
    """Device memory, pinned host memory, one stream and async copies through libcudart (pointers are ints).

    ``cudaSetDevice`` is per host thread: :meth:`use` makes this runtime's device current in the calling thread
    (cheap when it already is), so a build or an inference in another thread (the node's worker) still runs on the
    GPU this backend was opened for.
    """

    def __init__(self, device: int = 0) -> None:
        self.lib = _runtime()
        self.device = int(device)
        count = ctypes.c_int(0)
        rc = self.lib.cudaGetDeviceCount(ctypes.byref(count))
        if rc != 0 or count.value <= self.device:
            raise NoCudaDevice(f"no CUDA device: cudaGetDeviceCount returned {_error_text(self.lib, rc)}, "
                               f"{count.value} device(s), device {self.device} requested")
        self._local = threading.local()
        self.stream = 0
        self._allocs: list[int] = []
        self._pinned: list[int] = []
        self.use()
        stream = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        self.stream = stream.value or 0

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise CudaError(f"{what} failed on cuda:{self.device}: {_error_text(self.lib, rc)}")

    def use(self) -> None:
        """Make this runtime's device current in the calling thread."""
        if getattr(self._local, "current", None) != self.device:
            self._check(self.lib.cudaSetDevice(self.device), f"cudaSetDevice({self.device})")
            self._local.current = self.device

    def malloc(self, nbytes: int) -> int:
        self.use()
        ptr = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(1, nbytes))),
                    f"cudaMalloc({nbytes} bytes)")
        self._allocs.append(ptr.value)
        return ptr.value

    def host_array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A numpy array over pinned (page-locked) host memory from ``cudaHostAlloc``; freed by :meth:`close`."""
        self.use()
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = count * dtype.itemsize
        if nbytes <= 0:
            raise CudaError(f"cudaHostAlloc: empty buffer of shape {shape} requested")
        ptr = ctypes.c_void_p()
        self._check(self.lib.cudaHostAlloc(ctypes.byref(ptr), ctypes.c_size_t(nbytes), HOST_ALLOC_DEFAULT),
                    f"cudaHostAlloc({nbytes} bytes)")
        self._pinned.append(ptr.value)
        buf = (ctypes.c_char * nbytes).from_address(ptr.value)
        return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)

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
        for p in self._pinned:
            self.lib.cudaFreeHost(ctypes.c_void_p(p))
        self._pinned.clear()
        if self.stream:
            self.lib.cudaStreamDestroy(ctypes.c_void_p(self.stream))
            self.stream = 0
