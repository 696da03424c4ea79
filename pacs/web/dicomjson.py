"""Query results as DICOM JSON (PS3.18 Annex F), straight from the index rows.

Each attribute is ``"GGGGEEEE": {"vr": VR, "Value": [...]}``, with the VR from pydicom's
dictionary; an attribute the index has no value for is ``{"vr": VR}`` (PS3.18 F.2.5). Person
names are objects of their component groups (``{"Alphabetic": "Nguyễn^Văn An"}``, F.2.2);
IS, DS and the binary numbers are JSON numbers (F.2.3); text of several values is split at
backslashes; a sequence's items are objects of their own. Text stays Unicode: the response is
UTF-8, so no Specific Character Set is needed.

A value that cannot take its VR's JSON form (an IS that is not a number) is left out rather
than sent as something a strict client would refuse.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.datadict import dictionary_VM, tag_for_keyword

from pacs.query.keys import vr_of

#: The media type of DICOM JSON (PS3.18 Annex F).
DICOM_JSON = "application/dicom+json"
_PERSON_NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_INTEGER_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
_DECIMAL_VRS = frozenset({"DS", "FL", "FD"})


def to_dicom_json(row: Mapping[str, Any], keywords: Iterable[str]) -> dict[str, Any]:
    """One result as a DICOM JSON object of ``keywords``, in tag order.

    Parameters
    ----------
    row
        Values by keyword, as :func:`pacs.query.run_query` returns them (a sequence's value
        is a list of item dicts).
    keywords
        The attributes to include (the query's return keys and any the edge adds).

    Returns
    -------
    dict
        ``{"GGGGEEEE": {"vr": ..., "Value": [...]}}``.
    """
    tagged = sorted((tag, keyword) for keyword in keywords
                    if (tag := tag_for_keyword(keyword)) is not None)
    return {f"{tag:08X}": attribute(keyword, row.get(keyword)) for tag, keyword in tagged}


def attribute(keyword: str, value: Any) -> dict[str, Any]:
    """The DICOM JSON of one attribute (``{"vr": ...}`` alone when it has no value)."""
    vr = vr_of(keyword)
    values = _values(keyword, vr, value)
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def _values(keyword: str, vr: str, value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if vr == "SQ":
        return [to_dicom_json(item, item.keys()) for item in value or ()]
    if not isinstance(value, str):
        return _numbers(vr, [value])
    parts = value.split("\\") if dictionary_VM(keyword) != "1" else [value]
    if vr == "PN":
        return [_person_name(part) for part in parts]
    if vr in _INTEGER_VRS or vr in _DECIMAL_VRS:
        return _numbers(vr, parts)
    return parts


def _person_name(text: str) -> dict[str, str]:
    groups = text.split("=")
    return {name: group for name, group in zip(_PERSON_NAME_GROUPS, groups, strict=False)
            if group}


def _numbers(vr: str, parts: list[Any]) -> list[Any]:
    """The values as JSON numbers, or none at all if one of them is not a number."""
    numbers: list[Any] = []
    for part in parts:
        try:
            if vr in _INTEGER_VRS:
                numbers.append(int(str(part).strip()))
            else:
                number = float(str(part).strip())
                if not math.isfinite(number):
                    return []
                numbers.append(int(number) if number.is_integer() else number)
        except ValueError:
            return []
    return numbers
