"""C-FIND SCP: a DIMSE identifier in, the shared query model, matches out as pending responses.

Two parts:

* :func:`handle_find`, bound to ``EVT_C_FIND``, only translates: the identifier becomes a
  :class:`pacs.query.Query` (Patient Root or Study Root, from the request's SOP class),
  :func:`pacs.query.run_query` runs it on the index, and each match goes back as a pending
  response with the keys the DIMSE edge adds (QueryRetrieveLevel, RetrieveAETitle), encoded
  straight from the index row (:mod:`pacs.scp.identifiers`);
* :func:`serve_find` is the C-FIND service of the receiver's associations in place of
  pynetdicom's (``ServiceClass._c_find_scp``): it triggers the event the same way and sends
  what the handler yields, with the response commands encoded by hand and consecutive
  responses packed into shared P-DATA PDUs (:class:`pacs.scp.dimse.PDataBatch`). pynetdicom's
  loop built two pydicom datasets and two PDUs per match: ~2.5 ms a match, where a study
  list of a thousand matches should take tens of milliseconds.

Statuses (PS3.4 C.4.1.1.4):

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
* ``0xC001`` when the index cannot be reached;
* ``0xC311`` when the handler fails unexpectedly, ``0xC312`` when a dataset it yields cannot
  be encoded (pynetdicom's codes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.presentation import PresentationContext

from pacs.audit import Action
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
    to_dataset,
)
from pacs.scp import audited
from pacs.scp.access import refusal
from pacs.scp.dimse import C_FIND_RSP, FindResponseMessage, PDataBatch, encode_response_command
from pacs.scp.identifiers import IdentifierEncoder
from pacs.scp.statuses import status_with_comment
from pacs.services import Services

log = logging.getLogger("pacs.scp")

PENDING = 0xFF00
SUCCESS = 0x0000
CANCELLED = 0xFE00
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000
INDEX_UNAVAILABLE = 0xC001
HANDLER_FAILED = 0xC311
IDENTIFIER_NOT_ENCODED = 0xC312
_PENDING_STATUSES = (0xFF00, 0xFF01)
#: Transfer syntaxes whose identifiers are encoded from the rows directly: is implicit VR.
_ROW_ENCODED_SYNTAXES = {ImplicitVRLittleEndian: True, ExplicitVRLittleEndian: False}


def handle_find(
    event: evt.Event, services: Services, policy: AccessPolicy, *, fuzzy: bool,
    max_results: int,
) -> Iterator[tuple[Dataset | int, bytes | Dataset | None]]:
    """C-FIND: yield ``(status, identifier)`` pairs for :func:`serve_find`.

    A pending match's identifier is bytes, already encoded in the presentation context's
    transfer syntax, or a Dataset for the transfer syntaxes encoded by pydicom.

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
        audited.record(services, event, Action.QUERY, ok=False, detail="C-FIND not authorised")
        yield refused, None
        return
    outcome = _find(event, services, who, fuzzy=fuzzy, max_results=max_results)
    sent, status = 0, None
    try:
        for status, identifier in outcome:
            sent += status == PENDING
            yield status, identifier
    finally:
        audited.record(
            services, event, Action.QUERY, ok=sent > 0 or status == SUCCESS,
            study_uid=audited.identifier_value(event, "StudyInstanceUID"),
            patient_id=audited.identifier_value(event, "PatientID"), count=sent,
            detail=f"C-FIND {event.request.AffectedSOPClassUID!s}")


