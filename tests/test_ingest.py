"""The ingest path, run against each backend pair (folder + SQLite, S3 + PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import pytest
from pydicom import config as pydicom_config
from pydicom.uid import generate_uid
from sqlalchemy import select

from factories import STUDY_UID, make_dataset, make_instance, to_part10
from pacs.errors import IndexUnavailable, StorageFull
from pacs.ingest import IngestStatus, Origin
from pacs.services import open_services
from pacs.storage.index import Index
from pacs.storage.schema import instances, patients, series, studies

ORIGIN = Origin("import", "test")


def rows(services, table):
    with services.db.reading() as conn:
        return [row._mapping for row in conn.execute(select(table))]


def stored_objects(services):
    return sorted(services.store.list("instances/"))


def test_stored_instance_is_in_the_object_store_byte_for_byte(services):
    data = make_instance()
    result = services.ingest(data, ORIGIN)
    assert result.status is IngestStatus.STORED
    stored = services.index.find_instance(result.sop_instance_uid)
    with services.store.open(stored.object_key) as stream:
        assert stream.read() == data


def test_index_records_size_and_sha256(services):
    data = make_instance()
    result = services.ingest(data, ORIGIN)
    stored = services.index.find_instance(result.sop_instance_uid)
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.object_key.endswith(stored.sha256)


def test_stream_input_is_accepted(services):
    data = make_instance()
    assert services.ingest(BytesIO(data), ORIGIN).status is IngestStatus.STORED


def test_study_series_and_instance_attributes_are_indexed(services):
    services.ingest(make_instance(), ORIGIN)
    (study,) = rows(services, studies)
    (one_series,) = rows(services, series)
    (instance,) = rows(services, instances)
    assert study["study_uid"] == STUDY_UID
    assert study["accession_number"] == "ACC0001"
    assert study["study_description"] == "CT ngực"
    assert study["study_date"] == "20260315"
    assert one_series["modality"] == "CT"
    assert one_series["series_number"] == 1
    assert instance["rows"] == 16
    assert instance["transfer_syntax_uid"] == "1.2.840.10008.1.2.1"


def test_vietnamese_utf8_name_is_stored_as_unicode_and_normalised(services):
    services.ingest(make_instance(), ORIGIN)
    (patient,) = rows(services, patients)
    assert patient["patient_name"] == "Nguyễn^Văn An"
    assert patient["patient_name_norm"] == "NGUYEN^VAN AN"
    (study,) = rows(services, studies)
    assert study["referring_physician_name_norm"] == "TRAN^BINH"


def test_latin1_name_is_decoded_per_specific_character_set(services):
    ds = make_dataset(SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Zoë",
                      StudyDescription="Thorax")
    services.ingest(to_part10(ds), ORIGIN)
    (patient,) = rows(services, patients)
    assert patient["patient_name"] == "Müller^Zoë"
    assert patient["patient_name_norm"] == "MULLER^ZOE"


def test_d_with_stroke_is_normalised_to_d(services):
    services.ingest(make_instance(PatientName="Đặng^Thị Đào"), ORIGIN)
    (patient,) = rows(services, patients)
    assert patient["patient_name_norm"] == "DANG^THI DAO"


def test_metadata_json_holds_the_header_without_pixel_data(services):
    services.ingest(make_instance(), ORIGIN)
    (instance,) = rows(services, instances)
    metadata = json.loads(instance["metadata_json"])
    assert metadata["00100010"]["Value"] == [{"Alphabetic": "Nguyễn^Văn An"}]
    assert metadata["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}


def _with_invalid_instance_number() -> bytes:
    data = to_part10(make_dataset(InstanceNumber=1))
    element = data.index(b"\x20\x00\x13\x00IS\x02\x00")  # (0020,0013) IS, 2 bytes: "1 "
    return data[: element + 8] + b"1A" + data[element + 10 :]


def test_an_invalid_optional_value_is_left_out_of_the_metadata_and_the_rest_kept(services):
    result = services.ingest(_with_invalid_instance_number(), ORIGIN)
    assert result.status is IngestStatus.STORED
    (instance,) = rows(services, instances)
    metadata = json.loads(instance["metadata_json"])
    assert "00200013" not in metadata
    assert metadata["0020000D"]["Value"] == [STUDY_UID]
    assert instance["instance_number"] is None


def test_concurrent_ingest_of_invalid_values_leaves_pydicom_validation_mode_alone(services):
    # pydicom's "suppress invalid tags" JSON option switches a process-wide mode and is not
    # thread-safe; a race once left every later read in strict mode. The receiver ingests on
    # many threads at once, so nothing on the path may touch pydicom's global settings.
    before = pydicom_config.settings.reading_validation_mode
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: services.ingest(_with_invalid_instance_number(), ORIGIN),
                      range(48)))
    assert pydicom_config.settings.reading_validation_mode == before


def test_counts_and_modalities_in_study(services):
    for number in range(3):
        services.ingest(make_instance(InstanceNumber=number + 1), ORIGIN)
    services.ingest(
        make_instance(SeriesInstanceUID=STUDY_UID + ".2", Modality="SR", SeriesNumber=2), ORIGIN
    )
    (study,) = rows(services, studies)
    assert study["num_series"] == 2
    assert study["num_instances"] == 4
    assert study["modalities_in_study"] == "CT\\SR"
    counts = {row["series_uid"]: row["num_instances"] for row in rows(services, series)}
    assert counts == {STUDY_UID + ".1": 3, STUDY_UID + ".2": 1}


def test_same_instance_twice_is_one_instance(services):
    data = make_instance()
    first = services.ingest(data, ORIGIN)
    second = services.ingest(data, ORIGIN)
    assert (first.status, second.status) == (IngestStatus.STORED, IngestStatus.ALREADY_STORED)
    assert second.ok
    assert services.index.counts()["instances"] == 1
    assert len(stored_objects(services)) == 1
    (study,) = rows(services, studies)
    assert study["num_instances"] == 1


def test_same_sop_instance_uid_with_other_bytes_keeps_the_first_copy(services):
    uid = generate_uid()
    first = make_instance(SOPInstanceUID=uid, StudyDescription="first")
    services.ingest(first, ORIGIN)
    result = services.ingest(make_instance(SOPInstanceUID=uid, StudyDescription="second"), ORIGIN)
    assert result.status is IngestStatus.ALREADY_STORED
    stored = services.index.find_instance(uid)
    assert stored.sha256 == hashlib.sha256(first).hexdigest()


def test_same_sop_instance_uid_with_other_bytes_is_not_published_in_a_folder_store(services):
    uid = generate_uid()
    services.ingest(make_instance(SOPInstanceUID=uid, StudyDescription="first"), ORIGIN)
    services.ingest(make_instance(SOPInstanceUID=uid, StudyDescription="second"), ORIGIN)
    if services.settings.object_store == "filesystem":
        assert len(stored_objects(services)) == 1
        assert not _staged_files(services)
    else:  # an S3 PUT is visible at once: the second copy stays, unreferenced, for the sweep
        assert len(stored_objects(services)) == 2


def test_study_attributes_keep_first_value_and_fill_blanks(services):
    services.ingest(make_instance(StudyDescription="CT ngực", AccessionNumber=None), ORIGIN)
    services.ingest(make_instance(StudyDescription="changed", AccessionNumber="ACC9"), ORIGIN)
    (study,) = rows(services, studies)
    assert study["study_description"] == "CT ngực"
    assert study["accession_number"] == "ACC9"


def test_study_is_not_refiled_under_another_patient(services):
    services.ingest(make_instance(PatientID="BN0001"), ORIGIN)
    result = services.ingest(make_instance(PatientID="BN0002", PatientName="Other^Person"), ORIGIN)
    assert result.status is IngestStatus.STORED
    (study,) = rows(services, studies)
    (patient,) = rows(services, patients)
    assert study["patient_pk"] == patient["pk"]
    assert patient["patient_id"] == "BN0001"
    assert study["num_instances"] == 2


def test_studies_without_patient_id_do_not_share_a_patient(services):
    services.ingest(make_instance(PatientID=None, PatientName="A^One"), ORIGIN)
    services.ingest(
        make_instance(PatientID=None, PatientName="B^Two", StudyInstanceUID="1.2.3.9",
                      SeriesInstanceUID="1.2.3.9.1"),
        ORIGIN,
    )
    assert sorted(p["patient_name"] for p in rows(services, patients)) == ["A^One", "B^Two"]


def test_two_studies_of_one_patient_share_the_patient(services):
    services.ingest(make_instance(), ORIGIN)
    services.ingest(
        make_instance(StudyInstanceUID="1.2.3.9", SeriesInstanceUID="1.2.3.9.1"), ORIGIN
    )
    assert len(rows(services, patients)) == 1
    assert len(rows(services, studies)) == 2


def _truncated() -> bytes:
    return make_instance()[:-100]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"this is a text file, not an image\n" * 20, "not a DICOM Part-10 file"),
        (b"", "not a DICOM Part-10 file"),
        (_truncated(), "truncated"),
        (make_instance()[:400], "truncated"),
        (make_instance()[:200], "file meta is cut short"),
        (make_instance(StudyInstanceUID=None), "StudyInstanceUID is missing"),
        (make_instance(SeriesInstanceUID=None), "SeriesInstanceUID is missing"),
        (make_instance(SOPInstanceUID=None), "SOPInstanceUID is missing"),
        (make_instance(SOPInstanceUID=""), "SOPInstanceUID is missing"),
        (make_instance(SOPClassUID=None), "SOPClassUID is missing"),
        (make_instance(StudyInstanceUID="../../etc/passwd"), "not a valid UID"),
        (make_instance(SeriesInstanceUID="1.2..3"), "not a valid UID"),
        (make_instance(SOPInstanceUID="1.2.3."), "not a valid UID"),
        (make_instance(SOPInstanceUID="1.2.3.abc"), "not a valid UID"),
        (make_instance(StudyInstanceUID="1." + "2" * 64), "characters long"),
        (make_instance(SOPInstanceUID="1.2/../../x"), "not a valid UID"),
    ],
    ids=[
        "text-file", "empty", "truncated-pixel-data", "cut-in-header", "cut-in-file-meta",
        "no-study-uid", "no-series-uid", "no-sop-uid", "empty-sop-uid", "no-sop-class",
        "path-traversal-uid",
        "empty-uid-component", "trailing-dot-uid", "letters-in-uid", "65-char-uid",
        "slash-in-uid",
    ],
)
def test_bad_input_is_refused_with_a_reason_and_nothing_written(services, data, reason):
    result = services.ingest(data, ORIGIN)
    assert result.status is IngestStatus.INVALID
    assert reason in result.reason
    assert stored_objects(services) == []
    assert services.index.counts()["instances"] == 0


def test_bad_input_leaves_earlier_instances_untouched(services):
    good = make_instance()
    services.ingest(good, ORIGIN)
    services.ingest(make_instance(StudyInstanceUID="../../x"), ORIGIN)
    services.ingest(b"garbage" * 100, ORIGIN)
    assert services.index.counts()["instances"] == 1
    assert len(stored_objects(services)) == 1


def test_non_storage_sop_class_is_refused(services):
    result = services.ingest(make_instance(SOPClassUID="1.2.840.10008.1.1"), ORIGIN)
    assert result.status is IngestStatus.UNSUPPORTED_SOP_CLASS
    assert "not a storage SOP class" in result.reason


def test_private_storage_sop_class_is_archived(services):
    result = services.ingest(make_instance(SOPClassUID="1.2.840.113619.4.30"), ORIGIN)
    assert result.status is IngestStatus.STORED


def test_full_object_store_is_reported_as_storage_full(services, monkeypatch):
    def full(_key, _data):
        raise StorageFull("no space left")

    monkeypatch.setattr(services.store, "stage", full)
    result = services.ingest(make_instance(), ORIGIN)
    assert result.status is IngestStatus.STORAGE_FULL
    assert services.index.counts()["instances"] == 0


def test_index_failure_is_reported_and_leaves_no_row(services, monkeypatch):
    monkeypatch.setattr(services.index, "add_instances", _raise_index_unavailable)
    result = services.ingest(make_instance(), ORIGIN)
    assert result.status is IngestStatus.FAILED
    assert "database went away" in result.reason
    monkeypatch.undo()
    assert services.index.counts()["instances"] == 0


def test_index_down_before_publishing_leaves_no_staged_file(services, monkeypatch):
    monkeypatch.setattr(services.index, "indexed_instances", _raise_index_unavailable)
    result = services.ingest(make_instance(), ORIGIN)
    assert result.status is IngestStatus.FAILED
    monkeypatch.undo()
    assert services.index.counts()["instances"] == 0
    if services.settings.object_store == "filesystem":  # an S3 PUT is visible at once
        assert stored_objects(services) == []
        assert not _staged_files(services)


def test_retry_after_index_failure_stores_the_instance(services, monkeypatch):
    data = make_instance()
    monkeypatch.setattr(services.index, "add_instances", _raise_index_unavailable)
    assert services.ingest(data, ORIGIN).status is IngestStatus.FAILED
    monkeypatch.undo()
    assert services.ingest(data, ORIGIN).status is IngestStatus.STORED
    assert len(stored_objects(services)) == 1


def _raise_index_unavailable(*_args):
    raise IndexUnavailable("database went away")


def _staged_files(services):
    """Temp files of a folder store's writes in progress (or left behind)."""
    return [p for p in services.store.root.rglob(".*.tmp") if p.is_file()]


