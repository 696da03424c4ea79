"""A study seen through a de-identified share link.

:func:`pacs.web.scope.scope_to_share` makes a :class:`DeidentifiedView` for each request of a
de-identified link's session. The view

* turns the remapped UIDs the viewer sends back into the stored ones (:meth:`original`);
  a UID that is not the remapped form of one of the study's becomes ``""``, so an original
  UID cannot be used to reach around the de-identification;
* refuses pixels of instances whose Burned In Annotation says (or whose kind suggests)
  that names are written into the image, and bulk data other than pixel data
  (:meth:`check_pixels`);
* de-identifies the answer after the route ran (:func:`deidentify_response`, an
  ``after_request`` hook): DICOM JSON (QIDO, metadata) through
  :meth:`pacs.deidentify.Deidentifier.json_dataset` (the BulkDataURIs' UIDs remapped too),
  and Part-10 instances (WADO-RS, WADO-URI) through :meth:`~pacs.deidentify.Deidentifier.dataset`.
  Frames and rendered images are pixels only and pass unchanged.

The study's UIDs and burned-in instances are read once per link and process, and again
when a UID is not found (an instance that arrived since).
"""

from __future__ import annotations

import gzip
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, current_app, g
from pydicom import dcmread
from pydicom.filewriter import dcmwrite

from pacs.deidentify import Deidentifier, has_burned_in_annotation
from pacs.retrieve import resolve, uid_query
from pacs.sharing import ShareLink
from pacs.web.errors import error_response
from pacs.web.multipart import iter_parts

_PIXEL_ENDPOINTS = {
    "frames.retrieve_frames", "frames.retrieve_bulkdata", "rendered.rendered_instance",
    "rendered.rendered_frame", "rendered.rendered_study", "rendered.rendered_series",
    "rendered.instance_thumbnail", "rendered.frame_thumbnail", "rendered.series_thumbnail",
    "rendered.study_thumbnail", "wado.retrieve_study", "wado.retrieve_series",
    "wado.retrieve_instance", "wado_uri.wado",
}
_PIXEL_DATA_PATHS = ("7FE00010", "7fe00010", "7FE00008", "7fe00008", "7FE00009", "7fe00009")


@dataclass
class DeidentifiedView:
    """One de-identified link's study: UID translation both ways and burned-in instances."""

    link: ShareLink
    deidentifier: Deidentifier
    to_original: dict[str, str] = field(default_factory=dict)
    to_remapped: dict[str, str] = field(default_factory=dict)
    instances_by_series: dict[str, list[str]] = field(default_factory=dict)
    burned_in: set[str] = field(default_factory=set)

    @classmethod
    def for_link(cls, link: ShareLink) -> DeidentifiedView:
        """The view of ``link`` (cached per application and link)."""
        views: dict[int, DeidentifiedView] = current_app.extensions.setdefault(
            "pacs_deidentified_views", {})
        view = views.get(link.pk)
        if view is None:
            view = cls(link, Deidentifier(link.deid_secret))
            view.load()
            if len(views) > 256:
                views.clear()
            views[link.pk] = view
        return view

    def load(self) -> None:
        """Read the study's UIDs and which instances carry burned-in annotation."""
        from pacs.web import services_of

        services = services_of(current_app)
        found = resolve(services.db, uid_query(self.link.study_uid))
        uids = {self.link.study_uid}
        by_series: dict[str, list[str]] = {}
        burned: set[str] = set()
        for instance in found:
            uids.update((instance.series_uid, instance.sop_instance_uid))
            by_series.setdefault(instance.series_uid, []).append(instance.sop_instance_uid)
            metadata = services.index.find_instance_metadata(instance.sop_instance_uid)
            if metadata is not None and has_burned_in_annotation(json.loads(metadata[1])):
                burned.add(instance.sop_instance_uid)
        self.to_remapped = {uid: self.deidentifier.uid(uid) for uid in uids}
        self.to_original = {remapped: uid for uid, remapped in self.to_remapped.items()}
        self.instances_by_series = by_series
        self.burned_in = burned

    def original(self, remapped: str) -> str:
        """The stored UID behind a remapped one, or ``""`` when it is none of the study's."""
        if remapped not in self.to_original:
            self.load()  # an instance may have arrived since
        return self.to_original.get(remapped, "")

    def check_pixels(self, endpoint: str, uids: dict[str, Any]) -> Response | None:
        """Refuse pixels with burned-in annotation, and bulk data that is not pixels."""
        if endpoint not in _PIXEL_ENDPOINTS:
            return None
        if endpoint == "frames.retrieve_bulkdata" and not str(
                uids.get("path", "")).startswith(_PIXEL_DATA_PATHS):
            return error_response(403, "a de-identified share link serves pixel data only")
        if "instance" in uids:
            concerned = {uids["instance"]}
        elif "series" in uids:
            concerned = set(self.instances_by_series.get(uids["series"], ()))
        else:
            concerned = {uid for listed in self.instances_by_series.values() for uid in listed}
        if concerned & self.burned_in:
            return error_response(403, "these images may show the patient's name burned into "
                                       "the pixels; a de-identified link does not show them")
        return None

    # -- answers --------------------------------------------------------------------------

    def json_dataset(self, dataset: dict[str, Any]) -> dict[str, Any]:
        """A DICOM JSON dataset de-identified (the UIDs in its BulkDataURIs remapped too)."""
        return self.deidentifier.json_dataset(dataset)

    def part10(self, data: bytes) -> bytes:
        """A Part-10 instance de-identified."""
        dataset = self.deidentifier.dataset(dcmread(io.BytesIO(data)))
        out = io.BytesIO()
        dcmwrite(out, dataset, enforce_file_format=True)
        return out.getvalue()


