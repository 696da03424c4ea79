"""The query model: every matching rule, through both parsers, on each backend pair.

The archive below holds four studies; results are named by their accession numbers:

=========  ====================  ======  ==================  =========  ===========
accession  patient               ID      date, time          series     description
=========  ====================  ======  ==================  =========  ===========
ACC0001    Nguyễn^Văn An         BN0001  20260315 101500     CT (2)     CT ngực
ACC0002    Trần^Thị Bình         BN0002  20260316 090000     MR, SR     MR sọ não
X_1%       Nguyễn^Văn An         BN0001  20260320 120000.5   CT         CT bụng
XA1%       Le^An                 BN0003  20250101 2330       DX         (none)
=========  ====================  ======  ==================  =========  ===========
"""

from __future__ import annotations

import re
from io import BytesIO
from typing import Any

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from factories import make_instance
from pacs.ingest import Origin
from pacs.query import (
    InvalidKey,
    InvalidLevel,
    InvalidMatchValue,
    InvalidParameter,
    InvalidQuery,
    Level,
    MissingUniqueKey,
    Model,
    Query,
    SingleValue,
    build_statement,
    run_query,
)

ORIGIN = Origin("import", "test")
STUDY_A, STUDY_B, STUDY_C, STUDY_D = (f"1.2.826.0.1.3680043.8.498.{n}" for n in (10, 20, 30, 40))
NGUYEN = {"PatientName": "Nguyễn^Văn An", "PatientID": "BN0001"}
EVERY_STUDY = ["ACC0001", "ACC0002", "X_1%", "XA1%"]


def _add(services, **attributes: Any) -> None:
    assert services.ingest(make_instance(**attributes), ORIGIN).ok


@pytest.fixture
def archive(services):
    """The four studies of the module docstring, ingested in the order of the table."""
    study_a = {**NGUYEN, "StudyInstanceUID": STUDY_A, "SeriesInstanceUID": STUDY_A + ".1",
               "StudyDate": "20260315", "StudyTime": "101500", "AccessionNumber": "ACC0001"}
    _add(services, **study_a, InstanceNumber=1, ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
         AcquisitionDateTime="20260315101502.5")
    _add(services, **study_a, InstanceNumber=2, ImageType=["DERIVED", "SECONDARY"],
         AcquisitionDateTime="20260315111500")
    study_b = {"PatientName": "Trần^Thị Bình", "PatientID": "BN0002",
               "StudyInstanceUID": STUDY_B, "StudyDate": "20260316", "StudyTime": "090000",
               "AccessionNumber": "ACC0002", "StudyDescription": "MR sọ não"}
    _add(services, **study_b, SeriesInstanceUID=STUDY_B + ".1", Modality="MR")
    _add(services, **study_b, SeriesInstanceUID=STUDY_B + ".2", Modality="SR", SeriesNumber=2)
    _add(services, **NGUYEN, StudyInstanceUID=STUDY_C, SeriesInstanceUID=STUDY_C + ".1",
         StudyDate="20260320", StudyTime="120000.5", AccessionNumber="X_1%",
         StudyDescription="CT bụng")
    _add(services, PatientName="Le^An", PatientID="BN0003", StudyInstanceUID=STUDY_D,
         SeriesInstanceUID=STUDY_D + ".1", StudyDate="20250101", StudyTime="2330",
         AccessionNumber="XA1%", Modality="DX", StudyDescription=None,
         ReferringPhysicianName="Smith^John")
    return services


