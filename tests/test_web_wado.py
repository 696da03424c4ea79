"""WADO-RS (PS3.18 10.4): instances as multipart DICOM, and metadata, on each backend pair."""

from __future__ import annotations

import email.parser
import email.policy
import gzip
import json
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pydicom.encaps
import pytest
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian
from sqlalchemy import text
from webclient import signed_in

from pacs.ingest import Origin
from pacs.web import create_app

SAMPLES = Path(__file__).resolve().parent.parent / "sample_dicom"
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
CT_STUDY = "2.25.123310908792150242595810694833455775405"
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture
def archive(services):
    origin = Origin("import", "test")
    for path in sorted(SAMPLES.rglob("*.dcm")):
        assert services.ingest(path.read_bytes(), origin).ok
    assert services.ingest((PYDICOM_FILES / "JPEG2000.dcm").read_bytes(), origin).ok
    return services


@pytest.fixture
def client(archive):
    return signed_in(create_app(archive.settings, archive))


def parts(response) -> list[tuple[str, bytes]]:
    """(media type; transfer-syntax, body) of each part of a multipart/related response."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + response.headers["Content-Type"].encode() + b"\r\n\r\n"
        + response.data)
    return [(f"{part.get_content_type()}; transfer-syntax={part.get_param('transfer-syntax')}",
             part.get_payload(decode=True))
            for part in message.iter_parts()]


def sample_files() -> dict[str, bytes]:
    """The CT sample's files by SOP Instance UID."""
    files = {}
    for path in SAMPLES.rglob("*.dcm"):
        data = path.read_bytes()
        dataset = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        if dataset.StudyInstanceUID == CT_STUDY:
            files[dataset.SOPInstanceUID] = data
    return files


def test_a_study_as_stored_is_every_instance_byte_for_byte(client):
    response = client.get(f"/dicom-web/studies/{CT_STUDY}", headers={"Accept": AS_STORED})
    assert response.status_code == 200
    assert response.content_type.startswith('multipart/related; type="application/dicom"')
    received = {pydicom.dcmread(BytesIO(body), stop_before_pixels=True).SOPInstanceUID: body
                for _, body in parts(response)}
    assert received == sample_files()


def test_each_part_names_its_transfer_syntax(client):
    response = client.get(f"/dicom-web/studies/{CT_STUDY}", headers={"Accept": AS_STORED})
    content_type, body = parts(response)[0]
    syntax = pydicom.dcmread(BytesIO(body)).file_meta.TransferSyntaxUID
    assert content_type == f"application/dicom; transfer-syntax={syntax}"


def jpeg2000_path(client) -> str:
    """The WADO-RS path of pydicom's JPEG 2000 test file in the archive."""
    stored = pydicom.dcmread(PYDICOM_FILES / "JPEG2000.dcm", stop_before_pixels=True)
    (match,) = client.get(f"/dicom-web/instances?SOPInstanceUID={stored.SOPInstanceUID}").json
    return (f"/dicom-web/studies/{match['0020000D']['Value'][0]}/series/"
            f"{match['0020000E']['Value'][0]}/instances/{stored.SOPInstanceUID}")


def test_without_a_transfer_syntax_a_compressed_instance_comes_decompressed(client):
    path = jpeg2000_path(client)
    response = client.get(path, headers={"Accept": 'multipart/related; type="application/dicom"'})
    ((content_type, body),) = parts(response)
    assert content_type == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    received = pydicom.dcmread(BytesIO(body))
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    original = pydicom.dcmread(PYDICOM_FILES / "JPEG2000.dcm")
    assert np.array_equal(received.pixel_array, original.pixel_array)


def test_as_stored_the_compressed_instance_keeps_its_syntax(client):
    ((content_type, body),) = parts(client.get(jpeg2000_path(client),
                                               headers={"Accept": AS_STORED}))
    assert content_type.endswith(f"transfer-syntax={JPEG2000}")
    assert body == (PYDICOM_FILES / "JPEG2000.dcm").read_bytes()


@pytest.mark.parametrize(
    ("url", "accept", "status"),
    [
        (f"/dicom-web/studies/{CT_STUDY}",
         'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
         406),
        (f"/dicom-web/studies/{CT_STUDY}", "application/pdf", 406),
        ("/dicom-web/studies/1.2.3.4.5", AS_STORED, 404),
        ("/dicom-web/studies/1.2.x/series/1.2", AS_STORED, 400),
        ("/dicom-web/studies/1.2.3.4.5/metadata", "application/dicom+json", 404),
    ],
    ids=["compressed-syntax", "other-media-type", "unknown-study", "hostile-uid",
         "unknown-metadata"],
)
def test_refused_retrievals_get_a_status_and_a_reason(client, url, accept, status):
    response = client.get(url, headers={"Accept": accept})
    assert response.status_code == status
    assert response.json["error"]


