"""Event handlers of the DICOM receiver: read the event, call the core, answer.

Each association runs in its own thread (pynetdicom), so handlers keep no state of their own
beyond the per-association counters used for the log line at release.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import events

from pacs.audit import Action
from pacs.dicom_peers import AccessPolicy, Operation
from pacs.dicomfile import part10_header
from pacs.errors import InvalidInstance
from pacs.ingest import IngestResult, IngestStatus, Origin
from pacs.scp import audited
from pacs.scp.access import refusal
from pacs.scp.statuses import store_status
from pacs.services import Services

log = logging.getLogger("pacs.scp")


class AssociationLog:
    """Counts what each association stored (by outcome, and by study for the audit trail),
    and logs it when the association ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[int, Counter[str]] = {}
        self._studies: dict[int, Counter[tuple[str, str | None]]] = {}
        self.in_flight = 0  # C-STOREs being archived right now (shutdown waits for them)

    def count(self, assoc: Any, outcome: str, result: IngestResult | None = None) -> None:
        with self._lock:
            self._counts.setdefault(id(assoc), Counter())[outcome] += 1
            if result is not None and result.ok and result.study_uid:
                self._studies.setdefault(id(assoc), Counter())[
                    (result.study_uid, result.patient_id)] += 1

    def take(self, assoc: Any) -> tuple[Counter[str], Counter[tuple[str, str | None]]]:
        """The association's counts by outcome and by (study, patient), forgotten here."""
        with self._lock:
            return (self._counts.pop(id(assoc), Counter()),
                    self._studies.pop(id(assoc), Counter()))

    def begin_store(self) -> None:
        with self._lock:
            self.in_flight += 1

    def end_store(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _peer(event: events.Event) -> tuple[str, str]:
    requestor = event.assoc.requestor
    return requestor.ae_title.strip(), f"{requestor.address}:{requestor.port}"


def handle_store(event: events.Event, services: Services,
                 assoc_log: AssociationLog, policy: AccessPolicy) -> int | Dataset:
    """C-STORE: hand the bytes as received to the ingest path, answer with its status."""
    refused = refusal(event, policy, Operation.STORE)
    if refused is not None:
        assoc_log.count(event.assoc, "not authorized")
        return refused
    calling_aet, address = _peer(event)
    origin = Origin("dimse", calling_aet, address)
    assoc_log.begin_store()
    try:
        result = services.ingest(_received_file(event, calling_aet), origin)
    except InvalidInstance as exc:
        result = IngestResult(IngestStatus.INVALID, reason=str(exc))
    finally:
        assoc_log.end_store()
    assoc_log.count(event.assoc, result.status.value, result)
    if result.status not in (IngestStatus.STORED, IngestStatus.ALREADY_STORED):
        log.warning("refused %s from %s@%s: %s (%s)", result.sop_instance_uid or "instance",
                    calling_aet, address, result.status.value, result.reason)
    return store_status(result)


def _received_file(event: events.Event, calling_aet: str) -> bytes:
    """The Part-10 file of a C-STORE: file meta from the command, then the dataset's bytes as
    they arrived (never decoded, never re-encoded)."""
    request = event.request
    header = part10_header(
        sop_class_uid=str(request.AffectedSOPClassUID or ""),
        sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
        transfer_syntax_uid=event.context.transfer_syntax,
        source_aet=calling_aet,
    )
    return header + request.DataSet.getvalue()


def handle_accepted(event: events.Event) -> None:
    """Log each accepted association with the calling AE and the peer's address."""
    calling_aet, address = _peer(event)
    log.info("association accepted from %s@%s", calling_aet, address)


def handle_rejected(event: events.Event) -> None:
    """Log each association refused at negotiation."""
    calling_aet, address = _peer(event)
    log.warning("association rejected from %s@%s", calling_aet, address)


def handle_released(event: events.Event, assoc_log: AssociationLog,
                    services: Services) -> None:
    """Log (and audit) the end of an association with what it stored."""
    _log_end(event, assoc_log, services, "released")


def handle_aborted(event: events.Event, assoc_log: AssociationLog, services: Services) -> None:
    """Log (and audit) an aborted association with what it had stored before the abort."""
    _log_end(event, assoc_log, services, "aborted")


def _log_end(event: events.Event, assoc_log: AssociationLog, services: Services,
             how: str) -> None:
    calling_aet, address = _peer(event)
    counts, by_study = assoc_log.take(event.assoc)
    summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "nothing stored"
    log.info("association %s from %s@%s: %s", how, calling_aet, address, summary)
    for (study_uid, patient_id), stored in sorted(by_study.items(), key=str):
        audited.record(services, event, Action.STORE, study_uid=study_uid,
                       patient_id=patient_id, count=stored, detail=f"C-STORE, association {how}")
    refused = sum(n for what, n in counts.items() if what not in _STORED)
    if refused:
        audited.record(services, event, Action.STORE, ok=False, count=refused,
                       detail=f"C-STORE refused: {summary}")


_STORED = (IngestStatus.STORED.value, IngestStatus.ALREADY_STORED.value)
