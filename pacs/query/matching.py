"""The matching types of PS3.4 C.2.2.2, one small class each, and how a key value selects one.

A key's value, as sent in a C-FIND identifier or a QIDO-RS parameter, becomes:

========================  ============================================  =====================
value                     matching                                      class
========================  ============================================  =====================
empty, or only ``*``      universal (C.2.2.2.3): no filter, return key  (none)
``""``                    empty value: the attribute is empty           :class:`EmptyValue`
``1.2.3\\1.2.4`` (UI)     list of UIDs (C.2.2.2.2)                      :class:`UidList`
``CT\\MR``                multiple values: any one of them matches      :class:`AnyOf`
``A-B``, ``-B``, ``A-``   range, for DA, TM, DT (C.2.2.2.5)             :class:`Range`
``Ngu*``, ``?an``         wild card (C.2.2.2.4), for text VRs           :class:`Wildcard`
anything else             single value (C.2.2.2.1)                      :class:`SingleValue`
a sequence of one item    sequence matching (C.2.2.2.6), on the item    :class:`SequenceMatch`
========================  ============================================  =====================

A single TM or DT value stands for every moment within its precision (``1015`` is 10:15:00
to 10:15:59.999999), and so does the upper bound of a range (``-1200`` includes 12:00:30).
When a date and its time (StudyDate and StudyTime, ...) are both ranges, they are matched as
one date-time range (:class:`DateTimeRange`, C.2.2.2.5.2). Legacy ``YYYY.MM.DD`` dates and
``HH:MM:SS`` times are accepted. Timezone offsets in DT values are not applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from pacs.errors import InvalidUID
from pacs.ingest import validate_uid
from pacs.query.errors import InvalidMatchValue
from pacs.query.keys import Key

#: VRs on which "*" and "?" are wild cards (PS3.4 C.2.2.2.4).
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
TEMPORAL_VRS = frozenset({"DA", "TM", "DT"})
#: Date and time keys matched together when both are ranges (PS3.4 C.2.2.2.5.2).
DATE_TIME_PAIRS = (
    ("PatientBirthDate", "PatientBirthTime"),
    ("StudyDate", "StudyTime"),
    ("SeriesDate", "SeriesTime"),
    ("PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"),
    ("ContentDate", "ContentTime"),
)
EMPTY_VALUE = '""'


@dataclass(frozen=True)
class SingleValue:
    """The attribute equals ``value`` (a TM or DT value: lies within its precision)."""

    keyword: str
    value: str | int


@dataclass(frozen=True)
class Wildcard:
    """The attribute matches ``pattern``: ``*`` is any run of characters, ``?`` any one."""

    keyword: str
    pattern: str


@dataclass(frozen=True)
class Range:
    """The DA, TM or DT attribute lies between ``start`` and ``end`` (inclusive, open if None).

    Bounds are in the stored form (``YYYYMMDD``, ``HHMMSS.FFFFFF``) with the precision sent.
    """

    keyword: str
    start: str | None
    end: str | None


@dataclass(frozen=True)
class UidList:
    """The UID attribute is one of ``uids``."""

    keyword: str
    uids: tuple[str, ...]


@dataclass(frozen=True)
class EmptyValue:
    """The attribute is absent or empty."""

    keyword: str


@dataclass(frozen=True)
class AnyOf:
    """At least one of ``alternatives`` (all on ``keyword``) matches."""

    keyword: str
    alternatives: tuple[SingleValue | Wildcard | Range, ...]


@dataclass(frozen=True)
class DateTimeRange:
    """A date and a time key matched as one range of moments (PS3.4 C.2.2.2.5.2)."""

    date: Range
    time: Range

    @property
    def keyword(self) -> str:
        """The date key, which names the pair."""
        return self.date.keyword


ItemFilter = SingleValue | Wildcard | Range | UidList | EmptyValue | AnyOf


@dataclass(frozen=True)
class SequenceMatch:
    """Sequence matching (PS3.4 C.2.2.2.6): an item of the sequence matches every filter.

    ``items`` filter the attributes of one item (their ``keyword`` is the item attribute's);
    without any, every row matches and the key only says what comes back. The items returned
    are those that match, holding only ``item_keys``, or every attribute if none is named.
    """

    keyword: str
    items: tuple[ItemFilter, ...] = ()
    item_keys: tuple[str, ...] = ()


Filter = (SingleValue | Wildcard | Range | UidList | EmptyValue | AnyOf | DateTimeRange
          | SequenceMatch)


def filter_keywords(item: Filter) -> tuple[str, ...]:
    """The keywords a filter constrains (two for a date-time pair)."""
    if isinstance(item, DateTimeRange):
        return (item.date.keyword, item.time.keyword)
    return (item.keyword,)


def parse_value(key: Key, value: str, *, uid_separators: str = "\\") -> Filter | None:
    """The filter a key value asks for, or None for universal matching.

    Parameters
    ----------
    key
        The key the value was sent for; its VR decides which matching types apply.
    value
        The value as text (a multi-valued element joined with backslashes).
    uid_separators
        Characters that separate UIDs of a list; QIDO-RS also allows a comma (PS3.18 8.3.4.1).

    Raises
    ------
    InvalidMatchValue
        If the value is malformed for the key (PS3.4 C.2.2.2).
    """
    text = value.strip(" \x00")
    if not text or set(text) == {"*"}:
        return None  # "*" alone is universal matching (PS3.4 C.2.2.2.4)
    if text == EMPTY_VALUE:
        return EmptyValue(key.keyword)
    if key.vr == "UI":
        return _uids(key.keyword, text, uid_separators)
    parts = [part.strip(" ") for part in text.split("\\") if part.strip(" ")]
    if any(set(part) == {"*"} for part in parts):
        return None  # one alternative already matches everything
    alternatives = tuple(_one_value(key, part) for part in parts)
    if len(alternatives) == 1:
        return alternatives[0]
    return AnyOf(key.keyword, alternatives)


def _uids(keyword: str, text: str, separators: str) -> SingleValue | UidList:
    for separator in separators[1:]:
        text = text.replace(separator, separators[0])
    uids = []
    for part in text.split(separators[0]):
        if "*" in part or "?" in part:
            raise InvalidMatchValue(f"{keyword} cannot be matched with wild cards", keyword)
        try:
            uids.append(validate_uid(part, keyword))
        except InvalidUID as exc:
            raise InvalidMatchValue(str(exc), keyword) from None
    if len(uids) == 1:
        return SingleValue(keyword, uids[0])
    return UidList(keyword, tuple(dict.fromkeys(uids)))


def _one_value(key: Key, text: str) -> SingleValue | Wildcard | Range:
    if key.vr in TEMPORAL_VRS:
        return _temporal(key.keyword, key.vr, text)
    if "*" in text or "?" in text:
        if key.vr not in WILDCARD_VRS:
            raise InvalidMatchValue(
                f"{key.keyword} ({key.vr}) cannot be matched with wild cards", key.keyword
            )
        return Wildcard(key.keyword, text)
    if key.integer:
        try:
            return SingleValue(key.keyword, int(text))
        except ValueError:
            raise InvalidMatchValue(
                f"{key.keyword} {text!r} is not an integer", key.keyword
            ) from None
    return SingleValue(key.keyword, text)


def _temporal(keyword: str, vr: str, text: str) -> SingleValue | Range:
    if "*" in text or "?" in text:
        raise InvalidMatchValue(
            f"{keyword} ({vr}) takes a value or a range, not wild cards", keyword
        )
    if "-" not in text or (vr == "DT" and _valid_bound(keyword, vr, text)):
        # A DT with a "-ZZXX" timezone offset is one value, not a range.
        return SingleValue(keyword, _moment(keyword, vr, text))
    splits = [
        (text[:dash], text[dash + 1:]) for dash, ch in enumerate(text) if ch == "-"
    ]
    # A DT may carry a "-ZZXX" offset, so several dashes are tried; exactly one split must
    # give two valid bounds (either may be open, not both).
    ranges = {
        (start, end)
        for start, end in splits
        if (start or end) and _valid_bound(keyword, vr, start) and _valid_bound(keyword, vr, end)
    }
    if len(ranges) != 1:
        raise InvalidMatchValue(
            f"{keyword} {text!r} is not a {vr} range (A-B, -B or A-)", keyword
        )
    ((start, end),) = ranges
    return Range(
        keyword,
        _moment(keyword, vr, start) if start else None,
        _moment(keyword, vr, end) if end else None,
    )


def _valid_bound(keyword: str, vr: str, text: str) -> bool:
    if not text:
        return True
    try:
        _moment(keyword, vr, text)
    except InvalidMatchValue:
        return False
    return True


_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")
_LEGACY_DA = re.compile(r"\d{4}\.\d{2}\.\d{2}")
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(\.\d{1,6})?)?)?")
_LEGACY_TM = re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?")
_DT = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?"
)


def _moment(keyword: str, vr: str, text: str) -> str:
    """``text`` as a stored DA, TM or DT value, checked; raises InvalidMatchValue."""
    if vr == "DA":
        value = text.replace(".", "") if _LEGACY_DA.fullmatch(text) else text
        match = _DA.fullmatch(value)
        if match and _is_date(*match.groups()):
            return value
    elif vr == "TM":
        value = text.replace(":", "") if _LEGACY_TM.fullmatch(text) else text
        if _is_time(value):
            return value
    else:
        match = _DT.fullmatch(text)
        if (
            match
            and _is_date(*match.groups()[:3])
            and _is_time(match.group(4) or "")
            and _is_offset(match.group(5) or "")
        ):
            # The offset is left out: stored values are compared as written.
            return text[: match.start(5)] if match.group(5) else text
    raise InvalidMatchValue(f"{keyword} {text!r} is not a valid {vr} value", keyword)


def _is_date(year: str, month: str | None, day: str | None) -> bool:
    try:
        date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return False
    return True


def _is_offset(text: str) -> bool:
    # "&ZZXX" from -1200 to +1400 (PS3.5 6.2), which also keeps "2026-2027" a range of years.
    if not text:
        return True
    minutes = int(text[1:3]) * 60 + int(text[3:5])
    return int(text[3:5]) < 60 and (minutes <= 14 * 60 if text[0] == "+" else minutes <= 12 * 60)


def _is_time(text: str) -> bool:
    if not text:
        return True
    match = _TM.fullmatch(text)
    if not match:
        return False
    hours, minutes, seconds, _ = match.groups()
    return int(hours) < 24 and int(minutes or 0) < 60 and int(seconds or 0) <= 60


def combine_date_time(filters: list[Filter]) -> list[Filter]:
    """Replace each date range whose time key is also a range with one :class:`DateTimeRange`.

    PS3.4 C.2.2.2.5.2: ``StudyDate=20260301-20260302`` with ``StudyTime=2200-0600`` means from
    1 March 22:00 to 2 March 06:00, not two separate conditions.
    """
    ranges = {item.keyword: item for item in filters if isinstance(item, Range)}
    pairs = {
        date_key: time_key for date_key, time_key in DATE_TIME_PAIRS
        if date_key in ranges and time_key in ranges
    }
    combined: list[Filter] = []
    for item in filters:
        if isinstance(item, Range) and item.keyword in pairs:
            combined.append(DateTimeRange(item, ranges[pairs[item.keyword]]))
        elif not (isinstance(item, Range) and item.keyword in pairs.values()):
            combined.append(item)
    return combined
