"""C-FIND SCP: a DIMSE identifier in, the shared query model, matches out as pending responses.

The handler only translates: the identifier becomes a :class:`pacs.query.Query` (Patient Root
or Study Root, from the request's SOP class), :func:`pacs.query.run_query` runs it on the index,
and each match goes back as a pending response with the keys the DIMSE edge adds
(QueryRetrieveLevel, RetrieveAETitle). Statuses (PS3.4 C.4.1.1.4):

* ``0x0124`` (Refused: Not Authorized) when the ``access`` setting does not let the caller
  query;
* ``0xFF00`` pending, one per match; ``0x0000`` once all were sent;
* ``0xFE00`` when the requester sent C-CANCEL (checked between matches);
* ``0xA900`` when the identifier does not fit the model: unknown level, a key below the level,
  a missing unique key of a level above;
* ``0xC000`` when a value cannot be matched (a malformed range, a bad UID), with the reason as
  Error Comment;
* ``0xA700`` (Out of Resources) after the first ``find_max_results`` matches when more exist,
  with an Error Comment saying so: the workstation shows what it got and the user narrows
  the query;
* ``0xC001`` when the index cannot be reached.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import events

from pacs.dicom_peers import AccessPolicy, Operation
from pacs.errors import IndexUnavailable
from pacs.query import (
    InvalidKey,
    InvalidLevel,
    InvalidQuery,
    MissingUniqueKey,
    Model,
    Query,
    run_query,
)
from pacs.scp.access import refusal
from pacs.services import Services

log = logging.getLogger("pacs.scp")

PENDING = 0xFF00
SUCCESS = 0x0000
CANCELLED = 0xFE00
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000
INDEX_UNAVAILABLE = 0xC001


def handle_find(
    event: events.Event, services: Services, policy: AccessPolicy, *, fuzzy: bool,
    max_results: int,
) -> Iterator[tuple[Dataset | int, Dataset | None]]:
    """C-FIND: yield ``(status, identifier)`` pairs as pynetdicom expects.

    Parameters
    ----------
    event
        pynetdicom's EVT_C_FIND event.
    services
        The archive's services (the index is queried).
    policy
        Who may query (the ``access`` setting); others get 0x0124.
    fuzzy
        Match person names ignoring case and accents (the ``find_fuzzy`` setting).
    max_results
        Most matches sent for one request (the ``find_max_results`` setting).
    """
    requestor = event.assoc.requestor
    who = f"{requestor.ae_title.strip()}@{requestor.address}:{requestor.port}"
    refused = refusal(event, policy, Operation.QUERY)
    if refused is not None:
        yield refused, None
        return
    try:
        identifier = event.identifier
        model = Model.for_sop_class(str(event.request.AffectedSOPClassUID))
        query = Query.from_identifier(identifier, model, fuzzy=fuzzy)
        result = run_query(services.db, query, max_results=max_results)
    except (InvalidLevel, InvalidKey, MissingUniqueKey) as exc:
        log.warning("C-FIND from %s refused: %s", who, exc)
        yield _failure(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
        return
    except InvalidQuery as exc:
        log.warning("C-FIND from %s refused: %s", who, exc)
        yield _failure(UNABLE_TO_PROCESS, str(exc)), None
        return
    except IndexUnavailable as exc:
        log.error("C-FIND from %s failed: %s", who, exc)
        yield _failure(INDEX_UNAVAILABLE, "the index is unavailable"), None
        return
    except Exception as exc:  # a decoding error in a hostile identifier must not kill the SCP
        log.exception("C-FIND from %s failed", who)
        yield _failure(UNABLE_TO_PROCESS, f"cannot process the identifier: {exc}"), None
        return
    level = query.level.name
    sent = 0
    for match in result.datasets:
        if event.is_cancelled:
            log.info("C-FIND from %s cancelled after %d matches", who, sent)
            yield CANCELLED, None
            return
        yield PENDING, _response(match, level, event.assoc.ae.ae_title)
        sent += 1
    log.info("C-FIND %s from %s: %d matches", level, who, sent)
    if result.capped:
        yield _failure(
            OUT_OF_RESOURCES,
            f"more than {max_results} matches: the first {max_results} were sent; "
            "narrow the query",
        ), None
        return
    yield SUCCESS, None


def _response(match: Dataset, level: str, ae_title: Any) -> Dataset:
    match.QueryRetrieveLevel = level
    match.RetrieveAETitle = str(ae_title).strip()
    return match


def _failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    # Error Comment is LO: 64 characters at most (PS3.7 C.4.1.1.4).
    ds.ErrorComment = comment[:64]
    return ds
