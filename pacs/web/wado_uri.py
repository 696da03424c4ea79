"""WADO-URI (PS3.18 9): one instance by query parameters, as DICOM or as an image.

``GET /wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…`` with ``contentType``:

* ``application/dicom``: the instance as stored, or in Explicit VR Little Endian when
  ``transferSyntax=1.2.840.10008.1.2.1`` asks for it (decompressed where needed);
* ``image/jpeg`` (the default) or ``image/png``: a frame (``frameNumber``, default 1) rendered
  by :mod:`pacs.render`, with ``windowCenter`` and ``windowWidth`` (both or neither),
  ``rows`` and ``columns`` (the largest size kept within), ``imageQuality`` (1-100).

The instance is found through the one retrieve path
(:func:`pacs.retrieve.resolve_instance`); an
unknown one is 404, a missing or malformed parameter 400 with the reason.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from pydicom.uid import ExplicitVRLittleEndian

from pacs.render import Window
from pacs.retrieve import TranscodeError, read_instance, resolve_instance
from pacs.web.errors import error_response
from pacs.web.rendered import BadParameter, parse_quality, render_response
from pacs.web.wado import explicit_little_endian

blueprint = Blueprint("wado_uri", __name__)
_CONTENT_TYPES = ("application/dicom", "image/jpeg", "image/png")
_SIDE_LIMIT = 4096


@blueprint.get("/wado")
def wado() -> Response:
    """One WADO-URI request."""
    from pacs.web import services_of

    args = request.args
    if args.get("requestType") != "WADO":
        return error_response(400, "requestType must be WADO")
    uids = [args.get(name) for name in ("studyUID", "seriesUID", "objectUID")]
    if not all(uids):
        return error_response(400, "studyUID, seriesUID and objectUID are all required")
    content_type = (args.get("contentType") or "image/jpeg").split(";")[0].strip().lower()
    if content_type not in _CONTENT_TYPES:
        return error_response(406, f"contentType must be one of {', '.join(_CONTENT_TYPES)}")
    services = services_of(current_app)
    found = resolve_instance(services.index, *uids)  # type: ignore[arg-type]
    if found is None:
        return error_response(404, "no such instance in the archive")
    if content_type == "application/dicom":
        syntax = args.get("transferSyntax")
        data = read_instance(services.store, found)
        if syntax and syntax != found.transfer_syntax_uid:
            if syntax != ExplicitVRLittleEndian:
                return error_response(406, f"transferSyntax must be the stored one or "
                                           f"{ExplicitVRLittleEndian}")
            try:
                data = explicit_little_endian(data)
            except TranscodeError as exc:
                return error_response(422, str(exc))
        response = Response(data, content_type="application/dicom")
        response.headers["Content-Disposition"] = f'attachment; filename="{uids[2]}.dcm"'
        return response
    try:
        window = _window(args.get("windowCenter"), args.get("windowWidth"))
        size = _size(args.get("columns"), args.get("rows"))
        quality = parse_quality(args.get("imageQuality"))
        frame = int(args.get("frameNumber") or 1)
    except (BadParameter, ValueError) as exc:
        return error_response(400, str(exc))
    return render_response(services, found, frame, window, size, content_type, quality)


def _window(center: str | None, width: str | None) -> Window | None:
    if center is None and width is None:
        return None
    try:
        window = Window(float(center or ""), float(width or ""))
    except ValueError:
        raise BadParameter("windowCenter and windowWidth must both be numbers") from None
    if window.width <= 0:
        raise BadParameter("windowWidth must be positive")
    return window


def _size(columns: str | None, rows: str | None) -> tuple[int, int] | None:
    if columns is None and rows is None:
        return None
    sides = []
    for name, text in (("columns", columns), ("rows", rows)):
        if text is None:
            sides.append(_SIDE_LIMIT)
        elif not text.isdigit() or not 1 <= int(text) <= _SIDE_LIMIT:
            raise BadParameter(f"{name} must be 1..{_SIDE_LIMIT}, not {text!r}")
        else:
            sides.append(int(text))
    return sides[0], sides[1]
