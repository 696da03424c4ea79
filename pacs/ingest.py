"""The one ingest path: every instance enters the archive through :meth:`Ingestor.ingest`.

C-STORE, ``pacs import`` and STOW-RS (and later peer imports) hand over the bytes of a Part-10
file and an :class:`Origin`; they get back an :class:`IngestResult` and only translate it into
their protocol. In order, and why:

1. **Read the header in one pass** (:mod:`pacs.header`: element headers walked once, values
   converted straight to DICOM JSON; pixels are never decoded or re-encoded here), which also
   **checks the file is complete**, so a cut transfer is refused instead of archived as half
   an image.
2. **Validate** the Study, Series and SOP Instance UIDs (digits and dots, at most 64
   characters, no empty component) and the SOP class, before any I/O.
3. **Stage the object** under a key made from the SHA-256 of the bytes
   (:mod:`pacs.storage.keys`): its bytes are durable but not yet visible under the key. The
   same bytes give the same key, so a re-send of the same file writes nothing.
4. **Group commit** (:mod:`pacs.groupcommit`): callers that arrive while another commit runs
   wait, and the next one commits them all at once. For the group, the commit drops the
   instances whose SOP Instance UID is already indexed (reported as already stored, their
   staged bytes discarded: the first copy wins; on S3, where a PUT is visible at once, they
   stay as an unreferenced object for the sweep), **publishes** the other objects (each
   folder synced once for the group), and then **indexes** them in one transaction
   (:meth:`pacs.storage.index.Index.add_instances`). A disk flush costs the same for one
   instance or twenty, so concurrent associations share them instead of queueing for them.
5. **Only then report success**, to each caller for its own instance.

If step 4 fails after publishing, the objects are merely unreferenced: they are never visible,
and a sweep (an admin command still to come; :meth:`Index.all_object_keys` is its input) can
remove or re-index unreferenced objects older than a grace period. Nothing on this path ever
deletes a published object, so no failure here can destroy an archived copy.

Rules for files that are not clean Part-10 instances (documented, tested on pydicom's corpus):
a file without the preamble and ``DICM`` prefix, or whose file meta has no TransferSyntaxUID,
is refused (the encoding would be a guess); a dataset not encoded in its declared transfer
syntax is refused; a truncated file is refused; malformed *optional* attributes (a bad VR, an
undecodable name) are tolerated: the instance is archived as sent and the attribute is left out
of the index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, BinaryIO

from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from pacs.attributes import (
    INSTANCE_ATTRIBUTES,
    PATIENT_ATTRIBUTES,
    SERIES_ATTRIBUTES,
    SERIES_SEQUENCES,
    STUDY_ATTRIBUTES,
    STUDY_SEQUENCES,
    read_level,
    read_sequences,
)
from pacs.errors import (
    IndexUnavailable,
    InvalidInstance,
    InvalidUID,
    StorageFull,
    StorageUnavailable,
    UnsupportedSOPClass,
)
from pacs.groupcommit import GroupCommit
from pacs.header import Header, read_header
from pacs.storage.index import Index, InstanceRecord
from pacs.storage.keys import instance_key
from pacs.storage.objects import ObjectStore, StagedObject

log = logging.getLogger(__name__)

UID_MAX_LENGTH = 64
_UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
MAX_GROUP = 64  # instances per group commit; bounds how long the index's write lock is held


class IngestStatus(Enum):
    """What happened to one instance; each front end maps these to its protocol's codes."""

    STORED = "stored"
    ALREADY_STORED = "already stored"
    INVALID = "invalid"
    UNSUPPORTED_SOP_CLASS = "unsupported SOP class"
    STORAGE_FULL = "storage full"
    FAILED = "failed"


@dataclass(frozen=True)
class Origin:
    """Where an instance came from: ``kind`` is dimse, import, stow or peer."""

    kind: str
    name: str = ""
    address: str = ""

    def __str__(self) -> str:
        where = f"@{self.address}" if self.address else ""
        return f"{self.kind}:{self.name}{where}"


