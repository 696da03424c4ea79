"""The keys a query can use: levels, information models, and what the index holds per level.

Every attribute listed in :mod:`pacs.attributes` is a key at its level, matched and returned
from its column. A few keys are computed from other rows (PS3.4 C.6.1.1 and C.6.2.1):
``ModalitiesInStudy`` (returned from the study's modality list, matched against the study's
series), the ``NumberOf...Related...`` counts and ``InstanceAvailability`` (everything the
archive indexes is ONLINE). A key of an upper level can be used at every level below it, since
queries join the upper tables.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag, tag_for_keyword
from sqlalchemy import ColumnElement, Table, func, literal, select

from pacs.attributes import (
    INSTANCE_ATTRIBUTES,
    NAME_COLUMNS,
    PATIENT_ATTRIBUTES,
    SERIES_ATTRIBUTES,
    SERIES_SEQUENCES,
    STUDY_ATTRIBUTES,
    STUDY_SEQUENCES,
    Attribute,
)
from pacs.query.errors import InvalidKey, InvalidLevel, InvalidQuery
from pacs.storage.schema import instances, patients, sequence_items, series, studies


class Level(enum.Enum):
    """A query/retrieve level (PS3.4 C.3), top to bottom."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        """0 for PATIENT down to 3 for IMAGE."""
        return _LEVEL_ORDER.index(self)

    @property
    def parent(self) -> Level | None:
        """The level above, or None for PATIENT."""
        return _LEVEL_ORDER[self.depth - 1] if self.depth else None

    @property
    def unique_key(self) -> str:
        """The keyword of the level's unique key (PS3.4 C.6.1.1, C.6.2.1)."""
        return _UNIQUE_KEYS[self]

    @classmethod
    def parse(cls, text: object) -> Level:
        """The level named by a QueryRetrieveLevel (0008,0052) value.

        Raises
        ------
        InvalidLevel
            If ``text`` is empty or not one of PATIENT, STUDY, SERIES, IMAGE.
        """
        name = str(text or "").strip(" \x00").upper()
        if not name:
            raise InvalidLevel("QueryRetrieveLevel is missing", "QueryRetrieveLevel")
        try:
            return cls(name)
        except ValueError:
            raise InvalidLevel(
                f"QueryRetrieveLevel {name!r} is not PATIENT, STUDY, SERIES or IMAGE",
                "QueryRetrieveLevel",
            ) from None


_LEVEL_ORDER = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
_UNIQUE_KEYS = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}


class Model(enum.Enum):
    """A query/retrieve information model (PS3.4 C.6): which levels it has."""

    PATIENT_ROOT = "PATIENT_ROOT"
    STUDY_ROOT = "STUDY_ROOT"

    @property
    def levels(self) -> tuple[Level, ...]:
        """The model's levels, top first: Study Root has no PATIENT level (PS3.4 C.6.2)."""
        return _LEVEL_ORDER if self is Model.PATIENT_ROOT else _LEVEL_ORDER[1:]

    def levels_above(self, level: Level) -> tuple[Level, ...]:
        """The model's levels above ``level``, whose unique keys a hierarchical query needs."""
        return tuple(upper for upper in self.levels if upper.depth < level.depth)

    @classmethod
    def for_sop_class(cls, uid: str) -> Model:
        """The model of a Patient Root or Study Root FIND, MOVE or GET SOP Class UID.

        Raises
        ------
        InvalidQuery
            If ``uid`` is not one of those SOP classes.
        """
        for prefix, model in ((_PATIENT_ROOT_PREFIX, cls.PATIENT_ROOT),
                              (_STUDY_ROOT_PREFIX, cls.STUDY_ROOT)):
            if uid.startswith(prefix) and uid[len(prefix):] in ("1", "2", "3"):
                return model
        raise InvalidQuery(f"{uid} is not a Patient Root or Study Root query/retrieve SOP class")


# 1.2.840.10008.5.1.4.1.2.{1,2}.{1,2,3}: FIND, MOVE and GET of the two models (PS3.4 C.6).
_PATIENT_ROOT_PREFIX = "1.2.840.10008.5.1.4.1.2.1."
_STUDY_ROOT_PREFIX = "1.2.840.10008.5.1.4.1.2.2."

TABLES: dict[Level, Table] = {
    Level.PATIENT: patients,
    Level.STUDY: studies,
    Level.SERIES: series,
    Level.IMAGE: instances,
}


@dataclass(frozen=True, eq=False)  # SQL expressions overload ==, so no equality by value
class Key:
    """One attribute the index holds at one level, and the SQL that reads and matches it.

    ``expression`` is what is returned (and matched, unless ``match_column`` says otherwise);
    ``normalised`` is the accent- and case-free copy of a person name used by fuzzy matching;
    ``within`` wraps a condition on ``match_column`` when the key matches other rows (a study
    matches ``ModalitiesInStudy`` when one of its series does). A ``sequence`` key's
    expression is its level's primary key: its items are in ``sequence_items``, read by
    :func:`pacs.query.execute.run_query` for the rows found.
    """

    keyword: str
    level: Level
    expression: ColumnElement[Any]
    integer: bool = False
    normalised: ColumnElement[Any] | None = None
    match_column: ColumnElement[Any] | None = None
    within: Callable[[ColumnElement[bool]], ColumnElement[bool]] | None = None
    sequence: bool = False

    @property
    def vr(self) -> str:
        """The attribute's value representation from the DICOM dictionary."""
        return vr_of(self.keyword)

    @property
    def multi_valued(self) -> bool:
        """True if the stored text may hold several values joined by a backslash."""
        return self.match_column is None and dictionary_VM(self.keyword) != "1"


