"""Real peers for the tests: a throwaway PostgreSQL cluster, an S3 server process, DCMTK.

Each peer is started as a real process on loopback and stopped by the fixture that made it.
When a peer's programs are missing, :func:`require_peer` skips the test with a loud reason on
a developer's machine and fails it under CI (``CI=true``), where a skipped integration test
would hide a broken installation.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"


#: Where `make test` installs the OHIF Viewer (`pacs viewer install`), and tests serve it from.
VIEWER_DIR = Path(__file__).resolve().parent.parent / "var" / "viewer"


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_peer(available: bool, reason: str) -> None:
    """Skip (locally) or fail (under CI) when a real peer the test needs is missing."""
    if available:
        return
    message = f"missing real peer: {reason}; install it with scripts/install_system_deps.sh"
    if under_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Return once something accepts connections on ``host:port``; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


def stop_process(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if the process has not gone after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)


# -- DCMTK ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dcmtk:
    """Full paths of DCMTK's tools (the bare names on PATH are pynetdicom's Python scripts)."""

    echoscu: str = "/usr/bin/echoscu"
    storescu: str = "/usr/bin/storescu"
    storescp: str = "/usr/bin/storescp"
    findscu: str = "/usr/bin/findscu"
    movescu: str = "/usr/bin/movescu"
    getscu: str = "/usr/bin/getscu"
    dcmdump: str = "/usr/bin/dcmdump"

    def available(self) -> bool:
        return all(os.access(getattr(self, tool), os.X_OK) for tool in self.__dataclass_fields__)


# -- PostgreSQL -----------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """The folder of Debian's initdb/pg_ctl (newest major version), or None."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PostgresCluster:
    """A PostgreSQL cluster made with ``initdb`` in a temp folder and started with ``pg_ctl``.

    PostgreSQL refuses to run as root; when the tests run as root the cluster belongs to the
    ``postgres`` system user that Debian's package creates.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="pacs-pg-"))
        self.datadir = self.folder / "data"
        self._run_as = "postgres" if os.geteuid() == 0 else None
        if self._run_as:
            user = pwd.getpwnam(self._run_as)
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        self._created = 0

    def _command(self, *args: str) -> list[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", self._run_as, "--", *command] if self._run_as else command

    def start(self) -> PostgresCluster:
        subprocess.run(
            self._command("initdb", "-D", str(self.datadir), "-U", "postgres",
                          "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"),
            check=True, capture_output=True,
        )  # fmt: skip
        options = (
            f"-c listen_addresses={LOOPBACK} -c port={self.port} "
            f"-c unix_socket_directories={self.folder} -c fsync=off -c max_connections=200"
        )
        subprocess.run(
            self._command("pg_ctl", "-D", str(self.datadir), "-o", options,
                          "-l", str(self.folder / "server.log"), "-w", "-t", "60", "start"),
            check=True, capture_output=True,
        )  # fmt: skip
        return self

    def stop(self) -> None:
        subprocess.run(
            self._command("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop"),
            capture_output=True,
        )
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        self._created += 1
        name = f"pacs_test_{self._created}"
        with psycopg.connect(
            host=LOOPBACK, port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


# -- S3 -------------------------------------------------------------------------------------


class S3Server:
    """moto's S3 server in its own process on loopback, reached over HTTP by ``minio``."""

    access_key = "pacs-test-access"
    secret_key = "pacs-test-secret"

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._buckets = 0

    @staticmethod
    def available() -> bool:
        try:
            import moto.server  # noqa: F401
        except ImportError:
            return False
        return True

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> S3Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(LOOPBACK, self.port, timeout=60)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def new_bucket_name(self) -> str:
        self._buckets += 1
        return f"pacs-test-{os.getpid()}-{self._buckets}"
