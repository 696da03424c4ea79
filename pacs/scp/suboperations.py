"""The C-STORE sub-operations of a C-MOVE or C-GET: what goes on the wire for each instance.

:mod:`pacs.scp.retrieve` decides which instances to send; this module decides how each one is
sent, and keeps pynetdicom's association to a move destination fast and reliable.

* **As stored, not re-encoded.** When the receiver accepted the stored transfer syntax for
  the SOP class, the stored dataset bytes go on the wire unchanged. pynetdicom only sends
  pydicom Datasets, which it encodes, and a CT dataset costs ~1 ms to read and ~1.5 ms to
  write again with pydicom, without being byte-identical (group lengths, sequence encodings);
  so the handler yields a two-element stand-in and :class:`SubOperations` puts the stored
  bytes in its place when pynetdicom announces the C-STORE request (``EVT_DIMSE_SENT``, which
  pynetdicom triggers before it fragments the message into PDUs).
* **Transcoded only when it must be.** Each C-MOVE association proposes, per SOP class, every
  stored transfer syntax and explicit and implicit VR little endian, each in its own context.
  A receiver that accepted none of the stored syntaxes gets the dataset decompressed to
  explicit VR little endian (:func:`pacs.retrieve.transcode_to_explicit_little_endian`), which
  is logged.
* **A sub-operation that cannot be done fails alone and is listed**: an object missing from
  the store, an undecodable one, a SOP class the receiver refused. The handler then yields a
  dataset without file meta, which pynetdicom refuses to send and counts as failed with its
  SOP Instance UID; the other instances still go.
* **No Nagle.** The association to a move destination gets ``TCP_NODELAY`` as soon as it
  connects (:func:`set_tcp_nodelay`): pynetdicom never sets it, and each 0.5 MB C-STORE would
  otherwise wait ~40 ms for a delayed ACK.
* **No lost responses.** The association's DIMSE queue is a :class:`ResponseQueue`, which
  pynetdicom's racy reactor thread cannot take a C-STORE response from.
"""

from __future__ import annotations

import logging
import queue
import socket
from collections.abc import Sequence
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, events, evt
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification

from pacs.dicomfile import dataset_offset
from pacs.errors import InvalidInstance, StorageUnavailable
from pacs.retrieve import TranscodeError, read_instance, transcode_to_explicit_little_endian
from pacs.services import Services
from pacs.storage.index import StoredInstance

log = logging.getLogger("pacs.scp")

#: C-STORE response statuses that count as warnings, not failures (PS3.4 B.2.3).
STORE_WARNINGS = frozenset({0xB000, 0xB006, 0xB007})
MAX_CONTEXTS = 128  # presentation contexts one association may propose (PS3.8 9.3.2.2)
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def set_tcp_nodelay(event: events.Event) -> None:
    """EVT_CONN_OPEN handler: turn Nagle's algorithm off on the association's socket.

    Without it a C-STORE's last segment waits for the receiver's delayed ACK (~40 ms on
    Linux), which caps a C-MOVE at ~25 instances a second whatever else is done.
    """
    transport = event.assoc.dul.socket
    raw = getattr(transport, "socket", None)
    if raw is not None:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def proposed_contexts(instances: Sequence[StoredInstance]) -> list[PresentationContext]:
    """The presentation contexts to propose to a move destination for ``instances``.

    Per SOP class, one context per stored transfer syntax and one each for explicit and
    implicit VR little endian, so that the receiver can accept the stored syntax and still
    leave an uncompressed fallback. Past 128 contexts, one context per SOP class lists them
    all (the receiver then picks one). With nothing to send, Verification alone (an
    association is still needed to report a refused identifier).
    """
    syntaxes: dict[str, list[str]] = {}
    for instance in instances:
        if instance.sop_class_uid:
            syntaxes.setdefault(instance.sop_class_uid, []).append(instance.transfer_syntax_uid)
    per_class = {sop_class: list(dict.fromkeys([*stored, *UNCOMPRESSED]))
                 for sop_class, stored in syntaxes.items()}
    contexts = [build_context(sop_class, syntax)
                for sop_class, offered in per_class.items() for syntax in offered]
    if len(contexts) > MAX_CONTEXTS:
        contexts = [build_context(sop_class, offered) for sop_class, offered in per_class.items()]
        if len(contexts) > MAX_CONTEXTS:
            log.warning("%d SOP classes to send, only %d can be proposed; the instances of "
                        "the others will fail", len(contexts), MAX_CONTEXTS)
            contexts = contexts[:MAX_CONTEXTS]
    return contexts or [build_context(Verification)]


