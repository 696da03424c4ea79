"""The audit trail: an append-only record of who stored, queried, retrieved, viewed, shared,
logged in and changed what.

Every front end records through one :class:`AuditTrail` (``Services.audit``). Recording never
waits for the database: events go into a bounded in-memory queue and a writer thread inserts
them in batches (one transaction per batch), so the image path pays a ``queue.put``. When the
database refuses a batch the events are kept and retried, the failure is logged at ERROR
level, and :meth:`AuditTrail.status` says so (``/readyz`` and the admin page show it): an
audit that silently stops is worse than none. Reading (:meth:`AuditTrail.search`) flushes first,
so a process sees its own records.

Actions (:class:`Action`) and outcomes are strings from small fixed sets, so a record can be
filtered and exported (:mod:`pacs.audit_export`: CSV, DICOM audit messages, syslog) without
interpretation.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select

from pacs.storage.schema import audit_events
from pacs.storage.sql import Database, driver_datetime

log = logging.getLogger("pacs.audit")


class Action(StrEnum):
    """What was done. The values are what the index and the exports hold."""

    STORE = "store"  # C-STORE, STOW-RS, pacs import
    QUERY = "query"  # C-FIND, QIDO-RS
    RETRIEVE = "retrieve"  # C-MOVE, C-GET, WADO-RS, WADO-URI (instances, frames, bulk data)
    VIEW = "view"  # rendered images, thumbnails, metadata read by a viewer
    SHARE_CREATE = "share-create"
    SHARE_USE = "share-use"  # a share link opened (after its PIN, when it has one)
    SHARE_REVOKE = "share-revoke"
    LOGIN = "login"
    LOGIN_FAILED = "login-failed"
    LOGOUT = "logout"
    ADMIN = "admin"  # users, tokens, settings changed


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


class ActorKind(StrEnum):
    """Who acted: a signed-in user, a user's API token, a DICOM peer, a share link, the
    command line, or nobody known (a refused anonymous request, a failed login)."""

    USER = "user"
    TOKEN = "token"
    AE = "ae"
    SHARE = "share"
    CLI = "cli"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class AuditEvent:
    """One audit record.

    Attributes
    ----------
    action, outcome
        What was done and whether it succeeded.
    actor_kind, actor
        Who: the user name (for a user or a token), the calling AE title, the share link's
        id, ``"pacs import"``...; empty when unknown.
    address
        Where from: the peer's IP address (empty for the command line).
    protocol
        ``"http"``, ``"dimse"`` or ``"cli"``.
    patient_id, study_uid
        What, when the action concerns one patient or study.
    count
        How many instances (stored, retrieved, matched), when counted.
    detail
        The rest, short: the route, the SOP class, a failure's reason, the changed setting.
    at
        When (UTC).
    """

    action: Action
    outcome: Outcome
    actor_kind: ActorKind
    actor: str = ""
    address: str = ""
    protocol: str = ""
    patient_id: str | None = None
    study_uid: str | None = None
    count: int | None = None
    detail: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> dict[str, Any]:
        """The event as an ``audit_events`` row."""
        values = asdict(self)
        for name in ("action", "outcome", "actor_kind"):
            values[name] = str(values[name])
        values["detail"] = self.detail[:DETAIL_LIMIT]
        return values

    @classmethod
    def from_row(cls, row: Any) -> AuditEvent:
        """An event read back from the index."""
        mapping = row._mapping if hasattr(row, "_mapping") else row
        values = {f.name: mapping[f.name] for f in fields(cls)}
        values["action"] = Action(values["action"])
        values["outcome"] = Outcome(values["outcome"])
        values["actor_kind"] = ActorKind(values["actor_kind"])
        values["at"] = driver_datetime(values["at"])
        return cls(**values)


DETAIL_LIMIT = 1000  # characters of ``detail`` kept
BATCH_SIZE = 500  # events per INSERT transaction
FLUSH_INTERVAL = 0.25  # seconds the writer waits to gather a batch
QUEUE_LIMIT = 100_000  # events held in memory while the database refuses them


@dataclass(frozen=True)
class AuditStatus:
    """Whether the audit trail is being written: ``ok`` is false while batches fail."""

    ok: bool
    pending: int
    dropped: int
    last_error: str = ""


class AuditTrail:
    """Records :class:`AuditEvent`\\ s into the index's ``audit_events`` table in batches.

    Parameters
    ----------
    db
        The index database.
    flush_interval
        Seconds the writer thread waits for more events before writing a batch.
    forward
        Also called with each batch once it is in the index (by the writer thread): e.g.
        :class:`SyslogForwarder`; closed with the trail if it has a ``close``. Its failures
        are logged, not retried.
    """

    def __init__(self, db: Database, *, flush_interval: float = FLUSH_INTERVAL,
                 forward: Callable[[Sequence[AuditEvent]], None] | None = None) -> None:
        self._db = db
        self._forward = forward
        self._flush_interval = flush_interval
        self._queue: queue.Queue[AuditEvent] = queue.Queue(QUEUE_LIMIT)
        self._retry: list[AuditEvent] = []
        self._write_lock = threading.Lock()  # one batch at a time (writer or flush)
        self._dropped = 0
        self._last_error = ""
        self._stop = threading.Event()
        self._pending = threading.Event()  # set by record(), cleared by the writer
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._closed = False

    # -- recording ------------------------------------------------------------------------

    def record(self, event: AuditEvent) -> None:
        """Queue ``event`` for writing; never blocks and never raises.

        If a failing database has let the queue fill up, the event is dropped and counted
        (:meth:`status`), and the loss is logged: the image path must not stop because the
        audit cannot be written.
        """
        self._ensure_writer()
        try:
            self._queue.put_nowait(event)
            self._pending.set()
        except queue.Full:
            self._dropped += 1
            log.error("audit queue full: event dropped (%s by %s)", event.action, event.actor)
        if self._closed:  # recorded while the process stops: no writer thread any more
            self._write_pending(raise_errors=False)

    def record_many(self, events: Iterable[AuditEvent]) -> None:
        for event in events:
            self.record(event)

    def flush(self) -> None:
        """Write every queued event now (raises the database's error if it fails)."""
        self._write_pending(raise_errors=True)

    def close(self) -> None:
        """Stop the writer thread and write what is queued (best effort); what is recorded
        later is written at once."""
        with self._thread_lock:
            self._closed = True
            self._stop.set()
            self._pending.set()  # wake the writer now, not at its next timeout
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
        self._write_pending(raise_errors=False)
        close_forward = getattr(self._forward, "close", None)
        if close_forward is not None:
            close_forward()

    def status(self) -> AuditStatus:
        """Whether recording works, how many events wait, how many were lost."""
        pending = self._queue.qsize() + len(self._retry)
        return AuditStatus(ok=not self._last_error, pending=pending, dropped=self._dropped,
                           last_error=self._last_error)

    # -- reading ------------------------------------------------------------------------

    def search(self, *, actor: str | None = None, patient_id: str | None = None,
               study_uid: str | None = None, action: str | None = None,
               since: datetime | None = None, until: datetime | None = None,
               limit: int = 1000, offset: int = 0) -> list[AuditEvent]:
        """Recorded events, newest first, filtered by each argument given.

        ``since`` is inclusive and ``until`` exclusive.
        """
        self._write_pending(raise_errors=False)
        table = audit_events
        query = select(*(table.c[f.name] for f in fields(AuditEvent)))
        if actor is not None:
            query = query.where(table.c.actor == actor)
        if patient_id is not None:
            query = query.where(table.c.patient_id == patient_id)
        if study_uid is not None:
            query = query.where(table.c.study_uid == study_uid)
        if action is not None:
            query = query.where(table.c.action == action)
        if since is not None:
            query = query.where(table.c.at >= since)
        if until is not None:
            query = query.where(table.c.at < until)
        query = query.order_by(table.c.at.desc(), table.c.pk.desc()).limit(limit).offset(offset)
        with self._db.reading() as conn:
            return [AuditEvent.from_row(row) for row in conn.execute(query)]

    # -- writing ------------------------------------------------------------------------

    def _ensure_writer(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._thread_lock:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            thread.start()
            self._thread = thread  # only once started: close() may join it at any time

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._pending.wait(timeout=self._flush_interval):
                if self._retry:
                    self._write_pending(raise_errors=False)
                continue
            # Gather a batch: one transaction for many events, not one each.
            self._stop.wait(self._flush_interval if self._queue.qsize() < BATCH_SIZE else 0)
            self._pending.clear()  # before draining: a later record() sets it again
            self._write_pending(raise_errors=False)

    def _write_pending(self, *, raise_errors: bool) -> None:
        with self._write_lock:
            batch = self._retry
            self._retry = []
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for start in range(0, len(batch), BATCH_SIZE):
                chunk = batch[start:start + BATCH_SIZE]
                try:
                    self._insert(chunk)
                except Exception as exc:
                    self._retry = batch[start:]
                    if not self._last_error:
                        log.error("audit records cannot be written (%d waiting): %s",
                                  len(self._retry), exc)
                    self._last_error = str(exc) or type(exc).__name__
                    if raise_errors:
                        raise
                    return
            if self._last_error:
                log.warning("audit records are written again")
            self._last_error = ""

    def _insert(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        with self._db.writing() as conn:
            conn.execute(insert(audit_events), [event.row() for event in events])
        if self._forward is not None:
            try:
                self._forward(events)
            except Exception as exc:
                log.error("audit records not forwarded: %s", exc)


class SyslogForwarder:
    """A ``forward`` for :class:`AuditTrail` sending each event as a DICOM audit message by
    syslog to ``udp://host:port`` or ``tcp://host:port`` (the ``audit_syslog`` setting)."""

    def __init__(self, address: str, source_id: str) -> None:
        from pacs.audit_export import SyslogSender

        transport, _, rest = address.partition("://")
        host, _, port = rest.rpartition(":")
        self._sender = SyslogSender(host, int(port), transport=transport)
        self._source_id = source_id

    def __call__(self, events: Sequence[AuditEvent]) -> None:
        for event in events:
            self._sender.send(event, source_id=self._source_id)

    def close(self) -> None:
        self._sender.close()
