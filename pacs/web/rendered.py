"""Rendered images and thumbnails (PS3.18 8.3.5, 8.3.6, 10.4.1.1.5-6) for browsers.

* ``.../instances/{uid}/rendered`` (its first frame) and ``.../frames/{n}/rendered``: the
  frame through :func:`pacs.render.render_frame`, with the query parameters ``window``
  (``center,width[,function]``), ``viewport`` (``width,height``) and ``quality`` (1-100,
  JPEG);
* ``/studies/{uid}/rendered`` and ``.../series/{uid}/rendered``: every instance of the study
  or series rendered (its first frame), one part each of a streamed
  ``multipart/related; type="image/jpeg"`` (or ``image/png``) when the Accept header asks
  for that; instances without pixel data (reports, presentation states) are left out. A
  client that accepts a single image (a browser's ``<img>``) gets the representative image:
  the one the thumbnail shows, in full;
* ``/thumbnail`` at frame, instance, series and study level: a 128-pixel rendering of the
  frame, of the instance's first frame, or of the middle instance of the series (of the
  study's first series), with the dataset's own window. Thumbnails are kept in the object
  store as derived objects (under a key made from the instance's SHA-256 and the
  parameters), so the second request is a read;
* ``image/jpeg`` by default, ``image/png`` when the Accept header prefers it; anything else
  406. A malformed parameter is 400, a frame that does not exist 404.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from io import BytesIO

import pydicom
from flask import Blueprint, Response, current_app, request, stream_with_context
from PIL import Image

from pacs.render import (
    FUNCTIONS,
    FrameNotFound,
    NativeGrayscale,
    RenderError,
    Window,
    render_frame,
)
from pacs.retrieve import (
    StoredInstance,
    read_instance,
    resolve,
    resolve_instance_metadata,
    uid_query,
)
from pacs.services import Services
from pacs.storage.keys import instance_key
from pacs.web.errors import error_response

blueprint = Blueprint("rendered", __name__)
_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}
THUMBNAIL_SIZE = (128, 128)
MAX_VIEWPORT = 4096
DEFAULT_QUALITY = 90


class BadParameter(ValueError):
    """A rendering parameter is malformed; the message says which and why."""


_INSTANCE = "/studies/<study>/series/<series>/instances/<instance>"


@blueprint.get(_INSTANCE + "/rendered")
def rendered_instance(study: str, series: str, instance: str) -> Response:
    """The instance's first frame, rendered."""
    return _rendered(study, series, instance, 1)


@blueprint.get(_INSTANCE + "/frames/<int:frame>/rendered")
def rendered_frame(study: str, series: str, instance: str, frame: int) -> Response:
    """One frame, rendered."""
    return _rendered(study, series, instance, frame)


@blueprint.get("/studies/<study>/rendered")
def rendered_study(study: str) -> Response:
    """Every instance of the study rendered, or its representative image."""
    return _rendered_many(study, None)


@blueprint.get("/studies/<study>/series/<series>/rendered")
def rendered_series(study: str, series: str) -> Response:
    """Every instance of the series rendered, or its representative image."""
    return _rendered_many(study, series)


@blueprint.get(_INSTANCE + "/thumbnail")
def instance_thumbnail(study: str, series: str, instance: str) -> Response:
    """The instance's thumbnail."""
    return _thumbnail(study, series, instance)


@blueprint.get(_INSTANCE + "/frames/<int:frame>/thumbnail")
def frame_thumbnail(study: str, series: str, instance: str, frame: int) -> Response:
    """The thumbnail of one frame."""
    return _thumbnail(study, series, instance, frame)


@blueprint.get("/studies/<study>/series/<series>/thumbnail")
def series_thumbnail(study: str, series: str) -> Response:
    """The thumbnail of the series' middle instance."""
    return _thumbnail(study, series, None)


@blueprint.get("/studies/<study>/thumbnail")
def study_thumbnail(study: str) -> Response:
    """The thumbnail of the middle instance of the study's first series."""
    return _thumbnail(study, None, None)


def _rendered(study: str, series: str, instance: str, frame: int) -> Response:
    from pacs.web import services_of

    media_type = _media_type()
    if media_type is None:
        return error_response(406, "rendered images are image/jpeg or image/png")
    try:
        window, viewport, quality = _rendering_parameters()
    except BadParameter as exc:
        return error_response(400, str(exc))
    services = services_of(current_app)
    found = resolve_instance_metadata(services.index, study, series, instance)
    if found is None:
        return error_response(404, "no such instance in the archive")
    stored, metadata_json = found
    return render_response(services, stored, frame, window, viewport, media_type, quality,
                           metadata_json)


