"""Who is asking, and may they: the one authorisation check of every HTTP request.

:func:`authorise` runs before every route (``app.before_request``). It

1. finds the route's rule in :data:`RULES` (endpoint name → :class:`Rule`); a route without
   a rule is refused (403) and logged, so a new route cannot be forgotten — the
   authorisation-matrix test walks the app's URL map and fails on such a route;
2. resolves the requester once (:func:`principal`): an API token (``Authorization: Bearer``,
   or HTTP Basic with the token as password, for DICOMweb peers that only do Basic), else
   the session cookie of a signed-in user or of an opened share link, else anonymous;
3. checks the rule against the requester's permissions (role, narrowed by a token's scopes);
4. checks the CSRF token of state-changing requests authenticated by cookie;
5. narrows what a share link's session may reach to its study (or series), translating
   de-identified UIDs back (:mod:`pacs.web.deidentified`), and what a clinician limited to
   some institutions may reach to theirs.

Anonymous browsers asking for a page are sent to ``/login``; everyone else gets 401 with
``WWW-Authenticate``. Refusals say why, in the JSON error shape of :mod:`pacs.web.errors`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import quote

from flask import Flask, Response, current_app, g, redirect, request
from werkzeug.datastructures import ImmutableMultiDict

from pacs.accounts import TOKEN_PREFIX, User
from pacs.sharing import ShareLink
from pacs.web.errors import error_response

log = logging.getLogger("pacs.web.auth")

SESSION_COOKIE = "pacs_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Rule(Enum):
    """What a route needs."""

    PUBLIC = "open to everyone"  # health checks, the login page, a share link's landing
    SIGNED_IN = "any signed-in user or share link"
    VIEWER = "read images in the viewer"
    READ = "read studies"
    WRITE = "store studies"
    SHARING = "share studies"
    ADMIN = "administer the archive"


#: Every route's rule, by endpoint name. A route missing here is refused.
RULES: dict[str, Rule] = {
    "static": Rule.PUBLIC,
    "health.healthz": Rule.PUBLIC,
    "health.readyz": Rule.PUBLIC,
    "login.login_page": Rule.PUBLIC,
    "login.login": Rule.PUBLIC,
    "login.logout": Rule.PUBLIC,  # ending one's own session needs nothing more
    "login.open_share": Rule.PUBLIC,
    "login.enter_share": Rule.PUBLIC,
    "home.home": Rule.SIGNED_IN,
    "viewer.viewer_root": Rule.VIEWER,
    "viewer.app_config": Rule.VIEWER,
    "viewer.viewer_file": Rule.VIEWER,
    "qido.search_for_studies": Rule.READ,
    "qido.search_for_series": Rule.READ,
    "qido.search_for_study_series": Rule.READ,
    "qido.search_for_instances": Rule.READ,
    "qido.search_for_study_instances": Rule.READ,
    "qido.search_for_series_instances": Rule.READ,
    "wado.retrieve_study": Rule.READ,
    "wado.retrieve_series": Rule.READ,
    "wado.retrieve_instance": Rule.READ,
    "wado.study_metadata": Rule.READ,
    "wado.series_metadata": Rule.READ,
    "wado.instance_metadata": Rule.READ,
    "frames.retrieve_frames": Rule.READ,
    "frames.retrieve_bulkdata": Rule.READ,
    "rendered.rendered_instance": Rule.READ,
    "rendered.rendered_frame": Rule.READ,
    "rendered.rendered_study": Rule.READ,
    "rendered.rendered_series": Rule.READ,
    "rendered.instance_thumbnail": Rule.READ,
    "rendered.frame_thumbnail": Rule.READ,
    "rendered.series_thumbnail": Rule.READ,
    "rendered.study_thumbnail": Rule.READ,
    "wado_uri.wado": Rule.READ,
    "stow.store_instances": Rule.WRITE,
    "stow.store_study_instances": Rule.WRITE,
    "shares.shares_page": Rule.SHARING,
    "shares.create_share": Rule.SHARING,
    "shares.list_shares": Rule.SHARING,
    "shares.revoke_share": Rule.SHARING,
    "admin.admin_page": Rule.ADMIN,
    "admin.list_users": Rule.ADMIN,
    "admin.create_user": Rule.ADMIN,
    "admin.change_user": Rule.ADMIN,
    "admin.list_tokens": Rule.ADMIN,
    "admin.create_token": Rule.ADMIN,
    "admin.revoke_token": Rule.ADMIN,
    "admin.audit_events": Rule.ADMIN,
    "admin.audit_status": Rule.ADMIN,
}

#: What each role may do.
ROLE_PERMISSIONS: dict[str, frozenset[Rule]] = {
    "admin": frozenset(Rule),
    "radiologist": frozenset({Rule.PUBLIC, Rule.SIGNED_IN, Rule.VIEWER, Rule.READ, Rule.WRITE,
                              Rule.SHARING}),
    "clinician": frozenset({Rule.PUBLIC, Rule.SIGNED_IN, Rule.VIEWER, Rule.READ}),
    "uploader": frozenset({Rule.PUBLIC, Rule.SIGNED_IN, Rule.WRITE}),
}

#: What an API token's scopes allow (within its user's role).
SCOPE_PERMISSIONS: dict[str, frozenset[Rule]] = {
    "read": frozenset({Rule.SIGNED_IN, Rule.VIEWER, Rule.READ}),
    "write": frozenset({Rule.SIGNED_IN, Rule.WRITE, Rule.SHARING}),
    "admin": frozenset({Rule.SIGNED_IN, Rule.ADMIN}),
}

#: What a share link's session may do (and only within its study).
SHARE_PERMISSIONS = frozenset({Rule.PUBLIC, Rule.SIGNED_IN, Rule.VIEWER, Rule.READ})


@dataclass(frozen=True)
class Principal:
    """The requester: ``kind`` is ``anonymous``, ``user`` (a session), ``token`` or
    ``share``."""

    kind: str
    user: User | None = None
    share: ShareLink | None = None
    permissions: frozenset[Rule] = frozenset({Rule.PUBLIC})
    csrf_token: str | None = None  # for cookie sessions
    refusal: str = ""  # why credentials that were sent were not accepted
    scopes: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        """What the audit trail calls the requester."""
        if self.user is not None:
            return self.user.username
        if self.share is not None:
            return f"share-{self.share.pk}"
        return ""


ANONYMOUS = Principal("anonymous")


def register(app: Flask) -> None:
    """Check every request of ``app`` with :func:`authorise`."""
    app.before_request(authorise)


def principal() -> Principal:
    """The requester of the current request (resolved once per request)."""
    found = g.get("principal")
    if found is None:
        found = _resolve()
        g.principal = found
    return found  # type: ignore[no-any-return]


def authorise() -> Response | None:
    """The one authorisation check; None lets the request through, a response refuses it."""
    endpoint = request.endpoint
    if endpoint is None:
        return None  # no such route: 404 follows
    rule = RULES.get(endpoint)
    if rule is None:
        log.error("route %s has no authorisation rule; refused", endpoint)
        return error_response(403, "this route has no access rule")
    if request.method == "OPTIONS":
        return None  # a CORS preflight carries no credentials and returns nothing
    if rule is Rule.PUBLIC:
        return None
    who = principal()
    if who.kind == "anonymous":
        return _challenge(who.refusal)
    if rule not in who.permissions:
        role = who.user.role if who.user is not None else "a share link"
        return error_response(403, f"{role} may not {rule.value}"
                              + (" with this token's scopes" if who.kind == "token" else ""))
    if who.csrf_token is not None and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
        if not hmac.compare_digest(sent.encode(), who.csrf_token.encode()):
            return error_response(403, "the CSRF token is missing or wrong")
    if who.share is not None:
        from pacs.web.scope import scope_to_share

        return scope_to_share(who.share, rule)
    if who.user is not None and who.user.institutions and rule is Rule.READ:
        from pacs.web.scope import scope_to_institutions

        return scope_to_institutions(who.user.institutions)
    return None


def replace_args(args: dict[str, list[str]]) -> None:
    """Replace the request's query parameters (for the scoping of :mod:`pacs.web.scope`)."""
    request.args = ImmutableMultiDict(  # type: ignore[misc]
        [(key, value) for key, values in args.items() for value in values])


