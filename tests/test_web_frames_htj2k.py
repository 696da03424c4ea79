"""WADO-RS frames as HTJ2K lossless for viewers that ask for it, whole or in byte ranges,
on each backend pair (pacs/web/frames.py, pacs/renditions.py)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from urllib.parse import quote

import numpy as np
import openjpeg
import pydicom
import pydicom.data
import pytest
from pydicom.uid import JPEG2000
from test_web_wado import CT_STUDY, OCTETS_AS_STORED, ct_instance_path, jpeg2000_path, parts
from webclient import signed_in

from factories import SERIES_UID, STUDY_UID, make_instance
from pacs.ingest import Origin
from pacs.web import create_app

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
SAMPLES = Path(__file__).resolve().parent.parent / "sample_dicom"
RPCL = "1.2.840.10008.1.2.4.202"
OCTETS_HTJ2K = f'multipart/related; type="application/octet-stream"; transfer-syntax={RPCL}'
#: What the viewer asks for (pacs/web/viewer.py): one frame as HTJ2K, else as stored.
VIEWER = f"image/jphc, {OCTETS_AS_STORED}"


@pytest.fixture
def archive(services):
    origin = Origin("import", "test")
    for path in sorted(SAMPLES.rglob("*.dcm")):
        assert services.ingest(path.read_bytes(), origin).ok
    for name in ("JPEG2000.dcm", "SC_rgb_small_odd.dcm"):
        assert services.ingest((PYDICOM_FILES / name).read_bytes(), origin).ok
    assert services.ingest(make_instance(**MULTIFRAME), origin).ok
    return services


#: Ten 24×20 frames of signed 16-bit words (a multi-frame MR, say).
MULTIFRAME_PIXELS = np.random.default_rng(5).integers(
    -3000, 3000, size=(10, 24, 20)).astype(np.int16)
MULTIFRAME = {"SOPInstanceUID": "1.2.826.0.1.3680043.8.498.1.1.77",
              "NumberOfFrames": 10, "Rows": 24, "Columns": 20, "PixelRepresentation": 1,
              "BitsStored": 16, "HighBit": 15, "PixelData": MULTIFRAME_PIXELS.tobytes()}


@pytest.fixture
def client(archive):
    return signed_in(create_app(archive.settings, archive))


def path_of(name: str) -> str:
    stored = pydicom.dcmread(PYDICOM_FILES / name, stop_before_pixels=True)
    return (f"/dicom-web/studies/{stored.StudyInstanceUID}/series/{stored.SeriesInstanceUID}"
            f"/instances/{stored.SOPInstanceUID}")


MULTIFRAME_PATH = (f"/dicom-web/studies/{STUDY_UID}/series/{SERIES_UID}/instances/"
                   f"{MULTIFRAME['SOPInstanceUID']}")


def test_a_native_ct_frame_comes_as_htj2k_that_decodes_to_the_stored_pixels(client):
    path, dataset = ct_instance_path(client)
    response = client.get(path + "/frames/1", headers={"Accept": OCTETS_HTJ2K})
    assert response.status_code == 200
    ((content_type, body),) = parts(response)
    assert content_type == f"application/octet-stream; transfer-syntax={RPCL}"
    assert np.array_equal(openjpeg.decode(body), dataset.pixel_array)
    assert len(body) < len(dataset.PixelData)


def test_every_frame_of_a_multiframe_instance_comes_in_the_order_asked(client):
    response = client.get(MULTIFRAME_PATH + "/frames/3,1,10", headers={"Accept": OCTETS_HTJ2K})
    received = [openjpeg.decode(body) for _, body in parts(response)]
    for frame, number in zip(received, (3, 1, 10), strict=True):
        assert np.array_equal(frame, MULTIFRAME_PIXELS[number - 1])


def test_one_frame_comes_as_a_single_part_in_two_byte_ranges_that_join_up(client):
    """What Cornerstone3D's progressive loading asks: the first bytes, then the rest."""
    path, dataset = ct_instance_path(client)
    first = client.get(path + "/frames/1", headers={"Accept": VIEWER, "Range": "bytes=0-4095"})
    assert first.status_code == 206
    assert first.headers["Content-Type"] == f"image/jphc; transfer-syntax={RPCL}"
    total = int(first.headers["Content-Range"].rsplit("/", 1)[1])
    assert len(first.data) == 4096 < total
    rest = client.get(path + "/frames/1", headers={"Accept": VIEWER, "Range": "bytes=4096-"})
    assert rest.status_code == 206
    assert rest.headers["Content-Range"] == f"bytes 4096-{total - 1}/{total}"
    whole = client.get(path + "/frames/1", headers={"Accept": VIEWER})
    assert whole.status_code == 200
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert first.data + rest.data == whole.data
    assert np.array_equal(openjpeg.decode(whole.data), dataset.pixel_array)


