"""STOW-RS (PS3.18 10.5): instances stored over HTTP through the ingest path, on each backend."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from webclient import signed_in

from factories import make_instance
from pacs.web import create_app

SAMPLES = Path(__file__).resolve().parent.parent / "sample_dicom"
STUDY = "1.2.826.0.1.3680043.8.498.601"
OTHER_STUDY = "1.2.826.0.1.3680043.8.498.602"
REFERENCED, FAILED = "00081199", "00081198"
SOP_INSTANCE, FAILURE_REASON, RETRIEVE_URL = "00081155", "00081197", "00081190"
BOUNDARY = "a1b2c3d4e5"


def multipart(*bodies: bytes, content_type: str = "application/dicom") -> bytes:
    parts = b"".join(f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + body
                     + b"\r\n" for body in bodies)
    return parts + f"--{BOUNDARY}--\r\n".encode()


def post(client, body: bytes, path: str = "/dicom-web/studies", **headers: str):
    content_type = headers.pop("content_type",
                               f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
    return client.post(path, data=body, headers={"Content-Type": content_type, **headers})


@pytest.fixture
def client(services):
    return signed_in(create_app(services.settings, services))


def instance(number: int, study: str = STUDY) -> bytes:
    return make_instance(StudyInstanceUID=study, SeriesInstanceUID=f"{study}.1",
                         SOPInstanceUID=f"{study}.1.{number}", InstanceNumber=number)


def sop_uids(sequence: dict) -> list[str]:
    return [item[SOP_INSTANCE]["Value"][0] for item in sequence["Value"]]


def test_stored_instances_are_referenced_and_can_be_found_and_retrieved(client):
    sent = [instance(1), instance(2)]
    response = post(client, multipart(*sent))
    assert response.status_code == 200
    assert response.content_type == "application/dicom+json"
    assert sop_uids(response.json[REFERENCED]) == [f"{STUDY}.1.1", f"{STUDY}.1.2"]
    url = response.json[REFERENCED]["Value"][0][RETRIEVE_URL]["Value"][0]
    assert url == f"http://localhost/dicom-web/studies/{STUDY}/series/{STUDY}.1/instances/{STUDY}.1.1"
    found = client.get(f"/dicom-web/studies/{STUDY}/instances").json
    assert len(found) == 2
    retrieved = client.get(url.removeprefix("http://localhost"), headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert sent[0] in retrieved.data


def test_storing_the_same_instance_again_is_a_success(client):
    assert post(client, multipart(instance(1))).status_code == 200
    again = post(client, multipart(instance(1)))
    assert again.status_code == 200
    assert sop_uids(again.json[REFERENCED]) == [f"{STUDY}.1.1"]


def test_a_bad_part_fails_alone_with_its_reason_and_a_warning(client):
    response = post(client, multipart(instance(1), b"not DICOM at all"))
    assert response.status_code == 202
    assert "1 of 2" in response.headers["Warning"]
    assert sop_uids(response.json[REFERENCED]) == [f"{STUDY}.1.1"]
    (failure,) = response.json[FAILED]["Value"]
    assert failure[FAILURE_REASON]["Value"] == [0xC000]


def test_nothing_stored_is_409(client):
    response = post(client, multipart(b"garbage", b"more garbage"))
    assert response.status_code == 409
    assert len(response.json[FAILED]["Value"]) == 2


def test_an_instance_of_another_study_than_the_path_is_refused_and_not_stored(client):
    response = post(client, multipart(instance(1, OTHER_STUDY), instance(2)),
                    path=f"/dicom-web/studies/{STUDY}")
    assert response.status_code == 202
    assert response.json[RETRIEVE_URL]["Value"] == [f"http://localhost/dicom-web/studies/{STUDY}"]
    (failure,) = response.json[FAILED]["Value"]
    assert failure[FAILURE_REASON]["Value"] == [0xA901]
    assert failure[SOP_INSTANCE]["Value"] == [f"{OTHER_STUDY}.1.1"]
    assert client.get(f"/dicom-web/studies?StudyInstanceUID={OTHER_STUDY}").status_code == 204


def test_a_sample_study_goes_in_whole(client):
    files = [path.read_bytes() for path in sorted(SAMPLES.rglob("*.dcm"))]
    response = post(client, multipart(*files))
    assert response.status_code == 200
    assert len(response.json[REFERENCED]["Value"]) == len(files)
    names = {pydicom.dcmread(BytesIO(data), stop_before_pixels=True).StudyInstanceUID
             for data in files}
    assert len(client.get("/dicom-web/studies").json) == len(names)


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"x", {"content_type": "application/dicom"}, 415),
        (b"x", {"content_type": 'multipart/related; type="application/dicom+json"; boundary=b'},
         415),
        (b"x", {"content_type": 'multipart/related; type="application/dicom"'}, 400),
        (b"no boundary in here", {}, 400),
        (f"--{BOUNDARY}\r\n\r\nstarted but never closed".encode(), {}, 400),
    ],
    ids=["not-multipart", "json-parts", "no-boundary", "no-part", "cut-off"],
)
def test_malformed_requests_get_a_reason_and_the_service_keeps_serving(client, body, headers,
                                                                        status):
    response = post(client, body, **headers)
    assert response.status_code == status
    assert response.json["error"]
    assert post(client, multipart(instance(1))).status_code == 200


def test_a_body_cut_off_keeps_the_instances_before_the_break(client):
    body = multipart(instance(1))[: -len(f"--{BOUNDARY}--\r\n")] + b"--" + BOUNDARY.encode() \
        + b"\r\n\r\nhalf an instan"
    response = post(client, body)
    assert response.status_code == 400
    assert "1 instance(s) before it were stored" in response.json["error"]
    assert len(client.get(f"/dicom-web/studies/{STUDY}/instances").json) == 1


def test_a_body_over_the_limit_is_413(services):
    settings = services.settings.with_overrides(stow_max_bytes=1000)
    client = signed_in(create_app(settings, services))
    response = post(client, multipart(instance(1)))
    assert response.status_code == 413


def test_a_hostile_study_uid_in_the_path_is_400(client):
    response = post(client, multipart(instance(1)), path="/dicom-web/studies/1.2.x")
    assert response.status_code == 400
    assert "not a valid UID" in response.json["error"]
