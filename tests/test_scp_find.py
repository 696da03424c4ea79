"""C-FIND SCP against DCMTK ``findscu``: every matching type, both models, every level.

The archive is filled with the sample studies (Vietnamese names in UTF-8) and a few generated
ones; findscu's responses are extracted to files (``-X``) and read back with pydicom, so the
values checked are the bytes the workstation received.
"""

from __future__ import annotations

import re
import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE

from factories import make_instance
from pacs.ingest import Origin
from pacs.scp.find import CANCELLED, PENDING, SUCCESS, handle_find
from pacs.scp.server import DicomReceiver
from peers import free_port

SAMPLES = Path(__file__).resolve().parent.parent / "sample_dicom"
CT_PATIENT_ID = "LC24001873"
CT_STUDY_UID = "2.25.123310908792150242595810694833455775405"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def _fill(services) -> None:
    origin = Origin("import", "test")
    for path in sorted(SAMPLES.rglob("*.dcm")):
        assert services.ingest(path.read_bytes(), origin).ok
    for number, (name, date) in enumerate(
        [("Phạm^Thu Hà", "20250102"), ("Pham^Thu Ha", "20250103"), ("PHAM^QUANG", "20240611")]
    ):
        study = f"1.2.826.0.1.3680043.8.498.9{number}"
        data = make_instance(
            PatientName=name, PatientID=f"GEN{number}", StudyDate=date, StudyInstanceUID=study,
            SeriesInstanceUID=f"{study}.1", AccessionNumber=f"GEN-ACC-{number}", Modality="MR",
        )
        assert services.ingest(data, origin).ok


def _start(services, **overrides):
    settings = services.settings.with_overrides(
        dicom_host="127.0.0.1", dicom_port=free_port(), **overrides
    )
    server = DicomReceiver(settings, services)
    server.start()
    return server


@pytest.fixture
def archive(services):
    _fill(services)
    server = _start(services)
    yield server
    server.stop(grace=5)


class FindResult:
    """What findscu got back: the matches (read from its extracted files) and its log."""

    def __init__(self, matches: list[pydicom.Dataset], log: str) -> None:
        self.matches = matches
        self.log = log

    def values(self, keyword: str) -> list[str]:
        return sorted(str(match.get(keyword, "")) for match in self.matches)

    @property
    def final_status(self) -> str:
        found = re.findall(r"Received Final Find Response \(([^)]*)\)", self.log)
        return found[-1] if found else ""


