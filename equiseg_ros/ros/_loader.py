"""Loading the node's model: node parameters -> ``load_backend`` options, progress and cancellation. No rclpy.

Building a TensorRT engine can take minutes on a Jetson (ros_anchors.md §6: "typically 10 to 20 minutes"), so the
node must never load silently nor block its shutdown: the plain node loads in a :class:`BackgroundLoad` thread while
its executor keeps publishing diagnostics, the managed node loads in *configure*. Both pass ``on_progress`` (each
line goes to /rosout and /diagnostics) and ``cancel`` (set on shutdown: the builder stops and keeps its timing
cache) - but only to backends that declare those options: ``load_backend`` raises TypeError for an option no
installed backend knows, so :func:`backend_options` asks the backends which options they accept.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Mapping

ProgressFn = Callable[[str], None]

# node parameter -> load_backend option (passed when a backend declares the option)
ENGINE_OPTIONS = {"engine.precision": "precision", "engine.cache_dir": "cache_dir",
                  "engine.build_on_start": "build_on_start"}


def declared_options() -> frozenset[str]:
    """Every keyword option some backend of ``equiseg_ros.inference`` declares (``Backend.OPTIONS``)."""
    from equiseg_ros.inference.backend import BACKENDS, backend_class

    known: set[str] = set()
    for name in BACKENDS:
        try:
            known |= set(backend_class(name).OPTIONS)
        except ImportError:  # that backend's module needs a library missing here: it cannot run anyway
            continue
    return frozenset(known)


def backend_options(values: Mapping[str, Any], *, on_progress: ProgressFn | None = None,
                    cancel: threading.Event | None = None,
                    declared: frozenset[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """``load_backend`` keyword options from validated node parameters, and notes on what could not be passed.

    Options a backend does not declare are left out (``load_backend`` would refuse them); a non-default engine
    parameter that cannot be passed is named in the notes so the node can warn about it.
    """
    declared = declared_options() if declared is None else declared
    opts: dict[str, Any] = {}
    notes: list[str] = []
    if values.get("backend.threads"):
        opts["intra_op_threads"] = int(values["backend.threads"])
    for param, option in ENGINE_OPTIONS.items():
        if param not in values:
            continue
        value = values[param]
        if option == "cache_dir" and not value:
            continue  # "" = the backend's default (beside the model)
        if option in declared:
            opts[option] = value
        elif not (option == "precision" and value == "fp32") and not (option == "build_on_start" and value):
            notes.append(f"{param}={value!r} ignored: no installed inference backend supports {option!r}")
    if on_progress is not None and "on_progress" in declared:
        opts["on_progress"] = on_progress
    if cancel is not None and "cancel" in declared:
        opts["cancel"] = cancel
    return opts, notes


def load_model(values: Mapping[str, Any], *, on_progress: ProgressFn | None = None,
               cancel: threading.Event | None = None, warmup: int = 2) -> Any:
    """``load_backend(model_path, prefer=..., **options)`` then ``warmup``; raises BackendError / TypeError."""
    from equiseg_ros.inference.backend import load_backend

    say = on_progress or (lambda line: None)
    opts, notes = backend_options(values, on_progress=on_progress, cancel=cancel)
    for note in notes:
        say(note)
    delay = float(values.get("debug.load_delay", 0.0) or 0.0)
    if delay > 0:  # stands in for a long engine build in tests: waits on the same cancel event
        say(f"debug.load_delay: waiting {delay:g} s before loading (emulated engine build)")
        if (cancel or threading.Event()).wait(delay):
            raise LoadCancelled(f"{values['model_path']}: loading cancelled (shutdown) during debug.load_delay")
    t0 = time.perf_counter()
    backend = load_backend(values["model_path"], prefer=values["backend.prefer"], **opts)
    if cancel is not None and cancel.is_set():
        backend.close()
        raise LoadCancelled(f"{values['model_path']}: loading cancelled (shutdown)")
    say(f"{backend.name} on {backend.device} loaded in {time.perf_counter() - t0:.1f} s; warming up")
    backend.warmup(warmup)
    return backend


class LoadCancelled(RuntimeError):
    """The node was asked to stop while the model was loading / the engine was building."""


class BackgroundLoad:
    """Runs :func:`load_model` in a daemon thread; ``done`` is called (from that thread) when it ends either way.

    The result is in :attr:`backend` or :attr:`error`. :meth:`cancel` sets the cancel event (passed to the backend
    when it accepts one) and :meth:`join` waits a bounded time: shutdown never hangs on a build.
    """

    def __init__(self, values: Mapping[str, Any], *, on_progress: ProgressFn | None = None,
                 done: Callable[[], None] | None = None, cancel: threading.Event | None = None) -> None:
        self.values = dict(values)
        self.cancel_event = cancel or threading.Event()
        self.backend: Any = None
        self.error: BaseException | None = None
        self._on_progress = on_progress
        self._done = done or (lambda: None)
        self._thread = threading.Thread(target=self._run, name="equiseg-load", daemon=True)
        self.finished = threading.Event()

    def start(self) -> "BackgroundLoad":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.backend = load_model(self.values, on_progress=self._on_progress, cancel=self.cancel_event)
        except BaseException as exc:  # noqa: BLE001 - reported to the node, which decides (exit 2 or stay up)
            self.error = exc
        finally:
            self.finished.set()
            try:
                self._done()
            except Exception:  # noqa: BLE001 - the node may be gone already (shutdown during the load)
                pass

    def cancel(self) -> None:
        self.cancel_event.set()

    def join(self, timeout: float) -> bool:
        """True when the load thread has ended within ``timeout`` s."""
        return self.finished.wait(timeout)

    def discard(self) -> None:
        """Close a backend that was loaded but will not be used (the node is stopping)."""
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.close()
