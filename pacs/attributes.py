"""Which DICOM attributes the index keeps at each level, and how they are read from a header.

The tables below are the single list of indexed attributes: the schema
(:mod:`pacs.storage.schema`) makes one column per entry, ingest fills them from the header, and
the query model (C-FIND, QIDO-RS) matches on them. They cover the PS3.4 Annex C key tables of the
Patient Root and Study Root models plus what QIDO-RS and a study list need.

Text is decoded with the instance's SpecificCharacterSet by pydicom and kept as Unicode;
multi-valued text is joined with a backslash as in DICOM. Person names are also kept in a
normalised form (:func:`normalise_name`) so a search for ``nguyen*`` can find ``Nguyễn^Văn An``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName


@dataclass(frozen=True)
class Attribute:
    """One indexed attribute: its DICOM keyword, its column, and whether it is an integer."""

    keyword: str
    column: str
    integer: bool = False


def _attrs(*specs: tuple[str, str] | tuple[str, str, bool]) -> tuple[Attribute, ...]:
    return tuple(Attribute(*spec) for spec in specs)


PATIENT_ATTRIBUTES = _attrs(
    ("PatientID", "patient_id"),
    ("IssuerOfPatientID", "issuer_of_patient_id"),
    ("PatientName", "patient_name"),
    ("PatientBirthDate", "patient_birth_date"),
    ("PatientBirthTime", "patient_birth_time"),
    ("PatientSex", "patient_sex"),
    ("OtherPatientIDs", "other_patient_ids"),
    ("EthnicGroup", "ethnic_group"),
    ("PatientComments", "patient_comments"),
)

STUDY_ATTRIBUTES = _attrs(
    ("StudyInstanceUID", "study_uid"),
    ("StudyDate", "study_date"),
    ("StudyTime", "study_time"),
    ("AccessionNumber", "accession_number"),
    ("StudyID", "study_id"),
    ("StudyDescription", "study_description"),
    ("ReferringPhysicianName", "referring_physician_name"),
    ("NameOfPhysiciansReadingStudy", "physicians_reading_study"),
    ("InstitutionName", "institution_name"),
    ("AdmittingDiagnosesDescription", "admitting_diagnoses"),
    ("PatientAge", "patient_age"),
    ("PatientSize", "patient_size"),
    ("PatientWeight", "patient_weight"),
    ("Occupation", "occupation"),
    ("AdditionalPatientHistory", "additional_patient_history"),
    ("OtherStudyNumbers", "other_study_numbers"),
)

SERIES_ATTRIBUTES = _attrs(
    ("SeriesInstanceUID", "series_uid"),
    ("Modality", "modality"),
    ("SeriesNumber", "series_number", True),
    ("SeriesDescription", "series_description"),
    ("BodyPartExamined", "body_part_examined"),
    ("SeriesDate", "series_date"),
    ("SeriesTime", "series_time"),
    ("PerformedProcedureStepStartDate", "pps_start_date"),
    ("PerformedProcedureStepStartTime", "pps_start_time"),
    ("InstitutionName", "institution_name"),
    ("StationName", "station_name"),
    ("Manufacturer", "manufacturer"),
    ("ManufacturerModelName", "manufacturer_model_name"),
    ("ProtocolName", "protocol_name"),
    ("Laterality", "laterality"),
    ("OperatorsName", "operators_name"),
    ("PerformingPhysicianName", "performing_physician_name"),
)

INSTANCE_ATTRIBUTES = _attrs(
    ("SOPInstanceUID", "sop_instance_uid"),
    ("SOPClassUID", "sop_class_uid"),
    ("InstanceNumber", "instance_number", True),
    ("ContentDate", "content_date"),
    ("ContentTime", "content_time"),
    ("AcquisitionDateTime", "acquisition_datetime"),
    ("ImageType", "image_type"),
    ("Rows", "rows", True),
    ("Columns", "columns", True),
    ("NumberOfFrames", "number_of_frames", True),
    ("BitsAllocated", "bits_allocated", True),
    ("PhotometricInterpretation", "photometric_interpretation"),
)

# Person-name attributes also get a normalised column ``<column>_norm`` for fuzzy matching.
NAME_COLUMNS = ("patient_name", "referring_physician_name")

_DATE_COLUMNS = {
    "patient_birth_date", "study_date", "series_date", "pps_start_date", "content_date",
}
_TIME_COLUMNS = {
    "patient_birth_time", "study_time", "series_time", "pps_start_time", "content_time",
}

# Letters that Unicode does not decompose into a base letter plus a combining mark.
_UNDECOMPOSABLE = str.maketrans({"đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "ø": "o", "Ø": "O",
                                 "ł": "l", "Ł": "L", "ß": "ss", "æ": "ae", "Æ": "AE"})


def normalise_name(value: str) -> str:
    """Upper-case ``value`` and strip accents, so that ``Nguyễn^Văn An`` gives ``NGUYEN^VAN AN``.

    Used for the normalised name columns at ingest and for fuzzy matching keys at query time,
    so both sides are normalised the same way.
    """
    decomposed = unicodedata.normalize("NFKD", value.translate(_UNDECOMPOSABLE))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return stripped.upper()


def text_value(ds: Dataset, keyword: str) -> str | None:
    """The attribute as Unicode text (multi-values joined by ``\\``), or None if absent/empty."""
    element = ds.get(keyword)
    if element is None:
        return None
    value: Any = element.value if hasattr(element, "value") else element
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        text = "\\".join(_scalar_text(v) for v in value)
    else:
        text = _scalar_text(value)
    text = text.strip(" \x00")
    return text or None


def _scalar_text(value: Any) -> str:
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    return str(value)


def _integer_value(ds: Dataset, keyword: str) -> int | None:
    text = text_value(ds, keyword)
    if text is None:
        return None
    try:
        return int(float(text.split("\\", 1)[0]))
    except ValueError:
        return None


def _normalise_date(text: str) -> str:
    # Old ACR-NEMA style "YYYY.MM.DD" still comes from some modalities.
    return text.replace(".", "") if len(text) == 10 and text[4] == "." else text


def _normalise_time(text: str) -> str:
    return text.replace(":", "")


def read_level(ds: Dataset, attributes: tuple[Attribute, ...]) -> dict[str, Any]:
    """Read one level's indexed attributes from a dataset as ``{column: value}``.

    Absent attributes are ``None``; dates and times are brought to their DICOM form
    (``YYYYMMDD``, ``HHMMSS.FFFFFF``) so that range matching can compare them as strings. Each
    person-name column also gets its ``<column>_norm`` form.
    """
    row: dict[str, Any] = {}
    for attribute in attributes:
        try:
            if attribute.integer:
                value: Any = _integer_value(ds, attribute.keyword)
            else:
                value = text_value(ds, attribute.keyword)
        except (ValueError, TypeError, LookupError):
            # A malformed optional value (bad VR, undecodable text) must not refuse an
            # otherwise archivable instance; the original bytes still hold it.
            value = None
        if isinstance(value, str):
            if attribute.column in _DATE_COLUMNS:
                value = _normalise_date(value)
            elif attribute.column in _TIME_COLUMNS:
                value = _normalise_time(value)
        row[attribute.column] = value
        if attribute.column in NAME_COLUMNS:
            row[attribute.column + "_norm"] = normalise_name(value) if value else None
    return row
