"""Audit exports: CSV, DICOM audit messages (PS3.15 A.5) and syslog (RFC 5424)."""

import base64
import csv
import io
import socket
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pacs.audit import Action, ActorKind, AuditEvent, Outcome
from pacs.audit_export import (
    CSV_COLUMNS,
    EVENT_CODES,
    SyslogSender,
    audit_message,
    events_to_csv,
    events_to_dicom_xml,
)

SOURCE = "PACS-TEST"
STUDY = "1.2.826.0.1.3680043.8.498.1"
AT = datetime(2024, 5, 17, 8, 30, 5, 123456, tzinfo=UTC)


def event(action=Action.RETRIEVE, outcome=Outcome.SUCCESS, **fields):
    values = {"actor_kind": ActorKind.USER, "actor": "bs.lan", "address": "10.0.0.7",
              "protocol": "http", "at": AT}
    values.update(fields)
    return AuditEvent(action=action, outcome=outcome, **values)


def parse_csv(events):
    return list(csv.DictReader(io.StringIO("".join(events_to_csv(events)), newline="")))


def message(ev):
    return ET.fromstring(audit_message(ev, source_id=SOURCE))


def objects(root):
    return root.findall("ParticipantObjectIdentification")


def object_of_type(root, id_type):
    found = [o for o in objects(root)
             if o.find("ParticipantObjectIDTypeCode").get("csd-code") == id_type]
    assert len(found) <= 1
    return found[0] if found else None


# -- CSV -------------------------------------------------------------------------------------

def test_csv_starts_with_the_header():
    first = next(events_to_csv([]))
    assert first == ",".join(CSV_COLUMNS) + "\r\n"


def test_csv_reads_back_to_the_same_values():
    ev = event(Action.STORE, actor="Nguyễn Thị Hương", patient_id="BN-0042", study_uid=STUDY,
               count=12, detail='Chụp CT ngực, "khẩn"\nlần 2; a,b')
    (row,) = parse_csv([ev])
    assert row == {
        "at": "2024-05-17T08:30:05.123456Z", "action": "store", "outcome": "success",
        "actor_kind": "user", "actor": "Nguyễn Thị Hương", "address": "10.0.0.7",
        "protocol": "http", "patient_id": "BN-0042", "study_uid": STUDY, "count": "12",
        "detail": 'Chụp CT ngực, "khẩn"\nlần 2; a,b',
    }


def test_csv_writes_unknown_values_as_empty_cells():
    (row,) = parse_csv([event(Action.LOGOUT)])
    assert (row["patient_id"], row["study_uid"], row["count"], row["detail"]) == ("", "", "", "")


def test_csv_gives_utc_times_with_z():
    hanoi = datetime(2024, 5, 17, 15, 30, tzinfo=timezone(timedelta(hours=7)))
    (row,) = parse_csv([event(at=hanoi)])
    assert row["at"] == "2024-05-17T08:30:00Z"


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)",
                                  "\t=1", "\r=1"])
def test_csv_neutralises_formula_cells(cell):
    (row,) = parse_csv([event(actor=cell, detail=cell)])
    assert row["actor"] == "'" + cell
    assert row["detail"] == "'" + cell


def test_csv_yields_one_chunk_per_event_after_the_header():
    chunks = list(events_to_csv([event(), event()]))
    assert len(chunks) == 3


# -- DICOM audit messages ----------------------------------------------------------------------

EXPECTED = {
    Action.STORE: ("110104", "C", None),
    Action.QUERY: ("110112", "E", None),
    Action.RETRIEVE: ("110104", "R", None),
    Action.VIEW: ("110103", "R", None),
    Action.SHARE_USE: ("110103", "R", None),
    Action.SHARE_CREATE: ("110113", "E", "110135"),
    Action.SHARE_REVOKE: ("110113", "E", "110135"),
    Action.ADMIN: ("110113", "E", "110129"),
    Action.LOGIN: ("110114", "E", "110122"),
    Action.LOGIN_FAILED: ("110114", "E", "110122"),
    Action.LOGOUT: ("110114", "E", "110123"),
}


def test_every_action_has_event_codes():
    assert set(EVENT_CODES) == set(Action) == set(EXPECTED)


@pytest.mark.parametrize("action", list(Action))
def test_each_action_gives_its_event_id_and_action_code(action):
    root = message(event(action, study_uid=STUDY, patient_id="P1", detail="x"))
    event_id, action_code, type_code = EXPECTED[action]
    identification = root.find("EventIdentification")
    assert root.tag == "AuditMessage"
    assert identification.find("EventID").get("csd-code") == event_id
    assert identification.find("EventID").get("codeSystemName") == "DCM"
    assert identification.get("EventActionCode") == action_code
    types = [t.get("csd-code") for t in identification.findall("EventTypeCode")]
    assert types == ([type_code] if type_code else [])


