#!/usr/bin/env python3
"""Query benchmark: C-FIND latency on a filled index, side by side with Orthanc.

What is measured
----------------
The index is filled with generated studies (10,000 studies of 10 instances = 100,000
instances by default; ``--studies 100000`` gives 1,000,000), then C-FIND requests are timed
from an in-process SCU over one long association per server (process start-up and association
set-up are not measured; ``TCP_NODELAY`` is set on the SCU's socket). Each query
runs ``--repeat`` times (50) after one unmeasured warm-up run, the servers and queries taken
in turn so that machine noise falls on all of them alike; p50 and p95 (nearest rank) are
printed in ms with the number of matches and the number the generated data says there are:

* ``name``: STUDY level, PatientName = a family-name prefix. The archive gets the ASCII key
  (``DUONG*``) and matches it ignoring accents (its ``find_fuzzy`` setting, on by default);
  Orthanc cannot match accents, so it gets the name as stored (``Dương*``, UTF-8, Specific
  Character Set ISO_IR 192) with its own wild card. The default family, Dương (~1 % of
  patients), keeps this an index lookup; ``--family Nguyễn`` (~38 %) makes it a bulk transfer
  like the modality query;
* ``patient ID``: STUDY level, PatientID of a patient with several studies;
* ``date range``: STUDY level, StudyDate over one week;
* ``modality``: STUDY level, ModalitiesInStudy = MR (~13 % of the studies: a bulk transfer;
  the archive runs with PACS_FIND_MAX_RESULTS and Orthanc with LimitFindResults 0, so both
  send every match);
* ``series``: SERIES level, the series of one study (StudyInstanceUID).

STUDY queries ask for the return keys a workstation's study list asks for, including
ModalitiesInStudy and the NumberOfStudyRelated... counts.

The client is a minimal C-FIND SCU written for the benchmark (:class:`FindClient`): it keeps
each response's identifier as bytes and reads only the status, so the time measured is the
server's (pynetdicom's SCU spent 0.3-0.7 ms decoding each match, more than either server). Its
unmeasured warm-up run decodes every identifier with pydicom and checks it. A query that has
taken more than ``--budget`` seconds (30) on one server is not repeated there, and the table
says how many runs it got; both servers keep idle associations open for an hour.

The data: patients with Vietnamese names in UTF-8 (family names in roughly their real
proportions, middle and given names by sex), about 30 % of studies for a returning patient,
CT/MR/CR/DX/US studies of several series with Vietnamese descriptions, study dates over three
years, accession numbers; each instance is an 8x8 16-bit image (~1.1 kB file). Everything
follows from ``--seed``; the first n studies of a larger set are the set of n, so ``--sizes``
fills one index step by step.

How the servers are filled and run
----------------------------------
* The archive: ``Services.ingest`` (the one ingest path: object written and fsync'd, then
  indexed) called from one process per core, several threads each, into a fresh data folder
  (or the PostgreSQL database of ``--database-url``, which must hold no instances); then
  ``python -m pacs.cli serve`` is started on that folder for the queries.
* Orthanc (Debian's /usr/sbin/Orthanc, when installed), started as ../shared/ANCHORS.md says:
  ``TCP_NODELAY=1``, DefaultEncoding Utf8, SQLite index, plus LimitFindResults 0 and
  DicomAlwaysAllowFind. It is loaded through its REST API (POST /instances over several
  keep-alive connections: as fast as storescu here, and no files to write first), at the same
  time as the archive's first load step to keep the run short: the load times printed are
  therefore each measured while the other server was loading too. No query is timed before
  both loads have finished.

Targets (issue 3): p95 <= 50 ms at 100,000 instances on SQLite and PostgreSQL, p95 <= 0.5 x
Orthanc's p95 for each query, and latency growing sub-linearly with the index size
(``--sizes``: the growth exponent log(p50 ratio) / log(size ratio) below 1). The name, date
range and modality queries match more studies as the index grows, so their exponent is
printed beside that of their match counts; patient ID and series keep theirs.

    python scripts/bench/query.py                       # 10,000 studies, SQLite, vs Orthanc
    python scripts/bench/query.py --sizes 1000,10000 --no-orthanc
    python scripts/bench/query.py --database-url postgresql+psycopg://user@host/emptydb
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import decode, encode
from sqlalchemy import func, select

from pacs.config import Settings
from pacs.ingest import IngestStatus, Origin
from pacs.services import open_services
from pacs.storage.schema import instances

ORTHANC = "/usr/sbin/Orthanc"
#: Study Root Query/Retrieve Information Model - FIND (PS3.4 C.6.2).
STUDY_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")
LOOPBACK = "127.0.0.1"
TARGET_P95_MS = 50.0
TARGET_RATIO = 0.5
#: Threads per loading process (the ingest path waits on fsync and the index's group commit).
LOAD_THREADS = 8
#: Keep-alive connections uploading to Orthanc (its SQLite index serialises the rest).
ORTHANC_UPLOADS = 8
#: Seconds either server keeps an idle association open (Orthanc's default is 30 s).
IDLE_TIMEOUT = 3600

# -- data -------------------------------------------------------------------------------------

#: Vietnamese family names with roughly their share of the population (Nguyễn ~38 %, ...).
FAMILY_NAMES: tuple[tuple[str, float], ...] = (
    ("Nguyễn", 38.0), ("Trần", 11.0), ("Lê", 9.5), ("Phạm", 7.0), ("Hoàng", 5.1),
    ("Huỳnh", 4.0), ("Phan", 4.5), ("Vũ", 3.9), ("Võ", 3.0), ("Đặng", 2.1), ("Bùi", 2.0),
    ("Đỗ", 1.4), ("Hồ", 1.3), ("Ngô", 1.3), ("Dương", 1.0), ("Lý", 0.5), ("Đinh", 0.7),
    ("Trịnh", 0.6), ("Mai", 0.5), ("Lương", 0.5), ("Tạ", 0.3), ("Châu", 0.3),
)
MALE_MIDDLE = ("Văn", "Đức", "Hữu", "Minh", "Quang", "Công", "Thanh", "Xuân", "Quốc", "Đình")
FEMALE_MIDDLE = ("Thị", "Ngọc", "Thu", "Thanh", "Kim", "Mỹ", "Hồng", "Phương", "Bích", "Diệu")
MALE_GIVEN = (
    "An", "Bình", "Cường", "Dũng", "Đạt", "Hải", "Hiếu", "Hoàng", "Hùng", "Huy", "Khải",
    "Khánh", "Kiên", "Long", "Lộc", "Minh", "Nam", "Nghĩa", "Phong", "Phúc", "Quân", "Sơn",
    "Tài", "Thắng", "Thành", "Toàn", "Trung", "Tuấn", "Việt", "Vinh",
)
FEMALE_GIVEN = (
    "Anh", "Châu", "Chi", "Diệp", "Dung", "Giang", "Hà", "Hạnh", "Hằng", "Hoa", "Hương",
    "Huyền", "Lan", "Liên", "Linh", "Loan", "Mai", "Nga", "Ngân", "Nhung", "Oanh", "Phượng",
    "Quỳnh", "Tâm", "Thảo", "Thủy", "Trang", "Tuyết", "Vân", "Yến",
)
INSTITUTIONS = (
    "Bệnh viện Bạch Mai", "Bệnh viện Chợ Rẫy", "Bệnh viện Đa khoa tỉnh Lào Cai",
    "Bệnh viện Trung ương Huế", "Bệnh viện Đa khoa tỉnh Cần Thơ",
)


@dataclass(frozen=True)
class Protocol:
    """What a study of one modality looks like: SOP class, descriptions, series."""

    modality: str
    sop_class: str
    share: float
    studies: tuple[tuple[str, str], ...]  # (description, body part)
    series: tuple[str, ...]  # series descriptions, in acquisition order
    min_series: int
    max_series: int


PROTOCOLS: tuple[Protocol, ...] = (
    Protocol("CT", "1.2.840.10008.5.1.4.1.1.2", 0.28,
             (("CT ngực không cản quang", "CHEST"), ("CT sọ não không cản quang", "HEAD"),
              ("CT bụng có cản quang", "ABDOMEN"), ("CT cột sống thắt lưng", "LSPINE")),
             ("Topogram", "Axial 5.0mm", "Axial 1.0mm", "Coronal MPR", "Sagittal MPR"), 2, 4),
    Protocol("MR", "1.2.840.10008.5.1.4.1.1.4", 0.12,
             (("MRI sọ não có tiêm thuốc", "HEAD"), ("MRI cột sống cổ", "CSPINE"),
              ("MRI khớp gối", "KNEE")),
             ("Localizer", "T1 SE", "T2 TSE", "FLAIR", "DWI", "T1 + Gd"), 3, 6),
    Protocol("CR", "1.2.840.10008.5.1.4.1.1.1", 0.25,
             (("X-quang ngực thẳng", "CHEST"), ("X-quang cột sống thắt lưng", "LSPINE"),
              ("X-quang khung chậu", "PELVIS")),
             ("PA", "Lateral"), 1, 2),
    Protocol("DX", "1.2.840.10008.5.1.4.1.1.1.1", 0.15,
             (("X-quang ngực kỹ thuật số", "CHEST"), ("X-quang bàn tay", "HAND")),
             ("PA", "Lateral", "Oblique"), 1, 2),
    Protocol("US", "1.2.840.10008.5.1.4.1.1.6.1", 0.20,
             (("Siêu âm ổ bụng tổng quát", "ABDOMEN"), ("Siêu âm tuyến giáp", "NECK"),
              ("Siêu âm tim", "HEART")),
             ("B-mode", "Doppler", "Measurements"), 1, 3),
)
FIRST_STUDY_DATE = date(2024, 1, 1)
STUDY_DAYS = 3 * 365
#: The root of the benchmark's UIDs (pydicom's, which it hands out for such purposes).
UID_ROOT = "1.2.826.0.1.3680043.8.498."
TRANSFER_SYNTAX = "1.2.840.10008.1.2.1"  # Explicit VR Little Endian
IMPLEMENTATION_UID = UID_ROOT + "1"
#: Share of studies whose patient already had a study (follow-ups).
RETURNING_PATIENTS = 0.3


@dataclass(frozen=True)
class Patient:
    patient_id: str
    name: str  # DICOM PN: Family^Middle Given
    birth_date: str
    sex: str

    @property
    def family(self) -> str:
        return self.name.split("^")[0]


@dataclass(frozen=True)
class Series:
    uid: str
    number: int
    modality: str
    sop_class: str
    description: str
    instances: int


@dataclass(frozen=True)
class Study:
    index: int
    uid: str
    patient: Patient
    date: str
    time: str
    accession: str
    description: str
    body_part: str
    institution: str
    referring: str
    series: tuple[Series, ...]

    @property
    def modalities(self) -> set[str]:
        return {item.modality for item in self.series}


def generate_studies(count: int, instances_per_study: int, seed: int) -> list[Study]:
    """``count`` studies, each of ``instances_per_study`` instances, from ``seed``.

    Study ``i`` depends only on the seed and the studies before it, so the first ``n``
    studies of a larger set are the set of ``n`` (which ``--sizes`` relies on).
    """
    rng = random.Random(seed)
    families = [name for name, _ in FAMILY_NAMES]
    family_weights = [weight for _, weight in FAMILY_NAMES]
    protocol_weights = [protocol.share for protocol in PROTOCOLS]
    patients: list[Patient] = []
    studies = []
    for index in range(count):
        if patients and rng.random() < RETURNING_PATIENTS:
            patient = rng.choice(patients)
        else:
            patient = _patient(rng, len(patients), families, family_weights)
            patients.append(patient)
        protocol = rng.choices(PROTOCOLS, protocol_weights)[0]
        description, body_part = rng.choice(protocol.studies)
        day = FIRST_STUDY_DATE + timedelta(days=rng.randrange(STUDY_DAYS))
        seconds = rng.randrange(7 * 3600, 19 * 3600)
        study_uid = f"{UID_ROOT}{seed}.{index + 1}"
        # A few studies add a second modality (a chest X-ray before the CT, ...).
        extra = rng.choice(PROTOCOLS) if rng.random() < 0.05 else None
        series_count = rng.randint(protocol.min_series, protocol.max_series)
        kinds = [protocol] * series_count + ([extra] if extra and extra is not protocol else [])
        kinds = kinds[:instances_per_study]
        sizes = _split(instances_per_study, len(kinds), rng)
        series = tuple(
            Series(f"{study_uid}.{number}", number, kind.modality, kind.sop_class,
                   kind.series[(number - 1) % len(kind.series)], size)
            for number, (kind, size) in enumerate(zip(kinds, sizes, strict=True), start=1)
        )
        referring_family = rng.choices(families, family_weights)[0]
        studies.append(Study(
            index=index, uid=study_uid, patient=patient, date=day.strftime("%Y%m%d"),
            time=f"{seconds // 3600:02}{seconds // 60 % 60:02}{seconds % 60:02}",
            accession=f"A{day:%y}{index + 1:08}", description=description,
            body_part=body_part, institution=rng.choice(INSTITUTIONS),
            referring=f"{referring_family}^{rng.choice(MALE_GIVEN)}", series=series,
        ))
    return studies


def _patient(rng: random.Random, number: int, families: list[str],
             weights: list[float]) -> Patient:
    family = rng.choices(families, weights)[0]
    if rng.random() < 0.5:
        sex, middle, given = "M", rng.choice(MALE_MIDDLE), rng.choice(MALE_GIVEN)
    else:
        sex, middle, given = "F", rng.choice(FEMALE_MIDDLE), rng.choice(FEMALE_GIVEN)
    born = date(1935, 1, 1) + timedelta(days=rng.randrange(85 * 365))
    return Patient(f"BN{number + 1:07}", f"{family}^{middle} {given}", born.strftime("%Y%m%d"),
                   sex)


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """``total`` instances over ``parts`` series (``parts <= total``), at least one each."""
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return [end - start for start, end in zip([0, *cuts], [*cuts, total], strict=True)]


# -- encoding ---------------------------------------------------------------------------------

_LONG_VRS = frozenset({b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR"})


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One Explicit VR Little Endian element; ``value`` already padded to an even length."""
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return data + b" " if len(data) % 2 else data


