"""The query object, and the only two places where query syntax is parsed.

:meth:`Query.from_identifier` reads a C-FIND (or C-MOVE/C-GET) identifier and
:meth:`Query.from_qido` reads QIDO-RS parameters; both give the same :class:`Query`, which
:func:`pacs.query.run_query` executes. Keys the index does not hold are still returned (empty),
and a matching value on such a key is recorded in :attr:`Query.ignored` rather than refused, as
PS3.4 C.2.2.1 and PS3.18 8.3.4 allow, so each edge can warn about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from pacs.query.errors import (
    InvalidKey,
    InvalidLevel,
    InvalidMatchValue,
    InvalidParameter,
    MissingUniqueKey,
)
from pacs.query.keys import (
    Key,
    Level,
    Model,
    find_key,
    item_key,
    keys_at,
    keyword_of,
    lowest_level_of,
    vr_of,
)
from pacs.query.matching import (
    DateTimeRange,
    Filter,
    SequenceMatch,
    SingleValue,
    UidList,
    combine_date_time,
    filter_keywords,
    parse_value,
)

#: Identifier elements that say how to query rather than what to match.
_NOT_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})
#: A sequence key's value: its item's keys with their values (C.2.2.2.6); an empty tuple
#: asks for every item whole.
ItemEntries = tuple[tuple[str, str | None], ...]
#: A key as sent: its keyword and value (None: return key only; a tuple: a sequence's item).
Entry = tuple[str, str | ItemEntries | None]

#: QIDO-RS parameters that are not matching keys (PS3.18 8.3.4, 8.3.3.1).
_QIDO_OPTIONS = frozenset({"limit", "offset", "fuzzymatching", "includefield"})
_QIDO_IGNORED = frozenset({"accept", "charset"})

#: The attributes QIDO-RS returns by default at each level (PS3.18 Tables 10.6.3-3 to -5),
#: less RetrieveURL and SpecificCharacterSet, which the edge and the dataset builder add.
QIDO_DEFAULT_KEYS: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    ),
    Level.STUDY: (
        "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
        "ModalitiesInStudy", "ReferringPhysicianName", "TimezoneOffsetFromUTC",
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
        "StudyID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: (
        "StudyInstanceUID", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription",
        "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances",
        "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
        "RequestAttributesSequence",
    ),
    Level.IMAGE: (
        "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID",
        "InstanceAvailability", "TimezoneOffsetFromUTC", "InstanceNumber", "Rows", "Columns",
        "BitsAllocated", "NumberOfFrames",
    ),
}


@dataclass(frozen=True)
class Query:
    """One query of the archive, whichever protocol it came from.

    Attributes
    ----------
    level
        The level of the entities returned.
    filters
        The matching keys; an entity matches when every filter does. Universal matching is
        the absence of a filter.
    return_keys
        Keywords of the attributes each result carries, empty when the index does not hold
        them; the unique key of ``level`` comes first.
    limit, offset
        At most ``limit`` results (None: no limit), after skipping ``offset``.
    fuzzy
        Person names match without regard to case and accents.
    model
        The information model, which decides the levels available.
    ignored
        Keys sent with a matching value that the index cannot match on (returned empty).

    Raises
    ------
    InvalidLevel, InvalidKey, InvalidParameter
        If the level is not in the model, a filter's key is not held at the level, a return
        key is not a DICOM keyword, or ``limit``/``offset`` is negative.
    """

    level: Level
    filters: tuple[Filter, ...] = ()
    return_keys: tuple[str, ...] = ()
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False
    model: Model = Model.STUDY_ROOT
    ignored: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_level(self.level, self.model)
        if self.limit is not None and self.limit < 0:
            raise InvalidParameter(f"limit must not be negative, not {self.limit}")
        if self.offset < 0:
            raise InvalidParameter(f"offset must not be negative, not {self.offset}")
        for item in self.filters:
            for keyword in filter_keywords(item):
                if find_key(keyword, self.level) is None:
                    raise InvalidKey(
                        f"{keyword} cannot be matched in a {self.level.value} query", keyword
                    )
        for keyword in self.return_keys:
            if tag_for_keyword(keyword) is None:
                raise InvalidKey(f"{keyword!r} is not a DICOM keyword", keyword)

    @classmethod
    def from_identifier(
        cls,
        identifier: Dataset,
        model: Model = Model.STUDY_ROOT,
        *,
        fuzzy: bool = False,
        relational: bool = False,
        combine_datetime: bool = True,
    ) -> Query:
        """The query a C-FIND, C-MOVE or C-GET identifier asks for (PS3.4 C.4.1.1.3).

        Every key of the identifier is a return key; a key with a value is also a matching
        key. Text has already been decoded by pydicom with the identifier's Specific
        Character Set.

        Parameters
        ----------
        identifier
            The request identifier, with QueryRetrieveLevel (0008,0052).
        model
            The information model of the SOP class the request came in
            (:meth:`Model.for_sop_class`).
        fuzzy
            Fuzzy semantic matching of person names (a setting, or extended negotiation).
        relational
            Relational queries were negotiated (PS3.4 C.4.1.2.2), so the unique keys of the
            levels above need not be given.
        combine_datetime
            Match date and time range pairs as one date-time range (extended negotiation;
            PS3.4 C.2.2.2.5).

        Returns
        -------
        Query

        Raises
        ------
        InvalidLevel
            If the level is missing, unknown or not in ``model``.
        InvalidKey
            If a key of a lower level than the query's has a value.
        InvalidMatchValue
            If a value is malformed for its key.
        MissingUniqueKey
            If a hierarchical query lacks a single-valued unique key of a level above.
        """
        level = Level.parse(identifier.get("QueryRetrieveLevel"))
        query = _build(
            level,
            model,
            _identifier_entries(identifier),
            fuzzy=fuzzy,
            combine_datetime=combine_datetime,
        )
        if not relational:
            _require_unique_keys(query)
        return query

    @classmethod
    def from_qido(
        cls,
        level: Level,
        params: Mapping[str, Sequence[str]],
        path_uids: Mapping[str, str] | None = None,
        *,
        fuzzy: bool = False,
    ) -> Query:
        """The query QIDO-RS parameters ask for (PS3.18 8.3.4, 10.6).

        Parameters
        ----------
        level
            STUDY for ``/studies``, SERIES for ``.../series``, IMAGE for ``.../instances``.
        params
            Query parameters, each with all its values (Flask's ``args.to_dict(flat=False)``):
            matching keys by keyword or tag (``PatientID``, ``00100020``), ``includefield``
            (keywords, tags or ``all``), ``limit``, ``offset`` and ``fuzzymatching``.
        path_uids
            UIDs from the resource path, e.g. ``{"StudyInstanceUID": "1.2.3"}``.
        fuzzy
            Fuzzy matching when the request does not say (``fuzzymatching`` overrides it).

        Returns
        -------
        Query
            A Study Root query (Patient Root for a PATIENT level); no unique keys are required
            above the level, as QIDO-RS queries are relational.

        Raises
        ------
        InvalidKey
            If a parameter names no DICOM attribute, or matches below the level.
        InvalidMatchValue
            If a value is malformed for its key.
        InvalidParameter
            If ``limit``, ``offset`` or ``fuzzymatching`` is malformed.
        """
        options = _QidoOptions.parse(params, level, fuzzy)
        entries: list[Entry] = []
        for keyword, uid in (path_uids or {}).items():
            if keyword not in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                raise InvalidKey(f"{keyword} is not a UID of a resource path", keyword)
            entries.append((keyword, uid))
        entries += _qido_default_entries(level, path_uids or {})
        entries += [(keyword, None) for keyword in options.include]
        entries += _qido_matching_entries(params)
        model = Model.PATIENT_ROOT if level is Level.PATIENT else Model.STUDY_ROOT
        return _build(
            level,
            model,
            entries,
            fuzzy=options.fuzzy,
            combine_datetime=True,
            uid_separators="\\,",
            limit=options.limit,
            offset=options.offset,
        )


def _has_values(value: str | ItemEntries | None) -> bool:
    if isinstance(value, tuple):
        return any(text for _keyword, text in value)
    return bool(value)


def _sequence_match(key: Key, value: str | ItemEntries | None,
                    uid_separators: str) -> SequenceMatch:
    """The sequence matching a sequence key asks for; a text value is refused."""
    if isinstance(value, str) and value.strip(" \x00"):
        raise InvalidMatchValue(f"{key.keyword} is a sequence: give its item's keys", key.keyword)
    entries = value if isinstance(value, tuple) else ()
    filters = []
    for keyword, text in entries:
        if text:
            item = parse_value(item_key(keyword, key.level), text,
                               uid_separators=uid_separators)
            if item is not None and not isinstance(item, DateTimeRange):
                filters.append(item)
    return SequenceMatch(key.keyword, tuple(filters),
                         tuple(dict.fromkeys(keyword for keyword, _text in entries)))


def _model_name(model: Model) -> str:
    return model.value.replace("_", " ").title()


def _check_level(level: Level, model: Model) -> None:
    if level not in model.levels:
        raise InvalidLevel(
            f"the {_model_name(model)} model has no {level.value} level", "QueryRetrieveLevel"
        )


def _build(
    level: Level,
    model: Model,
    entries: Iterable[Entry],
    *,
    fuzzy: bool,
    combine_datetime: bool,
    uid_separators: str = "\\",
    limit: int | None = None,
    offset: int = 0,
) -> Query:
    """The query from ``(keyword, value)`` pairs; a value of None is a return key only."""
    _check_level(level, model)  # before any key is looked at, so the level error wins
    filters: list[Filter] = []
    returned = [level.unique_key]
    ignored: list[str] = []
    for keyword, value in entries:
        key = find_key(keyword, level)
        if key is None:
            lowest = lowest_level_of(keyword)
            if lowest is not None:  # held by the index, but only below this level
                if _has_values(value):
                    raise InvalidKey(
                        f"{keyword} is a {lowest.value} attribute; it cannot be matched in "
                        f"a {level.value} query",
                        keyword,
                    )
                continue
            returned.append(keyword)
            if _has_values(value):
                ignored.append(keyword)
            continue
        returned.append(keyword)
        if key.sequence:
            if value:  # an item, or text (refused); None or () ask for every item whole
                filters.append(_sequence_match(key, value, uid_separators))
        elif isinstance(value, str):
            item = parse_value(key, value, uid_separators=uid_separators)
            if item is not None:
                filters.append(item)
    if combine_datetime:
        filters = combine_date_time(filters)
    return Query(
        level,
        tuple(filters),
        tuple(dict.fromkeys(returned)),
        limit,
        offset,
        fuzzy,
        model,
        tuple(dict.fromkeys(ignored)),
    )


def _identifier_entries(identifier: Dataset) -> Iterator[Entry]:
    for tag in list(identifier.keys()):
        # Group lengths, command and file meta elements, and private keys (which the index
        # cannot hold) are not keys.
        if tag.element == 0 or tag.group in (0x0000, 0x0002) or tag.is_private:
            continue
        keyword = keyword_for_tag(tag)
        if not keyword or keyword in _NOT_KEYS:
            continue
        try:  # a received identifier is decoded element by element, here
            element = identifier[tag]
        except (ValueError, TypeError, LookupError):
            # pydicom cannot convert the value to its VR's type ("2*" for an IS): match on
            # the text as sent, so that the reason given is the matching rule it breaks.
            yield keyword, _raw_text(identifier, tag, keyword)
            continue
        if element.VR == "SQ":
            yield keyword, _item_entries(element)
        else:
            yield keyword, _element_text(element)


def _raw_text(identifier: Dataset, tag: BaseTag, keyword: str) -> str | None:
    value = identifier.get_item(tag).value
    if not isinstance(value, bytes):
        raise InvalidMatchValue(f"{keyword} cannot be read", keyword)
    return value.decode("ascii", errors="replace").strip(" \x00") or None


def _item_entries(element: DataElement) -> ItemEntries:
    """The keys of a sequence key's item (PS3.4 C.2.2.2.6: a sequence of at most one item).

    Sequences nested in the item are not matched (the index does not hold them); their
    values are ignored.
    """
    items = list(element.value or [])
    if not items:
        return ()
    entries = []
    for item_element in items[0]:
        keyword = item_element.keyword
        if not keyword or item_element.tag.is_private or item_element.tag.element == 0:
            continue
        text = None if item_element.VR == "SQ" else _element_text(item_element)
        entries.append((keyword, text))
    return tuple(entries)


def _element_text(element: DataElement) -> str | None:
    """The value as text, several values joined by backslashes, or None if empty."""
    value = element.value
    if value is None or value == "":
        return None
    values = value if isinstance(value, MultiValue | list | tuple) else [value]
    text = "\\".join(
        item.decode("ascii", errors="replace") if isinstance(item, bytes) else str(item)
        for item in values
    )
    return text.strip(" \x00") or None


def _require_unique_keys(query: Query) -> None:
    """A hierarchical query gives one value for each unique key above (PS3.4 C.4.1.2.1)."""
    given = {item.keyword: item for item in query.filters}
    for upper in query.model.levels_above(query.level):
        keyword = upper.unique_key
        item = given.get(keyword)
        if not isinstance(item, SingleValue | UidList):
            raise MissingUniqueKey(
                f"a {query.level.value} query of the {_model_name(query.model)} model needs "
                f"{keyword} with a value (a single value or a list of UIDs)",
                keyword,
            )


@dataclass(frozen=True)
class _QidoOptions:
    limit: int | None
    offset: int
    fuzzy: bool
    include: tuple[str, ...]

    @classmethod
    def parse(
        cls, params: Mapping[str, Sequence[str]], level: Level, fuzzy: bool
    ) -> _QidoOptions:
        values = {name.lower(): list(given) for name, given in params.items()}
        limit = _qido_integer(values, "limit", minimum=1)
        offset = _qido_integer(values, "offset", minimum=0)
        if "fuzzymatching" in values:
            text = _qido_single(values, "fuzzymatching").lower()
            if text not in ("true", "false"):
                raise InvalidParameter(f"fuzzymatching must be true or false, not {text!r}")
            fuzzy = text == "true"
        include: list[str] = []
        for text in values.get("includefield", []):
            for field in filter(None, (part.strip() for part in text.split(","))):
                if field.lower() == "all":
                    include.extend(keys_at(level))
                else:
                    include.append(_sequence_path(field)[0])
        return cls(limit, offset or 0, fuzzy, tuple(include))


def _qido_single(values: Mapping[str, list[str]], name: str) -> str:
    given = values[name]
    if len(given) != 1:
        raise InvalidParameter(f"{name} must be given once, not {len(given)} times")
    return given[0].strip()


def _qido_integer(values: Mapping[str, list[str]], name: str, *, minimum: int) -> int | None:
    if name not in values:
        return None
    text = _qido_single(values, name)
    if not text.isdigit() or int(text) < minimum:
        raise InvalidParameter(f"{name} must be an integer of at least {minimum}, not {text!r}")
    return int(text)


def _qido_default_entries(
    level: Level, path_uids: Mapping[str, str]
) -> list[Entry]:
    """PS3.18 10.6.3: each level's defaults, plus those of the levels above that the path
    does not fix (a search of all series also returns each series' study attributes)."""
    keywords = list(QIDO_DEFAULT_KEYS[level])
    if level is Level.IMAGE and "SeriesInstanceUID" not in path_uids:
        keywords += QIDO_DEFAULT_KEYS[Level.SERIES]
    if level in (Level.SERIES, Level.IMAGE) and "StudyInstanceUID" not in path_uids:
        keywords += QIDO_DEFAULT_KEYS[Level.STUDY]
    return [(keyword, None) for keyword in keywords]


def _qido_matching_entries(params: Mapping[str, Sequence[str]]) -> list[Entry]:
    entries: list[Entry] = []
    items: dict[str, list[tuple[str, str | None]]] = {}
    for name, given in params.items():
        if name.lower() in _QIDO_OPTIONS or name.lower() in _QIDO_IGNORED:
            continue
        path = _sequence_path(name)
        # A parameter given twice offers two values, as a backslash does within one.
        value = "\\".join(text for text in given if text)
        if len(path) > 1:  # a key inside a sequence: sequence matching on its one item
            items.setdefault(path[0], []).append((path[1], value or None))
        else:
            entries.append((path[0], value))
    entries += [(keyword, tuple(item)) for keyword, item in items.items()]
    return entries


def _sequence_path(attribute: str) -> list[str]:
    """Keywords of ``attribute``, a keyword or tag, or a dotted path into sequences."""
    path = [keyword_of(part) for part in attribute.split(".")]
    if any(vr_of(keyword) != "SQ" for keyword in path[:-1]):
        raise InvalidKey(f"{attribute!r} is not a path into a sequence", path[0])
    return path

