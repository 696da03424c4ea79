"""Event-driven replacements for pynetdicom's polling loops, for the receiver's associations.

Why this module exists
----------------------
pynetdicom 3.0 runs two threads per association, and both poll:

* the DUL thread (``DULServiceProvider.run_reactor``) sleeps 1 ms whenever it finds nothing
  to do, then asks ``select`` (timeout 0) whether the socket has data;
* the association thread (``Association._run_reactor``) sleeps 1 ms on *every* turn before
  looking for a decoded DIMSE message.

On the 2-core machine of the benchmark one idle association costs ~22 % of a core, every
C-STORE waits up to two extra milliseconds (request noticed late, response noticed late), and
with four associations the polling alone takes most of a core from the ingest path.

The classes below keep pynetdicom's state machine, ACSE, DIMSE and service classes, and
replace only the loops and the PDU read:

* the DUL thread blocks in ``select`` on the socket *and* a wake-up pipe written whenever
  the association hands it something to send (:mod:`pacs.scp.wakeup`);
* the association thread blocks on an event set whenever the DUL delivers a DIMSE message or
  an ACSE primitive, or stops;
* a P-DATA-TF PDU is read with one ``recv_into`` into one buffer (pynetdicom reads 4 KiB at a
  time and copies each 128 KiB PDU six times), its fragments are ``memoryview`` slices of it,
  and in the established state (Sta6 + Evt10 = DT-2) they go straight to DIMSE
  (:mod:`pacs.scp.dimse`) instead of through the event queue and transition table;
* a connection that closes before asking for an association (a port probe, a load
  balancer's health check) frees its thread at once, not after the 30 s ACSE timeout;
* the ~170 supported contexts are not deep-copied for each association (~100 ms of CPU
  re-validating ~10,000 UIDs; negotiation only reads them), and pynetdicom's logging
  handlers are not bound while its logger is quieter than INFO;
* a :class:`pacs.scp.dimse.PDataRun` (the responses of a C-FIND, several PDUs) is written by
  the DUL with one socket call instead of one turn of its loop per PDU;
* C-FIND requests are answered by :func:`pacs.scp.find.serve_find` instead of pynetdicom's
  service class, the rest by pynetdicom's.

These override private methods of pynetdicom (``DULServiceProvider.run_reactor``,
``_read_pdu_data``, ``_process_recv_primitive``, ``Association._run_reactor``,
``Association._abort_blocking``, ``Association._serve_request``,
``RequestHandler._create_association``).
They are written against pynetdicom 3.0.4; ``tests/test_scp_reactor.py`` pins the source of
every upstream function replaced or mirrored here, so an upgrade that changes one fails
loudly and names it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import struct
import threading
from datetime import datetime
from typing import Any, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import TRANSITION_TABLE
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_items import PresentationDataValueItem
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import QueryRetrieveServiceClass
from pynetdicom.transport import AssociationSocket, RequestHandler

from pacs.scp.dimse import PDataRun, ReceiverDIMSE
from pacs.scp.find import serve_find
from pacs.scp.wakeup import WakeupPipe, WakingQueue

LOGGER = logging.getLogger("pynetdicom.dul")  # pynetdicom's messages keep pynetdicom's logger

#: Longest a loop blocks without news; bounds the delay of timer checks (ARTIM, network).
MAX_WAIT = 0.5
_P_DATA_TF = 0x04
_PDU_TYPES = frozenset(range(0x01, 0x08))
#: Largest PDU read into a buffer allocated up front (anything larger grows as it arrives).
PREALLOCATE = 4 << 20
_PDU_EVENTS = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV)
_FSM_EVENTS = (evt.EVT_FSM_TRANSITION,)
#: The C-FIND SOP classes the receiver answers itself (:meth:`ReceiverAssociation._serve_request`).
_FIND_SOP_CLASSES = frozenset(QueryRetrieveServiceClass._SUPPORTED_UIDS["C-FIND"])
#: Put on the service user's queue when the peer leaves before requesting an association.
CONNECTION_LOST = object()
_PYNETDICOM_LOG = logging.getLogger("pynetdicom")
#: pynetdicom's logging handlers, bound to every association (INFO and DEBUG messages only).
_STANDARD_LOG_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)


def recv_exactly(sock: socket.socket, size: int) -> bytearray:
    """Read ``size`` bytes from ``sock`` (fewer only if the peer closes the connection).

    Up to :data:`PREALLOCATE` bytes are read straight into one buffer; a larger length
    (which a peer may claim in a PDU header without sending it) grows the buffer only as
    the bytes arrive.
    """
    if size <= PREALLOCATE:
        buffer = bytearray(size)
        nr_read = 0
        with memoryview(buffer) as view:
            while nr_read < size:
                got = sock.recv_into(view[nr_read:])
                if not got:
                    break
                nr_read += got
        del buffer[nr_read:]
        return buffer
    buffer = bytearray()
    while len(buffer) < size:
        chunk = sock.recv(min(size - len(buffer), PREALLOCATE))
        if not chunk:
            break
        buffer += chunk
    return buffer


class ReceiverDUL(DULServiceProvider):
    """The DICOM Upper Layer provider of one association, woken by events instead of polling."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self.wakeup = WakeupPipe()
        self.to_provider_queue = WakingQueue(self.wakeup.set)  # type: ignore[assignment]
        self._delivered = False  # a PDU went straight to DIMSE in this turn of the loop

    # -- the loop ---------------------------------------------------------------------------

    def run_reactor(self) -> None:
        """Run the state machine until killed, sleeping in ``select`` when there is nothing
        to do (replaces pynetdicom's loop, which sleeps 1 ms and polls)."""
        self._idle_timer.start()
        sock = cast(AssociationSocket, self.socket)
        self.assoc._dul_ready.set()
        try:
            while not self._kill_thread:
                if self._artim_due():
                    self.event_queue.put("Evt18")
                self._delivered = False
                try:
                    if self._process_recv_primitive():  # something to send
                        pass
                    elif self._is_transport_event():  # something received
                        self._idle_timer.restart()
                except Exception as exc:  # as pynetdicom does: abort, bypassing the FSM
                    LOGGER.error("Exception in DUL.run(), aborting association")
                    LOGGER.exception(exc)
                    self._abort_now(sock)
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    if not self._delivered:  # else look for the next PDU at once
                        self._wait(sock)
                    continue
                state = self.state_machine.current_state
                self.state_machine.do_action(event)
                if state == "Sta2" and event in ("Evt17", "Evt18"):
                    # Closed (or timed out) before any A-ASSOCIATE-RQ: a port probe. Release
                    # the association thread now instead of after the ACSE timeout.
                    self.to_user_queue.put(CONNECTION_LOST)  # type: ignore[arg-type]
        finally:
            self.wakeup.close()
            self._notify_assoc()

    def _process_recv_primitive(self) -> bool:
        """Act on the next primitive the association queued to send, if any: a
        :class:`PDataRun` is written here, anything else goes to the state machine."""
        try:
            primitive = self.to_provider_queue.queue[0]
        except IndexError:
            return False
        if isinstance(primitive, PDataRun):
            self.to_provider_queue.get(block=False)
            self.send_run(primitive)
            return True
        return bool(super()._process_recv_primitive())

    def send_run(self, run: PDataRun) -> None:
        """Write a run of P-DATA-TF PDUs with one socket call.

        What the state machine does for each P-DATA (DT-1 in Sta6, AR-7 in Sta8: send a
        P-DATA-TF, stay) without a turn of the loop per PDU; ``EVT_PDU_SENT`` handlers still
        see each PDU. In any other state the association is ending, and the run is dropped
        as the state machine would refuse it.
        """
        state = self.state_machine.current_state
        if state not in ("Sta6", "Sta8") or self.socket is None:
            LOGGER.warning("%d P-DATA-TF PDUs not sent: the association is no longer "
                           "established (%s)", len(run.pdus), state)
            return
        self.socket.send(run.encoded)
        if self.assoc.get_handlers(evt.EVT_PDU_SENT):
            for values in run.pdus:
                primitive = P_DATA()
                primitive.presentation_data_value_list = values
                evt.trigger(self.assoc, evt.EVT_PDU_SENT, {"pdu": P_DATA_TF(primitive)})

    def _wait(self, sock: AssociationSocket) -> None:
        """Block until the socket is readable, something is queued to send, or a timer is
        due."""
        if self._kill_thread or not self.to_provider_queue.empty():
            return
        timeout = MAX_WAIT
        if self._artim_running():
            timeout = max(0.0, min(timeout, self.artim_timer.remaining))
        watched: list[Any] = [self.wakeup]
        raw = sock.socket
        if raw is not None and raw.fileno() >= 0:
            watched.append(raw)
        # A socket closed under us raises here; the next turn of the loop reports it.
        with contextlib.suppress(OSError, ValueError):
            ready, _, _ = select.select(watched, [], [], timeout)
            if self.wakeup in ready:
                # Drained after the queue check above: a put after this point writes again.
                self.wakeup.clear()

    def _artim_running(self) -> bool:
        """True while the ARTIM timer runs in a state its expiry (Evt18) applies to."""
        timer = self.artim_timer
        return (
            timer.timeout is not None
            and timer._start_time is not None
            and timer._end_time is None
            and ("Evt18", self.state_machine.current_state) in TRANSITION_TABLE
        )

    def _artim_due(self) -> bool:
        """True if the ARTIM timer has expired and its expiry must be acted on.

        pynetdicom queues Evt18 whenever the timer reads expired, which a timer stopped
        after its expiry does for ever (and Evt18 is invalid once back in Sta1).
        """
        return self._artim_running() and self.artim_timer.remaining < 0

    def _abort_now(self, sock: AssociationSocket) -> None:
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        sock.send(abort_pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True

    def _notify_assoc(self) -> None:
        """Tell the association thread that the DUL has stopped: wake its loop, or release it
        from waiting for an A-ASSOCIATE-RQ that can no longer come."""
        assoc = self.assoc
        if not (assoc.is_established or assoc.is_released or assoc.is_aborted
                or assoc.is_rejected):
            self.to_user_queue.put(CONNECTION_LOST)  # type: ignore[arg-type]
        wake = getattr(assoc, "wake", None)
        if wake is not None:
            wake.set()

    def receive_pdu(self, wait: bool = False, timeout: float | None = None) -> Any:
        """The next primitive for the service user, or None (also if the connection closed
        before an association was requested)."""
        primitive = super().receive_pdu(wait=wait, timeout=timeout)
        return None if primitive is CONNECTION_LOST else primitive

    def kill_dul(self) -> None:
        """Stop the reactor at its next turn."""
        super().kill_dul()
        self.wakeup.set()

    def stop_dul(self) -> bool:
        """Stop the reactor if the state machine is idle (Sta1); True once it has stopped."""
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self.wakeup.set()
            if self.is_alive() and threading.current_thread() is not self:
                self.join()
            return True
        return False

    # -- reading a PDU ----------------------------------------------------------------------

    def _read_pdu_data(self) -> None:
        """Read one PDU; a P-DATA-TF is decoded without copying its fragments.

        Other PDU types (association negotiation, release, abort) are rare and go through
        pynetdicom's own decoder.
        """
        sock = cast(AssociationSocket, self.socket)
        raw = cast(socket.socket, sock.socket)
        try:
            header = recv_exactly(raw, 6)
        except (OSError, TimeoutError) as exc:
            LOGGER.error("Connection closed before the entire PDU was received")
            LOGGER.exception(exc)
            self.event_queue.put("Evt17")
            return
        if len(header) < 6:
            self.event_queue.put("Evt17")
            return
        pdu_type, _, pdu_length = struct.unpack(">BBL", header)
        if pdu_type not in _PDU_TYPES:
            LOGGER.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
            self.event_queue.put("Evt19")
            return
        try:
            body = recv_exactly(raw, pdu_length)
        except (OSError, TimeoutError) as exc:
            LOGGER.error("Connection closed before the entire PDU was received")
            LOGGER.exception(exc)
            self.event_queue.put("Evt17")
            return
        if len(body) != pdu_length:
            LOGGER.error(
                f"The received PDU is shorter than expected ({6 + len(body)} of "
                f"{6 + pdu_length} bytes received)"
            )
            self.event_queue.put("Evt17")
            return
        fast = pdu_type == _P_DATA_TF and not self._observed(_PDU_EVENTS)
        try:
            if fast:
                pdu: Any = decode_p_data_tf(body)
                event = "Evt10"
            else:
                pdu, event = self._decode_pdu(header + body)
        except Exception as exc:
            LOGGER.error("Unable to decode the received PDU data")
            LOGGER.exception(exc)
            self.event_queue.put("Evt19")
            return
        if (fast and self.state_machine.current_state == "Sta6" and self.event_queue.empty()
                and not self._observed(_FSM_EVENTS)):
            # Sta6 + Evt10 is DT-2 (PS3.8 9.2): hand the data to DIMSE, state unchanged.
            # Done here rather than through the event queue and the transition table.
            self.assoc.dimse.receive_primitive(pdu.to_primitive())
            self._delivered = True
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _observed(self, events: tuple[Any, ...]) -> bool:
        """True if a handler is bound to one of ``events`` (then pynetdicom's own path runs,
        and triggers them)."""
        return any(self.assoc.get_handlers(event) for event in events)


def decode_p_data_tf(body: bytearray) -> P_DATA_TF:
    """A P-DATA-TF PDU (PS3.8 9.3.5) from the bytes after its 6-byte header.

    Each Presentation Data Value is a ``memoryview`` into ``body``: the fragments are not
    copied. Raises ``ValueError`` if an item runs past the end of the PDU.
    """
    pdu = P_DATA_TF()
    view = memoryview(body)
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < 6:
            raise ValueError("truncated presentation data value item")
        (item_length,) = struct.unpack_from(">L", body, offset)
        if item_length < 2 or offset + 4 + item_length > end:
            raise ValueError("presentation data value item longer than its PDU")
        item = PresentationDataValueItem()
        item.presentation_context_id = body[offset + 4]
        item.presentation_data_value = view[offset + 5 : offset + 4 + item_length]  # type: ignore[assignment]
        pdu.presentation_data_value_items.append(item)
        offset += 4 + item_length
    if not pdu.presentation_data_value_items:
        raise ValueError("P-DATA-TF without presentation data value items")
    return pdu


class ReceiverAssociation(Association):
    """An acceptor association whose thread sleeps until the DUL has news for it."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        #: Set whenever the DUL delivers something or stops; the reactor waits on it.
        self.wake = threading.Event()
        self.dul = ReceiverDUL(self)
        self.dul.to_user_queue = WakingQueue(self.wake.set)  # type: ignore[assignment]
        self.dimse = ReceiverDIMSE(self)
        self.dimse.msg_queue = WakingQueue(self.wake.set)  # type: ignore[assignment]
        #: The accepted connection (closed and uncounted by the server when the thread ends).
        self.client_socket: socket.socket | None = None
        # The timeouts live on the DUL's timers: set them again on the new DUL.
        self.acse_timeout = ae.acse_timeout
        self.network_timeout = ae.network_timeout

    def bind(self, event: Any, handler: Any, args: list[Any] | None = None) -> None:
        """Bind ``handler`` to ``event``, except pynetdicom's standard logging handlers while
        the ``pynetdicom`` logger is quieter than INFO.

        Those handlers format every PDU and DIMSE message (and copy each received dataset to
        test that it is not empty) for messages nobody reads; bound, they would also send
        every C-STORE through pynetdicom's slower codec (see :mod:`pacs.scp.dimse`).
        """
        if (event, handler) in _STANDARD_LOG_HANDLERS and not _PYNETDICOM_LOG.isEnabledFor(
            logging.INFO
        ):
            return
        super().bind(event, handler, args)

    def run_reactor(self) -> None:
        """Run the association; when it ends, tell the server its connection is closed."""
        try:
            super().run_reactor()
        finally:
            if self._server is not None and self.client_socket is not None:
                self._server.shutdown_request(self.client_socket)

    def _abort_blocking(self, block: bool = True) -> None:
        """Abort the association; a connection that has not asked for one yet is closed.

        pynetdicom's state machine has no A-ABORT for a connection still waiting for its
        A-ASSOCIATE-RQ (Sta2), or not yet seen by the DUL (Sta1): sending one kills the DUL
        thread. Shutting the socket down instead lets the DUL see the connection close and
        end as for a port probe. (``abort()`` and, inside event handlers,
        ``_abort_nonblocking()`` both come here.)
        """
        state = self.dul.state_machine.current_state
        if ("Evt15", state) not in TRANSITION_TABLE and self.client_socket is not None:
            with contextlib.suppress(OSError):
                self.client_socket.shutdown(socket.SHUT_RDWR)
            return
        super()._abort_blocking(block)

    def _serve_request(self, msg: Any, context_id: int) -> None:
        """Serve a DIMSE request; C-FIND on a C-FIND context by :func:`pacs.scp.find.serve_find`.

        The checks and bookkeeping around it mirror pynetdicom 3.0.4's
        ``Association._serve_request`` (pinned in ``tests/test_scp_reactor.py``): a request
        during release is ignored, one on an unknown context aborts, C-CANCELs received
        before or during are forgotten after, and a failure aborts.
        """
        context = self._accepted_cx.get(context_id)
        if (
            not isinstance(msg, C_FIND)
            or not msg.is_valid_request
            or context is None
            or context.abstract_syntax not in _FIND_SOP_CLASSES
            or self._sent_release
        ):
            super()._serve_request(msg, context_id)
            return
        try:
            self.dimse.cancel_req = {}
            self._is_paused = True  # in case the handler calls one of the send_*() methods
            serve_find(self, msg, context)
            self._is_paused = False
            self.dimse.cancel_req = {}
        except Exception as exc:
            LOGGER.exception(exc)
            self.abort()

    def kill(self) -> None:
        """Stop the association's reactor and its DUL."""
        self._kill = True
        self.wake.set()
        super().kill()

    def _run_reactor(self) -> None:
        """The acceptor's loop: pynetdicom's checks, run when woken instead of every 1 ms."""
        self._is_paused = False
        while not self._kill:
            self.wake.wait(self._wait_time())
            self.wake.clear()
            # Paused by release() or a send_*() from a handler: wait for it to finish.
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self.wake.set()  # more may be queued: look again before sleeping
                self._serve_request(msg, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                LOGGER.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                LOGGER.info(log_msg)
                self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                LOGGER.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return

    def _wait_time(self) -> float:
        """Seconds until the network (idle) timer is due, at most :data:`MAX_WAIT`."""
        timer = self.dul._idle_timer
        if timer.timeout is None:
            return MAX_WAIT
        return max(0.0, min(MAX_WAIT, timer.remaining))


class ReceiverRequestHandler(RequestHandler):
    """pynetdicom's request handler, building :class:`ReceiverAssociation` acceptors."""

    def _create_association(self) -> Association:
        # Mirrors pynetdicom 3.0.4 RequestHandler._create_association with our classes.
        assoc = ReceiverAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        timestamp = datetime.strftime(datetime.now(), "%Y%m%d%H%M%S")
        assoc.name = f"AcceptorThread@{timestamp}"
        assoc.client_socket = self.request
        sock = AssociationSocket(assoc, client_socket=self.request)
        assoc.set_socket(sock)

        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        # pynetdicom deep-copies the ~170 contexts x ~50 transfer syntaxes here, re-validating
        # ~10,000 UIDs: ~100 ms of CPU per association. Negotiation only reads them.
        assoc.acceptor.supported_contexts = list(self.server.contexts)
        assoc.requestor.address_info = self.remote

        for event in self.server._handlers:
            if event.is_intervention and self.server._handlers[event]:
                assoc.bind(event, *self.server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in self.server._handlers[event]:
                    handler = cast(evt._HandlerBase, handler)
                    assoc.bind(event, handler[0], handler[1])
        return assoc
