#!/usr/bin/env python3
"""Ingest benchmark: the ingest path and C-STORE against a raw fsync'd copy and Orthanc.

Generates N CT instances (512x512, 16-bit, ~0.5 MB) and measures, in one run on one disk:

* ``raw copy``: the same bytes written file by file with fsync (1 and 4 threads): the
  reference the disk sets;
* ``ingest path``: :meth:`pacs.ingest.Ingestor.ingest` called directly (1 and 4 callers);
* ``pacs serve``: DCMTK ``storescu`` sending to the archive over 1 and 4 associations, with
  its default number of receiver processes (one per core) unless ``--workers`` says;
* ``Orthanc``: the same sends to Debian's Orthanc on loopback (when installed), started as
  ../shared/ANCHORS.md says: TCP_NODELAY=1, UTF-8 default encoding, SQLite index.

Each measurement runs once per round, in rounds that interleave the archive with its
references (each run after a ``sync``, on a quiet disk), and the median is printed, with the
ratios the targets are stated in. The archive's peak RSS is read from /proc after a quarter
of the instances and after all of them: memory is flat when the two are close.

    python scripts/bench/ingest.py --count 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pacs.config import Settings
from pacs.ingest import IngestStatus, Origin
from pacs.scp.workers import default_workers
from pacs.services import open_services

STORESCU = "/usr/bin/storescu"
ORTHANC = "/usr/sbin/Orthanc"
LOOPBACK = "127.0.0.1"


# -- data -------------------------------------------------------------------------------------


def make_ct_series(folder: Path, count: int) -> list[Path]:
    """Write ``count`` CT slices of one study, 512x512 16-bit, with a realistic header."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    noise = rng.integers(0, 60, size=(512, 512), dtype=np.int16)
    yy, xx = np.mgrid[-256:256, -256:256]
    body = (xx / 220.0) ** 2 + (yy / 160.0) ** 2 < 1
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for number in range(1, count + 1):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20261122"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "081500"
        ds.AccessionNumber = "BENCH0001"
        ds.Modality = "CT"
        ds.Manufacturer = "Bench"
        ds.InstitutionName = "Bệnh viện Đa khoa tỉnh Lào Cai"
        ds.ReferringPhysicianName = "Trần^Bình"
        ds.StudyDescription = "CT ngực không cản quang"
        ds.SeriesDescription = "Axial 1.0mm"
        ds.PatientName = "Nguyễn^Văn An"
        ds.PatientID = "BN-BENCH"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "M"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = "1.0"
        ds.KVP = "120"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = "1"
        ds.SeriesNumber = 2
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [-250.0, -250.0, -float(number)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = frame
        ds.SliceLocation = -float(number)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.PixelSpacing = [0.976, 0.976]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        pixels = np.where(body, 1064, 0).astype(np.int16) + noise + number
        ds.PixelData = pixels.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{number:05}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# -- measurements -----------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    peak_rss_mb: list[float] = field(default_factory=list)


@dataclass
class Result:
    name: str
    runs: list[Run]
    count: int
    megabytes: float

    @property
    def rate(self) -> float:
        return self.count / statistics.median(run.seconds for run in self.runs)

    @property
    def mb_rate(self) -> float:
        return self.megabytes / statistics.median(run.seconds for run in self.runs)

    def rss(self) -> str:
        if not self.runs[0].peak_rss_mb:
            return ""
        quarter = statistics.median(run.peak_rss_mb[0] for run in self.runs)
        full = statistics.median(run.peak_rss_mb[-1] for run in self.runs)
        return f"peak RSS {quarter:.0f} MB after N/4, {full:.0f} MB after N"


def in_threads(items: Sequence[Path], threads: int, work: Callable[[Path], None]) -> None:
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(work, items):
            pass


def raw_copy(files: Sequence[Path], blobs: dict[Path, bytes], scratch: Path, threads: int) -> Run:
    target = scratch / "raw"
    target.mkdir()

    def copy(path: Path) -> None:
        fd = os.open(target / path.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, blobs[path])
            os.fsync(fd)
        finally:
            os.close(fd)

    start = time.perf_counter()
    in_threads(files, threads, copy)
    seconds = time.perf_counter() - start
    shutil.rmtree(target)
    return Run(seconds)


def ingest_path(files: Sequence[Path], blobs: dict[Path, bytes], scratch: Path,
                threads: int) -> Run:
    settings = Settings.load(environ={}, data_dir=scratch / "var")
    services = open_services(settings)
    origin = Origin("import", "bench")

    def ingest(path: Path) -> None:
        result = services.ingestor.ingest(blobs[path], origin)
        if result.status is not IngestStatus.STORED:
            raise RuntimeError(f"{path}: {result.status.value}: {result.reason}")

    try:
        start = time.perf_counter()
        in_threads(files, threads, ingest)
        seconds = time.perf_counter() - start
    finally:
        services.close()
    shutil.rmtree(scratch / "var")
    return Run(seconds)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def process_tree(pid: int) -> list[int]:
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        if children.exists():
            pending.extend(int(child) for child in children.read_text().split())
    return pids


def peak_rss_mb(pid: int) -> float:
    """The largest peak RSS (VmHWM) of a process and its children, in MB."""
    peak = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak / 1024


def storescu(port: int, aet: str, files: Sequence[Path], associations: int) -> None:
    """Send ``files`` over ``associations`` parallel DCMTK storescu processes."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    parts = [list(files[i::associations]) for i in range(associations)]
    senders = [
        subprocess.Popen(
            [STORESCU, "-aec", aet, "--no-halt", LOOPBACK, str(port), *map(str, part)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for part in parts
    ]
    failures = []
    for sender in senders:
        _, errors = sender.communicate()
        if sender.returncode != 0 or "Error" in errors:
            failures.append(errors.strip()[-500:])
    if failures:
        raise RuntimeError("storescu failed:\n" + "\n".join(failures))


def send_in_two_phases(pid: int, port: int, aet: str, files: Sequence[Path],
                       associations: int) -> Run:
    quarter = len(files) // 4
    start = time.perf_counter()
    storescu(port, aet, files[:quarter], associations)
    rss = [peak_rss_mb(pid)]
    storescu(port, aet, files[quarter:], associations)
    seconds = time.perf_counter() - start
    rss.append(peak_rss_mb(pid))
    return Run(seconds, rss)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def pacs_serve(files: Sequence[Path], scratch: Path, associations: int, workers: int) -> Run:
    """``pacs serve`` with ``workers`` receiver processes (0: its default, one per core)."""
    port = free_port()
    data_dir = scratch / "pacs"
    env = {**os.environ, "PACS_DATA_DIR": str(data_dir), "PACS_DICOM_PORT": str(port),
           "PACS_DICOM_HOST": LOOPBACK, "PACS_WORKERS": str(workers), "PACS_LOG_LEVEL": "WARNING",
           "PACS_HTTP_PORT": "0"}  # the receiver alone is measured
    server = subprocess.Popen([sys.executable, "-m", "pacs.cli", "serve"], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        wait_until_ready(server)
        return send_in_two_phases(server.pid, port, "PACS", files, associations)
    finally:
        stop(server)
        server.stdout.close()  # type: ignore[union-attr]
        shutil.rmtree(data_dir, ignore_errors=True)


def wait_until_ready(server: subprocess.Popen) -> None:
    """Wait for ``pacs serve``'s "ready" line: every receiver process serves (the port
    itself accepts connections as soon as it is bound, before the workers are up)."""
    assert server.stdout is not None
    for line in server.stdout:
        if " ready on port " in line:
            return
    raise RuntimeError(f"pacs serve exited with code {server.wait()} before it was ready")


def orthanc(files: Sequence[Path], scratch: Path, associations: int) -> Run:
    folder = scratch / "orthanc"
    folder.mkdir()
    port, http_port = free_port(), free_port()
    config = {
        "Name": "bench", "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"), "DicomAet": "ORTHANC", "DicomPort": port,
        "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False, "DefaultEncoding": "Utf8", "Plugins": [],
        "StorageCompression": False, "DicomThreadsCount": 4,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    server = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")],
                              env={**os.environ, "TCP_NODELAY": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        return send_in_two_phases(server.pid, port, "ORTHANC", files, associations)
    finally:
        stop(server)
        shutil.rmtree(folder, ignore_errors=True)


# -- report -----------------------------------------------------------------------------------


@dataclass
class Measurement:
    name: str
    once: Callable[[], Run]


def measure_interleaved(measurements: dict[str, Measurement], repeat: int, count: int,
                        megabytes: float) -> dict[str, Result]:
    """Run every measurement once per round, ``repeat`` rounds, each on a quiet disk.

    Rounds rather than one measurement's runs back to back, so that a slow spell of the
    shared machine (or its disk) weighs on every measurement alike; and dirty pages from the
    previous run are written out first (``sync``), so that no run pays for another's writes.
    """
    runs: dict[str, list[Run]] = {key: [] for key in measurements}
    for _ in range(repeat):
        for key, measurement in measurements.items():
            os.sync()
            time.sleep(0.5)
            runs[key].append(measurement.once())
            print(f"  {measurement.name}: {count / runs[key][-1].seconds:7.1f} inst/s",
                  file=sys.stderr, flush=True)
    return {key: Result(measurements[key].name, runs[key], count, megabytes)
            for key in measurements}


def verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="CT instances (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--workers", type=int, default=0,
                        help="receiver processes of pacs serve (default 0: pacs serve's own "
                             "default, one per core)")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="folder on the disk to measure (default: a temp folder)")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="pacs-bench-", dir=args.scratch))
    try:
        print(f"generating {args.count} CT instances in {scratch} ...", file=sys.stderr)
        files = make_ct_series(scratch / "input", args.count)
        blobs = {path: path.read_bytes() for path in files}
        megabytes = sum(map(len, blobs.values())) / 1e6
        work = scratch / "work"
        work.mkdir()
        plan = {
            "raw1": Measurement("raw copy + fsync, 1 thread",
                                lambda: raw_copy(files, blobs, work, 1)),
            "ingest1": Measurement("ingest path, 1 caller",
                                   lambda: ingest_path(files, blobs, work, 1)),
            "raw4": Measurement("raw copy + fsync, 4 threads",
                                lambda: raw_copy(files, blobs, work, 4)),
            "ingest4": Measurement("ingest path, 4 callers",
                                   lambda: ingest_path(files, blobs, work, 4)),
        }
        have_storescu = os.access(STORESCU, os.X_OK)
        have_orthanc = have_storescu and os.access(ORTHANC, os.X_OK)
        if not have_storescu:
            print("DCMTK storescu missing: C-STORE runs skipped", file=sys.stderr)
        elif not have_orthanc:
            print("Orthanc missing (scripts/install_system_deps.sh --bench): skipped",
                  file=sys.stderr)
        workers = args.workers or default_workers()
        for associations in (1, 4):
            if have_storescu:
                plan[f"pacs{associations}"] = Measurement(
                    f"pacs serve ({workers} workers), storescu {associations} assoc",
                    lambda n=associations: pacs_serve(files, work, n, args.workers))
            if have_orthanc:
                plan[f"orthanc{associations}"] = Measurement(
                    f"Orthanc, storescu {associations} assoc",
                    lambda n=associations: orthanc(files, work, n))
        measured = measure_interleaved(plan, args.repeat, len(files), megabytes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\n{len(files)} CT instances, {megabytes:.0f} MB, median of {args.repeat} runs "
          "(interleaved rounds)")
    for result in measured.values():
        print(f"{result.name:<42} {result.rate:8.1f} inst/s {result.mb_rate:7.1f} MB/s  "
              f"{result.rss()}")
    print()
    ratio = measured["ingest1"].rate / measured["raw1"].rate
    print(f"ingest path / raw copy, 1 thread:   {ratio:.2f}  (target >= 0.7)"
          f"  {verdict(ratio, 0.7)}")
    ratio = measured["ingest4"].rate / measured["raw4"].rate
    print(f"ingest path / raw copy, 4 threads:  {ratio:.2f}  (target >= 0.7)"
          f"  {verdict(ratio, 0.7)}")
    if "pacs4" in measured:
        ratio = measured["pacs4"].rate / measured["raw4"].rate
        print(f"C-STORE 4 assoc / raw copy 4 threads: {ratio:.2f}")
    if "orthanc4" in measured:
        ratio = measured["pacs1"].rate / measured["orthanc1"].rate
        print(f"C-STORE 1 assoc / Orthanc:          {ratio:.2f}")
        ratio = measured["pacs4"].rate / measured["orthanc4"].rate
        print(f"C-STORE 4 assoc / Orthanc:          {ratio:.2f}  (target >= 1.2)"
              f"  {verdict(ratio, 1.2)}")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    raise SystemExit(main())
