"""WADO-RS frames and bulk data (PS3.18 10.4.1.1.3-4): pixel data and other large values.

``GET .../instances/{uid}/frames/{list}`` (``1`` or ``1,3,5``) answers the frames in the
order asked. The media ranges of the ``accept`` query parameter (PS3.18 8.3.3.1), or else of
the Accept header, are tried in order; the first one this instance can be sent in wins:

* ``multipart/related; type="application/octet-stream"`` with ``transfer-syntax``

  * ``*`` (what OHIF asks for): each frame as stored. For an encapsulated (compressed)
    instance that is its compressed frame, exactly the bytes of its fragments; for a native
    one, the frame's slice of the pixel data. The part's Content-Type names the syntax, so
    the viewer decodes it itself: nothing is decoded here, which is what makes this the
    fast path;
  * none, or Explicit VR Little Endian: uncompressed little endian pixels, decoded by
    pydicom's handlers when the instance is compressed (colour in RGB);
  * HTJ2K lossless (``1.2.840.10008.1.2.4.202`` or ``.201``): native grayscale frames
    encoded by :mod:`pacs.renditions` (other instances fall to the next media range);

* for one frame, a single part: ``application/octet-stream`` with one of those syntaxes, or
  ``image/jphc`` (HTJ2K). A single part honours ``Range`` (206 with Content-Range), so a
  viewer can draw a preview from the first bytes of an HTJ2K frame and fetch the rest later;
* nothing acceptable: 406.

A frame number outside 1..NumberOfFrames is 404, a malformed list 400.

``GET .../instances/{uid}/bulkdata/{path}`` serves the values that the metadata replaced by a
``BulkDataURI`` (the path is the one :mod:`pacs.header` wrote: tags and 1-based item numbers,
``00283010/1/00283006``). Pixel data is its frames, as above; any other value is one
``application/octet-stream`` part of its bytes as stored, or, when the Accept header asks for
``application/octet-stream`` itself, the bare bytes with HTTP byte ranges (``Range``).
"""

from __future__ import annotations

import gzip
import json
import re
import uuid
from io import BytesIO

import pydicom
from flask import Blueprint, Response, current_app, request
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pacs.header import first_value
from pacs.render import NativeGrayscale, RenderError, frame_count
from pacs.renditions import (
    HTJ2K_LOSSLESS_RPCL,
    RENDITION_SYNTAXES,
    FrameLayout,
    NoRendition,
    RenditionCache,
    encode_htj2k_lossless,
)
from pacs.retrieve import (
    StoredInstance,
    read_instance,
    resolve_instance,
    resolve_instance_metadata,
)
from pacs.storage.objects import ObjectStore
from pacs.web.accept import AS_STORED, HTJ2K_MEDIA_TYPE, frame_choices
from pacs.web.errors import error_response

blueprint = Blueprint("frames", __name__)
PIXEL_DATA = 0x7FE00010
ROWS, COLUMNS, BITS_ALLOCATED = 0x00280010, 0x00280011, 0x00280100
SAMPLES_PER_PIXEL, NUMBER_OF_FRAMES = 0x00280002, 0x00280008
#: Tags (8 hex digits) and 1-based item numbers, as pacs.header writes BulkDataURIs.
_BULK_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[1-9][0-9]{0,5}/[0-9A-Fa-f]{8})*")
#: zlib level for native frames: level 1 already halves a CT frame; higher levels gain ~1 %.
FRAME_GZIP_LEVEL = 1
#: HTJ2K renditions kept per process: ~1,000 CT slices, the two byte ranges of a frame that a
#: viewer asks for within a second of each other, for every reader of a busy hour.
_RENDITIONS = RenditionCache(max_bytes=256 * 1024 * 1024)
#: Most frames one request may name (a cine loop of a few hundred is the largest real use).
MAX_FRAMES = 4096


