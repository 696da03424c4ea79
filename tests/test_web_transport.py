"""TLS for the web service: HTTPS from the settings, or behind a reverse proxy whose
X-Forwarded-* headers are believed only when configured."""

from __future__ import annotations

import http.client
import os
import re
import ssl
import subprocess
import sys

import pytest
from pki import make_pki
from webclient import token_for

from pacs.config import Settings, SettingsError
from pacs.web import create_app
from peers import free_port, stop_process, wait_for_port


def test_pacs_serve_speaks_https_with_the_configured_certificate(tmp_path):
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    env = {**os.environ, "PACS_DATA_DIR": str(tmp_path / "var"), "PACS_DICOM_HOST": "127.0.0.1",
           "PACS_DICOM_PORT": str(free_port()), "PACS_HTTP_PORT": str(port),
           "PACS_HTTP_WORKERS": "1", "PACS_WORKERS": "1",
           "PACS_HTTP_TLS_CERTIFICATE": str(pki["server_pem"]),
           "PACS_HTTP_TLS_PRIVATE_KEY": str(pki["server_key"])}
    with (tmp_path / "serve.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "pacs.cli", "serve"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        connection.request("GET", "/login")
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 200
        assert "Secure" in answer.getheader("Set-Cookie")
        connection.close()
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain.request("GET", "/healthz")
            plain.getresponse().read()
    finally:
        stop_process(process)
    assert "ready on https://" in (tmp_path / "serve.log").read_text()


def test_a_certificate_without_its_key_is_refused_at_start():
    with pytest.raises(SettingsError, match="http_tls_certificate"):
        Settings.load(environ={"PACS_HTTP_TLS_CERTIFICATE": "/etc/ssl/pacs.pem"})


@pytest.fixture
def archive(embedded):
    return embedded


def _audited_address(archive, client) -> str:
    client.get("/dicom-web/studies", headers={"X-Forwarded-For": "203.0.113.7",
                                              "X-Forwarded-Proto": "https"})
    (event,) = archive.audit.search(action="query")
    return event.address


def test_forwarded_headers_are_ignored_without_a_trusted_proxy(archive):
    app = create_app(archive.settings, archive)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app)}"
    assert _audited_address(archive, client) == "127.0.0.1"


def test_a_trusted_proxy_gives_the_client_address_and_scheme(archive):
    app = create_app(archive.settings.with_overrides(trusted_proxies=1), archive)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app)}"
    assert _audited_address(archive, client) == "203.0.113.7"
    page = client.get("/login", headers={"X-Forwarded-Proto": "https"})
    cookie = page.headers["Set-Cookie"]
    assert "Secure" in cookie
    assert re.search(r"SameSite=Strict", cookie)
