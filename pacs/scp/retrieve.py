"""C-MOVE and C-GET SCP: the shared retrieve path, sent as C-STORE sub-operations.

Both handlers translate only: the identifier becomes an IMAGE-level query
(:func:`pacs.retrieve.retrieve_query`, Patient Root or Study Root from the request's SOP
class), :func:`pacs.retrieve.resolve` lists the stored instances, and each one is read from the
object store when its turn comes. pynetdicom runs the sub-operations and the responses: a
C-MOVE handler yields the destination, then the number of sub-operations, then one
``(0xFF00, dataset)`` per instance; a C-GET handler the same without the destination, the
sub-operations going back over the requester's own association (SCP/SCU role selection).

Statuses (PS3.4 C.4.2.1.5, C.4.3.1.4):

* ``0xFF00`` pending after each sub-operation, with the counts; at the end ``0x0000``, or
  ``0xB000`` with the Failed SOP Instance UID List when some failed, ``0xA702`` when all did
  (both worked out by pynetdicom from the C-STORE responses);
* ``0xA801`` when the Move Destination is not in the ``modalities`` setting (or refuses the
  association);
* ``0xA900`` when the identifier does not fit the model (level, missing unique key, a key
  below the level), ``0xC000`` for a malformed value, ``0xA701`` when the index is down,
  ``0xA702`` for more than 65,535 instances (the counts are US), ``0x0124`` when the
  ``access`` setting does not let the caller retrieve; each with the reason as Error Comment.
  pynetdicom lets a C-MOVE handler fail only after the association to the destination is
  open, so these refusals open one (proposing Verification alone) when the destination is
  known;
* ``0xFE00`` when the requester sends C-CANCEL (checked before each sub-operation).

How each instance is sent (as stored, transcoded only when the receiver takes none of the
stored syntaxes, one failure failing one sub-operation) is :mod:`pacs.scp.suboperations`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, events, evt
from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    uid_to_service_class,
)

from pacs.audit import Action
from pacs.config import Settings
from pacs.dicom_peers import AccessPolicy, Operation
from pacs.errors import IndexUnavailable
from pacs.query import InvalidKey, InvalidLevel, InvalidQuery, MissingUniqueKey, Model
from pacs.retrieve import resolve, retrieve_query
from pacs.scp import audited
from pacs.scp.access import refusal
from pacs.scp.statuses import status_with_comment
from pacs.scp.suboperations import SubOperations, proposed_contexts
from pacs.services import Services
from pacs.storage.index import StoredInstance

log = logging.getLogger("pacs.scp")

PENDING = 0xFF00
CANCELLED = 0xFE00
OUT_OF_RESOURCES_MATCHES = 0xA701  # unable to calculate the number of matches
OUT_OF_RESOURCES_SUBOPERATIONS = 0xA702  # unable to perform the sub-operations
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000
MAX_SUBOPERATIONS = 0xFFFF  # Number of ... Sub-operations are US
RETRIEVE_SOP_CLASSES = (
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)

Response = tuple[int | Dataset, Dataset | None]


def configure_retrieve(ae: AE, settings: Settings) -> None:
    """Make ``ae`` a C-MOVE and C-GET SCP.

    Adds the Patient Root and Study Root MOVE and GET contexts, accepts SCP/SCU role
    selection on every storage context already supported (a C-GET requester proposes to be
    the storage SCP, PS3.4 C.4.3.3), and bounds how long connecting to a move destination may
    take (pynetdicom's default is the operating system's, minutes).
    """
    for sop_class in RETRIEVE_SOP_CLASSES:
        ae.add_supported_context(sop_class, DEFAULT_TRANSFER_SYNTAXES)
    for context in ae.supported_contexts:
        uid = context.abstract_syntax
        if uid is not None and uid_to_service_class(uid) is StorageServiceClass:
            # An already supported context keeps its transfer syntaxes and takes the roles;
            # passing its ~45 syntaxes again would re-validate each (~0.1 s per process).
            ae.add_supported_context(uid, [], scu_role=True, scp_role=True)
    if ae.connection_timeout is None:
        ae.connection_timeout = settings.network_timeout


def retrieve_handlers(
    settings: Settings, services: Services, policy: AccessPolicy
) -> list[tuple[Any, ...]]:
    """The pynetdicom bindings of the C-MOVE and C-GET handlers, for ``evt_handlers``."""
    return [
        (evt.EVT_C_MOVE, handle_move, [services, settings, policy]),
        (evt.EVT_C_GET, handle_get, [services, policy]),
    ]


def handle_move(
    event: events.Event, services: Services, settings: Settings, policy: AccessPolicy
) -> Iterator[Any]:
    """C-MOVE: yield the destination, the number of sub-operations, then the responses.

    Parameters
    ----------
    event
        pynetdicom's EVT_C_MOVE event.
    services
        The archive's services: the index resolves, the object store supplies the bytes.
    settings
        The receiver's settings: ``remote_aes`` (the ``modalities`` setting) says where each
        move destination is.
    policy
        Who may retrieve (the ``access`` setting); others get 0x0124.
    """
    who = _requester(event)
    destination = str(cast(C_MOVE, event.request).MoveDestination or "").strip()
    remote = settings.remote_aes.get(destination)
    if remote is None:
        log.warning("C-MOVE from %s refused: move destination %r is not in the modalities "
                    "setting", who, destination)
        yield None, None  # pynetdicom answers 0xA801, Move Destination unknown
        return
    refused = refusal(event, policy, Operation.RETRIEVE)
    plan = _Plan([], refusal=refused) if refused else _plan(event, services, "C-MOVE", who)
    sub_operations = SubOperations(services, originator=event.assoc.requestor.ae_title.strip())
    yield remote.host, remote.port, {
        "contexts": proposed_contexts(plan.instances),
        "evt_handlers": sub_operations.bindings(),
    }
    yield from _run(event, plan, sub_operations, f"C-MOVE from {who} to {destination}",
                    services)


def handle_get(event: events.Event, services: Services, policy: AccessPolicy) -> Iterator[Any]:
    """C-GET: yield the number of sub-operations, then the responses.

    The C-STOREs go back over the requester's association, in the storage contexts it
    negotiated with the SCP role for itself, in one of the transfer syntaxes it accepted.

    Parameters
    ----------
    event
        pynetdicom's EVT_C_GET event.
    services
        The archive's services.
    policy
        Who may retrieve (the ``access`` setting); others get 0x0124.
    """
    who = _requester(event)
    refused = refusal(event, policy, Operation.RETRIEVE)
    plan = _Plan([], refusal=refused) if refused else _plan(event, services, "C-GET", who)
    sub_operations = SubOperations(services)
    sub_operations.attach(event.assoc)
    try:
        yield from _run(event, plan, sub_operations, f"C-GET from {who}", services)
    finally:
        sub_operations.detach(event.assoc)


@dataclass(frozen=True)
class _Plan:
    """What a retrieve request resolved to: instances to send, or why none are sent."""

    instances: list[StoredInstance]
    level: str = ""
    refusal: Dataset | None = None


def _plan(event: events.Event, services: Services, service: str, who: str) -> _Plan:
    """Resolve the request's identifier; a refusal carries the status to answer with."""
    try:
        model = Model.for_sop_class(str(event.request.AffectedSOPClassUID))
        identifier = event.identifier
        query = retrieve_query(identifier, model)
        level = str(identifier.QueryRetrieveLevel).strip().upper()
        instances = resolve(services.db, query)
    except (InvalidLevel, InvalidKey, MissingUniqueKey) as exc:
        return _refused(service, who, IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc), exc.keyword)
    except InvalidQuery as exc:
        return _refused(service, who, UNABLE_TO_PROCESS, str(exc), exc.keyword)
    except IndexUnavailable as exc:
        log.error("%s from %s failed: %s", service, who, exc)
        return _Plan([], refusal=status_with_comment(OUT_OF_RESOURCES_MATCHES,
                                                     "the index is unavailable"))
    except Exception as exc:  # an undecodable identifier must not take the SCP down
        log.exception("%s from %s: cannot process the identifier", service, who)
        return _refused(service, who, UNABLE_TO_PROCESS, f"cannot process the identifier: {exc}")
    if len(instances) > MAX_SUBOPERATIONS:
        return _refused(service, who, OUT_OF_RESOURCES_SUBOPERATIONS,
                        f"{len(instances)} instances match, more than {MAX_SUBOPERATIONS}: "
                        "retrieve by series")
    return _Plan(instances, level)


