"""The ``pacs`` command: ``serve``, ``import``, ``ls``, ``find``, ``viewer``; ``user`` and
``token`` (:mod:`pacs.cli_accounts`).

Every command builds its settings the same way (defaults, ``--config``/``PACS_CONFIG`` TOML,
``PACS_*`` variables, then command-line options) and opens the same services.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.config import IGNORE
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pacs.audit import Action, ActorKind, AuditEvent, Outcome
from pacs.cli_accounts import add_commands as add_account_commands
from pacs.cli_accounts import ensure_first_admin, os_user
from pacs.config import Settings, SettingsError
from pacs.ingest import IngestResult, IngestStatus, Origin
from pacs.query import InvalidKey, InvalidQuery, Level, Model, Query, run_query
from pacs.services import Services, open_services

if TYPE_CHECKING:
    from pacs.scp.workers import WorkerSlot

log = logging.getLogger("pacs")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pacs`` console command."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.load(
            toml_path=args.config,
            data_dir=getattr(args, "data_dir", None),
            aet=getattr(args, "aet", None),
            dicom_port=getattr(args, "dicom_port", None),
            http_port=getattr(args, "http_port", None),
            workers=getattr(args, "workers", None),
        )
    except SettingsError as exc:
        print(f"pacs: invalid setting: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    return int(args.command(settings, args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacs", description="Filmless PACS archive.")
    parser.add_argument("--config", help="TOML settings file (default: $PACS_CONFIG)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the DICOM receiver in the foreground")
    _storage_options(serve)
    serve.add_argument("--aet", help="AE title of the archive (PACS_AET)")
    serve.add_argument("--dicom-port", type=int, help="DICOM port (PACS_DICOM_PORT)")
    serve.add_argument("--http-port", type=int,
                       help="web service port, 0 for none (PACS_HTTP_PORT)")
    serve.add_argument("--workers", type=int,
                       help="receiver processes; 0 = one per CPU core (PACS_WORKERS)")
    serve.set_defaults(command=cmd_serve)

    load = commands.add_parser("import", help="import DICOM files, folders and zip archives")
    _storage_options(load)
    load.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    load.add_argument("--jobs", type=int, default=4, help="files archived in parallel")
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    load.set_defaults(command=cmd_import)

    find = commands.add_parser(
        "find", help="query the local index like C-FIND and print a table",
        description="Query the index with C-FIND matching (findscu's -k syntax): KEY=VALUE "
                    "keys match (wildcards *, ?; ranges A-B for dates and times; UID lists "
                    "with \\), a bare KEY adds a column. Example: pacs find -k "
                    "PatientName='nguyen*' --fuzzy -k StudyDate=20260101-",
    )
    _storage_options(find)
    find.add_argument("--level", default="STUDY", type=str.upper,
                      choices=[level.name for level in Level], help="query level (STUDY)")
    find.add_argument("-k", "--key", action="append", default=[], metavar="KEY[=VALUE]",
                      help="matching key (with a value) or extra column (without); repeatable")
    find.add_argument("--fuzzy", action="store_true",
                      help="ignore case and accents in person names (nguyen* finds Nguyễn)")
    find.add_argument("--limit", type=int, default=100, help="most rows printed (100)")
    find.set_defaults(command=cmd_find)

    viewer = commands.add_parser("viewer", help="the OHIF Viewer served under /viewer/")
    viewer.add_argument("action", choices=["install"],
                        help="install: fetch the pinned OHIF release with npm, check its "
                             "hash, unpack it into viewer_dir (PACS_VIEWER_DIR)")
    viewer.add_argument("--tarball", type=Path,
                        help="an ohif-app-<version>.tgz already downloaded (no npm needed)")
    viewer.set_defaults(command=cmd_viewer)

    ls = commands.add_parser("ls", help="list studies, most recently received first")
    _storage_options(ls)
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(command=cmd_ls)
    add_account_commands(commands, _storage_options)
    return parser


def _storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data folder (PACS_DATA_DIR)")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom logs every PDU at INFO; the archive logs associations itself.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


# -- serve ------------------------------------------------------------------------------------


def cmd_serve(settings: Settings, _args: argparse.Namespace) -> int:
    """Run the DICOM receiver until SIGTERM or Ctrl-C, then stop without losing an instance.

    With more than one worker (the default is one per core), the workers are forked around
    one listening socket and share the associations evenly (see :mod:`pacs.scp.workers`).
    """
    from pacs.scp.workers import Supervisor, bind_listener, default_workers

    log.info("settings: %s", settings.describe())
    if settings.http_port and not _can_listen(settings.http_host, settings.http_port):
        return 1
    workers = settings.workers or default_workers()
    if workers == 1:
        _prepare(settings)  # the schema exists before the web workers start
        with _web_service(settings):
            return _serve_one(settings)
    try:
        listener = bind_listener(settings.dicom_host, settings.dicom_port)
        # The TLS port is bound here too, so that every forked worker serves it.
        tls_listener = (bind_listener(settings.dicom_host, settings.tls_port)
                        if settings.tls_port else None)
    except OSError as exc:
        log.error("cannot listen on %s (port %d, TLS port %d): %s", settings.dicom_host,
                  settings.dicom_port, settings.tls_port, exc.strerror)
        return 1
    _prepare(settings)  # create the schema once, before the workers race to
    log.info("starting %d receiver workers on %s:%d", workers, settings.dicom_host,
             listener.getsockname()[1])

    def worker(gate: WorkerSlot, shared: socket.socket) -> int:
        name = f"worker {gate.slot + 1}"
        _tag_log_lines(name)
        return _serve_one(settings, listener=shared, gate=gate, name=name,
                          tls_listener=tls_listener)

    def ready() -> None:
        print(f"pacs: {settings.aet} ready on port {listener.getsockname()[1]} "
              f"({workers} receiver processes, pid {os.getpid()})", flush=True)

    with _web_service(settings):
        return Supervisor(listener, workers, worker, on_ready=ready).run()


def _prepare(settings: Settings) -> None:
    """Create the index's schema, and the first admin of an archive without accounts."""
    services = open_services(settings)
    try:
        ensure_first_admin(services)
    finally:
        services.close()


