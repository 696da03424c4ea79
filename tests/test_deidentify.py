"""De-identification for share links (PS3.15 Annex E Basic Profile, Modified Dates, Patient
Characteristics), through both the DICOM JSON and the pydicom walkers."""

from __future__ import annotations

import copy
import datetime
import io
import json
import re
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, UID_dictionary

from pacs.deidentify import Deidentifier, has_burned_in_annotation

SECRET = bytes(range(32))
TEST_FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")
#: Attributes whose values identify the patient, staff or institution (PS3.15 Table E.1-1).
IDENTIFYING = (
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "PatientAddress",
    "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "PerformingPhysicianName",
    "OperatorsName", "NameOfPhysiciansReadingStudy", "AccessionNumber", "StudyID",
    "StudyDescription", "SeriesDescription", "StationName", "DeviceSerialNumber",
)


def _read(name: str) -> Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def _identified() -> Dataset:
    """CT_small with every kind of identifying content the profile must remove."""
    ds = _read("CT_small.dcm")
    ds.PatientName = "Nguyen^Thi Mai"
    ds.PatientID = "MRN-448812"
    ds.PatientBirthDate = "19610314"
    ds.PatientAddress = "12 Rue des Lilas, Lyon"
    ds.InstitutionName = "Clinique Saint-Exupery"
    ds.ReferringPhysicianName = "Moreau^Jean"
    ds.PerformingPhysicianName = "Dubois^Claire"
    ds.OperatorsName = "Tech^Paul"
    ds.AccessionNumber = "ACC20240117"
    ds.StudyDescription = "CT THORAX ONCOLOGY FOLLOWUP"
    ds.SeriesDescription = "AXIAL LUNG 1.25"
    ds.AcquisitionDateTime = "19970430112936.123456+0100"
    block = ds.private_block(0x0009, "ACME RESEARCH", create=True)
    block.add_new(0x01, "LO", "Hidden patient note")
    ds.add_new(0x60000010, "US", 128)  # OverlayRows
    ds.add_new(0x60003000, "OW", b"\x01\x00" * 64)  # OverlayData
    ds.add_new(0x50003000, "OW", b"\x02\x00" * 8)  # CurveData (retired group 50xx)
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = ds.SOPClassUID
    referenced.ReferencedSOPInstanceUID = "1.3.6.1.4.1.5962.1.1.1.1.99.20040119072730.1"
    referenced.ReferringPhysicianName = "Hidden^Inside"
    ds.ReferencedImageSequence = Sequence([referenced])
    return ds


def _original_strings(ds: Dataset) -> list[str]:
    values = [str(ds.get(keyword, "")) for keyword in IDENTIFYING]
    values += ["Hidden patient note", "Hidden^Inside"] if "ReferencedImageSequence" in ds else []
    return [value for value in values if len(value) >= 3]


def _original_uids(ds: Dataset) -> set[str]:
    """Every UID of the dataset (file meta included) that the standard does not define."""
    uids: set[str] = set()

    def walk(dataset: Dataset) -> None:
        for elem in dataset:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.VR == "UI" and elem.value:
                values = elem.value if isinstance(elem.value, list) else [elem.value]
                uids.update(str(v) for v in values if str(v) not in UID_dictionary)

    walk(ds)
    walk(getattr(ds, "file_meta", Dataset()))
    return uids


