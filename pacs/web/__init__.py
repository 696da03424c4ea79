"""The web service: DICOMweb under ``/dicom-web``, the viewer, health checks, as a Flask app.

``create_app(settings)`` builds one application with one blueprint per concern:

* :mod:`pacs.web.health`: ``/healthz`` (the process answers) and ``/readyz`` (the index and
  the object store answer);
* :mod:`pacs.web.qido`: QIDO-RS searches (PS3.18 10.6) on the shared query model;
* :mod:`pacs.web.wado`: WADO-RS retrieval of instances and metadata (PS3.18 10.4) on the
  shared retrieve path;
* :mod:`pacs.web.frames`: WADO-RS frames and bulk data;
* :mod:`pacs.web.stow`: STOW-RS, through the one ingest path;
* :mod:`pacs.web.rendered`: rendered frames and thumbnails (:mod:`pacs.render`);
* :mod:`pacs.web.wado_uri`: WADO-URI at ``/wado``;
* :mod:`pacs.web.viewer`: the OHIF Viewer under ``/viewer/``, configured for this archive;
* :mod:`pacs.web.home`: the landing page at ``/``;
* :mod:`pacs.web.login`: signing in and out, share links' landing;
* :mod:`pacs.web.shares`: the share-link API and page;
* :mod:`pacs.web.admin`: users, tokens and the audit trail;

and, for every route, :mod:`pacs.web.auth` (who is asking and may they: one check before any
route runs), :mod:`pacs.web.deidentified` (the answers of de-identified share links),
:mod:`pacs.web.auditing` (a record of each request that reads or stores images),
:mod:`pacs.web.errors` (JSON errors with a reason) and :mod:`pacs.web.cors` (CORS for the
configured origins).
"""

from __future__ import annotations

from flask import Flask, current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

from pacs.config import Settings
from pacs.services import Services, open_services

#: Where DICOMweb lives, as in other archives (Orthanc, dcm4chee).
DICOMWEB_ROOT = "/dicom-web"


def create_app(settings: Settings, services: Services | None = None) -> Flask:
    """The web application for ``settings``.

    Parameters
    ----------
    settings
        The archive's settings.
    services
        Open services to use; by default the application opens its own (one per process:
        each web worker process calls this after it starts).

    Returns
    -------
    Flask
    """
    from pacs.web import (
        admin,
        auditing,
        auth,
        cors,
        deidentified,
        errors,
        frames,
        health,
        home,
        login,
        qido,
        rendered,
        shares,
        stow,
        viewer,
        wado,
        wado_uri,
    )

    app = Flask(__name__)
    app.config["PACS_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.stow_max_bytes  # 413 above it
    app.extensions["pacs"] = services if services is not None else open_services(settings)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # UTF-8 names stay readable
    app.json.sort_keys = False  # type: ignore[attr-defined]  # tags are already in order
    if settings.trusted_proxies:
        # X-Forwarded-For/-Proto/-Host from that many proxies, and only them: the client
        # address the audit records and the https that makes cookies Secure.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    errors.register(app)
    auth.register(app)
    # after_request hooks run last-registered first: de-identify, then audit, then CORS.
    cors.register(app, settings.cors_origin_list)
    auditing.register(app)
    deidentified.register(app)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(qido.blueprint, url_prefix=DICOMWEB_ROOT)
    app.register_blueprint(wado.blueprint, url_prefix=DICOMWEB_ROOT)
    app.register_blueprint(frames.blueprint, url_prefix=DICOMWEB_ROOT)
    app.register_blueprint(stow.blueprint, url_prefix=DICOMWEB_ROOT)
    app.register_blueprint(rendered.blueprint, url_prefix=DICOMWEB_ROOT)
    app.register_blueprint(wado_uri.blueprint)  # /wado, where other archives have it
    app.register_blueprint(viewer.blueprint)
    app.register_blueprint(home.blueprint)
    app.register_blueprint(login.blueprint)
    app.register_blueprint(shares.blueprint)
    app.register_blueprint(admin.blueprint)
    return app


def service_url() -> str:
    """The DICOMweb root as the client sees it, for the URLs written into responses.

    The ``public_url`` setting when set (behind a reverse proxy it must be); otherwise the
    request's scheme and Host. Some clients (dicomweb-client among them) send a Host without
    its port; when the Host names none, no proxy forwarded the request and the port the
    request came to is not the scheme's default, that port is added.
    """
    settings: Settings = current_app.config["PACS_SETTINGS"]
    if settings.public_url:
        return settings.public_url.rstrip("/") + DICOMWEB_ROOT
    host = request.host
    port = str(request.environ.get("SERVER_PORT", ""))
    default = "443" if request.scheme == "https" else "80"
    if (":" not in host.rsplit("]", 1)[-1] and port.isdigit() and port != default
            and "X-Forwarded-Host" not in request.headers):
        host = f"{host}:{port}"
    return f"{request.scheme}://{host}{DICOMWEB_ROOT}"


def services_of(app: Flask) -> Services:
    """The archive's services bound to ``app``."""
    return app.extensions["pacs"]  # type: ignore[no-any-return]
