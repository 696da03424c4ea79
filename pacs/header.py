"""Reading a received header in one pass: completeness, and the dataset as DICOM JSON.

The ingest path needs three things from every instance: proof that the file is whole, the UIDs
and indexed attributes, and the header as DICOM JSON (PS3.18 Annex F) for metadata replies.
Building a pydicom :class:`~pydicom.dataset.Dataset` and then converting it costs several
milliseconds per CT header, most of the ingest CPU; :func:`read_header` instead walks the
element headers once with :mod:`struct`, checks every length against the bytes received, and
converts each value straight to its JSON form. pydicom still supplies the data dictionary
(VRs in implicit VR files) and the character-set decoding, so names in any
SpecificCharacterSet decode exactly as pydicom decodes them.

Rules, chosen to match DICOM and pydicom (tests compare the output with pydicom's own JSON on
pydicom's test corpus):

* binary values (OB, OD, OF, OL, OV, OW, UN) up to :data:`INLINE_LIMIT` bytes are inlined as
  base64; larger ones, and pixel data of any size, are not copied: the element gets a
  relative ``BulkDataURI`` (``bulkdata/<tag path>``, item numbers from 1 between the tags of
  a sequence) that the web layer resolves against the instance's URL;
* group lengths (gggg,0000) are left out (they describe an encoding, not the data);
* an explicit-VR ``UN`` of a known attribute (public, or private with a known creator) is read
  with the dictionary's VR, and an
  undefined-length ``UN`` as an implicit VR little endian sequence (PS3.5 6.2.2);
* an element whose value cannot be decoded is left out (the stored file still holds it) and
  reported in :attr:`Header.skipped`; a length that runs past the data refuses the file.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.valuerep import TEXT_VR_DELIMS, PersonName

from pacs.dicomfile import dataset_offset
from pacs.errors import InvalidInstance

INLINE_LIMIT = 1024
"""Binary values longer than this many bytes become bulk data references."""

PIXEL_DATA = 0x7FE00010
_PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})  # always bulk, whatever size
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_SPECIFIC_CHARACTER_SET = 0x00080005
_PIXEL_REPRESENTATION = 0x00280103

_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT",
                       "UV"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_ENCODED_TEXT_VRS = frozenset({"SH", "LO", "UC", "ST", "LT", "UT"})  # PN is decoded apart
_SINGLE_VALUED_TEXT = frozenset({"ST", "LT", "UT", "UR"})
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"})
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d",
                   "SV": "q", "UV": "Q"}
_DEFAULT_ENCODINGS = ("iso8859",)


@dataclass
class Header:
    """What :func:`read_header` found in a Part-10 file."""

    transfer_syntax_uid: str
    dataset: dict[str, Any]
    """The dataset as DICOM JSON (PS3.18 F.2), keyed by 8-digit upper-case hex tags."""
    skipped: list[str] = field(default_factory=list)
    """Tags (``GGGGEEEE``) of elements left out because their value could not be decoded."""
    pixel_data_offset: int | None = None
    """Where the top-level Pixel Data value starts in the file (after its element header,
    at its first item when encapsulated); None without pixel data, or when deflated (the
    offset would be in the inflated dataset, not in the stored file)."""
    pixel_data_length: int | None = None
    """The Pixel Data value's length in bytes; None when encapsulated (undefined length)."""

    def first(self, tag: int) -> Any:
        """The first value of a top-level attribute, or None when absent or empty."""
        return first_value(self.dataset, tag)

    def uid(self, tag: int) -> str:
        """A UID attribute as text; empty when absent."""
        value = self.first(tag)
        return value if isinstance(value, str) else ""


def first_value(dataset: dict[str, Any], tag: int) -> Any:
    """The first value of a top-level attribute of a DICOM JSON dataset, or None when absent
    or empty."""
    element = dataset.get(f"{tag:08X}")
    values = element.get("Value") if element else None
    return values[0] if values else None


