"""Storage Commitment Push Model SCP (PS3.4 Annex J): "do you really have these?".

A modality sends N-ACTION (Request Storage Commitment) with a Transaction UID and the SOP
instances it sent; once the archive has answered, the modality may delete its own copies of
the ones reported committed. So an instance is committed only if it is indexed **and** its
object is in the object store with the same SOP class; anything else is reported failed with a
reason (0x0112 no such object instance, 0x0119 class/instance conflict, 0x0110 processing
failure when the store cannot be checked).

The result goes back as an N-EVENT-REPORT (event type 1: all committed; 2: some failed):

1. on the same association, after the N-ACTION response has been sent (PS3.4 J.3.3 puts
   the report after the response; pynetdicom sends a handler's response only when the handler
   returns, so the report is sent from a short-lived thread once ``EVT_DIMSE_SENT`` announced
   the N-ACTION-RSP and ``EVT_PDU_SENT`` shows it on the wire; the N-ACTION handler binds
   those two watchers to its association) and half a second more, in which a requester that
   releases at once is seen to (a report sent into its release would collide with it);
2. otherwise (the modality released the association at once, as many do) on a new association
   to the modality's address from the ``modalities`` setting, with the archive in the SCP role
   for the Storage Commitment SOP class (SCP/SCU role selection, PS3.7 D.3.3.4).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, build_role, events, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from pacs.config import Settings
from pacs.dicom_peers import AccessPolicy, Operation
from pacs.errors import PacsError
from pacs.scp.access import refusal
from pacs.scp.statuses import status_with_comment
from pacs.services import Services

log = logging.getLogger("pacs.scp")

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1
ALL_COMMITTED = 1
SOME_FAILED = 2

NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
PROCESSING_FAILURE = 0x0110
NO_SUCH_ACTION_TYPE = 0x0123
INVALID_ARGUMENT_VALUE = 0x0115
MISSING_ATTRIBUTE = 0x0120

_SAME_ASSOCIATION_WAIT = 5.0  # seconds to wait for the N-ACTION-RSP to leave before giving up
_RELEASE_GRACE = 0.5  # seconds a requester has to release before the report is sent to it


@dataclass
class _PendingReport:
    report: Dataset
    event_type: int
    calling_aet: str


class CommitmentReporter:
    """Sends each commitment result once its N-ACTION response is out.

    Parameters
    ----------
    settings
        For the archive's AE title and the ``modalities`` (where to send a report when the
        requesting association has gone).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pending: dict[int, list[_PendingReport]] = {}  # by association, until sent
        self._armed: dict[int, list[_PendingReport]] = {}  # their N-ACTION-RSP is going out

    # -- event handlers ---------------------------------------------------------------------

    def handle_n_action(self, event: events.Event, services: Services,
                        policy: AccessPolicy) -> tuple[int | Dataset, Dataset | None]:
        """N-ACTION: check the request, decide what is committed, queue the report."""
        refused = refusal(event, policy, Operation.COMMIT)
        if refused is not None:
            return refused, None
        if event.action_type != REQUEST_STORAGE_COMMITMENT:
            return status_with_comment(NO_SUCH_ACTION_TYPE, "only action type 1 is supported"), None
        try:
            request = event.action_information
            transaction_uid = str(request.get("TransactionUID", "") or "")
            references = list(request.get("ReferencedSOPSequence", None) or [])
        except Exception as exc:  # a hostile dataset: answer, never crash the association
            return status_with_comment(PROCESSING_FAILURE, f"unreadable request: {exc}"), None
        if not transaction_uid:
            return status_with_comment(MISSING_ATTRIBUTE,
                                       "TransactionUID (0008,1195) is missing"), None
        report, event_type = evaluate(services, transaction_uid, references)
        calling = event.assoc.requestor.ae_title.strip()
        # Watch this association's outgoing messages from now on (binding the watchers on
        # every association would cost each C-FIND match and C-STORE response an event).
        event.assoc.bind(evt.EVT_DIMSE_SENT, self.handle_dimse_sent)
        event.assoc.bind(evt.EVT_PDU_SENT, self.handle_pdu_sent)
        with self._lock:
            self._pending.setdefault(id(event.assoc), []).append(
                _PendingReport(report, event_type, calling))
        failed = len(report.get("FailedSOPSequence", []))
        log.info("storage commitment %s from %s: %d committed, %d failed", transaction_uid,
                 calling, len(references) - failed, failed)
        return 0x0000, None

    def handle_dimse_sent(self, event: events.Event) -> None:
        """EVT_DIMSE_SENT: an N-ACTION-RSP is about to be sent; its reports go after it.

        pynetdicom triggers this before the response is queued, so the reports are only
        armed here and sent once the response's PDU has left (:meth:`handle_pdu_sent`).
        """
        if type(event.message).__name__ != "N_ACTION_RSP":
            return
        with self._lock:
            reports = self._pending.pop(id(event.assoc), [])
            if reports:
                self._armed[id(event.assoc)] = reports

    def handle_pdu_sent(self, event: events.Event) -> None:
        """EVT_PDU_SENT: the first P-DATA after an armed N-ACTION-RSP is that response."""
        if not self._armed or type(event.pdu).__name__ != "P_DATA_TF":
            return
        with self._lock:
            reports = self._armed.pop(id(event.assoc), [])
        for pending in reports:
            threading.Thread(target=self._deliver, args=(event.assoc, pending),
                             name="commitment-report", daemon=True).start()

    # -- delivery ---------------------------------------------------------------------------

    def _deliver(self, assoc: Any, pending: _PendingReport) -> None:
        if self._send_on(assoc, pending):
            return
        remote = self.settings.remote_aes.get(pending.calling_aet)
        if remote is None:
            log.error("storage commitment report for %s lost: the association is gone and "
                      "%s is not in the modalities setting", pending.calling_aet,
                      pending.calling_aet)
            return
        ae = AE(ae_title=self.settings.aet)
        ae.add_requested_context(StorageCommitmentPushModel)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        role = build_role(StorageCommitmentPushModel, scp_role=True)
        new = ae.associate(remote.host, remote.port, ae_title=remote.ae_title,
                           ext_neg=[role])
        if not new.is_established:
            log.error("storage commitment report for %s lost: cannot associate with %s:%d",
                      remote.ae_title, remote.host, remote.port)
            return
        try:
            if not self._send(new, pending):
                log.error("storage commitment report to %s was not acknowledged",
                          remote.ae_title)
        finally:
            new.release()

    def _send_on(self, assoc: Any, pending: _PendingReport) -> bool:
        """Send on the requesting association, if it is still there."""
        # Many modalities release as soon as the N-ACTION-RSP arrives. A report sent at that
        # instant meets their A-RELEASE-RQ (a release collision): it is never answered, and
        # the release waits for the DIMSE timeout. So give the requester a moment to release
        # first; one that stays is waiting for the report and gets it here a little later.
        settle = time.monotonic() + _RELEASE_GRACE
        while time.monotonic() < settle:
            if not assoc.is_established:
                return False
            time.sleep(0.01)
        deadline = time.monotonic() + _SAME_ASSOCIATION_WAIT
        # pynetdicom's acceptor reactor reads incoming messages; it must stand still while
        # this thread waits for the N-EVENT-REPORT response (the pattern of its release()).
        checkpoint = getattr(assoc, "_reactor_checkpoint", None)
        if checkpoint is None or not assoc.is_established:
            return False
        checkpoint.clear()
        wake = getattr(assoc, "wake", None)  # the receiver's event-driven reactor sleeps
        if wake is not None:
            wake.set()
        try:
            while not getattr(assoc, "_is_paused", False):
                if time.monotonic() > deadline or not assoc.is_established:
                    return False
                time.sleep(0.0005)
            return assoc.is_established and self._send(assoc, pending)
        finally:
            checkpoint.set()

    def _send(self, assoc: Any, pending: _PendingReport) -> bool:
        try:
            status, _ = assoc.send_n_event_report(
                pending.report, pending.event_type, StorageCommitmentPushModel,
                WELL_KNOWN_INSTANCE,
            )
        except (RuntimeError, ValueError) as exc:  # no usable context / role on it
            log.info("storage commitment report not sendable here: %s", exc)
            return False
        return bool(status) and status.get("Status", 0xFFFF) == 0x0000


