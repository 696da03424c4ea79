"""Several receiver processes on one port, with associations spread evenly between them.

One Python process runs one core's worth of Python, so ``pacs serve`` forks one receiver per
core (``workers``). How connections reach the workers decides whether they share the load:

* ``SO_REUSEPORT`` (each worker binds the port itself) lets the kernel hash each connection
  to a worker: with 4 associations and 2 workers, 3 or all 4 land on one worker in 10 cases
  out of 16, and that worker's core does most of the work while the other idles;
* a parent that accepts and passes sockets on (``socket.send_fds``) balances perfectly but
  adds a hop and a process to every connection.

So the workers are pre-forked around **one listening socket** made by the parent, and each
worker accepts only while it serves no more associations than the least busy worker: the
counts live in a small table of shared memory (:class:`LoadTable`) that every worker updates
when it accepts a connection and when one ends. The kernel's queue of incoming connections
does the rest: a worker that is not among the least busy does not watch the socket, so the
next connection goes to one that is. With associations opened one after another, or all at
once, the counts never differ by more than one (4 associations on 2 workers: 2 and 2).

The parent only holds the socket, watches the workers and forwards SIGTERM/SIGINT (each worker
then stops as a single receiver does: no new association, the running ones finish, no
instance in flight is lost). A worker that dies is marked unavailable at once, so the others
do not wait for it, and is started again a second later.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("pacs.scp")

UNAVAILABLE = -1
#: Seconds a worker that stopped unexpectedly waits before it is started again.
RESPAWN_DELAY = 1.0


def default_workers() -> int:
    """One receiver process per CPU core this process may run on (at most 64)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 64))


class AcceptGate(Protocol):
    """Tells a receiver whether to accept the next connection, and hears its load."""

    def may_accept(self) -> bool:
        """True if this receiver should accept a waiting connection now."""

    def publish(self, active: int) -> None:
        """Record how many connections this receiver serves."""

    def withdraw(self) -> None:
        """Record that this receiver accepts nothing more (it is stopping)."""


class SoleReceiver:
    """The gate of a receiver that has the port to itself: always open."""

    def may_accept(self) -> bool:
        """Always True."""
        return True

    def publish(self, active: int) -> None:
        """Nothing to record."""

    def withdraw(self) -> None:
        """Nothing to record."""


class LoadTable:
    """Active connections per worker, in anonymous shared memory inherited across ``fork``.

    Each worker writes only its own slot. Slots start at 0: a worker still starting counts
    as idle, so the first worker up takes one connection and then waits for its siblings
    instead of taking every early one. A slot holds :data:`UNAVAILABLE` once its worker
    stops or dies, until a replacement serves.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a load table needs at least one worker")
        self._memory = mmap.mmap(-1, 8 * workers)  # zero-filled
        ints = memoryview(self._memory).cast("i")
        self._slots = ints[:workers]
        self._serving = ints[workers:]  # 1 once the worker has published its load

    def __len__(self) -> int:
        return len(self._slots)

    def loads(self) -> list[int]:
        """Every slot's value (:data:`UNAVAILABLE` for workers not serving)."""
        return list(self._slots)

    def set(self, slot: int, active: int) -> None:
        """Record that worker ``slot`` serves, with ``active`` connections."""
        self._slots[slot] = active
        self._serving[slot] = 1

    def mark_unavailable(self, slot: int) -> None:
        """Record that worker ``slot`` accepts nothing (stopping, dead, or being replaced)."""
        self._slots[slot] = UNAVAILABLE
        self._serving[slot] = 0

    def all_serving(self) -> bool:
        """True once every worker has published its load and none has stopped since."""
        return all(self._serving)

    def may_accept(self, slot: int) -> bool:
        """True if worker ``slot`` serves and none of the serving workers is less busy."""
        mine = self._slots[slot]
        if mine == UNAVAILABLE:
            return False
        return all(load == UNAVAILABLE or mine <= load for load in self._slots)


