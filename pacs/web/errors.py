"""HTTP errors as JSON with a reason, for every route of the web service.

A refused request gets its status and ``{"error": reason}``; the query model's and the
index's exceptions map to statuses here, in one place: a bad parameter, key or value is 400,
an index that cannot be reached is 503. Anything unexpected is logged and answered 500
without details.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from pacs.errors import IndexUnavailable, InvalidUID, StorageUnavailable
from pacs.query import InvalidQuery

log = logging.getLogger("pacs.web")


def register(app: Flask) -> None:
    """Install the error handlers on ``app``."""
    app.register_error_handler(InvalidQuery, _bad_request)
    app.register_error_handler(InvalidUID, _bad_request)
    app.register_error_handler(IndexUnavailable, _unavailable)
    app.register_error_handler(StorageUnavailable, _unavailable)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)


def error_response(status: int, reason: str) -> Response:
    """A JSON error response: ``{"error": reason}`` with ``status``."""
    response = jsonify({"error": reason})
    response.status_code = status
    return response


def _bad_request(exc: Exception) -> Response:
    return error_response(400, str(exc))


def _unavailable(exc: Exception) -> Response:
    log.error("web request failed: %s", exc)
    return error_response(503, "the archive's index or object store is unavailable")


def _http_error(exc: HTTPException) -> Response:
    return error_response(exc.code or 500, exc.description or exc.name)


def _unexpected(exc: Exception) -> Response:
    log.exception("unexpected error in a web request")
    return error_response(500, "internal error")
