"""Storage Commitment Push Model: a pynetdicom requester asks, the archive reports."""

from __future__ import annotations

import threading

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from factories import make_instance
from pacs.ingest import Origin
from pacs.scp.commitment import WELL_KNOWN_INSTANCE
from peers import free_port

REPORT_WAIT = 20.0


def stored_uid(services) -> str:
    uid = generate_uid()
    assert services.ingest(make_instance(SOPInstanceUID=uid), Origin("import", "test")).ok
    return uid


def request(*references: tuple[str, str]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = Sequence(items)
    return ds


class Reports:
    """N-EVENT-REPORTs received by the requester, whichever association brought them."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()

    def handle(self, event):
        self.received.append((event.event_type, event.event_information))
        self.arrived.set()
        return 0x0000, None

    def committed(self) -> list[str]:
        (_, info), = self.received
        return [item.ReferencedSOPInstanceUID for item in info.get("ReferencedSOPSequence", [])]

    def failed(self) -> dict[str, int]:
        (_, info), = self.received
        return {item.ReferencedSOPInstanceUID: int(item.FailureReason)
                for item in info.get("FailedSOPSequence", [])}


def ask_and_wait(server, action: Dataset, wait: float = REPORT_WAIT) -> tuple[int, Reports]:
    reports = Reports()
    ae = AE(ae_title="CT01")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.settings.aet,
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)])
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(action, 1, StorageCommitmentPushModel,
                                        WELL_KNOWN_INSTANCE)
        reports.arrived.wait(wait)
    finally:
        assoc.release()
    return int(status.Status), reports


def test_stored_instances_are_reported_committed_on_the_same_association(start, services):
    uid = stored_uid(services)
    status, reports = ask_and_wait(start(), request((CTImageStorage, uid)))
    assert status == 0x0000
    assert reports.received[0][0] == 1  # all committed
    assert reports.committed() == [uid]
    assert reports.failed() == {}


def test_unknown_instance_is_reported_failed_with_no_such_object(start, services):
    uid = stored_uid(services)
    missing = generate_uid()
    _, reports = ask_and_wait(start(), request((CTImageStorage, uid),
                                               (CTImageStorage, missing)))
    assert reports.received[0][0] == 2  # some failed
    assert reports.committed() == [uid]
    assert reports.failed() == {missing: 0x0112}


def test_instance_whose_object_is_gone_is_not_committed(start, services):
    uid = stored_uid(services)
    services.store.delete(services.index.find_instance(uid).object_key)
    _, reports = ask_and_wait(start(), request((CTImageStorage, uid)))
    assert reports.failed() == {uid: 0x0112}


def test_wrong_sop_class_is_a_class_instance_conflict(start, services):
    uid = stored_uid(services)
    _, reports = ask_and_wait(start(), request((MRImageStorage, uid)))
    assert reports.failed() == {uid: 0x0119}


def test_report_goes_to_the_configured_address_when_the_requester_has_left(start, services):
    uid = stored_uid(services)
    reports = Reports()
    listener = AE(ae_title="CT01")
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    port = free_port()
    scp = listener.start_server(("127.0.0.1", port), block=False,
                                evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)])
    try:
        server = start(modalities=f"CT01=127.0.0.1:{port}")
        ae = AE(ae_title="CT01")
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", server.port, ae_title=server.settings.aet)
        status, _ = assoc.send_n_action(request((CTImageStorage, uid)), 1,
                                        StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        assoc.release()  # at once, as many modalities do
        assert reports.arrived.wait(REPORT_WAIT)
    finally:
        scp.shutdown()
    assert int(status.Status) == 0x0000
    assert reports.committed() == [uid]


def test_request_without_transaction_uid_is_refused(start, services):
    action = request((CTImageStorage, stored_uid(services)))
    del action.TransactionUID
    status, reports = ask_and_wait(start(), action, wait=1.0)
    assert status == 0x0120
    assert reports.received == []
