"""Part-10 file framing: the file meta written for received datasets, and where the dataset
starts. Reading the dataset itself is :mod:`pacs.header`'s job.
"""

from __future__ import annotations

import struct

from pacs.errors import InvalidInstance

IMPLEMENTATION_CLASS_UID = "2.25.127797817886255796738790207916226343204"
IMPLEMENTATION_VERSION_NAME = "FILMLESS_PACS_01"

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}


def part10_header(
    *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_aet: str = ""
) -> bytes:
    """Preamble, ``DICM`` and the file meta group (PS3.10 7.1) for a dataset received as bytes.

    Written here, not by pydicom, because it runs once per received instance and only needs
    a handful of fixed elements; the dataset itself is appended untouched by the caller.

    Raises
    ------
    InvalidInstance
        If a value is not printable ASCII or too long for its VR (a hostile command set).
    """
    elements = [
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _uid_bytes(sop_class_uid)),
        _meta_element(0x0003, b"UI", _uid_bytes(sop_instance_uid)),
        _meta_element(0x0010, b"UI", _uid_bytes(transfer_syntax_uid)),
        _meta_element(0x0012, b"UI", _uid_bytes(IMPLEMENTATION_CLASS_UID)),
        _meta_element(0x0013, b"SH", _text_bytes(IMPLEMENTATION_VERSION_NAME, 16)),
    ]
    if source_aet.strip():
        elements.append(_meta_element(0x0016, b"AE", _text_bytes(source_aet.strip(), 16)))
    group = b"".join(elements)
    length = _meta_element(0x0000, b"UL", struct.pack("<I", len(group)))
    return b"\x00" * 128 + b"DICM" + length + group


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xI", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _uid_bytes(uid: str) -> bytes:
    raw = _text_bytes(uid, 64, pad=b"\x00")
    if not raw or raw.rstrip(b"\x00").strip(b"0123456789."):
        raise InvalidInstance(f"{uid[:64]!r} is not a UID")
    return raw


def _text_bytes(text: str, max_length: int, pad: bytes = b" ") -> bytes:
    if not text.isascii() or not text.isprintable() or len(text) > max_length:
        raise InvalidInstance(f"{text[:64]!r} is not a valid file meta value")
    raw = text.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def dataset_offset(data: bytes | memoryview) -> int:
    """Offset of the dataset in a Part-10 file: just past the file meta group (0002,xxxx).

    Raises
    ------
    InvalidInstance
        If there is no ``DICM`` prefix or the file meta is cut short.
    """
    if bytes(data[128:132]) != b"DICM":
        raise InvalidInstance("not a DICOM Part-10 file: no 'DICM' prefix after the preamble")
    offset, end = 132, len(data)
    # The file meta is always explicit VR little endian (PS3.10 7.1).
    while offset + 8 <= end and struct.unpack_from("<H", data, offset)[0] == 0x0002:
        if bytes(data[offset + 4 : offset + 6]) in _LONG_VRS:
            if offset + 12 > end:
                break
            offset += 12 + struct.unpack_from("<I", data, offset + 8)[0]
        else:
            offset += 8 + struct.unpack_from("<H", data, offset + 6)[0]
    if offset > end:
        raise InvalidInstance("truncated or malformed DICOM data: the file meta is cut short")
    return offset
