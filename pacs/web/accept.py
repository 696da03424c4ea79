"""The transfer syntax a WADO-RS ``Accept`` header asks for (PS3.18 8.7.3.5).

Media ranges are read in the order given (``q`` weights are not ranked); the first acceptable
one wins. Only two syntaxes are offered, since the archive sends what it stored or decodes it:
``*`` (each object as stored) and Explicit VR Little Endian, the default when a range names
none.
"""

from __future__ import annotations

from pydicom.uid import ExplicitVRLittleEndian

AS_STORED = "*"


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
        kind, *parameters = (part.strip() for part in media_range.split(";"))
        values = {}
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            values[name.strip().lower()] = value.strip().strip('"')
        if kind.lower() in ("*/*", "multipart/*"):
            return ExplicitVRLittleEndian
        if kind.lower() != "multipart/related":
            continue
        if values.get("type", part_type).lower() != part_type:
            continue
        syntax = values.get("transfer-syntax", ExplicitVRLittleEndian)
        if syntax in (AS_STORED, ExplicitVRLittleEndian):
            return syntax
    return None
