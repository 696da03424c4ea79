"""The OHIF Viewer under ``/viewer/``, on the same origin as the archive's DICOMweb.

* ``/viewer/app-config.js`` is written per request from the settings: one DICOMweb data
  source at the archive's own root (QIDO with ``includefield``, fuzzy matching and
  wildcards, which the query model supports; the frames of stacks as HTJ2K lossless in two
  byte ranges, a labelled preview then the original, see ``PROGRESSIVE_STACK``; thumbnails
  from the archive's cached ``/thumbnail``), the archive's name, and the router under
  ``/viewer``; then ``preview_label.js``, the label on a viewport that draws a preview. The
  interface language is OHIF's own choice: the browser's (Vietnamese and English among its
  translations), or ``?lng=vi``;
* every other path is a file of the installed release (:mod:`pacs.viewer`), its ``.gz``
  twin when the browser accepts gzip; a path that names no file is one of the viewer's own
  routes and gets ``index.html``;
* file names that carry a content hash (``app.bundle.0f61….js``, ``….wasm``) never change:
  they are cached for a year; ``index.html`` and the config are revalidated each time;
* every answer carries ``Cross-Origin-Opener-Policy: same-origin`` and
  ``Cross-Origin-Embedder-Policy: require-corp``, without which the browser withholds
  ``SharedArrayBuffer`` and OHIF cannot build volumes (MPR);
* with the ``viewer_url`` setting (a site's own OHIF) ``/viewer/…`` redirects there; when
  the viewer is not installed the answer is 503 and says which command installs it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

from flask import Blueprint, Response, current_app, redirect, request, send_file

from pacs.config import Settings
from pacs.viewer import is_installed, viewer_folder
from pacs.web.errors import error_response

blueprint = Blueprint("viewer", __name__)
#: A content hash in a file name: webpack's 16 hex digits (bundles, wasm, fonts).
_HASHED = re.compile(r"(^|[.])[0-9a-f]{16}[.]")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
                ".html": "text/html", ".json": "application/json", ".wasm": "application/wasm",
                ".svg": "image/svg+xml", ".txt": "text/plain"}


#: The label a viewport shows while it draws a preview (read once; served with the config).
PREVIEW_LABEL = Path(__file__).with_name("preview_label.js").read_text(encoding="utf-8")
#: How Cornerstone3D fetches a frame of a stack (the loader sends ``transfer-syntax=*`` in its
#: Accept header and cannot be told otherwise, so the ``accept`` query parameter asks for
#: HTJ2K, pacs/renditions.py, with the frame as stored for instances that have none).
FRAME_ACCEPT = "accept=" + quote(
    'image/jphc, multipart/related; type="application/octet-stream"; transfer-syntax=*', safe="")
#: Two stages per frame: the first 64 KB (an HTJ2K frame's lower resolutions: a preview,
#: labelled, for every slice the stack prefetch loads), then the rest of the same bytes (the
#: lossless frame) for the slice on screen. A frame that fits in 64 KB is final at once.
PREVIEW_BYTES = 64 * 1024
PROGRESSIVE_STACK = {
    "stages": [{"id": "lossySequential", "retrieveType": "singleFast"},
               {"id": "finalSequential", "retrieveType": "singleFinal"}],
    "retrieveOptions": {
        # decodeLevel: a preview of a large frame (a radiograph) is decoded at no less than
        # half its resolution, as OHIF does by default.
        "singleFast": {"urlArguments": FRAME_ACCEPT, "rangeIndex": 0,
                       "chunkSize": PREVIEW_BYTES, "decodeLevel": 1},
        "singleFinal": {"urlArguments": FRAME_ACCEPT, "rangeIndex": -1},
    },
}


@blueprint.get("/viewer")
def viewer_root() -> Response:
    """The viewer's study list lives at ``/viewer/``."""
    return redirect("/viewer/", code=301)  # type: ignore[return-value]