def test_a_range_past_the_frame_is_416(client):
    path, _ = ct_instance_path(client)
    response = client.get(path + "/frames/1",
                          headers={"Accept": VIEWER, "Range": "bytes=99999999-"})
    assert response.status_code == 416


def test_the_accept_query_parameter_wins_over_the_header(client):
    """PS3.18 8.3.3.1: how a viewer that cannot set the header (Cornerstone sends
    ``transfer-syntax=*``) asks for HTJ2K."""
    path, dataset = ct_instance_path(client)
    response = client.get(path + f"/frames/1?accept={quote(VIEWER)}",
                          headers={"Accept": OCTETS_AS_STORED})
    assert response.headers["Content-Type"] == f"image/jphc; transfer-syntax={RPCL}"
    assert np.array_equal(openjpeg.decode(response.data), dataset.pixel_array)


def test_a_compressed_instance_falls_to_the_next_media_range_as_stored(client):
    response = client.get(jpeg2000_path(client) + "/frames/1", headers={"Accept": VIEWER})
    ((content_type, _),) = parts(response)
    assert content_type == f"application/octet-stream; transfer-syntax={JPEG2000}"


def test_a_colour_instance_falls_to_the_next_media_range_as_stored(client):
    response = client.get(path_of("SC_rgb_small_odd.dcm") + "/frames/1",
                          headers={"Accept": VIEWER})
    ((content_type, body),) = parts(response)
    assert content_type.endswith("transfer-syntax=1.2.840.10008.1.2.1")
    stored = pydicom.dcmread(PYDICOM_FILES / "SC_rgb_small_odd.dcm")
    assert body == stored.PixelData[:stored.Rows * stored.Columns * 3]  # without the pad byte


@pytest.mark.parametrize(("path", "frames", "accept"), [
    ("jpeg2000", "1", OCTETS_HTJ2K),
    ("colour", "1", "image/jphc"),
    ("multiframe", "1,2", "image/jphc"),
], ids=["compressed-stored", "colour", "single-part-of-two-frames"])
def test_htj2k_alone_that_cannot_be_made_is_406_with_a_reason(client, path, frames, accept):
    url = {"jpeg2000": jpeg2000_path(client), "colour": path_of("SC_rgb_small_odd.dcm"),
           "multiframe": MULTIFRAME_PATH}[path]
    response = client.get(url + f"/frames/{frames}", headers={"Accept": accept})
    assert response.status_code == 406
    assert "HTJ2K" in response.json["error"]


def test_a_second_request_for_a_frame_is_the_same_bytes(client):
    path, _ = ct_instance_path(client)
    first = client.get(path + "/frames/1", headers={"Accept": "image/jphc"})
    again = client.get(path + "/frames/1", headers={"Accept": "image/jphc"})
    assert first.data == again.data


def test_the_ct_study_from_the_sample_data_is_all_served_as_htj2k(client):
    """Every slice of the sample CT (signed 16-bit) decodes to its stored pixels."""
    series = client.get(f"/dicom-web/studies/{CT_STUDY}/instances").json
    for instance in series:
        sop = instance["00080018"]["Value"][0]
        url = (f"/dicom-web/studies/{CT_STUDY}/series/{instance['0020000E']['Value'][0]}"
               f"/instances/{sop}")
        response = client.get(url + "/frames/1", headers={"Accept": "image/jphc"})
        stored = client.get(url, headers={"Accept": 'multipart/related; '
                                          'type="application/dicom"; transfer-syntax=*'})
        ((_, file),) = parts(stored)
        assert np.array_equal(openjpeg.decode(response.data),
                              pydicom.dcmread(BytesIO(file)).pixel_array)