def _uid(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\0" if len(data) % 2 else data


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


_PREAMBLE = b"\0" * 128 + b"DICM"


def encode_instance(study: Study, series: Series, number: int) -> bytes:
    """A Part-10 file of one 8x8 16-bit instance, written element by element.

    ~35 us an instance here, where pydicom's ``save_as`` takes ~1.5 ms (150 s of the run at
    100,000 instances).

    Elements are in ascending tag order, text in UTF-8 (SpecificCharacterSet ISO_IR 192).
    """
    sop_uid = f"{series.uid}.{number}"
    meta_body = b"".join((
        _element(0x0002, 0x0001, b"OB", b"\0\1"),
        _element(0x0002, 0x0002, b"UI", _uid(series.sop_class)),
        _element(0x0002, 0x0003, b"UI", _uid(sop_uid)),
        _element(0x0002, 0x0010, b"UI", _uid(TRANSFER_SYNTAX)),
        _element(0x0002, 0x0012, b"UI", _uid(IMPLEMENTATION_UID)),
        _element(0x0002, 0x0013, b"SH", _text("PACS_BENCH")),
    ))
    patient = study.patient
    pixels = bytes(range(number % 64, number % 64 + 64)) * 2  # 64 little-endian 16-bit values
    body = b"".join((
        _element(0x0008, 0x0005, b"CS", _text("ISO_IR 192")),
        _element(0x0008, 0x0008, b"CS", _text("ORIGINAL\\PRIMARY")),
        _element(0x0008, 0x0016, b"UI", _uid(series.sop_class)),
        _element(0x0008, 0x0018, b"UI", _uid(sop_uid)),
        _element(0x0008, 0x0020, b"DA", _text(study.date)),
        _element(0x0008, 0x0021, b"DA", _text(study.date)),
        _element(0x0008, 0x0023, b"DA", _text(study.date)),
        _element(0x0008, 0x0030, b"TM", _text(study.time)),
        _element(0x0008, 0x0031, b"TM", _text(study.time)),
        _element(0x0008, 0x0033, b"TM", _text(study.time)),
        _element(0x0008, 0x0050, b"SH", _text(study.accession)),
        _element(0x0008, 0x0060, b"CS", _text(series.modality)),
        _element(0x0008, 0x0070, b"LO", _text("Bench")),
        _element(0x0008, 0x0080, b"LO", _text(study.institution)),
        _element(0x0008, 0x0090, b"PN", _text(study.referring)),
        _element(0x0008, 0x1030, b"LO", _text(study.description)),
        _element(0x0008, 0x103E, b"LO", _text(series.description)),
        _element(0x0010, 0x0010, b"PN", _text(patient.name)),
        _element(0x0010, 0x0020, b"LO", _text(patient.patient_id)),
        _element(0x0010, 0x0030, b"DA", _text(patient.birth_date)),
        _element(0x0010, 0x0040, b"CS", _text(patient.sex)),
        _element(0x0018, 0x0015, b"CS", _text(study.body_part)),
        _element(0x0020, 0x000D, b"UI", _uid(study.uid)),
        _element(0x0020, 0x000E, b"UI", _uid(series.uid)),
        _element(0x0020, 0x0010, b"SH", _text(str(study.index + 1))),
        _element(0x0020, 0x0011, b"IS", _text(str(series.number))),
        _element(0x0020, 0x0013, b"IS", _text(str(number))),
        _element(0x0028, 0x0002, b"US", _us(1)),
        _element(0x0028, 0x0004, b"CS", _text("MONOCHROME2")),
        _element(0x0028, 0x0010, b"US", _us(8)),
        _element(0x0028, 0x0011, b"US", _us(8)),
        _element(0x0028, 0x0100, b"US", _us(16)),
        _element(0x0028, 0x0101, b"US", _us(12)),
        _element(0x0028, 0x0102, b"US", _us(11)),
        _element(0x0028, 0x0103, b"US", _us(0)),
        _element(0x7FE0, 0x0010, b"OW", pixels),
    ))
    group_length = _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(meta_body)))
    return _PREAMBLE + group_length + meta_body + body