@pytest.mark.parametrize("action", list(Action))
def test_each_action_reports_its_outcome(action):
    success = message(event(action)).find("EventIdentification")
    failure = message(event(action, Outcome.FAILURE)).find("EventIdentification")
    assert success.get("EventOutcomeIndicator") == ("4" if action is Action.LOGIN_FAILED else "0")
    assert failure.get("EventOutcomeIndicator") == "4"


def test_event_time_is_iso_8601_with_zone():
    root = message(event())
    assert root.find("EventIdentification").get("EventDateTime") == "2024-05-17T08:30:05.123456Z"


def test_message_follows_the_schema_order():
    root = message(event(study_uid=STUDY, patient_id="P1"))
    tags = [child.tag for child in root]
    assert tags == ["EventIdentification", "ActiveParticipant", "ActiveParticipant",
                    "AuditSourceIdentification", "ParticipantObjectIdentification",
                    "ParticipantObjectIdentification"]


def test_requestor_is_the_actor_with_its_ip_address():
    requestor, archive = message(event()).findall("ActiveParticipant")
    assert requestor.attrib == {"UserID": "bs.lan", "UserIsRequestor": "true",
                                "NetworkAccessPointID": "10.0.0.7",
                                "NetworkAccessPointTypeCode": "2"}
    assert archive.get("UserID") == SOURCE
    assert archive.get("UserIsRequestor") == "false"


def test_unknown_actor_is_anonymous_without_network_access_point():
    requestor = message(event(actor="", address="", actor_kind=ActorKind.ANONYMOUS)).find(
        "ActiveParticipant")
    assert requestor.get("UserID") == "anonymous"
    assert "NetworkAccessPointID" not in requestor.attrib


def test_ae_title_is_also_the_alternative_user_id():
    requestor = message(event(Action.STORE, actor_kind=ActorKind.AE, actor="MODALITY1",
                              protocol="dimse")).find("ActiveParticipant")
    assert requestor.get("UserID") == "MODALITY1"
    assert requestor.get("AlternativeUserID") == "AETITLES=MODALITY1"


@pytest.mark.parametrize(("action", "requestor_role", "archive_role"), [
    (Action.STORE, "110153", "110152"),
    (Action.RETRIEVE, "110152", "110153"),
    (Action.QUERY, "110153", "110152"),
])
def test_transfers_give_source_and_destination_roles(action, requestor_role, archive_role):
    requestor, archive = message(event(action)).findall("ActiveParticipant")
    assert requestor.find("RoleIDCode").get("csd-code") == requestor_role
    assert archive.find("RoleIDCode").get("csd-code") == archive_role


def test_audit_source_is_the_source_id():
    source = message(event()).find("AuditSourceIdentification")
    assert source.get("AuditSourceID") == SOURCE


def test_patient_and_study_objects_when_known():
    root = message(event(study_uid=STUDY, patient_id="P1"))
    patient = object_of_type(root, "2")
    study = object_of_type(root, "110180")
    assert patient.attrib == {"ParticipantObjectID": "P1", "ParticipantObjectTypeCode": "1",
                              "ParticipantObjectTypeCodeRole": "1"}
    assert patient.find("ParticipantObjectIDTypeCode").attrib == {
        "csd-code": "2", "codeSystemName": "RFC-3881", "originalText": "Patient Number"}
    assert study.attrib == {"ParticipantObjectID": STUDY, "ParticipantObjectTypeCode": "2",
                            "ParticipantObjectTypeCodeRole": "3"}
    assert study.find("ParticipantObjectIDTypeCode").get("codeSystemName") == "DCM"


def test_no_patient_or_study_object_when_unknown():
    assert objects(message(event(Action.LOGIN))) == []


def test_study_object_without_patient_when_only_the_study_is_known():
    root = message(event(study_uid=STUDY))
    assert object_of_type(root, "110180") is not None
    assert object_of_type(root, "2") is None


def test_count_is_the_number_of_instances_of_the_study():
    study = object_of_type(message(event(study_uid=STUDY, count=7)), "110180")
    assert study.find("ParticipantObjectDescription/SOPClass").get("NumberOfInstances") == "7"


def test_detail_is_a_base64_participant_object_detail():
    study = object_of_type(message(event(study_uid=STUDY, detail="WADO-RS frames")), "110180")
    detail = study.find("ParticipantObjectDetail")
    assert detail.get("type") == "detail"
    assert base64.b64decode(detail.get("value")).decode() == "WADO-RS frames"


def test_query_detail_is_the_base64_participant_object_query():
    root = message(event(Action.QUERY, detail="/dicomweb/studies?PatientName=Nguyễn*"))
    query = root.find("ParticipantObjectIdentification")
    assert query.get("ParticipantObjectTypeCodeRole") == "24"
    text = base64.b64decode(query.find("ParticipantObjectQuery").text).decode()
    assert text == "/dicomweb/studies?PatientName=Nguyễn*"


