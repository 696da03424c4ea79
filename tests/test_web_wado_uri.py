"""WADO-URI (PS3.18 9): one instance by query parameters, as DICOM or as an image."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian
from webclient import signed_in

from pacs.ingest import Origin
from pacs.web import create_app

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
JPEG2000_FILE = PYDICOM_FILES / "JPEG2000.dcm"


@pytest.fixture
def client(services):
    assert services.ingest(JPEG2000_FILE.read_bytes(), Origin("import", "test")).ok
    return signed_in(create_app(services.settings, services))


def wado(client, **params: str):
    stored = pydicom.dcmread(JPEG2000_FILE, stop_before_pixels=True)
    query = {"requestType": "WADO", "studyUID": stored.StudyInstanceUID,
             "seriesUID": stored.SeriesInstanceUID, "objectUID": stored.SOPInstanceUID}
    query.update(params)
    return client.get("/wado", query_string={k: v for k, v in query.items() if v is not None})


def test_the_default_is_a_jpeg_of_the_first_frame(client):
    response = wado(client)
    assert response.status_code == 200
    assert response.content_type == "image/jpeg"
    assert Image.open(BytesIO(response.data)).size == (256, 1024)


def test_application_dicom_is_the_instance_as_stored(client):
    response = wado(client, contentType="application/dicom")
    assert response.content_type == "application/dicom"
    assert response.data == JPEG2000_FILE.read_bytes()


def test_a_transfer_syntax_asked_for_decompresses(client):
    response = wado(client, contentType="application/dicom", transferSyntax=ExplicitVRLittleEndian)
    received = pydicom.dcmread(BytesIO(response.data))
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(received.pixel_array, pydicom.dcmread(JPEG2000_FILE).pixel_array)


def test_window_size_and_format_parameters(client):
    response = wado(client, contentType="image/png", windowCenter="500", windowWidth="1000",
                    rows="256", columns="64")
    assert response.content_type == "image/png"
    assert Image.open(BytesIO(response.data)).size == (64, 256)


@pytest.mark.parametrize(
    ("params", "status"),
    [({"requestType": "RETRIEVE"}, 400), ({"objectUID": None}, 400),
     ({"objectUID": "1.2.3.4"}, 404), ({"objectUID": "1.2.x"}, 400),
     ({"contentType": "video/mp4"}, 406), ({"windowCenter": "40"}, 400),
     ({"rows": "0"}, 400), ({"frameNumber": "2"}, 404),
     ({"contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2.4.50"}, 406)],
    ids=["request-type", "missing-uid", "unknown-instance", "hostile-uid", "content-type",
         "half-a-window", "zero-rows", "no-such-frame", "compressed-syntax"],
)
def test_bad_requests_get_a_status_and_a_reason(client, params, status):
    response = wado(client, **params)
    assert response.status_code == status
    assert response.json["error"]
