"""Fixtures shared by the tests: backend pairs, services, and the real peers they need.

``backend`` is parametrised over the two backend pairs the archive supports, so every test
that asks for it (or for ``services``) runs twice: on the embedded default (a folder and an
SQLite file in tmp) and on the production pair (an S3 server process and a throwaway
PostgreSQL cluster, both on loopback). The peers start once per session, on first use; each
test gets a fresh database and a fresh bucket.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pacs.config import Settings
from pacs.scp.server import DicomReceiver
from pacs.services import Services, open_services
from pacs.viewer import ViewerInstallError, install_ohif
from peers import (
    VIEWER_DIR,
    Dcmtk,
    PostgresCluster,
    S3Server,
    free_port,
    postgres_bindir,
    require_peer,
    under_ci,
)

BACKENDS = ("fs-sqlite", "s3-postgres")


@pytest.fixture(scope="session")
def ohif_viewer() -> Path:
    """The pinned OHIF release, installed under VIEWER_DIR (npm fetches it once)."""
    try:
        return install_ohif(VIEWER_DIR)
    except ViewerInstallError as exc:
        if under_ci():
            raise
        pytest.skip(f"OHIF Viewer not installed: {exc}")


@pytest.fixture(scope="session")
def postgres():
    bindir = postgres_bindir()
    require_peer(bindir is not None, "PostgreSQL server binaries (initdb, pg_ctl)")
    cluster = PostgresCluster(bindir).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def s3_server():
    require_peer(S3Server.available(), "moto's S3 server (pip install 'moto[server]')")
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Settings:
    """Settings for one backend pair, with empty storage and index."""
    data_dir = tmp_path / "var"
    if request.param == "fs-sqlite":
        return Settings.load(environ={}, data_dir=data_dir)
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    s3: S3Server = request.getfixturevalue("s3_server")
    return Settings.load(
        environ={},
        data_dir=data_dir,
        database_url=cluster.create_database(),
        object_store="s3",
        s3_endpoint=s3.endpoint,
        s3_bucket=s3.new_bucket_name(),
        s3_access_key=S3Server.access_key,
        s3_secret_key=S3Server.secret_key,
        s3_secure=False,
    )


@pytest.fixture
def services(backend) -> Services:
    opened = open_services(backend)
    yield opened
    opened.close()


@pytest.fixture
def embedded(tmp_path) -> Services:
    """Services on the embedded default only (a folder and SQLite), for tests of behaviour
    that does not depend on the backend pair."""
    opened = open_services(Settings.load(environ={}, data_dir=tmp_path / "var"))
    yield opened
    opened.close()


@pytest.fixture
def app(archive):
    """The web application on the test module's ``archive`` fixture."""
    from pacs.web import create_app

    return create_app(archive.settings, archive)


@pytest.fixture
def start(services):
    """Starts DICOM receivers on loopback with settings overrides; stops them after the test."""
    started: list[DicomReceiver] = []

    def _start(**overrides) -> DicomReceiver:
        settings = services.settings.with_overrides(
            dicom_host="127.0.0.1", dicom_port=free_port(), **overrides
        )
        server = DicomReceiver(settings, services)
        server.start()
        started.append(server)
        return server

    yield _start
    for server in started:
        server.stop(grace=5)


@pytest.fixture(scope="session")
def dcmtk() -> Dcmtk:
    tools = Dcmtk()
    require_peer(tools.available(), "DCMTK tools under /usr/bin (Debian package dcmtk)")
    return tools


def pytest_collection_modifyitems(items):
    """Mark tests by the real peers they use, so `-m 'not postgres'` works."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec and callspec.params.get("backend") == "s3-postgres":
            item.add_marker(pytest.mark.postgres)
            item.add_marker(pytest.mark.s3)
        if "dcmtk" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.dcmtk)