def identifier(level: str, **keys: Any) -> Dataset:
    """A C-FIND identifier as pynetdicom hands it over: raw UTF-8 values, decoded on access."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        tag = Tag(tag_for_keyword(keyword))
        vr = dictionary_VR(keyword)
        if isinstance(value, list):  # a sequence key: its items
            ds.add(DataElement(tag, vr, value))
        else:
            encoded = value.encode()
            ds[tag] = RawDataElement(tag, vr, len(encoded), encoded, 0, False, True)
    return ds


def qido_params(**keys: str) -> dict[str, list[str]]:
    return {name: [value] for name, value in keys.items()}


def find(services, query: Query, **options: Any) -> list[Dataset]:
    return run_query(services.db, query, **options).datasets


def find_studies(services, keys: dict[str, str], *, parser: str, fuzzy: bool = False) -> list[str]:
    """Accession numbers of the studies matching ``keys``, through one parser, in arrival
    order (the order of the module docstring's table)."""
    if parser == "dimse":
        query = Query.from_identifier(
            identifier("STUDY", **{"AccessionNumber": "", **keys}), fuzzy=fuzzy
        )
    else:
        params = {**qido_params(**keys), "includefield": ["AccessionNumber"]}
        if fuzzy:
            params["fuzzymatching"] = ["true"]
        query = Query.from_qido(Level.STUDY, params)
    return [ds.AccessionNumber for ds in find(services, query)]


# -- matching rules (PS3.4 C.2.2.2), each through both parsers ----------------------------

MATCHING_RULES = [
    pytest.param({"AccessionNumber": "ACC0001"}, ["ACC0001"], id="single-value"),
    pytest.param({"AccessionNumber": "acc0001"}, [], id="single-value-is-case-sensitive"),
    pytest.param({"AccessionNumber": ""}, EVERY_STUDY, id="empty-is-universal"),
    pytest.param({"StudyDescription": "*"}, EVERY_STUDY, id="star-is-universal-even-for-empty"),
    pytest.param({"StudyDescription": '""'}, ["XA1%"], id="two-quotes-match-empty-values"),
    pytest.param({"AccessionNumber": "ACC*"}, ["ACC0001", "ACC0002"], id="wildcard-star"),
    pytest.param({"AccessionNumber": "acc*"}, [], id="wildcard-is-case-sensitive"),
    pytest.param({"AccessionNumber": "ACC000?"}, ["ACC0001", "ACC0002"],
                 id="wildcard-question-mark"),
    pytest.param({"AccessionNumber": "X_1*"}, ["X_1%"], id="underscore-is-literal"),
    pytest.param({"AccessionNumber": "*%"}, ["X_1%", "XA1%"], id="percent-is-literal"),
    pytest.param({"StudyDescription": "CT*"}, ["ACC0001", "X_1%"], id="wildcard-on-utf8-text"),
    pytest.param({"AccessionNumber": "ACC0001\\XA1%"}, ["ACC0001", "XA1%"],
                 id="multiple-values-match-any"),
    pytest.param({"StudyInstanceUID": f"{STUDY_A}\\{STUDY_C}"}, ["ACC0001", "X_1%"],
                 id="uid-list"),
    pytest.param({"StudyDate": "20260315"}, ["ACC0001"], id="date-single-value"),
    pytest.param({"StudyDate": "20260315-20260316"}, ["ACC0001", "ACC0002"], id="date-range"),
    pytest.param({"StudyDate": "20260316-"}, ["ACC0002", "X_1%"], id="date-range-open-end"),
    pytest.param({"StudyDate": "-20260315"}, ["ACC0001", "XA1%"], id="date-range-open-start"),
    pytest.param({"StudyDate": "2026.03.15-2026.03.16"}, ["ACC0001", "ACC0002"],
                 id="legacy-dotted-dates"),
    pytest.param({"StudyTime": "1015"}, ["ACC0001"], id="time-single-value-within-precision"),
    pytest.param({"StudyTime": "-1200"}, ["ACC0001", "ACC0002", "X_1%"],
                 id="time-upper-bound-includes-its-whole-minute"),
    pytest.param({"StudyTime": "-1159"}, ["ACC0001", "ACC0002"], id="time-upper-bound"),
    pytest.param({"StudyTime": "1200-"}, ["X_1%", "XA1%"], id="time-lower-bound"),
    pytest.param({"StudyTime": "10:00-12:00"}, ["ACC0001", "X_1%"], id="legacy-colon-times"),
    pytest.param({"StudyDate": "20260315-20260316", "StudyTime": "1000-0900"},
                 ["ACC0001", "ACC0002"], id="date-and-time-ranges-combine"),
    pytest.param({"PatientName": "Nguyễn"}, ["ACC0001", "X_1%"],
                 id="name-family-component-alone"),
    pytest.param({"PatientName": "Nguyễn^Văn*"}, ["ACC0001", "X_1%"],
                 id="name-component-wise-wildcard"),
    pytest.param({"PatientName": "^Văn An"}, ["ACC0001", "X_1%"], id="name-given-component"),
    pytest.param({"PatientName": "Nguyễn^An"}, [], id="name-components-must-each-match"),
    pytest.param({"PatientName": "Nguyễn*"}, ["ACC0001", "X_1%"], id="name-wildcard-as-sent"),
    pytest.param({"PatientName": "nguyen*"}, [], id="name-without-fuzzy-keeps-case-accents"),
    pytest.param({"ReferringPhysicianName": "Smith"}, ["XA1%"], id="referring-physician-name"),
    pytest.param({"PatientID": "BN0001"}, ["ACC0001", "X_1%"], id="patient-key-in-study-query"),
    pytest.param({"ModalitiesInStudy": "SR"}, ["ACC0002"], id="modalities-any-series"),
    pytest.param({"ModalitiesInStudy": "DX\\SR"}, ["ACC0002", "XA1%"], id="modalities-list"),
    pytest.param({"ModalitiesInStudy": "M?"}, ["ACC0002"], id="modalities-wildcard"),
    pytest.param({"NumberOfStudyRelatedSeries": "2"}, ["ACC0002"], id="computed-count"),
    pytest.param({"InstanceAvailability": "ONLINE"}, EVERY_STUDY, id="instance-availability"),
]


@pytest.mark.parametrize("parser", ["dimse", "qido"])
@pytest.mark.parametrize(("keys", "expected"), MATCHING_RULES)
def test_matching_rule_selects_the_same_studies_through_both_parsers(
    archive, keys, expected, parser
):
    assert find_studies(archive, keys, parser=parser) == expected


FUZZY_RULES = [
    pytest.param({"PatientName": "nguyen*"}, ["ACC0001", "X_1%"], id="lower-case-no-accents"),
    pytest.param({"PatientName": "NGUYỄN*"}, ["ACC0001", "X_1%"], id="upper-case-accents"),
    pytest.param({"PatientName": "nguyen^van an"}, ["ACC0001", "X_1%"], id="whole-name"),
    pytest.param({"PatientName": "tran^thi*"}, ["ACC0002"], id="vietnamese-diacritics"),
    pytest.param({"PatientName": "nguyen van an"}, ["ACC0001", "X_1%"],
                 id="spaces-for-the-component-separator"),
    pytest.param({"PatientName": "*nguyen van an*"}, ["ACC0001", "X_1%"],
                 id="a-study-list-search-box"),
    pytest.param({"PatientName": "nguyen^van"}, ["ACC0001", "X_1%"],
                 id="first-word-of-a-component"),
    pytest.param({"PatientName": "nguyen van bình"}, [], id="every-word-must-match"),
    pytest.param({"ReferringPhysicianName": "smith*"}, ["XA1%"], id="referring-physician"),
]


@pytest.mark.parametrize("parser", ["dimse", "qido"])
@pytest.mark.parametrize(("keys", "expected"), FUZZY_RULES)
def test_fuzzy_name_matching_ignores_case_and_accents(archive, keys, expected, parser):
    assert find_studies(archive, keys, parser=parser, fuzzy=True) == expected


def test_fuzzymatching_false_overrides_the_server_default(archive):
    params = qido_params(PatientName="nguyen*", fuzzymatching="false")
    assert find(archive, Query.from_qido(Level.STUDY, params, fuzzy=True)) == []


def test_date_and_time_ranges_apart_when_combined_matching_is_off(archive):
    keys = identifier("STUDY", StudyDate="20260315-20260316", StudyTime="1000-0900")
    query = Query.from_identifier(keys, combine_datetime=False)
    assert find(archive, query) == []  # no time is both after 10:00 and before 09:00


def test_datetime_range_on_a_dt_attribute(archive):
    query = Query.from_qido(
        Level.IMAGE, qido_params(AcquisitionDateTime="20260315100000-20260315110000")
    )
    assert [ds.InstanceNumber for ds in find(archive, query)] == [1]


def test_dt_value_with_a_timezone_offset_is_one_value_not_a_range():
    query = Query.from_qido(Level.IMAGE, qido_params(AcquisitionDateTime="20260315101500-0500"))
    assert query.filters == (SingleValue("AcquisitionDateTime", "20260315101500"),)


def test_multi_valued_attribute_matches_when_any_value_matches(archive):
    def image_types(value: str) -> list[int]:
        query = Query.from_qido(Level.IMAGE, qido_params(ImageType=value))
        return [ds.InstanceNumber for ds in find(archive, query)]

    assert image_types("PRIMARY") == [1]
    assert image_types("AXIAL") == [1]
    assert image_types("DERIVED") == [2]
    assert image_types("SEC*") == [2]
    assert image_types("RIMARY") == []


def test_sql_wildcards_in_the_key_do_not_match_other_text(archive):
    query = Query.from_qido(Level.STUDY, qido_params(AccessionNumber="X%1*"))
    assert find(archive, query) == []


# -- levels, information models and hierarchical queries ---------------------------------


def test_patient_root_patient_query_returns_computed_counts(archive):
    keys = identifier("PATIENT", PatientID="BN0001", NumberOfPatientRelatedStudies="",
                      NumberOfPatientRelatedSeries="", NumberOfPatientRelatedInstances="")
    (patient,) = find(archive, Query.from_identifier(keys, Model.PATIENT_ROOT))
    assert patient.NumberOfPatientRelatedStudies == 2
    assert patient.NumberOfPatientRelatedSeries == 2
    assert patient.NumberOfPatientRelatedInstances == 3


def test_study_query_returns_series_and_instance_counts(archive):
    keys = identifier("STUDY", StudyInstanceUID=STUDY_B, NumberOfStudyRelatedSeries="",
                      NumberOfStudyRelatedInstances="", ModalitiesInStudy="")
    (study,) = find(archive, Query.from_identifier(keys))
    assert study.NumberOfStudyRelatedSeries == 2
    assert study.NumberOfStudyRelatedInstances == 2
    assert list(study.ModalitiesInStudy) == ["MR", "SR"]


def test_series_query_returns_the_study_series_with_instance_counts(archive):
    keys = identifier("SERIES", StudyInstanceUID=STUDY_A, SeriesInstanceUID="", Modality="",
                      NumberOfSeriesRelatedInstances="")
    (one_series,) = find(archive, Query.from_identifier(keys))
    assert one_series.SeriesInstanceUID == STUDY_A + ".1"
    assert one_series.StudyInstanceUID == STUDY_A
    assert one_series.NumberOfSeriesRelatedInstances == 2


def test_image_query_returns_the_instances_of_the_series(archive):
    keys = identifier("IMAGE", StudyInstanceUID=STUDY_A, SeriesInstanceUID=STUDY_A + ".1",
                      SOPInstanceUID="", SOPClassUID="", InstanceNumber="")
    results = find(archive, Query.from_identifier(keys))
    assert [ds.InstanceNumber for ds in results] == [1, 2]
    assert {ds.SOPClassUID for ds in results} == {CTImageStorage}
    assert all(ds.SOPInstanceUID for ds in results)


def test_series_query_can_match_modalities_in_study_of_its_study(archive):
    query = Query.from_qido(Level.SERIES, qido_params(ModalitiesInStudy="SR"))
    found = sorted(ds.SeriesInstanceUID for ds in find(archive, query))
    assert found == [STUDY_B + ".1", STUDY_B + ".2"]


def test_patient_root_study_query_with_patient_id_finds_the_patients_studies(archive):
    keys = identifier("STUDY", PatientID="BN0001", AccessionNumber="")
    query = Query.from_identifier(keys, Model.PATIENT_ROOT)
    assert [ds.AccessionNumber for ds in find(archive, query)] == ["ACC0001", "X_1%"]


@pytest.mark.parametrize(
    ("model", "level", "keys", "missing"),
    [
        (Model.STUDY_ROOT, "SERIES", {}, "StudyInstanceUID"),
        (Model.STUDY_ROOT, "IMAGE", {"StudyInstanceUID": STUDY_A}, "SeriesInstanceUID"),
        (Model.PATIENT_ROOT, "STUDY", {}, "PatientID"),
        (Model.PATIENT_ROOT, "STUDY", {"PatientID": ""}, "PatientID"),
        (Model.PATIENT_ROOT, "STUDY", {"PatientID": "BN*"}, "PatientID"),
        (Model.PATIENT_ROOT, "SERIES", {"PatientID": "BN0001"}, "StudyInstanceUID"),
    ],
    ids=["series-without-study", "image-without-series", "study-without-patient",
         "empty-patient-id", "wildcard-patient-id", "series-without-study-in-patient-root"],
)
def test_hierarchical_query_needs_the_unique_keys_above(model, level, keys, missing):
    with pytest.raises(MissingUniqueKey) as raised:
        Query.from_identifier(identifier(level, **keys), model)
    assert raised.value.keyword == missing
    assert missing in str(raised.value)


def test_relational_query_needs_no_unique_keys_above(archive):
    keys = identifier("SERIES", Modality="MR", SeriesInstanceUID="")
    query = Query.from_identifier(keys, relational=True)
    assert [ds.SeriesInstanceUID for ds in find(archive, query)] == [STUDY_B + ".1"]


@pytest.mark.parametrize(
    ("level", "model", "reason"),
    [
        ("FOO", Model.STUDY_ROOT, "not PATIENT, STUDY, SERIES or IMAGE"),
        ("", Model.STUDY_ROOT, "QueryRetrieveLevel is missing"),
        ("PATIENT", Model.STUDY_ROOT, "Study Root model has no PATIENT level"),
    ],
    ids=["unknown-level", "missing-level", "patient-level-in-study-root"],
)
def test_invalid_level_is_refused_with_the_reason(level, model, reason):
    with pytest.raises(InvalidLevel, match=reason):
        Query.from_identifier(identifier(level), model)


@pytest.mark.parametrize(
    ("sop_class", "model"),
    [
        (PatientRootQueryRetrieveInformationModelFind, Model.PATIENT_ROOT),
        (StudyRootQueryRetrieveInformationModelMove, Model.STUDY_ROOT),
    ],
)
def test_model_follows_the_sop_class(sop_class, model):
    assert Model.for_sop_class(sop_class) is model


def test_model_of_a_storage_sop_class_is_refused():
    with pytest.raises(InvalidQuery, match="not a Patient Root or Study Root"):
        Model.for_sop_class(CTImageStorage)


def test_key_of_a_lower_level_with_a_value_is_refused():
    with pytest.raises(InvalidKey, match="Modality is a SERIES attribute") as raised:
        Query.from_identifier(identifier("STUDY", Modality="CT"))
    assert raised.value.keyword == "Modality"


def test_return_key_of_a_lower_level_is_left_out(archive):
    keys = identifier("STUDY", StudyInstanceUID=STUDY_A, SOPInstanceUID="")
    (study,) = find(archive, Query.from_identifier(keys))
    assert "SOPInstanceUID" not in study


# -- return keys and result datasets -----------------------------------------------------


def test_return_keys_the_index_does_not_hold_are_returned_empty(archive):
    keys = identifier("STUDY", StudyInstanceUID=STUDY_A, PatientMotherBirthName="",
                      ReferencedStudySequence=[], InstitutionName="")
    (study,) = find(archive, Query.from_identifier(keys))
    assert study["PatientMotherBirthName"].is_empty
    assert study["ReferencedStudySequence"].is_empty
    assert study["InstitutionName"].is_empty  # held, but this study has none


def test_matching_on_a_key_the_index_does_not_hold_is_ignored_and_reported(archive):
    reference = Dataset()
    reference.ReferencedSOPInstanceUID = "1.2.3.4"
    keys = identifier("STUDY", PatientMotherBirthName="Nguyễn*",
                      ReferencedPatientSequence=[reference], AccessionNumber="")
    query = Query.from_identifier(keys)
    assert set(query.ignored) == {"PatientMotherBirthName", "ReferencedPatientSequence"}
    assert len(find(archive, query)) == 4


def test_unique_key_of_the_level_is_always_returned(archive):
    (study,) = find(archive, Query.from_identifier(identifier("STUDY", AccessionNumber="XA1%")))
    assert study.StudyInstanceUID == STUDY_D


def test_utf8_names_are_returned_intact_with_the_utf8_character_set(archive):
    keys = identifier("STUDY", StudyInstanceUID=STUDY_A, PatientName="", StudyDescription="")
    (study,) = find(archive, Query.from_identifier(keys))
    assert str(study.PatientName) == "Nguyễn^Văn An"
    assert study.StudyDescription == "CT ngực"
    assert study.SpecificCharacterSet == "ISO_IR 192"


def test_ascii_only_results_carry_no_character_set(archive):
    (study,) = find(archive, Query.from_identifier(identifier("STUDY", PatientID="BN0003")))
    assert "SpecificCharacterSet" not in study


def test_result_encodes_as_a_dimse_identifier_and_decodes_unchanged(archive):
    keys = identifier("STUDY", StudyInstanceUID=STUDY_B, PatientName="", StudyDate="",
                      NumberOfStudyRelatedInstances="", TimezoneOffsetFromUTC="")
    (study,) = find(archive, Query.from_identifier(keys))
    decoded = decode(BytesIO(encode(study, True, True)), True, True)
    assert str(decoded.PatientName) == "Trần^Thị Bình"
    assert decoded.StudyDate == "20260316"
    assert decoded.NumberOfStudyRelatedInstances == 2


def test_result_converts_to_dicom_json_with_the_dictionary_vrs(archive):
    query = Query.from_qido(Level.STUDY, qido_params(StudyInstanceUID=STUDY_A))
    (study,) = find(archive, query)
    document = study.to_json_dict()
    assert document["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Nguyễn^Văn An"}]}
    assert document["00201208"] == {"vr": "IS", "Value": [2]}
    assert document["00080201"] == {"vr": "SH"}  # TimezoneOffsetFromUTC: not held, empty