def _run(event: events.Event, plan: _Plan, sub_operations: SubOperations,
         what: str, services: Services) -> Iterator[int | Response]:
    """Yield the count and the responses of the sub-operations (or of the refusal); audit
    the request when it is over."""
    service = what.split(" ", 1)[0]
    if plan.refusal is not None:
        audited.record(services, event, Action.RETRIEVE, ok=False,
                       detail=f"{service} refused: {plan.refusal.get('ErrorComment', '')}")
        yield 1  # pynetdicom sends a failure only once there is something to fail
        yield plan.refusal, None
        return
    try:
        yield from _send(event, plan, sub_operations, what)
    finally:
        failed = len(plan.instances) - sub_operations.completed - sub_operations.warnings
        audited.record(services, event, Action.RETRIEVE, ok=failed == 0,
                       study_uid=audited.single(i.study_uid for i in plan.instances),
                       count=sub_operations.completed + sub_operations.warnings,
                       detail=f"{what}: {plan.level} level, {failed} failed")


def _send(event: events.Event, plan: _Plan, sub_operations: SubOperations,
          what: str) -> Iterator[int | Response]:
    total = len(plan.instances)
    log.info("%s: %s level, %d instances", what, plan.level, total)
    yield total
    for number, instance in enumerate(plan.instances):
        if event.is_cancelled:
            log.info("%s cancelled by the requester after %d of %d sub-operations", what,
                     number, total)
            yield CANCELLED, None  # pynetdicom adds the counts and the failed UIDs
            return
        yield PENDING, sub_operations.prepare(instance)
    if total:
        log.info("%s done: %d completed, %d warnings, %d failed", what,
                 sub_operations.completed, sub_operations.warnings,
                 total - sub_operations.completed - sub_operations.warnings)


def _refused(service: str, who: str, code: int, reason: str,
             keyword: str | None = None) -> _Plan:
    log.warning("%s from %s refused: %s", service, who, reason)
    status = status_with_comment(code, reason)
    if keyword and code == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS:
        tag = Tag(keyword)
        status.OffendingElement = [tag]
    return _Plan([], refusal=status)


def _requester(event: events.Event) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.ae_title.strip()}@{requestor.address}:{requestor.port}"