def test_series_metadata_is_every_instance_with_absolute_bulk_data_uris(client):
    series = client.get(f"/dicom-web/studies/{CT_STUDY}/series").json[0]["0020000E"]["Value"][0]
    response = client.get(f"/dicom-web/studies/{CT_STUDY}/series/{series}/metadata")
    assert response.content_type == "application/dicom+json"
    instances = response.json
    assert len(instances) == 24
    first = instances[0]
    assert first["00280010"] == {"vr": "US", "Value": [256]}  # Rows of the CT sample
    sop = first["00080018"]["Value"][0]
    assert first["7FE00010"]["BulkDataURI"] == (
        f"http://localhost/dicom-web/studies/{CT_STUDY}/series/{series}/instances/{sop}"
        "/bulkdata/7FE00010")


def test_metadata_is_gzipped_when_accepted_and_a_revisit_is_a_304(client):
    url = f"/dicom-web/studies/{CT_STUDY}/metadata"
    plain = client.get(url)
    zipped = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(zipped.data)) == plain.json
    assert zipped.headers["ETag"] == plain.headers["ETag"]
    again = client.get(url, headers={"If-None-Match": plain.headers["ETag"]})
    assert again.status_code == 304
    assert again.data == b""


def test_metadata_of_one_instance(client):
    path = jpeg2000_path(client)
    (instance,) = client.get(path + "/metadata").json
    assert instance["00280010"]["Value"] == [1024]  # Rows
    assert instance["7FE00010"]["BulkDataURI"].endswith(path + "/bulkdata/7FE00010")


# -- frames -------------------------------------------------------------------------------------

OCTETS_AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
OCTETS = 'multipart/related; type="application/octet-stream"'


def ct_instance_path(client) -> tuple[str, pydicom.Dataset]:
    (instance,) = client.get(f"/dicom-web/studies/{CT_STUDY}/instances?limit=1").json
    sop = instance["00080018"]["Value"][0]
    data = sample_files()[sop]
    return (f"/dicom-web/studies/{CT_STUDY}/series/{instance['0020000E']['Value'][0]}"
            f"/instances/{sop}"), pydicom.dcmread(BytesIO(data))


def test_a_native_frame_is_the_pixel_data_as_stored(client):
    path, dataset = ct_instance_path(client)
    response = client.get(path + "/frames/1", headers={"Accept": OCTETS_AS_STORED})
    assert response.status_code == 200
    ((content_type, body),) = parts(response)
    assert content_type.startswith("application/octet-stream")
    assert body == dataset.PixelData


