"""The share-link API: radiologists (and admins) share a study for consultation.

* ``POST /api/shares`` with JSON ``{"study_uid", "series_uid"?, "hours", "pin"?,
  "deidentify"?, "note"?}``: 201 with the link's ``url`` (shown once: only a hash is kept);
* ``GET /api/shares``: the caller's links (an admin sees everyone's);
* ``DELETE /api/shares/<id>``: revoke a link, at once (the caller's own; an admin any);
* ``GET /shares``: the page that does the above in a browser.

Creation and revocation are audited. Opening a link is :mod:`pacs.web.login`'s.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from pacs.accounts import AccountError
from pacs.audit import Action, ActorKind, AuditEvent, Outcome
from pacs.sharing import ShareLink
from pacs.web.auth import principal
from pacs.web.errors import error_response
from pacs.web.scope import study_facts

blueprint = Blueprint("shares", __name__)


@blueprint.get("/shares")
def shares_page() -> Response:
    """The page to find a study, share it, and see and revoke one's links."""
    from pacs.web.admin_page import page_response

    return page_response("shares")


@blueprint.post("/api/shares")
def create_share() -> Response:
    """Create a share link for one study (or one series of it)."""
    from pacs.web import services_of

    services = services_of(current_app)
    who = principal()
    assert who.user is not None  # SHARING is never granted to a share link
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error_response(400, "send a JSON object: study_uid, hours, and optionally "
                                   "series_uid, pin, deidentify, note")
    study_uid = body.get("study_uid")
    series_uid = body.get("series_uid") or None
    hours = body.get("hours", 24)
    pin = body.get("pin") or None
    if not isinstance(study_uid, str) or not isinstance(hours, int | float) or isinstance(
            hours, bool) or not isinstance(pin, str | None) or not isinstance(
            series_uid, str | None):
        return error_response(400, "study_uid (text) and hours (a number) are required; "
                                   "series_uid and pin are text")
    patient_id, _institution = study_facts(study_uid)
    if patient_id is None and not _study_exists(study_uid):
        return error_response(404, f"no study {study_uid} in the archive")
    try:
        link, secret = services.shares.create(
            study_uid=study_uid, series_uid=series_uid, created_by=who.user.pk,
            lifetime=timedelta(hours=float(hours)), pin=pin,
            deidentify=bool(body.get("deidentify", False)), note=str(body.get("note", "")))
    except AccountError as exc:
        return error_response(400, str(exc))
    _audit(Action.SHARE_CREATE, link, patient_id,
           f"share {link.pk} until {link.expires_at.isoformat()}"
           + (", de-identified" if link.deidentify else "") + (", PIN" if pin else ""))
    answer = _describe(link)
    answer["url"] = _base_url() + "/share/" + secret
    response = jsonify(answer)
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/api/shares")
def list_shares() -> Response:
    """The caller's share links, newest first (an admin's: everyone's)."""
    from pacs.web import services_of

    who = principal()
    assert who.user is not None
    mine = None if who.user.role == "admin" else who.user.pk
    return jsonify([_describe(link) for link in services_of(current_app).shares.links(mine)])


@blueprint.delete("/api/shares/<int:pk>")
def revoke_share(pk: int) -> Response:
    """Revoke a share link now."""
    from pacs.web import services_of

    services = services_of(current_app)
    who = principal()
    assert who.user is not None
    try:
        link = services.shares.get(pk)
    except AccountError:
        return error_response(404, f"no share link {pk}")
    if who.user.role != "admin" and link.created_by != who.user.username:
        return error_response(403, "only its creator or an admin may revoke a share link")
    try:
        link = services.shares.revoke(pk)
    except AccountError as exc:
        return error_response(409, str(exc))
    _audit(Action.SHARE_REVOKE, link, study_facts(link.study_uid)[0], f"share {link.pk}")
    return jsonify(_describe(link))


def _describe(link: ShareLink) -> dict[str, Any]:
    return {
        "id": link.pk, "study_uid": link.study_uid, "series_uid": link.series_uid,
        "created_by": link.created_by, "created_at": link.created_at.isoformat(),
        "expires_at": link.expires_at.isoformat(),
        "revoked_at": link.revoked_at.isoformat() if link.revoked_at else None,
        "active": link.active, "deidentify": link.deidentify, "pin": link.has_pin,
        "note": link.note,
    }


def _study_exists(study_uid: str) -> bool:
    from pacs.retrieve import resolve, uid_query
    from pacs.web import services_of

    try:
        return bool(resolve(services_of(current_app).db, uid_query(study_uid)))
    except ValueError:
        return False


def _base_url() -> str:
    settings = current_app.config["PACS_SETTINGS"]
    if settings.public_url:
        return str(settings.public_url).rstrip("/")
    return request.host_url.rstrip("/")


def _audit(action: Action, link: ShareLink, patient_id: str | None, detail: str) -> None:
    from pacs.web import services_of

    who = principal()
    services_of(current_app).audit.record(AuditEvent(
        action, Outcome.SUCCESS, ActorKind.TOKEN if who.kind == "token" else ActorKind.USER,
        actor=who.name, address=request.remote_addr or "", protocol="http",
        patient_id=patient_id, study_uid=link.study_uid, detail=detail))
