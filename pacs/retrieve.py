"""The one retrieve path: which stored instances a request names, and their bytes.

::

    C-MOVE / C-GET identifier ── retrieve_query(identifier, model) ─┐
    WADO (study, series, instance UIDs) ── uid_query(...) ───────────┴─▶ Query (IMAGE level)
                                                                          │
                        resolve(db, query) ── one indexed SELECT ─▶ [StoredInstance, ...]
               resolve_metadata(db, query) ── the same, with each instance's stored JSON
                                                                          │
              open_instance / read_instance / iter_instance_bytes ◀── object store (by key)
              transcode_to_explicit_little_endian ◀── only when the receiver cannot take
                                                      the stored transfer syntax

* **Resolve, then stream.** Resolving asks the index only and returns what each front end needs
  to plan its transfer (SOP class, SOP Instance UID, stored transfer syntax, object key, size);
  the bytes are read one instance at a time, when they are sent.
* **The query model's parser, not a second one.** A retrieve identifier is read by
  :meth:`pacs.query.Query.from_identifier` with only its unique keys as matching keys (PS3.4
  C.4.2.2.1: Patient ID, Study, Series and SOP Instance UIDs, lists of UIDs allowed), then run
  at the IMAGE level, so a study or series becomes its instances in the same statement. Other
  keys a retrieve identifier carries are ignored (tolerant of what we read).
* **Stored bytes as they are.** Nothing here decodes pixel data; transcoding is a separate,
  explicit call for the receiver that accepts none of the stored syntaxes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import BinaryIO

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from sqlalchemy import Select

from pacs.errors import InvalidUID
from pacs.ingest import validate_uid
from pacs.query import (
    Filter,
    InvalidMatchValue,
    Level,
    MissingUniqueKey,
    Model,
    Query,
    SingleValue,
    UidList,
    build_statement,
)
from pacs.query.keys import Key, find_key
from pacs.query.matching import parse_value
from pacs.storage.index import STORAGE_COLUMNS, Index, StoredInstance
from pacs.storage.objects import CHUNK_SIZE, ObjectStore
from pacs.storage.schema import instances
from pacs.storage.sql import Database

log = logging.getLogger(__name__)

#: The unique keys of the four levels, top first (PS3.4 C.6.1.1, C.6.2.1).
UNIQUE_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
#: What :func:`resolve` reads for each instance: the UIDs as query return keys...
_RETURNED_UIDS = ("SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID")
#: ...and where the bytes are, straight from the instance row (STORAGE_COLUMNS).


class TranscodeError(ValueError):
    """The stored instance cannot be turned into an uncompressed little endian dataset."""


def retrieve_query(identifier: Dataset, model: Model) -> Query:
    """The IMAGE-level query for a C-MOVE or C-GET identifier (PS3.4 C.4.2.2.1, C.4.3.2.1).

    Only QueryRetrieveLevel, Specific Character Set and the unique keys are read; every other
    key is ignored. The unique key of the retrieve level and of each level above it in the
    model must be given: one value, or a list of UIDs (for the UID keys).

    Parameters
    ----------
    identifier
        The request identifier.
    model
        The information model of the SOP class the request came in.

    Returns
    -------
    Query
        A query at the IMAGE level whose matches are the instances to send.

    Raises
    ------
    InvalidLevel
        If QueryRetrieveLevel is missing, unknown or not in ``model``.
    InvalidKey
        If a unique key of a level below the retrieve level has a value.
    MissingUniqueKey
        If the unique key of the retrieve level or of a level above it is missing, empty,
        or not a single value or UID list.
    InvalidMatchValue
        If a UID is malformed, or a value cannot be decoded.
    """
    reduced = Dataset()
    for keyword in ("SpecificCharacterSet", "QueryRetrieveLevel", *UNIQUE_KEYS):
        if keyword not in identifier:
            continue
        try:
            reduced[keyword] = identifier[keyword]  # decodes the element
        except Exception as exc:  # a hostile value: say which key, not pydicom's internals
            raise InvalidMatchValue(f"{keyword} cannot be read: {exc}", keyword) from None
    ignored = [keyword for keyword in _keywords(identifier) if keyword not in reduced]
    if ignored:
        log.debug("retrieve identifier keys ignored (not unique keys): %s", ", ".join(ignored))
    query = Query.from_identifier(reduced, model)  # checks the unique keys above the level
    given = {item.keyword: item for item in query.filters}
    key = query.level.unique_key
    if not isinstance(given.get(key), SingleValue | UidList):
        raise MissingUniqueKey(
            f"a {query.level.value} retrieve needs {key} with a value (one value or a list "
            "of UIDs)",
            key,
        )
    return _image_query(query.filters, query.model)


def uid_query(
    study_uid: str, series_uid: str | None = None, sop_instance_uid: str | None = None
) -> Query:
    """The IMAGE-level query for a study, a series of it, or one instance (WADO's paths).

    Raises
    ------
    InvalidMatchValue
        If a UID is malformed.
    """
    filters: list[Filter] = []
    for keyword, uid in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid),
                         ("SOPInstanceUID", sop_instance_uid)):
        if uid is None:
            continue
        item = parse_value(_key(keyword), uid)
        if not isinstance(item, SingleValue):
            raise InvalidMatchValue(f"{keyword} must be one UID, not {uid!r}", keyword)
        filters.append(item)
    return _image_query(tuple(filters), Model.STUDY_ROOT)


def resolve_instance(index: Index, study_uid: str, series_uid: str,
                     sop_instance_uid: str) -> StoredInstance | None:
    """The one instance a WADO path names, or None if it is not in that study and series.

    The same answer as :func:`resolve` of :func:`uid_query` for one instance, through the
    index's prebuilt lookup by SOP Instance UID (its unique index): a rendered frame or a
    thumbnail does not pay for building a query.

    Raises
    ------
    InvalidMatchValue
        If a UID is malformed.
    """
    _validate_path_uids(study_uid, series_uid, sop_instance_uid)
    found = index.find_instance(sop_instance_uid)
    if found is None or found.study_uid != study_uid or found.series_uid != series_uid:
        return None
    return found


def resolve_instance_metadata(index: Index, study_uid: str, series_uid: str,
                              sop_instance_uid: str) -> tuple[StoredInstance, str] | None:
    """As :func:`resolve_instance`, with the instance's stored DICOM JSON (one query)."""
    _validate_path_uids(study_uid, series_uid, sop_instance_uid)
    found = index.find_instance_metadata(sop_instance_uid)
    if found is None or found[0].study_uid != study_uid or found[0].series_uid != series_uid:
        return None
    return found


def _validate_path_uids(study_uid: str, series_uid: str, sop_instance_uid: str) -> None:
    for keyword, uid in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid),
                         ("SOPInstanceUID", sop_instance_uid)):
        try:
            validate_uid(uid, keyword)
        except InvalidUID as exc:
            raise InvalidMatchValue(str(exc), keyword) from None