def _can_listen(host: str, port: int) -> bool:
    """True if ``host:port`` is free for the web service; logs why not otherwise."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        log.error("cannot listen on %s:%d for the web service (http_port): %s", host, port,
                  exc.strerror)
        return False
    return True


@contextlib.contextmanager
def _web_service(settings: Settings) -> Iterator[None]:
    """The web service (gunicorn in a process of its own, restarted if it dies) while the
    block runs."""
    if not settings.http_port:
        yield
        return
    from pacs.web.server import WebService

    service = WebService(settings)
    service.start()
    try:
        yield
    finally:
        service.stop()


def _serve_one(settings: Settings, *, listener: socket.socket | None = None,
               gate: WorkerSlot | None = None, name: str = "receiver",
               tls_listener: socket.socket | None = None) -> int:
    from pacs.scp.server import DicomReceiver

    stop = _stop_event()
    services = open_services(settings)
    receiver = DicomReceiver(settings, services, listener=listener, gate=gate,
                             tls_listener=tls_listener)
    try:
        receiver.start()
    except SettingsError as exc:
        log.error("cannot start the receiver: %s", exc)
        services.close()
        return 2
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.dicom_host, settings.dicom_port,
                  exc.strerror)
        services.close()
        return 1
    if gate is None:
        print(f"pacs: {settings.aet} ready on port {receiver.port} "
              f"(1 receiver process, pid {os.getpid()})", flush=True)
    # Wake now and then: the kernel may hand SIGTERM to another thread (the acceptor, the
    # audit writer), and Python runs the handler only when the main thread next executes
    # bytecode; a wait without a timeout could sleep through it.
    while not stop.wait(SIGNAL_POLL_SECONDS):
        pass
    log.info("%s stopping", name)
    receiver.stop()
    services.close()
    return 0


def _tag_log_lines(name: str) -> None:
    """Name the worker in every log line it writes (``... pacs.scp [worker 2]: ...``)."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s %(name)s [{name}]: %(message)s"
        ))


