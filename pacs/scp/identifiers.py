"""C-FIND response identifiers encoded straight from index rows.

A study list answer can hold a thousand matches. Building a pydicom ``Dataset`` for each,
then having pydicom encode it, cost ~1 ms per match (a ``DataElement`` per key, the value
converted to its VR's class, validated, converted back); the bytes themselves are a few
hundred. :class:`IdentifierEncoder` works out each key's tag, VR and element header once per
query, and per match only encodes the values.

It writes what pydicom would write for :func:`pacs.query.to_dataset`'s dataset, byte for
byte (``tests/test_scp_identifiers.py`` compares them): elements in tag order, text padded
to an even length (UIDs with NUL, the rest with a space), an empty element where the index
holds nothing, an empty sequence for a sequence key, and Specific Character Set
``ISO_IR 192`` with UTF-8 text when any value is not ASCII. A value the fast path does not
cover (a number stored as text that is not a valid IS/DS, a value of a binary VR other than
an integer) is encoded by pydicom, so the result is the same either way.

Only Little Endian transfer syntaxes, implicit or explicit VR, are encoded here; the C-FIND
SCP hands datasets to pydicom for the others (Explicit VR Big Endian, Deflated).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VM, tag_for_keyword
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element

from pacs.query import UTF8, element_for, has_non_ascii
from pacs.query.keys import vr_of

#: VRs whose values are text, encoded as they are stored.
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
#: VRs with a 4-byte length in Explicit VR (PS3.5 7.1.2); the rest have 2 bytes.
_LONG_LENGTH_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_INTEGER_FORMATS = {"US": struct.Struct("<H"), "SS": struct.Struct("<h"),
                    "UL": struct.Struct("<L"), "SL": struct.Struct("<l")}
#: Numbers as text that pydicom's IS and DS keep exactly as written.
_PLAIN_IS = re.compile(r"[+-]?[0-9]{1,12}")
_PLAIN_DS = re.compile(r"[+-]?[0-9]{1,8}(\.[0-9]{1,6})?")
_SPECIFIC_CHARACTER_SET = 0x00080005
_UL = struct.Struct("<L")
_US = struct.Struct("<H")


class _Key:
    """One element of every identifier: its tag, VR and the start of its header."""

    __slots__ = ("fixed", "keyword", "length", "multi_valued", "pad", "prefix", "tag", "text",
                 "vr")

    def __init__(self, keyword: str, tag: int, vr: str, implicit_vr: bool) -> None:
        self.keyword = keyword
        self.tag = tag
        self.vr = vr
        self.text = vr in _TEXT_VRS
        self.pad = b"\x00" if vr == "UI" else b" "
        self.multi_valued = dictionary_VM(tag) != "1"
        self.fixed: bytes | None = None  # the whole element, the same in every identifier
        tag_bytes = _US.pack(tag >> 16) + _US.pack(tag & 0xFFFF)
        if implicit_vr:
            self.prefix, self.length = tag_bytes, _UL
        elif vr in _LONG_LENGTH_VRS:
            self.prefix, self.length = tag_bytes + vr.encode("ascii") + b"\x00\x00", _UL
        else:
            self.prefix, self.length = tag_bytes + vr.encode("ascii"), _US

    def element(self, raw: bytes) -> bytes:
        """The element with ``raw`` as its value (already of even length)."""
        return self.prefix + self.length.pack(len(raw)) + raw

    def text_element(self, value: str) -> bytes:
        """The element with the text ``value``, UTF-8, padded to an even length."""
        raw = value.encode("utf-8")
        if len(raw) & 1:
            raw += self.pad
        return self.prefix + self.length.pack(len(raw)) + raw


class IdentifierEncoder:
    """Encodes the rows of one query as C-FIND response identifiers.

    Parameters
    ----------
    return_keys
        The query's return keys (DICOM keywords); a row may lack any of them.
    fixed
        Keys with the same value in every identifier, added by the DIMSE edge
        (``{"QueryRetrieveLevel": "STUDY", "RetrieveAETitle": "PACS"}``, ASCII); they replace
        a return key of the same name.
    implicit_vr
        Implicit VR Little Endian if true, else Explicit VR Little Endian.
    """

    def __init__(self, return_keys: Iterable[str], fixed: Mapping[str, str], *,
                 implicit_vr: bool) -> None:
        self.implicit_vr = implicit_vr
        keys: dict[int, _Key] = {}
        for keyword in [*return_keys, *fixed]:
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"{keyword!r} is not a DICOM keyword")
            keys[tag] = _Key(keyword, tag, vr_of(keyword), implicit_vr)
        for keyword, value in fixed.items():
            key = keys[tag_for_keyword(keyword)]  # type: ignore[index]
            key.fixed = key.text_element(value)
        keys.pop(_SPECIFIC_CHARACTER_SET, None)  # decided per identifier, from its values
        self._keys = [keys[tag] for tag in sorted(keys)]
        charset = _Key("SpecificCharacterSet", _SPECIFIC_CHARACTER_SET, "CS", implicit_vr)
        self._charset_element = charset.text_element(UTF8)
        self._charset_index = sum(1 for key in self._keys if key.tag < _SPECIFIC_CHARACTER_SET)

    def encode(self, row: Mapping[str, Any]) -> bytes:
        """One identifier: every key, with the row's value where it has one.

        Parameters
        ----------
        row
            Values by keyword, as :func:`pacs.query.run_query` returns them.

        Returns
        -------
        bytes
            The identifier, in the transfer syntax given at construction.
        """
        parts = []
        utf8 = False
        get = row.get
        for key in self._keys:
            if key.fixed is not None:
                parts.append(key.fixed)
                continue
            value = get(key.keyword)
            if type(value) is str and key.text and value:
                # Text is UTF-8 throughout: identical to ASCII unless a value is not ASCII,
                # and then the identifier says ISO_IR 192.
                utf8 = utf8 or not value.isascii()
                parts.append(key.text_element(value))
            elif value is None or value == "" or (key.vr == "SQ" and not value):
                parts.append(key.element(b""))
            else:
                utf8 = utf8 or has_non_ascii(value)
                parts.append(self._element(key, value))
        if utf8:
            parts.insert(self._charset_index, self._charset_element)
        return b"".join(parts)

    def _element(self, key: _Key, value: Any) -> bytes:
        """A value that is not plain text: a number, as text or as an integer."""
        vr = key.vr
        if isinstance(value, str):
            if vr == "IS" and _plain(_PLAIN_IS, value, key.multi_valued):
                return key.text_element(value)
            if vr == "DS" and _plain(_PLAIN_DS, value, key.multi_valued):
                return key.text_element(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            if vr == "IS":
                return key.text_element(str(value))
            packer = _INTEGER_FORMATS.get(vr)
            if packer is not None:
                try:
                    return key.element(packer.pack(value))
                except struct.error:
                    pass  # out of the VR's range: pydicom decides
        return self._by_pydicom(key, value)

    def _by_pydicom(self, key: _Key, value: Any) -> bytes:
        """The element as pydicom writes :func:`pacs.query.to_dataset`'s element."""
        out = DicomBytesIO()
        out.is_little_endian = True
        out.is_implicit_VR = self.implicit_vr
        write_data_element(out, element_for(key.keyword, value), convert_encodings([UTF8]))
        return out.getvalue()


def _plain(pattern: re.Pattern[str], value: str, multi_valued: bool) -> bool:
    parts = value.split("\\") if multi_valued else [value]
    return all(pattern.fullmatch(part) for part in parts)