def iter_instances(studies: Sequence[Study]) -> Iterator[tuple[str, bytes]]:
    """``(SOP Instance UID, Part-10 bytes)`` of every instance of ``studies``, in order."""
    for study in studies:
        for series in study.series:
            for number in range(1, series.instances + 1):
                yield f"{series.uid}.{number}", encode_instance(study, series, number)


# -- loading ----------------------------------------------------------------------------------


def in_threads(threads: int, work: Callable[[Any], object], items: Iterable[Any]) -> None:
    """Call ``work`` on every item from ``threads`` threads, a bounded number in flight (the
    items may be a million instances); the first failure is raised."""
    with ThreadPoolExecutor(threads) as pool:
        pending: deque[Future[object]] = deque()
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) >= 4 * threads:
                pending.popleft().result()
        for future in pending:
            future.result()


def archive_settings(data_dir: Path, database_url: str) -> Settings:
    return Settings.load(environ={}, data_dir=data_dir, database_url=database_url)


def _ingest_studies(data_dir: Path, database_url: str, studies: list[Study]) -> None:
    """One loading process: every instance of ``studies`` through ``Services.ingest``."""
    services = open_services(archive_settings(data_dir, database_url))
    origin = Origin("import", "bench/query.py")

    def ingest(item: tuple[str, bytes]) -> None:
        result = services.ingest(item[1], origin)
        if result.status is not IngestStatus.STORED:
            raise RuntimeError(f"{item[0]}: {result.status.value}: {result.reason}")

    try:
        in_threads(LOAD_THREADS, ingest, iter_instances(studies))
    finally:
        services.close()


