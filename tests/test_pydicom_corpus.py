"""pydicom's own test files through the ingest path: every transfer syntax, big endian,
deflate, multi-frame, the character-set files, and the deliberately broken ones.

Valid files are stored byte for byte and indexed with correctly decoded names. Broken files
follow the documented rules of :mod:`pacs.ingest` and never crash it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import select

from pacs.ingest import IngestStatus, Origin
from pacs.storage.schema import instances, patients, series, studies

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent
CHARSET_FILES = TEST_FILES.parent / "charset_files"
CORPUS = sorted(TEST_FILES.glob("*.dcm")) + sorted(CHARSET_FILES.glob("*.dcm"))

# The documented rule for each broken file, as (status, words of the reason).
NOT_PART10 = (IngestStatus.INVALID, "not a DICOM Part-10 file")
TRUNCATED = (IngestStatus.INVALID, "truncated")
NO_STUDY_UID = (IngestStatus.INVALID, "StudyInstanceUID is missing")
NO_SOP_UID = (IngestStatus.INVALID, "SOPInstanceUID is missing")
REFUSED = {
    "ExplVR_BigEndNoMeta.dcm": NOT_PART10,
    "ExplVR_LitEndNoMeta.dcm": NOT_PART10,
    "no_meta.dcm": NOT_PART10,
    "rtstruct.dcm": NOT_PART10,
    "MR_truncated.dcm": TRUNCATED,
    "rtplan_truncated.dcm": TRUNCATED,
    "meta_missing_tsyntax.dcm": (IngestStatus.INVALID, "no TransferSyntaxUID"),
    "SC_rgb_jpeg.dcm": (IngestStatus.INVALID, "not encoded in its declared transfer syntax"),
    # Fragments and test snippets, not whole instances:
    "JPEGLSNearLossless_08.dcm": NO_STUDY_UID,
    "JPEGLSNearLossless_16.dcm": NO_STUDY_UID,
    "SC_rgb_jls_lossy_line.dcm": NO_STUDY_UID,
    "SC_rgb_jls_lossy_sample.dcm": NO_STUDY_UID,
    "UN_sequence.dcm": NO_SOP_UID,
    "empty_charset_LEI.dcm": NO_SOP_UID,
    "nested_priv_SQ.dcm": NO_SOP_UID,
    "no_meta_group_length.dcm": NO_SOP_UID,
    "priv_SQ.dcm": NO_SOP_UID,
    "chrSQEncoding.dcm": NO_SOP_UID,
    "chrSQEncoding1.dcm": NO_SOP_UID,
}


def _decoded_name(path: Path) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    name = ds.get("PatientName")
    return str(name).strip() or None if name is not None else None


def test_corpus_is_present():
    assert len(CORPUS) > 80
    assert set(REFUSED) <= {p.name for p in CORPUS}


def test_every_corpus_file_follows_its_rule(services):
    seen_sop_uids: set[str] = set()
    for path in CORPUS:
        data = path.read_bytes()
        result = services.ingest(data, Origin("import", path.name))
        if path.name in REFUSED:
            status, words = REFUSED[path.name]
            assert (result.status, words in result.reason) == (status, True), path.name
            continue
        assert result.ok, (path.name, result.reason)
        # Several corpus files are the same instance in other transfer syntaxes: the first
        # copy of a SOP Instance UID is kept, the others are reported as already stored.
        expected = (
            IngestStatus.ALREADY_STORED
            if result.sop_instance_uid in seen_sop_uids
            else IngestStatus.STORED
        )
        assert result.status is expected, path.name
        seen_sop_uids.add(result.sop_instance_uid)
        if expected is IngestStatus.STORED:
            stored = services.index.find_instance(result.sop_instance_uid)
            with services.store.open(stored.object_key) as stream:
                assert stream.read() == data, f"{path.name} not stored byte for byte"
            assert _indexed_name(services, result.sop_instance_uid) == _decoded_name(path), (
                path.name
            )
    assert services.index.counts()["instances"] == len(seen_sop_uids)


def _indexed_name(services, sop_instance_uid: str) -> str | None:
    query = (
        select(patients.c.patient_name)
        .select_from(
            instances.join(series, instances.c.series_pk == series.c.pk)
            .join(studies, series.c.study_pk == studies.c.pk)
            .join(patients, studies.c.patient_pk == patients.c.pk)
        )
        .where(instances.c.sop_instance_uid == sop_instance_uid)
    )
    with services.db.reading() as conn:
        return conn.execute(query).scalar_one()


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("chrFren.dcm", "Buc^Jérôme"),
        ("chrGerm.dcm", "Äneas^Rüdiger"),
        ("chrGreek.dcm", "Διονυσιος"),
        ("chrRuss.dcm", "Люкceмбypг"),
        ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("chrX1.dcm", "Wang^XiaoDong=王^小東"),
        ("chrKoreanMulti.dcm", "김희중"),
    ],
)
def test_character_sets_are_decoded_to_unicode(services, file_name, expected):
    result = services.ingest((CHARSET_FILES / file_name).read_bytes(), Origin("import"))
    assert result.status is IngestStatus.STORED
    assert _indexed_name(services, result.sop_instance_uid) == expected
