"""Rendered frames and thumbnails (PS3.18 8.3.5-6), as a browser asks for them."""

from __future__ import annotations

import email.parser
import email.policy
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from sqlalchemy import text
from webclient import signed_in

from factories import make_instance
from pacs.config import Settings
from pacs.ingest import IngestStatus, Origin
from pacs.services import open_services
from pacs.web import create_app

SAMPLES = Path(__file__).resolve().parent.parent / "sample_dicom"
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
CT_STUDY = "2.25.123310908792150242595810694833455775405"
ORIGIN = Origin("import", "test")
#: pydicom test files whose pixel data is broken on purpose (or needs GDCM): a reason, not
#: an image.
UNRENDERABLE = {"JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm", "badVR.dcm"}


@pytest.fixture
def client(services):
    for path in sorted(SAMPLES.rglob("*.dcm")):
        assert services.ingest(path.read_bytes(), ORIGIN).ok
    return signed_in(create_app(services.settings, services))


def instance_url(client) -> str:
    (instance,) = client.get(f"/dicom-web/studies/{CT_STUDY}/instances?limit=1").json
    return (f"/dicom-web/studies/{CT_STUDY}/series/{instance['0020000E']['Value'][0]}"
            f"/instances/{instance['00080018']['Value'][0]}")


def image(response) -> np.ndarray:
    assert response.status_code == 200, response.data[:200]
    return np.asarray(Image.open(BytesIO(response.data)))


def test_a_ct_frame_renders_as_a_jpeg_of_its_size(client):
    response = client.get(instance_url(client) + "/rendered")
    assert response.content_type == "image/jpeg"
    assert image(response).shape == (256, 256)


def test_a_lung_window_shows_soft_tissue_brighter_than_a_bone_window(client):
    url = instance_url(client) + "/rendered"
    lung = image(client.get(url + "?window=-600,1500", headers={"Accept": "image/png"}))
    bone = image(client.get(url + "?window=400,1800", headers={"Accept": "image/png"}))
    assert lung.mean() > bone.mean() + 30


def test_monochrome1_is_inverted(services):
    pixels = np.arange(256, dtype=np.uint16).reshape(16, 16) * 16
    kept = {"PixelData": pixels.tobytes(), "WindowCenter": "2048", "WindowWidth": "4096",
            "BitsStored": 12, "HighBit": 11}
    for number, photometric in enumerate(("MONOCHROME2", "MONOCHROME1")):
        uid = f"1.2.826.0.1.3680043.8.498.70{number}"
        data = make_instance(StudyInstanceUID=uid, SeriesInstanceUID=f"{uid}.1",
                             SOPInstanceUID=f"{uid}.1.1", PhotometricInterpretation=photometric,
                             **kept)
        assert services.ingest(data, ORIGIN).ok
    client = signed_in(create_app(services.settings, services))
    rendered = [image(client.get(f"/dicom-web/studies/{uid}/series/{uid}.1/instances/{uid}.1.1"
                                 "/rendered", headers={"Accept": "image/png"})).astype(int)
                for uid in ("1.2.826.0.1.3680043.8.498.700", "1.2.826.0.1.3680043.8.498.701")]
    assert np.array_equal(rendered[0] + rendered[1], np.full((16, 16), 255))


def test_a_native_ct_frame_is_read_alone_without_parsing_the_file(client, monkeypatch):
    url = instance_url(client) + "/rendered"
    expected = client.get(url, headers={"Accept": "image/png"}).data

    def no_parsing(*_args):
        raise AssertionError("the whole file was read and parsed")

    monkeypatch.setattr("pacs.web.rendered.read_dataset", no_parsing)
    assert client.get(url, headers={"Accept": "image/png"}).data == expected


def test_an_instance_indexed_without_its_pixel_offset_renders_the_same(client, services):
    url = instance_url(client) + "/rendered"
    expected = client.get(url, headers={"Accept": "image/png"}).data
    with services.db.writing() as conn:
        conn.execute(text("UPDATE instances SET pixel_data_offset = NULL"))
    assert client.get(url, headers={"Accept": "image/png"}).data == expected


def test_the_viewport_scales_down_keeping_the_aspect(client):
    rendered = image(client.get(instance_url(client) + "/rendered?viewport=64,200&quality=50"))
    assert rendered.shape == (64, 64)


def test_a_thumbnail_is_rendered_once_then_served_from_the_store(client, services):
    before = sum(1 for _ in services.store.list())
    first = client.get(f"/dicom-web/studies/{CT_STUDY}/thumbnail")
    assert image(first).shape == (128, 128)
    after = sum(1 for _ in services.store.list())
    assert after == before + 1  # the thumbnail, kept as a derived object
    second = client.get(f"/dicom-web/studies/{CT_STUDY}/thumbnail")
    assert second.data == first.data
    assert sum(1 for _ in services.store.list()) == after


