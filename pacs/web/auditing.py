"""One audit record per request that reads or stores images (an ``after_request`` hook).

Which routes are audited, and as what, follows from the authorisation rule of the route
(:data:`pacs.web.auth.RULES`): every READ route is a query, a retrieve or a view, every WRITE
route a store. Refused requests are recorded too (outcome ``failure``, with the status), so
the trail shows who tried to reach what. Pages, viewer files, logins and admin changes are
recorded by their own views, where the meaning is known.

The patient of a study is looked up once per process (:func:`pacs.web.scope.study_facts`),
so "who saw this patient's images" can be answered from the trail alone.
"""

from __future__ import annotations

from flask import Flask, Response, g, request

from pacs.audit import Action, ActorKind, AuditEvent, Outcome
from pacs.web.auth import ANONYMOUS, RULES, Principal, Rule

_KINDS = {"user": ActorKind.USER, "token": ActorKind.TOKEN, "share": ActorKind.SHARE,
          "anonymous": ActorKind.ANONYMOUS}
_VIEWS = {"wado.study_metadata", "wado.series_metadata", "wado.instance_metadata"}


def register(app: Flask) -> None:
    app.after_request(record_request)


def action_of(endpoint: str, method: str = "GET", status: int = 200) -> Action | None:
    """The audit action of a route, or None for routes not audited here.

    Admin and sharing routes record their own successes; a refused request to them (401,
    403) is recorded here, as an attempt.
    """
    rule = RULES.get(endpoint)
    if rule in (Rule.ADMIN, Rule.SHARING) and status in (401, 403):
        if rule is Rule.SHARING and method == "POST":
            return Action.SHARE_CREATE
        if rule is Rule.SHARING and method == "DELETE":
            return Action.SHARE_REVOKE
        return Action.ADMIN
    if rule is Rule.WRITE:
        return Action.STORE
    if rule is not Rule.READ:
        return None
    if endpoint.startswith("qido."):
        return Action.QUERY
    if endpoint.startswith("rendered.") or endpoint in _VIEWS:
        return Action.VIEW
    return Action.RETRIEVE


def record_request(response: Response) -> Response:
    """Record the request just answered, when its route is audited."""
    from flask import current_app

    from pacs.web import services_of
    from pacs.web.scope import study_facts

    endpoint = request.endpoint
    action = action_of(endpoint, request.method, response.status_code) if endpoint else None
    if action is None or request.method == "OPTIONS":
        return response
    who: Principal = g.get("principal") or ANONYMOUS
    view_args = request.view_args or {}
    study_uid = (g.get("audit_study") or view_args.get("study")
                 or request.args.get("StudyInstanceUID") or request.args.get("studyUID"))
    patient_id = request.args.get("PatientID") or None
    if study_uid:
        patient_id = study_facts(study_uid)[0] or patient_id
    failed = response.status_code >= 400
    detail = f"{request.method} {request.full_path.rstrip('?')}"[:500]
    if failed:
        detail += f" -> {response.status_code}"
    services_of(current_app).audit.record(AuditEvent(
        action, Outcome.FAILURE if failed else Outcome.SUCCESS, _KINDS[who.kind],
        actor=who.name, address=request.remote_addr or "", protocol="http",
        patient_id=patient_id, study_uid=study_uid or None, count=g.get("audit_count"),
        detail=detail))
    return response
