"""The web service under gunicorn, in a process of its own beside the DICOM receiver.

``pacs serve`` forks :func:`run_web` before it starts the receiver: gunicorn's arbiter then
runs ``http_workers`` processes (one per core by default), each building its own application
(:func:`pacs.web.create_app`, with its own database connections) after it starts, restarts a
worker that dies, and on SIGTERM finishes the requests in progress before it exits.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from multiprocessing.process import BaseProcess
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from pacs.config import Settings

#: Threads per web worker: requests wait on the disk, the database and the network.
THREADS = 4
#: Seconds a stopping worker has to finish its requests (a large WADO-RS study, later).
GRACEFUL_TIMEOUT = 30


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

    def load(self) -> Flask:
        from pacs.web import create_app

        return create_app(self.settings)


def _announce(arbiter: Any) -> None:
    settings: Settings = arbiter.app.settings
    print(f"pacs: web service ready on http://{settings.http_host}:{settings.http_port} "
          f"({arbiter.num_workers} web workers)", flush=True)


def run_web(settings: Settings) -> None:
    """Run gunicorn with the web application until SIGTERM (in a process of its own)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    WebApplication(settings).run()


def start_web(settings: Settings) -> BaseProcess:
    """Fork the web service; call before the receiver starts threads.

    Returns
    -------
    BaseProcess
        The gunicorn arbiter's process; :func:`stop_web` stops it.
    """
    process = multiprocessing.get_context("fork").Process(
        target=run_web, args=(settings,), name="pacs-web", daemon=False)
    process.start()
    return process


def stop_web(process: BaseProcess) -> None:
    """Stop the web service gracefully (SIGTERM), forcefully if it takes too long."""
    if process.is_alive() and process.pid is not None:
        os.kill(process.pid, signal.SIGTERM)
    process.join(GRACEFUL_TIMEOUT + 5)
    if process.is_alive():
        process.kill()
        process.join()
