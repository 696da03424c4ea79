"""The receiver's event-driven association reactor (pacs.scp.reactor) and its server socket.

The first test pins the pynetdicom code the reactor replaces or mirrors: if an upgrade changes
any of it, the test names the method to re-read against pacs/scp/reactor.py and
pacs/scp/dimse.py (and pacs/scp/find.py) before the new hash is recorded here.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pydicom
import pynetdicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, fsm
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.service_class import ServiceClass
from pynetdicom.sop_class import CTImageStorage, Verification
from pynetdicom.transport import AssociationServer, RequestHandler

from factories import make_instance
from pacs.config import Settings
from pacs.dicomfile import dataset_offset
from pacs.ingest import IngestResult, IngestStatus
from pacs.scp.reactor import decode_p_data_tf, recv_exactly
from pacs.scp.server import DicomReceiver
from pacs.scp.wakeup import WakeupPipe
from peers import free_port

#: sha256 (first 16 hex digits) of the source of each pynetdicom function the reactor
#: replaces, extends or mirrors, as of the pynetdicom release it was written against.
PINNED_VERSION = "3.0.4"
PINNED = {
    "DULServiceProvider.__init__": (DULServiceProvider.__init__, "c82dafa9438ddf70"),
    "DULServiceProvider.run_reactor": (DULServiceProvider.run_reactor, "e3a10eb3a0931e48"),
    "DULServiceProvider._read_pdu_data": (
        DULServiceProvider._read_pdu_data, "19f2d4e38c13c835"),
    "DULServiceProvider._is_transport_event": (
        DULServiceProvider._is_transport_event, "8725ed03bb8fbdef"),
    "DULServiceProvider.receive_pdu": (DULServiceProvider.receive_pdu, "fa67339834ca998c"),
    "DULServiceProvider.kill_dul": (DULServiceProvider.kill_dul, "5ceccf8dd01c2072"),
    "DULServiceProvider.stop_dul": (DULServiceProvider.stop_dul, "28a7e0be126e7b30"),
    "Association.__init__": (Association.__init__, "eb07516b8009ad8f"),
    "Association.run_reactor": (Association.run_reactor, "ed8bbbe3b3d6ddae"),
    "Association._run_reactor": (Association._run_reactor, "f28838c5559e462a"),
    "Association.kill": (Association.kill, "8f9713666a7f4cff"),
    "Association._abort_blocking": (Association._abort_blocking, "10b43ef8c63c6764"),
    "Association._serve_request": (Association._serve_request, "2f24c1759cdf6c8c"),
    "ServiceClass._c_find_scp": (ServiceClass._c_find_scp, "da242b908ef4848c"),
    "ServiceClass.is_cancelled": (ServiceClass.is_cancelled, "fb9acf44b9bd05fe"),
    "RequestHandler._create_association": (
        RequestHandler._create_association, "05c8d12b79863cdb"),
    "AssociationServer.__init__": (AssociationServer.__init__, "edacb98bdfb7b974"),
    "DIMSEServiceProvider.receive_primitive": (
        DIMSEServiceProvider.receive_primitive, "5f99c86b14a15cef"),
    "DIMSEServiceProvider.send_msg": (DIMSEServiceProvider.send_msg, "a839cf2fb46976d9"),
    "DIMSEMessage.decode_msg": (DIMSEMessage.decode_msg, "f51c777e841a76be"),
    "DIMSEMessage.message_to_primitive": (
        DIMSEMessage.message_to_primitive, "f8f43d34e43450ef"),
    "fsm.DT_1": (fsm.DT_1, "82e5c5d4114534fa"),
    "fsm.DT_2": (fsm.DT_2, "9ec543394e0b49eb"),
    "fsm.AR_7": (fsm.AR_7, "9a8d68182bf5c9fd"),
    "DULServiceProvider._process_recv_primitive": (
        DULServiceProvider._process_recv_primitive, "4c0ebbb3e646e35e"),
    "P_DATA_TF._generate_items": (P_DATA_TF._generate_items, "55a5deea47745b72"),
    "utils.set_uid": (pynetdicom.utils.set_uid, "f917a8035170f792"),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pynetdicom_code_the_reactor_replaces_is_unchanged(name):
    function, pinned = PINNED[name]
    current = hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
    assert current == pinned, (
        f"pynetdicom {pynetdicom.__version__} changed {name} (pacs.scp.reactor/dimse were "
        f"written against {PINNED_VERSION}): re-read it against pacs/scp/reactor.py and "
        f"pacs/scp/dimse.py, adapt them, then pin {current!r} here"
    )


# -- a receiver with a stub ingest path ------------------------------------------------------


class StubServices:
    """Services whose ingest path accepts everything and keeps the bytes."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def ingest(self, data: bytes, _origin: object) -> IngestResult:
        self.received.append(bytes(data))
        return IngestResult(IngestStatus.STORED)


