"""Who may associate, and for what: the ``access`` setting enforced at the DIMSE edge.

Two checks, both from one :class:`~pacs.dicom_peers.AccessPolicy`:

* **At association.** A caller the policy does not know (no rule matches its AE title and
  address) is rejected before any presentation context is negotiated: A-ASSOCIATE-RJ,
  rejected-permanent, service-user, "calling AE title not recognized" (PS3.8 9.3.4). pynetdicom
  only checks AE titles (``require_calling_aet``), not addresses, so the acceptor's ACSE is
  swapped for :class:`AccessControlledACSE` when the connection opens (``EVT_CONN_OPEN``, before
  the A-ASSOCIATE-RQ is read).
* **Per operation.** A known caller asking for something it may not do (a modality allowed to
  store sending a C-FIND) gets status 0x0124, "Refused: Not Authorized", with the reason.

Every refusal is logged with the AE title, the address and the reason.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.association import Association

from pacs.dicom_peers import AccessPolicy, Operation

log = logging.getLogger("pacs.scp")

NOT_AUTHORIZED = 0x0124

# A-ASSOCIATE-RJ fields (PS3.8 9.3.4): result, source, reason.
_REJECTED_PERMANENT = 0x01
_SERVICE_USER = 0x01
_CALLING_AE_NOT_RECOGNIZED = 0x03


class AccessControlledACSE(ACSE):
    """pynetdicom's ACSE, refusing callers the access policy does not know.

    Overrides pynetdicom's acceptor negotiation (a private method: pinned pynetdicom 3.x;
    ``tests/test_scp_access.py`` fails loudly if a release moves it).
    """

    def __init__(self, assoc: Association, policy: AccessPolicy) -> None:
        super().__init__(assoc)
        self.policy = policy

    def _negotiate_as_acceptor(self) -> None:
        request = self.requestor.primitive
        calling = str(getattr(request, "calling_ae_title", "") or "").strip()
        address = str(self.requestor.address)
        if not self.policy.operations(calling, address):
            log.warning(
                "association rejected from %s@%s: calling AE title not allowed from this "
                "address (access setting)", calling, address,
            )
            self.send_reject(_REJECTED_PERMANENT, _SERVICE_USER, _CALLING_AE_NOT_RECOGNIZED)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        super()._negotiate_as_acceptor()


def handle_connection_open(event: evt.Event, policy: AccessPolicy) -> None:
    """EVT_CONN_OPEN: put the access check in front of the association's negotiation."""
    if not policy.open:
        event.assoc.acse = AccessControlledACSE(event.assoc, policy)


def refusal(event: evt.Event, policy: AccessPolicy, operation: Operation) -> Dataset | None:
    """None if the caller may perform ``operation``; otherwise the 0x0124 status to answer."""
    requestor = event.assoc.requestor
    calling = requestor.ae_title.strip()
    if policy.allows(calling, str(requestor.address), operation):
        return None
    log.warning("%s refused for %s@%s: not allowed by the access setting",
                operation.value, calling, requestor.address)
    status = Dataset()
    status.Status = NOT_AUTHORIZED
    status.ErrorComment = f"{calling} may not {operation.value} here"[:64]
    return status