def test_a_native_frame_is_gzipped_for_a_client_that_accepts_it(client):
    path, dataset = ct_instance_path(client)
    response = client.get(path + "/frames/1", headers={"Accept": OCTETS_AS_STORED,
                                                       "Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["Vary"]
    response.data = gzip.decompress(response.data)
    ((_, body),) = parts(response)
    assert body == dataset.PixelData


def test_a_compressed_frame_is_sent_as_it_is_even_to_a_gzip_client(client):
    response = client.get(jpeg2000_path(client) + "/frames/1",
                          headers={"Accept": OCTETS_AS_STORED, "Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in response.headers


def test_a_compressed_frame_as_stored_is_the_encapsulated_frame(client):
    response = client.get(jpeg2000_path(client) + "/frames/1",
                          headers={"Accept": OCTETS_AS_STORED})
    ((content_type, body),) = parts(response)
    assert content_type.endswith(f"transfer-syntax={JPEG2000}")
    stored = pydicom.dcmread(PYDICOM_FILES / "JPEG2000.dcm")
    (frame,) = pydicom.encaps.generate_frames(stored.PixelData, number_of_frames=1)
    assert body == frame


def test_an_uncompressed_frame_of_a_compressed_instance_is_decoded(client):
    response = client.get(jpeg2000_path(client) + "/frames/1", headers={"Accept": OCTETS})
    ((content_type, body),) = parts(response)
    assert content_type.endswith(f"transfer-syntax={ExplicitVRLittleEndian}")
    original = pydicom.dcmread(PYDICOM_FILES / "JPEG2000.dcm").pixel_array
    assert np.array_equal(np.frombuffer(body, dtype=original.dtype).reshape(original.shape),
                          original)


FRAMED = ["rtdose.dcm", "SC_rgb_rle_2frame.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm"]


@pytest.mark.parametrize("name", FRAMED)
def test_frames_as_stored_are_the_same_read_alone_or_from_the_parsed_file(services, name):
    data = (PYDICOM_FILES / name).read_bytes()
    result = services.ingest(data, Origin("import", "test"))
    assert result.ok
    client = signed_in(create_app(services.settings, services))
    stored = pydicom.dcmread(BytesIO(data))
    count = int(stored.get("NumberOfFrames", 1))
    url = (f"/dicom-web/studies/{result.study_uid}/series/{result.series_uid}"
           f"/instances/{result.sop_instance_uid}/frames/{','.join(map(str, range(count, 0, -1)))}")
    read_alone = parts(client.get(url, headers={"Accept": OCTETS_AS_STORED}))
    with services.db.writing() as conn:  # as if indexed before offsets were recorded
        conn.execute(text("UPDATE instances SET pixel_data_offset = NULL"))
    parsed = parts(client.get(url, headers={"Accept": OCTETS_AS_STORED}))
    assert read_alone == parsed
    assert len(parsed) == count


@pytest.mark.parametrize(
    ("frames", "accept", "status"),
    [("2", OCTETS_AS_STORED, 404), ("0", OCTETS_AS_STORED, 404), ("1,x", OCTETS_AS_STORED, 400),
     ("1", 'multipart/related; type="application/octet-stream"; '
           "transfer-syntax=1.2.840.10008.1.2.4.50", 406)],
    ids=["past-the-last", "zero", "not-a-number", "compressed-syntax"],
)
def test_bad_frame_requests_get_a_status_and_a_reason(client, frames, accept, status):
    path, _ = ct_instance_path(client)
    response = client.get(path + f"/frames/{frames}", headers={"Accept": accept})
    assert response.status_code == status
    assert response.json["error"]


# -- bulk data ----------------------------------------------------------------------------------


def bulk_data_uris(value: object) -> list[str]:
    if isinstance(value, dict):
        return [uri for key, item in value.items()
                for uri in ([item] if key == "BulkDataURI" else bulk_data_uris(item))]
    if isinstance(value, list):
        return [uri for item in value for uri in bulk_data_uris(item)]
    return []


@pytest.mark.parametrize(
    ("name", "path", "tag_path"),
    [("examples_overlay.dcm", "60003000", [0x60003000]),
     ("waveform_ecg.dcm", "54000100/2/54001010", [0x54000100, 1, 0x54001010])],
    ids=["overlay", "inside-a-sequence"],
)
def test_every_bulk_data_uri_of_the_metadata_serves_the_stored_value(services, name, path,
                                                                    tag_path):
    data = (PYDICOM_FILES / name).read_bytes()
    assert services.ingest(data, Origin("import", "test")).ok
    client = signed_in(create_app(services.settings, services))
    stored = pydicom.dcmread(BytesIO(data))
    base = (f"/dicom-web/studies/{stored.StudyInstanceUID}/series/{stored.SeriesInstanceUID}"
            f"/instances/{stored.SOPInstanceUID}")
    uris = bulk_data_uris(client.get(base + "/metadata").json)
    assert f"http://localhost{base}/bulkdata/{path}" in uris
    for uri in uris:
        assert client.get(uri.removeprefix("http://localhost"),
                          headers={"Accept": OCTETS_AS_STORED}).status_code == 200
    # tag_path: a tag, or a sequence tag, a 0-based item index and a tag in that item.
    value = (stored[tag_path[0]].value[tag_path[1]][tag_path[2]].value if len(tag_path) == 3
             else stored[tag_path[0]].value)
    ((_, body),) = parts(client.get(f"{base}/bulkdata/{path}"))
    assert body == value


def test_a_malformed_or_unknown_bulk_data_path_is_refused(client):
    path, _ = ct_instance_path(client)
    assert client.get(path + "/bulkdata/../../etc").status_code in (400, 404)
    assert client.get(path + "/bulkdata/7FE0001").status_code == 400
    assert client.get(path + "/bulkdata/00100010/1/00100020").status_code == 404


def test_a_big_endian_frame_comes_as_little_endian_pixels(services):
    path = PYDICOM_FILES / "MR_small_bigendian.dcm"
    result = services.ingest(path.read_bytes(), Origin("import", "test"))
    client = signed_in(create_app(services.settings, services))
    response = client.get(f"/dicom-web/studies/{result.study_uid}/series/{result.series_uid}"
                          f"/instances/{result.sop_instance_uid}/frames/1",
                          headers={"Accept": OCTETS_AS_STORED})
    ((content_type, body),) = parts(response)
    assert content_type.endswith(f"transfer-syntax={ExplicitVRLittleEndian}")
    original = pydicom.dcmread(path).pixel_array
    assert np.array_equal(np.frombuffer(body, dtype="<i2").reshape(original.shape), original)


def test_single_part_bulk_data_honours_byte_ranges(services):
    data = (PYDICOM_FILES / "examples_overlay.dcm").read_bytes()
    assert services.ingest(data, Origin("import", "test")).ok
    client = signed_in(create_app(services.settings, services))
    stored = pydicom.dcmread(BytesIO(data))
    url = (f"/dicom-web/studies/{stored.StudyInstanceUID}/series/{stored.SeriesInstanceUID}"
           f"/instances/{stored.SOPInstanceUID}/bulkdata/60003000")
    overlay = stored[0x60003000].value
    whole = client.get(url, headers={"Accept": "application/octet-stream"})
    assert whole.content_type == "application/octet-stream"
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.data == overlay
    part = client.get(url, headers={"Accept": "application/octet-stream", "Range": "bytes=10-99"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 10-99/{len(overlay)}"
    assert part.data == overlay[10:100]
    beyond = client.get(url, headers={"Accept": "application/octet-stream",
                                      "Range": f"bytes={len(overlay) + 10}-"})
    assert beyond.status_code == 416