# -- QIDO-RS parameters ------------------------------------------------------------------


def test_qido_accepts_tags_as_well_as_keywords(archive):
    query = Query.from_qido(Level.STUDY, {"00100020": ["BN0002"]})
    assert [ds.AccessionNumber for ds in find(archive, query)] == ["ACC0002"]


def test_qido_uid_list_may_be_comma_separated(archive):
    query = Query.from_qido(Level.STUDY, qido_params(StudyInstanceUID=f"{STUDY_B},{STUDY_D}"))
    assert [ds.StudyInstanceUID for ds in find(archive, query)] == [STUDY_B, STUDY_D]


def test_qido_path_uids_restrict_the_search(archive):
    query = Query.from_qido(Level.SERIES, {}, {"StudyInstanceUID": STUDY_B})
    assert [ds.Modality for ds in find(archive, query)] == ["MR", "SR"]


def test_qido_search_of_all_series_also_returns_study_attributes(archive):
    everywhere = Query.from_qido(Level.SERIES, qido_params(Modality="DX"))
    (series,) = find(archive, everywhere)
    assert series.PatientName == "Le^An"
    assert series.AccessionNumber == "XA1%"
    in_study = Query.from_qido(Level.SERIES, {}, {"StudyInstanceUID": STUDY_D})
    assert "PatientName" not in find(archive, in_study)[0]


