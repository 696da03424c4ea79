"""Who may see what: the authorisation matrix over every route, sign-in, sessions, tokens.

The matrix is generated from the application's URL map: every route × every kind of
requester. What each kind may reach is written out here, independently of
``pacs.web.auth``, by what the route is (its path and method); a route this file cannot
classify fails the test, so a new route needs a decision here as well as a rule there.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from webclient import PASSWORD, ensure_user, token_for

from factories import make_instance, study_instance
from pacs.accounts import (
    MAX_FAILURES_PER_ACCOUNT,
    AccountError,
    digest,
)
from pacs.ingest import Origin
from pacs.storage.schema import api_tokens
from pacs.web import create_app
from pacs.web.auth import RULES

STUDY_A, STUDY_B = "1.2.826.0.1.3680043.8.498.71", "1.2.826.0.1.3680043.8.498.72"


def _uids(study: str) -> dict[str, str]:
    return {"study": study, "series": f"{study}.1", "instance": f"{study}.1.1"}


@pytest.fixture
def archive(embedded):
    services = embedded
    for study in (STUDY_A, STUDY_B):
        data = study_instance(study, PatientID=f"P{study[-2:]}")
        assert services.ingest(data, Origin("import", "test")).ok
    return services


# -- what each route is, decided here --------------------------------------------------------

EVERYONE = {"anonymous", "admin", "radiologist", "clinician", "uploader", "expired token",
            "revoked token", "share A"}
READERS = {"admin", "radiologist", "clinician", "share A"}


def allowed(path: str, method: str) -> set[str]:
    """Who may use a route, from what it is."""
    if path in ("/healthz", "/readyz", "/login", "/logout") or path.startswith(
            ("/share/", "/static/")):
        return EVERYONE
    if path.startswith("/dicom-web") and method == "POST":
        return {"admin", "radiologist", "uploader"}
    if path.startswith(("/dicom-web", "/wado", "/viewer")):
        return READERS
    if path == "/":
        return {"admin", "radiologist", "clinician", "uploader", "share A"}
    if path.startswith(("/api/shares", "/shares")):
        return {"admin", "radiologist"}
    if path.startswith(("/admin", "/api/users", "/api/tokens", "/api/audit")):
        return {"admin"}
    raise AssertionError(f"route {path} is not classified in tests/test_auth.py")


VALUES = {"frame_list": "1", "frame": 1, "path": "7FE00010", "username": "nobody",
          "pk": 999999, "secret": "x" * 43, "filename": "none.css"}


def concrete_routes(app, study: str):
    """Every (endpoint, method, URL) of the app, with ``study``'s UIDs in it."""
    adapter = app.url_map.bind("localhost")
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            values = {name: _uids(study).get(name, VALUES.get(name)) for name in rule.arguments}
            url = adapter.build(rule.endpoint, values, method=method)
            if rule.endpoint.startswith("qido.") and "study" not in rule.arguments:
                url += f"?StudyInstanceUID={study}"
            if rule.endpoint == "wado_uri.wado":
                uids = _uids(study)
                url += (f"?requestType=WADO&studyUID={uids['study']}&seriesUID={uids['series']}"
                        f"&objectUID={uids['instance']}&contentType=application/dicom")
            yield rule.endpoint, rule.rule, method, url


def requester(app, archive, kind: str):
    """A test client acting as ``kind``."""
    client = app.test_client()
    if kind == "anonymous":
        return client
    if kind == "share A":
        creator = archive.accounts.user(ensure_user(app, "radiologist"))
        _link, secret = archive.shares.create(study_uid=STUDY_A, created_by=creator.pk,
                                              lifetime=timedelta(hours=1))
        assert client.get(f"/share/{secret}").status_code == 302
        return client
    role = "admin" if kind.endswith("token") else kind
    token = token_for(app, role)
    if kind == "revoked token":
        (created,) = [t for t in archive.accounts.tokens() if t.revoked_at is None][-1:]
        archive.accounts.revoke_token(created.pk)
    if kind == "expired token":
        with archive.db.writing() as conn:
            conn.execute(update(api_tokens).where(api_tokens.c.token_hash == digest(token))
                         .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def test_every_route_has_an_authorisation_rule(app):
    missing = sorted({rule.endpoint for rule in app.url_map.iter_rules()} - set(RULES))
    assert missing == []


def test_a_route_without_a_rule_is_refused(archive):
    app = create_app(archive.settings, archive)
    app.add_url_rule("/forgotten", "forgotten", lambda: "patient data")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app, 'admin')}"
    response = client.get("/forgotten")
    assert response.status_code == 403
    assert "no access rule" in response.json["error"]