def _find(event: evt.Event, services: Services, who: str, *, fuzzy: bool,
          max_results: int) -> Iterator[tuple[Dataset | int, bytes | Dataset | None]]:
    try:
        identifier = event.identifier
        model = Model.for_sop_class(str(event.request.AffectedSOPClassUID))
        query = Query.from_identifier(identifier, model, fuzzy=fuzzy)
        result = run_query(services.db, query, max_results=max_results)
    except (InvalidLevel, InvalidKey, MissingUniqueKey) as exc:
        log.warning("C-FIND from %s refused: %s", who, exc)
        yield status_with_comment(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
        return
    except InvalidQuery as exc:
        log.warning("C-FIND from %s refused: %s", who, exc)
        yield status_with_comment(UNABLE_TO_PROCESS, str(exc)), None
        return
    except IndexUnavailable as exc:
        log.error("C-FIND from %s failed: %s", who, exc)
        yield status_with_comment(INDEX_UNAVAILABLE, "the index is unavailable"), None
        return
    except Exception as exc:  # a decoding error in a hostile identifier must not kill the SCP
        log.exception("C-FIND from %s failed", who)
        yield status_with_comment(UNABLE_TO_PROCESS, f"cannot process the identifier: {exc}"), None
        return
    level = query.level.name
    fixed = {"QueryRetrieveLevel": level,
             "RetrieveAETitle": str(event.assoc.ae.ae_title).strip()}
    implicit_vr = _ROW_ENCODED_SYNTAXES.get(event.context.transfer_syntax)
    encoder = (IdentifierEncoder(result.return_keys, fixed, implicit_vr=implicit_vr)
               if implicit_vr is not None else None)
    sent = 0
    for row in result.rows:
        if event.is_cancelled:
            log.info("C-FIND from %s cancelled after %d matches", who, sent)
            yield CANCELLED, None
            return
        if encoder is not None:
            yield PENDING, encoder.encode(row)
        else:
            yield PENDING, _dataset(row, result.return_keys, fixed)
        sent += 1
    log.info("C-FIND %s from %s: %d matches", level, who, sent)
    if result.capped:
        yield status_with_comment(
            OUT_OF_RESOURCES,
            f"more than {max_results} matches: the first {max_results} were sent; "
            "narrow the query",
        ), None
        return
    yield SUCCESS, None


def _dataset(row: Any, return_keys: tuple[str, ...], fixed: dict[str, str]) -> Dataset:
    dataset = to_dataset(row, return_keys)
    for keyword, value in fixed.items():
        setattr(dataset, keyword, value)
    return dataset


def serve_find(assoc: Any, request: C_FIND, context: PresentationContext) -> None:
    """Answer one C-FIND request with what the ``EVT_C_FIND`` handler yields.

    Mirrors pynetdicom 3.0.4's ``ServiceClass._c_find_scp``: the same event and arguments,
    the same statuses for a failing handler (0xC311) or an identifier that cannot be
    encoded (0xC312), pending responses until a non-pending status ends the exchange, and a
    final success if the handler stops without one. The differences: identifiers may come
    encoded, and responses go to the DUL in runs (:class:`pacs.scp.dimse.PDataBatch`), one
    whenever 256 KiB are waiting and one ending with the final response.

    Parameters
    ----------
    assoc
        The association (a :class:`pacs.scp.reactor.ReceiverAssociation`).
    request
        The C-FIND-RQ primitive.
    context
        The accepted presentation context it came in.
    """
    context_id = int(context.context_id)  # type: ignore[arg-type]
    syntax = context.transfer_syntax[0]
    batch = PDataBatch(assoc.dul, assoc.dimse.maximum_pdu_size)
    message_id = int(request.MessageID)  # type: ignore[arg-type]
    sop_class = str(request.AffectedSOPClassUID)

    def is_cancelled(msg_id: int) -> bool:
        return assoc.dimse.cancel_req.pop(msg_id, None) is not None

    pending = encode_response_command(C_FIND_RSP, message_id, PENDING, sop_class_uid=sop_class,
                                      has_dataset=True)

    def respond(status: int, identifier: bytes | None = None, comment: str | None = None) -> None:
        if comment is not None:
            comment = comment.encode("ascii", errors="replace").decode("ascii")[:64]
        if assoc.get_handlers(evt.EVT_DIMSE_SENT):  # before sending, as pynetdicom does
            message = FindResponseMessage(
                lambda: find_response(message_id, sop_class, status, identifier, comment),
                context_id, identifier or b"")
            evt.trigger(assoc, evt.EVT_DIMSE_SENT, {"message": message})
        if status == PENDING and identifier is not None:
            command = pending  # the same for every match
        else:
            command = encode_response_command(
                C_FIND_RSP, message_id, status, sop_class_uid=sop_class,
                has_dataset=identifier is not None, error_comment=comment)
        batch.add(context_id, command, identifier)

    def finish(status: int, comment: str | None = None) -> None:
        respond(status, comment=comment)
        batch.flush()

    try:
        responses = evt.trigger(
            assoc, evt.EVT_C_FIND,
            {"request": request, "context": context.as_tuple, "_is_cancelled": is_cancelled},
        )
        for status, identifier in responses or ():
            if not assoc.is_established:
                return  # the handler released or aborted the association
            code = int(status.Status if isinstance(status, Dataset) else status)
            if code not in _PENDING_STATUSES:
                finish(code, status.get("ErrorComment") if isinstance(status, Dataset) else None)
                return
            if isinstance(identifier, Dataset):
                encoded = encode(identifier, syntax.is_implicit_VR, syntax.is_little_endian,
                                 syntax.is_deflated)
                if not encoded:
                    log.error("C-FIND: a match could not be encoded in %s", syntax.name)
                    finish(IDENTIFIER_NOT_ENCODED)
                    return
                identifier = encoded
            respond(code, identifier)
    except Exception:
        log.exception("C-FIND: the handler failed")
        finish(HANDLER_FAILED)
        return
    if assoc.is_established:
        finish(SUCCESS)


def find_response(message_id: int, sop_class: str, status: int, identifier: bytes | None,
                   comment: str | None) -> C_FIND:
    """The C-FIND-RSP primitive of a response :func:`serve_find` sends (what pynetdicom's
    codec and ``EVT_DIMSE_SENT`` handlers work from)."""
    response = C_FIND()
    response.MessageIDBeingRespondedTo = message_id
    response.AffectedSOPClassUID = sop_class
    response.Status = status
    if comment is not None:
        response.ErrorComment = comment
    if identifier is not None:
        response.Identifier = BytesIO(identifier)
    return response