def read_header(data: bytes | memoryview) -> Header:
    """Walk a Part-10 file once: check it is complete and convert its dataset to DICOM JSON.

    Parameters
    ----------
    data
        The whole file: preamble, ``DICM``, file meta and dataset.

    Returns
    -------
    Header
        The transfer syntax from the file meta and the dataset as DICOM JSON.

    Raises
    ------
    InvalidInstance
        If the file is not Part-10, has no transfer syntax, is not encoded in the syntax it
        declares, or any length runs past the end of the data (a truncated transfer).
    """
    view = memoryview(data)
    start = dataset_offset(view)
    meta, _ = _Reader(view, little=True, implicit=False).dataset(132, start, "")
    transfer_syntax = _first_text(meta.get("00020010"))
    if not transfer_syntax:
        raise InvalidInstance("the file meta has no TransferSyntaxUID (0002,0010)")
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        try:
            view = memoryview(zlib.decompressobj(-zlib.MAX_WBITS).decompress(view[start:]))
        except zlib.error as exc:
            raise InvalidInstance(f"the deflated dataset does not inflate: {exc}") from exc
        start = 0
    implicit = transfer_syntax == ImplicitVRLittleEndian
    if not implicit and len(view) >= start + 6 and not bytes(view[start + 4 : start + 6]).isupper():
        # pydicom would guess and read on; DCMTK and most peers cannot, so it is not archived.
        raise InvalidInstance(
            "the dataset is not encoded in its declared transfer syntax (explicit VR expected)"
        )
    reader = _Reader(view, little=transfer_syntax != ExplicitVRBigEndian, implicit=implicit)
    dataset, _ = reader.dataset(start, len(view), "")
    header = Header(transfer_syntax, dataset, reader.skipped)
    if reader.pixel_data is not None and transfer_syntax != DeflatedExplicitVRLittleEndian:
        header.pixel_data_offset, header.pixel_data_length = reader.pixel_data
    return header


def _first_text(element: dict[str, Any] | None) -> str:
    values = element.get("Value") if element else None
    return values[0] if values and isinstance(values[0], str) else ""


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str:
    if tag & 0xFFFF == 0:
        return "UL"
    if tag >> 16 & 1:  # private: no public dictionary entry
        return "UN"
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def _private_vr(tag: int, creators: dict[int, str]) -> str:
    number = tag & 0xFFFF
    if number == 0:
        return "UL"
    if 0x10 <= number <= 0xFF:
        return "LO"  # a private creator
    creator = creators.get(tag & 0xFFFFFF00)
    if not creator:
        return "UN"
    try:
        return private_dictionary_VR(tag, creator)
    except KeyError:
        return "UN"


