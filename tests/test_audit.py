"""The audit trail: one record per action with the right fields, from every front end
(DICOM peers, the web, the command line); exports; a failing trail is visible."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from webclient import PASSWORD, ensure_user, signed_in

from factories import make_instance, study_instance
from pacs.audit import Action, ActorKind, AuditEvent, AuditTrail, Outcome
from pacs.config import Settings
from pacs.errors import PacsError
from pacs.ingest import Origin
from pacs.services import open_services

STUDY = "1.2.826.0.1.3680043.8.498.91"
SERIES = f"{STUDY}.1"
INSTANCE = f"{SERIES}.1"


@pytest.fixture
def archive(embedded):
    services = embedded
    assert services.ingest(study_instance(STUDY, PatientID="BN0091"),
                           Origin("import", "test")).ok
    return services


def only(archive, **filters) -> AuditEvent:
    (event,) = archive.audit.search(**filters)
    return event


# -- the trail itself, on both backend pairs --------------------------------------------------


def test_recorded_events_are_found_by_user_patient_study_and_date(services):
    now = datetime.now(UTC)
    services.audit.record_many([
        AuditEvent(Action.VIEW, Outcome.SUCCESS, ActorKind.USER, actor="bs.an",
                   patient_id="BN1", study_uid="1.2.3", at=now - timedelta(days=2)),
        AuditEvent(Action.QUERY, Outcome.SUCCESS, ActorKind.AE, actor="CT01",
                   patient_id="BN2", count=4),
    ])
    assert only(services, actor="bs.an").study_uid == "1.2.3"
    assert only(services, patient_id="BN2").count == 4
    assert only(services, since=now - timedelta(days=1)).actor == "CT01"
    assert only(services, until=now - timedelta(days=1)).action is Action.VIEW
    assert [e.actor for e in services.audit.search()] == ["CT01", "bs.an"]


def test_a_failing_trail_is_visible_and_catches_up(archive):
    trail = AuditTrail(archive.db, flush_interval=0.05)
    with archive.db.writing() as conn:
        conn.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
    trail.record(AuditEvent(Action.LOGIN, Outcome.SUCCESS, ActorKind.USER, actor="bs.an"))
    with pytest.raises(PacsError):
        trail.flush()
    status = trail.status()
    assert not status.ok and status.pending == 1 and "audit_events" in status.last_error
    with archive.db.writing() as conn:
        conn.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))
    trail.flush()
    assert trail.status().ok
    assert only(archive, actor="bs.an").action is Action.LOGIN


def test_readyz_tells_when_the_trail_fails(app, archive):
    client = app.test_client()
    assert client.get("/readyz").json["audit"] == "ok"
    with archive.db.writing() as conn:
        conn.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
    archive.audit.record(AuditEvent(Action.LOGIN, Outcome.SUCCESS, ActorKind.USER, actor="x"))
    with pytest.raises(PacsError):
        archive.audit.flush()
    assert client.get("/readyz").json == {"status": "ready", "audit": "failing"}
    with archive.db.writing() as conn:
        conn.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))


def test_the_admin_api_reports_the_trail_status(app):
    answer = signed_in(app).get("/api/audit/status").json
    assert answer == {"ok": True, "pending": 0, "dropped": 0, "last_error": ""}


# -- the web -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path, action", [
    (f"/dicom-web/studies?StudyInstanceUID={STUDY}", Action.QUERY),
    (f"/dicom-web/studies/{STUDY}", Action.RETRIEVE),
    (f"/dicom-web/studies/{STUDY}/series/{SERIES}/metadata", Action.VIEW),
    (f"/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}/frames/1",
     Action.RETRIEVE),
    (f"/dicom-web/studies/{STUDY}/series/{SERIES}/thumbnail", Action.VIEW),
    (f"/wado?requestType=WADO&studyUID={STUDY}&seriesUID={SERIES}&objectUID={INSTANCE}",
     Action.RETRIEVE),
])
def test_each_web_read_leaves_one_record_naming_the_patient(app, archive, path, action):
    client = signed_in(app, "clinician")
    assert client.get(path).status_code == 200
    event = only(archive, action=str(action))
    assert (event.actor, event.actor_kind, event.protocol) == (
        "test-clinician", ActorKind.TOKEN, "http")
    assert (event.patient_id, event.study_uid, event.outcome) == (
        "BN0091", STUDY, Outcome.SUCCESS)
    assert event.address == "127.0.0.1"


def test_a_query_records_how_many_matched(app, archive):
    signed_in(app).get("/dicom-web/studies")
    assert only(archive, action="query").count == 1


def test_a_refused_request_is_recorded_as_a_failure(app, archive):
    app.test_client().get(f"/dicom-web/studies/{STUDY}/metadata")
    event = only(archive, action="view")
    assert event.outcome is Outcome.FAILURE and event.actor_kind is ActorKind.ANONYMOUS
    assert event.detail.endswith("-> 401")


def test_a_stow_leaves_one_store_record(app, archive):
    part = make_instance(StudyInstanceUID=f"{STUDY}9", SeriesInstanceUID=f"{STUDY}9.1")
    body = (b"--b\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n--b--\r\n")
    answer = signed_in(app, "uploader").post(
        "/dicom-web/studies", data=body,
        content_type='multipart/related; type="application/dicom"; boundary=b')
    assert answer.status_code == 200
    event = only(archive, action="store")
    assert (event.actor, event.study_uid, event.count) == ("test-uploader", f"{STUDY}9", 1)


def test_a_burst_of_1000_wado_requests_leaves_1000_records(app, archive):
    client = signed_in(app, "clinician")
    frame = f"/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}/frames/1"
    for _ in range(1000):
        with client.get(frame) as response:
            assert response.status_code == 200
    assert len(archive.audit.search(action="retrieve", limit=5000)) == 1000


def _sign_in(client, username, password=PASSWORD):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": token})


def test_logins_failed_logins_and_logouts_are_recorded(app, archive):
    ensure_user(app, "radiologist", "bs.an")
    client = app.test_client()
    _sign_in(client, "bs.an", "not the password")
    _sign_in(client, "bs.an")
    page = client.get("/").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post("/logout", data={"csrf_token": csrf})
    assert [(e.action, e.outcome) for e in reversed(archive.audit.search(actor="bs.an"))] == [
        (Action.LOGIN_FAILED, Outcome.FAILURE), (Action.LOGIN, Outcome.SUCCESS),
        (Action.LOGOUT, Outcome.SUCCESS)]


def test_share_creation_use_and_revocation_are_recorded(app, archive):
    radiologist = signed_in(app, "radiologist")
    created = radiologist.post("/api/shares", json={"study_uid": STUDY, "hours": 2}).json
    app.test_client().get("/share/" + created["url"].rsplit("/", 1)[1])
    radiologist.delete(f"/api/shares/{created['id']}")
    made = only(archive, action="share-create")
    assert (made.actor, made.patient_id, made.study_uid) == ("test-radiologist", "BN0091", STUDY)
    used = only(archive, action="share-use")
    assert (used.actor_kind, used.actor) == (ActorKind.SHARE, f"share-{created['id']}")
    assert only(archive, action="share-revoke").outcome is Outcome.SUCCESS


def test_an_admin_change_is_recorded_without_the_password(app, archive):
    signed_in(app).post("/api/users", json={"username": "bs.moi", "password": PASSWORD,
                                            "role": "clinician"})
    event = only(archive, action="admin")
    assert event.detail == "user bs.moi created with role clinician"
    assert PASSWORD not in repr(event)


def test_the_api_filters_and_exports_csv_and_dicom_audit_messages(app, archive):
    client = signed_in(app, "clinician")
    client.get(f"/dicom-web/studies/{STUDY}/series/{SERIES}/metadata")
    admin = signed_in(app)
    listed = admin.get("/api/audit?patient_id=BN0091").json
    assert [row["action"] for row in listed] == ["view"]
    exported = admin.get("/api/audit?patient_id=BN0091&format=csv").get_data(as_text=True)
    (row,) = csv.DictReader(io.StringIO(exported))
    assert (row["action"], row["actor"], row["study_uid"]) == ("view", "test-clinician", STUDY)
    document = ET.fromstring(admin.get("/api/audit?patient_id=BN0091&format=dicom").data)
    (message,) = document.findall("AuditMessage")
    assert message.find("EventIdentification/EventID").get("csd-code") == "110103"
    assert admin.get("/api/audit?since=yesterday").status_code == 400


# -- DICOM peers and the command line -------------------------------------------------------


def test_a_storescu_association_leaves_one_store_record_per_study(dcmtk, services, start,
                                                                  tmp_path):
    receiver = start()
    files = []
    for number in (1, 2):
        path = tmp_path / f"{number}.dcm"
        path.write_bytes(study_instance(STUDY, number, PatientID="BN0091"))
        files.append(str(path))
    subprocess.run([dcmtk.storescu, "-aet", "CT01", "-aec", "PACS", "127.0.0.1",
                    str(receiver.port), *files], check=True, capture_output=True, timeout=60)
    receiver.stop(grace=5)  # the association has ended and been logged
    event = only(services, action="store")
    assert (event.actor, event.actor_kind, event.protocol) == ("CT01", ActorKind.AE, "dimse")
    assert (event.patient_id, event.study_uid, event.count) == ("BN0091", STUDY, 2)


def test_findscu_and_getscu_leave_query_and_retrieve_records(dcmtk, services, start, tmp_path):
    assert services.ingest(study_instance(STUDY, PatientID="BN0091"),
                           Origin("import", "test")).ok
    receiver = start()
    port = str(receiver.port)
    subprocess.run([dcmtk.findscu, "-S", "-aet", "WS1", "-aec", "PACS", "-k",
                    "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}", "127.0.0.1",
                    port], check=True, capture_output=True, timeout=60)
    subprocess.run([dcmtk.getscu, "-S", "-aet", "WS1", "-aec", "PACS", "-od", str(tmp_path),
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}",
                    "127.0.0.1", port], check=True, capture_output=True, timeout=60)
    query = only(services, action="query")
    assert (query.actor, query.study_uid, query.patient_id, query.count) == (
        "WS1", STUDY, "BN0091", 1)
    retrieve = only(services, action="retrieve")
    assert (retrieve.actor, retrieve.study_uid, retrieve.count, retrieve.outcome) == (
        "WS1", STUDY, 1, Outcome.SUCCESS)


def test_pacs_import_leaves_one_store_record_per_study(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for number in (1, 2):
        (folder / f"{number}.dcm").write_bytes(study_instance(STUDY, number, PatientID="BN0091"))
    data_dir = tmp_path / "var"
    subprocess.run([sys.executable, "-m", "pacs.cli", "import", "--quiet", "--data-dir",
                    str(data_dir), str(folder)], check=True, capture_output=True, timeout=120)
    services = open_services(Settings.load(environ={}, data_dir=data_dir))
    try:
        event = only(services, action="store")
    finally:
        services.close()
    assert (event.actor_kind, event.protocol, event.count, event.patient_id) == (
        ActorKind.CLI, "cli", 2, "BN0091")


def test_records_are_also_sent_by_syslog_when_configured(tmp_path):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as repository:
        repository.bind(("127.0.0.1", 0))
        repository.settimeout(10)
        port = repository.getsockname()[1]
        settings = Settings.load(environ={}, data_dir=tmp_path / "var",
                                 audit_syslog=f"udp://127.0.0.1:{port}")
        services = open_services(settings)
        try:
            services.audit.record(AuditEvent(Action.LOGIN, Outcome.SUCCESS, ActorKind.USER,
                                             actor="bs.an", address="10.1.2.3"))
            services.audit.flush()
            message = repository.recv(65536)
        finally:
            services.close()
    assert message.startswith(b"<") and b"<AuditMessage>" in message
    assert b'UserID="bs.an"' in message and b"110114" in message