class SubOperations:
    """The C-STORE sub-operations of one C-MOVE or C-GET: what to yield, what went out.

    :meth:`prepare` turns each stored instance into the dataset the handler yields. The event
    handlers put the stored bytes on the wire in place of the stand-in (``EVT_DIMSE_SENT``)
    and count the successful C-STORE responses (``EVT_DIMSE_RECV``); for a C-MOVE they also set
    ``TCP_NODELAY`` and give the handler the association to the destination
    (``EVT_CONN_OPEN``).

    Parameters
    ----------
    services
        Where the bytes are read from.
    originator
        The AE title of the C-MOVE requester, sent as Move Originator Application Entity
        Title (pynetdicom would send the archive's own); empty for a C-GET.
    """

    def __init__(self, services: Services, originator: str = "") -> None:
        self.services = services
        self.originator = originator
        self.assoc: Any = None
        self.completed = 0
        self.warnings = 0
        self._staged: tuple[str, bytes] | None = None

    # -- event bindings -----------------------------------------------------------------------

    def bindings(self) -> list[tuple[Any, ...]]:
        """``evt_handlers`` for the association to a move destination."""
        return [
            (evt.EVT_CONN_OPEN, self._on_connected),
            (evt.EVT_DIMSE_SENT, self._on_sent),
            (evt.EVT_DIMSE_RECV, self._on_received),
        ]

    def attach(self, assoc: Any) -> None:
        """Use the requester's own association (C-GET) for the sub-operations."""
        self.assoc = assoc
        assoc.bind(evt.EVT_DIMSE_SENT, self._on_sent)
        assoc.bind(evt.EVT_DIMSE_RECV, self._on_received)

    def detach(self, assoc: Any) -> None:
        """Undo :meth:`attach`."""
        assoc.unbind(evt.EVT_DIMSE_SENT, self._on_sent)
        assoc.unbind(evt.EVT_DIMSE_RECV, self._on_received)

    def _on_connected(self, event: events.Event) -> None:
        set_tcp_nodelay(event)
        self.assoc = event.assoc
        # Before any DIMSE message: see ResponseQueue for why.
        event.assoc.dimse.msg_queue = ResponseQueue()

    def _on_sent(self, event: events.Event) -> None:
        message = event.message
        if not isinstance(message, C_STORE_RQ) or self._staged is None:
            return  # not a C-STORE, or one carrying a dataset of its own (transcoded)
        command = message.command_set
        sop_instance_uid, payload = self._staged
        if command.AffectedSOPInstanceUID != sop_instance_uid:
            return
        self._staged = None
        # The command set and the data set are encoded after this event, as PDUs are made.
        message.data_set = BytesIO(payload)
        if self.originator:
            command.MoveOriginatorApplicationEntityTitle = self.originator

    def _on_received(self, event: events.Event) -> None:
        if not isinstance(event.message, C_STORE_RSP):
            return
        status = event.message.command_set.Status
        if status == 0x0000:
            self.completed += 1
        elif status in STORE_WARNINGS:
            self.warnings += 1

    # -- one instance ---------------------------------------------------------------------------

    def prepare(self, instance: StoredInstance) -> Dataset:
        """The dataset to yield for ``instance``.

        A stand-in whose stored bytes replace it on the wire; a transcoded dataset; or, when
        the sub-operation cannot be done, a dataset pynetdicom refuses to send (and so counts
        as failed, listing its SOP Instance UID).
        """
        uid = instance.sop_instance_uid
        self._staged = None  # a stand-in pynetdicom refused to send leaves nothing behind
        accepted = self._accepted_syntaxes(instance.sop_class_uid)
        if not accepted:
            return self._fail(instance, f"the receiver accepted no context for SOP class "
                                        f"{instance.sop_class_uid}")
        try:
            data = read_instance(self.services.store, instance)
        except StorageUnavailable as exc:  # ObjectNotFound is one
            return self._fail(instance, f"object {instance.object_key} cannot be read "
                                        f"from the object store ({type(exc).__name__}: {exc})")
        stored = UID(instance.transfer_syntax_uid)
        if stored in accepted:
            try:
                offset = dataset_offset(data)
            except InvalidInstance as exc:
                return self._fail(instance, f"stored object is not a Part-10 file: {exc}")
            payload = data[offset:]
            if stored.is_deflated and len(payload) % 2:
                # PDVs are even (PS3.8 E.2); a deflated bit stream is padded with one NUL
                # (PS3.5 A.5), which the stored file may lack.
                payload += b"\x00"
            self._staged = (uid, payload)
            return _stand_in(instance, stored)
        if not any(syntax.is_little_endian and not syntax.is_compressed for syntax in accepted):
            names = ", ".join(sorted(syntax.name for syntax in accepted))
            return self._fail(instance, f"stored as {stored.name}, the receiver accepted only "
                                        f"{names}")
        try:
            dataset = transcode_to_explicit_little_endian(data)
        except TranscodeError as exc:
            return self._fail(instance, str(exc))
        log.info("sending %s transcoded from %s: the receiver accepted none of the stored "
                 "syntaxes", uid, stored.name)
        return dataset

    def _accepted_syntaxes(self, sop_class_uid: str | None) -> set[UID]:
        if self.assoc is None or not sop_class_uid:
            return set()
        return {
            UID(context.transfer_syntax[0])
            for context in self.assoc.accepted_contexts
            if context.abstract_syntax == sop_class_uid and context.as_scu
        }

    def _fail(self, instance: StoredInstance, reason: str) -> Dataset:
        log.warning("sub-operation for %s fails: %s", instance.sop_instance_uid, reason)
        unsendable = Dataset()  # no file meta: pynetdicom refuses it before sending anything
        unsendable.SOPClassUID = instance.sop_class_uid or ""
        unsendable.SOPInstanceUID = instance.sop_instance_uid
        return unsendable