@dataclass(frozen=True)
class IngestResult:
    """The outcome of :meth:`Ingestor.ingest`; ``reason`` says why when it is not a success."""

    status: IngestStatus
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    size: int = 0
    reason: str = ""
    patient_id: str | None = None  # for the audit trail

    @property
    def ok(self) -> bool:
        """True if the instance is in the archive (stored now or before)."""
        return self.status in (IngestStatus.STORED, IngestStatus.ALREADY_STORED)


def validate_uid(value: Any, keyword: str) -> str:
    """Return ``value`` as a UID string, or raise :class:`InvalidUID` saying what is wrong.

    A UID is digits and dots, at most 64 characters, with no empty component (PS3.5 9.1).
    """
    text = "" if value is None else str(value).rstrip("\x00 ")
    if not text:
        raise InvalidUID(f"{keyword} is missing or empty")
    if len(text) > UID_MAX_LENGTH:
        raise InvalidUID(f"{keyword} is {len(text)} characters long (at most 64)")
    if not _UID_PATTERN.match(text):
        shown = text if len(text) <= 64 else text[:61] + "..."
        raise InvalidUID(
            f"{keyword} {shown!r} is not a valid UID (digits and dots, no empty component)"
        )
    return text


@dataclass(frozen=True)
class _Arrival:
    """One instance read, checked and staged, waiting for its group commit."""

    record: InstanceRecord
    staged: StagedObject

    @property
    def sop_uid(self) -> str:
        return self.record.instance["sop_instance_uid"]


class Ingestor:
    """The ingest path bound to one object store and one index."""

    def __init__(self, store: ObjectStore, index: Index) -> None:
        self.store = store
        self.index = index
        self._commits: GroupCommit[_Arrival, bool | Exception] = GroupCommit(
            self._commit, MAX_GROUP)

    def ingest(self, data: bytes | BinaryIO, origin: Origin) -> IngestResult:
        """Archive one Part-10 instance; never raises for bad input or backend failures.

        Safe to call from many threads at once: callers that arrive together share one
        object-store flush and one index transaction.

        Parameters
        ----------
        data
            The complete Part-10 file (preamble, file meta, dataset), as bytes or a stream.
        origin
            Who sent it, for the index and the logs.

        Returns
        -------
        IngestResult
            STORED or ALREADY_STORED once the instance is durable in the object store and
            the index; otherwise the failure status and a reason for the sender.
        """
        sop_uid: str | None = None
        try:
            if not isinstance(data, bytes | bytearray):
                data = data.read()
            header = _read_header(data)
            sop_uid = validate_uid(header.uid(SOP_INSTANCE_UID), "SOPInstanceUID")
            sop_class = validate_uid(header.uid(SOP_CLASS_UID), "SOPClassUID")
            study_uid = validate_uid(header.uid(STUDY_INSTANCE_UID), "StudyInstanceUID")
            series_uid = validate_uid(header.uid(SERIES_INSTANCE_UID), "SeriesInstanceUID")
            _check_sop_class(sop_class)
            done = {"sop_instance_uid": sop_uid, "sop_class_uid": sop_class,
                    "study_uid": study_uid, "series_uid": series_uid, "size": len(data)}
            digest = hashlib.sha256(data).hexdigest()
            key = instance_key(digest)
            record = _record(header, key, digest, len(data), origin)
            staged = self.store.stage(key, data)  # its bytes durable, not yet visible
            outcome = self._commits.submit(_Arrival(record, staged))
            if isinstance(outcome, Exception):
                raise outcome
            status = IngestStatus.STORED if outcome else IngestStatus.ALREADY_STORED
            log.debug("%s %s from %s (%d bytes)", status.value, sop_uid, origin, len(data))
            return IngestResult(status, **done, patient_id=record.patient.get("patient_id"))
        except UnsupportedSOPClass as exc:
            return IngestResult(IngestStatus.UNSUPPORTED_SOP_CLASS, sop_uid, reason=str(exc))
        except InvalidInstance as exc:
            return IngestResult(IngestStatus.INVALID, sop_uid, reason=str(exc))
        except StorageFull as exc:
            log.error("storage full while storing %s: %s", sop_uid, exc)
            return IngestResult(IngestStatus.STORAGE_FULL, sop_uid, reason=str(exc))
        except (StorageUnavailable, IndexUnavailable) as exc:
            log.error("could not archive %s: %s", sop_uid, exc)
            return IngestResult(IngestStatus.FAILED, sop_uid, reason=str(exc))
        except Exception as exc:  # the path must answer every sender, whatever went wrong
            log.exception("unexpected error while archiving %s from %s", sop_uid, origin)
            return IngestResult(IngestStatus.FAILED, sop_uid, reason=f"internal error: {exc}")

    def _commit(self, arrivals: Sequence[_Arrival]) -> list[bool | Exception]:
        """Make a group of staged instances visible: objects first, then the index.

        Run by one caller on behalf of everyone in the group. An instance whose SOP Instance
        UID is indexed already is dropped before anything is published (the first copy
        wins); the others' objects are published, durably, before the index transaction that
        refers to them commits, so a crash in between leaves an unreferenced object, never
        a row pointing at nothing.
        """
        try:
            known = self.index.indexed_instances([arrival.sop_uid for arrival in arrivals])
        except Exception:
            self.store.discard([arrival.staged for arrival in arrivals])
            raise
        self.store.discard([arrival.staged for arrival in arrivals if arrival.sop_uid in known])
        fresh = [arrival for arrival in arrivals if arrival.sop_uid not in known]
        self.store.publish([arrival.staged for arrival in fresh])
        added = iter(self.index.add_instances([arrival.record for arrival in fresh]))
        return [False if arrival.sop_uid in known else next(added) for arrival in arrivals]


