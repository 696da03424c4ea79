"""Share links for consultation: creation, opening, PIN, expiry, revocation, series scope,
and de-identified viewing (PS3.15 Basic Profile applied on the fly)."""

from __future__ import annotations

import gzip
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pydicom
import pytest
from sqlalchemy import select, update
from webclient import signed_in, token_for

from factories import make_instance
from pacs.ingest import Origin
from pacs.storage.schema import share_links

STUDY = "1.2.826.0.1.3680043.8.498.81"
OTHER = "1.2.826.0.1.3680043.8.498.82"
SERIES = f"{STUDY}.1", f"{STUDY}.2"
INSTANCES = f"{STUDY}.1.1", f"{STUDY}.1.2", f"{STUDY}.2.1"
ORIGINALS = ["Nguyễn", "BN0081", "19700101", "20260315", "ACC0081", "CT ngực", "Trần",
             "Bệnh viện Lào Cai", STUDY, *SERIES, *INSTANCES]


@pytest.fixture
def archive(embedded):
    services = embedded
    for instance in INSTANCES:
        series = instance.rsplit(".", 1)[0]
        data = make_instance(StudyInstanceUID=STUDY, SeriesInstanceUID=series,
                             SOPInstanceUID=instance, PatientID="BN0081",
                             AccessionNumber="ACC0081", InstitutionName="Bệnh viện Lào Cai",
                             FrameOfReferenceUID=f"{STUDY}.9")
        assert services.ingest(data, Origin("import", "test")).ok
    assert services.ingest(make_instance(StudyInstanceUID=OTHER, SeriesInstanceUID=f"{OTHER}.1",
                                         SOPInstanceUID=f"{OTHER}.1.1", PatientID="BN0082"),
                           Origin("import", "test")).ok
    return services


@pytest.fixture
def radiologist(app):
    return signed_in(app, "radiologist")


def share(radiologist, **body) -> dict:
    response = radiologist.post("/api/shares", json={"study_uid": STUDY, "hours": 24, **body})
    assert response.status_code == 201, response.json
    return response.json


def open_link(app, created: dict, pin: str | None = None):
    """A fresh browser that opens the link (and gives the PIN); returns it and the answer."""
    browser = app.test_client()
    path = created["url"].split("://", 1)[1].split("/", 1)[1]
    answer = browser.get("/" + path)
    if pin is not None:
        token = re.search(r'name="csrf_token" value="([^"]+)"', answer.get_data(as_text=True))
        answer = browser.post("/" + path, data={"pin": pin, "csrf_token": token.group(1)})
    return browser, answer


def test_a_link_opens_the_viewer_on_its_study(app, radiologist):
    created = share(radiologist)
    browser, answer = open_link(app, created)
    assert answer.status_code == 302
    assert answer.headers["Location"] == f"/viewer/viewer?StudyInstanceUIDs={STUDY}"
    assert browser.get(f"/dicom-web/studies/{STUDY}/series").status_code == 200
    assert browser.get(f"/dicom-web/studies/{OTHER}/series").status_code == 403
    assert browser.get("/").headers["Location"].startswith("/viewer/viewer?")


def test_a_link_is_unguessable_and_only_its_hash_is_kept(app, archive, radiologist):
    created = share(radiologist)
    secret = created["url"].rsplit("/", 1)[1]
    assert len(secret) >= 43  # 256 random bits, URL-safe base64
    with archive.db.reading() as conn:
        stored = conn.execute(select(share_links.c.token_hash)).scalar_one()
    assert secret not in stored


def test_an_expired_link_no_longer_opens_nor_serves(app, archive, radiologist):
    created = share(radiologist)
    browser, _ = open_link(app, created)
    with archive.db.writing() as conn:
        conn.execute(update(share_links).values(expires_at=datetime.now(UTC)
                                                - timedelta(seconds=1)))
    assert browser.get(f"/dicom-web/studies/{STUDY}/series").status_code == 401
    _, again = open_link(app, created)
    assert again.status_code == 404