def _written(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _value(dataset: dict[str, Any], tag: str) -> Any:
    return dataset[tag]["Value"][0]


def _shift(date: str) -> int:
    return (datetime.date.fromisoformat(date[:8]) - datetime.date(1997, 4, 30)).days


@pytest.fixture
def deidentifier() -> Deidentifier:
    return Deidentifier(SECRET)


def test_json_output_contains_no_original_identifying_string(deidentifier: Deidentifier) -> None:
    ds = _identified()
    dump = json.dumps(deidentifier.json_dataset(ds.to_json_dict()))
    for value in _original_strings(ds):
        assert value not in dump


def test_written_file_contains_no_original_identifying_string(deidentifier: Deidentifier) -> None:
    ds = _identified()
    data = _written(deidentifier.dataset(ds))
    for value in _original_strings(ds):
        assert value.encode() not in data


@pytest.mark.parametrize("name", TEST_FILES)
def test_json_output_contains_no_original_uid(deidentifier: Deidentifier, name: str) -> None:
    ds = _read(name)
    dump = json.dumps(deidentifier.json_dataset(ds.to_json_dict()))
    assert _original_uids(ds)
    assert [uid for uid in _original_uids(ds) if uid in dump] == []


@pytest.mark.parametrize("name", TEST_FILES)
def test_written_file_contains_no_original_uid(deidentifier: Deidentifier, name: str) -> None:
    ds = _read(name)
    written = _written(deidentifier.dataset(ds))
    back = pydicom.dcmread(io.BytesIO(written))
    assert back.SOPInstanceUID == deidentifier.uid(ds.SOPInstanceUID)
    assert [uid for uid in _original_uids(ds) if uid.encode() in written] == []


def test_same_secret_gives_same_uids_shift_and_pseudonym() -> None:
    first, second = Deidentifier(SECRET), Deidentifier(bytes(SECRET))
    assert first.uid("1.2.3.4") == second.uid("1.2.3.4")
    assert first.date_shift_days == second.date_shift_days
    assert first.pseudonym() == second.pseudonym()


def test_other_secret_gives_other_uids_shift_and_pseudonym() -> None:
    first, other = Deidentifier(SECRET), Deidentifier(b"\xff" * 32)
    assert first.uid("1.2.3.4") != other.uid("1.2.3.4")
    assert first.date_shift_days != other.date_shift_days
    assert first.pseudonym()[0] != other.pseudonym()[0]
    assert first.pseudonym()[1] != other.pseudonym()[1]


@pytest.mark.parametrize("original", ["1.2.3.4", "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322",
                                      "9" * 64, "0.0"])
def test_uid_is_a_valid_2_25_uid(deidentifier: Deidentifier, original: str) -> None:
    uid = deidentifier.uid(original)
    assert UID(uid).is_valid
    assert len(uid) <= 64
    assert re.fullmatch(r"2\.25\.(0|[1-9]\d*)", uid)
    assert uid != deidentifier.uid(original + "1")


def test_original_uid_inverts_uid(deidentifier: Deidentifier) -> None:
    candidates = ["1.2.3.4", "1.2.3.5", "1.2.3.6"]
    assert deidentifier.original_uid(deidentifier.uid("1.2.3.5"), candidates) == "1.2.3.5"


def test_original_uid_is_none_for_an_unknown_uid(deidentifier: Deidentifier) -> None:
    assert deidentifier.original_uid("2.25.1234", ["1.2.3.4"]) is None
    assert deidentifier.original_uid(Deidentifier(b"\xff" * 32).uid("1.2.3.4"), ["1.2.3.4"]) is None


def test_date_shift_is_between_minus_3650_and_minus_365() -> None:
    shifts = {Deidentifier(bytes([i]) * 32).date_shift_days for i in range(200)}
    assert all(-3650 <= shift <= -365 for shift in shifts)
    assert len(shifts) > 100


@pytest.mark.parametrize("walker", ["json", "dataset"])
def test_dates_are_shifted_by_the_same_number_of_days(deidentifier: Deidentifier,
                                                      walker: str) -> None:
    ds = _read("CT_small.dcm")
    ds.StudyDate = ds.ContentDate = "19970430"
    out = (deidentifier.json_dataset(ds.to_json_dict()) if walker == "json"
           else deidentifier.dataset(ds).to_json_dict())
    shifted = datetime.date(1997, 4, 30) + datetime.timedelta(days=deidentifier.date_shift_days)
    assert _value(out, "00080020") == _value(out, "00080023") == f"{shifted:%Y%m%d}"


def test_datetime_is_shifted_keeping_time_and_offset(deidentifier: Deidentifier) -> None:
    out = deidentifier.json_dataset(_identified().to_json_dict())
    value = _value(out, "0008002A")
    assert value.endswith("112936.123456+0100")
    assert _shift(value) == deidentifier.date_shift_days


@pytest.mark.parametrize("value", ["1997.04.30", "19970231", "1997", "yesterday"])
def test_malformed_date_is_removed(deidentifier: Deidentifier, value: str) -> None:
    dataset = _read("CT_small.dcm").to_json_dict()
    dataset["00080023"] = {"vr": "DA", "Value": [value]}
    assert "00080023" not in deidentifier.json_dataset(dataset)


def test_element_with_an_unexpected_vr_is_removed(deidentifier: Deidentifier) -> None:
    dataset = {"00080020": {"vr": "UN", "InlineBinary": "MTk5NzA0MzA="},
               "00280010": {"vr": "SQ", "Value": [{"00100010": {"vr": "PN"}}]}}
    out = deidentifier.json_dataset(dataset)
    assert "00080020" not in out
    assert "00280010" not in out


def test_uid_or_date_as_bulk_data_loses_its_value(deidentifier: Deidentifier) -> None:
    dataset = {"00080020": {"vr": "DA", "BulkDataURI": "bulkdata/00080020"},
               "0020000D": {"vr": "UI", "InlineBinary": "MS4yLjM="}}
    out = deidentifier.json_dataset(dataset)
    assert out["00080020"] == {"vr": "DA"}
    assert out["0020000D"] == {"vr": "UI"}


def test_nested_object_under_a_kept_tag_is_removed(deidentifier: Deidentifier) -> None:
    dataset = {"00280010": {"vr": "US", "Value": [{"00100010": {"vr": "PN"}}]}}
    assert "00280010" not in deidentifier.json_dataset(dataset)


def test_private_tags_overlays_and_curves_are_removed(deidentifier: Deidentifier) -> None:
    out = deidentifier.dataset(_identified())
    groups = {elem.tag.group for elem in out}
    assert not [group for group in groups if group % 2 == 1]
    assert not [group for group in groups if 0x5000 <= group <= 0x60FF]


def test_pixel_data_is_unchanged(deidentifier: Deidentifier) -> None:
    ds = _read("CT_small.dcm")
    assert deidentifier.dataset(ds).PixelData == ds.PixelData
    json_out = deidentifier.json_dataset(ds.to_json_dict())
    assert json_out["7FE00010"] == ds.to_json_dict()["7FE00010"]


def test_sop_class_and_transfer_syntax_are_kept(deidentifier: Deidentifier) -> None:
    ds = _read("CT_small.dcm")
    out = deidentifier.dataset(ds)
    assert out.SOPClassUID == ds.SOPClassUID
    assert out.file_meta.MediaStorageSOPClassUID == ds.file_meta.MediaStorageSOPClassUID
    assert out.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


def test_instance_uids_are_remapped_consistently(deidentifier: Deidentifier) -> None:
    ds = _read("CT_small.dcm")
    out = deidentifier.dataset(ds)
    assert out.StudyInstanceUID == deidentifier.uid(ds.StudyInstanceUID)
    assert out.SeriesInstanceUID == deidentifier.uid(ds.SeriesInstanceUID)
    assert out.SOPInstanceUID == deidentifier.uid(ds.SOPInstanceUID)
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.FrameOfReferenceUID == deidentifier.uid(ds.FrameOfReferenceUID)


def test_uid_defined_by_the_standard_is_kept(deidentifier: Deidentifier) -> None:
    dataset = {"00200052": {"vr": "UI", "Value": ["1.2.840.10008.1.4.1.1"]}}  # Talairach
    assert deidentifier.json_dataset(dataset)["00200052"]["Value"] == ["1.2.840.10008.1.4.1.1"]


def test_references_in_kept_sequences_are_remapped(deidentifier: Deidentifier) -> None:
    ds = _identified()
    item = deidentifier.dataset(ds).ReferencedImageSequence[0]
    original = ds.ReferencedImageSequence[0]
    assert item.ReferencedSOPInstanceUID == deidentifier.uid(original.ReferencedSOPInstanceUID)
    assert item.ReferencedSOPClassUID == original.ReferencedSOPClassUID
    assert "ReferringPhysicianName" not in item


def test_functional_groups_are_filtered_item_by_item(deidentifier: Deidentifier) -> None:
    frame = Dataset()
    frame.PlanePositionSequence = Sequence([Dataset()])
    frame.PlanePositionSequence[0].ImagePositionPatient = [0, 0, 1.5]
    frame.FrameContentSequence = Sequence([Dataset()])
    frame.FrameContentSequence[0].FrameAcquisitionDateTime = "19970430101500"
    frame.FrameContentSequence[0].FrameComments = "patient coughed"
    ds = Dataset()
    ds.PerFrameFunctionalGroupsSequence = Sequence([frame, Dataset()])
    out = deidentifier.dataset(ds).PerFrameFunctionalGroupsSequence
    assert len(out) == 2
    assert out[0].PlanePositionSequence[0].ImagePositionPatient == [0, 0, 1.5]
    content = out[0].FrameContentSequence[0]
    assert "FrameComments" not in content
    assert _shift(content.FrameAcquisitionDateTime) == deidentifier.date_shift_days


def test_deidentification_flags_are_added(deidentifier: Deidentifier) -> None:
    out = deidentifier.dataset(_read("CT_small.dcm"))
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "Basic Profile" in out.DeidentificationMethod
    codes = [(c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning)
             for c in out.DeidentificationMethodCodeSequence]
    assert codes == [
        ("113100", "DCM", "Basic Application Confidentiality Profile"),
        ("113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option"),
        ("113108", "DCM", "Retain Patient Characteristics Option"),
    ]


def test_study_id_and_accession_number_are_present_and_empty(deidentifier: Deidentifier) -> None:
    out = deidentifier.json_dataset(_identified().to_json_dict())
    assert out["00200010"] == {"vr": "SH"}
    assert out["00080050"] == {"vr": "SH"}


def test_descriptions_are_removed(deidentifier: Deidentifier) -> None:
    out = deidentifier.dataset(_identified())
    assert "StudyDescription" not in out
    assert "SeriesDescription" not in out


def test_patient_characteristics_are_kept(deidentifier: Deidentifier) -> None:
    ds = _read("CT_small.dcm")
    ds.PatientSize = "1.72"
    out = deidentifier.dataset(ds)
    assert (out.PatientSex, out.PatientAge, out.PatientSize, out.PatientWeight) == (
        ds.PatientSex, ds.PatientAge, ds.PatientSize, ds.PatientWeight)
    assert "PatientBirthDate" not in out


def test_patient_name_and_id_are_the_pseudonym(deidentifier: Deidentifier) -> None:
    out = deidentifier.json_dataset(_identified().to_json_dict())
    name, patient_id = deidentifier.pseudonym()
    assert out["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": name}]}
    assert out["00100020"] == {"vr": "LO", "Value": [patient_id]}


