"""WADO-RS: studies, series and instances as DICOM, and their metadata (PS3.18 10.4).

Both go through the one retrieve path (:mod:`pacs.retrieve`): :func:`uid_query` for the
path's UIDs, then :func:`resolve` (where the bytes are) or :func:`resolve_metadata` (the DICOM
JSON ingest stored).

**Instances** are ``multipart/related; type="application/dicom"``, one part per instance,
streamed from the object store in chunks, so a worker's memory stays flat whatever the
study's size. The ``transfer-syntax`` parameter of the ``Accept`` media range chooses the
encoding (PS3.18 8.7.3.5):

* ``*``: each instance as stored (what OHIF asks for), its syntax named in its part's
  Content-Type;
* ``1.2.840.10008.1.2.1`` (Explicit VR Little Endian), which is also the default when the
  parameter is absent: stored bytes when they already are, otherwise decompressed by
  pydicom's decoders (:func:`pacs.retrieve.transcode_to_explicit_little_endian`);
* any other syntax: 406, since the archive does not compress.

**Metadata** is a DICOM JSON array of the instances' stored JSON: no object is opened and no
JSON is parsed; each relative ``BulkDataURI`` becomes an absolute one under the instance's
URL. It is sent gzip-compressed when the client accepts it, with an ETag made from the
instances' SHA-256 digests (stored instances never change), so a revisit with
``If-None-Match`` costs a 304; the compressed body of a series is kept in a small in-memory
cache, so the second radiologist to open it does not pay for the compression.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from io import BytesIO

from flask import Blueprint, Response, current_app, request, stream_with_context
from pydicom.uid import ExplicitVRLittleEndian

from pacs.errors import ObjectNotFound
from pacs.retrieve import (
    InstanceMetadata,
    StoredInstance,
    TranscodeError,
    iter_instance_bytes,
    read_instance,
    resolve,
    resolve_metadata,
    transcode_to_explicit_little_endian,
    uid_query,
)
from pacs.storage.objects import ObjectStore
from pacs.web.accept import AS_STORED, requested_syntax
from pacs.web.dicomjson import DICOM_JSON
from pacs.web.errors import error_response

log = logging.getLogger("pacs.web")
blueprint = Blueprint("wado", __name__)
#: Compressed metadata bodies kept per worker process (most recent first out last).
METADATA_CACHE_BYTES = 64 * 1024 * 1024


@blueprint.get("/studies/<study>")
def retrieve_study(study: str) -> Response:
    """RetrieveStudy: every instance of the study."""
    return _retrieve(study)


@blueprint.get("/studies/<study>/series/<series>")
def retrieve_series(study: str, series: str) -> Response:
    """RetrieveSeries."""
    return _retrieve(study, series)


@blueprint.get("/studies/<study>/series/<series>/instances/<instance>")
def retrieve_instance(study: str, series: str, instance: str) -> Response:
    """RetrieveInstance."""
    return _retrieve(study, series, instance)


@blueprint.get("/studies/<study>/metadata")
def study_metadata(study: str) -> Response:
    """RetrieveStudyMetadata."""
    return _metadata(study)


@blueprint.get("/studies/<study>/series/<series>/metadata")
def series_metadata(study: str, series: str) -> Response:
    """RetrieveSeriesMetadata."""
    return _metadata(study, series)


@blueprint.get("/studies/<study>/series/<series>/instances/<instance>/metadata")
def instance_metadata(study: str, series: str, instance: str) -> Response:
    """RetrieveInstanceMetadata."""
    return _metadata(study, series, instance)


# -- instances --------------------------------------------------------------------------------


def _retrieve(study: str, series: str | None = None, instance: str | None = None) -> Response:
    from pacs.web import services_of

    syntax = requested_syntax(request.headers.get("Accept", ""), "application/dicom")
    if syntax is None:
        return error_response(
            406, 'instances are sent as multipart/related; type="application/dicom" with '
                 f"transfer-syntax {AS_STORED} or {ExplicitVRLittleEndian} (no compression)")
    services = services_of(current_app)
    found = resolve(services.db, uid_query(study, series, instance))
    if not found:
        return error_response(404, "no such study, series or instance in the archive")
    boundary = uuid.uuid4().hex
    body = stream_with_context(_parts(services.store, found, syntax, boundary))
    response = Response(body, content_type=(
        f'multipart/related; type="application/dicom"; boundary={boundary}'))
    response.headers["Cache-Control"] = "private, max-age=31536000, immutable" if instance \
        else "private, no-cache"  # an instance never changes; a series may grow
    return response


def _parts(store: ObjectStore, found: list[StoredInstance], syntax: str,
           boundary: str) -> Iterator[bytes]:
    """The multipart body, one instance at a time."""
    for instance in found:
        try:
            if syntax == AS_STORED or instance.transfer_syntax_uid == ExplicitVRLittleEndian:
                chunks = iter_instance_bytes(store, instance)
                first = next(chunks, b"")  # the object is opened here: fail before the header
                sent_syntax = instance.transfer_syntax_uid
                yield _part_header(boundary, sent_syntax)
                yield first
                yield from chunks
            else:
                data = explicit_little_endian(read_instance(store, instance))
                yield _part_header(boundary, ExplicitVRLittleEndian)
                yield data
        except (ObjectNotFound, TranscodeError) as exc:
            # The response has started: the instance is left out and the reason logged.
            log.error("WADO-RS: instance %s left out: %s", instance.sop_instance_uid, exc)
            continue
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def _part_header(boundary: str, syntax: str) -> bytes:
    return (f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={syntax}"
            "\r\n\r\n").encode("ascii")


def explicit_little_endian(data: bytes) -> bytes:
    """A stored Part-10 file re-encoded in Explicit VR Little Endian, decompressed."""
    dataset = transcode_to_explicit_little_endian(data)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = BytesIO()
    dataset.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return out.getvalue()


# -- metadata ---------------------------------------------------------------------------------


class _MetadataCache:
    """Compressed metadata bodies by ETag, at most ``limit`` bytes, least recently used out."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._bodies: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, etag: str) -> bytes | None:
        with self._lock:
            body = self._bodies.get(etag)
            if body is not None:
                self._bodies.move_to_end(etag)
            return body

    def put(self, etag: str, body: bytes) -> None:
        if len(body) > self.limit:
            return
        with self._lock:
            if etag in self._bodies:
                return
            self._bodies[etag] = body
            self._size += len(body)
            while self._size > self.limit:
                _, dropped = self._bodies.popitem(last=False)
                self._size -= len(dropped)


