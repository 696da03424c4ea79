"""The admin API and page: users, API tokens and the audit trail (role ``admin`` only).

* ``GET /admin``: the page (:mod:`pacs.web.admin_page`), which calls the routes below;
* ``GET /api/users``, ``POST /api/users`` ``{"username", "password", "role",
  "institutions"?}``, ``PATCH /api/users/<name>`` ``{"role"?, "institutions"?, "disabled"?,
  "password"?}``;
* ``GET /api/tokens[?user=]``, ``POST /api/tokens`` ``{"username", "scopes"?, "label"?,
  "days"?}`` (201 with the token, shown once), ``DELETE /api/tokens/<id>``;
* ``GET /api/audit`` with ``user``, ``patient_id``, ``study_uid``, ``action``, ``since``,
  ``until`` (ISO 8601 dates or times), ``limit`` (≤ 10,000), ``offset`` and ``format``:
  ``json`` (default), ``csv`` or ``dicom`` (DICOM audit messages, PS3.15 A.5);
* ``GET /api/audit/status``: whether the audit trail is being written.

Every change is itself audited (action ``admin``). Passwords never appear in a response, a
log line or an audit record.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from pacs.accounts import AccountError, Token, User
from pacs.audit import Action, ActorKind, AuditEvent, Outcome
from pacs.services import Services
from pacs.web.auth import principal
from pacs.web.errors import error_response

blueprint = Blueprint("admin", __name__)
AUDIT_PAGE_LIMIT = 10_000


@blueprint.get("/admin")
def admin_page() -> Response:
    """The admin page."""
    from pacs.web.admin_page import page_response

    return page_response("admin")


# -- users --------------------------------------------------------------------------------


@blueprint.get("/api/users")
def list_users() -> Response:
    return jsonify([_user(user) for user in _services().accounts.users()])


@blueprint.post("/api/users")
def create_user() -> Response:
    body = _json_body()
    if isinstance(body, Response):
        return body
    try:
        user = _services().accounts.add_user(
            str(body.get("username", "")), str(body.get("password", "")),
            str(body.get("role", "")), _names(body.get("institutions")))
    except AccountError as exc:
        return error_response(400, str(exc))
    _audit(f"user {user.username} created with role {user.role}")
    response = jsonify(_user(user))
    response.status_code = 201
    return response


@blueprint.patch("/api/users/<username>")
def change_user(username: str) -> Response:
    body = _json_body()
    if isinstance(body, Response):
        return body
    accounts = _services().accounts
    disabled = body.get("disabled")
    if disabled is not None and not isinstance(disabled, bool):
        return error_response(400, "disabled is true or false")
    who = principal()
    if disabled and who.user is not None and who.user.username == username:
        return error_response(400, "an admin cannot disable their own account")
    try:
        if "password" in body:
            accounts.set_password(username, str(body["password"]))
        user = accounts.update_user(
            username, role=body.get("role"),
            institutions=_names(body["institutions"]) if "institutions" in body else None,
            disabled=disabled)
    except AccountError as exc:
        status = 404 if str(exc).startswith("no user") else 400
        return error_response(status, str(exc))
    changed = ", ".join(sorted(key for key in body if key != "password"))
    if "password" in body:
        changed = (changed + ", password").lstrip(", ")
    _audit(f"user {username} changed: {changed}")
    return jsonify(_user(user))


# -- tokens -------------------------------------------------------------------------------


@blueprint.get("/api/tokens")
def list_tokens() -> Response:
    return jsonify([_token(token) for token in
                    _services().accounts.tokens(request.args.get("user") or None)])


@blueprint.post("/api/tokens")
def create_token() -> Response:
    body = _json_body()
    if isinstance(body, Response):
        return body
    days = body.get("days")
    if days is not None and (not isinstance(days, int | float) or isinstance(days, bool)
                             or not 0 < days <= 3650):
        return error_response(400, "days is a number between 0 and 3650")
    scopes = body.get("scopes", ["read"])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        return error_response(400, "scopes is a list: read, write, admin")
    username = str(body.get("username", ""))
    try:
        secret = _services().accounts.create_token(
            username, scopes=scopes, label=str(body.get("label", "")),
            lifetime=timedelta(days=days) if days else None)
    except AccountError as exc:
        return error_response(404 if str(exc).startswith("no user") else 400, str(exc))
    token = _services().accounts.tokens(username)[-1]
    _audit(f"token {token.pk} created for {username} ({' '.join(token.scopes)})")
    response = jsonify({**_token(token), "token": secret})
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.delete("/api/tokens/<int:pk>")
def revoke_token(pk: int) -> Response:
    try:
        _services().accounts.revoke_token(pk)
    except AccountError as exc:
        return error_response(404, str(exc))
    _audit(f"token {pk} revoked")
    return jsonify({"id": pk, "revoked": True})


# -- audit ----------------------------------------------------------------------------


@blueprint.get("/api/audit")
def audit_events() -> Response:
    """Audit records, newest first, filtered; as JSON, CSV or DICOM audit messages."""
    from pacs.audit_export import events_to_csv, events_to_dicom_xml

    args = request.args
    try:
        limit = int(args.get("limit", "1000"))
        offset = int(args.get("offset", "0"))
        since = _moment(args.get("since"))
        until = _moment(args.get("until"), end_of_day=True)
    except ValueError as exc:
        return error_response(400, str(exc))
    if not 1 <= limit <= AUDIT_PAGE_LIMIT or offset < 0:
        return error_response(400, f"limit is 1..{AUDIT_PAGE_LIMIT}, offset at least 0")
    events = _services().audit.search(
        actor=args.get("user") or None, patient_id=args.get("patient_id") or None,
        study_uid=args.get("study_uid") or None, action=args.get("action") or None,
        since=since, until=until, limit=limit, offset=offset)
    kind = args.get("format", "json")
    settings = current_app.config["PACS_SETTINGS"]
    if kind == "csv":
        response = Response("".join(events_to_csv(events)), content_type="text/csv; charset=utf-8")
        response.headers["Content-Disposition"] = 'attachment; filename="audit.csv"'
    elif kind == "dicom":
        response = Response(b"".join(events_to_dicom_xml(events, source_id=settings.aet)),
                            content_type="application/xml; charset=utf-8")
        response.headers["Content-Disposition"] = 'attachment; filename="audit.xml"'
    elif kind == "json":
        response = jsonify([_event(event) for event in events])
    else:
        return error_response(400, "format is json, csv or dicom")
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/api/audit/status")
def audit_status() -> Response:
    status = _services().audit.status()
    return jsonify({"ok": status.ok, "pending": status.pending, "dropped": status.dropped,
                    "last_error": status.last_error})


# -- helpers ------------------------------------------------------------------------------


def _services() -> Services:
    from pacs.web import services_of

    return services_of(current_app)


def _json_body() -> dict[str, Any] | Response:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error_response(400, "send a JSON object")
    return body


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [line for line in value.replace(",", "\n").splitlines() if line.strip()]
    if isinstance(value, list):
        return [str(item) for item in value]
    raise AccountError("institutions is a list of names")


def _moment(text: str | None, *, end_of_day: bool = False) -> datetime | None:
    """An ISO 8601 date or time from a filter; a bare ``until`` date includes that day."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date or time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if end_of_day and len(text) == 10:
        value += timedelta(days=1)
    return value


def _user(user: User) -> dict[str, Any]:
    return {"username": user.username, "role": user.role,
            "institutions": list(user.institutions), "disabled": user.disabled}


def _token(token: Token) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {"id": token.pk, "username": token.username, "label": token.label,
            "scopes": list(token.scopes), "created_at": when(token.created_at),
            "expires_at": when(token.expires_at), "revoked_at": when(token.revoked_at)}


def _event(event: AuditEvent) -> dict[str, Any]:
    row = event.row()
    row["at"] = event.at.isoformat()
    return row


def _audit(detail: str) -> None:
    who = principal()
    _services().audit.record(AuditEvent(
        Action.ADMIN, Outcome.SUCCESS, ActorKind.TOKEN if who.kind == "token" else ActorKind.USER,
        actor=who.name, address=request.remote_addr or "", protocol="http", detail=detail))
