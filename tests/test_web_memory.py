"""WADO-RS streams: retrieving a 1 GB study keeps the web worker's memory flat."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from webclient import PASSWORD

from factories import make_instance
from pacs.config import Settings
from pacs.ingest import Origin
from pacs.services import open_services
from peers import free_port, stop_process, wait_for_port

INSTANCES = 100
SIDE = 2240  # 2240 × 2240 × 16 bits: ~10 MB an instance, ~1 GB the study


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def web_workers(serve_pid: int) -> list[int]:
    """The gunicorn workers: the grandchildren of ``pacs serve`` (through the arbiter)."""
    children = Path(f"/proc/{serve_pid}/task/{serve_pid}/children").read_text().split()
    workers = []
    for child in children:
        workers += Path(f"/proc/{child}/task/{child}/children").read_text().split()
    return [int(pid) for pid in workers]


def test_retrieving_a_1_gb_study_keeps_the_worker_rss_flat(tmp_path):
    data_dir = tmp_path / "var"
    services = open_services(Settings.load(environ={}, data_dir=data_dir))
    study = "1.2.826.0.1.3680043.8.498.901"
    pixels = np.random.default_rng(1).integers(0, 4096, (SIDE, SIDE), dtype=np.uint16).tobytes()
    try:
        for number in range(INSTANCES):
            data = make_instance(StudyInstanceUID=study, SeriesInstanceUID=f"{study}.1",
                                 SOPInstanceUID=f"{study}.1.{number + 1}", Rows=SIDE,
                                 Columns=SIDE, PixelData=pixels)
            assert services.ingest(data, Origin("import", "test")).ok
        services.accounts.add_user("reader", PASSWORD, "clinician")
        token = services.accounts.create_token("reader")
    finally:
        services.close()
    auth = {"Authorization": f"Bearer {token}"}
    http_port = free_port()
    env = {**os.environ, "PACS_DATA_DIR": str(data_dir), "PACS_DICOM_HOST": "127.0.0.1",
           "PACS_DICOM_PORT": str(free_port()), "PACS_HTTP_PORT": str(http_port),
           "PACS_HTTP_WORKERS": "1", "PACS_WORKERS": "1"}
    with (tmp_path / "serve.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "pacs.cli", "serve"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", http_port, timeout=60)
        connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=300)
        connection.request("GET", "/dicom-web/studies?limit=1", headers=auth)  # warm up
        connection.getresponse().read()
        (worker,) = web_workers(process.pid)
        before = rss_kib(worker)
        connection.request("GET", f"/dicom-web/studies/{study}", headers={
            **auth, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        response = connection.getresponse()
        received, peak = 0, before
        while chunk := response.read(1 << 20):
            received += len(chunk)
            peak = max(peak, rss_kib(worker))
        connection.close()
    finally:
        stop_process(process)
    assert response.status == 200
    assert received > INSTANCES * SIDE * SIDE * 2  # every instance came
    assert peak - before < 64 * 1024, f"the worker grew by {(peak - before) // 1024} MB"
