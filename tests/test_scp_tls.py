"""DICOM over TLS: DCMTK's echoscu and storescu with certificates made by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pki import make_pki

from factories import make_instance
from pacs.config import SettingsError
from pacs.scp.server import DicomReceiver
from pacs.scp.tls import server_context
from peers import free_port, wait_for_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_receiver(services, pki):
    port = free_port()
    settings = services.settings.with_overrides(
        dicom_host="127.0.0.1", dicom_port=free_port(), tls_port=port,
        tls_certificate=pki["server_pem"], tls_private_key=pki["server_key"],
        tls_ca_certificates=pki["ca"],
    )
    server = DicomReceiver(settings, services)
    server.start()
    yield server
    server.stop(grace=5)


def _tls_args(pki, who: str = "client") -> list[str]:
    return ["+tls", str(pki[f"{who}_key"]), str(pki[f"{who}_pem"]), "+cf", str(pki["ca"])]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60,
                          env={"TCP_NODELAY": "1"})


def test_echo_over_tls_with_a_client_certificate_succeeds(dcmtk, pki, tls_receiver):
    done = _run([dcmtk.echoscu, "-aec", "PACS", *_tls_args(pki), "127.0.0.1",
                 str(tls_receiver.settings.tls_port)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_store_over_tls_archives_the_instance(dcmtk, pki, tls_receiver, services, tmp_path):
    path = tmp_path / "one.dcm"
    path.write_bytes(make_instance())
    done = _run([dcmtk.storescu, "-aec", "PACS", *_tls_args(pki), "127.0.0.1",
                 str(tls_receiver.settings.tls_port), str(path)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert services.index.counts()["instances"] == 1


def test_client_certificate_from_an_unknown_authority_is_refused(dcmtk, pki, tls_receiver):
    done = _run([dcmtk.echoscu, "-aec", "PACS", *_tls_args(pki, "stranger"), "127.0.0.1",
                 str(tls_receiver.settings.tls_port)])
    assert done.returncode != 0


def test_plain_connection_to_the_tls_port_is_refused_and_plain_port_still_works(
        dcmtk, tls_receiver):
    plain_on_tls = _run([dcmtk.echoscu, "-aec", "PACS", "-to", "5", "127.0.0.1",
                         str(tls_receiver.settings.tls_port)])
    assert plain_on_tls.returncode != 0
    plain = _run([dcmtk.echoscu, "-aec", "PACS", "127.0.0.1", str(tls_receiver.port)])
    assert plain.returncode == 0


def test_unreadable_key_fails_at_start_naming_the_setting(services, pki, tmp_path):
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("not a key")
    settings = services.settings.with_overrides(
        dicom_port=free_port(), tls_port=free_port(), tls_certificate=pki["server_pem"],
        tls_private_key=bad_key,
    )
    with pytest.raises(SettingsError, match="tls_certificate/tls_private_key"):
        server_context(settings)


def test_serve_with_two_workers_answers_on_the_tls_port(dcmtk, pki, tmp_path):
    port, tls_port = free_port(), free_port()
    env = {**os.environ, "PACS_DATA_DIR": str(tmp_path / "var"), "PACS_DICOM_HOST": "127.0.0.1",
           "PACS_DICOM_PORT": str(port), "PACS_WORKERS": "2", "PACS_TLS_PORT": str(tls_port),
           "PACS_HTTP_PORT": "0",
           "PACS_TLS_CERTIFICATE": str(pki["server_pem"]),
           "PACS_TLS_PRIVATE_KEY": str(pki["server_key"]),
           "PACS_TLS_CA_CERTIFICATES": str(pki["ca"])}
    process = subprocess.Popen([sys.executable, "-m", "pacs.cli", "serve"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port("127.0.0.1", tls_port, timeout=60)
        for _ in range(3):  # whichever worker takes it
            done = _run([dcmtk.echoscu, "-aec", "PACS", *_tls_args(pki), "127.0.0.1",
                         str(tls_port)])
            assert done.returncode == 0, done.stdout + done.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert output.count("DICOM TLS listener on") == 2, output  # both workers serve it
    assert "cannot" not in output, output