def test_pseudonym_has_the_documented_form(deidentifier: Deidentifier) -> None:
    name, patient_id = deidentifier.pseudonym()
    assert re.fullmatch(r"ANONYMOUS\^[0-9A-F]{8}", name)
    assert re.fullmatch(r"ANON-[0-9A-F]{12}", patient_id)


def test_json_output_is_valid_dicom_json(deidentifier: Deidentifier) -> None:
    dataset = {key.lower(): value for key, value in _identified().to_json_dict().items()}

    def check(element_map: dict[str, Any]) -> None:
        for key, element in element_map.items():
            assert re.fullmatch(r"[0-9A-F]{8}", key)
            assert "vr" in element
            if element["vr"] == "SQ":
                for item in element.get("Value", []):
                    check(item)

    out = deidentifier.json_dataset(dataset)
    check(out)
    assert "0020000D" in out


def test_relative_bulk_data_uri_is_kept(deidentifier: Deidentifier) -> None:
    dataset = {"7FE00010": {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}}
    assert deidentifier.json_dataset(dataset)["7FE00010"]["BulkDataURI"] == "bulkdata/7FE00010"


def test_uids_in_an_absolute_bulk_data_uri_are_remapped(deidentifier: Deidentifier) -> None:
    study, sop = "1.2.826.0.1.3680043.2.1125.1", "1.2.826.0.1.3680043.2.1125.3"
    uri = f"http://10.0.0.5:8042/dicomweb/studies/{study}/instances/{sop}/frames/1?sop={sop}"
    dataset = {"7FE00010": {"vr": "OW", "BulkDataURI": uri}}
    out = deidentifier.json_dataset(dataset)["7FE00010"]["BulkDataURI"]
    assert study not in out
    assert sop not in out
    assert out.startswith(f"http://10.0.0.5:8042/dicomweb/studies/{deidentifier.uid(study)}/")


