"""Inference off the executor thread, on the newest frame only.

The executor thread decodes messages and synchronises them; each synchronised frame is handed to
:class:`InferenceWorker`, which keeps a single pending slot. A new frame replaces a pending one that inference has not
started yet (the replaced frame is counted as dropped), so when the model is slower than the sensors the output lags
by at most one inference plus one frame, and memory holds at most two frames (one running, one pending) whatever the
sensor rate.
"""
from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-element mailbox: ``put`` overwrites, ``take`` waits. Thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has = False
        self._closed = False
        self.replaced = 0  # items overwritten before anyone took them

    def put(self, item: T) -> bool:
        """Store ``item``; True when it replaced a pending one (which is thereby dropped)."""
        with self._cond:
            dropped = self._has
            if dropped:
                self.replaced += 1
            self._item, self._has = item, True
            self._cond.notify()
            return dropped

    def take(self, timeout: float | None = None) -> T | None:
        """The pending item (clearing the slot), or None on timeout / after close."""
        with self._cond:
            if not self._has and not self._closed:
                self._cond.wait(timeout)
            if not self._has:
                return None
            item, self._item, self._has = self._item, None, False
            return item

    @property
    def pending(self) -> int:
        return int(self._has)

    def clear(self) -> bool:
        """Forget the pending item (not counted as replaced); True when there was one."""
        with self._cond:
            had, self._item, self._has = self._has, None, False
            return had

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class InferenceWorker(Generic[T]):
    """A daemon thread that runs ``process(item)`` on the newest submitted item; errors are logged, never fatal."""

    def __init__(self, process: Callable[[T], Any], *, name: str = "equiseg-inference",
                 on_error: Callable[[str], None] | None = None) -> None:
        self._process = process
        self._on_error = on_error or (lambda msg: None)
        self._slot: LatestSlot[T] = LatestSlot()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._idle = threading.Event()
        self._idle.set()
        self.submitted = 0
        self.processed = 0
        self.errors = 0
        self.busy = False
        self.last_error = ""
        self.last_duration = 0.0

    def start(self) -> "InferenceWorker[T]":
        self._thread.start()
        return self

    def submit(self, item: T) -> bool:
        """Hand over a frame; True when it displaced an older pending frame (counted in :attr:`dropped`)."""
        self.submitted += 1
        return self._slot.put(item)

    @property
    def dropped(self) -> int:
        return self._slot.replaced

    @property
    def pending(self) -> int:
        return self._slot.pending

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def drain(self, timeout: float = 5.0) -> bool:
        """Drop the pending frame and wait (at most ``timeout`` s) for the running one: True when idle.

        The managed node's *deactivate*: inference stops, the model stays loaded."""
        self._slot.clear()
        if threading.current_thread() is self._thread:
            return True
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread (the pending frame is dropped); True when it ended within ``timeout`` s."""
        self._stop.set()
        self._slot.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        # blocks in take() without a timeout: an idle node does not wake this thread (close() ends the wait)
        while not self._stop.is_set():
            item = self._slot.take()
            if item is None:
                continue
            self._idle.clear()
            self.busy = True
            t0 = time.perf_counter()
            try:
                self._process(item)
                self.processed += 1
            except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the node
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._on_error(f"inference failed on a frame: {self.last_error}\n{traceback.format_exc(limit=4)}")
            finally:
                self.last_duration = time.perf_counter() - t0
                self.busy = False
                self._idle.set()