@pytest.fixture(autouse=True)
def quiet_pynetdicom(caplog):
    """pynetdicom's INFO logging off, as ``pacs serve`` runs it."""
    caplog.set_level(logging.WARNING, logger="pynetdicom")


def start_receiver(services: object, acse_timeout: float = 30,
                   **overrides: object) -> DicomReceiver:
    """A receiver on a free loopback port (not started yet)."""
    settings = Settings.load(environ={}, data_dir=Path("unused"), dicom_host="127.0.0.1",
                             dicom_port=free_port(), **overrides)
    receiver = DicomReceiver(settings, services)  # type: ignore[arg-type]
    receiver.ae.acse_timeout = acse_timeout
    return receiver


@pytest.fixture
def stub():
    return StubServices()


@pytest.fixture
def receiver(stub):
    server = start_receiver(stub)
    server.start()
    yield server
    server.stop(grace=5)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds; False if it still does not after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def associate(port: int, *contexts: str, max_pdu: int = 16382) -> Association:
    ae = AE(ae_title="TESTSCU")
    ae.maximum_pdu_size = max_pdu
    for context in contexts or (Verification,):
        ae.add_requested_context(context, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    return assoc


# -- the loops sleep instead of polling ------------------------------------------------------


def test_an_idle_association_sleeps_instead_of_polling(receiver, monkeypatch):
    # One call per turn of each loop (pynetdicom's and ours alike).
    turns = {"dul": 0, "association": 0}
    dul_turn = DULServiceProvider._process_recv_primitive
    assoc_turn = DIMSEServiceProvider.get_msg

    def count_dul(self):
        turns["dul"] += self.assoc.is_acceptor  # not the test's own (polling) SCU
        return dul_turn(self)

    def count_assoc(self, block=False):
        turns["association"] += self.assoc.is_acceptor
        return assoc_turn(self, block)

    monkeypatch.setattr(DULServiceProvider, "_process_recv_primitive", count_dul)
    monkeypatch.setattr(DIMSEServiceProvider, "get_msg", count_assoc)
    assoc = associate(receiver.port)
    try:
        assert assoc.send_c_echo().Status == 0x0000
        before = dict(turns)
        time.sleep(0.3)  # idle: pynetdicom's loops would each turn ~300 times meanwhile
        assert turns["dul"] - before["dul"] <= 3
        assert turns["association"] - before["association"] <= 3
    finally:
        assoc.release()


def test_c_store_in_many_small_pdus_arrives_byte_for_byte(stub):
    server = start_receiver(stub, max_pdu_size=4096)  # the sender fragments to fit
    server.start()
    try:
        data = make_instance()
        dataset = pydicom.dcmread(BytesIO(data))
        assoc = associate(server.port, CTImageStorage)
        try:
            assert assoc.send_c_store(dataset).Status == 0x0000
        finally:
            assoc.release()
    finally:
        server.stop(grace=5)
    (received,) = stub.received
    assert received[dataset_offset(received):] == _encoded(dataset)


def _encoded(dataset: pydicom.Dataset) -> bytes:
    """The dataset as pynetdicom puts it on the wire (explicit VR little endian)."""
    from pynetdicom.dsutils import encode

    return bytes(encode(dataset, False, True))


# -- connections ---------------------------------------------------------------------------


def test_every_accepted_connection_has_tcp_nodelay(receiver):
    with socket.create_connection(("127.0.0.1", receiver.port)):
        assert wait_until(lambda: receiver.server.connections)
        (accepted,) = receiver.server.connections
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_a_port_probe_is_let_go_at_once(receiver):
    # Connect and close without asking for an association (a health check, a port scan):
    # pynetdicom would keep the connection's thread for the whole ACSE timeout (30 s).
    with socket.create_connection(("127.0.0.1", receiver.port)):
        assert wait_until(lambda: receiver.server.connections)
    assert wait_until(lambda: not receiver.server.connections, timeout=10)
    assert wait_until(lambda: not receiver.server.active_associations)


def test_a_silent_connection_is_closed_when_the_acse_timer_expires(stub):
    server = start_receiver(stub, acse_timeout=0.3)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as silent:
            silent.settimeout(20)
            assert silent.recv(1) == b""  # closed by the receiver, not by the timeout
        assert wait_until(lambda: not server.server.connections)
        assert associate(server.port).send_c_echo().Status == 0x0000  # still serving
    finally:
        server.stop(grace=5)


# -- pieces --------------------------------------------------------------------------------


def _pdv(context_id: int, data: bytes) -> bytes:
    return struct.pack(">L", len(data) + 1) + bytes([context_id]) + data


def test_p_data_tf_items_are_views_of_the_received_pdu():
    body = bytearray(_pdv(1, b"\x03command") + _pdv(3, b"\x00dataset"))
    pdu = decode_p_data_tf(body)
    values = [(item.presentation_context_id, bytes(item.presentation_data_value))
              for item in pdu.presentation_data_value_items]
    assert values == [(1, b"\x03command"), (3, b"\x00dataset")]
    body[6] = ord("C")  # no copy: the item sees the buffer
    assert bytes(pdu.presentation_data_value_items[0].presentation_data_value) == b"\x03Command"


@pytest.mark.parametrize(
    "body",
    [b"", _pdv(1, b"\x03abc")[:-1], b"\x00\x00\x00\x01\x01", b"\x00\x00"],
    ids=["empty", "item-past-the-end", "item-without-header", "truncated-length"],
)
def test_malformed_p_data_tf_is_refused(body):
    with pytest.raises(ValueError):
        decode_p_data_tf(bytearray(body))


def test_recv_exactly_reads_a_pdu_sent_in_pieces():
    left, right = socket.socketpair()
    with left, right:
        sender = threading.Thread(target=lambda: [right.sendall(bytes([n]) * 1000)
                                                  for n in range(5)])
        sender.start()
        received = recv_exactly(left, 5000)
        sender.join()
    assert received == b"".join(bytes([n]) * 1000 for n in range(5))


def test_recv_exactly_does_not_trust_a_huge_claimed_length():
    # A PDU header may claim 4 GiB: the buffer grows with what arrives, not with the claim.
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"only this")
        right.shutdown(socket.SHUT_WR)
        assert recv_exactly(left, 2**32 - 1) == b"only this"


