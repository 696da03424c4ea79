"""Running a query: one SQL statement on the index, and each row as a pydicom Dataset.

Every filter compiles to a condition the database can answer from an index where the value
allows it: single values to ``=``, UID lists to ``IN``, ranges to ``>=``/``<`` on the stored
``YYYYMMDD`` / ``HHMMSS.FFFFFF`` strings, wild cards with a literal prefix to an index range.
Wild cards use ``GLOB`` on SQLite, whose ``LIKE`` ignores ASCII case (and a pragma to change
that would hold for the whole connection), and ``LIKE ... ESCAPE`` on PostgreSQL; both are
case-sensitive, as PS3.4 C.2.2.2.4 asks, and both use an index for a literal prefix.

Person names are matched component by component (the standard leaves PN matching to the
implementation): ``Nguyễn`` matches the family name ``Nguyễn`` with any given names,
``Nguyễn^V*`` also asks for a given name starting with ``V``, and ``^An`` for the given name
``An`` whatever the family name; a key with ``=`` is matched against the whole value, all
component groups. A ``*`` may run over a ``^``, which only widens a match. With fuzzy matching,
the key is normalised like the stored ``*_norm`` columns (:func:`pacs.attributes.normalise_name`:
upper case, no accents), so ``nguyen*`` finds ``Nguyễn^Văn An``; a key typed without ``^``
has its spaces match a space or a ``^`` (``nguyen van an`` finds ``Nguyễn^Văn An`` too, as a
study list's search box sends it), and a key's last word may be followed by more words of
its component (``nguyen^van`` finds the given name ``Văn An``); person-name attributes
without a normalised column are matched as sent. A value stored with several values (``ImageType``,
``OtherPatientIDs``) matches when any one of them does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, cast

from pydicom import config
from pydicom.datadict import dictionary_VM, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Select,
    and_,
    exists,
    or_,
    select,
    true,
    tuple_,
)

from pacs.attributes import normalise_name
from pacs.query.keys import TABLES, Key, Level, find_key, item_key, vr_of
from pacs.query.matching import (
    AnyOf,
    DateTimeRange,
    EmptyValue,
    Filter,
    ItemFilter,
    Range,
    SequenceMatch,
    SingleValue,
    UidList,
    Wildcard,
    filter_keywords,
)
from pacs.query.model import Query
from pacs.storage.schema import instances, patients, sequence_items, series, studies
from pacs.storage.sql import Database

#: The Specific Character Set of a result that has any non-ASCII text (PS3.3 C.12.1.1.2).
UTF8 = "ISO_IR 192"
_LIKE_ESCAPE = "!"
#: Each level's join to the level above it.
_PARENT_JOINS = {
    Level.STUDY: studies.c.patient_pk == patients.c.pk,
    Level.SERIES: series.c.study_pk == studies.c.pk,
    Level.IMAGE: instances.c.series_pk == series.c.pk,
}


@dataclass(frozen=True)
class QueryResult:
    """The matches of one query, in index order.

    Attributes
    ----------
    rows
        One mapping per match: the value the index holds for each return key it holds,
        keyed by keyword (keys the index does not hold are absent). Each protocol edge
        encodes these its own way: :attr:`datasets` for pydicom, the C-FIND SCP straight to
        DIMSE bytes.
    return_keys
        The query's return keys, every one of which a result holds (empty when unknown).
    more
        More matches follow; the next page starts at ``offset + len(rows)``.
    capped
        The server's maximum, not the query's limit, cut the list short.
    """

    rows: list[dict[str, Any]]
    return_keys: tuple[str, ...] = ()
    more: bool = False
    capped: bool = False

    @property
    def datasets(self) -> list[Dataset]:
        """One dataset per match, holding exactly the return keys (:func:`to_dataset`)."""
        return [to_dataset(row, self.return_keys) for row in self.rows]


def run_query(db: Database, query: Query, *, max_results: int | None = None,
              institutions: Sequence[str] | None = None) -> QueryResult:
    """Run ``query`` on the index as one SQL statement.

    Parameters
    ----------
    db
        The index database.
    query
        The query to run.
    max_results
        The most results the server returns for any query (None: no maximum), whatever
        limit the query asks for.
    institutions
        Only studies whose Institution Name is one of these (a requester limited to some
        institutions, see :mod:`pacs.web.scope`); None for all.

    Returns
    -------
    QueryResult

    Raises
    ------
    IndexUnavailable
        If the database fails.
    """
    cap, capped_by_server = query.limit, False
    if max_results is not None and (cap is None or max_results < cap):
        cap, capped_by_server = max_results, True
    statement = build_statement(query, db.engine.dialect.name)
    if institutions is not None:
        statement = statement.where(_within_institutions(query.level, institutions))
    if cap is not None:
        statement = statement.limit(cap + 1)  # one more, to learn whether more follow
    if query.offset:
        statement = statement.offset(query.offset)
    with db.reading() as conn:
        result = conn.execute(statement)
        # Plain dicts: a SQLAlchemy RowMapping's get() costs several times a dict's.
        keys = list(result.keys())
        rows = [dict(zip(keys, row, strict=True)) for row in result.all()]
        more = cap is not None and len(rows) > cap
        rows = rows[:cap]
        compiler = _Conditions(query.level, query.fuzzy, sqlite=db.is_sqlite)
        for keyword in query.return_keys:
            key = find_key(keyword, query.level)
            if key is not None and key.sequence:
                _attach_items(conn, compiler, rows, key, _match_on(query, keyword))
    return QueryResult(rows, query.return_keys, more, more and capped_by_server)


def _match_on(query: Query, keyword: str) -> SequenceMatch | None:
    return next((item for item in query.filters
                 if isinstance(item, SequenceMatch) and item.keyword == keyword), None)


#: Owners whose items are read with one statement (bound parameters stay well within limits).
_ITEM_CHUNK = 500


def _attach_items(conn: Connection, compiler: _Conditions, rows: list[dict[str, Any]],
                  key: Key, match: SequenceMatch | None) -> None:
    """Replace each row's owner key under ``key.keyword`` by the sequence's items.

    Items are dicts of item attribute values by keyword: the matching items only when the
    query matched on the sequence, with only the item keys it named (empty where an item
    lacks one); every item whole otherwise. A row without items gets None (an empty
    sequence).
    """
    keyword = key.keyword
    owners = sorted({row[keyword] for row in rows if row.get(keyword) is not None})
    statement = select(
        sequence_items.c.owner_pk, sequence_items.c.item, sequence_items.c.keyword,
        sequence_items.c.value,
    ).where(sequence_items.c.level == key.level.value, sequence_items.c.sequence == keyword)
    item_keys: tuple[str, ...] = match.item_keys if match is not None else ()
    if item_keys:
        statement = statement.where(sequence_items.c.keyword.in_(item_keys))
    if match is not None and match.items:
        pairs = compiler.matching_items(key, match)
        statement = statement.where(
            tuple_(sequence_items.c.owner_pk, sequence_items.c.item).in_(pairs))
    statement = statement.order_by(sequence_items.c.owner_pk, sequence_items.c.item,
                                   sequence_items.c.pk)
    found: dict[Any, dict[int, dict[str, Any]]] = {}
    for start in range(0, len(owners), _ITEM_CHUNK):
        chunk = owners[start : start + _ITEM_CHUNK]
        for owner, number, item_keyword, value in conn.execute(
            statement.where(sequence_items.c.owner_pk.in_(chunk))
        ):
            item = found.setdefault(owner, {}).setdefault(
                number, dict.fromkeys(item_keys))
            item[item_keyword] = value
    for row in rows:
        items = found.get(row.get(keyword))
        row[keyword] = list(items.values()) if items else None


def build_statement(query: Query, dialect: str) -> Select[Any]:
    """The SELECT that finds ``query``'s matches, one row per match, ordered by arrival.

    Parameters
    ----------
    query
        The query.
    dialect
        The SQLAlchemy dialect name of the index database: ``sqlite`` or ``postgresql``.

    Returns
    -------
    Select
        Columns labelled with the keywords of the return keys the index holds.
    """
    level = query.level
    returned = {
        keyword: key
        for keyword in query.return_keys
        if (key := find_key(keyword, level)) is not None
    }
    matched = [
        key for item in query.filters for keyword in filter_keywords(item)
        if (key := find_key(keyword, level)) is not None
    ]
    top = min(
        (key.level for key in [*returned.values(), *matched]),
        key=attrgetter("depth"),
        default=level,
    )
    compiler = _Conditions(level, query.fuzzy, sqlite=dialect == "sqlite")
    table = TABLES[level]
    return (
        select(*(key.expression.label(keyword) for keyword, key in returned.items()))
        .select_from(_joined(level, top))
        .where(*(compiler.condition(item) for item in query.filters))
        .order_by(table.c.pk)
    )


def _within_institutions(level: Level, names: Sequence[str]) -> ColumnElement[bool]:
    """Rows of ``level`` that belong to a study of one of the institutions ``names``."""
    in_studies = select(studies.c.pk).where(studies.c.institution_name.in_(list(names)))
    if level is Level.PATIENT:
        return patients.c.pk.in_(select(studies.c.patient_pk).where(
            studies.c.pk.in_(in_studies)))
    if level is Level.STUDY:
        return studies.c.pk.in_(in_studies)
    if level is Level.SERIES:
        return series.c.study_pk.in_(in_studies)
    return instances.c.series_pk.in_(select(series.c.pk).where(series.c.study_pk.in_(in_studies)))


def _joined(level: Level, top: Level) -> FromClause:
    """The level's table joined to its parents up to ``top`` (many-to-one, by primary key)."""
    joined: FromClause = TABLES[level]
    current = level
    while current.depth > top.depth and (parent := current.parent) is not None:
        joined = joined.join(TABLES[parent], _PARENT_JOINS[current])
        current = parent
    return joined


