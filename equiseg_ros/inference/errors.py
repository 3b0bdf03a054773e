"""Error types shared by every inference module (the lowest floor of ``equiseg_ros.inference``).

They live here, below ``backend``, ``engine_cache``, ``_cuda`` and the backends, so none of those has to import
another to raise or catch them (no import circles). ``backend`` re-exports them for callers.

The one rule that matters to a vehicle: :class:`BackendUnavailable` (and its subclasses) means "this backend cannot
run here, try the next one"; ``load_backend`` logs the reason and falls back. Every other :class:`BackendError`
is a problem with the model or the request and propagates.
"""
from __future__ import annotations


class BackendError(RuntimeError):
    """A model cannot be loaded or run; the message names the file and the reason."""


class BackendUnavailable(BackendError):
    """This backend cannot run here (library not installed, no CUDA device, engine built for another GPU, an engine
    build or load that failed...). ``load_backend`` treats it as a reason to fall back to the next backend."""


class ModelFileNotFound(BackendError, FileNotFoundError):
    """The model path does not exist."""


class InputError(ValueError):
    """``infer`` got an input of the wrong shape or dtype; the message gives expected vs got."""


class EngineCacheError(BackendError):
    """A sidecar is missing or unreadable."""


class EngineMismatchError(BackendUnavailable):
    """No cached engine matches this machine and model, and building one is not allowed here."""


class EngineBuildError(BackendUnavailable):
    """TensorRT failed to parse, build, deserialise or set up an engine; the next backend is tried."""


class BuildCancelled(BackendError):
    """An engine build was cancelled (shutdown); not a fallback: the caller asked to stop."""


class CudaError(BackendUnavailable):
    """A CUDA runtime call failed (out of memory, invalid device...); the next backend is tried."""


class NoCudaDevice(CudaError):
    """No usable CUDA device (no driver, no runtime library, or no GPU)."""
