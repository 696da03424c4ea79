"""Signing in and out, and opening a share link: the pages a browser meets before the viewer.

* ``GET/POST /login``: user name and password; a session cookie (``HttpOnly``,
  ``SameSite=Lax``, ``Secure`` over HTTPS) on success. The form carries a CSRF token that
  must equal a cookie set with the form (a site cannot sign a browser into its own account).
  Failed logins are counted per account and per address (:mod:`pacs.accounts`); over the
  limit the answer is 429 whatever the password.
* ``POST /logout``: ends the session.
* ``GET/POST /share/<secret>``: a share link. A valid link (and its PIN, when it has one)
  opens a session bound to the link and sends the browser to the viewer on its study.

Every outcome is audited: login, failed login, logout, share use (and a refused share).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, redirect, render_template_string, request

from pacs.accounts import SESSION_LIFETIME
from pacs.audit import Action, ActorKind, AuditEvent, Outcome
from pacs.sharing import ShareLink
from pacs.web.auth import CSRF_FIELD, SESSION_COOKIE, principal

blueprint = Blueprint("login", __name__)
FORM_COOKIE = "pacs_form"  # the double-submitted CSRF token of the login and PIN forms

_PAGE = """<!doctype html>
<html lang="vi">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · {{ name }}</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #0b1a2b; color: #e8eef5; }
  main { max-width: 24rem; margin: 5rem auto; padding: 0 1.5rem; }
  label { display: block; margin: 1rem 0 .3rem; color: #9fb3c8; }
  input { width: 100%; box-sizing: border-box; padding: .6rem; border-radius: .3rem;
          border: 1px solid #33506e; background: #0f2236; color: #e8eef5; font-size: 1rem; }
  button { margin-top: 1.5rem; padding: .7rem 1.4rem; border: 0; border-radius: .3rem;
           background: #3b82f6; color: white; font-size: 1rem; cursor: pointer; }
  .error { color: #fca5a5; }
</style>
</head>
<body>
<main>
  <h1>{{ name }}</h1>
  <h2>{{ title }}</h2>
  {% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
  {% if fields %}
  <form method="post">
    <input type="hidden" name="csrf_token" value="{{ csrf }}">
    <input type="hidden" name="next" value="{{ next }}">
    {% for name, label, kind in fields %}
    <label for="{{ name }}">{{ label }}</label>
    <input id="{{ name }}" name="{{ name }}" type="{{ kind }}" required
           {% if kind == "password" %}autocomplete="current-password"{% endif %}>
    {% endfor %}
    <button type="submit">{{ button }}</button>
  </form>
  {% endif %}
</main>
</body>
</html>
"""
_LOGIN_FIELDS = [("username", "Tên đăng nhập · User name", "text"),
                 ("password", "Mật khẩu · Password", "password")]
_PIN_FIELDS = [("pin", "Mã PIN · PIN", "password")]


@blueprint.get("/login")
def login_page() -> Response:
    """The sign-in form."""
    return _form("Đăng nhập · Sign in", _LOGIN_FIELDS, "Đăng nhập · Sign in")


@blueprint.post("/login")
def login() -> Response:
    """Check the user name and password; open a session."""
    from pacs.web import services_of

    accounts = services_of(current_app).accounts
    if not _form_token_ok():
        return _form("Đăng nhập · Sign in", _LOGIN_FIELDS, "Đăng nhập · Sign in",
                     error="The form expired; please try again.", status=400)
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    address = request.remote_addr or ""
    if accounts.login_throttled(username, address):
        _audit(Action.LOGIN_FAILED, Outcome.FAILURE, ActorKind.ANONYMOUS, username,
               "too many failed logins")
        response = _form("Đăng nhập · Sign in", _LOGIN_FIELDS, "Đăng nhập · Sign in",
                         error="Too many failed attempts; wait 15 minutes.", status=429)
        response.headers["Retry-After"] = "900"
        return response
    user = accounts.authenticate(username, password)
    if user is None:
        accounts.note_failed_login(username, address)
        _audit(Action.LOGIN_FAILED, Outcome.FAILURE, ActorKind.ANONYMOUS, username,
               "wrong user name or password, or account disabled")
        return _form("Đăng nhập · Sign in", _LOGIN_FIELDS, "Đăng nhập · Sign in",
                     error="Wrong user name or password.", status=401)
    token, _csrf = accounts.open_session(user_pk=user.pk)
    _audit(Action.LOGIN, Outcome.SUCCESS, ActorKind.USER, user.username, "")
    return _signed_in(redirect(_safe_next(request.form.get("next", ""))), token)


@blueprint.post("/logout")
def logout() -> Response:
    """End this browser's session."""
    from pacs.web import services_of

    who = principal()
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and who.csrf_token is not None:
        sent = request.form.get(CSRF_FIELD) or request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(sent.encode(), who.csrf_token.encode()):
            return _form("Đăng xuất · Sign out", [], "", error="The form expired.", status=400)
        services_of(current_app).accounts.close_session(cookie)
        kind = ActorKind.SHARE if who.share is not None else ActorKind.USER
        _audit(Action.LOGOUT, Outcome.SUCCESS, kind, who.name, "")
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@blueprint.get("/share/<secret>")
def open_share(secret: str) -> Response:
    """A share link: the PIN form, or straight into the viewer."""
    link = _share(secret)
    if link is None:
        return _refused_share()
    if link.has_pin:
        return _form("Mã PIN · PIN", _PIN_FIELDS, "Mở · Open")
    return _enter(link)


@blueprint.post("/share/<secret>")
def enter_share(secret: str) -> Response:
    """Check a share link's PIN; open the link's session."""
    from pacs.web import services_of

    services = services_of(current_app)
    link = _share(secret)
    if link is None:
        return _refused_share()
    if not _form_token_ok():
        return _form("Mã PIN · PIN", _PIN_FIELDS, "Mở · Open",
                     error="The form expired; please try again.", status=400)
    address = request.remote_addr or ""
    account = f"share-{link.pk}"
    if services.accounts.login_throttled(account, address):
        _audit(Action.SHARE_USE, Outcome.FAILURE, ActorKind.SHARE, account, "too many wrong PINs",
               link)
        return _form("Mã PIN · PIN", [], "", error="Too many wrong PINs; wait 15 minutes.",
                     status=429)
    if not services.shares.check_pin(secret, request.form.get("pin", "")):
        services.accounts.note_failed_login(account, address)
        _audit(Action.SHARE_USE, Outcome.FAILURE, ActorKind.SHARE, account, "wrong PIN", link)
        return _form("Mã PIN · PIN", _PIN_FIELDS, "Mở · Open", error="Wrong PIN.", status=401)
    return _enter(link)


# -- helpers ------------------------------------------------------------------------------


def viewer_url(link: ShareLink) -> str:
    """Where the viewer shows ``link``'s study (with the link's UIDs when de-identified)."""
    study, series = link.study_uid, link.series_uid
    if link.deidentify:
        from pacs.deidentify import Deidentifier

        deidentifier = Deidentifier(link.deid_secret)
        study = deidentifier.uid(study)
        series = deidentifier.uid(series) if series is not None else None
    query = {"StudyInstanceUIDs": study}
    if series is not None:
        query["SeriesInstanceUIDs"] = series
    return "/viewer/viewer?" + urlencode(query)


def _enter(link: ShareLink) -> Response:
    from pacs.web import services_of

    token, _csrf = services_of(current_app).accounts.open_session(
        share_pk=link.pk, lifetime=min(link.expires_at - datetime.now(UTC), SESSION_LIFETIME))
    _audit(Action.SHARE_USE, Outcome.SUCCESS, ActorKind.SHARE, f"share-{link.pk}",
           "de-identified" if link.deidentify else "", link)
    return _signed_in(redirect(viewer_url(link)), token)


def _share(secret: str) -> ShareLink | None:
    from pacs.web import services_of

    if not 20 <= len(secret) <= 100:
        return None
    return services_of(current_app).shares.find(secret)


def _refused_share() -> Response:
    _audit(Action.SHARE_USE, Outcome.FAILURE, ActorKind.ANONYMOUS, "",
           "unknown, expired or revoked share link")
    return _form("Liên kết hết hạn · Link expired", [], "",
                 error="This link has expired or was revoked. Ask the sender for a new one.",
                 status=404)


def _signed_in(response: Response, token: str) -> Response:
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Lax",
                        secure=request.is_secure, path="/")
    response.delete_cookie(FORM_COOKIE, path="/")
    response.headers["Cache-Control"] = "no-store"
    return response


def _form(title: str, fields: list[tuple[str, str, str]], button: str, *, error: str = "",
          status: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    settings = current_app.config["PACS_SETTINGS"]
    page = render_template_string(
        _PAGE, name=settings.archive_name, title=title, fields=fields, button=button,
        error=error, csrf=token, next=_safe_next(request.values.get("next", "")))
    response = Response(page, status=status, content_type="text/html; charset=utf-8")
    response.set_cookie(FORM_COOKIE, token, httponly=True, samesite="Strict",
                        secure=request.is_secure, path="/")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"  # no clickjacking of the password form
    return response


def _form_token_ok() -> bool:
    cookie = request.cookies.get(FORM_COOKIE, "")
    sent = request.form.get(CSRF_FIELD, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), sent.encode())


def _safe_next(target: str) -> str:
    """A local path to go to after signing in; anything else (another site) becomes ``/``."""
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


def _audit(action: Action, outcome: Outcome, kind: ActorKind, actor: str, detail: str,
           link: ShareLink | None = None) -> None:
    from pacs.web import services_of

    services_of(current_app).audit.record(AuditEvent(
        action, outcome, kind, actor=actor, address=request.remote_addr or "", protocol="http",
        study_uid=link.study_uid if link is not None else None, detail=detail))