def findscu(dcmtk, server, tmp_path, *keys: str, model: str = "-S",
            options: tuple[str, ...] = ()) -> FindResult:
    out = tmp_path / f"find{len(list(tmp_path.glob('find*')))}"
    out.mkdir()
    args = [dcmtk.findscu, "-v", model, *options, "-aet", "WS1", "-aec", server.settings.aet,
            "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    args += ["127.0.0.1", str(server.port)]
    done = subprocess.run(args, capture_output=True, timeout=60, env={"TCP_NODELAY": "1"})
    log = (done.stdout + done.stderr).decode("utf-8", "replace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matches = [pydicom.dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]
    return FindResult(matches, log)


def study_query(*keys: str) -> list[str]:
    return ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", *keys]


def test_accentless_name_finds_the_vietnamese_patient_with_fuzzy_matching(
        dcmtk, archive, tmp_path):
    result = findscu(dcmtk, archive, tmp_path, *study_query("PatientName=nguyen*"))
    assert result.final_status == "Success"
    assert result.values("PatientName") == ["Nguyễn^Văn An"]
    assert result.matches[0].SpecificCharacterSet == "ISO_IR 192"


def test_without_fuzzy_matching_names_match_as_sent(dcmtk, services, tmp_path):
    _fill(services)
    server = _start(services, find_fuzzy=False)
    try:
        plain = findscu(dcmtk, server, tmp_path, *study_query("PatientName=nguyen*"))
        exact = findscu(dcmtk, server, tmp_path, "SpecificCharacterSet=ISO_IR 192",
                        *study_query("PatientName=Nguyễn*"))
    finally:
        server.stop(grace=5)
    assert plain.matches == []
    assert exact.values("PatientName") == ["Nguyễn^Văn An"]


def test_fuzzy_matching_ignores_accents_on_both_sides(dcmtk, archive, tmp_path):
    result = findscu(dcmtk, archive, tmp_path, *study_query("PatientName=PHAM^THU*"))
    assert result.values("PatientName") == ["Pham^Thu Ha", "Phạm^Thu Hà"]


def test_single_value_match_on_patient_id(dcmtk, archive, tmp_path):
    result = findscu(dcmtk, archive, tmp_path, *study_query(f"PatientID={CT_PATIENT_ID}"))
    assert result.values("StudyInstanceUID") == [CT_STUDY_UID]


def test_wildcard_match_on_accession_number(dcmtk, archive, tmp_path):
    result = findscu(dcmtk, archive, tmp_path, *study_query("AccessionNumber=GEN-ACC-?"))
    assert len(result.matches) == 3


def test_date_range_match(dcmtk, archive, tmp_path):
    result = findscu(dcmtk, archive, tmp_path, *study_query("StudyDate=20250101-20251231"))
    assert result.values("PatientName") == ["Pham^Thu Ha", "Phạm^Thu Hà"]


def test_open_ended_date_range_match(dcmtk, archive, tmp_path):
    result = findscu(dcmtk, archive, tmp_path, *study_query("StudyDate=-20241231"))
    assert result.values("PatientName") == ["PHAM^QUANG"]


def test_uid_list_match(dcmtk, archive, tmp_path):
    uids = "1.2.826.0.1.3680043.8.498.90\\1.2.826.0.1.3680043.8.498.92"
    result = findscu(dcmtk, archive, tmp_path, *study_query(f"StudyInstanceUID={uids}"))
    assert result.values("StudyInstanceUID") == uids.split("\\")


def test_modalities_in_study_match_and_counts_are_returned(dcmtk, archive, tmp_path):
    result = findscu(dcmtk, archive, tmp_path, *study_query(
        "ModalitiesInStudy=CT", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"))
    (match,) = result.matches
    assert match.ModalitiesInStudy == "CT"
    assert (int(match.NumberOfStudyRelatedSeries), int(match.NumberOfStudyRelatedInstances)) \
        == (1, 24)


def test_empty_return_keys_are_filled(dcmtk, archive, tmp_path):
    result = findscu(dcmtk, archive, tmp_path, *study_query(
        f"PatientID={CT_PATIENT_ID}", "StudyDescription", "AccessionNumber",
        "PatientBirthDate"))
    (match,) = result.matches
    assert match.StudyDescription == "CT ngực không cản quang"
    assert match.AccessionNumber == "CT2603150021"
    assert match.PatientBirthDate == "19580412"
    assert match.QueryRetrieveLevel == "STUDY"
    assert match.RetrieveAETitle == archive.settings.aet


def test_series_level_needs_and_uses_the_study_uid(dcmtk, archive, tmp_path):
    result = findscu(dcmtk, archive, tmp_path, "QueryRetrieveLevel=SERIES",
                     f"StudyInstanceUID={CT_STUDY_UID}", "SeriesInstanceUID", "Modality",
                     "NumberOfSeriesRelatedInstances")
    (match,) = result.matches
    assert (match.Modality, int(match.NumberOfSeriesRelatedInstances)) == ("CT", 24)


def test_image_level_lists_the_instances_of_a_series(dcmtk, archive, tmp_path):
    series = findscu(dcmtk, archive, tmp_path, "QueryRetrieveLevel=SERIES",
                     f"StudyInstanceUID={CT_STUDY_UID}", "SeriesInstanceUID")
    series_uid = series.matches[0].SeriesInstanceUID
    result = findscu(dcmtk, archive, tmp_path, "QueryRetrieveLevel=IMAGE",
                     f"StudyInstanceUID={CT_STUDY_UID}", f"SeriesInstanceUID={series_uid}",
                     "SOPInstanceUID", "InstanceNumber")
    assert len(result.matches) == 24


def test_patient_root_patient_level(dcmtk, archive, tmp_path):
    result = findscu(dcmtk, archive, tmp_path, "QueryRetrieveLevel=PATIENT",
                     "PatientName=tran*", "PatientID", "NumberOfPatientRelatedStudies",
                     model="-P")
    (match,) = result.matches
    assert (match.PatientName, match.PatientID) == ("Trần^Thị Bích", "LC25004512")
    assert int(match.NumberOfPatientRelatedStudies) == 1


def test_patient_root_study_level_without_patient_id_is_refused(dcmtk, archive, tmp_path):
    result = findscu(dcmtk, archive, tmp_path, *study_query(), model="-P")
    assert result.matches == []
    assert "DoesNotMatchSOPClass" in result.final_status  # 0xA900


def test_invalid_level_is_refused(dcmtk, archive, tmp_path):
    result = findscu(dcmtk, archive, tmp_path, "QueryRetrieveLevel=FOO", "PatientName")
    assert "DoesNotMatchSOPClass" in result.final_status  # 0xA900


def test_malformed_range_is_refused_and_the_server_keeps_serving(dcmtk, archive, tmp_path):
    bad = findscu(dcmtk, archive, tmp_path, *study_query("StudyDate=2026-01-01-2026"))
    assert bad.final_status.startswith("Failed")
    good = findscu(dcmtk, archive, tmp_path, *study_query(f"PatientID={CT_PATIENT_ID}"))
    assert len(good.matches) == 1


def test_maximum_results_are_sent_then_a_clear_status(dcmtk, services, tmp_path):
    _fill(services)
    server = _start(services, find_max_results=2)
    try:
        result = findscu(dcmtk, server, tmp_path, *study_query())
    finally:
        server.stop(grace=5)
    assert len(result.matches) == 2
    assert "OutOfResources" in result.final_status or "0xa700" in result.log.lower()


def test_many_matches_reach_a_workstation_with_a_small_maximum_pdu(dcmtk, services, tmp_path):
    # Responses share runs of PDUs (pacs.scp.dimse.PDataBatch); each PDU must still fit the
    # 4 KiB findscu accepts here and hold one response only.
    _fill(services)
    origin = Origin("import", "test")
    for number in range(150):
        study = f"1.2.826.0.1.3680043.8.498.77.{number}"
        data = make_instance(
            PatientName=f"Lê^Thị Mai {number}", PatientID=f"MANY{number}",
            StudyInstanceUID=study, SeriesInstanceUID=f"{study}.1", Modality="US",
            StudyDescription="Siêu âm ổ bụng",
        )
        assert services.ingest(data, origin).ok
    server = _start(services)
    try:
        result = findscu(dcmtk, server, tmp_path, *study_query("PatientID=MANY*",
                                                                 "StudyDescription"),
                         options=("--max-pdu", "4096"))
    finally:
        server.stop(grace=5)
    assert result.final_status == "Success"
    assert len(result.matches) == 150
    assert result.values("PatientName") == sorted(f"Lê^Thị Mai {n}" for n in range(150))
    assert {match.StudyDescription for match in result.matches} == {"Siêu âm ổ bụng"}


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian,
                                    ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian],
                         ids=["implicit", "explicit", "big-endian", "deflated"])
def test_matches_arrive_intact_in_each_transfer_syntax(archive, syntax):
    # Little endian identifiers are encoded from the index rows, the others by pydicom.
    # (findscu proposes several syntaxes at once, and the archive picks implicit VR.)
    scu = AE(ae_title="WS1")
    scu.add_requested_context(STUDY_ROOT_FIND, [syntax])
    assoc = scu.associate("127.0.0.1", archive.port, ae_title=archive.settings.aet)
    assert assoc.is_established
    try:
        identifier = pydicom.Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.PatientName = "nguyen*"
        for keyword in ("StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"):
            setattr(identifier, keyword, "")
        responses = list(assoc.send_c_find(identifier, STUDY_ROOT_FIND))
    finally:
        assoc.release()
    statuses = [status.Status for status, _ in responses]
    assert statuses == [PENDING, SUCCESS]
    match = responses[0][1]
    assert match.SpecificCharacterSet == "ISO_IR 192"
    assert str(match.PatientName) == "Nguyễn^Văn An"
    assert match.NumberOfStudyRelatedInstances >= 1
    assert match.ModalitiesInStudy


class _CancellingEvent:
    """An EVT_C_FIND event whose requester sends C-CANCEL after ``after`` matches."""

    def __init__(self, identifier: pydicom.Dataset, after: int) -> None:
        requestor = SimpleNamespace(ae_title="WS1", address="127.0.0.1", port=40000)
        self.assoc = SimpleNamespace(requestor=requestor, ae=SimpleNamespace(ae_title="PACS"))
        self.identifier = identifier
        self.request = SimpleNamespace(AffectedSOPClassUID=STUDY_ROOT_FIND)
        self.context = SimpleNamespace(transfer_syntax=ImplicitVRLittleEndian)
        self._checks = 0
        self._after = after

    @property
    def is_cancelled(self) -> bool:
        self._checks += 1
        return self._checks > self._after


def test_c_cancel_ends_the_matches_with_status_cancel(services):
    _fill(services)
    identifier = pydicom.Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    responses = list(handle_find(_CancellingEvent(identifier, after=2), services,
                                 services.settings.access_policy, fuzzy=True,
                                 max_results=1000))
    assert [status for status, _ in responses] == [PENDING, PENDING, CANCELLED]
    assert all(isinstance(identifier, bytes) for _, identifier in responses[:2])