def load_archive(studies: Sequence[Study], data_dir: Path, database_url: str,
                 processes: int) -> float:
    """Ingest ``studies`` from ``processes`` processes; the seconds it took."""
    # Spawned, not forked: the Orthanc upload threads may be running.
    context = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        parts = [pool.submit(_ingest_studies, data_dir, database_url, list(studies[k::processes]))
                 for k in range(processes)]
        for part in parts:
            part.result()
    return time.perf_counter() - start


def indexed_instances(data_dir: Path, database_url: str) -> int:
    """How many instances the archive's index holds (creating the schema if needed)."""
    services = open_services(archive_settings(data_dir, database_url))
    try:
        with services.db.reading() as conn:
            return int(conn.execute(select(func.count()).select_from(instances)).scalar_one())
    finally:
        services.close()


# -- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ArchiveServer:
    """``pacs serve`` on a filled data folder, on a free loopback port."""

    aet = "PACS"

    def __init__(self, data_dir: Path, database_url: str, max_results: int) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.max_results = max_results
        self.port = 0
        self.log = data_dir.parent / "pacs-serve.log"
        self._process: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        """Start ``pacs serve`` and wait for its "ready" line (every worker serves)."""
        self.port = free_port()
        env = {**os.environ, "PACS_DICOM_HOST": LOOPBACK, "PACS_LOG_LEVEL": "WARNING",
               "PACS_FIND_MAX_RESULTS": str(self.max_results),
               # The association stays open while the other server is queried.
               "PACS_NETWORK_TIMEOUT": str(IDLE_TIMEOUT), "PACS_DIMSE_TIMEOUT": str(IDLE_TIMEOUT),
               "PACS_DATABASE_URL": self.database_url, "PACS_HTTP_PORT": "0"}
        command = [sys.executable, "-m", "pacs.cli", "serve", "--data-dir", str(self.data_dir),
                   "--dicom-port", str(self.port)]
        with self.log.open("w") as log:
            self._process = subprocess.Popen(command, env=env, stdout=log,
                                             stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if f" ready on port {self.port} " in self.log.read_text(errors="replace"):
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"pacs serve did not start; see {self.log}:\n"
                           + self.log.read_text(errors="replace")[-2000:])

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None


def orthanc_poster(http_port: int) -> Callable[[tuple[str, bytes]], None]:
    """A function that POSTs one ``(SOP Instance UID, file)`` to Orthanc's ``/instances``
    over a keep-alive connection of the calling thread; it raises if Orthanc refuses it."""
    local = threading.local()

    def post(item: tuple[str, bytes]) -> None:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(
                LOOPBACK, http_port, timeout=120)
        connection.request("POST", "/instances", body=item[1],
                           headers={"Content-Type": "application/dicom"})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"Orthanc refused {item[0]}: {response.status} {body[:200]!r}")

    return post