def test_json_input_is_not_modified(deidentifier: Deidentifier) -> None:
    dataset = _identified().to_json_dict()
    before = copy.deepcopy(dataset)
    deidentifier.json_dataset(dataset)
    assert dataset == before


def test_dataset_input_is_not_modified(deidentifier: Deidentifier) -> None:
    ds = _identified()
    before = copy.deepcopy(ds)
    deidentifier.dataset(ds)
    assert ds == before
    assert ds.file_meta == before.file_meta


@pytest.mark.parametrize("enforce_file_format", [True, False])
def test_written_dataset_reads_back(deidentifier: Deidentifier, enforce_file_format: bool) -> None:
    ds = _identified()
    buffer = io.BytesIO()
    deidentifier.dataset(ds).save_as(buffer, enforce_file_format=enforce_file_format)
    back = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    assert back.SOPInstanceUID == deidentifier.uid(ds.SOPInstanceUID)
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.PixelData == ds.PixelData


@pytest.mark.parametrize("name", TEST_FILES)
def test_json_and_dataset_walkers_agree(deidentifier: Deidentifier, name: str) -> None:
    ds = _read(name)
    from_dataset = deidentifier.dataset(ds).to_json_dict()
    from_json = deidentifier.json_dataset(ds.to_json_dict())
    assert sorted(from_dataset) == sorted(from_json)
    assert from_dataset == from_json


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Deidentifier(b"short")