@blueprint.get("/viewer/app-config.js")
def app_config() -> Response:
    """OHIF's configuration, pointing at this archive."""
    from pacs.web import service_url

    settings: Settings = current_app.config["PACS_SETTINGS"]
    if settings.viewer_url:
        return _elsewhere(settings, "app-config.js")
    body = (f"window.config = {json.dumps(ohif_config(settings, service_url()), indent=2)};\n"
            + PREVIEW_LABEL)
    return _isolated(Response(body, content_type="text/javascript; charset=utf-8"),
                     REVALIDATE)


@blueprint.get("/viewer/")
@blueprint.get("/viewer/<path:path>")
def viewer_file(path: str = "") -> Response:
    """A file of the viewer, or its ``index.html`` for the viewer's own routes."""
    settings: Settings = current_app.config["PACS_SETTINGS"]
    if settings.viewer_url:
        return _elsewhere(settings, path)
    if not is_installed(settings.viewer_dir):
        return error_response(503, "the OHIF Viewer is not installed: run `pacs viewer "
                                   "install` (make run does)")
    root = viewer_folder(settings.viewer_dir).resolve()
    file = (root / path).resolve() if path else root / "index.html"
    if not file.is_relative_to(root) or file.name.endswith(".gz"):
        return error_response(404, "no such file in the viewer")
    if not file.is_file():
        if "." in Path(path).name:  # a missing asset, not a route of the single-page app
            return error_response(404, "no such file in the viewer")
        file = root / "index.html"
    return _send(file)


def ohif_config(settings: Settings, dicomweb_root: str) -> dict[str, object]:
    """The ``window.config`` of OHIF for this archive (see the module docstring)."""
    return {
        "routerBasename": "/viewer",
        "showStudyList": True,
        "extensions": [],
        "modes": [],
        # The study list that shows what the server matched: the newer one filters the
        # results again in the browser, accent-sensitively, and so hides "Nguyễn" from
        # "nguyen" although the archive found it.
        "customizationService": {"workList.variant": {"$set": "legacy"}},
        "maxNumberOfWebWorkers": 3,
        "showLoadingIndicator": True,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "whiteLabeling": {},
        # One frame per request; HTTP/1.1 browsers open six connections per origin anyway.
        "maxNumRequests": {"interaction": 100, "thumbnail": 10, "prefetch": 25},
        "defaultDataSourceName": "pacs",
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "pacs",
            "configuration": {
                "friendlyName": settings.archive_name,
                "name": "pacs",
                "qidoRoot": dicomweb_root,
                "wadoRoot": dicomweb_root,
                "wadoUriRoot": dicomweb_root.rsplit("/dicom-web", 1)[0] + "/wado",
                "qidoSupportsIncludeField": True,
                "supportsReject": False,
                "supportsStow": False,
                "imageRendering": "wadors",
                "thumbnailRendering": "thumbnail",
                "thumbnailRequestStrategy": "fetch",
                "enableStudyLazyLoad": True,
                "supportsFuzzyMatching": True,
                "supportsWildcard": True,
                "staticWado": False,
                "singlepart": "bulkdata,video",
                "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                "omitQuotationForMultipartRequest": True,
                "stackRetrieveOptions": {"$set": PROGRESSIVE_STACK},
            },
        }],
    }


def _send(file: Path) -> Response:
    compressed = file.with_name(file.name + ".gz")
    gzipped = "gzip" in request.accept_encodings and compressed.is_file()
    response = send_file(compressed if gzipped else file,
                         mimetype=_MEDIA_TYPES.get(file.suffix) or None,
                         download_name=file.name, conditional=True, etag=True)
    if gzipped:
        response.headers["Content-Encoding"] = "gzip"
    response.vary.add("Accept-Encoding")
    response.headers.pop("Content-Disposition", None)
    return _isolated(response, IMMUTABLE if _HASHED.search(file.name) else REVALIDATE)


def _isolated(response: Response, cache_control: str) -> Response:
    response.headers["Cache-Control"] = cache_control
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
    return response


def _elsewhere(settings: Settings, path: str) -> Response:
    query = request.query_string.decode("latin-1")
    target = settings.viewer_url.rstrip("/") + "/" + path + (f"?{query}" if query else "")
    return redirect(target, code=302)  # type: ignore[return-value]