class _Conditions:
    """Compiles filters to SQL conditions for one level, fuzzy setting and dialect."""

    def __init__(self, level: Level, fuzzy: bool, *, sqlite: bool) -> None:
        self.level = level
        self.fuzzy = fuzzy
        self.sqlite = sqlite

    def condition(self, item: Filter) -> ColumnElement[bool]:
        """The condition for one filter."""
        if isinstance(item, DateTimeRange):
            return self._date_time(item)
        if isinstance(item, SequenceMatch):
            key = self._key(item.keyword)
            if not item.items:
                return true()  # item keys without values: return keys only
            owners = self.matching_items(key, item).with_only_columns(
                sequence_items.c.owner_pk)
            return key.expression.in_(owners)
        key = self._key(item.keyword)
        if isinstance(item, EmptyValue):
            return self._empty(key)
        column = self._column(key)
        condition: ColumnElement[bool]
        if isinstance(item, UidList):
            condition = column.in_(item.uids)
        elif isinstance(item, AnyOf):
            condition = or_(*(self._one(key, column, choice) for choice in item.alternatives))
        else:
            condition = self._one(key, column, item)
        return key.within(condition) if key.within is not None else condition

    def matching_items(self, key: Key, match: SequenceMatch) -> Select[Any]:
        """The (owner_pk, item) of every item of ``key``'s sequence that matches ``match``.

        Driven from ``ix_sequence_items_match`` by the first filter that asks for a value;
        each other filter is an EXISTS on the same item.
        """
        filters = list(match.items)
        first = next((item for item in filters if not isinstance(item, EmptyValue)), None)
        conditions: list[ColumnElement[bool]] = [
            sequence_items.c.level == key.level.value,
            sequence_items.c.sequence == match.keyword,
        ]
        if first is not None:
            filters.remove(first)
            conditions += [sequence_items.c.keyword == first.keyword,
                           self._item_value(key.level, first, sequence_items.c.value)]
        for item in filters:
            other = sequence_items.alias()
            same_item = and_(
                other.c.level == sequence_items.c.level,
                other.c.owner_pk == sequence_items.c.owner_pk,
                other.c.sequence == sequence_items.c.sequence,
                other.c.item == sequence_items.c.item,
                other.c.keyword == item.keyword,
            )
            if isinstance(item, EmptyValue):
                conditions.append(~exists().where(same_item))
            else:
                conditions.append(
                    exists().where(same_item, self._item_value(key.level, item, other.c.value)))
        return select(sequence_items.c.owner_pk, sequence_items.c.item).where(*conditions)

    def _item_value(self, level: Level, item: ItemFilter,
                    column: ColumnElement[Any]) -> ColumnElement[bool]:
        """An item filter on one stored item value (text, as the index keeps it)."""
        key = item_key(item.keyword, level)
        if isinstance(item, UidList):
            return column.in_(item.uids)
        if isinstance(item, AnyOf):
            return or_(*(self._one(key, column, choice) for choice in item.alternatives))
        if isinstance(item, SingleValue) and isinstance(item.value, int):
            return column == str(item.value)
        return self._one(key, column, cast(SingleValue | Wildcard | Range, item))

    def _key(self, keyword: str) -> Key:
        key = find_key(keyword, self.level)
        if key is None:  # Query.__post_init__ refuses such filters
            raise AssertionError(f"{keyword} is not held at {self.level}")
        return key

    def _column(self, key: Key) -> ColumnElement[Any]:
        if self.fuzzy and key.normalised is not None:
            return key.normalised
        return key.match_column if key.match_column is not None else key.expression

    def _one(
        self, key: Key, column: ColumnElement[Any], item: SingleValue | Wildcard | Range
    ) -> ColumnElement[bool]:
        if isinstance(item, Range):
            return _between(column, item.start, item.end)
        if isinstance(item, Wildcard):
            return self._text(key, column, item.pattern)
        if isinstance(item.value, int) or key.vr == "DA":
            return column == item.value
        if key.vr in ("TM", "DT"):  # a time stands for every moment within its precision
            return _between(column, item.value, item.value)
        if key.vr == "PN" or key.multi_valued:
            return self._text(key, column, item.value)
        return column == item.value

    def _text(self, key: Key, column: ColumnElement[Any], value: str) -> ColumnElement[bool]:
        """Single value or wild card matching of text, per name component and per value."""
        patterns: Iterable[str] = [value]
        if key.vr == "PN":
            fuzzy = self.fuzzy and key.normalised is not None
            patterns = _name_patterns(_fuzzy_name(value) if fuzzy else value, words=fuzzy)
        if key.multi_valued:
            patterns = _each_value(patterns)
        unique = list(dict.fromkeys(patterns))
        condition = or_(*(self._pattern(column, pattern) for pattern in unique))
        prefix = _literal_prefix(unique)
        if len(unique) > 1 and prefix:
            # An OR of patterns is not an index range to the planner (SQLite then scans the
            # level's table in primary-key order); their shared literal prefix is.
            condition = and_(self._pattern(column, prefix + "*"), condition)
        return condition

    def _pattern(self, column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        if "*" not in pattern and "?" not in pattern:
            return column == pattern
        if self.sqlite:
            return column.op("GLOB", is_comparison=True)(_glob(pattern))
        return column.like(_like(pattern), escape=_LIKE_ESCAPE)

    def _empty(self, key: Key) -> ColumnElement[bool]:
        if key.integer:
            return key.expression.is_(None)
        return or_(key.expression.is_(None), key.expression == "")

    def _date_time(self, item: DateTimeRange) -> ColumnElement[bool]:
        """From (start date, start time) to (end date, end time) (PS3.4 C.2.2.2.5)."""
        date = self._column(self._key(item.date.keyword))
        time = self._column(self._key(item.time.keyword))
        conditions: list[ColumnElement[bool]] = []
        # The plain date bounds are implied by the rest; they are there for the date index.
        if item.date.start is not None:
            conditions.append(date >= item.date.start)
            if item.time.start is not None:
                conditions.append(or_(date > item.date.start, time >= item.time.start))
        if item.date.end is not None:
            conditions.append(date <= item.date.end)
            end = _after(item.time.end) if item.time.end is not None else None
            if end is not None:
                conditions.append(or_(date < item.date.end, time < end))
        return and_(*conditions)


def _between(
    column: ColumnElement[Any], start: str | None, end: str | None
) -> ColumnElement[bool]:
    """Inclusive range over stored DA/TM/DT strings, ``end`` extended to its precision."""
    conditions: list[ColumnElement[bool]] = []
    if start is not None:
        conditions.append(column >= start)
    if end is not None:
        after = _after(end)
        conditions.append(column < after if after is not None else column.is_not(None))
    return and_(*conditions)


def _after(value: str) -> str | None:
    """The smallest string of digits above every value that starts with ``value``.

    ``-1200`` must include 12:00:59.5 (stored ``120059.5``), so the bound is ``< 1201``
    rather than ``<= 1200``. Incrementing the last digit with carry gives a bound made only
    of digits and the separators already in ``value``, which every collation orders like
    the C locale. Only a value of all nines has no such bound (None).
    """
    chars = list(value)
    for index in range(len(chars) - 1, -1, -1):
        if not chars[index].isdigit():
            continue
        if chars[index] != "9":
            chars[index] = chr(ord(chars[index]) + 1)
            return "".join(chars)
        chars[index] = "0"
    return None


def _name_patterns(value: str, *, words: bool = False) -> list[str]:
    """Wild-card patterns over a whole stored name for component-wise PN matching; with
    ``words``, the key's last word may also be followed by more words of that component."""
    if "=" in value:
        return [value]
    components = value.split("^")
    while components and not components[-1]:
        components.pop()  # "Nguyễn^" asks for the family name only
    pattern = "^".join(component or "*" for component in components) or "*"
    if pattern.endswith("*") or len(components) >= 5:
        return [pattern]
    # The components not given may follow, and so may other component groups.
    return [pattern, pattern + "^*", pattern + "=*", *([pattern + " *"] if words else [])]


def _fuzzy_name(value: str) -> str:
    """A person-name key as fuzzy matching compares it: normalised like the ``*_norm``
    columns, and, when it has no component separator, each space standing for a space or a
    ``^``: people type ``nguyen van an`` for ``Nguyễn^Văn An``."""
    value = normalise_name(value)
    if "^" in value or "=" in value:
        return value
    return " ".join(value.split()).replace(" ", "?")


def _literal_prefix(patterns: Sequence[str]) -> str:
    """The longest text before any wild card that every pattern starts with."""
    heads = [_WILDCARD.split(pattern, maxsplit=1)[0] for pattern in patterns]
    shortest = min(heads, key=len, default="")
    for index, char in enumerate(shortest):
        if any(head[index] != char for head in heads):
            return shortest[:index]
    return shortest


_WILDCARD = re.compile(r"[*?]")


def _each_value(patterns: Iterable[str]) -> Iterator[str]:
    """Patterns that match when any one of backslash-joined stored values matches."""
    for pattern in patterns:
        yield pattern
        if not pattern.endswith("*"):
            yield pattern + "\\*"
        if not pattern.startswith("*"):
            yield "*\\" + pattern
            if not pattern.endswith("*"):
                yield "*\\" + pattern + "\\*"


def _glob(pattern: str) -> str:
    # GLOB has no escape character: a literal "[" is written as the class "[[]". The DICOM
    # wild cards "*" and "?" are GLOB's own, and a key cannot hold them literally.
    return pattern.replace("[", "[[]")


def _like(pattern: str) -> str:
    escaped = (
        pattern.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
        .replace("%", _LIKE_ESCAPE + "%")
        .replace("_", _LIKE_ESCAPE + "_")
    )
    return escaped.replace("*", "%").replace("?", "_")


def to_dataset(row: Mapping[Any, Any], return_keys: Sequence[str]) -> Dataset:
    """One result as a dataset of ``return_keys``, empty where the row has no value.

    Text is Unicode; when any value is not ASCII the dataset says ``ISO_IR 192`` (UTF-8) in
    Specific Character Set, so the DIMSE edge encodes it and DICOM JSON can ignore it.

    Parameters
    ----------
    row
        Column values keyed by keyword (the labels of :func:`build_statement`).
    return_keys
        The keywords to include, in any order.

    Returns
    -------
    Dataset
    """
    dataset = Dataset()
    for keyword in return_keys:
        dataset.add(element_for(keyword, row.get(keyword)))
    if any(has_non_ascii(row.get(keyword)) for keyword in return_keys):
        dataset.SpecificCharacterSet = UTF8
    return dataset


def has_non_ascii(value: Any) -> bool:
    """True if ``value`` (text, or a sequence's items) holds text that is not ASCII."""
    if isinstance(value, str):
        return not value.isascii()
    if isinstance(value, list):
        return any(has_non_ascii(item) for values in value for item in values.values())
    return False


_BINARY_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD"})


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def element_for(keyword: str, value: Any) -> DataElement:
    """The element for one return key and the value the index holds (None: empty).

    The VR is the dictionary's (the first where it lists several); a text of several values
    is split at backslashes; a sequence key is an empty sequence; a value that cannot take
    the VR's form (an IS that is not a number) gives an empty element.
    """
    tag = Tag(keyword)
    vr = vr_of(keyword)
    if vr == "SQ":
        items = []
        for values in value or ():
            item = Dataset()
            for item_keyword, item_value in values.items():
                if tag_for_keyword(item_keyword) is not None:
                    item.add(element_for(item_keyword, item_value))
            items.append(item)
        return DataElement(tag, vr, DicomSequence(items))
    if isinstance(value, str) and vr in _BINARY_NUMBER_VRS:
        value = _number(value)  # sequence items keep every value as text
    if isinstance(value, str) and dictionary_VM(keyword) != "1":
        value = value.split("\\")
    try:
        # Values are as the modality sent them; an out-of-spec one must not fail the query.
        return DataElement(tag, vr, value, validation_mode=config.IGNORE)
    except (ValueError, TypeError, OverflowError):
        # A stored text that cannot take the VR's form (an IS that is not a number).
        return DataElement(tag, vr, None)
