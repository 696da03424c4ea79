"""The one ingest path: every instance enters the archive through :meth:`Ingestor.ingest`.

C-STORE, ``pacs import`` (and later STOW-RS and peer imports) hand over the bytes of a Part-10
file and an :class:`Origin`; they get back an :class:`IngestResult` and only translate it into
their protocol. In order, and why:

1. **Parse the header only** (pydicom, stopping before the pixel data; pixels are never decoded
   or re-encoded here) and **check the file is complete** by walking element lengths, so a cut
   transfer is refused instead of archived as half an image.
2. **Validate** the Study, Series and SOP Instance UIDs (digits and dots, at most 64
   characters, no empty component) and the SOP class, before any I/O.
3. **Skip known instances**: a SOP Instance UID already indexed is reported as already stored
   and nothing is written (the first copy wins).
4. **Write the object** under a key made from the SHA-256 of the bytes
   (:mod:`pacs.storage.keys`); the store makes it durable before returning. The same bytes give
   the same key, so a re-send is a no-op write. (Overlapping this write with the header work
   on a second thread was measured slower: the GIL hand-off costs more than it hides.)
5. **Index it** once the object is durable, in one transaction
   (:meth:`pacs.storage.index.Index.add_instance`, which shares the transaction with
   concurrent callers: group commit).
6. **Only then report success.**

If step 5 fails the object is merely unreferenced: it is never visible, and a sweep (an admin
command still to come; :meth:`Index.all_object_keys` is its input) can remove or re-index
unreferenced objects older than a grace period. Nothing on this path
ever deletes an object, so no failure here can destroy an archived copy.

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
import zlib
from dataclasses import dataclass
from enum import Enum
from io import BytesIO
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from pacs.attributes import (
    INSTANCE_ATTRIBUTES,
    PATIENT_ATTRIBUTES,
    SERIES_ATTRIBUTES,
    STUDY_ATTRIBUTES,
    read_level,
)
from pacs.dicomfile import check_complete
from pacs.errors import (
    IndexUnavailable,
    InvalidInstance,
    InvalidUID,
    StorageFull,
    StorageUnavailable,
    UnsupportedSOPClass,
)
from pacs.storage.index import Index, InstanceRecord
from pacs.storage.keys import instance_key
from pacs.storage.objects import ObjectStore

log = logging.getLogger(__name__)

UID_MAX_LENGTH = 64
_UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULK_DATA_THRESHOLD = 1024
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


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
    size: int = 0
    reason: str = ""

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


class Ingestor:
    """The ingest path bound to one object store and one index."""

    def __init__(self, store: ObjectStore, index: Index) -> None:
        self.store = store
        self.index = index

    def ingest(self, data: bytes | BinaryIO, origin: Origin) -> IngestResult:
        """Archive one Part-10 instance; never raises for bad input or backend failures.

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
            ds, transfer_syntax = _read_header(data)
            sop_uid = validate_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID")
            sop_class = validate_uid(ds.get("SOPClassUID"), "SOPClassUID")
            study_uid = validate_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID")
            validate_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID")
            _check_sop_class(sop_class)
            done = {"sop_instance_uid": sop_uid, "sop_class_uid": sop_class,
                    "study_uid": study_uid, "size": len(data)}
            if self.index.has_instance(sop_uid):
                return IngestResult(IngestStatus.ALREADY_STORED, **done)
            digest = hashlib.sha256(data).hexdigest()
            key = instance_key(digest)
            record = _record(ds, transfer_syntax, key, digest, len(data), origin)
            self.store.put(key, data)  # durable when this returns
            added = self.index.add_instance(record)
            status = IngestStatus.STORED if added else IngestStatus.ALREADY_STORED
            log.debug("%s %s from %s (%d bytes)", status.value, sop_uid, origin, len(data))
            return IngestResult(status, **done)
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


def _read_header(data: bytes) -> tuple[Dataset, str]:
    """Parse the file meta and the dataset up to the pixel data; check the file is whole."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InvalidInstance(
            "not a DICOM Part-10 file: no 128-byte preamble and 'DICM' prefix (PS3.10 7.1)"
        )
    try:
        ds = dcmread(BytesIO(data), stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise InvalidInstance(f"not a DICOM file: {exc}") from exc
    except (EOFError, ValueError, KeyError, TypeError, OverflowError, zlib.error) as exc:
        raise InvalidInstance(f"unreadable DICOM header: {exc}") from exc
    transfer_syntax = str(ds.file_meta.get("TransferSyntaxUID", "") or "").rstrip("\x00 ")
    if not transfer_syntax:
        raise InvalidInstance("the file meta has no TransferSyntaxUID (0002,0010)")
    validate_uid(transfer_syntax, "TransferSyntaxUID")
    check_complete(data, transfer_syntax)
    return ds, transfer_syntax


def _check_sop_class(sop_class: str) -> None:
    # Private and newer storage classes must still be archived, so only classes known to
    # belong to another service (query, verification, worklist, DICOMDIR...) are refused.
    service = uid_to_service_class(sop_class)
    if sop_class == MEDIA_STORAGE_DIRECTORY or (
        service is not StorageServiceClass and service is not ServiceClass
    ):
        raise UnsupportedSOPClass(f"SOP class {sop_class} is not a storage SOP class")


def _record(
    ds: Dataset, transfer_syntax: str, key: str, digest: str, size: int, origin: Origin
) -> InstanceRecord:
    patient = read_level(ds, PATIENT_ATTRIBUTES)
    study = read_level(ds, STUDY_ATTRIBUTES)
    series = read_level(ds, SERIES_ATTRIBUTES)
    instance = read_level(ds, INSTANCE_ATTRIBUTES)
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
        transfer_syntax_uid=transfer_syntax,
        object_key=key,
        size=size,
        sha256=digest,
        metadata_json=metadata_json(ds),
        origin=str(origin),
    )


def metadata_json(ds: Dataset) -> str:
    """The header as DICOM JSON (PS3.18 F.2), without bulk data, for fast metadata replies.

    Binary values over :data:`BULK_DATA_THRESHOLD` bytes are left out here; the retrieve path
    serves them from the stored object. Invalid elements are skipped rather than failing.
    """
    return json.dumps(_json_dataset(ds), ensure_ascii=False, separators=(",", ":"))


def _json_dataset(ds: Dataset) -> dict[str, Any]:
    # Element by element rather than ``Dataset.to_json_dict(suppress_invalid_tags=True)``:
    # that flag switches pydicom's *global* validation mode to "raise" and back, which is not
    # thread-safe; two receiver threads interleaving it left every later read in strict mode.
    encoded: dict[str, Any] = {}
    for element in ds:
        try:
            if element.VR == "SQ":
                items = [_json_dataset(item) for item in element.value or ()]
                encoded[f"{element.tag:08X}"] = (
                    {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                )
            elif not _is_bulk(element):
                encoded[f"{element.tag:08X}"] = element.to_json_dict(None, 2**31)
        except Exception as exc:  # a malformed optional attribute is left out, not fatal
            log.warning("left %s out of the metadata: %s", element.tag, exc)
    return encoded


def _is_bulk(element: Any) -> bool:
    return (
        element.VR in _BULK_VRS
        and isinstance(element.value, bytes)
        and len(element.value) > BULK_DATA_THRESHOLD
    )
