"""Sharing associations between receiver processes (pacs.scp.workers)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from pacs.scp.workers import (
    UNAVAILABLE,
    LoadTable,
    Supervisor,
    WorkerSlot,
    bind_listener,
    default_workers,
)


def test_the_least_busy_worker_accepts_and_the_others_wait():
    table = LoadTable(3)
    for slot, load in enumerate([2, 1, 3]):
        table.set(slot, load)
    assert [table.may_accept(slot) for slot in range(3)] == [False, True, False]


def test_equally_busy_workers_all_accept():
    table = LoadTable(2)
    table.set(0, 1)
    table.set(1, 1)
    assert table.may_accept(0) and table.may_accept(1)


def test_a_worker_still_starting_counts_as_idle():
    # The first worker up takes one connection, then leaves the next to its sibling.
    table = LoadTable(2)
    table.set(1, 0)
    assert table.may_accept(1)
    table.set(1, 1)
    assert not table.may_accept(1)
    assert not table.all_serving()


def test_a_stopped_worker_neither_accepts_nor_holds_the_others_back():
    table = LoadTable(2)
    table.set(0, 5)
    table.set(1, 0)
    table.mark_unavailable(1)
    assert table.loads() == [5, UNAVAILABLE]
    assert table.may_accept(0)
    assert not table.may_accept(1)


def test_connections_opened_one_after_another_alternate_between_workers():
    table = LoadTable(2)
    gates = [WorkerSlot(table, 0), WorkerSlot(table, 1)]
    for gate in gates:
        gate.publish(0)
    active = [0, 0]
    for _connection in range(6):
        slot = next(s for s, gate in enumerate(gates) if gate.may_accept())
        active[slot] += 1
        gates[slot].publish(active[slot])
        assert abs(active[0] - active[1]) <= 1
    assert active == [3, 3]


def test_the_load_table_is_shared_with_forked_workers():
    table = LoadTable(2)
    pid = os.fork()
    if pid == 0:
        table.set(1, 7)
        os._exit(0)
    os.waitpid(pid, 0)
    assert table.loads() == [0, 7]


def test_default_workers_is_one_per_usable_core():
    assert default_workers() == max(1, min(len(os.sched_getaffinity(0)), 64))


def test_listener_refuses_a_port_in_use():
    with bind_listener("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            bind_listener("127.0.0.1", port)


def test_supervisor_restarts_a_worker_that_dies_and_stops_all_on_sigterm(tmp_path):
    listener = bind_listener("127.0.0.1", 0)
    started = tmp_path / "started"

    def worker(gate: WorkerSlot, _shared: socket.socket) -> int:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
        with started.open("a") as log:
            log.write(f"{gate.slot}\n")
        gate.publish(0)
        if started.read_text().splitlines().count("1") == 1 and gate.slot == 1:
            return 3  # the first worker 2 fails; its replacement serves
        stop.wait()
        return 0

    pid = os.fork()
    if pid == 0:  # the supervisor under test, in a process of its own
        code = 1
        try:
            code = Supervisor(listener, 2, worker).run()
        finally:
            os._exit(code)
    try:
        deadline = time.monotonic() + 30
        while not (started.exists() and len(started.read_text().splitlines()) == 3):
            assert time.monotonic() < deadline, "worker 2 was not started again"
            time.sleep(0.02)
    finally:
        os.kill(pid, signal.SIGTERM)
        _pid, status = os.waitpid(pid, 0)
        listener.close()
    assert os.waitstatus_to_exitcode(status) == 0  # the two serving workers stopped cleanly
    assert sorted(started.read_text().splitlines()) == ["0", "1", "1"]