def test_revoking_a_link_takes_effect_at_once(app, radiologist):
    created = share(radiologist)
    browser, _ = open_link(app, created)
    assert browser.get(f"/dicom-web/studies/{STUDY}/metadata").status_code == 200
    assert radiologist.delete(f"/api/shares/{created['id']}").status_code == 200
    refused = browser.get(f"/dicom-web/studies/{STUDY}/metadata")
    assert refused.status_code == 401
    assert "revoked" in refused.json["error"]


def test_only_its_creator_or_an_admin_revokes_a_link(app, radiologist):
    created = share(radiologist)
    colleague = app.test_client()
    colleague.environ_base["HTTP_AUTHORIZATION"] = (
        f"Bearer {token_for(app, 'radiologist', username='bs.khac')}")
    assert colleague.delete(f"/api/shares/{created['id']}").status_code == 403
    assert signed_in(app, "admin").delete(f"/api/shares/{created['id']}").status_code == 200


def test_a_link_with_a_pin_opens_only_with_it(app, radiologist):
    created = share(radiologist, pin="2468")
    assert created["pin"] is True
    browser, form = open_link(app, created)
    assert form.status_code == 200 and 'name="pin"' in form.get_data(as_text=True)
    assert browser.get(f"/dicom-web/studies/{STUDY}/series").status_code == 401
    _, wrong = open_link(app, created, pin="1357")
    assert wrong.status_code == 401
    browser, right = open_link(app, created, pin="2468")
    assert right.status_code == 302
    assert browser.get(f"/dicom-web/studies/{STUDY}/series").status_code == 200


def test_wrong_pins_are_rate_limited(app, radiologist):
    created = share(radiologist, pin="2468")
    for _ in range(5):
        open_link(app, created, pin="0000")
    _, answer = open_link(app, created, pin="2468")
    assert answer.status_code == 429


def test_a_series_link_reaches_only_its_series(app, radiologist):
    created = share(radiologist, series_uid=SERIES[0])
    browser, answer = open_link(app, created)
    assert "SeriesInstanceUIDs=" in answer.headers["Location"]
    listed = browser.get(f"/dicom-web/studies/{STUDY}/series").json
    assert [item["0020000E"]["Value"][0] for item in listed] == [SERIES[0]]
    assert browser.get(f"/dicom-web/studies/{STUDY}/series/{SERIES[0]}/metadata"
                       ).status_code == 200
    assert browser.get(f"/dicom-web/studies/{STUDY}/series/{SERIES[1]}/metadata"
                       ).status_code == 403
    assert browser.get(f"/dicom-web/studies/{STUDY}/metadata").status_code == 403


@pytest.mark.parametrize("body, reason", [
    ({"hours": 0.01}, "between 10 minutes and 30 days"),
    ({"hours": 24 * 31}, "between 10 minutes and 30 days"),
    ({"pin": "12"}, "4 to 12 digits"),
    ({"study_uid": "../../etc/passwd"}, "not a valid UID"),
    ({"study_uid": "1.2.3"}, "no study 1.2.3"),
])
def test_a_bad_share_request_is_refused_with_a_reason(radiologist, body, reason):
    response = radiologist.post("/api/shares", json={"study_uid": STUDY, "hours": 24, **body})
    assert response.status_code in (400, 404)
    assert reason in response.json["error"]


# -- de-identified links --------------------------------------------------------------------


def _body(response) -> bytes:
    data = response.get_data()
    return gzip.decompress(data) if response.headers.get("Content-Encoding") == "gzip" else data


def _remapped(answer) -> str:
    return re.search(r"StudyInstanceUIDs=([0-9.]+)", answer.headers["Location"]).group(1)