@blueprint.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frame_list>")
def retrieve_frames(study: str, series: str, instance: str, frame_list: str) -> Response:
    """RetrieveFrames."""
    numbers = _frame_numbers(frame_list)
    if numbers is None:
        return error_response(400, f"{frame_list!r} is not a list of frame numbers (1,2,3)")
    return _pixel_data(study, series, instance, numbers)


@blueprint.get("/studies/<study>/series/<series>/instances/<instance>/bulkdata/<path:path>")
def retrieve_bulkdata(study: str, series: str, instance: str, path: str) -> Response:
    """RetrieveBulkdata, for the BulkDataURIs of the metadata."""
    if path == f"{PIXEL_DATA:08X}":
        return _pixel_data(study, series, instance, None)
    segments = path.split("/")
    if not _BULK_PATH.fullmatch(path):
        return error_response(400, f"{path!r} is not a bulk data path (tags and item numbers)")
    dataset = _instance_dataset(study, series, instance)
    if isinstance(dataset, Response):
        return dataset
    value = _value_at(dataset, segments)
    if not isinstance(value, bytes | bytearray):
        return error_response(404, f"the instance has no bulk data at {path}")
    if _single_part(request.headers.get("Accept", "")):
        return _ranged(bytes(value))
    return _multipart([bytes(value)], None)


def _single_part(accept: str) -> bool:
    """True when the first media range asks for the bare bytes (PS3.18 8.7.3.3)."""
    first = accept.split(",")[0].split(";")[0].strip().lower()
    return first == "application/octet-stream"


def _ranged(value: bytes, content_type: str = "application/octet-stream") -> Response:
    """The value as one body, honouring a ``Range`` header (206 with Content-Range; 416
    outside the value), so a client can fetch part of a large one."""
    response = Response(value, content_type=content_type)
    response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    return response.make_conditional(request, accept_ranges=True, complete_length=len(value))


def _pixel_data(study: str, series: str, instance: str, numbers: list[int] | None) -> Response:
    """The frames ``numbers`` (all when None) in the first representation the request
    accepts (its ``accept`` query parameter, else its Accept header) that this instance can
    be sent in."""
    from pacs.web import services_of

    accept = request.args.get("accept") or request.headers.get("Accept", "")
    choices = frame_choices(accept)
    if not choices:
        return error_response(
            406, 'frames are sent as multipart/related; type="application/octet-stream" with '
                 f"transfer-syntax {AS_STORED}, {ExplicitVRLittleEndian} or "
                 f"{HTJ2K_LOSSLESS_RPCL}, or one frame as application/octet-stream or "
                 f"{HTJ2K_MEDIA_TYPE}")
    services = services_of(current_app)
    found = resolve_instance_metadata(services.index, study, series, instance)
    if found is None:
        return error_response(404, "no such instance in the archive")
    for choice in choices:
        if choice.single_part and (numbers is None or len(numbers) != 1):
            continue
        made = _frames(services.store, *found, numbers, choice.syntax)
        if made is None:
            continue
        if isinstance(made, Response):
            return made
        frames, sent = made
        if choice.single_part:
            return _single_part_frame(frames[0], sent, choice.media_type)
        return _multipart(frames, sent)
    return error_response(
        406, "none of the accepted representations can be made of this instance (HTJ2K is "
             "made of native grayscale frames; single parts are for one frame)")