class OrthancServer:
    """Debian's Orthanc, configured as ../shared/ANCHORS.md says, on free loopback ports."""

    aet = "ORTHANC"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.http_port = free_port()
        self._process: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "bench", "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"), "DicomAet": self.aet,
            "DicomPort": self.port, "HttpPort": self.http_port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "DefaultEncoding": "Utf8", "Plugins": [], "StorageCompression": False,
            "DicomAlwaysAllowFind": True, "LimitFindResults": 0, "LimitFindInstances": 0,
            # The association stays open while the other server is queried.
            "DicomScpTimeout": IDLE_TIMEOUT,
        }
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        with (self.folder / "orthanc.log").open("ab") as log:
            self._process = subprocess.Popen(
                [ORTHANC, str(self.folder / "orthanc.json")],
                env={**os.environ, "TCP_NODELAY": "1"}, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self._get("/system")
                socket.create_connection((LOOPBACK, self.port), timeout=1).close()
                return
            except OSError:
                if self._process.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"Orthanc did not start; see {self.folder / 'orthanc.log'}")

    def _get(self, path: str) -> Any:
        connection = http.client.HTTPConnection(LOOPBACK, self.http_port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return json.loads(response.read())
        finally:
            connection.close()

    def upload(self, studies: Sequence[Study]) -> float:
        """POST every instance of ``studies`` to /instances; the seconds it took."""
        start = time.perf_counter()
        in_threads(ORTHANC_UPLOADS, orthanc_poster(self.http_port), iter_instances(studies))
        seconds = time.perf_counter() - start
        count = self._get("/statistics")["CountInstances"]
        expected = sum(item.instances for study in studies for item in study.series)
        if count != expected:
            raise RuntimeError(f"Orthanc holds {count} instances, not {expected}")
        return seconds

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None


# -- queries ----------------------------------------------------------------------------------

STUDY_RETURN_KEYS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
    "ReferringPhysicianName", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_RETURN_KEYS = (
    "StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
    "SeriesDate", "SeriesTime", "BodyPartExamined", "NumberOfSeriesRelatedInstances",
)


@dataclass(frozen=True)
class FindQuery:
    """One C-FIND request, the key each server gets, and how many matches the data holds."""

    name: str
    level: str
    keys: dict[str, str]
    expected: Callable[[Sequence[Study]], int]
    orthanc_keys: dict[str, str] = field(default_factory=dict)  # where Orthanc differs

    def identifier(self, orthanc: bool) -> Dataset:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.QueryRetrieveLevel = self.level
        for keyword in STUDY_RETURN_KEYS if self.level == "STUDY" else SERIES_RETURN_KEYS:
            setattr(ds, keyword, "")
        for keyword, value in {**self.keys, **(self.orthanc_keys if orthanc else {})}.items():
            setattr(ds, keyword, value)
        return ds

    def key_text(self, orthanc: bool) -> str:
        keys = {**self.keys, **(self.orthanc_keys if orthanc else {})}
        return " ".join(f"{keyword}={value}" for keyword, value in keys.items())


def ascii_fold(text: str) -> str:
    """Upper case without accents: ``Dương`` -> ``DUONG`` (Đ has no decomposition)."""
    decomposed = unicodedata.normalize("NFKD", text.replace("Đ", "D").replace("đ", "d"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).upper()


def plan_queries(studies: Sequence[Study], family: str) -> list[FindQuery]:
    """The five queries, with values taken from ``studies`` (the smallest size measured)."""
    counts: dict[str, int] = {}
    for study in studies:
        counts[study.patient.patient_id] = counts.get(study.patient.patient_id, 0) + 1
    patient_id = next(pid for pid, count in counts.items() if count >= 2)
    middle = FIRST_STUDY_DATE + timedelta(days=STUDY_DAYS // 2)
    monday = middle - timedelta(days=middle.weekday())
    first, last = monday.strftime("%Y%m%d"), (monday + timedelta(days=6)).strftime("%Y%m%d")
    target = max(studies, key=lambda study: len(study.series))
    return [
        FindQuery("name", "STUDY", {"PatientName": ascii_fold(family) + "*"},
                  lambda data: sum(study.patient.family == family for study in data),
                  {"PatientName": family + "*"}),
        FindQuery("patient ID", "STUDY", {"PatientID": patient_id},
                  lambda data: sum(study.patient.patient_id == patient_id for study in data)),
        FindQuery("date range", "STUDY", {"StudyDate": f"{first}-{last}"},
                  lambda data: sum(first <= study.date <= last for study in data)),
        FindQuery("modality", "STUDY", {"ModalitiesInStudy": "MR"},
                  lambda data: sum("MR" in study.modalities for study in data)),
        FindQuery("series", "SERIES", {"StudyInstanceUID": target.uid},
                  lambda data: len(target.series)),
    ]


def _ae_title(title: str) -> bytes:
    return title.encode("ascii").ljust(16)


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BxL", pdu_type, len(body)) + body


def _command_element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, element, len(value)) + value


class FindClient:
    """A minimal C-FIND SCU on one association, kept open for every request.

    A general DICOM toolkit costs more per response than the servers do: pynetdicom's SCU
    spent 0.3-0.7 ms decoding each match into a Dataset (and more pretty-printing it for a
    debug log nobody reads), so its own time filled most of the archive's figures and pushed
    every ratio towards 1. This client only does what timing needs: it negotiates Study Root
    FIND in Implicit VR Little Endian, sends the request (command and identifier in PDUs of
    their own, as DCMTK does), reads PDUs until the final response, and counts pending ones
    (identifiers are kept as bytes; ``check=True`` decodes each with pydicom and checks the
    level's unique key is there, which the unmeasured warm-up run does). The same client
    times both servers.
    """

    MAX_PDU = 16384

    def __init__(self, port: int, aet: str) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=IDLE_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb", buffering=1 << 20)
        self.message_id = 0
        transfer = b"1.2.840.10008.1.2"  # Implicit VR Little Endian
        context = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, STUDY_ROOT_FIND.encode("ascii"))
                        + _item(0x40, transfer))
        user = _item(0x50, _item(0x51, struct.pack(">L", self.MAX_PDU))
                     + _item(0x52, b"1.2.826.0.1.3680043.8.498.1"))
        body = (struct.pack(">H2x", 1) + _ae_title(aet) + _ae_title("BENCH") + bytes(32)
                + _item(0x10, b"1.2.840.10008.3.1.1.1") + context + user)
        self.sock.sendall(_pdu(0x01, body))
        pdu_type, answer = self._read_pdu()
        if pdu_type != 0x02 or not self._context_accepted(answer):
            raise RuntimeError(f"no association with {aet} on port {port} (PDU {pdu_type:#x})")

    @staticmethod
    def _context_accepted(body: bytes) -> bool:
        offset = 68  # protocol version, reserved, AE titles, reserved
        while offset + 4 <= len(body):
            item_type, length = struct.unpack_from(">BxH", body, offset)
            if item_type == 0x21:
                return body[offset + 6] == 0  # result/reason: acceptance
            offset += 4 + length
        return False

    def _read_exactly(self, size: int) -> bytes:
        data = self.reader.read(size)  # buffered: a few large reads, not two per PDU
        if len(data) < size:
            raise RuntimeError("the server closed the connection")
        return data

    def _read_pdu(self) -> tuple[int, bytes]:
        pdu_type, length = struct.unpack(">BxL", self._read_exactly(6))
        return pdu_type, self._read_exactly(length)

    def find(self, identifier: Dataset, check: bool = False) -> int:
        """Send one C-FIND request and read every response; the number of matches."""
        self.message_id = self.message_id % 65535 + 1
        sop_class = STUDY_ROOT_FIND.encode("ascii")
        sop_class += b"\x00" * (len(sop_class) % 2)
        command = b"".join([
            _command_element(0x0002, sop_class),
            _command_element(0x0100, struct.pack("<H", 0x0020)),
            _command_element(0x0110, struct.pack("<H", self.message_id)),
            _command_element(0x0700, struct.pack("<H", 0)),
            _command_element(0x0800, struct.pack("<H", 0x0001)),
        ])
        command = _command_element(0x0000, struct.pack("<L", len(command))) + command
        data = encode(identifier, True, True)
        self.sock.sendall(_pdu(0x04, struct.pack(">LBB", len(command) + 2, 1, 0x03) + command)
                          + _pdu(0x04, struct.pack(">LBB", len(data) + 2, 1, 0x02) + data))
        level = str(identifier.QueryRetrieveLevel)
        unique = "StudyInstanceUID" if level == "STUDY" else "SeriesInstanceUID"
        matches = 0
        fragments: list[bytes] = []
        dataset: list[bytes] = []
        while True:
            pdu_type, body = self._read_pdu()
            if pdu_type != 0x04:
                raise RuntimeError(f"C-FIND: PDU type {pdu_type:#x} instead of P-DATA-TF")
            offset = 0
            while offset < len(body):
                length, _context, header = struct.unpack_from(">LBB", body, offset)
                value = body[offset + 6 : offset + 4 + length]
                offset += 4 + length
                if not header & 0x01:  # a dataset fragment
                    dataset.append(value)
                    if header & 0x02 and check:
                        found = decode(BytesIO(b"".join(dataset)), True, True)
                        if not found.get(unique):
                            raise RuntimeError(f"C-FIND: a match without {unique}")
                    if header & 0x02:
                        dataset = []
                    continue
                fragments.append(value)
                if not header & 0x02:
                    continue
                status = self._status(b"".join(fragments))
                fragments = []
                if status in (0xFF00, 0xFF01):
                    matches += 1
                elif status == 0x0000:
                    return matches
                else:
                    raise RuntimeError(f"C-FIND failed: status 0x{status:04X}")

    @staticmethod
    def _status(command: bytes) -> int:
        offset = 0
        while offset + 8 <= len(command):
            _group, element, length = struct.unpack_from("<HHL", command, offset)
            if element == 0x0900:
                return int(struct.unpack_from("<H", command, offset + 8)[0])
            offset += 8 + length
        raise RuntimeError("C-FIND: a response without a Status")

    def close(self) -> None:
        """Release the association."""
        try:
            self.sock.sendall(_pdu(0x05, bytes(4)))
            self._read_pdu()  # A-RELEASE-RP
        except (OSError, RuntimeError):
            pass
        self.reader.close()
        self.sock.close()


