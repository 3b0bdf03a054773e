"""Process life of the node: spin in a thread, wait for a signal in the main thread, shut down within a bound.

Why not ``rclpy.spin`` in the main thread with rclpy's signal handlers: on SIGINT rclpy shuts the context down and
Python raises ``KeyboardInterrupt`` wherever the main thread is, and a second SIGINT (launch, an impatient user)
raised it again inside ``destroy_node`` (issue 13.5: "process has died ... exit code -2"). Here rclpy installs no
signal handler; SIGINT and SIGTERM only count and wake the main thread through ``signal.set_wakeup_fd`` (no lock is
taken in a handler, so a signal can never deadlock or interrupt the shutdown). The main thread then stops the
executor and releases everything with bounded waits; any number of further signals is harmless, and a SIGTERM (what
launch sends after its SIGINT timeout) only shortens the remaining waits. Exit code 0 whatever arrived.
"""
from __future__ import annotations

import os
import select
import signal
import threading
from typing import Any, Callable

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Waker:
    """Wakes the main thread on SIGINT/SIGTERM or :meth:`wake` from any thread. Counts signals; never raises."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        os.set_blocking(self._r, False)
        self.signals: list[int] = []
        self.reason = ""

    def install(self) -> "Waker":
        """Take over SIGINT/SIGTERM (main thread only)."""
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)  # list.append is atomic; the wakeup fd already got a byte from the C handler

    def wake(self, reason: str = "") -> None:
        """From any thread: end :meth:`wait` (e.g. the model failed to load)."""
        if reason and not self.reason:
            self.reason = reason
        try:
            os.write(self._w, b"w")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: a wake-up is pending anyway

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a signal or :meth:`wake` (True), or ``timeout`` (False)."""
        while True:
            ready, _, _ = select.select([self._r], [], [], timeout)
            if not ready:
                return False
            try:
                os.read(self._r, 512)
            except BlockingIOError:
                continue
            return True

    @property
    def hurry(self) -> bool:
        """A SIGTERM or a second signal arrived: shorten the remaining waits."""
        return signal.SIGTERM in self.signals or len(self.signals) > 1

    def names(self) -> str:
        return ", ".join(signal.Signals(s).name for s in self.signals) or "none"

    def ignore_from_now(self) -> None:
        """Ignore SIGINT/SIGTERM for the rest of the process (called when the node is down and the process exits:
        CPython's finalisation puts Python-level handlers back to SIG_DFL, so a signal arriving then would kill
        the process with -2 / -15 instead of letting it exit 0)."""
        for sig in HANDLED:
            signal.signal(sig, signal.SIG_IGN)


def spin_in_thread(executor: Any, on_crash: Callable[[BaseException], None]) -> threading.Thread:
    """``executor.spin()`` in a daemon thread; an exception while not shutting down is reported via ``on_crash``."""
    def run() -> None:
        try:
            executor.spin()
        except BaseException as exc:  # noqa: BLE001 - the main thread decides; after shutdown this is expected
            on_crash(exc)

    thread = threading.Thread(target=run, name="equiseg-executor", daemon=True)
    thread.start()
    return thread
