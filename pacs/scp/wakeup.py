"""Waking a thread that sleeps in ``select``, from any other thread."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any


class WakeupPipe:
    """A self-pipe that wakes a thread blocked in :func:`select.select`.

    ``set`` may be called from any thread at any time, also after :meth:`close`: the file
    descriptors are never written once closed (they may already belong to another socket).
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_fds, self._read, self._write)

    def fileno(self) -> int:
        """The end to select on."""
        return self._read

    def set(self) -> None:
        """Wake the selecting thread (at once, or at its next select)."""
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
                os.write(self._write, b"\0")

    def clear(self) -> None:
        """Forget the wake-ups seen so far (called by the selecting thread only)."""
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(BlockingIOError):  # empty: all read
                while os.read(self._read, 4096):
                    pass

    def close(self) -> None:
        """Release both ends; later calls of :meth:`set` do nothing."""
        with self._lock:
            self._closed = True
            self._finalizer()


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


class WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """A :class:`queue.Queue` that calls ``wake()`` after every ``put``."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item`` on the queue (as :meth:`queue.Queue.put`), then wake the consumer."""
        super().put(item, block, timeout)
        self._wake()