def test_qido_includefield_adds_return_keys(archive):
    params = {**qido_params(AccessionNumber="ACC0002"),
              "includefield": ["StudyDescription,00080080"]}
    (study,) = find(archive, Query.from_qido(Level.STUDY, params))
    assert study.StudyDescription == "MR sọ não"
    assert "InstitutionName" in study


def test_qido_includefield_all_returns_every_attribute_held(archive):
    query = Query.from_qido(Level.STUDY, {"includefield": ["all"], "PatientID": ["BN0002"]})
    (study,) = find(archive, query)
    assert {"StudyDescription", "PatientSex", "NumberOfPatientRelatedStudies",
            "OtherPatientIDs", "PatientBirthDate"} <= set(study.dir())


def test_qido_unknown_attribute_is_refused():
    with pytest.raises(InvalidKey, match="'PatientNmae' is not a DICOM attribute"):
        Query.from_qido(Level.STUDY, qido_params(PatientNmae="x"))


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"limit": ["ten"]}, "limit must be an integer of at least 1, not 'ten'"),
        ({"limit": ["0"]}, "limit must be an integer of at least 1, not '0'"),
        ({"offset": ["-1"]}, "offset must be an integer of at least 0, not '-1'"),
        ({"limit": ["1", "2"]}, "limit must be given once"),
        ({"fuzzymatching": ["yes"]}, "fuzzymatching must be true or false, not 'yes'"),
    ],
    ids=["limit-not-a-number", "limit-zero", "negative-offset", "limit-twice", "fuzzy-yes"],
)
def test_qido_malformed_parameter_is_refused_with_the_reason(params, reason):
    with pytest.raises(InvalidParameter, match=reason):
        Query.from_qido(Level.STUDY, params)