@dataclass
class Timing:
    """The latencies of one query on one server."""

    matches: int
    seconds: list[float] = field(default_factory=list)

    def percentile(self, share: float) -> float:
        """Nearest-rank percentile, in ms."""
        ordered = sorted(self.seconds)
        return 1000 * ordered[max(0, math.ceil(share * len(ordered)) - 1)]

    @property
    def p50(self) -> float:
        return self.percentile(0.50)

    @property
    def p95(self) -> float:
        return self.percentile(0.95)


def time_queries(clients: dict[str, FindClient], queries: Sequence[FindQuery], repeat: int,
                 budget: float) -> dict[tuple[str, str], Timing]:
    """Run every query on every server ``repeat`` times after one warm-up, in turn.

    A query that has taken more than ``budget`` seconds on a server (warm-up included) is not
    run again there, so one pathological plan cannot hold the run for hours; its timing then
    has fewer samples, which the report shows.
    """
    identifiers = {(server, query.name): query.identifier(orthanc=server == "Orthanc")
                   for server in clients for query in queries}
    timings: dict[tuple[str, str], Timing] = {}
    spent: dict[tuple[str, str], float] = {}

    def find(key: tuple[str, str], check: bool = False) -> int:
        try:
            return clients[key[0]].find(identifiers[key], check)
        except RuntimeError as exc:
            raise RuntimeError(f"{key[0]}, query {key[1]!r}: {exc}") from exc

    for key in identifiers:
        start = time.perf_counter()
        timings[key] = Timing(find(key, check=True))
        spent[key] = time.perf_counter() - start
    for _ in range(repeat):
        for key in identifiers:
            if spent[key] > budget:
                continue
            start = time.perf_counter()
            matches = find(key)
            seconds = time.perf_counter() - start
            timings[key].seconds.append(seconds)
            spent[key] += seconds
            if matches != timings[key].matches:
                raise RuntimeError(f"{key}: {timings[key].matches} matches, then {matches}")
    for key, timing in timings.items():
        if not timing.seconds:  # the warm-up alone took the whole budget
            timing.seconds.append(spent[key])
    return timings


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Step:
    """The archive at one index size: its load and its timings (Orthanc's at the last)."""

    studies: int
    instances: int
    load_seconds: float
    loaded_instances: int
    timings: dict[tuple[str, str], Timing]
    expected: dict[str, int]


