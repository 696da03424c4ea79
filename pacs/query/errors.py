"""Why a query cannot be run, one class per reason, so each edge can answer precisely.

::

    PacsError
     └── InvalidQuery            the query cannot be run as asked (``keyword`` names the key)
          ├── InvalidLevel        QueryRetrieveLevel missing, unknown, or not in the model
          ├── InvalidKey          not a DICOM attribute, or matched below the query level
          ├── InvalidMatchValue   a value the key's matching type cannot take (bad date or
          │                       range, bad UID, a wildcard where none is allowed, ...)
          ├── MissingUniqueKey    a hierarchical query lacks the unique key of a level above
          └── InvalidParameter    a malformed QIDO-RS parameter (limit, offset, fuzzymatching)

Suggested mappings for the edges (each keeps its own table): every class is HTTP 400 for
QIDO-RS; for C-FIND, ``InvalidLevel``, ``InvalidKey`` and ``MissingUniqueKey`` are 0xA900
(Identifier does not match SOP Class, with ``keyword`` as Offending Element) and
``InvalidMatchValue`` is 0xC000 (Unable to process, with the message as Error Comment).
"""

from __future__ import annotations

from pacs.errors import PacsError


class InvalidQuery(PacsError):
    """The query cannot be run as asked; the message says why.

    Parameters
    ----------
    message
        The reason, written for the person who sent the query.
    keyword
        The DICOM keyword of the offending key, when there is one.
    """

    def __init__(self, message: str, keyword: str | None = None) -> None:
        super().__init__(message)
        self.keyword = keyword


class InvalidLevel(InvalidQuery):
    """The query/retrieve level is missing, unknown, or not part of the information model."""


class InvalidKey(InvalidQuery):
    """The key is not a DICOM attribute, or it is matched below the level of the query."""


class InvalidMatchValue(InvalidQuery):
    """The value cannot be used for the key's matching type (PS3.4 C.2.2.2)."""


class MissingUniqueKey(InvalidQuery):
    """A hierarchical query lacks a single-valued unique key of a level above (PS3.4 C.4.1.3.1)."""


class InvalidParameter(InvalidQuery):
    """A QIDO-RS query parameter other than a matching key is malformed (PS3.18 8.3.4)."""