def test_dimse_query_is_named_by_its_sop_class():
    root = message(event(Action.QUERY, protocol="dimse", detail="1.2.840.10008.5.1.4.1.2.2.1"))
    query = root.find("ParticipantObjectIdentification")
    assert query.get("ParticipantObjectID") == "1.2.840.10008.5.1.4.1.2.2.1"
    assert query.find("ParticipantObjectIDTypeCode").get("csd-code") == "110181"


def test_failure_reason_is_the_outcome_description():
    root = message(event(Action.LOGIN_FAILED, detail="mật khẩu sai"))
    description = root.find("EventIdentification/EventOutcomeDescription")
    assert description.text == "mật khẩu sai"


def test_control_characters_are_dropped_and_the_xml_stays_well_formed():
    ev = event(Action.LOGIN_FAILED, actor="adm\x00in\x1b", detail="bad\x01\x08 <b>&\ufffe'\"")
    root = message(ev)
    assert root.find("ActiveParticipant").get("UserID") == "admin"
    assert root.find("EventIdentification/EventOutcomeDescription").text == "bad <b>&'\""


def test_markup_in_values_is_escaped_not_interpreted():
    root = message(event(actor='"/><Injected x="', patient_id="<P1>"))
    assert root.find("ActiveParticipant").get("UserID") == '"/><Injected x="'
    assert root.find("Injected") is None
    assert object_of_type(root, "2").get("ParticipantObjectID") == "<P1>"


def test_message_is_utf8_with_declaration():
    data = audit_message(event(actor="Trần Văn Đức"), source_id=SOURCE)
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert "Trần Văn Đức".encode() in data


def test_document_holds_one_message_per_event():
    events = [event(action) for action in Action]
    root = ET.fromstring(b"".join(events_to_dicom_xml(events, source_id=SOURCE)))
    assert root.tag == "AuditMessages"
    assert len(root.findall("AuditMessage")) == len(events)


def test_document_of_no_events_is_well_formed():
    root = ET.fromstring(b"".join(events_to_dicom_xml([], source_id=SOURCE)))
    assert list(root) == []


# -- syslog ----------------------------------------------------------------------------------

@pytest.fixture
def udp_receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    yield sock
    sock.close()


@pytest.fixture
def tcp_listener():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.settimeout(10)
    yield sock
    sock.close()


def read_exactly(conn, size):
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def read_frame(conn):
    length = b""
    while not length.endswith(b" "):
        length += read_exactly(conn, 1)
    return read_exactly(conn, int(length))


def xml_of(syslog_message):
    return ET.fromstring(syslog_message[syslog_message.index(b"<?xml"):])


def test_syslog_udp_delivers_an_rfc5424_message(udp_receiver):
    ev = event(actor="Lê Thị Mai")
    with SyslogSender(*udp_receiver.getsockname(), app_name="pacs-test") as sender:
        sender.send(ev, source_id=SOURCE)
    data, _ = udp_receiver.recvfrom(65535)
    pri, rest = data.split(b">", 1)
    version, timestamp, hostname, app, procid, msgid, sd, msg = rest.split(b" ", 7)
    assert pri == b"<85"  # facility 10 (security), severity 5 (notice)
    assert version == b"1"
    assert timestamp == b"2024-05-17T08:30:05.123456Z"
    assert hostname and procid.isdigit()
    assert app == b"pacs-test"
    assert (msgid, sd) == (b"DICOM+RFC3881", b"-")
    assert msg == b"\xef\xbb\xbf" + audit_message(ev, source_id=SOURCE)


def test_syslog_failure_is_sent_as_a_warning(udp_receiver):
    with SyslogSender(*udp_receiver.getsockname()) as sender:
        sender.send(event(Action.LOGIN_FAILED), source_id=SOURCE)
    data, _ = udp_receiver.recvfrom(65535)
    assert data.startswith(b"<84>1 ")


def test_syslog_tcp_frame_length_matches(tcp_listener):
    events = [event(detail="một"), event(Action.QUERY, detail="/dicomweb/studies")]
    with SyslogSender(*tcp_listener.getsockname(), transport="tcp") as sender:
        for ev in events:
            sender.send(ev, source_id=SOURCE)
        conn, _ = tcp_listener.accept()
        with conn:
            conn.settimeout(10)
            frames = [read_frame(conn) for _ in events]
    for ev, frame in zip(events, frames, strict=True):
        assert frame.startswith(b"<85>1 ")
        assert frame.endswith(audit_message(ev, source_id=SOURCE))
        assert xml_of(frame).tag == "AuditMessage"


def test_syslog_refuses_an_unknown_transport():
    with pytest.raises(ValueError, match="transport"):
        SyslogSender("127.0.0.1", transport="smoke-signals")