def test_four_threads_ingesting_lose_nothing(services):
    blobs = [make_instance(InstanceNumber=i + 1) for i in range(40)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: services.ingest(b, ORIGIN), blobs + blobs[:10]))
    assert all(r.ok for r in results)
    assert sum(r.status is IngestStatus.STORED for r in results) == 40
    assert services.index.counts()["instances"] == 40
    (study,) = rows(services, studies)
    assert study["num_instances"] == 40


def _ingest_in_child(settings, blobs, barrier):
    services = open_services(settings)
    barrier.wait()
    results = [services.ingest(b, Origin("import", f"pid {os.getpid()}")) for b in blobs]
    services.close()
    if not all(r.ok for r in results):
        raise SystemExit(1)


def test_two_processes_ingesting_into_one_index_lose_nothing(services):
    settings = services.settings
    # Both processes send the same study (and some of the same instances) at the same time.
    blobs = [make_instance(InstanceNumber=i + 1) for i in range(30)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    children = [
        context.Process(target=_ingest_in_child, args=(settings, part, barrier))
        for part in (blobs[:20], blobs[10:])
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0, 0]
    assert services.index.counts()["instances"] == 30
    (study,) = rows(services, studies)
    assert study["num_instances"] == 30
    assert study["num_series"] == 1


def _crash_during_index_commit(settings, data):
    """Write the object, then die inside the index transaction, before it commits."""
    services = open_services(settings)
    original = Index._write

    def die(self, conn, records):
        original(self, conn, records)
        os._exit(3)  # a power cut between the object write and the index commit

    Index._write = die
    services.ingest(data, ORIGIN)
    os._exit(0)


def test_crash_between_object_write_and_index_commit_leaves_no_dangling_row(services):
    services.ingest(make_instance(InstanceNumber=1), ORIGIN)
    data = make_instance(InstanceNumber=2)
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=_crash_during_index_commit, args=(services.settings, data))
    child.start()
    child.join(120)
    assert child.exitcode == 3
    assert services.index.counts()["instances"] == 1
    for row in rows(services, instances):
        assert services.store.exists(row["object_key"])
    # The sender was never told "stored", so it sends again, and this time it is archived.
    assert services.ingest(data, ORIGIN).status is IngestStatus.STORED
    assert services.index.counts()["instances"] == 2