def test_each_frame_of_a_multi_frame_instance_has_its_own_thumbnail(services):
    result = services.ingest((PYDICOM_FILES / "rtdose.dcm").read_bytes(), ORIGIN)  # 15 frames
    client = signed_in(create_app(services.settings, services))
    url = (f"/dicom-web/studies/{result.study_uid}/series/{result.series_uid}"
           f"/instances/{result.sop_instance_uid}/frames")
    png = {"Accept": "image/png"}
    first, last = (image(client.get(f"{url}/{n}/thumbnail", headers=png)) for n in (1, 15))
    assert not np.array_equal(first, last)
    assert np.array_equal(image(client.get(f"{url}/15/thumbnail", headers=png)), last)
    assert client.get(f"{url}/16/thumbnail").status_code == 404


MULTIPART_JPEG = 'multipart/related; type="image/jpeg"'


def test_a_series_rendered_in_parts_is_each_of_its_instances_as_a_jpeg(client):
    series_url = instance_url(client).rsplit("/instances/", 1)[0]
    instances = client.get(series_url + "/instances").json
    response = client.get(series_url + "/rendered", headers={"Accept": MULTIPART_JPEG})
    assert response.status_code == 200
    assert response.content_type.startswith(MULTIPART_JPEG)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + response.headers["Content-Type"].encode() + b"\r\n\r\n"
        + response.data)
    parts = list(message.iter_parts())
    assert len(parts) == len(instances) > 1
    locations = {part["Content-Location"].rsplit("/instances/", 1)[1] for part in parts}
    assert locations == {f"{item['00080018']['Value'][0]}/rendered" for item in instances}
    for part in parts:
        assert part.get_content_type() == "image/jpeg"
        assert Image.open(BytesIO(part.get_payload(decode=True))).size == (256, 256)


def test_a_study_rendered_for_a_browser_is_its_representative_image(client):
    study_url = f"/dicom-web/studies/{CT_STUDY}"
    png = {"Accept": "image/png"}
    rendered = client.get(study_url + "/rendered?viewport=128,128", headers=png)
    assert rendered.content_type == "image/png"
    assert rendered.data == client.get(study_url + "/thumbnail", headers=png).data


@pytest.mark.parametrize(
    ("path", "accept", "status"),
    [(f"/studies/{CT_STUDY}/rendered?window=a,b", MULTIPART_JPEG, 400),
     (f"/studies/{CT_STUDY}/rendered", 'multipart/related; type="application/dicom"', 406),
     ("/studies/1.2.3.404/rendered", MULTIPART_JPEG, 404),
     ("/studies/1.2..3/series/1.2/rendered", None, 400)],
    ids=["bad-window", "not-an-image-type", "unknown-study", "malformed-uid"],
)
def test_a_refused_study_or_series_rendering_gets_a_reason(client, path, accept, status):
    response = client.get("/dicom-web" + path, headers={"Accept": accept} if accept else {})
    assert response.status_code == status
    assert response.json["error"]


@pytest.mark.parametrize(
    ("query", "accept", "status"),
    [("?window=40", None, 400), ("?window=40,0", None, 400), ("?window=a,b", None, 400),
     ("?window=40,400,CUBIC", None, 400), ("?viewport=0,10", None, 400),
     ("?viewport=99999,10", None, 400), ("?quality=0", None, 400), ("", "image/gif", 406)],
    ids=["one-number", "zero-width", "not-numbers", "unknown-function", "zero-viewport",
         "huge-viewport", "zero-quality", "gif"],
)
def test_nonsense_parameters_get_a_reason_and_the_service_keeps_serving(client, query, accept,
                                                                        status):
    url = instance_url(client) + "/rendered"
    response = client.get(url + query, headers={"Accept": accept} if accept else {})
    assert response.status_code == status
    assert response.json["error"]
    assert client.get(url).status_code == 200


def test_a_frame_that_does_not_exist_is_404(client):
    response = client.get(instance_url(client) + "/frames/2/rendered")
    assert response.status_code == 404


def test_every_pydicom_test_image_is_retrieved_unchanged_and_renders_at_its_size(tmp_path):
    settings = Settings.load(environ={}, data_dir=tmp_path / "var")
    services = open_services(settings)
    client = signed_in(create_app(settings, services))
    rendered = []
    try:
        for path in sorted(PYDICOM_FILES.rglob("*.dcm")):
            data = path.read_bytes()
            result = services.ingest(data, ORIGIN)
            if result.status is not IngestStatus.STORED:
                continue  # not archivable, or a copy of another file's SOP Instance UID
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dataset = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
            url = (f"/dicom-web/studies/{result.study_uid}/series/{result.series_uid}"
                   f"/instances/{result.sop_instance_uid}")
            retrieved = client.get(url, headers={
                "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
            assert data in retrieved.data, path.name  # the stored bytes, unchanged
            if "Rows" not in dataset:
                continue
            response = client.get(url + "/rendered")
            if path.name in UNRENDERABLE:
                assert response.status_code == 422, path.name
                continue
            assert response.status_code == 200, (path.name, response.data[:300])
            size = Image.open(BytesIO(response.data)).size
            assert size == (dataset.Columns, dataset.Rows), path.name
            rendered.append(path.name)
    finally:
        services.close()
    assert len(rendered) >= 25