_CACHE = _MetadataCache(METADATA_CACHE_BYTES)


def _metadata(study: str, series: str | None = None, instance: str | None = None) -> Response:
    from pacs.web import service_url, services_of

    if request.accept_mimetypes and not request.accept_mimetypes.best_match(
            (DICOM_JSON, "application/json")):
        return error_response(406, f"metadata is only available as {DICOM_JSON}")
    found = resolve_metadata(services_of(current_app).db, uid_query(study, series, instance))
    if not found:
        return error_response(404, "no such study, series or instance in the archive")
    base = service_url()
    digest = hashlib.sha256(base.encode())
    for item in found:
        digest.update(item.sha256.encode("ascii"))
    etag = digest.hexdigest()[:32]
    if etag in request.if_none_match:
        response = Response(status=304)
    else:
        gzipped = "gzip" in request.accept_encodings
        body = _CACHE.get(etag) if gzipped else None
        if body is None:
            text = "[" + ",".join(_absolute_bulk_uris(item, base) for item in found) + "]"
            body = text.encode("utf-8")
            if gzipped:
                body = gzip.compress(body, compresslevel=6)
                _CACHE.put(etag, body)
        response = Response(body, content_type=DICOM_JSON)
        if gzipped:
            response.headers["Content-Encoding"] = "gzip"
    response.set_etag(etag)
    response.headers["Vary"] = "Accept-Encoding"
    response.headers["Cache-Control"] = "private, no-cache"  # revalidate: a series may grow
    return response


_RELATIVE_BULK_URI = '"BulkDataURI":"bulkdata/'


def _absolute_bulk_uris(instance: InstanceMetadata, base: str) -> str:
    """The stored JSON with each relative BulkDataURI under the instance's URL.

    The stored JSON is compact (no spaces), and a quote inside a value is escaped, so the
    pattern only ever matches the key itself: no parsing is needed.
    """
    url = (f"{base}/studies/{instance.study_uid}/series/{instance.series_uid}"
           f"/instances/{instance.sop_instance_uid}/bulkdata/")
    return instance.metadata_json.replace(_RELATIVE_BULK_URI, f'"BulkDataURI":"{url}')