# -- malformed values ---------------------------------------------------------------------

MALFORMED_VALUES = [
    pytest.param("StudyDate", "2026-01-01-2026", "is not a DA range", id="date-range-of-three"),
    pytest.param("StudyDate", "20261301", "is not a valid DA value", id="month-13"),
    pytest.param("StudyDate", "2026*", "not wild cards", id="wildcard-date"),
    pytest.param("StudyDate", "-", "is not a DA range", id="range-without-bounds"),
    pytest.param("StudyTime", "2500", "is not a valid TM value", id="hour-25"),
    pytest.param("StudyInstanceUID", "1." + "2" * 64, "66 characters long (at most 64)",
                 id="uid-too-long"),
    pytest.param("StudyInstanceUID", "1.2.abc", "not a valid UID", id="uid-with-letters"),
    pytest.param("StudyInstanceUID", "1.2.*", "cannot be matched with wild cards",
                 id="uid-wildcard"),
    pytest.param("NumberOfStudyRelatedSeries", "2*", "cannot be matched with wild cards",
                 id="wildcard-on-a-number"),
]


@pytest.mark.parametrize("parser", ["dimse", "qido"])
@pytest.mark.parametrize(("keyword", "value", "reason"), MALFORMED_VALUES)
def test_malformed_value_is_refused_with_the_reason(keyword, value, reason, parser):
    with pytest.raises(InvalidMatchValue, match=re.escape(reason)) as raised:
        if parser == "dimse":
            Query.from_identifier(identifier("STUDY", **{keyword: value}))
        else:
            Query.from_qido(Level.STUDY, qido_params(**{keyword: value}))
    assert raised.value.keyword == keyword