class _Reader:
    """One walk over a dataset's elements; values converted as they are met."""

    def __init__(self, data: memoryview, *, little: bool, implicit: bool) -> None:
        self.data = data
        self.implicit = implicit
        self.order = "<" if little else ">"
        self._tag = struct.Struct(self.order + "HH").unpack_from
        self._u16 = struct.Struct(self.order + "H").unpack_from
        self._u32 = struct.Struct(self.order + "I").unpack_from
        self.pixel_representation = 0
        self.skipped: list[str] = []
        self.pixel_data: tuple[int, int | None] | None = None  # (value offset, length)

    def _fail(self, offset: int, what: str) -> InvalidInstance:
        return InvalidInstance(f"truncated or malformed DICOM data at byte {offset}: {what}")

    def dataset(
        self,
        offset: int,
        end: int,
        path: str,
        encodings: tuple[str, ...] = _DEFAULT_ENCODINGS,
        stop_at: int | None = None,
    ) -> tuple[dict[str, Any], int]:
        """Convert elements from ``offset`` to ``end`` (or to the ``stop_at`` delimiter)."""
        data = self.data
        out: dict[str, Any] = {}
        creators: dict[int, str] = {}  # private block (gggg,xx00) -> its creator, for VRs
        while offset < end:
            if offset + 8 > end:
                raise self._fail(offset, "element header cut short")
            group, number = self._tag(data, offset)
            tag = group << 16 | number
            if tag == stop_at:
                return out, offset + 8
            if group == 0xFFFE:  # a stray item or delimiter: no VR, a 4-byte length
                length = self._u32(data, offset + 4)[0]
                offset += 8 + (0 if length == _UNDEFINED else length)
                continue
            if self.implicit:
                vr = _dictionary_vr(tag) if group & 1 == 0 else _private_vr(tag, creators)
                length = self._u32(data, offset + 4)[0]
                offset += 8
            else:
                vr = bytes(data[offset + 4 : offset + 6]).decode("latin-1")
                if vr in _LONG_VRS:
                    if offset + 12 > end:
                        raise self._fail(offset, "element header cut short")
                    length = self._u32(data, offset + 8)[0]
                    offset += 12
                else:
                    length = self._u16(data, offset + 6)[0]
                    offset += 8
            key = f"{tag:08X}"
            if tag == PIXEL_DATA and not path:
                self.pixel_data = (offset, None if length == _UNDEFINED else length)
            if length == _UNDEFINED:
                offset = self._undefined_length(out, key, tag, vr, offset, end, path, encodings)
                continue
            value_end = offset + length
            if value_end > end:
                raise self._fail(
                    offset, f"element ({group:04X},{number:04X}) claims {length} bytes, "
                            f"only {end - offset} remain"
                )
            if number != 0:  # group lengths describe an encoding, not the data
                if vr == "UN":  # a known attribute sent as UN is read as known (PS3.5 6.2.2)
                    vr = _dictionary_vr(tag) if group & 1 == 0 else _private_vr(tag, creators)
                    if vr == "SQ":
                        out[key] = self._defined_sequence(
                            offset, value_end, f"{path}{key}/", encodings, implicit=True)
                        offset = value_end
                        continue
                if vr == "SQ":
                    out[key] = self._defined_sequence(offset, value_end, f"{path}{key}/",
                                                      encodings)
                else:
                    try:
                        out[key] = self._element(tag, vr, data[offset:value_end], path,
                                                 encodings)
                    except (ValueError, LookupError, struct.error) as exc:
                        self.skipped.append(f"{path}{key}: {exc}")
                    else:
                        if group & 1 and 0x10 <= number <= 0xFF:
                            creators[group << 16 | number << 8] = _first_text(out[key])
                        elif tag == _SPECIFIC_CHARACTER_SET:
                            encodings = _encodings(out[key])
                        elif tag == _PIXEL_REPRESENTATION and not path:
                            self.pixel_representation = _first_number(out[key])
            offset = value_end
        if stop_at is not None:
            raise self._fail(offset, "missing delimitation item")
        return out, offset

    def _undefined_length(self, out: dict[str, Any], key: str, tag: int, vr: str, offset: int,
                          end: int, path: str, encodings: tuple[str, ...]) -> int:
        if tag == PIXEL_DATA or vr in ("OB", "OW", "OB or OW"):
            out[key] = {"vr": vr if vr in ("OB", "OW") else "OB",
                        "BulkDataURI": f"bulkdata/{path}{key}"}
            return self._skip_fragments(offset, end)
        nested = self
        if vr == "UN":  # an undefined-length UN is a sequence in implicit VR (PS3.5 6.2.2)
            nested = _Reader(self.data, little=True, implicit=True)
            nested.skipped = self.skipped
        items: list[dict[str, Any]] = []
        while True:
            tag, length, offset = nested._item_header(offset, end)
            if tag == _SEQUENCE_END:
                out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                return offset
            item, offset = nested._item(offset, end, length,
                                        f"{path}{key}/{len(items) + 1}/", encodings)
            items.append(item)

    def _defined_sequence(self, offset: int, end: int, path: str, encodings: tuple[str, ...],
                          *, implicit: bool = False) -> dict[str, Any]:
        reader = self
        if implicit and not self.implicit:
            reader = _Reader(self.data, little=True, implicit=True)
            reader.skipped = self.skipped
        items: list[dict[str, Any]] = []
        while offset < end:
            tag, length, offset = reader._item_header(offset, end)
            if tag == _SEQUENCE_END:
                break
            item, offset = reader._item(offset, end, length, f"{path}{len(items) + 1}/",
                                        encodings)
            items.append(item)
        return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}

    def _item(self, offset: int, end: int, length: int, path: str,
              encodings: tuple[str, ...]) -> tuple[dict[str, Any], int]:
        """One sequence item whose header ends at ``offset``: its dataset and where it ends."""
        if length == _UNDEFINED:
            return self.dataset(offset, end, path, encodings, _ITEM_END)
        if offset + length > end:
            raise self._fail(offset - 8, f"item claims {length} bytes, only "
                                         f"{end - offset} remain")
        return self.dataset(offset, offset + length, path, encodings)

    def _item_header(self, offset: int, end: int) -> tuple[int, int, int]:
        if offset + 8 > end:
            raise self._fail(offset, "item header cut short")
        group, number = self._tag(self.data, offset)
        tag = group << 16 | number
        if tag not in (_ITEM, _SEQUENCE_END):
            raise self._fail(offset, f"expected an item, found tag {tag:08X}")
        return tag, self._u32(self.data, offset + 4)[0], offset + 8

    def _skip_fragments(self, offset: int, end: int) -> int:
        while True:
            tag, length, offset = self._item_header(offset, end)
            if tag == _SEQUENCE_END:
                return offset
            if offset + length > end:
                raise self._fail(offset - 8, f"fragment claims {length} bytes, only "
                                             f"{end - offset} remain")
            offset += length

    def _element(self, tag: int, vr: str, raw: memoryview, path: str,
                 encodings: tuple[str, ...]) -> dict[str, Any]:
        if " or " in vr:
            vr = self._resolve_ambiguous(vr, len(raw))
        if vr in _BINARY_VRS:
            if len(raw) > INLINE_LIMIT or tag in _PIXEL_DATA_TAGS:
                return {"vr": vr, "BulkDataURI": f"bulkdata/{path}{tag:08X}"}
            if not raw:
                return {"vr": vr}
            return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode("ascii")}
        values = self._values(vr, bytes(raw), encodings)
        return {"vr": vr, "Value": values} if values else {"vr": vr}

    def _resolve_ambiguous(self, vr: str, length: int) -> str:
        # Implicit VR only: the dictionary lists alternatives that the data decides.
        if vr == "US or SS":
            return "SS" if self.pixel_representation == 1 else "US"
        if vr == "US or OW":
            return "US" if length <= 6 else "OW"
        return "OW" if "OW" in vr else vr.split(" or ")[0]

    def _values(self, vr: str, raw: bytes, encodings: tuple[str, ...]) -> list[Any]:
        number_format = _NUMBER_FORMATS.get(vr)
        if number_format is not None:
            count, rest = divmod(len(raw), struct.calcsize(number_format))
            if rest:
                raise ValueError(f"{vr} value of {len(raw)} bytes")
            numbers = list(struct.unpack(f"{self.order}{count}{number_format}", raw))
            return [_finite(n) for n in numbers] if vr in ("FL", "FD") else numbers
        if vr == "AT":
            count, rest = divmod(len(raw), 4)
            if rest:
                raise ValueError(f"AT value of {len(raw)} bytes")
            pairs = struct.unpack(f"{self.order}{count * 2}H", raw)
            return [f"{pairs[i]:04X}{pairs[i + 1]:04X}" for i in range(0, len(pairs), 2)]
        if vr == "PN":
            return _person_names(raw, encodings)
        if vr in _ENCODED_TEXT_VRS:
            text = decode_bytes(raw, list(encodings), TEXT_VR_DELIMS)
        elif vr in _ASCII_VRS or vr in ("IS", "DS"):
            text = raw.decode("ascii")
        else:
            raise ValueError(f"unknown VR {vr!r}")
        if vr in _SINGLE_VALUED_TEXT:
            text = text.rstrip("\x00 ")
            return [text] if text else []
        parts = [_strip(vr, part) for part in text.split("\\")]
        if vr == "IS":
            return [_integer(part) if part else None for part in parts] if any(parts) else []
        if vr == "DS":
            return [_decimal(part) if part else None for part in parts] if any(parts) else []
        if len(parts) == 1:
            return parts if parts[0] else []
        return [part if part else None for part in parts]