def _frames(store: ObjectStore, instance: StoredInstance, metadata_json: str,
            numbers: list[int] | None, syntax: str) -> tuple[list[bytes], UID] | Response | None:
    """The frames in ``syntax`` and the syntax they are in, an error response (a frame
    number out of range...), or None when this instance cannot be sent in ``syntax``."""
    if syntax in RENDITION_SYNTAXES:
        return _renditions(store, instance, metadata_json, numbers, UID(syntax))
    from_offset = _frames_at_offset(store, instance, metadata_json, numbers, syntax)
    if from_offset is not None:
        return from_offset
    dataset = pydicom.dcmread(BytesIO(read_instance(store, instance)))
    if "PixelData" not in dataset:
        return error_response(404, "the instance has no pixel data")
    try:
        count = frame_count(dataset)
    except RenderError as exc:
        return error_response(422, str(exc))
    numbers = numbers or list(range(1, count + 1))
    missing = [number for number in numbers if not 1 <= number <= count]
    if missing:
        return error_response(404, f"frame {missing[0]} is not in 1..{count}")
    stored = UID(dataset.file_meta.TransferSyntaxUID)
    if syntax == AS_STORED and (stored.is_compressed or stored.is_little_endian):
        frames = _stored_frames(dataset, stored, numbers, count)
        return frames, stored if stored.is_compressed else ExplicitVRLittleEndian
    frames = [_uncompressed_frame(dataset, stored, number, count) for number in numbers]
    return frames, ExplicitVRLittleEndian


def _renditions(store: ObjectStore, instance: StoredInstance, metadata_json: str,
                numbers: list[int] | None, syntax: UID) -> tuple[list[bytes], UID] | \
        Response | None:
    """Native grayscale frames encoded as HTJ2K lossless (cached per process), or None
    when the instance is not one (:mod:`pacs.renditions`)."""
    grayscale = NativeGrayscale.of_json(json.loads(metadata_json), instance.transfer_syntax_uid)
    if grayscale is None:
        return None
    layout = FrameLayout(grayscale.rows, grayscale.columns, samples_per_pixel=1,
                         bits_allocated=grayscale.bits_allocated,
                         pixel_representation=int(grayscale.signed))
    native = _frames_at_offset(store, instance, metadata_json, numbers, ExplicitVRLittleEndian)
    if not isinstance(native, tuple):
        return native
    frames, _ = native
    numbers = numbers or list(range(1, len(frames) + 1))
    encoded = []
    for number, frame in zip(numbers, frames, strict=True):
        key = (instance.sha256, number, str(syntax))
        value = _RENDITIONS.get(key)
        if value is None:
            try:
                value = encode_htj2k_lossless(frame, layout)
            except NoRendition:
                return None
            _RENDITIONS.put(key, value)
        encoded.append(value)
    return encoded, syntax


def _single_part_frame(frame: bytes, syntax: UID, media_type: str) -> Response:
    """One frame as a single-part body that names its syntax, cut by a ``Range`` header
    when there is one: a viewer fetches the first bytes of an HTJ2K frame for a preview,
    then the rest."""
    response = _ranged(frame, f"{media_type}; transfer-syntax={syntax}")
    if not syntax.is_compressed and response.status_code == 200:
        _gzip_if_accepted(response)
    return response


def _frames_at_offset(store: ObjectStore, instance: StoredInstance, metadata_json: str,
                      numbers: list[int] | None,
                      syntax: str) -> tuple[list[bytes], UID] | Response | None:
    """The frames read alone from the stored object, at the Pixel Data offset ingest
    recorded, with the layout from the stored DICOM JSON; None when that is not possible
    (offset unknown, big endian, frames that need decoding...) and the file must be parsed.
    """
    offset, length = instance.pixel_data_offset, instance.pixel_data_length
    stored = UID(instance.transfer_syntax_uid)
    if offset is None or (length is None and syntax != AS_STORED):
        return None
    dataset = json.loads(metadata_json)
    try:
        count = int(str(first_value(dataset, NUMBER_OF_FRAMES) or 1).strip())
    except ValueError:
        return None
    numbers = numbers or list(range(1, count + 1))
    missing = [number for number in numbers if not 1 <= number <= count]
    if missing:
        return error_response(404, f"frame {missing[0]} is not in 1..{count}")
    if length is None:  # encapsulated, sent as stored: the fragments of each frame
        try:
            value = store.read_range(instance.object_key, offset, instance.size - offset)
            frames = list(generate_frames(value, number_of_frames=count))
        except ValueError:
            return None
        if len(frames) < count:
            return None
        return [frames[number - 1] for number in numbers], stored
    if stored not in (ImplicitVRLittleEndian, ExplicitVRLittleEndian):
        return None
    try:
        bits = int(first_value(dataset, ROWS)) * int(first_value(dataset, COLUMNS)) \
            * int(first_value(dataset, SAMPLES_PER_PIXEL) or 1) \
            * int(first_value(dataset, BITS_ALLOCATED))
    except (TypeError, ValueError):
        return None
    size = bits // 8
    if bits % 8 or length < count * size:  # 1-bit frames are not byte-aligned
        return None
    return [store.read_range(instance.object_key, offset + (number - 1) * size, size)
            for number in numbers], ExplicitVRLittleEndian