def vr_of(keyword: str) -> str:
    """The VR of a dictionary keyword; the first one where the dictionary lists several."""
    return dictionary_VR(keyword).split(" or ")[0]


def keyword_of(attribute: str) -> str:
    """The keyword for a keyword or an 8-hex-digit tag (``PatientID``, ``00100020``).

    Raises
    ------
    InvalidKey
        If ``attribute`` is neither a keyword nor a tag of the DICOM dictionary.
    """
    if len(attribute) == 8 and all(ch in "0123456789abcdefABCDEF" for ch in attribute):
        keyword = keyword_for_tag(int(attribute, 16))
        if keyword:
            return keyword
    elif tag_for_keyword(attribute) is not None:
        return attribute
    raise InvalidKey(f"{attribute!r} is not a DICOM attribute keyword or tag", attribute)


def _stored(level: Level, attributes: tuple[Attribute, ...]) -> list[Key]:
    table = TABLES[level]
    return [
        Key(
            attribute.keyword,
            level,
            table.c[attribute.column],
            integer=attribute.integer,
            normalised=(
                table.c[attribute.column + "_norm"]
                if attribute.column in NAME_COLUMNS else None
            ),
        )
        for attribute in attributes
    ]


def _sequences(level: Level, keywords: tuple[str, ...]) -> list[Key]:
    return [Key(keyword, level, TABLES[level].c.pk, sequence=True) for keyword in keywords]


def item_key(keyword: str, level: Level) -> Key:
    """The key for an attribute inside a sequence item (matched on ``sequence_items.value``).

    Raises
    ------
    InvalidKey
        If ``keyword`` is not a DICOM keyword.
    """
    if tag_for_keyword(keyword) is None:
        raise InvalidKey(f"{keyword!r} is not a DICOM keyword", keyword)
    return Key(keyword, level, sequence_items.c.value)


# Subqueries read their own aliases, so that they stay correlated on the right row when the
# outer query also selects from the same table (ModalitiesInStudy in a SERIES query).
_study_series = series.alias("study_series")
_patient_studies = studies.alias("patient_studies")


def _series_of_study(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    # The studies with a matching series, found once from ix_series_modality_study_pk, then read
    # by primary key. (A correlated EXISTS makes SQLite scan every study and probe its
    # series: 30 ms at 10,000 studies, and quadratic without ANALYZE statistics.)
    return studies.c.pk.in_(select(_study_series.c.study_pk).where(condition))


def _per_patient(column: ColumnElement[Any]) -> ColumnElement[Any]:
    # Correlated on patients.pk; reads the per-study counters through ix_studies_patient_pk.
    return (
        select(func.coalesce(column, 0))
        .where(_patient_studies.c.patient_pk == patients.c.pk)
        .correlate(patients)
        .scalar_subquery()
    )


def _computed() -> list[Key]:
    keys = [
        Key("NumberOfPatientRelatedStudies", Level.PATIENT, _per_patient(func.count()),
            integer=True),
        Key("NumberOfPatientRelatedSeries", Level.PATIENT,
            _per_patient(func.sum(_patient_studies.c.num_series)), integer=True),
        Key("NumberOfPatientRelatedInstances", Level.PATIENT,
            _per_patient(func.sum(_patient_studies.c.num_instances)), integer=True),
        Key("ModalitiesInStudy", Level.STUDY, studies.c.modalities_in_study,
            match_column=_study_series.c.modality, within=_series_of_study),
        Key("NumberOfStudyRelatedSeries", Level.STUDY, studies.c.num_series, integer=True),
        Key("NumberOfStudyRelatedInstances", Level.STUDY, studies.c.num_instances,
            integer=True),
        Key("NumberOfSeriesRelatedInstances", Level.SERIES, series.c.num_instances,
            integer=True),
    ]
    # Everything indexed is in the object store, so ONLINE at every level.
    keys += [
        Key("InstanceAvailability", level, literal("ONLINE")) for level in _LEVEL_ORDER
    ]
    return keys


def _registry() -> dict[str, dict[Level, Key]]:
    registry: dict[str, dict[Level, Key]] = {}
    for key in (
        _stored(Level.PATIENT, PATIENT_ATTRIBUTES)
        + _stored(Level.STUDY, STUDY_ATTRIBUTES)
        + _stored(Level.SERIES, SERIES_ATTRIBUTES)
        + _stored(Level.IMAGE, INSTANCE_ATTRIBUTES)
        + _sequences(Level.STUDY, STUDY_SEQUENCES)
        + _sequences(Level.SERIES, SERIES_SEQUENCES)
        + _computed()
    ):
        registry.setdefault(key.keyword, {})[key.level] = key
    return registry


_REGISTRY = _registry()


def find_key(keyword: str, level: Level) -> Key | None:
    """The key ``keyword`` as a query at ``level`` sees it, or None if not held there.

    An attribute held at several levels (InstitutionName) is taken from the level of the query
    when it has it, otherwise from the nearest level above.
    """
    held = _REGISTRY.get(keyword, {})
    for upper in reversed(_LEVEL_ORDER[: level.depth + 1]):
        if upper in held:
            return held[upper]
    return None


def lowest_level_of(keyword: str) -> Level | None:
    """The lowest level that holds ``keyword``, or None if the index does not hold it."""
    held = _REGISTRY.get(keyword)
    return max(held, key=lambda level: level.depth) if held else None


def keys_at(level: Level) -> tuple[str, ...]:
    """Every keyword a query at ``level`` can match or return (QIDO ``includefield=all``)."""
    return tuple(keyword for keyword in _REGISTRY if find_key(keyword, level) is not None)