def _read_header(data: bytes) -> Header:
    """Parse the file meta and the dataset's header; check the file is whole."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InvalidInstance(
            "not a DICOM Part-10 file: no 128-byte preamble and 'DICM' prefix (PS3.10 7.1)"
        )
    header = read_header(data)
    validate_uid(header.transfer_syntax_uid, "TransferSyntaxUID")
    if header.skipped:
        log.info("archived with unreadable optional values left out of the index: %s",
                 "; ".join(header.skipped))
    return header


def _check_sop_class(sop_class: str) -> None:
    # Private and newer storage classes must still be archived, so only classes known to
    # belong to another service (query, verification, worklist, DICOMDIR...) are refused.
    service = uid_to_service_class(sop_class)
    if sop_class == MEDIA_STORAGE_DIRECTORY or (
        service is not StorageServiceClass and service is not ServiceClass
    ):
        raise UnsupportedSOPClass(f"SOP class {sop_class} is not a storage SOP class")


def _record(header: Header, key: str, digest: str, size: int, origin: Origin) -> InstanceRecord:
    dataset = header.dataset
    patient = read_level(dataset, PATIENT_ATTRIBUTES)
    study = read_level(dataset, STUDY_ATTRIBUTES)
    series = read_level(dataset, SERIES_ATTRIBUTES)
    instance = read_level(dataset, INSTANCE_ATTRIBUTES)
    if patient["patient_id"]:
        patient_key = f"{patient['issuer_of_patient_id'] or ''}|{patient['patient_id']}"
    else:
        # Without a PatientID there is nothing to merge on: one anonymous patient per study,
        # never one shared "empty ID" patient collecting unrelated people's studies.
        patient_key = f"|no-id|{study['study_uid']}"
    return InstanceRecord(
        patient_key=patient_key,
        patient=patient,
        study=study,
        series=series,
        instance=instance,
        transfer_syntax_uid=header.transfer_syntax_uid,
        object_key=key,
        size=size,
        sha256=digest,
        metadata_json=metadata_json(header),
        origin=str(origin),
        pixel_data_offset=header.pixel_data_offset,
        pixel_data_length=header.pixel_data_length,
        study_sequences=read_sequences(dataset, STUDY_SEQUENCES),
        series_sequences=read_sequences(dataset, SERIES_SEQUENCES),
    )


def metadata_json(header: Header) -> str:
    """The header as DICOM JSON (PS3.18 F.2) for fast metadata replies.

    Large binary values are not copied: they carry a relative ``BulkDataURI`` instead
    (:mod:`pacs.header`), which the retrieve path serves from the stored object.
    """
    return json.dumps(header.dataset, ensure_ascii=False, separators=(",", ":"))