def _instance_dataset(study: str, series: str, instance: str) -> Dataset | Response:
    """The stored instance, read whole (frames need its pixel data), or a 404."""
    from pacs.web import services_of

    services = services_of(current_app)
    found = resolve_instance(services.index, study, series, instance)
    if found is None:
        return error_response(404, "no such instance in the archive")
    return pydicom.dcmread(BytesIO(read_instance(services.store, found)))


def _value_at(dataset: Dataset, segments: list[str]) -> object:
    """The value at a bulk data path, or None where the path leads nowhere."""
    current: Dataset = dataset
    for index in range(0, len(segments) - 1, 2):
        element = current.get(int(segments[index], 16))
        number = int(segments[index + 1])
        if element is None or element.VR != "SQ" or not 1 <= number <= len(element.value):
            return None
        current = element.value[number - 1]
    element = current.get(int(segments[-1], 16))
    return None if element is None else element.value


def _multipart(values: list[bytes], syntax: UID | None) -> Response:
    boundary = uuid.uuid4().hex
    content_type = "application/octet-stream" + (
        f"; transfer-syntax={syntax}" if syntax is not None else "")
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii")
        + value + b"\r\n"
        for value in values
    ) + f"--{boundary}--\r\n".encode("ascii")
    response = Response(body, content_type=(
        f'multipart/related; type="application/octet-stream"; boundary={boundary}'))
    response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    if syntax is not None and not syntax.is_compressed:
        _gzip_if_accepted(response)
    return response


def _gzip_if_accepted(response: Response) -> None:
    """Native pixels, gzipped for a browser that accepts it: lossless, about half the bytes
    of a CT or MR frame for ~10 ms of one core per 512×512 frame, which a 10 Mbit/s link
    repays many times over (a compressed transfer syntax is sent as it is)."""
    response.vary.add("Accept-Encoding")
    if "gzip" not in request.accept_encodings:
        return
    response.set_data(gzip.compress(response.get_data(), compresslevel=FRAME_GZIP_LEVEL))
    response.headers["Content-Encoding"] = "gzip"


def _frame_numbers(text: str) -> list[int] | None:
    parts = text.split(",")
    if not 1 <= len(parts) <= MAX_FRAMES or not all(part.strip().isdigit() for part in parts):
        return None
    return [int(part) for part in parts]


def _stored_frames(dataset: Dataset, syntax: UID, numbers: list[int],
                   count: int) -> list[bytes]:
    pixels: bytes = dataset.PixelData
    if syntax.is_encapsulated:
        frames = list(generate_frames(pixels, number_of_frames=count))
        return [frames[number - 1] for number in numbers]
    size = _frame_size(dataset)
    return [pixels[(number - 1) * size : number * size] for number in numbers]


def _frame_size(dataset: Dataset) -> int:
    bits = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel", 1)) \
        * int(dataset.BitsAllocated)
    return (bits + 7) // 8


def _uncompressed_frame(dataset: Dataset, syntax: UID, number: int, count: int) -> bytes:
    if not syntax.is_compressed and syntax.is_little_endian:
        return _stored_frames(dataset, syntax, [number], count)[0]
    array = pixel_array(dataset, index=number - 1)
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
