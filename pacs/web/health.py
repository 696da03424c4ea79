"""Health checks for load balancers and orchestrators (no patient data, no authentication).

* ``GET /healthz``: 200 while the process serves requests;
* ``GET /readyz``: 200 when the index answers a query and the object store a lookup, 503
  with the failing part named otherwise, so a load balancer stops sending work to a node that
  could not archive or serve it. It also says whether this process's audit records are
  being written (``"audit": "ok"`` or ``"failing"``): a node whose audit fails still serves
  images, but monitoring should see it.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from pacs.storage.keys import instance_key
from pacs.web.errors import error_response

log = logging.getLogger("pacs.web")
blueprint = Blueprint("health", __name__)
#: A key of the archive's form that no object has (the SHA-256 of nothing archivable):
#: looking it up exercises the store without reading anything.
_PROBE_KEY = instance_key("0" * 64)


@blueprint.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Response:
    """The index and the object store both answer."""
    from pacs.web import services_of

    services = services_of(current_app)
    try:
        with services.db.reading() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("not ready: index: %s", exc)
        return error_response(503, "the index does not answer")
    try:
        services.store.exists(_PROBE_KEY)
    except Exception as exc:
        log.warning("not ready: object store: %s", exc)
        return error_response(503, "the object store does not answer")
    audit = "ok" if services.audit.status().ok else "failing"
    return jsonify({"status": "ready", "audit": audit})