@pytest.mark.parametrize("kind", sorted(EVERYONE))
def test_authorisation_matrix(app, archive, kind):
    client = requester(app, archive, kind)
    wrong = []
    for endpoint, path, method, url in concrete_routes(app, STUDY_A):
        if endpoint == "login.logout":
            continue  # it would end the share link's session half-way through the matrix
        with client.open(url, method=method) as response:
            status = response.status_code
        if kind in allowed(path, method):
            if status in (401, 403):
                wrong.append(f"{method} {url}: {status}, expected access")
        else:
            expected = 401 if kind in ("anonymous", "expired token", "revoked token") else 403
            if status != expected:
                wrong.append(f"{method} {url}: {status}, expected {expected}")
    assert wrong == []


def test_a_share_link_for_study_a_gets_nothing_of_study_b(app, archive):
    client = requester(app, archive, "share A")
    leaks = []
    for endpoint, path, method, url in concrete_routes(app, STUDY_B):
        if method != "GET" or not path.startswith(("/dicom-web", "/wado")):
            continue
        with client.get(url) as response:
            status = response.status_code
        if status != 403:
            leaks.append(f"{endpoint} {url}: {status}")
    assert leaks == []


def test_a_share_link_lists_only_its_own_study(app, archive):
    client = requester(app, archive, "share A")
    found = client.get("/dicom-web/studies").json
    assert [study["0020000D"]["Value"][0] for study in found] == [STUDY_A]


# -- sign-in, sessions, CSRF ------------------------------------------------------------------


