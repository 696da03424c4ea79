"""DIMSE messages read and written by hand (pacs.scp.dimse) agree with pynetdicom's codec."""

from __future__ import annotations

import logging
from io import BytesIO

import pytest
from pynetdicom import evt
from pynetdicom.dimse_messages import C_ECHO_RQ, C_FIND_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from pacs.scp.dimse import (
    PDataBatch,
    PDataRun,
    encode_p_data_tf,
    encode_response_command,
    encode_store_response,
    parse_command,
    store_request,
)
from pacs.scp.find import find_response

CT = "1.2.840.10008.5.1.4.1.1.2"
ODD_UID = "1.2.826.0.1.3680043.8.498.123"  # 29 characters: padded with a NUL
EVEN_UID = "1.2.826.0.1.3680043.8.498.1234"


def pynetdicom_command(primitive: C_STORE | C_ECHO, message: type) -> bytes:
    """The command set pynetdicom puts on the wire for ``primitive`` (without the PDV's
    message control header)."""
    encoded = message()
    encoded.primitive_to_message(primitive)
    first = next(iter(encoded.encode_msg(1, 16384)))
    return bytes(first.presentation_data_value_list[0][1][1:])


def response(**values: object) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = CT
    rsp.AffectedSOPInstanceUID = ODD_UID
    rsp.Status = 0x0000
    for name, value in values.items():
        setattr(rsp, name, value)
    return rsp


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"AffectedSOPInstanceUID": EVEN_UID},
        {"Status": 0xC000, "ErrorComment": "StudyInstanceUID '1.2..3' is not a valid UID"},
        {"Status": 0xA700, "ErrorComment": "odd"},
        {"Status": 0x0110, "ErrorComment": "even"},
        {"MessageIDBeingRespondedTo": 65535, "Status": 0xB000},
    ],
    ids=["success", "even-uid", "refused-with-reason", "odd-comment", "even-comment", "warning"],
)
def test_store_response_is_byte_for_byte_what_pynetdicom_encodes(values):
    rsp = response(**values)
    assert encode_store_response(rsp) == pynetdicom_command(rsp, C_STORE_RSP)


def test_store_response_with_an_offending_element_is_left_to_pynetdicom():
    assert encode_store_response(response(Status=0xC000, OffendingElement=[0x00100010])) is None


def test_store_response_with_non_ascii_comment_is_left_to_pynetdicom():
    assert encode_store_response(response(Status=0xC000, ErrorComment="Nguyễn")) is None


def store_request_primitive(**values: object) -> C_STORE:
    request = C_STORE()
    request.MessageID = 12
    request.AffectedSOPClassUID = CT
    request.AffectedSOPInstanceUID = ODD_UID
    request.Priority = 2
    request.DataSet = BytesIO(b"\x08\x00\x05\x00")
    for name, value in values.items():
        setattr(request, name, value)
    return request


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"AffectedSOPInstanceUID": EVEN_UID, "Priority": 1},
        {"MoveOriginatorApplicationEntityTitle": "WS1", "MoveOriginatorMessageID": 3},
    ],
    ids=["plain", "even-uid", "from-a-c-move"],
)
def test_store_request_reads_what_pynetdicom_decodes(values):
    sent = store_request_primitive(**values)
    elements = parse_command(pynetdicom_command(sent, C_STORE_RQ))
    assert elements is not None
    received = store_request(elements)
    assert received is not None
    for name in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
                 "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID"):
        assert getattr(received, name) == getattr(sent, name), name


def test_a_command_other_than_c_store_request_is_left_to_pynetdicom():
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    elements = parse_command(pynetdicom_command(echo, C_ECHO_RQ))
    assert elements is not None
    assert store_request(elements) is None


@pytest.mark.parametrize(
    "data",
    [b"\x00\x00\x00\x00\x04", b"\x08\x00\x00\x00\x02\x00\x00\x00\x00\x00",
     b"\x00\x00\x02\x00\xff\x00\x00\x00abc"],
    ids=["truncated-header", "not-group-0000", "value-past-the-end"],
)
def test_malformed_command_is_not_parsed(data):
    assert parse_command(data) is None


def test_store_request_with_an_over_long_uid_is_refused_like_pynetdicom_does():
    elements = parse_command(pynetdicom_command(store_request_primitive(), C_STORE_RQ))
    assert elements is not None
    elements[0x1000] = b"1." + b"2" * 70  # Affected SOP Instance UID, 72 characters
    with pytest.raises(ValueError, match="Affected SOP Instance UID"):
        store_request(elements)


