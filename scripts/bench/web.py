#!/usr/bin/env python3
"""Web benchmark: DICOMweb against Orthanc's DICOMweb plugin, side by side in one run.

What is measured
----------------
One generated CT series (``--instances`` 300 × 512×512 16-bit, ~0.5 MB each) is loaded into
the archive (``Services.ingest``) and into Orthanc 1.10.1 with its DICOMweb plugin (Debian's
``orthanc`` and ``orthanc-dicomweb``, started as ../shared/ANCHORS.md says: ``TCP_NODELAY=1``,
UTF-8). Then, over one keep-alive HTTP connection per server, servers taken in turn:

* WADO-RS series retrieval as stored (``transfer-syntax=*``): MB/s, median of ``--repeat``;
* series metadata with ``Accept-Encoding: gzip`` (what a viewer sends): p50/p95 ms,
  ``--samples`` requests per round;
* ``/rendered`` JPEG of a 512×512 frame, a different instance each time: p50/p95 ms,
  ``--samples`` per round, and the same frame asked for again (neither server keeps
  rendered frames: the browser does, for the day its Cache-Control allows);
* thumbnails (the archive only: Orthanc 1.10's plugin has none): the first request of each
  instance (rendered and stored) and the second (served from the object store): p50 ms;
* QIDO-RS study search by PatientID: p50/p95 ms, ``--samples`` per round.

Targets (issue 4): WADO-RS series throughput ≥ Orthanc's; series metadata p95 ≤ 0.1 × Orthanc's;
rendered frame p50 ≤ Orthanc's; cached thumbnail p50 < 5 ms.

    python scripts/bench/web.py                 # 300 instances, 20 rounds of 5 samples
    python scripts/bench/web.py --instances 100 --repeat 10
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pacs.config import Settings
from pacs.ingest import Origin
from pacs.services import open_services

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
LOOPBACK = "127.0.0.1"
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
PATIENT_ID = "BENCHWEB01"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- data ---------------------------------------------------------------------------------------


def generate_series(count: int) -> tuple[str, str, list[tuple[str, bytes]]]:
    """A CT series of ``count`` 512×512 instances: (study UID, series UID, [(SOP UID, file)])."""
    from io import BytesIO

    rng = np.random.default_rng(2026)
    study, series = generate_uid(), generate_uid()
    base = (np.hypot(*np.mgrid[-256:256, -256:256]) < 200) * 1040 + 24
    files = []
    for number in range(1, count + 1):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID = "Nguyễn^Văn An", PATIENT_ID
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.Modality, ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "CT", "20261130", 1, number
        ds.ImagePositionPatient = [-250, -250, -number * 1.25]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.98, 0.98], 1.25
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        noise = rng.integers(0, 60, size=(512, 512))
        ds.PixelData = (base + noise).astype(np.uint16).tobytes()
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
        files.append((str(ds.SOPInstanceUID), out.getvalue()))
    return study, series, files


# -- servers ------------------------------------------------------------------------------------


class Server:
    """One DICOMweb server on loopback, reached over one keep-alive connection."""

    name = ""
    root = "/dicom-web"

    def __init__(self) -> None:
        self.http_port = free_port()
        self.process: subprocess.Popen[Any] | None = None
        self._connection: http.client.HTTPConnection | None = None
        self.credentials: dict[str, str] = {}  # sent with every request

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(LOOPBACK, self.http_port,
                                                              timeout=300)
            try:
                self._connection.request("GET", self.root + path,
                                         headers={**self.credentials, **(headers or {})})
                response = self._connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self._connection.close()
                self._connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Archive(Server):
    name = "archive"

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def load(self, files: list[tuple[str, bytes]]) -> None:
        services = open_services(Settings.load(environ={}, data_dir=self.folder))
        try:
            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(
                    lambda item: services.ingest(item[1], Origin("import", "bench")), files))
            # The archive answers signed-in users only: a reader's API token, as a DICOMweb
            # client or an authenticating proxy would send.
            if not services.accounts.has_users():
                services.accounts.add_user("bench", secrets.token_urlsafe(16), "clinician")
            token = services.accounts.create_token("bench", scopes=["read"])
            self.credentials = {"Authorization": f"Bearer {token}"}
        finally:
            services.close()
        if not all(result.ok for result in results):
            raise RuntimeError("the archive refused some of the generated instances")

    def start(self) -> None:
        env = {**os.environ, "PACS_DATA_DIR": str(self.folder), "PACS_DICOM_HOST": LOOPBACK,
               "PACS_DICOM_PORT": str(free_port()), "PACS_HTTP_PORT": str(self.http_port),
               "PACS_WORKERS": "1", "PACS_LOG_LEVEL": "WARNING"}
        log = (self.folder.parent / "pacs-serve.log").open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "pacs.cli", "serve"], env=env,
                                        stdout=log, stderr=subprocess.STDOUT)
        _wait_for(self, "/studies?limit=1")


class Orthanc(Server):
    name = "Orthanc"

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "bench", "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"), "DicomPort": free_port(),
            "HttpPort": self.http_port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DefaultEncoding": "Utf8",
            "StorageCompression": False, "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        }
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        log = (self.folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen([ORTHANC, str(self.folder / "orthanc.json")],
                                        env={**os.environ, "TCP_NODELAY": "1"}, stdout=log,
                                        stderr=subprocess.STDOUT)
        _wait_for(self, "/studies?limit=1")

    def load(self, files: list[tuple[str, bytes]]) -> None:
        from query import orthanc_poster

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(orthanc_poster(self.http_port), files))


def _wait_for(server: Server, path: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if server.get(path)[0] in (200, 204):
                return
        except OSError:
            pass
        if server.process is not None and server.process.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} did not start")


# -- measuring ----------------------------------------------------------------------------------


def timed(server: Server, path: str, headers: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    status, body = server.get(path, headers)
    seconds = time.perf_counter() - start
    if status != 200:
        raise RuntimeError(f"{server.name}: GET {path}: {status} {body[:200]!r}")
    return seconds, len(body)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def run(args: argparse.Namespace, scratch: Path) -> dict[str, dict[str, Any]]:
    say(f"generating {args.instances} CT instances ...")
    study, series, files = generate_series(args.instances)
    megabytes = sum(len(data) for _, data in files) / 1e6
    servers: list[Server] = [Archive(scratch / "pacs")]
    if not args.no_orthanc and os.access(ORTHANC, os.X_OK) and os.path.exists(DICOMWEB_PLUGIN):
        servers.append(Orthanc(scratch / "orthanc"))
    elif not args.no_orthanc:
        say("Orthanc or its DICOMweb plugin missing (scripts/install_system_deps.sh --bench)")
    results: dict[str, dict[str, Any]] = {server.name: {} for server in servers}
    try:
        for server in servers:
            if isinstance(server, Orthanc):
                server.start()
                server.load(files)
            else:
                server.load(files)  # type: ignore[attr-defined]
                server.start()
            say(f"{server.name}: {len(files)} instances ({megabytes:.0f} MB) loaded")
        series_path = f"/studies/{study}/series/{series}"
        sops = [sop for sop, _ in files]
        for server in servers:  # one unmeasured warm-up of every request kind
            timed(server, series_path, {"Accept": AS_STORED})
            timed(server, series_path + "/metadata", {"Accept-Encoding": "gzip"})
            timed(server, f"{series_path}/instances/{sops[0]}/rendered", {"Accept": "image/jpeg"})
        for round_number in range(args.repeat):
            for server in servers:
                measured = results[server.name]
                seconds, size = timed(server, series_path, {"Accept": AS_STORED})
                measured.setdefault("retrieve MB/s", []).append(size / 1e6 / seconds)
                for sample in range(args.samples):
                    seconds, _ = timed(server, series_path + "/metadata", {
                        "Accept-Encoding": "gzip", "Accept": "application/dicom+json"})
                    measured.setdefault("metadata ms", []).append(seconds * 1000)
                    sop = sops[((round_number * args.samples + sample) * 7 + 1) % len(sops)]
                    seconds, _ = timed(server, f"{series_path}/instances/{sop}/rendered",
                                       {"Accept": "image/jpeg"})
                    measured.setdefault("rendered ms", []).append(seconds * 1000)
                    seconds, _ = timed(server, f"{series_path}/instances/{sop}/rendered",
                                       {"Accept": "image/jpeg"})
                    measured.setdefault("rendered again ms", []).append(seconds * 1000)
                    seconds, _ = timed(server, f"/studies?PatientID={PATIENT_ID}",
                                       {"Accept": "application/dicom+json"})
                    measured.setdefault("QIDO ms", []).append(seconds * 1000)
                if isinstance(server, Archive):
                    path = f"{series_path}/instances/{sops[round_number % len(sops)]}/thumbnail"
                    cold, _ = timed(server, path, {"Accept": "image/jpeg"})
                    cached, _ = timed(server, path, {"Accept": "image/jpeg"})
                    measured.setdefault("thumbnail cold ms", []).append(cold * 1000)
                    measured.setdefault("thumbnail cached ms", []).append(cached * 1000)
    finally:
        for server in servers:
            server.stop()
    return results


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    print(f"\nDICOMweb, one CT series of {args.instances} × 512×512 16-bit instances, "
          f"{args.repeat} rounds (medians of the retrievals; p50 / p95 of the latencies, "
          f"{args.samples} per round for metadata, rendered and QIDO)\n")
    print(f"{'measurement':<22} {'archive':>18} {'Orthanc':>18}")
    for name in ("retrieve MB/s", "metadata ms", "rendered ms", "rendered again ms", "QIDO ms",
                 "thumbnail cold ms", "thumbnail cached ms"):
        cells = []
        for server in ("archive", "Orthanc"):
            values = results.get(server, {}).get(name)
            if not values:
                cells.append("-")
            elif name.endswith("MB/s"):
                cells.append(f"{statistics.median(values):.0f}")
            else:
                cells.append(f"{percentile(values, 0.5):.1f} / {percentile(values, 0.95):.1f}")
        print(f"{name:<22} {cells[0]:>18} {cells[1]:>18}")
    mine, theirs = results.get("archive", {}), results.get("Orthanc", {})
    print("\ntargets:")
    if theirs:
        ratio = (statistics.median(mine["retrieve MB/s"])
                 / statistics.median(theirs["retrieve MB/s"]))
        print(f"  WADO-RS series throughput / Orthanc's {ratio:.2f} >= 1     "
              f"{'MET' if ratio >= 1 else 'MISS'}")
        ratio = percentile(mine["metadata ms"], 0.95) / percentile(theirs["metadata ms"], 0.95)
        print(f"  series metadata p95 / Orthanc's       {ratio:.2f} <= 0.1  "
              f"{'MET' if ratio <= 0.1 else 'MISS'}")
        ratio = percentile(mine["rendered ms"], 0.5) / percentile(theirs["rendered ms"], 0.5)
        print(f"  rendered frame p50 / Orthanc's        {ratio:.2f} <= 1    "
              f"{'MET' if ratio <= 1 else 'MISS'}")
    cached = percentile(mine["thumbnail cached ms"], 0.5)
    print(f"  cached thumbnail p50                  {cached:.1f} ms < 5 ms "
          f"{'MET' if cached < 5 else 'MISS'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=300, help="instances in the series")
    parser.add_argument("--repeat", type=int, default=20, help="timed rounds")
    parser.add_argument("--samples", type=int, default=5,
                        help="metadata, rendered and QIDO requests per round (a different "
                             "instance rendered each time)")
    parser.add_argument("--no-orthanc", action="store_true", help="do not run Orthanc")
    parser.add_argument("--scratch", type=Path, default=None, help="folder for the data")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="pacs-web-bench-", dir=args.scratch))
    try:
        results = run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