def _rendered_many(study: str, series: str | None) -> Response:
    from pacs.web import service_url, services_of

    part_type = _multipart_image_type(request.headers.get("Accept", ""))
    media_type = part_type or _media_type()
    if media_type is None:
        return error_response(406, "rendered images are image/jpeg or image/png, alone or as "
                                   "the parts of multipart/related")
    try:
        window, viewport, quality = _rendering_parameters()
    except BadParameter as exc:
        return error_response(400, str(exc))
    services = services_of(current_app)
    found = resolve(services.db, uid_query(study, series, None))
    if not found:
        return error_response(404, "no such study or series in the archive")
    if part_type is None:
        return render_response(services, _representative(found), 1, window, viewport,
                               media_type, quality)
    boundary = uuid.uuid4().hex
    parts = _rendered_parts(services, found, window, viewport, media_type, quality, boundary,
                            service_url())
    response = Response(stream_with_context(parts), content_type=(
        f'multipart/related; type="{media_type}"; boundary={boundary}'))
    response.headers["Cache-Control"] = "private, no-cache"  # a series may grow
    return response


def _rendered_parts(services: Services, found: list[StoredInstance], window: Window | None,
                    viewport: tuple[int, int] | None, media_type: str, quality: int,
                    boundary: str, base: str) -> Iterator[bytes]:
    """The multipart body, one rendered instance at a time (memory flat however many)."""
    for instance in found:
        try:
            image = render_stored(services, instance, 1, window, viewport)
        except RenderError:
            continue  # no pixel data to show: not an image of this study
        location = (f"{base}/studies/{instance.study_uid}/series/{instance.series_uid}"
                    f"/instances/{instance.sop_instance_uid}/rendered")
        yield (f"--{boundary}\r\nContent-Type: {media_type}\r\n"
               f"Content-Location: {location}\r\n\r\n").encode("ascii")
        yield encode_image(image, media_type, quality)
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def _rendering_parameters() -> tuple[Window | None, tuple[int, int] | None, int]:
    """The request's ``window``, ``viewport`` and ``quality``; BadParameter if malformed."""
    return (_window(request.args.get("window")), parse_viewport(request.args.get("viewport")),
            parse_quality(request.args.get("quality")))


def _multipart_image_type(accept: str) -> str | None:
    """``image/jpeg`` or ``image/png`` when the first multipart media range of ``accept``
    asks for rendered parts of that type (``multipart/related; type="image/jpeg"``)."""
    for media_range in accept.split(","):
        kind, *parameters = (part.strip() for part in media_range.split(";"))
        if kind.lower() != "multipart/related":
            continue
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "type" and value.strip().strip('"').lower() in _FORMATS:
                return value.strip().strip('"').lower()
    return None


def render_response(services: Services, instance: StoredInstance, frame: int,
                    window: Window | None, viewport: tuple[int, int] | None, media_type: str,
                    quality: int, metadata_json: str | None = None) -> Response:
    """A frame rendered and encoded; 404 for a frame the instance lacks, 422 when it cannot
    be shown."""
    try:
        image = render_stored(services, instance, frame, window, viewport, metadata_json)
    except RenderError as exc:
        return error_response(404 if isinstance(exc, FrameNotFound) else 422, str(exc))
    return image_response(encode_image(image, media_type, quality), media_type)


def _thumbnail(study: str, series: str | None, instance: str | None,
               frame: int = 1) -> Response:
    from pacs.web import services_of

    media_type = _media_type()
    if media_type is None:
        return error_response(406, "thumbnails are image/jpeg or image/png")
    try:
        viewport = parse_viewport(request.args.get("viewport")) or THUMBNAIL_SIZE
    except BadParameter as exc:
        return error_response(400, str(exc))
    services = services_of(current_app)
    found = resolve(services.db, uid_query(study, series, instance))
    if not found:
        return error_response(404, "no such study, series or instance in the archive")
    chosen = _representative(found)
    key = _derived_key(chosen, f"thumbnail:{frame}:{viewport[0]}x{viewport[1]}:{media_type}")
    if services.store.exists(key):
        with services.store.open(key) as stream:
            return image_response(stream.read(), media_type)
    try:
        image = render_stored(services, chosen, frame, None, viewport)
    except RenderError as exc:
        return error_response(404 if isinstance(exc, FrameNotFound) else 422, str(exc))
    data = encode_image(image, media_type, DEFAULT_QUALITY)
    services.store.put(key, data)
    return image_response(data, media_type)