def test_a_deidentified_link_shows_nothing_identifying(app, radiologist):
    browser, answer = open_link(app, share(radiologist, deidentify=True))
    study = _remapped(answer)
    assert study != STUDY
    series_list = browser.get(f"/dicom-web/studies/{study}/series").json
    series = series_list[0]["0020000E"]["Value"][0]
    metadata = browser.get(f"/dicom-web/studies/{study}/series/{series}/metadata",
                           headers={"Accept-Encoding": "gzip"})
    instance = json.loads(_body(metadata))[0]["00080018"]["Value"][0]
    answers = [
        browser.get(f"/dicom-web/studies?StudyInstanceUID={study}"),
        browser.get(f"/dicom-web/studies/{study}/series"),
        browser.get(f"/dicom-web/studies/{study}/instances"),
        browser.get(f"/dicom-web/studies/{study}/metadata"),
        metadata,
        browser.get(f"/dicom-web/studies/{study}/series/{series}/instances/{instance}",
                    headers={"Accept": 'multipart/related; type="application/dicom"; '
                                       'transfer-syntax=*'}),
        browser.get(f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}"
                    f"&objectUID={instance}&contentType=application/dicom"),
    ]
    for response in answers:
        assert response.status_code == 200, response.request.path
        body = _body(response)
        leaked = [text for text in ORIGINALS if text.encode() in body]
        assert leaked == [], f"{response.request.path} shows {leaked}"
    patient = json.loads(_body(answers[0]))[0]["00100010"]["Value"][0]["Alphabetic"]
    assert patient.startswith("ANONYMOUS^")


def test_a_deidentified_instance_is_a_valid_dicom_file_with_the_same_pixels(app, archive,
                                                                          radiologist):
    browser, answer = open_link(app, share(radiologist, deidentify=True))
    study = _remapped(answer)
    series = browser.get(f"/dicom-web/studies/{study}/series").json[0]["0020000E"]["Value"][0]
    listed = browser.get(f"/dicom-web/studies/{study}/series/{series}/instances").json
    instance = listed[0]["00080018"]["Value"][0]
    response = browser.get(f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}"
                           f"&objectUID={instance}&contentType=application/dicom")
    dataset = pydicom.dcmread(io.BytesIO(response.get_data()))
    assert dataset.PatientIdentityRemoved == "YES"
    assert dataset.SOPInstanceUID == instance
    original = pydicom.dcmread(io.BytesIO(make_instance()))
    assert dataset.PixelData == original.PixelData


def test_frames_through_a_deidentified_link_are_the_stored_pixels(app, radiologist):
    browser, answer = open_link(app, share(radiologist, deidentify=True))
    study = _remapped(answer)
    series = browser.get(f"/dicom-web/studies/{study}/series").json[0]["0020000E"]["Value"][0]
    instance = browser.get(f"/dicom-web/studies/{study}/series/{series}/instances"
                           ).json[0]["00080018"]["Value"][0]
    frame = browser.get(f"/dicom-web/studies/{study}/series/{series}/instances/{instance}"
                        "/frames/1", headers={"Accept": "multipart/related; "
                                              "type=application/octet-stream; transfer-syntax=*"})
    assert frame.status_code == 200
    assert pydicom.dcmread(io.BytesIO(make_instance())).PixelData in frame.get_data()


def test_original_uids_do_not_work_through_a_deidentified_link(app, radiologist):
    browser, _ = open_link(app, share(radiologist, deidentify=True))
    assert browser.get(f"/dicom-web/studies/{STUDY}/series").status_code == 403
    assert browser.get(f"/dicom-web/studies?StudyInstanceUID={STUDY}").status_code == 403


def test_burned_in_pixels_are_not_shown_through_a_deidentified_link(app, archive, radiologist):
    burned = f"{STUDY}.3.1"
    assert archive.ingest(make_instance(StudyInstanceUID=STUDY, SeriesInstanceUID=f"{STUDY}.3",
                                        SOPInstanceUID=burned, BurnedInAnnotation="YES"),
                          Origin("import", "test")).ok
    browser, answer = open_link(app, share(radiologist, deidentify=True))
    study = _remapped(answer)
    from pacs.deidentify import Deidentifier

    link = archive.shares.links()[0]
    uid = Deidentifier(link.deid_secret).uid
    path = f"/dicom-web/studies/{study}/series/{uid(f'{STUDY}.3')}/instances/{uid(burned)}"
    refused = browser.get(path + "/frames/1")
    assert refused.status_code == 403
    assert "burned" in refused.json["error"]
    assert browser.get(path + "/metadata").status_code == 200
    plain = f"/dicom-web/studies/{study}/series/{uid(SERIES[0])}/instances/{uid(INSTANCES[0])}"
    assert browser.get(plain + "/frames/1").status_code == 200
