"""Sequence matching (PS3.4 C.2.2.2.6) on the sequence keys the index holds.

Two studies: A has two procedure codes and a series with two requested procedures, B one
code and a series without any.

========  =================================================  ==============================
study     ProcedureCodeSequence (CodeValue, scheme, meaning)  RequestAttributesSequence
========  =================================================  ==============================
A         CT-CHEST, LOCAL, Chụp CT ngực; CT-ABD, RADLEX, -    RP1/SPS1, RP2/SPS2
B         MR-HEAD, LOCAL, Chụp MR sọ não                      (none)
========  =================================================  ==============================
"""

from __future__ import annotations

import subprocess
import warnings
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from factories import make_instance
from pacs.ingest import Origin
from pacs.query import InvalidMatchValue, Level, Query, build_statement, run_query
from pacs.scp.server import DicomReceiver
from peers import free_port

STUDY_A, STUDY_B = "1.2.826.0.1.3680043.8.498.501", "1.2.826.0.1.3680043.8.498.502"
ORIGIN = Origin("import", "test")


def _code(value: str, scheme: str, meaning: str | None = None) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    if meaning:
        code.CodeMeaning = meaning
    return code


def _request(procedure: str, step: str) -> Dataset:
    item = Dataset()
    item.RequestedProcedureID = procedure
    item.ScheduledProcedureStepID = step
    return item


@pytest.fixture
def archive(services):
    a = make_instance(
        StudyInstanceUID=STUDY_A, SeriesInstanceUID=STUDY_A + ".1", AccessionNumber="A",
        ProcedureCodeSequence=[_code("CT-CHEST", "LOCAL", "Chụp CT ngực"),
                               _code("CT-ABD", "RADLEX")],
        RequestAttributesSequence=[_request("RP1", "SPS1"), _request("RP2", "SPS2")],
    )
    b = make_instance(
        StudyInstanceUID=STUDY_B, SeriesInstanceUID=STUDY_B + ".1", AccessionNumber="B",
        PatientID="BN0002", Modality="MR",
        ProcedureCodeSequence=[_code("MR-HEAD", "LOCAL", "Chụp MR sọ não")],
    )
    for data in (a, b):
        assert services.ingest(data, ORIGIN).ok
    return services


def study_identifier(**keys: Any) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    ds.AccessionNumber = ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def find(services, query: Query) -> list[Dataset]:
    return run_query(services.db, query).datasets


def codes(dataset: Dataset) -> list[tuple[str, ...]]:
    return [tuple(str(item.get(keyword, "")) for keyword in ("CodeValue",
                                                              "CodingSchemeDesignator"))
            for item in dataset.ProcedureCodeSequence]


def test_a_study_matches_when_one_item_has_the_item_value(archive):
    query = Query.from_identifier(study_identifier(
        ProcedureCodeSequence=[_code("CT-ABD", "")]))
    (study,) = find(archive, query)
    assert study.AccessionNumber == "A"


def test_only_the_matching_items_come_back_with_only_the_item_keys_asked(archive):
    key = Dataset()
    key.CodeValue = "CT-ABD"
    key.CodeMeaning = ""
    (study,) = find(archive, Query.from_identifier(study_identifier(ProcedureCodeSequence=[key])))
    (item,) = study.ProcedureCodeSequence
    assert item.CodeValue == "CT-ABD"
    assert "CodeMeaning" in item and not item.CodeMeaning  # asked for, and CT-ABD has none
    assert "CodingSchemeDesignator" not in item


def test_every_item_key_must_match_within_the_same_item(archive):
    # CT-CHEST is LOCAL and CT-ABD is RADLEX: no one item is CT-CHEST and RADLEX.
    query = Query.from_identifier(study_identifier(
        ProcedureCodeSequence=[_code("CT-CHEST", "RADLEX")]))
    assert find(archive, query) == []
    query = Query.from_identifier(study_identifier(
        ProcedureCodeSequence=[_code("CT-CHEST", "LOCAL")]))
    assert [study.AccessionNumber for study in find(archive, query)] == ["A"]


