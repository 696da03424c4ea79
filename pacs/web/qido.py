"""QIDO-RS: searches for studies, series and instances (PS3.18 10.6) on the shared query model.

Each route turns its path and query parameters into a :class:`pacs.query.Query`
(:meth:`Query.from_qido`: matching by keyword or tag, ``includefield``, ``limit``,
``offset``, ``fuzzymatching``, sequence paths), runs it with :func:`pacs.query.run_query`, and
writes the rows as DICOM JSON (:mod:`pacs.web.dicomjson`) with each match's RetrieveURL.

Responses (PS3.18 8.3.4.4, 10.6.3):

* 200 with ``application/dicom+json``: an array with one object per match, gzip-compressed
  when the client accepts it;
* 204 without a body when nothing matches;
* a ``Warning: 299`` header when more matches exist than were sent (the ``limit`` asked
  for, or the server's ``find_max_results``), and one naming the keys the index cannot match
  on (they are returned empty and do not restrict the search);
* 400 with a reason for a malformed parameter, key, value or UID; 406 when the client accepts
  neither ``application/dicom+json`` nor ``application/json``.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from flask import Blueprint, Response, current_app, g, request

from pacs.config import Settings
from pacs.query import Level, Query, run_query
from pacs.web.dicomjson import DICOM_JSON, to_dicom_json
from pacs.web.errors import error_response
from pacs.web.scope import visible_institutions

blueprint = Blueprint("qido", __name__)
_ACCEPTED = (DICOM_JSON, "application/json")
MORE_RESULTS = "There are additional results that can be requested"
#: Answers larger than this are gzip-compressed for clients that accept it (a study list of
#: a hundred studies shrinks ~10 times).
GZIP_ABOVE = 1024


@blueprint.get("/studies")
def search_for_studies() -> Response:
    """SearchForStudies."""
    return _search(Level.STUDY, {})


@blueprint.get("/series")
def search_for_series() -> Response:
    """SearchForSeries, all studies."""
    return _search(Level.SERIES, {})


@blueprint.get("/studies/<study>/series")
def search_for_study_series(study: str) -> Response:
    """SearchForSeries of one study."""
    return _search(Level.SERIES, {"StudyInstanceUID": study})


@blueprint.get("/instances")
def search_for_instances() -> Response:
    """SearchForInstances, all studies."""
    return _search(Level.IMAGE, {})


@blueprint.get("/studies/<study>/instances")
def search_for_study_instances(study: str) -> Response:
    """SearchForInstances of one study."""
    return _search(Level.IMAGE, {"StudyInstanceUID": study})


@blueprint.get("/studies/<study>/series/<series>/instances")
def search_for_series_instances(study: str, series: str) -> Response:
    """SearchForInstances of one series."""
    return _search(Level.IMAGE, {"StudyInstanceUID": study, "SeriesInstanceUID": series})


def _search(level: Level, path_uids: dict[str, str]) -> Response:
    from pacs.web import service_url, services_of

    if request.accept_mimetypes and not request.accept_mimetypes.best_match(_ACCEPTED):
        return error_response(406, f"search results are only available as {DICOM_JSON}")
    settings: Settings = current_app.config["PACS_SETTINGS"]
    query = Query.from_qido(level, request.args.to_dict(flat=False), path_uids)
    result = run_query(services_of(current_app).db, query,
                       max_results=settings.find_max_results,
                       institutions=visible_institutions())
    g.audit_count = len(result.rows)
    base = service_url()
    keywords = [*result.return_keys, "RetrieveURL"]
    matches = [
        to_dicom_json({**row, "RetrieveURL": _retrieve_url(base, level, row)}, keywords)
        for row in result.rows
    ]
    if matches:
        body = json.dumps(matches, ensure_ascii=False).encode("utf-8")
        gzipped = len(body) > GZIP_ABOVE and "gzip" in request.accept_encodings
        response = Response(gzip.compress(body, compresslevel=6) if gzipped else body,
                            content_type=DICOM_JSON)
        response.vary.add("Accept-Encoding")
        if gzipped:
            response.headers["Content-Encoding"] = "gzip"
    else:
        response = Response(status=204)
    warnings = []
    if result.more:
        warnings.append(f'299 {base}: "{MORE_RESULTS}"')
    if query.ignored:
        warnings.append(f'299 {base}: "The following attributes were not matched: '
                        f'{", ".join(query.ignored)}"')
    for warning in warnings:
        response.headers.add("Warning", warning)
    response.headers["Cache-Control"] = "private, no-cache"
    return response


def _retrieve_url(base: str, level: Level, row: dict[str, Any]) -> str:
    """The WADO-RS URL of a match (PS3.18 10.6.3.3.1: RetrieveURL)."""
    url = f"{base}/studies/{row.get('StudyInstanceUID') or ''}"
    if level in (Level.SERIES, Level.IMAGE):
        url += f"/series/{row.get('SeriesInstanceUID') or ''}"
    if level is Level.IMAGE:
        url += f"/instances/{row.get('SOPInstanceUID') or ''}"
    return url