def _challenge(reason: str) -> Response:
    wants_page = (request.method == "GET" and request.accept_mimetypes.accept_html
                  and not request.path.startswith("/dicom-web")
                  and not request.path.startswith("/api/"))
    if wants_page and not reason:
        return redirect("/login?next=" + quote(request.full_path.rstrip("?"), safe="/"))
    response = error_response(401, reason or "authentication required: sign in, or send "
                                              "a bearer token")
    response.headers["WWW-Authenticate"] = 'Bearer realm="pacs"'
    return response


def _resolve() -> Principal:
    from pacs.web import services_of

    services = services_of(current_app)
    header = request.headers.get("Authorization", "")
    if header:
        token = _token_from_header(header)
        found = services.accounts.user_for_token(token) if token else None
        if found is None:
            return Principal("anonymous",
                             refusal="the bearer token is unknown, expired or revoked")
        user, scopes = found
        allowed = ROLE_PERMISSIONS[user.role] & frozenset().union(
            *(SCOPE_PERMISSIONS[scope] for scope in scopes))
        return Principal("token", user=user, permissions=allowed | {Rule.PUBLIC},
                         scopes=scopes)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return ANONYMOUS
    session = services.accounts.session(cookie)
    if session is None:
        return ANONYMOUS  # expired, signed out or disabled: sign in again
    if session.user is not None:
        return Principal("user", user=session.user,
                         permissions=ROLE_PERMISSIONS[session.user.role],
                         csrf_token=session.csrf_token)
    link = (services.shares.active_link(session.share_pk) if session.share_pk is not None
            else None)
    if link is None:
        return Principal("anonymous", refusal="this share link has expired or was revoked")
    return Principal("share", share=link, permissions=SHARE_PERMISSIONS,
                     csrf_token=session.csrf_token)


def _token_from_header(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":  # DICOMweb peers that only speak Basic: the token as password
        try:
            _user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password if password.startswith(TOKEN_PREFIX) else None
    return None