def _representative(found: list[StoredInstance]) -> StoredInstance:
    """The middle instance of the first series (in the order archived)."""
    first_series = [item for item in found if item.series_uid == found[0].series_uid]
    return first_series[len(first_series) // 2]


def _derived_key(instance: StoredInstance, what: str) -> str:
    """A key of the archive's form for an object derived from ``instance``."""
    return instance_key(hashlib.sha256(f"{instance.sha256}:{what}".encode()).hexdigest())


def render_stored(services: Services, instance: StoredInstance, frame: int,
                  window: Window | None, viewport: tuple[int, int] | None,
                  metadata_json: str | None = None) -> Image.Image:
    """Frame ``frame`` of a stored instance, rendered (:func:`pacs.render.render_frame`).

    A native grayscale frame (most CT and MR) is read alone from the object store, at the
    offset ingest recorded, and its layout from the DICOM JSON ingest stored
    (``metadata_json``, looked up when not given): the file is neither read whole nor
    parsed. Anything else is parsed by pydicom.

    Raises
    ------
    RenderError
        If the frame does not exist or cannot be shown.
    """
    offset, length = instance.pixel_data_offset, instance.pixel_data_length
    if offset is not None and length is not None:
        if metadata_json is None:
            found = services.index.find_instance_metadata(instance.sop_instance_uid)
            metadata_json = found[1] if found else "{}"
        layout = NativeGrayscale.of_json(json.loads(metadata_json), instance.transfer_syntax_uid)
        if layout is not None and length >= layout.frames * layout.frame_size:
            if not 1 <= frame <= layout.frames:
                raise FrameNotFound(f"frame {frame} is not in 1..{layout.frames}")
            size = layout.frame_size
            data = services.store.read_range(instance.object_key, offset + (frame - 1) * size,
                                             size)
            if len(data) == size:
                return layout.render(data, window, viewport)
    return render_frame(read_dataset(services, instance), frame, window=window,
                        viewport=viewport)


def read_dataset(services: Services, instance: StoredInstance) -> pydicom.Dataset:
    """The stored instance as a pydicom Dataset (pixel data included)."""
    return pydicom.dcmread(BytesIO(read_instance(services.store, instance)))


def _media_type() -> str | None:
    if not request.accept_mimetypes:
        return "image/jpeg"
    return request.accept_mimetypes.best_match(list(_FORMATS))


def _window(text: str | None) -> Window | None:
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise BadParameter(f"window must be center,width[,function], not {text!r}") from None
    function = parts[2].upper() if len(parts) == 3 else "LINEAR"
    if width <= 0 or function not in FUNCTIONS:
        raise BadParameter(f"window {text!r}: the width must be positive and the function "
                            f"one of {', '.join(FUNCTIONS)}")
    return Window(center, width, function)


def parse_viewport(text: str | None) -> tuple[int, int] | None:
    """``width,height`` (1..4096 each), or None when not given; BadParameter otherwise."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise BadParameter(f"viewport must be width,height, not {text!r}")
    width, height = (int(part) for part in parts)
    if not (1 <= width <= MAX_VIEWPORT and 1 <= height <= MAX_VIEWPORT):
        raise BadParameter(f"viewport sides must be 1..{MAX_VIEWPORT}, not {text!r}")
    return width, height


def parse_quality(text: str | None) -> int:
    """A JPEG quality 1..100 (90 when not given); BadParameter otherwise."""
    if text is None:
        return DEFAULT_QUALITY
    if not text.strip().isdigit() or not 1 <= int(text) <= 100:
        raise BadParameter(f"quality must be 1..100, not {text!r}")
    return int(text)


def encode_image(image: Image.Image, media_type: str, quality: int) -> bytes:
    """``image`` as ``image/jpeg`` (at ``quality``) or ``image/png`` bytes."""
    out = BytesIO()
    if media_type == "image/jpeg":
        image.save(out, "JPEG", quality=quality)
    else:
        image.save(out, "PNG")
    return out.getvalue()


def image_response(data: bytes, media_type: str) -> Response:
    """An image response, cacheable by the browser for a day."""
    response = Response(data, content_type=media_type)
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response
