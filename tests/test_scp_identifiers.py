"""C-FIND identifiers encoded from index rows (pacs.scp.identifiers) are what pydicom writes."""

from __future__ import annotations

import random
from io import BytesIO

import pytest
from pynetdicom.dsutils import decode, encode

from pacs.query import to_dataset
from pacs.scp.identifiers import IdentifierEncoder

STUDY_KEYS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
    "ReferringPhysicianName", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "InstanceAvailability", "RetrieveAETitle",
)
IMAGE_KEYS = (
    "SOPInstanceUID", "SOPClassUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
    "NumberOfFrames", "ImageType", "ReferencedImageSequence", "PixelSpacing",
    "SliceThickness", "WindowCenter",
)
FIXED = {"QueryRetrieveLevel": "STUDY", "RetrieveAETitle": "PACS"}


def pydicom_bytes(row: dict, keys: tuple[str, ...], implicit_vr: bool) -> bytes:
    """What the archive sent before: to_dataset, the DIMSE edge's keys, pydicom's encoder."""
    dataset = to_dataset(row, keys)
    for keyword, value in FIXED.items():
        setattr(dataset, keyword, value)
    return encode(dataset, implicit_vr, True)


def both(row: dict, keys: tuple[str, ...] = STUDY_KEYS) -> list[tuple[bytes, bytes]]:
    return [
        (IdentifierEncoder(keys, FIXED, implicit_vr=implicit).encode(row),
         pydicom_bytes(row, keys, implicit))
        for implicit in (True, False)
    ]


ROWS = {
    "ascii study": {
        "PatientName": "NGUYEN^VAN AN", "PatientID": "BN001", "PatientBirthDate": "19800101",
        "PatientSex": "M", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",
        "StudyDate": "20261129", "StudyTime": "101500.25", "AccessionNumber": "A1",
        "StudyID": "7", "StudyDescription": "CT NGUC", "ReferringPhysicianName": "",
        "ModalitiesInStudy": "CT\\SR", "NumberOfStudyRelatedSeries": 3,
        "NumberOfStudyRelatedInstances": 120, "InstanceAvailability": "ONLINE",
    },
    "vietnamese names": {
        "PatientName": "Nguyễn^Văn An", "PatientID": "BN002",
        "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.22",
        "StudyDescription": "Chụp cắt lớp vi tính ngực", "ReferringPhysicianName": "Trần^Bình",
        "NumberOfStudyRelatedSeries": 1, "NumberOfStudyRelatedInstances": 1,
    },
    "ideographic and phonetic name groups": {
        "PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう", "PatientID": "JP1",
    },
    "nothing known": {},
    "odd and even lengths": {"PatientID": "A", "AccessionNumber": "AB", "StudyID": "ABC",
                             "StudyInstanceUID": "1.23"},
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_study_identifier_is_byte_for_byte_what_pydicom_writes(row):
    for fast, reference in both(row):
        assert fast == reference


IMAGE_ROWS = {
    "image attributes": {
        "SOPInstanceUID": "1.2.3.4.5", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
        "InstanceNumber": 12, "Rows": 512, "Columns": 512, "BitsAllocated": 16,
        "NumberOfFrames": 1, "ImageType": "ORIGINAL\\PRIMARY\\AXIAL",
        "PixelSpacing": "0.5\\0.5", "SliceThickness": "1.25", "WindowCenter": "40\\-600",
    },
    "numbers stored as text": {"InstanceNumber": "0012", "NumberOfFrames": "+3",
                               "SliceThickness": "5"},
    "numbers pydicom cannot read": {"InstanceNumber": "12a", "SliceThickness": "thick",
                                    "PixelSpacing": "0.5\\x"},
    "long decimal": {"SliceThickness": "0.333333333333", "PixelSpacing": "1e-3\\2.5E2"},
    "integer out of the VR's range": {"InstanceNumber": 2**40},
}


@pytest.mark.parametrize("row", IMAGE_ROWS.values(), ids=IMAGE_ROWS.keys())
def test_image_identifier_is_byte_for_byte_what_pydicom_writes(row):
    for fast, reference in both(row, IMAGE_KEYS):
        assert fast == reference


def test_random_rows_encode_as_pydicom_writes_them():
    rng = random.Random(2026)
    ascii_alphabet = "ABCXYZ019 ^.-"
    # Only the VRs that Specific Character Set applies to hold other characters (PS3.5 6.1.2.3).
    vietnamese = {"PatientName", "StudyDescription", "ReferringPhysicianName", "PatientID",
                  "AccessionNumber", "StudyID"}
    for _ in range(300):
        row: dict = {}
        for keyword in STUDY_KEYS:
            kind = rng.random()
            if kind < 0.2:
                continue
            if keyword.startswith("NumberOf"):
                row[keyword] = rng.randrange(0, 5000)
            elif keyword.endswith("UID"):
                parts = rng.randrange(1, 6)
                row[keyword] = ".".join(str(rng.randrange(1, 999)) for _ in range(parts))
            else:
                alphabet = ascii_alphabet + ("ăâđêôơưÁÀẢÃẠ" if keyword in vietnamese else "")
                row[keyword] = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        for fast, reference in both(row):
            assert fast == reference, row


def test_non_ascii_identifier_says_utf8_and_decodes_intact():
    encoded = IdentifierEncoder(STUDY_KEYS, FIXED, implicit_vr=False).encode(
        ROWS["vietnamese names"])
    dataset = decode(BytesIO(encoded), False, True)
    assert dataset.SpecificCharacterSet == "ISO_IR 192"
    assert str(dataset.PatientName) == "Nguyễn^Văn An"
    assert dataset.StudyDescription == "Chụp cắt lớp vi tính ngực"


def test_ascii_identifier_has_no_specific_character_set():
    encoded = IdentifierEncoder(STUDY_KEYS, FIXED, implicit_vr=True).encode(ROWS["ascii study"])
    assert b"ISO_IR" not in encoded


def test_fixed_keys_replace_return_keys_of_the_same_name():
    encoded = IdentifierEncoder(("RetrieveAETitle",), FIXED, implicit_vr=True).encode({})
    dataset = decode(BytesIO(encoded), True, True)
    assert dataset.RetrieveAETitle == "PACS"
    assert dataset.QueryRetrieveLevel == "STUDY"


def test_unknown_keyword_is_refused():
    with pytest.raises(ValueError, match="NotAKeyword"):
        IdentifierEncoder(("NotAKeyword",), {}, implicit_vr=True)


def test_sequence_items_encode_as_pydicom_writes_them():
    keys = ("AccessionNumber", "ProcedureCodeSequence", "ReferencedStudySequence")
    row = {"AccessionNumber": "A",
           "ProcedureCodeSequence": [{"CodeValue": "CT-CHEST", "CodeMeaning": "Chụp CT ngực"},
                                     {"CodeValue": "CT-ABD", "CodeMeaning": None}],
           "ReferencedStudySequence": None}
    for fast, reference in both(row, keys):
        assert fast == reference
        assert b"ISO_IR 192" in fast  # the item's text is not ASCII
