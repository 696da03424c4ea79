"""The representation a WADO-RS ``Accept`` header asks for (PS3.18 8.7.3.5).

Media ranges are read in the order given (``q`` weights are not ranked); the first acceptable
one wins. Instances are offered in two syntaxes, since the archive sends what it stored or
decodes it: ``*`` (each object as stored) and Explicit VR Little Endian, the default when a
range names none. Frames are offered in those and, for native grayscale frames, as HTJ2K
lossless (:mod:`pacs.renditions`), in a multipart body or, for one frame, as a single part
(``application/octet-stream`` or ``image/jphc``, which byte ranges can cut).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian

from pacs.renditions import HTJ2K_LOSSLESS_RPCL, RENDITION_SYNTAXES

AS_STORED = "*"
#: PS3.18 Table 8.7.3-5: the single-part media type of HTJ2K pixel data.
HTJ2K_MEDIA_TYPE = "image/jphc"


def requested_syntax(accept: str, part_type: str) -> str | None:
    """``*``, Explicit VR Little Endian, or None if no media range can be served.

    Parameters
    ----------
    accept
        The request's Accept header ("" when absent: the default syntax).
    part_type
        The media type of the parts, as the ``type`` parameter of ``multipart/related``
        names it: ``application/dicom`` for instances, ``application/octet-stream`` for
        frames.
    """
    if not accept.strip():
        return ExplicitVRLittleEndian
    for media_range in accept.split(","):
        kind, values = _media_range(media_range)
        if kind in ("*/*", "multipart/*"):
            return ExplicitVRLittleEndian
        if kind != "multipart/related":
            continue
        if values.get("type", part_type).lower() != part_type:
            continue
        syntax = values.get("transfer-syntax", ExplicitVRLittleEndian)
        if syntax in (AS_STORED, ExplicitVRLittleEndian):
            return syntax
    return None


@dataclass(frozen=True)
class FrameChoice:
    """One acceptable representation of frames: a multipart body or one single part."""

    syntax: str
    """``*``, Explicit VR Little Endian or an HTJ2K lossless syntax."""
    single_part: bool
    media_type: str = "application/octet-stream"


def frame_choices(accept: str) -> list[FrameChoice]:
    """Every representation of frames the Accept value allows, in the client's order.

    Empty when none can be served (a 406). An empty Accept, ``*/*`` or ``multipart/*`` is
    the multipart default, uncompressed.
    """
    if not accept.strip():
        return [FrameChoice(ExplicitVRLittleEndian, single_part=False)]
    choices = []
    offered = (AS_STORED, ExplicitVRLittleEndian, *RENDITION_SYNTAXES)
    for media_range in accept.split(","):
        kind, values = _media_range(media_range)
        if kind in ("*/*", "multipart/*"):
            choices.append(FrameChoice(ExplicitVRLittleEndian, single_part=False))
        elif kind == "multipart/related":
            if values.get("type", "application/octet-stream").lower() != \
                    "application/octet-stream":
                continue
            syntax = values.get("transfer-syntax", ExplicitVRLittleEndian)
            if syntax in offered:
                choices.append(FrameChoice(syntax, single_part=False))
        elif kind == "application/octet-stream":
            syntax = values.get("transfer-syntax", ExplicitVRLittleEndian)
            if syntax in offered:
                choices.append(FrameChoice(syntax, single_part=True))
        elif kind == HTJ2K_MEDIA_TYPE:
            syntax = values.get("transfer-syntax", HTJ2K_LOSSLESS_RPCL)
            if syntax in RENDITION_SYNTAXES:
                choices.append(FrameChoice(syntax, single_part=True, media_type=kind))
    return choices


def _media_range(media_range: str) -> tuple[str, dict[str, str]]:
    kind, *parameters = (part.strip() for part in media_range.split(";"))
    values = {}
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        values[name.strip().lower()] = value.strip().strip('"')
    return kind.lower(), values
