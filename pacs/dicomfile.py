"""Part-10 file framing: the file meta written for received datasets, where the dataset
starts, and whether the file is complete.

pydicom is tolerant by design: it reads a file whose last element is cut short and only warns
(through the process-wide, thread-unsafe warnings machinery). The archive must refuse such a
file instead of archiving half an image, so :func:`check_complete` walks the element headers
(tags and lengths only, never the values) and proves every length fits in the bytes received.
"""

from __future__ import annotations

import struct

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from pacs.errors import InvalidInstance

IMPLEMENTATION_CLASS_UID = "2.25.127797817886255796738790207916226343204"
IMPLEMENTATION_VERSION_NAME = "FILMLESS_PACS_01"

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
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
    """Offset of the dataset in a Part-10 file: just past the file meta group (0002,xxxx)."""
    if bytes(data[128:132]) != b"DICM":
        raise InvalidInstance("not a DICOM Part-10 file: no 'DICM' prefix after the preamble")
    walker = _Walker(memoryview(data), little=True, implicit=False)
    return walker.walk(132, len(data), group=0x0002)


def check_complete(data: bytes | memoryview, transfer_syntax_uid: str) -> None:
    """Raise :class:`InvalidInstance` unless every element of the file fits in ``data``.

    Deflated datasets are checked by the inflate step of the parser instead (a truncated
    deflate stream fails to inflate).
    """
    view = memoryview(data)
    start = dataset_offset(view)
    if transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        return
    implicit = transfer_syntax_uid == ImplicitVRLittleEndian
    if not implicit and len(view) >= start + 6 and not bytes(view[start + 4 : start + 6]).isupper():
        # pydicom would guess and read on; DCMTK and most peers cannot, so it is not archived.
        raise InvalidInstance(
            "the dataset is not encoded in its declared transfer syntax (explicit VR expected)"
        )
    walker = _Walker(view, little=transfer_syntax_uid != ExplicitVRBigEndian, implicit=implicit)
    walker.walk(start, len(view))


class _Walker:
    """Walks element headers, skipping values, checking every length against the bounds."""

    def __init__(self, data: memoryview, *, little: bool, implicit: bool) -> None:
        self.data = data
        self.implicit = implicit
        self.order = "<" if little else ">"

    def _fail(self, offset: int, what: str) -> InvalidInstance:
        return InvalidInstance(f"truncated or malformed DICOM data at byte {offset}: {what}")

    def _tag(self, offset: int, end: int) -> int:
        if offset + 8 > end:
            raise self._fail(offset, "element header cut short")
        group, element = struct.unpack_from(self.order + "HH", self.data, offset)
        return (group << 16) | element

    def walk(self, offset: int, end: int, *, group: int | None = None,
             stop_at: int | None = None) -> int:
        """Walk elements from ``offset``; return where the walk stopped."""
        while offset < end:
            if group is not None:
                if offset + 4 > end:
                    break
                if struct.unpack_from("<H", self.data, offset)[0] != group:
                    break
            tag = self._tag(offset, end)
            if tag == stop_at:
                return offset + 8
            offset = self._element(offset, end, tag)
        if stop_at is not None:
            raise self._fail(offset, "missing delimitation item")
        return offset

    def _element(self, offset: int, end: int, tag: int) -> int:
        if tag >> 16 == 0xFFFE:  # a stray item/delimiter: its length is 4 bytes, no VR
            length = struct.unpack_from(self.order + "I", self.data, offset + 4)[0]
            return offset + 8 + (0 if length == _UNDEFINED else length)
        vr = b""
        if self.implicit:
            length = struct.unpack_from(self.order + "I", self.data, offset + 4)[0]
            header = 8
        else:
            vr = bytes(self.data[offset + 4 : offset + 6])
            if vr in _LONG_VRS:
                if offset + 12 > end:
                    raise self._fail(offset, "element header cut short")
                length = struct.unpack_from(self.order + "I", self.data, offset + 8)[0]
                header = 12
            else:
                length = struct.unpack_from(self.order + "H", self.data, offset + 6)[0]
                header = 8
        value_start = offset + header
        if length == _UNDEFINED:
            if tag == 0x7FE00010 or vr in (b"OB", b"OW"):
                return self._items(value_start, end, encapsulated=True)
            if vr == b"UN":  # an undefined-length UN is a sequence in implicit VR (PS3.5 6.2.2)
                inner = _Walker(self.data, little=True, implicit=True)
                return inner._items(value_start, end, encapsulated=False)
            return self._items(value_start, end, encapsulated=False)
        if value_start + length > end:
            raise self._fail(
                offset,
                f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) claims {length} bytes, "
                f"only {end - value_start} remain",
            )
        return value_start + length

    def _items(self, offset: int, end: int, *, encapsulated: bool) -> int:
        """Walk the items of an undefined-length sequence or encapsulated pixel data."""
        while True:
            tag = self._tag(offset, end)
            length = struct.unpack_from(self.order + "I", self.data, offset + 4)[0]
            offset += 8
            if tag == _SEQUENCE_END:
                return offset
            if tag != _ITEM:
                raise self._fail(offset - 8, f"expected an item, found tag {tag:08X}")
            if length == _UNDEFINED and not encapsulated:
                offset = self.walk(offset, end, stop_at=_ITEM_END)
            elif offset + length > end:
                raise self._fail(offset - 8, f"item claims {length} bytes, only "
                                             f"{end - offset} remain")
            else:
                offset += length
