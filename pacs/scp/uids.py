"""pynetdicom's UID conversion, remembered: each distinct UID is validated once per process.

pynetdicom turns every UID it reads or sets into a pydicom ``UID`` through
``pynetdicom.utils.set_uid``, which validates it twice (pydicom's value check and
pynetdicom's own) with regular expressions. An association proposing DCMTK storescu's 128
contexts converts ~1,750 UIDs while negotiating (about half of the ~25 ms of CPU its
negotiation cost), and every C-STORE four more. They are nearly always the same few hundred
SOP class and transfer syntax UIDs, so the result is kept in a bounded LRU cache keyed by the
value and the options. A UID that fails validation is not cached: it raises again each time,
as before. The conversion itself is pynetdicom's, unchanged (``tests/test_scp_reactor.py``
pins its source).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pynetdicom.dimse_primitives
import pynetdicom.pdu_items
import pynetdicom.pdu_primitives
import pynetdicom.presentation
import pynetdicom.utils
from pydicom.uid import UID

#: The modules that imported ``set_uid`` by name, so each holds its own reference to it.
_USERS = (pynetdicom.dimse_primitives, pynetdicom.pdu_items, pynetdicom.pdu_primitives,
          pynetdicom.presentation)
_CACHE_SIZE = 4096  # a hostile peer sending fresh UIDs only churns this many entries

_original_set_uid = pynetdicom.utils.set_uid


@lru_cache(maxsize=_CACHE_SIZE)
def _converted(value: str | bytes, name: str, allow_empty: bool, allow_none: bool,
               validate: bool) -> UID | None:
    return _original_set_uid(value, name, allow_empty, allow_none, validate)


def remembered_set_uid(value: Any, name: str, allow_empty: bool = True,
                       allow_none: bool = True, validate: bool = True) -> UID | None:
    """``pynetdicom.utils.set_uid``, answered from the cache for text and bytes values."""
    if isinstance(value, str | bytes):
        return _converted(value, name, allow_empty, allow_none, validate)
    return _original_set_uid(value, name, allow_empty, allow_none, validate)


def remember_uids() -> None:
    """Make pynetdicom's modules use :func:`remembered_set_uid` (idempotent)."""
    for module in _USERS:
        module.set_uid = remembered_set_uid  # type: ignore[attr-defined]