def _strip(vr: str, text: str) -> str:
    if vr == "UI":
        return text.rstrip("\x00 ")
    if vr in _ENCODED_TEXT_VRS:
        return text.rstrip("\x00 ")
    return text.strip("\x00 ")


def _integer(text: str) -> int:
    value = int(text)
    if not -(2**31) <= value < 2**31:
        raise ValueError(f"IS value {text!r} out of range")
    return value


def _decimal(text: str) -> float | int:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"DS value {text!r} is not finite")
    return value


def _finite(value: float) -> float | str:
    # JSON has no NaN or infinity; PS3.18 F.2.3.1 spells them as strings.
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _person_names(raw: bytes, encodings: tuple[str, ...]) -> list[dict[str, str] | None]:
    names: list[dict[str, str] | None] = []
    for part in raw.rstrip(b"\x00 ").split(b"\\"):
        if not part.strip(b" "):
            names.append(None)
            continue
        person = PersonName(part, list(encodings))
        groups = {"Alphabetic": person.alphabetic}
        if len(person.components) > 1:
            groups["Ideographic"] = person.ideographic
        if len(person.components) > 2:
            groups["Phonetic"] = person.phonetic
        names.append(groups)
    return [] if names == [None] else names


def _encodings(element: dict[str, Any]) -> tuple[str, ...]:
    terms = [term or "" for term in element.get("Value", [])]
    return tuple(convert_encodings(terms)) if terms else _DEFAULT_ENCODINGS


def _first_number(element: dict[str, Any]) -> int:
    values = element.get("Value")
    return int(values[0]) if values and isinstance(values[0], int) else 0
