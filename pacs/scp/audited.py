"""Audit records of the DICOM receiver: who (calling AE title, address) did what.

* C-STORE: one record per association and study, written when the association ends, with
  the number of instances stored (and one failure record for what was refused);
* C-FIND: one record per request, with the number of matches;
* C-MOVE / C-GET: one record per request, with the study (when one) and the number of
  instances sent.

Recording is a queue put (:class:`pacs.audit.AuditTrail`); the image path never waits for it.
"""

from __future__ import annotations

from typing import Any

from pynetdicom import events

from pacs.audit import Action, ActorKind, AuditEvent, Outcome
from pacs.services import Services


def record(services: Services, event: events.Event, action: Action, *, ok: bool = True,
           study_uid: str | None = None, patient_id: str | None = None,
           count: int | None = None, detail: str = "") -> None:
    """Record one DIMSE action of ``event``'s association."""
    requestor = event.assoc.requestor
    if study_uid and not patient_id:
        owner = services.index.study_owner(study_uid)
        patient_id = owner[0] if owner is not None else None
    services.audit.record(AuditEvent(
        action, Outcome.SUCCESS if ok else Outcome.FAILURE, ActorKind.AE,
        actor=requestor.ae_title.strip(), address=str(requestor.address), protocol="dimse",
        patient_id=patient_id, study_uid=study_uid, count=count, detail=detail))


def single(values: Any) -> str | None:
    """The one distinct value of ``values``, or None when there are none or several."""
    distinct = {value for value in values if value}
    return distinct.pop() if len(distinct) == 1 else None


def identifier_value(event: events.Event, keyword: str) -> str | None:
    """A single-valued key of the request's identifier, when it names one value."""
    try:
        value = event.identifier.get(keyword)
    except Exception:  # an undecodable identifier is audited without it
        return None
    text = str(value).strip() if value is not None else ""
    return text if text and not any(c in text for c in "*?\\") else None