def test_concurrent_callers_share_transactions_without_failing_each_other(services,
                                                                           monkeypatch):
    # One instance whose index write fails must not fail the instances committed with it.
    bad_uid = "1.2.826.0.1.3680043.8.498.666"
    original = Index._write

    def write(self, conn, records):
        if any(record.instance["sop_instance_uid"] == bad_uid for record in records):
            raise IndexUnavailable("simulated failure of one row")
        return original(self, conn, records)

    monkeypatch.setattr(Index, "_write", write)
    blobs = [make_instance(InstanceNumber=i + 1) for i in range(24)]
    blobs.append(make_instance(SOPInstanceUID=bad_uid))
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda data: services.ingest(data, ORIGIN), blobs))
    assert [r.status for r in results[:-1]] == [IngestStatus.STORED] * 24
    assert results[-1].status is IngestStatus.FAILED
    assert services.index.counts()["instances"] == 24


def test_more_concurrent_callers_than_one_group_holds_are_all_indexed(services, monkeypatch):
    monkeypatch.setattr(services.ingestor._commits, "max_group", 2)
    blobs = [make_instance(InstanceNumber=i + 1) for i in range(30)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda data: services.ingest(data, ORIGIN), blobs))
    assert [r.status for r in results] == [IngestStatus.STORED] * 30
    assert services.index.counts()["instances"] == 30
