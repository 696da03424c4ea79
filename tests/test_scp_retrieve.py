"""C-MOVE and C-GET against real DCMTK peers (movescu, getscu, storescp), on each backend pair.

The archive holds the sample studies and pydicom test files in several transfer syntaxes. A
DCMTK ``storescp`` is the move destination, named in the ``modalities`` setting; statuses,
counts and the Failed SOP Instance UID List are read from ``movescu -d``'s dump of the final
C-MOVE response.
"""

from __future__ import annotations

import re
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from factories import make_instance
from pacs.dicomfile import dataset_offset
from pacs.ingest import Origin
from pacs.scp.server import DicomReceiver
from peers import LOOPBACK, free_port, stop_process, wait_for_port

pytestmark = pytest.mark.dcmtk

SAMPLE_DICOM = Path(__file__).resolve().parent.parent / "sample_dicom"
#: pydicom test files, one per transfer syntax, each its own SOP instance.
CORPUS = {
    "CT_small.dcm": ExplicitVRLittleEndian,
    "SC_rgb_jpeg_dcmd.dcm": ImplicitVRLittleEndian,
    "ExplVR_BigEnd.dcm": ExplicitVRBigEndian,
    "image_dfl.dcm": DeflatedExplicitVRLittleEndian,
    "GDCMJ2K_TextGBR.dcm": JPEG2000Lossless,
    "693_J2KI.dcm": JPEG2000,
    "SC_rgb_rle.dcm": RLELossless,
    "SC_jpeg_no_color_transform.dcm": JPEGBaseline8Bit,
    "MR_small_jpeg_ls_lossless.dcm": JPEGLSLossless,
}
CT_STUDY = SAMPLE_DICOM / "ct-chest"
MR_STUDY = SAMPLE_DICOM / "mr-brain"


# -- the archive and its peers ----------------------------------------------------------------


def _header(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True)


def _pixels(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path).pixel_array


def uids_in(folder: Path) -> set[str]:
    """The SOP Instance UIDs of the files in ``folder`` and below."""
    return {str(_header(path).SOPInstanceUID) for path in folder.rglob("*") if path.is_file()}


def files_by_uid(folder: Path) -> dict[str, Path]:
    return {str(_header(path).SOPInstanceUID): path for path in folder.rglob("*")
            if path.is_file()}


@dataclass
class Archive:
    """What the test archive holds: each file archived, by SOP Instance UID."""

    files: dict[str, Path]

    def study_uid(self, path: Path) -> str:
        return str(_header(path).StudyInstanceUID)


@pytest.fixture
def archive(services) -> Archive:
    paths = sorted(SAMPLE_DICOM.rglob("*.dcm"))
    paths += [Path(get_testdata_file(name)) for name in CORPUS]
    files = {}
    for path in paths:
        result = services.ingest(path.read_bytes(), Origin("import", "test", str(path)))
        assert result.ok, (path, result)
        files[str(result.sop_instance_uid)] = path
    return Archive(files)


@dataclass
class StoreSCP:
    """A DCMTK storescp on loopback writing what it receives into ``folder``."""

    aet: str
    port: int
    folder: Path


