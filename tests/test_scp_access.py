"""AE access control at the DIMSE edge, against DCMTK echoscu, storescu and findscu."""

from __future__ import annotations

import logging
import subprocess

from factories import make_instance
from pacs.scp.access import AccessControlledACSE


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60,
                          env={"TCP_NODELAY": "1"})


def echo(dcmtk, server, aet: str, called: str | None = None):
    return run([dcmtk.echoscu, "-v", "-aet", aet, "-aec", called or server.settings.aet,
                "127.0.0.1", str(server.port)])


def test_acceptor_negotiation_hook_still_exists_in_pynetdicom():
    # AccessControlledACSE overrides a private pynetdicom method; a release that renames it
    # must fail here rather than silently accept everyone.
    assert callable(getattr(AccessControlledACSE.__mro__[1], "_negotiate_as_acceptor", None))


def test_unknown_calling_ae_is_rejected_at_association_with_the_reason(
        dcmtk, start, caplog):
    server = start(access="CT01")
    with caplog.at_level(logging.WARNING, logger="pacs.scp"):
        done = echo(dcmtk, server, "INTRUDER")
    assert done.returncode != 0
    assert "Calling AE Title Not Recognized" in done.stdout + done.stderr
    assert any("INTRUDER@127.0.0.1" in record.getMessage() and "not allowed" in
               record.getMessage() for record in caplog.records)


def test_known_calling_ae_is_accepted(dcmtk, start):
    server = start(access="CT01")
    assert echo(dcmtk, server, "CT01").returncode == 0


def test_known_ae_from_another_host_is_rejected(dcmtk, start):
    server = start(access="CT01@10.9.9.9")
    done = echo(dcmtk, server, "CT01")
    assert done.returncode != 0
    assert "Calling AE Title Not Recognized" in done.stdout + done.stderr


def test_wrong_called_ae_title_is_rejected(dcmtk, start):
    server = start()
    done = echo(dcmtk, server, "CT01", called="NOT_THE_PACS")
    assert done.returncode != 0
    assert "Called AE Title Not Recognized" in done.stdout + done.stderr


def test_open_policy_accepts_any_caller(dcmtk, start):
    server = start()
    assert echo(dcmtk, server, "ANYONE").returncode == 0


def test_caller_allowed_to_store_only_cannot_query(dcmtk, start, tmp_path):
    server = start(access="CT01:store")
    done = run([dcmtk.findscu, "-v", "-S", "-aet", "CT01", "-aec", server.settings.aet,
                "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=*",
                "127.0.0.1", str(server.port)])
    assert "Status: 0x124" in done.stdout + done.stderr  # Refused: Not Authorized


def test_caller_allowed_to_query_only_cannot_store(dcmtk, start, services, tmp_path):
    server = start(access="WS1:query")
    path = tmp_path / "one.dcm"
    path.write_bytes(make_instance())
    done = run([dcmtk.storescu, "-v", "-aet", "WS1", "-aec", server.settings.aet,
                "127.0.0.1", str(server.port), str(path)])
    assert "0x124" in done.stdout + done.stderr  # Refused: Not Authorized
    assert services.index.counts()["instances"] == 0


def test_server_keeps_serving_after_a_rejection(dcmtk, start):
    server = start(access="CT01")
    echo(dcmtk, server, "INTRUDER")
    assert echo(dcmtk, server, "CT01").returncode == 0
