"""Flask test clients that are signed in, for tests of routes behind authorisation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from pacs.accounts import AccountError
from pacs.web import services_of

#: The token scopes that give each role everything the role may do.
ROLE_SCOPES = {
    "admin": ("read", "write", "admin"),
    "radiologist": ("read", "write"),
    "clinician": ("read",),
    "uploader": ("write",),
}
PASSWORD = "a-password-for-tests"


def ensure_user(app: Flask, role: str, username: str | None = None,
                institutions: tuple[str, ...] = ()) -> str:
    """A user of ``role`` (made once per archive); returns its name."""
    accounts = services_of(app).accounts
    username = username or f"test-{role}"
    try:
        accounts.user(username)
    except AccountError:
        accounts.add_user(username, PASSWORD, role, institutions)
    return username


def token_for(app: Flask, role: str = "admin", **user: object) -> str:
    """A new API token of a user of ``role`` with all the role's scopes."""
    username = ensure_user(app, role, **user)  # type: ignore[arg-type]
    return services_of(app).accounts.create_token(username, scopes=ROLE_SCOPES[role])


def signed_in(app: Flask, role: str = "admin") -> FlaskClient:
    """A test client sending a bearer token of a ``role`` user with every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app, role)}"
    return client


def cli_token(data_dir: Path, role: str = "admin") -> str:
    """A token made the way an operator makes one: ``pacs user add`` then ``pacs token
    create`` on the archive in ``data_dir``."""
    base = [sys.executable, "-m", "pacs.cli"]
    username = f"cli-{role}"
    added = subprocess.run([*base, "user", "add", username, "--role", role, "--password-stdin",
                            "--data-dir", str(data_dir)], input=PASSWORD + "\n",
                           capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    scopes = [arg for scope in ROLE_SCOPES[role] for arg in ("--scope", scope)]
    created = subprocess.run([*base, "token", "create", username, *scopes, "--data-dir",
                              str(data_dir)], capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()
