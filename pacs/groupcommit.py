"""Group commit: callers that arrive while a commit is running share the next one.

A durable commit costs a disk flush (or a round trip) whatever it holds, so concurrent
callers queue while one commit runs, and the next caller to find none running commits the
whole queue at once, on behalf of everyone in it. Each caller still returns only after the
commit holding its item has finished, with its own outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


@dataclass
class _Waiting(Generic[Item, Outcome]):
    item: Item
    done: bool = False
    outcome: Outcome | None = None
    error: BaseException | None = field(default=None, repr=False)


class GroupCommit(Generic[Item, Outcome]):
    """Run ``commit`` over the items of callers that arrive together.

    Parameters
    ----------
    commit
        Takes the queued items, oldest first, and returns one outcome per item, in order.
        If it raises, every caller in that group gets the exception.
    max_group
        At most this many items per call, which bounds how long one commit holds its locks.
    """

    def __init__(self, commit: Callable[[Sequence[Item]], Sequence[Outcome]],
                 max_group: int) -> None:
        self._commit = commit
        self.max_group = max_group
        self._condition = threading.Condition()
        self._queue: list[_Waiting[Item, Outcome]] = []
        self._committing = False

    @property
    def waiting(self) -> int:
        """How many items wait for the next commit."""
        with self._condition:
            return len(self._queue)

    def submit(self, item: Item) -> Outcome:
        """Commit ``item`` (with whoever else is waiting) and return its outcome."""
        waiting: _Waiting[Item, Outcome] = _Waiting(item)
        with self._condition:
            self._queue.append(waiting)
        while True:
            with self._condition:
                while self._committing and not waiting.done:
                    self._condition.wait()
                if waiting.done:
                    break
                # Nobody is committing: lead, oldest first (this caller's own item may need
                # more than one round when more than max_group are queued).
                group = self._queue[: self.max_group]
                del self._queue[: self.max_group]
                self._committing = True
            try:
                self._run(group)
            finally:
                with self._condition:
                    self._committing = False
                    self._condition.notify_all()
        if waiting.error is not None:
            raise waiting.error
        return waiting.outcome  # type: ignore[return-value]

    def _run(self, group: Sequence[_Waiting[Item, Outcome]]) -> None:
        try:
            outcomes = list(self._commit([waiting.item for waiting in group]))
            if len(outcomes) != len(group):
                raise RuntimeError(f"{len(outcomes)} outcomes for a group of {len(group)}")
        except BaseException as exc:  # each caller of the group re-raises it
            for waiting in group:
                waiting.error, waiting.done = exc, True
            return
        for waiting, outcome in zip(group, outcomes, strict=True):
            waiting.outcome, waiting.done = outcome, True