@pytest.mark.parametrize("parser", ["dimse", "qido"])
def test_number_that_is_not_an_integer_is_refused(parser):
    keys = {"NumberOfStudyRelatedInstances": "many"}
    with pytest.raises(InvalidMatchValue, match="'many' is not an integer"):
        if parser == "dimse":
            Query.from_identifier(identifier("STUDY", **keys))
        else:
            Query.from_qido(Level.STUDY, qido_params(**keys))


# -- paging, limits and the SQL ----------------------------------------------------------


def test_limit_and_offset_page_through_results_in_arrival_order(archive):
    params = {"limit": ["2"], "offset": ["1"]}
    result = run_query(archive.db, Query.from_qido(Level.STUDY, params))
    assert [ds.AccessionNumber for ds in result.datasets] == ["ACC0002", "X_1%"]
    assert result.more and not result.capped


def test_last_page_says_no_more_results_follow(archive):
    result = run_query(archive.db, Query.from_qido(Level.STUDY, {"offset": ["2"]}))
    assert [ds.AccessionNumber for ds in result.datasets] == ["X_1%", "XA1%"]
    assert not result.more


def test_server_maximum_caps_every_query(archive):
    result = run_query(archive.db, Query.from_qido(Level.STUDY, {}), max_results=3)
    assert len(result.datasets) == 3
    assert result.more and result.capped