def test_item_values_use_the_matching_types_of_their_vr(archive):
    wildcard = Query.from_identifier(study_identifier(ProcedureCodeSequence=[_code("*-HEAD", "")]))
    assert [study.AccessionNumber for study in find(archive, wildcard)] == ["B"]
    listed = Query.from_identifier(study_identifier(
        ProcedureCodeSequence=[_code("MR-HEAD\\CT-CHEST", "")]))
    assert [study.AccessionNumber for study in find(archive, listed)] == ["A", "B"]


def test_a_sequence_key_without_items_returns_every_item_whole(archive):
    query = Query.from_identifier(study_identifier(ProcedureCodeSequence=[]))
    studies = {study.AccessionNumber: study for study in find(archive, query)}
    assert codes(studies["A"]) == [("CT-CHEST", "LOCAL"), ("CT-ABD", "RADLEX")]
    assert studies["A"].ProcedureCodeSequence[0].CodeMeaning == "Chụp CT ngực"
    assert studies["A"].SpecificCharacterSet == "ISO_IR 192"


def test_series_match_on_their_request_attributes(archive):
    item = Dataset()
    item.RequestedProcedureID = "RP2"
    item.ScheduledProcedureStepID = ""
    query = Query.from_qido(Level.SERIES, {"RequestAttributesSequence.RequestedProcedureID":
                                           ["RP2"]})
    (found,) = find(archive, query)
    assert found.SeriesInstanceUID == STUDY_A + ".1"
    assert [i.RequestedProcedureID for i in found.RequestAttributesSequence] == ["RP2"]


def test_qido_sequence_paths_name_keys_of_one_item(archive):
    params = {"ProcedureCodeSequence.CodeValue": ["CT-CHEST"],
              "ProcedureCodeSequence.CodingSchemeDesignator": ["RADLEX"]}
    assert find(archive, Query.from_qido(Level.STUDY, params)) == []
    params["ProcedureCodeSequence.CodingSchemeDesignator"] = ["LOCAL"]
    (study,) = find(archive, Query.from_qido(Level.STUDY, params))
    assert study.AccessionNumber == "A"


def test_a_text_value_for_a_sequence_key_is_refused():
    with pytest.raises(InvalidMatchValue, match="ProcedureCodeSequence is a sequence"):
        Query.from_qido(Level.STUDY, {"ProcedureCodeSequence": ["CT-CHEST"]})


def test_sequence_matching_is_served_by_an_index_of_the_items(archive):
    query = Query.from_qido(Level.STUDY, {"ProcedureCodeSequence.CodeValue": ["CT-CHEST"]})
    compiled = build_statement(query, archive.db.engine.dialect.name).compile(archive.db.engine)
    with archive.db.reading() as conn:
        if archive.db.is_sqlite:
            params = tuple(compiled.params[name] for name in compiled.positiontup)
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params).all()
            plan = "\n".join(row[-1] for row in rows)
        else:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            rows = conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).all()
            plan = "\n".join(row[0] for row in rows)
    # An index of the items finds the owners (PostgreSQL may take the owner index on so few
    # rows); no table is scanned.
    assert "ix_sequence_items_" in plan, plan
    assert "SCAN studies" not in plan and "Seq Scan" not in plan, plan


def test_findscu_finds_a_study_by_procedure_code(dcmtk, archive, tmp_path):
    settings = archive.settings.with_overrides(dicom_host="127.0.0.1", dicom_port=free_port())
    server = DicomReceiver(settings, archive)
    server.start()
    try:
        done = subprocess.run(
            [dcmtk.findscu, "-S", "-aec", settings.aet, "-X", "-od", str(tmp_path),
             "-k", "QueryRetrieveLevel=STUDY", "-k", "AccessionNumber",
             "-k", "ProcedureCodeSequence[0].CodeValue=CT-CHEST",
             "-k", "ProcedureCodeSequence[0].CodeMeaning",
             "127.0.0.1", str(server.port)],
            capture_output=True, timeout=60,
        )
    finally:
        server.stop(grace=5)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (match,) = [pydicom.dcmread(path) for path in sorted(tmp_path.glob("rsp*.dcm"))]
    assert match.AccessionNumber == "A"
    (item,) = match.ProcedureCodeSequence
    assert (item.CodeValue, item.CodeMeaning) == ("CT-CHEST", "Chụp CT ngực")