def test_wakeup_pipe_wakes_select_and_is_harmless_once_closed():
    import select

    pipe = WakeupPipe()
    pipe.set()
    pipe.set()
    assert select.select([pipe], [], [], 0)[0] == [pipe]
    pipe.clear()
    assert select.select([pipe], [], [], 0)[0] == []
    pipe.close()
    pipe.set()  # from a late thread: no error, nothing written anywhere
    pipe.clear()
    pipe.close()


def test_stopping_the_receiver_ends_its_association_threads(stub):
    server = start_receiver(stub)
    server.start()
    acceptor = server.server
    assoc = associate(server.port)
    server.stop(grace=0.2)  # the association is still open: it is aborted
    assert wait_until(lambda: not assoc.is_alive())
    assert wait_until(lambda: not acceptor.active_associations)


def test_stopping_closes_a_connection_that_never_asked_for_an_association(stub):
    server = start_receiver(stub)
    server.start()
    acceptor = server.server
    with socket.create_connection(("127.0.0.1", server.port)) as idle:
        assert wait_until(lambda: acceptor.connections)
        server.stop(grace=0.2)
        idle.settimeout(20)
        assert idle.recv(1) == b""  # closed by the receiver (no A-ABORT: none is due)
    assert wait_until(lambda: not acceptor.active_associations)


def test_remembered_uid_conversion_validates_like_pynetdicom():
    from pacs.scp.uids import remember_uids, remembered_set_uid

    remember_uids()
    assert pynetdicom.presentation.set_uid is remembered_set_uid
    uid = remembered_set_uid("1.2.840.10008.1.1", "abstract_syntax")
    assert uid == "1.2.840.10008.1.1" and isinstance(uid, pydicom.uid.UID)
    padded = b"1.2.840.10008.1.2\x00"
    assert remembered_set_uid(padded, "x") == pynetdicom.utils.set_uid(padded, "x")
    assert remembered_set_uid(None, "x") is None
    too_long = "1." + "2" * 70
    for _ in range(2):  # an invalid UID is refused every time, never remembered as valid
        with pytest.raises(ValueError, match="64 characters"), pytest.warns(UserWarning):
            remembered_set_uid(too_long, "abstract_syntax")