SIGNAL_POLL_SECONDS = 0.5


def _stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C)."""
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return stop


# -- import -----------------------------------------------------------------------------------


def _sources(paths: Sequence[Path]) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, bytes)`` for every file under the paths, zip members included."""
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield from _file_sources(Path(root) / name)
        elif path.is_file():
            yield from _file_sources(path)
        else:
            raise FileNotFoundError(path)


def _file_sources(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if not member.is_dir():
                    yield f"{path}!{member.filename}", archive.read(member)
    else:
        yield str(path), path.read_bytes()


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    """Import files through the ingest path and print a summary."""
    from tqdm import tqdm

    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"pacs import: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    services = open_services(settings)
    outcomes: Counter[IngestStatus] = Counter()
    refused: list[tuple[str, IngestResult]] = []
    by_study: Counter[tuple[str, str | None]] = Counter()
    total_bytes = 0
    started = time.perf_counter()

    def archive(item: tuple[str, bytes]) -> tuple[str, int, IngestResult]:
        name, data = item
        result = services.ingest(data, Origin("import", name))
        if result.ok and result.study_uid:
            by_study[(result.study_uid, result.patient_id)] += 1
        return name, len(data), result

    progress = tqdm(unit=" files", disable=args.quiet or None, file=sys.stderr)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        # A bounded window of files in memory, whatever the size of the import.
        pending: list = []
        for item in _sources(args.paths):
            pending.append(pool.submit(archive, item))
            if len(pending) >= 4 * args.jobs:
                total_bytes += _collect(pending.pop(0).result(), outcomes, refused, progress)
        for future in pending:
            total_bytes += _collect(future.result(), outcomes, refused, progress)
    progress.close()
    elapsed = max(time.perf_counter() - started, 1e-9)
    audit_import(services, by_study, refused)
    services.close()
    print(
        f"imported: {outcomes[IngestStatus.STORED]} stored, "
        f"{outcomes[IngestStatus.ALREADY_STORED]} already stored, "
        f"{sum(n for s, n in outcomes.items() if s not in _OK)} refused; "
        f"{total_bytes / 1e6:.1f} MB in {elapsed:.1f} s ({total_bytes / 1e6 / elapsed:.1f} MB/s)"
    )
    for name, result in refused:
        print(f"  refused {name}: {result.status.value}: {result.reason}")
    failed = outcomes[IngestStatus.FAILED] + outcomes[IngestStatus.STORAGE_FULL]
    return 1 if failed else 0


_OK = (IngestStatus.STORED, IngestStatus.ALREADY_STORED)


def audit_import(services: Services, by_study: Counter[tuple[str, str | None]],
                 refused: list[tuple[str, IngestResult]]) -> None:
    """One audit record per imported study (and one for what was refused)."""
    actor = os_user()
    for (study_uid, patient_id), count in sorted(by_study.items(), key=str):
        services.audit.record(AuditEvent(
            Action.STORE, Outcome.SUCCESS, ActorKind.CLI, actor=actor, protocol="cli",
            patient_id=patient_id, study_uid=study_uid, count=count, detail="pacs import"))
    if refused:
        services.audit.record(AuditEvent(
            Action.STORE, Outcome.FAILURE, ActorKind.CLI, actor=actor, protocol="cli",
            count=len(refused), detail=f"pacs import: {len(refused)} files refused"))


def _collect(done: tuple[str, int, IngestResult], outcomes: Counter[IngestStatus],
             refused: list[tuple[str, IngestResult]], progress: object) -> int:
    name, size, result = done
    outcomes[result.status] += 1
    if result.status not in _OK:
        refused.append((name, result))
    progress.update(1)  # type: ignore[attr-defined]
    return size


# -- viewer -----------------------------------------------------------------------------------


def cmd_viewer(settings: Settings, args: argparse.Namespace) -> int:
    """Install the pinned OHIF Viewer release (nothing to do when it is there)."""
    from pacs.viewer import OHIF_VERSION, ViewerInstallError, install_ohif, is_installed

    if is_installed(settings.viewer_dir):
        print(f"OHIF Viewer {OHIF_VERSION} is installed in {settings.viewer_dir}")
        return 0
    print(f"installing OHIF Viewer {OHIF_VERSION} into {settings.viewer_dir} ...", flush=True)
    try:
        folder = install_ohif(settings.viewer_dir, tarball=args.tarball)
    except ViewerInstallError as exc:
        log.error("cannot install the viewer: %s", exc)
        return 1
    print(f"OHIF Viewer {OHIF_VERSION} installed in {folder}")
    return 0


# -- ls ---------------------------------------------------------------------------------------


def cmd_ls(settings: Settings, args: argparse.Namespace) -> int:
    """Print the most recent studies as a table."""
    services = open_services(settings)
    studies = services.index.list_studies(limit=args.limit)
    services.close()
    header = ("PATIENT", "ID", "DATE", "MOD", "DESCRIPTION", "SER", "INST", "STUDY UID")
    rows = [
        (s.patient_name or "", s.patient_id or "", s.study_date or "", s.modalities,
         s.study_description or "", str(s.num_series), str(s.num_instances), s.study_uid)
        for s in studies
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if not rows:
        print("(no studies)")
    return 0


FIND_COLUMNS: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "NumberOfPatientRelatedStudies"),
    Level.STUDY: ("PatientName", "PatientID", "StudyDate", "ModalitiesInStudy",
                  "StudyDescription", "AccessionNumber", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances", "StudyInstanceUID"),
    Level.SERIES: ("SeriesNumber", "Modality", "SeriesDescription",
                   "NumberOfSeriesRelatedInstances", "SeriesInstanceUID"),
    Level.IMAGE: ("InstanceNumber", "Rows", "Columns", "NumberOfFrames", "SOPInstanceUID"),
}


def cmd_find(settings: Settings, args: argparse.Namespace) -> int:
    """Run a C-FIND-like query on the local index and print the matches as a table."""
    level = Level[args.level]
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level.name
    columns = list(FIND_COLUMNS[level])
    try:
        for key in args.key:
            keyword, has_value, value = key.partition("=")
            keyword = keyword.strip()
            if tag_for_keyword(keyword) is None:
                raise InvalidKey(f"{keyword!r} is not a DICOM keyword", keyword)
            if keyword not in columns:
                columns.append(keyword)
            _set_key(identifier, keyword, value if has_value else "")
        for keyword in columns:
            if keyword not in identifier:
                _set_key(identifier, keyword, "")
        query = Query.from_identifier(identifier, Model.STUDY_ROOT, fuzzy=args.fuzzy,
                                      relational=True)
        services = open_services(settings)
        try:
            result = run_query(services.db, query, max_results=args.limit)
        finally:
            services.close()
    except (InvalidQuery, ValueError) as exc:
        print(f"pacs find: {exc}", file=sys.stderr)
        return 2
    rows = [[_cell(ds.get(keyword)) for keyword in columns] for ds in result.datasets]
    _print_table(columns, rows)
    if result.more or result.capped:
        print(f"(only the first {len(rows)} matches shown; use --limit)")
    return 0


def _set_key(identifier: Dataset, keyword: str, value: str) -> None:
    # The query model checks values and says what is wrong; pydicom's own check would only
    # warn, through the process-wide warnings machinery.
    tag = tag_for_keyword(keyword)
    identifier[tag] = DataElement(tag, dictionary_VR(tag), value, validation_mode=IGNORE)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple | MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value)


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    if not rows:
        print("(no matches)")


if __name__ == "__main__":
    sys.exit(main())