def resolve(db: Database, query: Query) -> list[StoredInstance]:
    """The stored instances ``query`` matches, in the order they were archived.

    One statement: the unique keys are compared on their unique indexes (a UID list with
    ``IN``) and the instance rows reached through the series and study foreign-key indexes.

    Parameters
    ----------
    db
        The index database.
    query
        An IMAGE-level query, from :func:`retrieve_query` or :func:`uid_query`.

    Returns
    -------
    list of StoredInstance
        Empty when nothing matches.

    Raises
    ------
    IndexUnavailable
        If the database fails.
    """
    statement = resolve_statement(query, db.engine.dialect.name)
    with db.reading() as conn:
        rows = conn.execute(statement).mappings().all()
    return [
        StoredInstance(
            sop_instance_uid=row["SOPInstanceUID"],
            sop_class_uid=row["SOPClassUID"],
            study_uid=row["StudyInstanceUID"],
            series_uid=row["SeriesInstanceUID"],
            transfer_syntax_uid=row["transfer_syntax_uid"],
            object_key=row["object_key"],
            size=row["size"],
            sha256=row["sha256"],
            pixel_data_offset=row["pixel_data_offset"],
            pixel_data_length=row["pixel_data_length"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class InstanceMetadata:
    """An instance's DICOM JSON as ingest stored it (bulk data as relative BulkDataURIs)."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sha256: str
    metadata_json: str


def resolve_metadata(db: Database, query: Query) -> list[InstanceMetadata]:
    """The stored DICOM JSON of every instance ``query`` matches, in the order archived.

    Read from the index in the same one statement as :func:`resolve` (the JSON is a column
    of the instance row): no object is opened.

    Raises
    ------
    IndexUnavailable
        If the database fails.
    """
    statement = resolve_statement(query, db.engine.dialect.name).add_columns(
        instances.c.metadata_json)
    with db.reading() as conn:
        rows = conn.execute(statement).mappings().all()
    return [
        InstanceMetadata(row["StudyInstanceUID"], row["SeriesInstanceUID"],
                         row["SOPInstanceUID"], row["sha256"], row["metadata_json"])
        for row in rows
    ]


def resolve_statement(query: Query, dialect: str) -> Select[tuple[object, ...]]:
    """The SELECT :func:`resolve` runs (exposed so that tests can read its plan)."""
    if query.level is not Level.IMAGE:
        raise ValueError(f"resolve needs an IMAGE-level query, not {query.level.value}")
    return build_statement(query, dialect).add_columns(*STORAGE_COLUMNS)


def open_instance(store: ObjectStore, instance: StoredInstance) -> BinaryIO:
    """A readable stream of the stored Part-10 file; close it when done.

    Raises
    ------
    ObjectNotFound
        If the index names an object the store no longer has.
    StorageUnavailable
        If the store fails.
    """
    return store.open(instance.object_key)


def read_instance(store: ObjectStore, instance: StoredInstance) -> bytes:
    """The whole stored Part-10 file, as archived.

    Raises
    ------
    ObjectNotFound, StorageUnavailable
        As :func:`open_instance`.
    """
    with open_instance(store, instance) as stream:
        return stream.read()


def iter_instance_bytes(
    store: ObjectStore, instance: StoredInstance, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """Yield the stored Part-10 file in chunks of at most ``chunk_size`` bytes.

    Raises
    ------
    ObjectNotFound, StorageUnavailable
        As :func:`open_instance` (when the first chunk is asked for).
    """
    with open_instance(store, instance) as stream:
        while chunk := stream.read(chunk_size):
            yield chunk


def transcode_to_explicit_little_endian(data: bytes) -> Dataset:
    """The instance as a dataset in Explicit VR Little Endian, pixel data decompressed.

    For a receiver that accepts none of the stored syntaxes. Compressed pixel data is
    decoded with pydicom's decoders (pylibjpeg, openjpeg, RLE); the SOP Instance UID is kept.
    A dataset that is already uncompressed little endian (implicit VR, deflated) is returned
    as read: the DIMSE encoder writes it in the syntax the receiver accepted.

    Parameters
    ----------
    data
        The stored Part-10 file.

    Returns
    -------
    Dataset
        With ``file_meta.TransferSyntaxUID`` set to the syntax the dataset is now in.

    Raises
    ------
    TranscodeError
        If the file cannot be read, is big endian, or its pixel data cannot be decoded.
    """
    try:
        dataset = pydicom.dcmread(BytesIO(data))
    except Exception as exc:
        raise TranscodeError(f"cannot read the stored file: {exc}") from exc
    syntax = UID(dataset.file_meta.TransferSyntaxUID)
    if not syntax.is_little_endian:
        raise TranscodeError(f"{syntax.name} cannot be transcoded to little endian")
    if not syntax.is_compressed or "PixelData" not in dataset:
        return dataset
    try:
        dataset.decompress(generate_instance_uid=False)
    except Exception as exc:
        raise TranscodeError(f"cannot decode {syntax.name} pixel data: {exc}") from exc
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset


def _image_query(filters: Sequence[Filter], model: Model) -> Query:
    # The UIDs are return keys so that the statement joins up to the study row.
    return Query(Level.IMAGE, tuple(filters), _RETURNED_UIDS, model=model)


def _key(keyword: str) -> Key:
    key = find_key(keyword, Level.IMAGE)
    if key is None:  # the unique keys are always held
        raise AssertionError(keyword)
    return key


def _keywords(identifier: Dataset) -> list[str]:
    return [
        keyword_for_tag(tag) or str(tag)
        for tag in list(identifier.keys())  # keys: iterating would decode each element
        if tag.group not in (0x0000, 0x0002) and tag.element != 0
    ]