def test_query_limit_below_the_server_maximum_is_not_a_cap(archive):
    result = run_query(archive.db, Query.from_qido(Level.STUDY, {"limit": ["1"]}), max_results=3)
    assert len(result.datasets) == 1
    assert result.more and not result.capped


def test_query_built_directly_refuses_a_filter_not_held_at_its_level():
    with pytest.raises(InvalidKey, match="SOPInstanceUID cannot be matched in a STUDY query"):
        Query(Level.STUDY, (SingleValue("SOPInstanceUID", "1.2.3"),))


@pytest.mark.parametrize(
    ("params", "index"),
    [
        ({"PatientName": ["Ngu*"]}, "ix_patients_patient_name"),
        ({"PatientName": ["Nguyễn"]}, "ix_patients_patient_name"),
        ({"PatientName": ["ngu*"], "fuzzymatching": ["true"]}, "ix_patients_patient_name_norm"),
        ({"AccessionNumber": ["ACC*"]}, "ix_studies_accession_number"),
        ({"StudyDate": ["20260101-20260131"]}, "ix_studies_study_date"),
        ({"ModalitiesInStudy": ["MR"]}, "ix_series_modality_study_pk"),
    ],
    ids=["name-prefix", "name-family-component", "fuzzy-name-prefix", "accession-prefix",
         "date-range", "modalities-in-study"],
)
def test_study_query_is_served_by_an_index(archive, params, index):
    plan = _query_plan(archive.db, Query.from_qido(Level.STUDY, params))
    assert index in plan
    assert "SCAN studies" not in plan and "Seq Scan on studies" not in plan


def _query_plan(db, query: Query) -> str:
    """The database's plan for the query, with the parameters bound as run_query binds them."""
    compiled = build_statement(query, db.engine.dialect.name).compile(db.engine)
    with db.reading() as conn:
        if db.is_sqlite:
            params = tuple(compiled.params[name] for name in compiled.positiontup)
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params).all()
            return "\n".join(row[-1] for row in rows)
        # Four studies fit one page; forbid sequential scans to see whether an index can serve.
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        rows = conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).all()
        return "\n".join(row[0] for row in rows)