class ResponseQueue(queue.Queue[Any]):
    """The DIMSE message queue of an association that only sends requests: a message is
    taken by the caller waiting for its response, never by pynetdicom's reactor thread.

    pynetdicom's requestor reactor polls this queue (``get_msg(block=False)``) between
    ``send_c_store`` calls, and the pause that keeps it off during one is racy: preempted
    between leaving its checkpoint and clearing ``_is_paused``, the reactor looks paused,
    then takes the C-STORE response, drops it ("Received unexpected C-STORE service
    message"), and ``send_c_store`` waits out the DIMSE timeout and aborts the association,
    failing the rest of the move (twice in the first two 1,200-sub-operation benchmark runs
    on a loaded 2-core machine). A move destination sends nothing but responses, so the
    reactor has nothing to miss here.
    """

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Wait for the next message; a non-blocking get (the reactor's poll) finds none."""
        if not block:
            raise queue.Empty
        return super().get(block, timeout)


def _stand_in(instance: StoredInstance, syntax: UID) -> Dataset:
    """The dataset pynetdicom encodes and announces; the stored bytes replace it."""
    stand_in = Dataset()
    stand_in.SOPClassUID = instance.sop_class_uid
    stand_in.SOPInstanceUID = instance.sop_instance_uid
    stand_in.file_meta = FileMetaDataset()
    stand_in.file_meta.TransferSyntaxUID = syntax
    return stand_in