def evaluate(services: Services, transaction_uid: str,
             references: list[Dataset]) -> tuple[Dataset, int]:
    """The N-EVENT-REPORT event information for one commitment request.

    Returns
    -------
    tuple of (Dataset, int)
        The report (TransactionUID, ReferencedSOPSequence of committed instances,
        FailedSOPSequence with a FailureReason each) and its event type.
    """
    committed: list[Dataset] = []
    failed: list[Dataset] = []
    for reference in references:
        sop_class = str(reference.get("ReferencedSOPClassUID", "") or "")
        sop_instance = str(reference.get("ReferencedSOPInstanceUID", "") or "")
        reason = _failure_reason(services, sop_class, sop_instance)
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        if reason is None:
            committed.append(item)
        else:
            item.FailureReason = reason
            failed.append(item)
    report = Dataset()
    report.TransactionUID = transaction_uid
    report.RetrieveAETitle = services.settings.aet
    if committed:
        report.ReferencedSOPSequence = Sequence(committed)
    if failed:
        report.FailedSOPSequence = Sequence(failed)
    return report, SOME_FAILED if failed else ALL_COMMITTED


def _failure_reason(services: Services, sop_class: str, sop_instance: str) -> int | None:
    if not sop_instance:
        return INVALID_ARGUMENT_VALUE
    try:
        stored = services.index.find_instance(sop_instance)
        if stored is None:
            return NO_SUCH_OBJECT_INSTANCE
        if sop_class and stored.sop_class_uid != sop_class:
            return CLASS_INSTANCE_CONFLICT
        if not services.store.exists(stored.object_key):
            log.error("instance %s is indexed but its object %s is missing", sop_instance,
                      stored.object_key)
            return NO_SUCH_OBJECT_INSTANCE
    except PacsError as exc:
        log.error("storage commitment check of %s failed: %s", sop_instance, exc)
        return PROCESSING_FAILURE
    return None