class WorkerSlot:
    """The gate of one pre-forked worker: its slot in the shared :class:`LoadTable`."""

    def __init__(self, table: LoadTable, slot: int) -> None:
        self.table = table
        self.slot = slot

    def may_accept(self) -> bool:
        """True while no serving worker has fewer connections than this one."""
        return self.table.may_accept(self.slot)

    def publish(self, active: int) -> None:
        """Record this worker's number of connections."""
        self.table.set(self.slot, active)

    def withdraw(self) -> None:
        """Take this worker out of the sharing (it is stopping)."""
        self.table.mark_unavailable(self.slot)


def bind_listener(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``SO_REUSEADDR``, ``TCP_NODELAY``).

    Raises
    ------
    OSError
        If the address cannot be bound (port in use, no such address, no permission).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.bind((host, port))
        listener.listen(backlog)
    except OSError:
        listener.close()
        raise
    return listener


#: What a worker process runs: given its gate and the shared socket, serve until told to
#: stop, and return the process's exit code.
WorkerMain = Callable[[WorkerSlot, socket.socket], int]


class Supervisor:
    """The parent of pre-forked receiver workers sharing one listening socket.

    Parameters
    ----------
    listener
        The bound, listening socket every worker accepts from.
    workers
        How many worker processes to keep running.
    main
        What each worker runs after ``fork`` (see :data:`WorkerMain`).
    on_ready
        Called once, when every worker serves.
    """

    def __init__(self, listener: socket.socket, workers: int, main: WorkerMain,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.listener = listener
        self.table = LoadTable(workers)
        self._main = main
        self._on_ready = on_ready
        self._children: dict[int, int] = {}  # pid -> slot
        self._due: dict[int, float] = {}  # slot -> monotonic time to (re)start it
        self._changed = threading.Event()
        self._stopping = False

    def run(self) -> int:
        """Start the workers and keep them running until SIGTERM or SIGINT, then stop them.

        Returns the worst exit code of the workers' final exits (0 when all stopped
        cleanly).
        """
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        previous = {signum: signal.getsignal(signum) for signum in handled}
        for signum in handled:
            signal.signal(signum, self._on_signal)
        try:
            for slot in range(len(self.table)):
                self._spawn(slot)
            announced = False
            while not self._stopping:
                self._changed.wait(0.5 if announced else 0.02)
                self._changed.clear()
                self._reap(stopping=False)
                self._respawn_due()
                if not announced and self.table.all_serving():
                    announced = True
                    if self._on_ready is not None:
                        self._on_ready()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._stop_all()

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum != signal.SIGCHLD:
            self._stopping = True
        self._changed.set()

    def _spawn(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: its own signal handlers come with its receiver
            code = 1
            try:
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(signum, signal.SIG_DFL)
                code = self._main(WorkerSlot(self.table, slot), self.listener)
            except BaseException:
                log.exception("worker %d failed", slot + 1)
            finally:
                os._exit(code)
        self._children[pid] = slot

    def _reap(self, *, stopping: bool) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self._children.pop(pid, None)
            if slot is None:
                continue
            self.table.mark_unavailable(slot)
            if not stopping:
                log.warning("worker %d (pid %d) stopped unexpectedly (exit code %d); "
                            "starting it again", slot + 1, pid, os.waitstatus_to_exitcode(status))
                self._due[slot] = time.monotonic() + RESPAWN_DELAY

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for slot, due in list(self._due.items()):
            if due <= now:
                del self._due[slot]
                self._spawn(slot)

    def _stop_all(self) -> int:
        self.listener.close()  # no new connections queue up while the workers finish
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        worst = 0
        for pid in list(self._children):
            _pid, status = os.waitpid(pid, 0)
            worst = max(worst, os.waitstatus_to_exitcode(status))
            self.table.mark_unavailable(self._children.pop(pid))
        log.info("all %d workers stopped", len(self.table))
        return worst
