"""QIDO-RS (PS3.18 10.6) and the health checks, on each backend pair.

Most tests use Flask's test client on :func:`pacs.web.create_app`; the last ones start
``pacs serve`` (gunicorn) and search it with ``dicomweb-client``, as another archive or a
viewer would.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from dicomweb_client.api import DICOMwebClient
from webclient import cli_token, signed_in

from pacs.ingest import Origin
from pacs.web import create_app
from peers import free_port, stop_process, wait_for_port

SAMPLES = Path(__file__).resolve().parent.parent / "sample_dicom"
CT_STUDY = "2.25.123310908792150242595810694833455775405"
CT_PATIENT_ID = "LC24001873"
PATIENT_NAME, PATIENT_ID, STUDY_UID, SERIES_UID = "00100010", "00100020", "0020000D", "0020000E"
RETRIEVE_URL = "00081190"


def _fill(services) -> None:
    origin = Origin("import", "test")
    for path in sorted(SAMPLES.rglob("*.dcm")):
        assert services.ingest(path.read_bytes(), origin).ok


@pytest.fixture
def client(services):
    _fill(services)
    return signed_in(create_app(services.settings, services))


def values(matches: list[dict], tag: str) -> list:
    return [match[tag]["Value"][0] for match in matches if "Value" in match[tag]]


def test_study_search_finds_a_vietnamese_name_without_accents_when_fuzzy(client):
    response = client.get("/dicom-web/studies?PatientName=nguyen*&fuzzymatching=true")
    assert response.status_code == 200
    assert response.content_type == "application/dicom+json"
    (study,) = response.json
    assert study[PATIENT_NAME] == {"vr": "PN", "Value": [{"Alphabetic": "Nguyễn^Văn An"}]}
    assert study[STUDY_UID]["Value"] == [CT_STUDY]


def test_without_fuzzy_matching_the_name_must_match_as_stored(client):
    assert client.get("/dicom-web/studies?PatientName=nguyen*").status_code == 204
    response = client.get("/dicom-web/studies?PatientName=Nguyễn*")
    assert values(response.json, STUDY_UID) == [CT_STUDY]


def test_keys_can_be_given_as_tags(client):
    response = client.get(f"/dicom-web/studies?00100020={CT_PATIENT_ID}")
    assert values(response.json, PATIENT_ID) == [CT_PATIENT_ID]


def test_no_match_is_204_without_a_body(client):
    response = client.get("/dicom-web/studies?PatientID=NOBODY")
    assert response.status_code == 204
    assert response.data == b""


def test_study_answers_carry_what_a_study_list_reads(client):
    (study,) = client.get(f"/dicom-web/studies?StudyInstanceUID={CT_STUDY}").json
    assert study["00080061"] == {"vr": "CS", "Value": ["CT"]}  # ModalitiesInStudy
    assert study["00201208"]["Value"] == [24]  # NumberOfStudyRelatedInstances, a number
    assert study[RETRIEVE_URL]["Value"] == [f"http://localhost/dicom-web/studies/{CT_STUDY}"]
    assert list(study) == sorted(study)  # attributes in tag order


def test_includefield_adds_attributes_and_all_adds_every_one_held(client):
    (study,) = client.get(f"/dicom-web/studies?StudyInstanceUID={CT_STUDY}"
                          "&includefield=InstitutionName").json
    assert "00080080" in study
    (everything,) = client.get(f"/dicom-web/studies?StudyInstanceUID={CT_STUDY}"
                               "&includefield=all").json
    assert "00081032" in everything  # ProcedureCodeSequence, a sequence key
    assert len(everything) > len(study)


def test_limit_and_offset_page_through_with_a_warning_while_more_remain(client):
    first = client.get("/dicom-web/studies?limit=2")
    assert len(first.json) == 2
    assert any("additional results" in warning for warning in first.headers.getlist("Warning"))
    rest = client.get("/dicom-web/studies?limit=2&offset=2")
    assert not rest.headers.getlist("Warning")
    every = values(client.get("/dicom-web/studies").json, STUDY_UID)
    assert values(first.json, STUDY_UID) + values(rest.json, STUDY_UID) == every


def test_the_server_maximum_caps_a_search_with_a_warning(services):
    _fill(services)
    settings = services.settings.with_overrides(find_max_results=1)
    response = signed_in(create_app(settings, services)).get("/dicom-web/studies")
    assert len(response.json) == 1
    assert response.headers.getlist("Warning")


def test_a_key_the_index_cannot_match_is_named_in_a_warning(client):
    response = client.get("/dicom-web/studies?PatientMotherBirthName=X*")
    assert response.status_code == 200  # not matched, so it does not restrict the search
    (warning,) = response.headers.getlist("Warning")
    assert warning.startswith("299 ") and "PatientMotherBirthName" in warning


def test_series_of_a_study_and_instances_of_a_series(client):
    series = client.get(f"/dicom-web/studies/{CT_STUDY}/series").json
    (series_uid,) = values(series, SERIES_UID)
    assert series[0][RETRIEVE_URL]["Value"][0].endswith(f"/studies/{CT_STUDY}/series/{series_uid}")
    instances = client.get(f"/dicom-web/studies/{CT_STUDY}/series/{series_uid}/instances").json
    assert len(instances) == 24
    assert all(instance[RETRIEVE_URL]["Value"][0].startswith(
        f"http://localhost/dicom-web/studies/{CT_STUDY}/series/{series_uid}/instances/")
        for instance in instances)
    assert len(client.get(f"/dicom-web/studies/{CT_STUDY}/instances").json) == 24


def test_searches_across_studies_at_series_and_instance_level(client):
    modalities = values(client.get("/dicom-web/series").json, "00080060")
    assert sorted(modalities) == ["CT", "DX", "MR"]
    assert len(client.get("/dicom-web/instances?Modality=MR").json) == 8


def test_retrieve_urls_start_with_the_public_url(services):
    _fill(services)
    settings = services.settings.with_overrides(public_url="https://pacs.benhvien.vn/")
    (study,) = signed_in(create_app(settings, services)).get(
        f"/dicom-web/studies?StudyInstanceUID={CT_STUDY}").json
    assert study[RETRIEVE_URL]["Value"] == [
        f"https://pacs.benhvien.vn/dicom-web/studies/{CT_STUDY}"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("/dicom-web/studies/1.2.abc/series", "not a valid UID"),
        ("/dicom-web/studies/" + "1." * 40 + "1/series", "64"),
        ("/dicom-web/studies?StudyDate=2026-13", "StudyDate"),
        ("/dicom-web/studies?limit=-1", "limit"),
        ("/dicom-web/studies?fuzzymatching=maybe", "fuzzymatching"),
        ("/dicom-web/studies?NotAnAttribute=1", "NotAnAttribute"),
        ("/dicom-web/studies?SOPInstanceUID=1.2.3", "SOPInstanceUID"),
    ],
    ids=["hostile-uid", "long-uid", "bad-date", "negative-limit", "bad-fuzzy", "unknown-key",
         "key-below-level"],
)
def test_bad_parameters_get_400_with_a_reason_and_the_service_keeps_serving(client, url,
                                                                              reason):
    response = client.get(url)
    assert response.status_code == 400
    assert reason in response.json["error"]
    assert client.get("/dicom-web/studies").status_code == 200


def test_an_unsupported_accept_gets_406(client):
    response = client.get("/dicom-web/studies",
                          headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert response.status_code == 406
    accepted = client.get("/dicom-web/studies", headers={"Accept": "application/json"})
    assert accepted.status_code == 200


def test_health_checks(client):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json == {"status": "ready", "audit": "ok"}


def test_readyz_says_503_when_the_index_does_not_answer(services, monkeypatch):
    app = create_app(services.settings, services)

    def broken():
        raise RuntimeError("database is gone")

    monkeypatch.setattr(services.db, "reading", broken)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "index" in response.json["error"]


# -- pacs serve (gunicorn) with a real DICOMweb client ---------------------------------------


@pytest.fixture
def serving(tmp_path):
    data_dir = tmp_path / "var"
    assert subprocess.run([sys.executable, "-m", "pacs.cli", "import", "--data-dir",
                           str(data_dir), str(SAMPLES)], capture_output=True).returncode in (0, 1)
    token = cli_token(data_dir)
    http_port = free_port()
    env = {**os.environ, "PACS_DATA_DIR": str(data_dir), "PACS_DICOM_HOST": "127.0.0.1",
           "PACS_DICOM_PORT": str(free_port()), "PACS_HTTP_PORT": str(http_port),
           "PACS_HTTP_WORKERS": "2", "PACS_WORKERS": "1"}
    with (tmp_path / "serve.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "pacs.cli", "serve"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", http_port, timeout=60)
        yield DICOMwebClient(f"http://127.0.0.1:{http_port}/dicom-web",
                             headers={"Authorization": f"Bearer {token}"})
    finally:
        stop_process(process)


def test_dicomweb_client_searches_every_level_of_pacs_serve(serving):
    client = serving
    studies = client.search_for_studies(search_filters={"PatientName": "Nguyễn*"})
    assert values(studies, STUDY_UID) == [CT_STUDY]
    (series,) = client.search_for_series(study_instance_uid=CT_STUDY)
    series_uid = series[SERIES_UID]["Value"][0]
    instances = client.search_for_instances(study_instance_uid=CT_STUDY,
                                            series_instance_uid=series_uid)
    assert len(instances) == 24
    assert len(client.search_for_instances(limit=5)) == 5
    assert client.search_for_studies(search_filters={"PatientID": "NOBODY"}) == []


def test_dicomweb_client_retrieves_a_series_and_its_metadata_from_pacs_serve(serving):
    client = serving
    (series,) = client.search_for_series(study_instance_uid=CT_STUDY)
    series_uid = series[SERIES_UID]["Value"][0]
    retrieved = client.retrieve_series(CT_STUDY, series_uid,
                                       media_types=(("application/dicom", "*"),))
    sent = {}
    for path in SAMPLES.rglob("*.dcm"):
        dataset = pydicom.dcmread(path)
        if dataset.SeriesInstanceUID == series_uid:
            sent[dataset.SOPInstanceUID] = dataset.PixelData
    assert {dataset.SOPInstanceUID: dataset.PixelData for dataset in retrieved} == sent
    metadata = client.retrieve_series_metadata(CT_STUDY, series_uid)
    assert {item["00080018"]["Value"][0] for item in metadata} == set(sent)
    sop = metadata[0]["00080018"]["Value"][0]
    (frame,) = client.retrieve_instance_frames(CT_STUDY, series_uid, sop, frame_numbers=[1],
                                               media_types=(("application/octet-stream", "*"),))
    assert frame == sent[sop]
    (bulk,) = client.retrieve_bulkdata(metadata[0]["7FE00010"]["BulkDataURI"],
                                       media_types=(("application/octet-stream", "*"),))
    assert bulk == sent[sop]


def test_serve_refuses_to_start_when_the_web_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PACS_DATA_DIR": str(tmp_path / "var"),
               "PACS_DICOM_HOST": "127.0.0.1", "PACS_DICOM_PORT": str(free_port()),
               "PACS_HTTP_PORT": str(port)}
        done = subprocess.run([sys.executable, "-m", "pacs.cli", "serve"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "web service (http_port)" in done.stderr + done.stdout


def test_sigterm_stops_the_web_service_with_the_receiver(tmp_path):
    http_port = free_port()
    env = {**os.environ, "PACS_DATA_DIR": str(tmp_path / "var"), "PACS_DICOM_HOST": "127.0.0.1",
           "PACS_DICOM_PORT": str(free_port()), "PACS_HTTP_PORT": str(http_port),
           "PACS_HTTP_WORKERS": "1"}
    with (tmp_path / "serve.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "pacs.cli", "serve"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", http_port, timeout=60)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    with socket.socket() as probe:  # nothing listens any more: no gunicorn left behind
        assert probe.connect_ex(("127.0.0.1", http_port)) != 0


def test_dicomweb_client_stores_an_instance_in_pacs_serve(serving):
    client = serving
    dataset = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm")
    answer = client.store_instances([dataset])
    (stored,) = answer.ReferencedSOPSequence
    assert stored.ReferencedSOPInstanceUID == dataset.SOPInstanceUID
    (found,) = client.search_for_instances(search_filters={
        "SOPInstanceUID": dataset.SOPInstanceUID})
    assert found[STUDY_UID]["Value"] == [dataset.StudyInstanceUID]


def test_a_large_answer_is_gzipped_for_a_client_that_accepts_it(client):
    plain = client.get("/dicom-web/instances")
    zipped = client.get("/dicom-web/instances", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in plain.headers
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(zipped.data)) == plain.json
    assert len(zipped.data) < len(plain.data) / 3


def test_cors_is_off_unless_origins_are_configured(client):
    response = client.get("/dicom-web/studies", headers={"Origin": "https://viewer.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_configured_origin_gets_cors_headers_and_its_preflight_answered(services):
    _fill(services)
    settings = services.settings.with_overrides(cors_origins="https://viewer.benhvien.vn")
    client = signed_in(create_app(settings, services))
    origin = {"Origin": "https://viewer.benhvien.vn"}
    response = client.get("/dicom-web/studies?limit=1", headers=origin)
    assert response.headers["Access-Control-Allow-Origin"] == "https://viewer.benhvien.vn"
    assert "Warning" in response.headers["Access-Control-Expose-Headers"]
    preflight = client.options("/dicom-web/studies", headers={
        **origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    other = client.get("/dicom-web/studies", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_a_malformed_cors_origin_is_refused_at_start():
    from pacs.config import Settings, SettingsError

    with pytest.raises(SettingsError, match="cors_origins"):
        Settings.load(environ={"PACS_CORS_ORIGINS": "viewer.benhvien.vn/path"})


def test_urls_keep_the_port_when_a_client_sends_a_host_without_it(client):
    # dicomweb-client sends "Host: 127.0.0.1" whatever the port it connected to.
    response = client.get(f"/dicom-web/studies?StudyInstanceUID={CT_STUDY}",
                          base_url="http://127.0.0.1:18080", headers={"Host": "127.0.0.1"})
    (study,) = response.json
    assert study[RETRIEVE_URL]["Value"][0].startswith("http://127.0.0.1:18080/dicom-web/")
    proxied = client.get(f"/dicom-web/studies?StudyInstanceUID={CT_STUDY}",
                         base_url="http://127.0.0.1:8080",
                         headers={"Host": "pacs.benhvien.vn", "X-Forwarded-Host": "pacs"})
    assert proxied.json[0][RETRIEVE_URL]["Value"][0].startswith("http://pacs.benhvien.vn/")