# -- ReceiverDIMSE: fragments in, primitives out --------------------------------------------


@pytest.fixture(autouse=True)
def quiet_pynetdicom(caplog):
    """pynetdicom's INFO logging off, as ``pacs serve`` runs it (with it on, every message
    takes pynetdicom's own codec)."""
    caplog.set_level(logging.WARNING, logger="pynetdicom")


def receiver_dimse():
    """The DIMSE provider of an acceptor association that is built but not started."""
    from pynetdicom import AE

    from pacs.scp.reactor import ReceiverAssociation

    assoc = ReceiverAssociation(AE(), "acceptor")
    return assoc.dimse


def p_data(*pdvs: tuple[int, bytes]) -> P_DATA:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[cid, data] for cid, data in pdvs]
    return primitive


COMMAND_LAST, DATA, DATA_LAST = b"\x03", b"\x00", b"\x02"
DATASET = bytes(range(256)) * 40  # 10 KiB


def test_store_request_fragments_become_one_c_store_with_the_joined_dataset():
    dimse = receiver_dimse()
    command = pynetdicom_command(store_request_primitive(), C_STORE_RQ)
    dimse.receive_primitive(p_data((1, COMMAND_LAST + command), (1, DATA + DATASET[:4000])))
    dimse.receive_primitive(p_data((1, DATA + DATASET[4000:9000])))
    assert dimse.msg_queue.empty()
    dimse.receive_primitive(p_data((1, DATA_LAST + DATASET[9000:])))
    context_id, request = dimse.msg_queue.get_nowait()
    assert context_id == 1
    assert isinstance(request, C_STORE)
    assert request.AffectedSOPInstanceUID == ODD_UID
    assert request.DataSet.getvalue() == DATASET


def test_a_command_split_over_fragments_goes_through_pynetdicom():
    dimse = receiver_dimse()
    command = pynetdicom_command(store_request_primitive(), C_STORE_RQ)
    dimse.receive_primitive(p_data((3, b"\x01" + command[:40]), (3, COMMAND_LAST + command[40:])))
    dimse.receive_primitive(p_data((3, DATA_LAST + DATASET)))
    context_id, request = dimse.msg_queue.get_nowait()
    assert (context_id, request.MessageID) == (3, 12)
    assert request.DataSet.getvalue() == DATASET


def test_c_echo_goes_through_pynetdicom():
    dimse = receiver_dimse()
    echo = C_ECHO()
    echo.MessageID = 5
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    dimse.receive_primitive(p_data((1, COMMAND_LAST + pynetdicom_command(echo, C_ECHO_RQ))))
    _context_id, request = dimse.msg_queue.get_nowait()
    assert isinstance(request, C_ECHO)
    assert request.MessageID == 5


def test_a_command_inside_a_dataset_aborts_the_association():
    dimse = receiver_dimse()
    command = pynetdicom_command(store_request_primitive(), C_STORE_RQ)
    dimse.receive_primitive(p_data((1, COMMAND_LAST + command), (1, DATA + DATASET[:10])))
    dimse.receive_primitive(p_data((1, COMMAND_LAST + command)))
    assert dimse.msg_queue.empty()
    assert dimse.dul.event_queue.get_nowait() == "Evt19"  # invalid PDU: A-ABORT


def test_dimse_event_handlers_see_the_c_store_messages_pynetdicom_would_give_them():
    dimse = receiver_dimse()
    seen = []
    dimse.assoc.bind(evt.EVT_DIMSE_RECV, lambda event: seen.append(event.message))
    dimse.assoc.bind(evt.EVT_DIMSE_SENT, lambda event: seen.append(event.message))
    sent_to_peer = []
    dimse.dul.send_pdu = sent_to_peer.append  # the DUL is not running: catch what is sent
    command = pynetdicom_command(store_request_primitive(), C_STORE_RQ)
    dimse.receive_primitive(p_data((1, COMMAND_LAST + command), (1, DATA_LAST + DATASET)))
    dimse.send_msg(response(), 1)
    received, answered = seen
    assert isinstance(received, C_STORE_RQ)
    assert received.command_set.AffectedSOPInstanceUID == ODD_UID
    assert received.context_id == 1
    assert received.data_set.getvalue() == DATASET
    assert isinstance(answered, C_STORE_RSP)
    assert answered.command_set.Status == 0x0000
    assert answered.command_set.MessageIDBeingRespondedTo == 7
    (pdata,) = sent_to_peer
    assert bytes(pdata.presentation_data_value_list[0][1][1:]) == pynetdicom_command(
        response(), C_STORE_RSP)


