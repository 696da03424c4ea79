"""The ``pacs`` command: import, ls, and serve as a real process stopped by SIGTERM."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from factories import STUDY_UID, make_instance
from pacs.cli import main
from pacs.config import Settings
from pacs.scp.workers import default_workers
from pacs.services import open_services
from peers import free_port, wait_for_port


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    folder = tmp_path / "var"
    monkeypatch.setenv("PACS_DATA_DIR", str(folder))
    return folder


def instance_count(data_dir: Path) -> int:
    services = open_services(Settings.load(environ={}, data_dir=data_dir))
    try:
        return services.index.counts()["instances"]
    finally:
        services.close()


def test_import_folder_recursively_prints_a_summary(data_dir, tmp_path, capsys):
    folder = tmp_path / "incoming" / "nested"
    folder.mkdir(parents=True)
    for number in range(3):
        (folder / f"{number}.dcm").write_bytes(make_instance(InstanceNumber=number + 1))
    assert main(["import", "--quiet", str(tmp_path / "incoming")]) == 0
    out = capsys.readouterr().out
    assert "3 stored, 0 already stored, 0 refused" in out
    assert re.search(r"MB/s", out)
    assert instance_count(data_dir) == 3


def test_import_zip_archive(data_dir, tmp_path, capsys):
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for number in range(2):
            zf.writestr(f"DICOM/IM{number}", make_instance(InstanceNumber=number + 1))
        zf.writestr("DICOM/", b"")
    assert main(["import", "--quiet", str(archive)]) == 0
    assert "2 stored" in capsys.readouterr().out
    assert instance_count(data_dir) == 2


def test_import_twice_reports_duplicates(data_dir, tmp_path, capsys):
    path = tmp_path / "one.dcm"
    path.write_bytes(make_instance())
    main(["import", "--quiet", str(path)])
    main(["import", "--quiet", str(path)])
    assert "0 stored, 1 already stored" in capsys.readouterr().out


def test_import_lists_refused_files_with_reasons(data_dir, tmp_path, capsys):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "notes.txt").write_text("not an image")
    (incoming / "hostile.dcm").write_bytes(make_instance(StudyInstanceUID="../../etc/passwd"))
    (incoming / "good.dcm").write_bytes(make_instance())
    assert main(["import", "--quiet", str(incoming)]) == 0
    out = capsys.readouterr().out
    assert "1 stored, 0 already stored, 2 refused" in out
    assert "notes.txt: invalid: not a DICOM Part-10 file" in out
    assert "hostile.dcm: invalid: StudyInstanceUID '../../etc/passwd' is not a valid UID" in out


def test_import_of_missing_path_fails_with_a_message(data_dir, tmp_path, capsys):
    assert main(["import", str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_invalid_setting_fails_at_start_naming_it(data_dir, monkeypatch, capsys):
    monkeypatch.setenv("PACS_DICOM_PORT", "not-a-port")
    assert main(["ls"]) == 2
    assert "dicom_port" in capsys.readouterr().err


def test_ls_shows_studies_with_patient_date_modality_and_counts(data_dir, tmp_path, capsys):
    path = tmp_path / "one.dcm"
    path.write_bytes(make_instance())
    main(["import", "--quiet", str(path)])
    capsys.readouterr()
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "Nguyễn^Văn An" in out
    assert "20260315" in out
    assert STUDY_UID in out
    assert re.search(r"CT\s+CT ngực\s+1\s+1", out)


def test_ls_on_an_empty_archive(data_dir, capsys):
    assert main(["ls"]) == 0
    assert "(no studies)" in capsys.readouterr().out


def start_serve(data_dir: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PACS_DATA_DIR": str(data_dir), "PACS_DICOM_PORT": str(port),
           "PACS_DICOM_HOST": "127.0.0.1", "PACS_HTTP_PORT": str(free_port())}
    process = subprocess.Popen(
        [sys.executable, "-m", "pacs.cli", "serve", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
    except TimeoutError:
        process.kill()
        raise AssertionError(process.communicate()[0]) from None
    return process


@pytest.mark.dcmtk
def test_serve_stores_from_storescu_and_stops_cleanly_on_sigterm(dcmtk, data_dir, tmp_path):
    port = free_port()
    process = start_serve(data_dir, port, "--aet", "PACS")
    try:
        path = tmp_path / "one.dcm"
        path.write_bytes(make_instance())
        result = subprocess.run([dcmtk.storescu, "-aec", "PACS", "127.0.0.1", str(port),
                                 str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert "association released from STORESCU@127.0.0.1" in output
    assert "1 stored" in output
    assert instance_count(data_dir) == 1


@pytest.mark.dcmtk
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_during_a_transfer_loses_no_acknowledged_instance(
    dcmtk, data_dir, tmp_path, workers
):
    files = []
    for number in range(60):
        path = tmp_path / f"{number:03}.dcm"
        path.write_bytes(make_instance(InstanceNumber=number + 1))
        files.append(str(path))
    port = free_port()
    process = start_serve(data_dir, port, "--workers", workers)
    sender = subprocess.Popen(
        [dcmtk.storescu, "-v", "-aec", "PACS", "127.0.0.1", str(port), *files],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    # Stop the archive as soon as the first instances have been acknowledged.
    acknowledged = 0
    lines = []
    for line in sender.stdout:
        lines.append(line)
        if "Received Store Response (Success)" in line:
            acknowledged += 1
            if acknowledged == 5:
                process.send_signal(signal.SIGTERM)
    sender.stdout.close()
    sender.wait(60)
    output = process.communicate(timeout=90)[0]
    assert process.returncode == 0, output
    # Every instance the sender was told is stored is in the archive.
    assert instance_count(data_dir) >= acknowledged >= 5, "".join(lines)


# -- serve with several receiver processes ---------------------------------------------------


class Serving:
    """``pacs serve`` in a process of its own, its output read line by line as it comes."""

    def __init__(self, data_dir: Path, port: int, *extra: str) -> None:
        env = {**os.environ, "PACS_DATA_DIR": str(data_dir), "PACS_DICOM_PORT": str(port),
               "PACS_DICOM_HOST": "127.0.0.1", "PACS_HTTP_PORT": str(free_port())}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pacs.cli", "serve", *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put("")  # end of output

    def wait_until_ready(self, timeout: float = 60) -> str:
        """The "ready" line, printed once every receiver process serves."""
        return self.wait_for(" ready on port ", timeout)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """The next line of output that holds ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            self.lines.append(line)
            if text in line:
                return line
            if not line:
                self.stop()
                raise AssertionError(f"pacs serve never printed {text!r}:\n"
                                     + "".join(self.lines))

    def stop(self) -> str:
        """SIGTERM, wait for the exit; everything the process printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(90)
        self._reader.join(30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return "".join(self.lines)


def echo_association(port: int):
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    return assoc


def test_serve_spreads_concurrent_associations_evenly_over_workers(data_dir):
    port = free_port()
    serving = Serving(data_dir, port, "--workers", "2")
    serving.wait_until_ready()
    try:
        associations = [echo_association(port) for _ in range(4)]  # all four open at once
        for assoc in associations:
            assert assoc.send_c_echo().Status == 0x0000
        for assoc in associations:
            assoc.release()
    finally:
        output = serving.stop()
    assert serving.process.returncode == 0, output
    accepted = Counter(re.findall(r"\[(worker \d+)\]: association accepted", output))
    assert accepted == {"worker 1": 2, "worker 2": 2}, output


def test_serve_starts_one_worker_per_core_by_default(data_dir):
    serving = Serving(data_dir, free_port())
    ready = serving.wait_until_ready()
    output = serving.stop()
    assert serving.process.returncode == 0, output
    assert f"({default_workers()} receiver process" in ready


def test_serve_keeps_serving_when_a_worker_is_killed(data_dir):
    port = free_port()
    # Without the web service, the parent's only children are the receiver workers.
    serving = Serving(data_dir, port, "--workers", "2", "--http-port", "0")
    serving.wait_until_ready()
    pid = serving.process.pid
    try:
        workers = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        os.kill(int(workers[0]), signal.SIGKILL)
        for _ in range(4):  # the survivor takes them all, the replacement joins in
            assoc = echo_association(port)
            assert assoc.send_c_echo().Status == 0x0000
            assoc.release()
    finally:
        output = serving.stop()
    assert serving.process.returncode == 0, output
    assert "stopped unexpectedly" in output


def test_serve_starts_the_web_service_again_when_it_dies(data_dir):
    http_port = free_port()
    serving = Serving(data_dir, free_port(), "--workers", "1", "--http-port", str(http_port))
    try:
        first = serving.wait_for("web service ready")
        os.kill(int(re.search(r"pid (\d+)", first).group(1)), signal.SIGKILL)
        serving.wait_for("web service ready", timeout=90)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=30) as answer:
            assert answer.status == 200
    finally:
        output = serving.stop()
    assert serving.process.returncode == 0, output
    assert "the web service stopped unexpectedly" in output