@dataclass
class Run:
    steps: list[Step] = field(default_factory=list)
    orthanc_seconds: float | None = None
    orthanc_instances: int = 0


def count_instances(studies: Sequence[Study]) -> int:
    return sum(item.instances for study in studies for item in study.series)


def run(args: argparse.Namespace, sizes: list[int], queries: list[FindQuery],
        studies: list[Study], scratch: Path, with_orthanc: bool) -> Run:
    data_dir = scratch / "pacs"
    if indexed_instances(data_dir, args.database_url):
        raise SystemExit(f"the archive's index ({args.database_url}) already holds instances; "
                         "give an empty database")
    result = Run()
    orthanc = OrthancServer(scratch / "orthanc") if with_orthanc else None
    uploads = ThreadPoolExecutor(1, thread_name_prefix="orthanc-upload")
    orthanc_load: Future[float] | None = None
    try:
        if orthanc is not None:
            orthanc.start()
            result.orthanc_instances = count_instances(studies)
            orthanc_load = uploads.submit(orthanc.upload, studies)
        loaded = 0
        for size in sizes:
            say(f"archive: loading studies {loaded + 1:,}-{size:,} ...")
            seconds = load_archive(studies[loaded:size], data_dir, args.database_url,
                                   os.cpu_count() or 1)
            step = Step(size, count_instances(studies[:size]), seconds,
                        count_instances(studies[loaded:size]), {},
                        {query.name: query.expected(studies[:size]) for query in queries})
            say(f"archive: {step.loaded_instances:,} instances in {seconds:.0f} s")
            loaded = size
            if orthanc_load is not None and result.orthanc_seconds is None:
                say("Orthanc: waiting for its load to finish ...")
                result.orthanc_seconds = orthanc_load.result()
                say(f"Orthanc: {result.orthanc_instances:,} instances in "
                    f"{result.orthanc_seconds:.0f} s")
            server = ArchiveServer(data_dir, args.database_url,
                                   max(args.max_results, size))
            server.start()
            clients: dict[str, FindClient] = {}
            try:
                clients["archive"] = FindClient(server.port, server.aet)
                if orthanc is not None and size == sizes[-1]:
                    clients["Orthanc"] = FindClient(orthanc.port, orthanc.aet)
                say(f"timing {len(queries)} queries x {args.repeat} on "
                    f"{' and '.join(clients)} at {size:,} studies ...")
                step.timings = time_queries(clients, queries, args.repeat, args.budget)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n-- the end of {server.log}:\n{server.log_tail()}"
                                   ) from exc
            finally:
                for client in clients.values():
                    client.close()
                server.stop()
            result.steps.append(step)
    finally:
        uploads.shutdown(cancel_futures=True)
        if orthanc is not None:
            orthanc.stop()
    return result


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- report -----------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "MET" if met else "MISS"


