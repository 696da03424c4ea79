"""The web service under gunicorn, in a process of its own beside the DICOM receiver.

``pacs serve`` starts a :class:`WebService`: :func:`run_web` in a freshly spawned interpreter
(not forked, so that it can be started again at any time, whatever threads the receiver
runs). gunicorn's arbiter there runs ``http_workers`` processes (one per core by default),
each building its own application (:func:`pacs.web.create_app`, with its own database
connections) after it starts, restarts a worker that dies, and on SIGTERM finishes the
requests in progress before it exits. If the arbiter itself dies (killed, out of memory),
the WebService logs it and starts a new one, waiting longer after each quick failure so that
a service that cannot start does not spin; DICOM reception is not interrupted meanwhile.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from pacs.config import Settings

#: Threads per web worker: requests wait on the disk, the database and the network.
THREADS = 4
#: One line per request: client, time, request line, status, bytes sent, microseconds.
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(r)s" %(s)s %(B)s %(D)s'
#: Seconds a stopping worker has to finish its requests (a large WADO-RS study, later).
GRACEFUL_TIMEOUT = 30
#: A web service that ran this long before dying is restarted at once; one that died sooner
#: is restarted after a wait that doubles each time, up to MAX_RESTART_DELAY seconds.
HEALTHY_RUN = 30.0
MAX_RESTART_DELAY = 30.0

log = logging.getLogger(__name__)


class WebApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from the archive's settings rather than from its command line."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        settings = self.settings
        workers = settings.http_workers or os.cpu_count() or 1
        self.cfg.set("bind", [f"{settings.http_host}:{settings.http_port}"])
        self.cfg.set("workers", workers)
        self.cfg.set("worker_class", "gthread")
        self.cfg.set("threads", THREADS)
        self.cfg.set("graceful_timeout", GRACEFUL_TIMEOUT)
        self.cfg.set("proc_name", "pacs-web")
        self.cfg.set("when_ready", _announce)
        if settings.http_tls_certificate is not None:
            self.cfg.set("certfile", str(settings.http_tls_certificate))
            self.cfg.set("keyfile", str(settings.http_tls_private_key))
        if settings.http_access_log:
            self.cfg.set("accesslog", settings.http_access_log)
            self.cfg.set("access_log_format", ACCESS_LOG_FORMAT)

    def load(self) -> Flask:
        from pacs.web import create_app

        return create_app(self.settings)


def _announce(arbiter: Any) -> None:
    settings: Settings = arbiter.app.settings
    scheme = "https" if settings.http_tls_certificate is not None else "http"
    print(f"pacs: web service ready on {scheme}://{settings.http_host}:{settings.http_port} "
          f"({arbiter.num_workers} web workers, pid {os.getpid()})", flush=True)


def run_web(settings: Settings) -> None:
    """Run gunicorn with the web application until SIGTERM (in a process of its own)."""
    # A group of its own: Ctrl-C in the terminal reaches only ``pacs serve``, which then
    # stops this process itself, rather than racing the restart of a service that died.
    os.setpgid(0, 0)
    WebApplication(settings).run()


class WebService:
    """The web service's process, started again whenever it dies until :meth:`stop`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._process: BaseProcess | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="web-watcher", daemon=True)

    def start(self) -> None:
        """Start gunicorn, and the thread that restarts it if it dies."""
        with self._lock:
            self._process = _spawn(self.settings)
        self._watcher.start()

    def stop(self) -> None:
        """Stop gunicorn gracefully (SIGTERM), forcefully if it takes too long."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if self._watcher.is_alive():
            self._watcher.join()
        if process is None:
            return
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
        process.join(GRACEFUL_TIMEOUT + 5)
        if process.is_alive():
            process.kill()
            process.join()

    def _watch(self) -> None:
        delay, started = 1.0, time.monotonic()
        while not self._stopping.wait(0.5):
            with self._lock:
                process = self._process
            if process is None or process.is_alive():
                continue
            ran = time.monotonic() - started
            delay = 1.0 if ran >= HEALTHY_RUN else min(delay * 2, MAX_RESTART_DELAY)
            wait = 0.0 if ran >= HEALTHY_RUN else delay
            log.error("the web service stopped unexpectedly (exit code %s) after %.0f s; "
                      "starting it again in %.0f s", process.exitcode, ran, wait)
            if self._stopping.wait(wait):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process, started = _spawn(self.settings), time.monotonic()


def _spawn(settings: Settings) -> BaseProcess:
    process = multiprocessing.get_context("spawn").Process(
        target=run_web, args=(settings,), name="pacs-web", daemon=False)
    process.start()
    return process
