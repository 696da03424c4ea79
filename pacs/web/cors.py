"""Cross-origin requests (CORS), for a viewer served from another origin than the archive.

Off unless the ``cors_origins`` setting lists origins (``https://viewer.benhvien.vn``, or
``*`` for any). For an allowed origin every response carries
``Access-Control-Allow-Origin`` (that origin, with ``Vary: Origin``) and exposes the headers a
DICOMweb client reads (Warning, ETag, Content-Type, Content-Encoding); a preflight
``OPTIONS`` request is answered 204 with the methods and request headers allowed, including
``Authorization``. Images also say ``Cross-Origin-Resource-Policy: cross-origin`` so a
viewer isolated with COEP can draw them.
"""

from __future__ import annotations

from flask import Flask, Response, request

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, Accept, If-None-Match, Range"
EXPOSED_HEADERS = "Warning, ETag, Content-Type, Content-Encoding, Content-Length"
PREFLIGHT_MAX_AGE = "86400"


def register(app: Flask, origins: tuple[str, ...]) -> None:
    """Answer cross-origin requests from ``origins`` (nothing is added when empty)."""
    if not origins:
        return
    allow_any = "*" in origins

    @app.before_request
    def preflight() -> Response | None:
        if request.method == "OPTIONS" and _allowed(request.headers.get("Origin")):
            return Response(status=204)
        return None

    @app.after_request
    def add_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if not _allowed(origin):
            return response
        response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else str(origin)
        response.vary.add("Origin")
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        return response

    def _allowed(origin: str | None) -> bool:
        return origin is not None and (allow_any or origin in origins)
