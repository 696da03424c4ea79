"""The retrieve path: identifiers and UIDs resolved on the index, bytes read from the store."""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import text
from sqlalchemy.dialects import sqlite

from factories import make_instance
from pacs.config import Settings
from pacs.errors import ObjectNotFound
from pacs.ingest import Origin
from pacs.query import InvalidKey, InvalidLevel, InvalidMatchValue, MissingUniqueKey, Model
from pacs.retrieve import (
    TranscodeError,
    iter_instance_bytes,
    read_instance,
    resolve,
    resolve_statement,
    retrieve_query,
    transcode_to_explicit_little_endian,
    uid_query,
)
from pacs.services import open_services

STUDY_A = "1.2.826.0.1.3680043.8.498.21"
STUDY_B = "1.2.826.0.1.3680043.8.498.22"


def _archive(services, study: str, series: str, count: int, patient_id: str = "BN0001"):
    uids = []
    for number in range(count):
        data = make_instance(StudyInstanceUID=study, SeriesInstanceUID=series,
                             PatientID=patient_id, InstanceNumber=number + 1)
        result = services.ingest(data, Origin("import", "test"))
        assert result.ok
        uids.append(result.sop_instance_uid)
    return uids


@pytest.fixture
def two_studies(services):
    """Study A: series .1 (3 instances) and .2 (2); study B of another patient: 1."""
    return {
        "A.1": _archive(services, STUDY_A, f"{STUDY_A}.1", 3),
        "A.2": _archive(services, STUDY_A, f"{STUDY_A}.2", 2),
        "B.1": _archive(services, STUDY_B, f"{STUDY_B}.1", 1, patient_id="BN0002"),
    }


def identifier(**keys: str) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def uids(instances) -> list[str]:
    return [instance.sop_instance_uid for instance in instances]


def test_study_retrieve_resolves_every_instance_of_the_study_in_arrival_order(
    services, two_studies
):
    query = retrieve_query(identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=STUDY_A),
                           Model.STUDY_ROOT)
    assert uids(resolve(services.db, query)) == two_studies["A.1"] + two_studies["A.2"]


def test_series_retrieve_with_a_uid_list_resolves_the_listed_series(services, two_studies):
    query = retrieve_query(
        identifier(QueryRetrieveLevel="SERIES", StudyInstanceUID=STUDY_A,
                   SeriesInstanceUID=f"{STUDY_A}.2\\{STUDY_A}.9"),
        Model.STUDY_ROOT,
    )
    assert uids(resolve(services.db, query)) == two_studies["A.2"]


def test_patient_retrieve_resolves_every_study_of_the_patient(services, two_studies):
    query = retrieve_query(identifier(QueryRetrieveLevel="PATIENT", PatientID="BN0002"),
                           Model.PATIENT_ROOT)
    assert uids(resolve(services.db, query)) == two_studies["B.1"]


def test_resolved_instances_say_where_their_bytes_are(services, two_studies):
    (instance,) = resolve(services.db, uid_query(STUDY_B))
    assert instance.study_uid == STUDY_B
    assert instance.series_uid == f"{STUDY_B}.1"
    assert instance.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert instance.transfer_syntax_uid == ExplicitVRLittleEndian
    assert services.store.size(instance.object_key) == instance.size


def test_retrieve_identifier_keys_other_than_unique_keys_are_ignored(services, two_studies):
    query = retrieve_query(
        identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=STUDY_A, PatientName="Nobody",
                   Modality="MR"),
        Model.STUDY_ROOT,
    )
    assert len(resolve(services.db, query)) == 5


def test_uid_query_resolves_one_instance(services, two_studies):
    sop = two_studies["A.1"][1]
    assert uids(resolve(services.db, uid_query(STUDY_A, f"{STUDY_A}.1", sop))) == [sop]


@pytest.mark.parametrize(
    ("model", "keys", "error", "keyword"),
    [
        (Model.STUDY_ROOT, {"StudyInstanceUID": STUDY_A}, InvalidLevel, "QueryRetrieveLevel"),
        (Model.STUDY_ROOT, {"QueryRetrieveLevel": "STUDY"}, MissingUniqueKey,
         "StudyInstanceUID"),
        (Model.STUDY_ROOT, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "1.2.3"},
         MissingUniqueKey, "StudyInstanceUID"),
        (Model.PATIENT_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": "BN*"},
         MissingUniqueKey, "PatientID"),
        (Model.STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": STUDY_A,
                            "SOPInstanceUID": "1.2.3"}, InvalidKey, "SOPInstanceUID"),
        (Model.STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.x"},
         InvalidMatchValue, "StudyInstanceUID"),
    ],
)
def test_retrieve_identifier_is_refused_naming_the_offending_key(model, keys, error, keyword):
    with pytest.raises(error) as refused:
        retrieve_query(identifier(**keys), model)
    assert refused.value.keyword == keyword


def test_resolve_finds_a_study_through_the_unique_and_foreign_key_indexes(tmp_path):
    services = open_services(Settings.load(environ={}, data_dir=tmp_path))
    try:
        query = uid_query(STUDY_A)
        sql = str(resolve_statement(query, "sqlite").compile(
            dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
        with services.db.reading() as conn:
            plan = " | ".join(row[3] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
    finally:
        services.close()
    assert "SEARCH studies USING COVERING INDEX sqlite_autoindex_studies_1" in plan
    assert "SEARCH series USING INDEX ix_series_study_pk" in plan
    assert "SEARCH instances USING INDEX ix_instances_series_pk" in plan
    assert "SCAN" not in plan


def test_read_instance_returns_the_archived_file(services):
    data = make_instance()
    services.ingest(data, Origin("import", "test"))
    (instance,) = resolve(services.db, uid_query("1.2.826.0.1.3680043.8.498.1"))
    assert read_instance(services.store, instance) == data


def test_iter_instance_bytes_streams_the_archived_file_in_chunks(services):
    data = make_instance()
    services.ingest(data, Origin("import", "test"))
    (instance,) = resolve(services.db, uid_query("1.2.826.0.1.3680043.8.498.1"))
    chunks = list(iter_instance_bytes(services.store, instance, chunk_size=256))
    assert b"".join(chunks) == data
    assert max(map(len, chunks)) == 256


def test_reading_an_instance_whose_object_is_gone_raises_object_not_found(services):
    services.ingest(make_instance(), Origin("import", "test"))
    (instance,) = resolve(services.db, uid_query("1.2.826.0.1.3680043.8.498.1"))
    services.store.delete(instance.object_key)
    with pytest.raises(ObjectNotFound):
        read_instance(services.store, instance)


def test_transcoding_decompresses_to_explicit_little_endian_keeping_the_uid():
    path = Path(get_testdata_file("GDCMJ2K_TextGBR.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = pydicom.dcmread(path)
        dataset = transcode_to_explicit_little_endian(path.read_bytes())
        assert (dataset.pixel_array == original.pixel_array).all()
    assert dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert dataset.SOPInstanceUID == original.SOPInstanceUID
    written = BytesIO()
    dataset.save_as(written, enforce_file_format=True)  # encodable as it says


def test_transcoding_refuses_big_endian():
    with pytest.raises(TranscodeError, match="Big Endian"):
        transcode_to_explicit_little_endian(
            Path(get_testdata_file("ExplVR_BigEnd.dcm")).read_bytes())
