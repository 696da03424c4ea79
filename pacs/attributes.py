"""Which DICOM attributes the index keeps at each level, and how they are read from a header.

The tables below are the single list of indexed attributes: the schema
(:mod:`pacs.storage.schema`) makes one column per entry, ingest fills them from the header, and
the query model (C-FIND, QIDO-RS) matches on them. They cover the PS3.4 Annex C key tables of the
Patient Root and Study Root models plus what QIDO-RS and a study list need.

Values are read from the header's DICOM JSON (:mod:`pacs.header`), where text is already
decoded with the instance's SpecificCharacterSet; multi-valued text is joined with a backslash
as in DICOM. Person names are also kept in a
normalised form (:func:`normalise_name`) so a search for ``nguyen*`` can find ``Nguyễn^Văn An``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import keyword_for_tag, tag_for_keyword


@dataclass(frozen=True)
class Attribute:
    """One indexed attribute: its DICOM keyword, its column, and whether it is an integer."""

    keyword: str
    column: str
    integer: bool = False
    tag: str = field(init=False)
    """The attribute's tag as a DICOM JSON key (``GGGGEEEE``)."""

    def __post_init__(self) -> None:
        tag = tag_for_keyword(self.keyword)
        if tag is None:
            raise ValueError(f"{self.keyword} is not a DICOM keyword")
        object.__setattr__(self, "tag", f"{tag:08X}")


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

#: Sequence attributes of the PS3.4 C.6 key tables that the index holds, by level, for
#: sequence matching (C.2.2.2.6). Their items' attributes are kept one row per value in the
#: ``sequence_items`` table (nested sequences inside an item are not kept).
STUDY_SEQUENCES = ("ProcedureCodeSequence", "ReferencedStudySequence")
SERIES_SEQUENCES = ("RequestAttributesSequence",)
#: Longest item value kept (PostgreSQL cannot index much longer text); longer ones are left
#: out, so they neither match nor come back.
MAX_ITEM_VALUE = 1024

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


def text_value(dataset: Mapping[str, Any], tag: str) -> str | None:
    """An attribute of a DICOM JSON dataset as Unicode text, or None if absent or empty.

    Multiple values are joined with ``\\`` as in DICOM; a person name is written in its DICOM
    form (``Alphabetic=Ideographic=Phonetic``, trailing empty groups left out).
    """
    element = dataset.get(tag)
    values = element.get("Value") if element else None
    if not values:
        return None
    text = "\\".join(_scalar_text(value) for value in values).strip(" \x00")
    return text or None


def _scalar_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # a person name's component groups
        groups = [value.get(group, "") for group in ("Alphabetic", "Ideographic", "Phonetic")]
        return "=".join(groups).rstrip("=")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _integer_value(dataset: Mapping[str, Any], tag: str) -> int | None:
    element = dataset.get(tag)
    values = element.get("Value") if element else None
    value = values[0] if values else None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            return None
    return None


def _normalise_date(text: str) -> str:
    # Old ACR-NEMA style "YYYY.MM.DD" still comes from some modalities.
    return text.replace(".", "") if len(text) == 10 and text[4] == "." else text


def _normalise_time(text: str) -> str:
    return text.replace(":", "")


def read_level(dataset: Mapping[str, Any], attributes: tuple[Attribute, ...]) -> dict[str, Any]:
    """Read one level's indexed attributes from a DICOM JSON dataset as ``{column: value}``.

    Absent attributes are ``None``; dates and times are brought to their DICOM form
    (``YYYYMMDD``, ``HHMMSS.FFFFFF``) so that range matching can compare them as strings. Each
    person-name column also gets its ``<column>_norm`` form.
    """
    row: dict[str, Any] = {}
    for attribute in attributes:
        # A malformed value was already left out of the header (pacs.header), so it reads
        # as absent here: it must not refuse an otherwise archivable instance.
        if attribute.integer:
            value: Any = _integer_value(dataset, attribute.tag)
        else:
            value = text_value(dataset, attribute.tag)
        if isinstance(value, str):
            if attribute.column in _DATE_COLUMNS:
                value = _normalise_date(value)
            elif attribute.column in _TIME_COLUMNS:
                value = _normalise_time(value)
        row[attribute.column] = value
        if attribute.column in NAME_COLUMNS:
            row[attribute.column + "_norm"] = normalise_name(value) if value else None
    return row


def read_sequences(dataset: Mapping[str, Any], keywords: tuple[str, ...]) -> list[dict[str, Any]]:
    """The items of ``keywords``' sequences in a DICOM JSON dataset, one row per value.

    Each row is ``{"sequence", "item", "keyword", "value"}``: the sequence's keyword, the
    item's position (from 0), and one attribute of the item as text (as :func:`text_value`
    reads it). Attributes without a value, nested sequences, bulk data and values longer than
    :data:`MAX_ITEM_VALUE` are left out.
    """
    rows: list[dict[str, Any]] = []
    for sequence in keywords:
        element = dataset.get(f"{tag_for_keyword(sequence):08X}")
        for number, item in enumerate((element or {}).get("Value") or []):
            if not isinstance(item, dict):
                continue
            for tag, item_element in item.items():
                keyword = keyword_for_tag(int(tag, 16)) if len(tag) == 8 else ""
                if not keyword or item_element.get("vr") == "SQ":
                    continue
                value = text_value(item, tag)
                if value is not None and len(value) <= MAX_ITEM_VALUE:
                    rows.append({"sequence": sequence, "item": number, "keyword": keyword,
                                 "value": value})
    return rows
