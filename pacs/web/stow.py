"""STOW-RS: storing instances over HTTP (PS3.18 10.5), through the one ingest path.

``POST /dicom-web/studies`` (any study) or ``POST /dicom-web/studies/{study}`` (that study
only) with a ``multipart/related; type="application/dicom"`` body, one instance per part.
The body is read part by part (:mod:`pacs.web.multipart`) and each instance goes through
:meth:`pacs.services.Services.ingest` as soon as it has arrived, so memory holds one instance
at a time and a large study never sits whole in a worker.

The answer is a DICOM JSON object (PS3.18 10.5.3):

* ReferencedSOPSequence: each instance now in the archive (stored now, or before), with its
  RetrieveURL;
* FailedSOPSequence: each refused one, with the FailureReason the C-STORE SCP would have
  answered for the same ingest outcome (:mod:`pacs.scp.statuses`: 0xC000 not understood,
  0x0122 SOP class not supported, 0xA700 out of resources, 0x0110 processing failure), and
  0xA901 for an instance of another study than the one in the path (as other archives use);
* status 200 when all were stored, 202 with a ``Warning`` when some failed, 409 when none
  were; 400 for a body that is not the multipart it claims (the parts before the break are
  stored), 413 above ``stow_max_bytes``, 415 for another content type.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, current_app, g, request

from pacs.header import read_header
from pacs.ingest import (
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    IngestResult,
    Origin,
    validate_uid,
)
from pacs.scp.statuses import STORE_STATUS
from pacs.web.dicomjson import DICOM_JSON, to_dicom_json
from pacs.web.errors import error_response
from pacs.web.multipart import MultipartError, iter_parts

log = logging.getLogger("pacs.web")
blueprint = Blueprint("stow", __name__)
#: FailureReason for an instance of another study than the request's path names.
OTHER_STUDY = 0xA901
_NOT_UNDERSTOOD = 0xC000


@blueprint.post("/studies")
def store_instances() -> Response:
    """Store instances of any study."""
    return _store(None)


@blueprint.post("/studies/<study>")
def store_study_instances(study: str) -> Response:
    """Store instances of one study; instances of others are refused."""
    validate_uid(study, "StudyInstanceUID")  # InvalidUID: 400 through the error handlers
    return _store(study)


def _store(study: str | None) -> Response:
    from pacs.web import service_url, services_of

    mimetype = request.mimetype
    options = request.mimetype_params
    if mimetype != "multipart/related" or options.get("type", "").lower() not in (
            "application/dicom", ""):
        return error_response(415, 'send instances as multipart/related; '
                                   'type="application/dicom" (one instance per part)')
    boundary = options.get("boundary")
    if not boundary:
        return error_response(400, "the multipart Content-Type has no boundary")
    services = services_of(current_app)
    base = service_url()
    origin = Origin("stow", "", request.remote_addr or "")
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    try:
        for headers, body in iter_parts(request.stream.read, boundary):
            part_type = headers.get("content-type", "application/dicom").split(";")[0]
            if part_type.strip().lower() != "application/dicom":
                failed.append(_failure(None, None, _NOT_UNDERSTOOD))
                continue
            other = _other_study(body, study)
            if other is not None:
                log.warning("STOW-RS: %s of study %s refused on /studies/%s", other[2],
                            other[0], study)
                failed.append(_failure(other[1], other[2], OTHER_STUDY))
                continue
            result = services.ingest(body, origin)
            if result.ok:
                stored.append(_reference(result, base))
                _note_for_audit(result)
            else:
                log.warning("STOW-RS from %s: %s refused: %s", origin, result.sop_instance_uid,
                            result.reason)
                failed.append(_failure(result.sop_class_uid, result.sop_instance_uid,
                                       STORE_STATUS[result.status]))
    except MultipartError as exc:
        reason = f"{exc}; {len(stored)} instance(s) before it were stored"
        return error_response(400, reason)
    if not stored and not failed:
        return error_response(400, "the body holds no instance")
    answer: dict[str, Any] = {}
    if study is not None:
        answer["RetrieveURL"] = f"{base}/studies/{study}"
    if failed:
        answer["FailedSOPSequence"] = failed
    if stored:
        answer["ReferencedSOPSequence"] = stored
    keywords = [keyword for keyword in ("RetrieveURL", "FailedSOPSequence",
                                        "ReferencedSOPSequence") if keyword in answer]
    response = Response(json.dumps(to_dicom_json(answer, keywords), ensure_ascii=False),
                        content_type=DICOM_JSON)
    if failed and not stored:
        response.status_code = 409
    elif failed:
        response.status_code = 202
        response.headers["Warning"] = (f'299 {base}: "{len(failed)} of '
                                       f'{len(failed) + len(stored)} instances were not stored"')
    log.info("STOW-RS from %s: %d stored, %d failed", origin, len(stored), len(failed))
    return response


def _note_for_audit(result: IngestResult) -> None:
    """Count a stored instance for the request's audit record (:mod:`pacs.web.auditing`):
    the study is named when every instance stored belongs to one."""
    g.audit_count = g.get("audit_count", 0) + 1
    studies = g.setdefault("audit_studies", set())
    studies.add(result.study_uid)
    g.audit_study = result.study_uid if len(studies) == 1 else None


def _other_study(data: bytes, study: str | None) -> tuple[str, str, str] | None:
    """(study, SOP class, SOP instance UIDs) of an instance of another study than
    ``study``; None when it is of ``study``, or cannot be read here (the ingest path then
    says why)."""
    if study is None:
        return None
    try:
        header = read_header(data)
        found = header.uid(STUDY_INSTANCE_UID)
    except Exception:
        return None
    if not found or found == study:
        return None
    return found, header.uid(SOP_CLASS_UID), header.uid(SOP_INSTANCE_UID)


def _reference(result: IngestResult, base: str) -> dict[str, Any]:
    return {
        "ReferencedSOPClassUID": result.sop_class_uid,
        "ReferencedSOPInstanceUID": result.sop_instance_uid,
        "RetrieveURL": (f"{base}/studies/{result.study_uid}/series/{result.series_uid}"
                        f"/instances/{result.sop_instance_uid}"),
    }


def _failure(sop_class: str | None, sop_instance: str | None, reason: int) -> dict[str, Any]:
    return {"ReferencedSOPClassUID": sop_class, "ReferencedSOPInstanceUID": sop_instance,
            "FailureReason": reason}