def report(args: argparse.Namespace, result: Run, queries: list[FindQuery]) -> None:
    backend = "PostgreSQL" if args.database_url.startswith("postgresql") else "SQLite"
    last = result.steps[-1]
    orthanc = any(server == "Orthanc" for server, _ in last.timings)
    print(f"\nC-FIND latency, {last.studies:,} studies / {last.instances:,} instances, "
          f"archive index on {backend}; {args.repeat} runs per query after one warm-up, "
          "p50 / p95 in ms")
    print("\nqueries (the archive's key; Orthanc's where it differs):")
    for query in queries:
        fuzzy = " (fuzzy)" if query.orthanc_keys else ""
        other = f"  |  Orthanc: {query.key_text(True)}" if orthanc and query.orthanc_keys else ""
        print(f"  {query.name:<11} {query.level:<7} {query.key_text(False)}{fuzzy}{other}")

    print("\nloads:")
    loaded = 0
    for number, step in enumerate(result.steps):
        note = ", side by side with Orthanc's load" if number == 0 and orthanc else ""
        print(f"  archive  studies {loaded + 1:,}-{step.studies:,}: {step.loaded_instances:,} "
              f"instances in {step.load_seconds:.0f} s "
              f"({step.loaded_instances / step.load_seconds:.0f} inst/s; Services.ingest, "
              f"{os.cpu_count()} processes x {LOAD_THREADS} threads{note})")
        loaded = step.studies
    if result.orthanc_seconds is not None:
        print(f"  Orthanc  {result.orthanc_instances:,} instances in "
              f"{result.orthanc_seconds:.0f} s "
              f"({result.orthanc_instances / result.orthanc_seconds:.0f} inst/s; REST POST "
              f"/instances, {ORTHANC_UPLOADS} connections, side by side with the archive's)")

    print()
    header = f"{'query':<11} {'matches':>8} {'archive p50':>12} {'p95':>7}"
    if orthanc:
        header += f" {'Orthanc':>9} {'p50':>7} {'p95':>7} {'p95 ratio':>10}"
    print(header)
    for query in queries:
        mine = last.timings[("archive", query.name)]
        matches = f"{mine.matches:,}"
        line = f"{query.name:<11} {matches:>8} {mine.p50:12.1f} {mine.p95:7.1f}"
        if orthanc:
            theirs = last.timings[("Orthanc", query.name)]
            count = "" if theirs.matches == mine.matches else f"({theirs.matches:,})"
            line += (f" {count:>9} {theirs.p50:7.1f} {theirs.p95:7.1f} "
                     f"{mine.p95 / theirs.p95:10.2f}")
        short = [f"{server} {len(timing.seconds)} run{'s' if len(timing.seconds) > 1 else ''}"
                 for (server, name), timing in last.timings.items()
                 if name == query.name and len(timing.seconds) < args.repeat]
        print(line + (f"  ({', '.join(short)}: --budget)" if short else ""))
    wrong = [f"{server} {name}: {timing.matches} matches, the data has {last.expected[name]}"
             for (server, name), timing in last.timings.items()
             if timing.matches != last.expected[name]]
    for complaint in wrong:
        print(f"  !! {complaint}")

    print(f"\ntargets at {last.instances:,} instances ({backend}):")
    for query in queries:
        mine = last.timings[("archive", query.name)]
        line = (f"  {query.name:<11} p95 {mine.p95:7.1f} ms <= {TARGET_P95_MS:.0f} ms  "
                f"{verdict(mine.p95 <= TARGET_P95_MS):<4}")
        if orthanc:
            ratio = mine.p95 / last.timings[("Orthanc", query.name)].p95
            line += (f"   p95 / Orthanc's {ratio:5.2f} <= {TARGET_RATIO}  "
                     f"{verdict(ratio <= TARGET_RATIO)}")
        print(line.rstrip())

    if len(result.steps) > 1:
        first = result.steps[0]
        print("\narchive p50 in ms (matches) by index size; growth exponent = log(p50 ratio) / "
              "log(size ratio), < 1 is sub-linear:")
        print(f"{'query':<11}" + "".join(f" {f'{step.instances:,} inst.':>17}"
                                          for step in result.steps)
              + "  exponent (of matches)")
        scale = math.log(last.instances / first.instances)
        for query in queries:
            cells = []
            for step in result.steps:
                timing = step.timings[("archive", query.name)]
                cells.append(f" {f'{timing.p50:.1f} ({timing.matches:,})':>17}")
            small, large = (step.timings[("archive", query.name)]
                            for step in (first, last))
            exponent = math.log(large.p50 / small.p50) / scale
            matches = (f"({math.log(large.matches / small.matches) / scale:.2f})"
                       if small.matches and large.matches else "")
            print(f"{query.name:<11}{''.join(cells)}   {exponent:5.2f} {matches:>6}  "
                  f"{verdict(exponent < 1)}")


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of study counts: {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("study counts must be positive")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--studies", type=int, default=10_000,
                        help="studies in the index (default 10,000)")
    parser.add_argument("--instances-per-study", type=int, default=10,
                        help="instances per study (default 10: 100,000 instances)")
    parser.add_argument("--sizes", type=parse_sizes, default=None, metavar="N,N,...",
                        help="measure the archive at several study counts (e.g. 1000,10000), "
                             "loading one index step by step; Orthanc is compared at the "
                             "largest; replaces --studies")
    parser.add_argument("--repeat", type=int, default=50,
                        help="timed runs per query and server (default 50)")
    parser.add_argument("--budget", type=float, default=30,
                        help="seconds one query may take on one server in all (default 30); "
                             "after that it is not repeated and fewer runs are reported")
    parser.add_argument("--database-url", default="",
                        help="run the archive's index on this (empty) PostgreSQL database, "
                             "e.g. postgresql+psycopg://user@host/db (default: SQLite)")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="folder for the data (default: a temporary folder)")
    parser.add_argument("--no-orthanc", action="store_true", help="do not run Orthanc")
    parser.add_argument("--family", default="Dương",
                        help="family name of the name-wildcard query, as stored "
                             "(default Dương, ~1%% of patients; Nguyễn is ~38%%)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the generated data")
    parser.add_argument("--max-results", type=int, default=100_000,
                        help="PACS_FIND_MAX_RESULTS of the archive (at least the study count)")
    args = parser.parse_args(argv)
    if args.family not in {name for name, _ in FAMILY_NAMES}:
        parser.error(f"--family: one of {', '.join(name for name, _ in FAMILY_NAMES)}")
    if args.instances_per_study < 1 or args.repeat < 1:
        parser.error("--instances-per-study and --repeat must be positive")
    sizes: list[int] = args.sizes or [args.studies]
    with_orthanc = not args.no_orthanc
    if with_orthanc and not os.access(ORTHANC, os.X_OK):
        say(f"{ORTHANC} missing (scripts/install_system_deps.sh --bench): Orthanc skipped")
        with_orthanc = False

    scratch = Path(tempfile.mkdtemp(prefix="pacs-query-bench-", dir=args.scratch))
    try:
        start = time.perf_counter()
        studies = generate_studies(sizes[-1], args.instances_per_study, args.seed)
        say(f"generated {sizes[-1]:,} studies / {count_instances(studies):,} instances in "
            f"{time.perf_counter() - start:.1f} s (encoded as they are loaded); scratch {scratch}")
        queries = plan_queries(studies[:sizes[0]], args.family)
        result = run(args, sizes, queries, studies, scratch, with_orthanc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(args, result, queries)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