def _login_form(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def sign_in(client, username: str, password: str = PASSWORD, **extra):
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": _login_form(client), **extra})


def test_an_anonymous_browser_is_sent_to_the_login_page(app):
    response = app.test_client().get("/viewer/", headers={"Accept": "text/html"})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=/viewer/")


def test_an_anonymous_api_client_gets_401_with_a_bearer_challenge(app):
    response = app.test_client().get("/dicom-web/studies")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "authentication required" in response.json["error"]


def test_signing_in_sets_a_protected_session_cookie_and_goes_to_next(app):
    ensure_user(app, "clinician", "bs.hoa")
    client = app.test_client()
    response = sign_in(client, "bs.hoa", next="/viewer/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/viewer/"
    cookie = next(h for h in response.headers.getlist("Set-Cookie")
                  if h.startswith("pacs_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/dicom-web/studies").status_code == 200


def test_the_session_cookie_is_secure_over_https(app):
    ensure_user(app, "clinician", "bs.hoa")
    client = app.test_client()
    page = client.get("/login", base_url="https://pacs.benhvien.vn").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", base_url="https://pacs.benhvien.vn", data={
        "username": "bs.hoa", "password": PASSWORD, "csrf_token": token})
    cookie = next(h for h in response.headers.getlist("Set-Cookie")
                  if h.startswith("pacs_session="))
    assert "Secure" in cookie


def test_next_never_leaves_the_archive(app):
    ensure_user(app, "clinician", "bs.hoa")
    response = sign_in(app.test_client(), "bs.hoa", next="//evil.example/")
    assert response.headers["Location"] == "/"


def test_a_wrong_password_is_refused_and_audited(app, archive):
    ensure_user(app, "clinician", "bs.hoa")
    response = sign_in(app.test_client(), "bs.hoa", "wrong password!")
    assert response.status_code == 401
    (event,) = archive.audit.search(action="login-failed")
    assert event.actor == "bs.hoa" and event.outcome == "failure"


def test_a_login_without_the_form_token_is_refused(app):
    ensure_user(app, "clinician", "bs.hoa")
    response = app.test_client().post("/login", data={"username": "bs.hoa",
                                                      "password": PASSWORD})
    assert response.status_code == 400


def test_failed_logins_are_rate_limited_per_account(app):
    ensure_user(app, "clinician", "bs.hoa")
    client = app.test_client()
    for _ in range(MAX_FAILURES_PER_ACCOUNT):
        assert sign_in(client, "bs.hoa", "wrong password!").status_code == 401
    refused = sign_in(client, "bs.hoa")  # even the right password, now
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "900"


def test_failed_logins_are_rate_limited_per_address(app, archive):
    for number in range(20):
        archive.accounts.note_failed_login(f"guess{number}", "127.0.0.1")
    ensure_user(app, "clinician", "bs.hoa")
    assert sign_in(app.test_client(), "bs.hoa").status_code == 429


def test_a_state_changing_request_needs_the_csrf_token(app, archive):
    ensure_user(app, "admin", "quan.tri")
    client = app.test_client()
    sign_in(client, "quan.tri")
    body = {"username": "bs.nam", "password": PASSWORD, "role": "clinician"}
    assert client.post("/api/users", json=body).status_code == 403
    page = client.get("/admin").get_data(as_text=True)
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    assert client.post("/api/users", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201


def test_signing_out_ends_the_session(app):
    ensure_user(app, "admin", "quan.tri")
    client = app.test_client()
    sign_in(client, "quan.tri")
    page = client.get("/admin").get_data(as_text=True)
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert client.get("/dicom-web/studies").status_code == 401


def test_disabling_a_user_ends_their_sessions_and_tokens(app, archive):
    ensure_user(app, "clinician", "bs.hoa")
    browser = app.test_client()
    sign_in(browser, "bs.hoa")
    token = archive.accounts.create_token("bs.hoa")
    archive.accounts.update_user("bs.hoa", disabled=True)
    assert browser.get("/dicom-web/studies").status_code == 401
    api = app.test_client()
    assert api.get("/dicom-web/studies",
                   headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_token_works_as_the_password_of_http_basic(app):
    import base64

    token = token_for(app, "clinician")
    credentials = base64.b64encode(f"orthanc:{token}".encode()).decode()
    response = app.test_client().get("/dicom-web/studies",
                                     headers={"Authorization": f"Basic {credentials}"})
    assert response.status_code == 200


def test_a_tokens_scopes_narrow_its_users_role(app, archive):
    ensure_user(app, "admin", "quan.tri")
    token = archive.accounts.create_token("quan.tri", scopes=["read"])
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    assert client.get("/dicom-web/studies").status_code == 200
    assert client.get("/api/users").status_code == 403


def test_a_clinician_limited_to_an_institution_sees_only_its_studies(app, archive):
    data = make_instance(StudyInstanceUID="1.2.826.0.1.3680043.8.498.73",
                         SeriesInstanceUID="1.2.826.0.1.3680043.8.498.73.1",
                         InstitutionName="Bệnh viện Lào Cai")
    assert archive.ingest(data, Origin("import", "test")).ok
    ensure_user(app, "clinician", "bs.laocai", institutions=("Bệnh viện Lào Cai",))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = (
        f"Bearer {archive.accounts.create_token('bs.laocai')}")
    found = client.get("/dicom-web/studies").json
    assert [study["0020000D"]["Value"][0] for study in found] == [
        "1.2.826.0.1.3680043.8.498.73"]
    assert client.get(f"/dicom-web/studies/{STUDY_A}/metadata").status_code == 403
    assert client.get("/dicom-web/studies/1.2.826.0.1.3680043.8.498.73/metadata"
                      ).status_code == 200


# -- accounts -------------------------------------------------------------------------------


def test_passwords_are_stored_as_argon2_hashes(archive):
    archive.accounts.add_user("bs.an", "mật khẩu dài lắm", "radiologist")
    from sqlalchemy import select

    from pacs.storage.schema import users

    with archive.db.reading() as conn:
        stored = conn.execute(select(users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$")
    assert "mật khẩu" not in stored
    assert archive.accounts.authenticate("bs.an", "mật khẩu dài lắm") is not None
    assert archive.accounts.authenticate("bs.an", "mật khẩu sai") is None


@pytest.mark.parametrize("username, password, role", [
    ("bs an", PASSWORD, "radiologist"),  # a space
    ("bs.an", "short", "radiologist"),
    ("bs.an", PASSWORD, "superuser"),
])
def test_bad_accounts_are_refused_with_a_reason(archive, username, password, role):
    with pytest.raises(AccountError):
        archive.accounts.add_user(username, password, role)


def test_tokens_are_stored_hashed_and_shown_once(archive):
    archive.accounts.add_user("bs.an", PASSWORD, "radiologist")
    token = archive.accounts.create_token("bs.an", scopes=["read"], label="Weasis")
    from sqlalchemy import select

    with archive.db.reading() as conn:
        stored = conn.execute(select(api_tokens.c.token_hash)).scalar_one()
    assert stored == digest(token) and token not in stored
    (listed,) = archive.accounts.tokens("bs.an")
    assert listed.label == "Weasis" and not hasattr(listed, "token")


def test_no_password_or_token_reaches_the_logs(app, archive, caplog):
    caplog.set_level(logging.DEBUG)
    ensure_user(app, "admin", "quan.tri")
    client = app.test_client()
    sign_in(client, "quan.tri")
    sign_in(app.test_client(), "quan.tri", "another secret!")
    token = archive.accounts.create_token("quan.tri")
    app.test_client().get("/dicom-web/studies", headers={"Authorization": f"Bearer {token}"})
    archive.audit.flush()
    logged = caplog.text + "".join(repr(event) for event in archive.audit.search())
    assert PASSWORD not in logged and "another secret!" not in logged and token not in logged