def register(app: Flask) -> None:
    """De-identify the answers of de-identified share links' requests."""
    app.after_request(deidentify_response)


def deidentify_response(response: Response) -> Response:
    """The answer to a de-identified link's request, de-identified (others unchanged)."""
    view: DeidentifiedView | None = g.get("deidentified")
    if view is None or response.status_code >= 300:
        return response
    mimetype = response.mimetype or ""
    if mimetype in ("application/dicom+json", "application/json"):
        _rewrite_json(view, response)
    elif mimetype == "multipart/related" and "application/dicom" in (
            response.mimetype_params.get("type", "")):
        _rewrite_multipart(view, response)
    elif mimetype == "application/dicom":
        response.set_data(view.part10(response.get_data()))
    else:
        return response  # frames, rendered images: pixels only
    response.headers.pop("ETag", None)
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _rewrite_json(view: DeidentifiedView, response: Response) -> None:
    body = response.get_data()
    gzipped = response.headers.get("Content-Encoding") == "gzip"
    if gzipped:
        body = gzip.decompress(body)
    document = json.loads(body)
    if isinstance(document, list):
        document = [view.json_dataset(item) for item in document]
    elif isinstance(document, dict) and all(len(key) == 8 for key in document):
        document = view.json_dataset(document)
    body = json.dumps(document, ensure_ascii=False).encode("utf-8")
    response.set_data(gzip.compress(body, compresslevel=6) if gzipped else body)


def _rewrite_multipart(view: DeidentifiedView, response: Response) -> None:
    stream = io.BytesIO(response.get_data())
    boundary = response.mimetype_params["boundary"]
    new_boundary = uuid.uuid4().hex

    def parts() -> Iterator[bytes]:
        for headers, body in iter_parts(stream.read, boundary):
            yield (f"--{new_boundary}\r\nContent-Type: {headers.get('content-type')}"
                   "\r\n\r\n").encode("ascii")
            yield view.part10(body)
            yield b"\r\n"
        yield f"--{new_boundary}--\r\n".encode("ascii")

    response.set_data(b"".join(parts()))
    response.headers["Content-Type"] = (
        f'multipart/related; type="application/dicom"; boundary={new_boundary}')