def _instance(modality: str, sop_class: str, burned_in: str | None) -> Dataset:
    ds = Dataset()
    ds.Modality = modality
    ds.SOPClassUID = sop_class
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    return ds


CT = "1.2.840.10008.5.1.4.1.1.2"
US = "1.2.840.10008.5.1.4.1.1.6.1"
SC = "1.2.840.10008.5.1.4.1.1.7"
PDF = "1.2.840.10008.5.1.4.1.1.104.1"


@pytest.mark.parametrize(
    ("modality", "sop_class", "burned_in", "expected"),
    [
        ("CT", CT, "YES", True),  # stated: trusted even for a modality that rarely does
        ("US", US, "NO", False),  # stated: trusted even for ultrasound
        ("US", US, None, True),  # absent on ultrasound: routinely burned in (PS3.15 E.3.1)
        ("CT", CT, None, False),  # absent on CT: pixels come from the scanner
        ("OT", SC, None, True),  # secondary capture: screen grabs, scanned paper
        ("DOC", PDF, None, True),  # encapsulated documents
    ],
)
@pytest.mark.parametrize("form", ["dataset", "json"])
def test_has_burned_in_annotation(modality: str, sop_class: str, burned_in: str | None,
                                  expected: bool, form: str) -> None:
    ds = _instance(modality, sop_class, burned_in)
    assert has_burned_in_annotation(ds if form == "dataset" else ds.to_json_dict()) is expected