# -- C-FIND responses and P-DATA batches -----------------------------------------------------

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
C_FIND_RSP_FIELD = 0x8020  # Command Field of a C-FIND-RSP (PS3.7 Table 9.3-3)


@pytest.mark.parametrize(
    ("status", "identifier", "comment"),
    [(0xFF00, b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ", None), (0x0000, None, None),
     (0xA700, None, "more than 1000 matches: the first 1000 were sent; narrow the query")],
    ids=["pending", "success", "out-of-resources"],
)
def test_find_response_command_is_byte_for_byte_what_pynetdicom_encodes(
        status, identifier, comment):
    comment = comment[:64] if comment else None
    ours = encode_response_command(C_FIND_RSP_FIELD, 9, status, sop_class_uid=STUDY_ROOT_FIND,
                                   has_dataset=identifier is not None, error_comment=comment)
    primitive = find_response(9, STUDY_ROOT_FIND, status, identifier, comment)
    assert ours == pynetdicom_command(primitive, C_FIND_RSP)


def test_p_data_tf_is_encoded_as_pynetdicom_encodes_it():
    values = [[1, COMMAND_LAST + b"command"], [1, DATA_LAST + b"dataset!"], [3, b"\x01odd"]]
    assert encode_p_data_tf(values) == P_DATA_TF(p_data(*values)).encode()


class RecordingDUL:
    """Stands in for the DUL: records what it is given to send."""

    def __init__(self) -> None:
        self.sent: list[PDataRun] = []

    def send_pdu(self, primitive: PDataRun) -> None:
        self.sent.append(primitive)


def pdus_of(runs: list[PDataRun]) -> list[list[list]]:
    return [pdu for run in runs for pdu in run.pdus]


def test_a_batch_never_puts_two_messages_in_one_pdu():
    dul = RecordingDUL()
    batch = PDataBatch(dul, 16384)
    for number in range(5):
        batch.add(1, b"command%d" % number, b"identifier")
    batch.flush()
    assert len(dul.sent) == 1  # one run for the DUL ...
    pdus = pdus_of(dul.sent)
    assert len(pdus) == 5  # ... of one PDU per message, command and dataset together
    assert all([value[0:1] for _, value in pdu] == [COMMAND_LAST, DATA_LAST] for pdu in pdus)


def test_a_run_is_the_pdus_on_the_wire_one_after_the_other():
    dul = RecordingDUL()
    batch = PDataBatch(dul, 0)
    batch.add(1, b"c1", b"d1")
    batch.add(1, b"c2")
    batch.flush()
    run = dul.sent[0]
    assert run.encoded == b"".join(encode_p_data_tf(pdu) for pdu in run.pdus)
    assert [value for _, value in run.pdus[1]] == [COMMAND_LAST + b"c2"]


def test_a_dataset_larger_than_the_peer_accepts_is_fragmented_across_pdus():
    dul = RecordingDUL()
    batch = PDataBatch(dul, 4096)
    batch.add(1, b"command", DATASET)  # 10 KiB
    batch.flush()
    pdus = pdus_of(dul.sent)
    assert all(len(encode_p_data_tf(pdu)) - 6 <= 4096 for pdu in pdus)
    fragments = [value for pdu in pdus for _, value in pdu]
    assert fragments[0] == COMMAND_LAST + b"command"
    assert [value[0:1] for value in fragments[1:]] == [DATA, DATA, DATA_LAST]
    assert b"".join(value[1:] for value in fragments[1:]) == DATASET


def test_a_batch_goes_to_the_dul_whenever_a_run_is_full():
    dul = RecordingDUL()
    batch = PDataBatch(dul, 16384)
    while not dul.sent:
        batch.add(1, b"command", DATASET)
    assert PDataBatch.RUN_SIZE <= len(dul.sent[0].encoded) < PDataBatch.RUN_SIZE + 2 * len(DATASET)
    batch.add(1, b"command", DATASET)
    batch.flush()
    assert len(dul.sent) == 2
