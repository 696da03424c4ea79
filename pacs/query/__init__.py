"""The query model shared by C-FIND (DIMSE) and QIDO-RS: parse, match, run.

::

    C-FIND identifier ── Query.from_identifier ─┐
    QIDO-RS parameters ── Query.from_qido ───────┴─▶ Query ── run_query ─▶ QueryResult
                                                   (level, filters,        (one row of values
                                                    return keys, limit,     per match; as pydicom
                                                    offset, fuzzy)          Datasets on demand)

* :mod:`pacs.query.keys`: levels, information models, and the keys the index holds per level.
* :mod:`pacs.query.matching`: one class per PS3.4 C.2.2.2 matching type, and how a key value
  picks one.
* :mod:`pacs.query.model`: :class:`Query` and its two parsers, the only places either syntax is
  read.
* :mod:`pacs.query.execute`: one SQL statement per query, and each row as a Dataset on demand
  (the C-FIND SCP encodes rows straight to DIMSE bytes: :mod:`pacs.scp.identifiers`).
* :mod:`pacs.query.errors`: why a query is refused, one class per reason.

Each edge adds only its protocol's parts: QueryRetrieveLevel and RetrieveAETitle for DIMSE,
RetrieveURL and DICOM JSON for QIDO-RS (pydicom's dictionary gives every element's VR).
"""

from pacs.query.errors import (
    InvalidKey,
    InvalidLevel,
    InvalidMatchValue,
    InvalidParameter,
    InvalidQuery,
    MissingUniqueKey,
)
from pacs.query.execute import (
    UTF8,
    QueryResult,
    build_statement,
    element_for,
    has_non_ascii,
    run_query,
    to_dataset,
)
from pacs.query.keys import Level, Model
from pacs.query.matching import (
    AnyOf,
    DateTimeRange,
    EmptyValue,
    Filter,
    Range,
    SequenceMatch,
    SingleValue,
    UidList,
    Wildcard,
)
from pacs.query.model import QIDO_DEFAULT_KEYS, Query

__all__ = [
    "QIDO_DEFAULT_KEYS",
    "UTF8",
    "AnyOf",
    "DateTimeRange",
    "EmptyValue",
    "Filter",
    "InvalidKey",
    "InvalidLevel",
    "InvalidMatchValue",
    "InvalidParameter",
    "InvalidQuery",
    "Level",
    "MissingUniqueKey",
    "Model",
    "Query",
    "QueryResult",
    "Range",
    "SequenceMatch",
    "SingleValue",
    "UidList",
    "Wildcard",
    "build_statement",
    "element_for",
    "has_non_ascii",
    "run_query",
    "to_dataset",
]