@pytest.fixture
def start_storescp(dcmtk, tmp_path) -> Iterator[Callable[..., StoreSCP]]:
    """Start ``storescp`` with extra options (``+xa`` accepts every transfer syntax; without
    it, only the uncompressed ones)."""
    processes = []

    def start(*options: str, aet: str = "STORESCP") -> StoreSCP:
        port = free_port()
        folder = tmp_path / f"received-{aet}-{port}"
        folder.mkdir()
        processes.append(subprocess.Popen(
            [dcmtk.storescp, *options, "-aet", aet, "-od", str(folder), str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={"TCP_NODELAY": "1"},  # DCMTK's own sockets, as in the benchmarks
        ))
        wait_for_port(LOOPBACK, port)
        return StoreSCP(aet, port, folder)

    yield start
    for process in processes:
        stop_process(process)


@pytest.fixture
def start_pacs(services) -> Iterator[Callable[..., DicomReceiver]]:
    """Start the archive's DICOM receiver knowing the given move destinations."""
    receivers = []

    def start(*destinations: StoreSCP | tuple[str, int], access: str = "") -> DicomReceiver:
        entries = [
            f"{d.aet}={LOOPBACK}:{d.port}" if isinstance(d, StoreSCP)
            else f"{d[0]}={LOOPBACK}:{d[1]}"
            for d in destinations
        ]
        settings = services.settings.with_overrides(
            dicom_host=LOOPBACK, dicom_port=free_port(), modalities=",".join(entries),
            access=access,
        )
        receiver = DicomReceiver(settings, services)
        receiver.start()
        receivers.append(receiver)
        return receiver

    yield start
    for receiver in receivers:
        receiver.stop(grace=5)


@dataclass
class Outcome:
    """The final response of a C-MOVE or C-GET, as DCMTK's SCU printed it."""

    returncode: int
    status: int
    completed: int
    failed: int
    warning: int
    failed_uids: list[str]
    comment: str
    output: str


def _final_response(output: str, message: str, returncode: int) -> Outcome:
    blocks = output.split(f"Message Type                  : {message}")
    assert len(blocks) > 1, output
    final = blocks[-1]

    def field(name: str) -> int:
        found = re.search(rf"{name} Suboperations\s*: (\d+)", final)
        return int(found.group(1)) if found else 0

    status = re.search(r"DIMSE Status\s*: 0x([0-9a-fA-F]{4})", final)
    assert status, output
    failed = re.search(r"\(0008,0058\) UI \[([^\]]*)\]", final)
    comment = re.search(r"\(0000,0902\) LO \[([^\]]*)\]", final)
    return Outcome(
        returncode,
        int(status.group(1), 16),
        field("Completed"),
        field("Failed"),
        field("Warning"),
        failed.group(1).split("\\") if failed else [],
        comment.group(1) if comment else "",
        output,
    )


def movescu(dcmtk, port: int, keys: dict[str, str], *, destination: str = "STORESCP",
            model: str = "-S", extra: tuple[str, ...] = ()) -> Outcome:
    """Run DCMTK's movescu against the archive; ``-S`` Study Root, ``-P`` Patient Root."""
    arguments = [dcmtk.movescu, "-d", model, "-aet", "MOVESCU", "-aec", "PACS",
                 "-aem", destination, *extra]
    for keyword, value in keys.items():
        arguments += ["-k", f"{keyword}={value}"]
    result = subprocess.run([*arguments, LOOPBACK, str(port)], capture_output=True, text=True,
                            timeout=300, env={"TCP_NODELAY": "1"})
    return _final_response(result.stdout + result.stderr, "C-MOVE RSP", result.returncode)


def getscu(dcmtk, port: int, keys: dict[str, str], folder: Path) -> Outcome:
    """Run DCMTK's getscu (Study Root) against the archive, writing into ``folder``."""
    arguments = [dcmtk.getscu, "-d", "-S", "-aet", "GETSCU", "-aec", "PACS",
                 "-od", str(folder)]
    for keyword, value in keys.items():
        arguments += ["-k", f"{keyword}={value}"]
    result = subprocess.run([*arguments, LOOPBACK, str(port)], capture_output=True, text=True,
                            timeout=300, env={"TCP_NODELAY": "1"})
    return _final_response(result.stdout + result.stderr, "C-GET RSP", result.returncode)


def study_keys(*study_uids: str) -> dict[str, str]:
    return {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "\\".join(study_uids)}


def stored_dataset(services, sop_instance_uid: str) -> bytes:
    stored = services.index.find_instance(sop_instance_uid)
    with services.store.open(stored.object_key) as stream:
        data = stream.read()
    return data[dataset_offset(data):]


# -- C-MOVE, levels and models ----------------------------------------------------------------


def test_move_of_a_study_sends_each_of_its_instances(dcmtk, archive, start_storescp,
                                                    start_pacs):
    storescp = start_storescp("+xa")
    pacs = start_pacs(storescp)
    outcome = movescu(dcmtk, pacs.port, study_keys(archive.study_uid(CT_STUDY / "2/0001.dcm")))
    assert (outcome.status, outcome.completed, outcome.failed) == (0x0000, 24, 0)
    assert uids_in(storescp.folder) == uids_in(CT_STUDY)


def test_move_of_a_series_sends_only_that_series(dcmtk, archive, start_storescp, start_pacs):
    storescp = start_storescp("+xa")
    pacs = start_pacs(storescp)
    header = _header(MR_STUDY / "3/0001.dcm")
    outcome = movescu(dcmtk, pacs.port, {
        "QueryRetrieveLevel": "SERIES", "StudyInstanceUID": header.StudyInstanceUID,
        "SeriesInstanceUID": header.SeriesInstanceUID,
    })
    assert (outcome.status, outcome.completed) == (0x0000, 8)
    assert uids_in(storescp.folder) == uids_in(MR_STUDY)


def test_move_of_a_list_of_images_sends_exactly_those(dcmtk, archive, start_storescp,
                                                      start_pacs):
    storescp = start_storescp("+xa")
    pacs = start_pacs(storescp)
    first, second = _header(CT_STUDY / "2/0003.dcm"), _header(CT_STUDY / "2/0017.dcm")
    outcome = movescu(dcmtk, pacs.port, {
        "QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": first.StudyInstanceUID,
        "SeriesInstanceUID": first.SeriesInstanceUID,
        "SOPInstanceUID": f"{first.SOPInstanceUID}\\{second.SOPInstanceUID}",
    })
    assert (outcome.status, outcome.completed) == (0x0000, 2)
    assert uids_in(storescp.folder) == {first.SOPInstanceUID, second.SOPInstanceUID}


def test_move_of_a_list_of_studies_sends_every_listed_study(dcmtk, archive, start_storescp,
                                                            start_pacs):
    storescp = start_storescp("+xa")
    pacs = start_pacs(storescp)
    studies = [archive.study_uid(CT_STUDY / "2/0001.dcm"),
               archive.study_uid(MR_STUDY / "3/0001.dcm")]
    outcome = movescu(dcmtk, pacs.port, study_keys(*studies))
    assert (outcome.status, outcome.completed) == (0x0000, 32)
    assert uids_in(storescp.folder) == uids_in(CT_STUDY) | uids_in(MR_STUDY)


def test_patient_root_move_of_a_patient_sends_all_their_studies(dcmtk, services,
                                                                start_storescp, start_pacs):
    def instance(patient_id: str, number: int) -> bytes:
        study_uid = f"1.2.826.0.1.3680043.8.498.{number}"
        return make_instance(PatientID=patient_id, StudyInstanceUID=study_uid,
                             SeriesInstanceUID=f"{study_uid}.1")

    mine = [instance("BN0001", 11), instance("BN0001", 12)]
    other = instance("BN0002", 13)
    for data in [*mine, other]:
        assert services.ingest(data, Origin("import", "test")).ok
    storescp = start_storescp("+xa")
    pacs = start_pacs(storescp)
    outcome = movescu(dcmtk, pacs.port, {"QueryRetrieveLevel": "PATIENT", "PatientID": "BN0001"},
                      model="-P")
    assert (outcome.status, outcome.completed) == (0x0000, 2)
    assert uids_in(storescp.folder) == {str(pydicom.dcmread(BytesIO(d)).SOPInstanceUID)
                                        for d in mine}


def test_patient_root_move_of_a_study_sends_the_study(dcmtk, archive, start_storescp,
                                                      start_pacs):
    storescp = start_storescp("+xa")
    pacs = start_pacs(storescp)
    header = _header(MR_STUDY / "3/0001.dcm")
    outcome = movescu(dcmtk, pacs.port, {
        "QueryRetrieveLevel": "STUDY", "PatientID": header.PatientID,
        "StudyInstanceUID": header.StudyInstanceUID,
    }, model="-P")
    assert (outcome.status, outcome.completed) == (0x0000, 8)
    assert uids_in(storescp.folder) == uids_in(MR_STUDY)


def test_move_of_an_unknown_study_succeeds_with_nothing_to_send(dcmtk, archive,
                                                                start_storescp, start_pacs):
    storescp = start_storescp("+xa")
    pacs = start_pacs(storescp)
    outcome = movescu(dcmtk, pacs.port, study_keys("1.2.826.0.1.3680043.8.498.999"))
    assert (outcome.status, outcome.completed, outcome.failed) == (0x0000, 0, 0)
    assert uids_in(storescp.folder) == set()


# -- what arrives ------------------------------------------------------------------------------


def test_moved_datasets_are_the_stored_bytes_in_every_transfer_syntax(
    dcmtk, services, archive, start_storescp, start_pacs
):
    storescp = start_storescp("+xa", "--bit-preserving")
    pacs = start_pacs(storescp)
    studies = sorted({archive.study_uid(path) for path in archive.files.values()})
    outcome = movescu(dcmtk, pacs.port, study_keys(*studies))
    assert (outcome.status, outcome.completed) == (0x0000, len(archive.files))
    received = files_by_uid(storescp.folder)
    assert set(received) == set(archive.files)
    for uid, path in received.items():
        data = path.read_bytes()
        stored = stored_dataset(services, uid)
        if len(stored) % 2:  # a deflated data set travels with its pad byte (PS3.5 A.5)
            stored += b"\x00"
        assert data[dataset_offset(data):] == stored, archive.files[uid]
        assert _header(path).file_meta.TransferSyntaxUID == CORPUS.get(
            archive.files[uid].name, ExplicitVRLittleEndian)


def test_compressed_instances_arrive_decompressed_where_only_uncompressed_is_accepted(
    dcmtk, archive, start_storescp, start_pacs
):
    storescp = start_storescp()  # without +xa: uncompressed transfer syntaxes only
    pacs = start_pacs(storescp)
    compressed = [get_testdata_file(name) for name in ("GDCMJ2K_TextGBR.dcm", "SC_rgb_rle.dcm")]
    outcome = movescu(dcmtk, pacs.port, study_keys(*(archive.study_uid(Path(p))
                                                     for p in compressed)))
    assert (outcome.status, outcome.completed) == (0x0000, 2)
    received = files_by_uid(storescp.folder)
    for original in map(Path, compressed):
        arrived = received[str(_header(original).SOPInstanceUID)]
        assert not _header(arrived).file_meta.TransferSyntaxUID.is_compressed
        assert (_pixels(arrived) == _pixels(original)).all()


def test_move_to_the_caller_itself_delivers_to_its_own_storage_scp(dcmtk, archive, tmp_path,
                                                                   start_pacs):
    port = free_port()
    pacs = start_pacs(("MOVESCU", port))
    folder = tmp_path / "movescu"
    folder.mkdir()
    header = _header(MR_STUDY / "3/0001.dcm")
    outcome = movescu(dcmtk, pacs.port, study_keys(header.StudyInstanceUID),
                      destination="MOVESCU", extra=("+P", str(port), "-od", str(folder)))
    assert (outcome.status, outcome.completed) == (0x0000, 8)
    received = files_by_uid(folder)
    assert set(received) == uids_in(MR_STUDY)
    for uid, path in received.items():
        assert _pixels(path).tobytes() == _pixels(archive.files[uid]).tobytes()


# -- C-GET --------------------------------------------------------------------------------------


def test_getscu_retrieves_a_study_into_a_folder(dcmtk, archive, tmp_path, start_pacs):
    pacs = start_pacs()
    folder = tmp_path / "getscu"
    folder.mkdir()
    outcome = getscu(dcmtk, pacs.port, study_keys(archive.study_uid(CT_STUDY / "2/0001.dcm")),
                     folder)
    assert (outcome.status, outcome.completed, outcome.failed) == (0x0000, 24, 0)
    received = files_by_uid(folder)
    assert set(received) == uids_in(CT_STUDY)
    for uid, path in received.items():
        assert pydicom.dcmread(path).PixelData == pydicom.dcmread(archive.files[uid]).PixelData


def test_getscu_gets_a_compressed_instance_decompressed_when_it_takes_only_uncompressed(
    dcmtk, archive, tmp_path, start_pacs
):
    pacs = start_pacs()
    folder = tmp_path / "getscu"
    folder.mkdir()
    original = Path(get_testdata_file("GDCMJ2K_TextGBR.dcm"))
    outcome = getscu(dcmtk, pacs.port, study_keys(archive.study_uid(original)), folder)
    assert (outcome.status, outcome.completed) == (0x0000, 1)
    (arrived,) = files_by_uid(folder).values()
    assert not _header(arrived).file_meta.TransferSyntaxUID.is_compressed
    assert (_pixels(arrived) == _pixels(original)).all()


# -- refusals and failures -------------------------------------------------------------------------


def test_move_to_an_ae_not_in_modalities_is_refused_with_a801(dcmtk, archive, start_storescp,
                                                              start_pacs):
    storescp = start_storescp("+xa")
    pacs = start_pacs(storescp)
    outcome = movescu(dcmtk, pacs.port, study_keys(archive.study_uid(CT_STUDY / "2/0001.dcm")),
                      destination="NOWHERE")
    assert outcome.status == 0xA801
    assert uids_in(storescp.folder) == set()


def test_an_instance_missing_from_the_object_store_fails_alone_and_is_listed(
    dcmtk, services, archive, start_storescp, start_pacs
):
    storescp = start_storescp("+xa")
    pacs = start_pacs(storescp)
    missing = _header(CT_STUDY / "2/0007.dcm").SOPInstanceUID
    services.store.delete(services.index.find_instance(missing).object_key)
    outcome = movescu(dcmtk, pacs.port, study_keys(archive.study_uid(CT_STUDY / "2/0001.dcm")))
    assert (outcome.status, outcome.completed, outcome.failed) == (0xB000, 23, 1)
    assert outcome.failed_uids == [missing]
    assert uids_in(storescp.folder) == uids_in(CT_STUDY) - {missing}


@pytest.mark.parametrize(
    ("model", "keys", "status", "words"),
    [
        ("-S", {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "1.2.3"}, 0xA900,
         "needs StudyInstanceUID"),
        ("-S", {"QueryRetrieveLevel": "STUDY"}, 0xA900, "needs StudyInstanceUID"),
        ("-S", {"QueryRetrieveLevel": "PATIENT", "PatientID": "LC24001873"}, 0xA900,
         "has no PATIENT level"),
        ("-P", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.3"}, 0xA900,
         "needs PatientID"),
        ("-S", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.x"}, 0xC000,
         "not a valid UID"),
    ],
)
def test_a_malformed_identifier_is_refused_with_the_reason(
    dcmtk, archive, start_storescp, start_pacs, model, keys, status, words
):
    storescp = start_storescp("+xa")
    pacs = start_pacs(storescp)
    outcome = movescu(dcmtk, pacs.port, keys, model=model)
    assert outcome.status == status
    assert words in outcome.comment
    assert uids_in(storescp.folder) == set()


def test_a_caller_not_allowed_to_retrieve_is_refused_with_0124(dcmtk, archive, start_storescp,
                                                               start_pacs):
    storescp = start_storescp("+xa")
    pacs = start_pacs(storescp, access="MOVESCU:store+query")
    outcome = movescu(dcmtk, pacs.port, study_keys(archive.study_uid(CT_STUDY / "2/0001.dcm")))
    assert outcome.status == 0x0124
    assert "may not retrieve" in outcome.comment
    assert uids_in(storescp.folder) == set()


def test_getscu_not_allowed_to_retrieve_is_refused_with_0124(dcmtk, archive, tmp_path,
                                                             start_pacs):
    pacs = start_pacs(access="GETSCU:query")
    folder = tmp_path / "getscu"
    folder.mkdir()
    outcome = getscu(dcmtk, pacs.port, study_keys(archive.study_uid(CT_STUDY / "2/0001.dcm")),
                     folder)
    assert outcome.status == 0x0124
    assert uids_in(folder) == set()


def test_cancel_stops_the_move_before_the_rest_is_sent(dcmtk, archive, start_storescp,
                                                      start_pacs):
    storescp = start_storescp("+xa")
    pacs = start_pacs(storescp)
    outcome = movescu(dcmtk, pacs.port, study_keys(archive.study_uid(CT_STUDY / "2/0001.dcm")),
                      extra=("--cancel", "1"))
    assert outcome.status == 0xFE00
    assert len(uids_in(storescp.folder)) < 24
