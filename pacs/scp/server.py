"""The DICOM receiver: a pynetdicom Application Entity for C-ECHO, C-STORE, C-FIND, C-MOVE,
C-GET and Storage Commitment, with AE access control and an optional TLS port.

The services themselves live in their own modules (``handlers`` for C-STORE, ``find``,
``retrieve``, ``commitment``, ``access``, ``tls``); this module registers their presentation
contexts (:func:`build_ae`) and event handlers (:meth:`DicomReceiver._handlers`) and runs the
listeners.

Every storage SOP class is accepted with every transfer syntax pynetdicom knows (implicit and
explicit little endian, big endian, deflate, JPEG, JPEG-LS, JPEG 2000, HTJ2K, RLE, MPEG...):
the bytes are stored as received, so the archive never needs to decode them to accept them.

Every accepted socket gets ``TCP_NODELAY``: pynetdicom never sets it, and without it every
0.5 MB C-STORE response waits ~40 ms for a delayed ACK. Associations run on the event-driven
reactor of :mod:`pacs.scp.reactor`. The listening socket may be shared by several worker
processes (:mod:`pacs.scp.workers`); an :class:`~pacs.scp.workers.AcceptGate` then says when
this process should take the next connection.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from functools import partial
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from pynetdicom.transport import AssociationServer, ThreadedAssociationServer

from pacs.config import Settings
from pacs.scp import access, find, handlers
from pacs.scp.commitment import CommitmentReporter
from pacs.scp.reactor import ReceiverRequestHandler
from pacs.scp.retrieve import configure_retrieve, retrieve_handlers
from pacs.scp.tls import server_context
from pacs.scp.uids import remember_uids
from pacs.scp.wakeup import WakeupPipe
from pacs.scp.workers import AcceptGate, SoleReceiver, bind_listener
from pacs.services import Services

log = logging.getLogger("pacs.scp")

TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds a TLS client gets to finish its handshake


class ReceiverServer(ThreadedAssociationServer):
    """pynetdicom's association server on a listening socket made elsewhere.

    It accepts one connection at a time while its gate allows, sets ``TCP_NODELAY`` on it,
    counts the connections it serves (reported to the gate) and builds each association with
    :class:`~pacs.scp.reactor.ReceiverRequestHandler`.

    Parameters
    ----------
    ae
        The Application Entity (contexts, AE title, timeouts).
    listener
        A bound, listening socket; it is made non-blocking (another process sharing it may
        take a connection first).
    gate
        Decides when to accept and hears how many connections this server serves.
    evt_handlers
        pynetdicom event bindings for every association.
    tls
        For a TLS listener: the context each connection is wrapped in. The handshake runs
        on the connection's own thread (bounded by :data:`TLS_HANDSHAKE_TIMEOUT`), never on
        the accepting one, so a client that stalls it holds up nobody else.
    """

    def __init__(self, ae: AE, listener: socket.socket, gate: AcceptGate,
                 evt_handlers: list[Any], tls: ssl.SSLContext | None = None) -> None:
        self._listener = listener
        self._gate = gate
        self._tls = tls
        self._live: set[socket.socket] = set()
        self._live_lock = threading.Lock()
        self._wakeup = WakeupPipe()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        listener.setblocking(False)
        super().__init__(ae, listener.getsockname(), ae.ae_title, ae.supported_contexts,
                         evt_handlers=evt_handlers, request_handler=ReceiverRequestHandler)
        gate.publish(0)

    # -- the socket comes from outside -------------------------------------------------------

    def server_bind(self) -> None:
        """Use the given listening socket instead of binding a new one."""
        self.socket.close()
        self.socket = self._listener
        self.server_address = self._listener.getsockname()

    def server_activate(self) -> None:
        """Nothing to do: the socket already listens."""

    def server_close(self) -> None:
        """Close this process's descriptor of the listening socket (other workers may still
        hold theirs)."""
        self.socket.close()
        self._wakeup.close()

    # -- accepting ---------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept connections while the gate allows, until :meth:`shutdown`."""
        self._stopped.clear()
        try:
            while not self._stopping.is_set():
                watched: list[Any] = [self._wakeup]
                if self._gate.may_accept():
                    watched.append(self.socket)
                ready, _, _ = select.select(watched, [], [], poll_interval)
                if self._wakeup in ready:
                    self._wakeup.clear()
                if self.socket in ready and not self._stopping.is_set():
                    self._accept()
                if not ready:
                    self.service_actions()  # pynetdicom's periodic gc.collect(), when idle
        finally:
            self._stopped.set()

    def _accept(self) -> None:
        try:
            request, address = self.get_request()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        except OSError as exc:
            log.warning("accepting a connection failed: %s", exc)
            return
        with self._live_lock:
            self._live.add(request)
        self._publish()
        try:
            self.process_request(request, address)
        except Exception:
            self.handle_error(request, address)
            self.shutdown_request(request)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection (on its own thread), after the TLS handshake if any."""
        if self._tls is not None:
            request.settimeout(TLS_HANDSHAKE_TIMEOUT)
            try:
                request = self._tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.warning("TLS handshake with %s failed: %s", client_address[0], exc)
                return
            request.settimeout(None)
        super().finish_request(request, client_address)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection and turn Nagle's algorithm off on it."""
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def shutdown_request(self, request: Any) -> None:
        """Close a connection and stop counting it (safe to call more than once)."""
        with self._live_lock:
            known = request in self._live
            self._live.discard(request)
        if known:
            self._publish()
        super().shutdown_request(request)

    def _publish(self) -> None:
        with self._live_lock:
            active = len(self._live)
        if not self._stopping.is_set():
            self._gate.publish(active)
        self._wakeup.set()  # re-read the gate now, not at the next poll

    @property
    def connections(self) -> list[socket.socket]:
        """The accepted connections not closed yet."""
        with self._live_lock:
            return list(self._live)

    def shutdown(self) -> None:
        """Stop accepting, leave the sharing, close the listening socket, and close the
        connections that have no association (yet); running associations go on."""
        self._stopping.set()
        self._gate.withdraw()
        self._wakeup.set()
        self._stopped.wait()
        self.server_close()
        established = {getattr(assoc, "client_socket", None)
                       for assoc in self.active_associations if assoc.is_established}
        for connection in self.connections:
            if connection not in established:
                with contextlib.suppress(OSError):  # the DUL sees it close, and ends
                    connection.shutdown(socket.SHUT_RDWR)


def build_ae(settings: Settings) -> AE:
    """The Application Entity with the receiver's contexts and limits from the settings."""
    remember_uids()
    ae = AE(ae_title=settings.aet)
    ae.require_called_aet = True
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.acse_timeout = 30
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    for model in (PatientRootQueryRetrieveInformationModelFind,
                  StudyRootQueryRetrieveInformationModelFind):
        ae.add_supported_context(model)
    # The requester may take the SCU role for the report on its own association.
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    configure_retrieve(ae, settings)
    return ae


class DicomReceiver:
    """A running (or ready to run) DICOM receiver bound to the archive's services.

    Parameters
    ----------
    settings
        Address, AE title, limits and timeouts.
    services
        The ingest path instances are handed to.
    listener
        A listening socket shared with other workers; by default the receiver binds
        ``settings.dicom_host:settings.dicom_port`` itself.
    gate
        When to accept (see :mod:`pacs.scp.workers`); by default always.
    tls_listener
        The listening socket of the TLS port, shared with other workers; by default the
        receiver binds ``settings.dicom_host:settings.tls_port`` itself when ``tls_port`` is
        set.
    """

    def __init__(self, settings: Settings, services: Services, *,
                 listener: socket.socket | None = None, gate: AcceptGate | None = None,
                 tls_listener: socket.socket | None = None):
        self.settings = settings
        self.services = services
        self.ae = build_ae(settings)
        self.assoc_log = handlers.AssociationLog()
        self.policy = settings.access_policy
        self.commitments = CommitmentReporter(settings)
        self._listener = listener
        self._gate = gate or SoleReceiver()
        self._tls_listener = tls_listener
        self._server: ReceiverServer | None = None
        self._tls_server: ReceiverServer | None = None
        self._thread: threading.Thread | None = None

    def _handlers(self) -> list[Any]:
        find_handler = partial(find.handle_find, fuzzy=self.settings.find_fuzzy,
                               max_results=self.settings.find_max_results)
        return [
            (evt.EVT_CONN_OPEN, access.handle_connection_open, [self.policy]),
            (evt.EVT_C_STORE, handlers.handle_store,
             [self.services, self.assoc_log, self.policy]),
            (evt.EVT_C_FIND, find_handler, [self.services, self.policy]),
            (evt.EVT_N_ACTION, self.commitments.handle_n_action, [self.services, self.policy]),
            (evt.EVT_ACCEPTED, handlers.handle_accepted),
            (evt.EVT_REJECTED, handlers.handle_rejected),
            (evt.EVT_RELEASED, handlers.handle_released, [self.assoc_log, self.services]),
            (evt.EVT_ABORTED, handlers.handle_aborted, [self.assoc_log, self.services]),
            *retrieve_handlers(self.settings, self.services, self.policy),
        ]

    @property
    def port(self) -> int:
        """The TCP port the receiver listens on."""
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        return int(self._server.server_address[1])

    @property
    def server(self) -> ReceiverServer:
        """The running association server."""
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        return self._server

    def start(self) -> None:
        """Listen (or take the shared socket) and serve associations in a background thread.

        Raises
        ------
        OSError
            If the receiver binds the port itself and cannot.
        """
        tls = server_context(self.settings)  # a bad certificate fails before any bind
        listener = self._listener or bind_listener(self.settings.dicom_host,
                                                   self.settings.dicom_port)
        self._server = ReceiverServer(self.ae, listener, self._gate, self._handlers())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dicom-acceptor", daemon=True
        )
        self._thread.start()
        log.info("DICOM receiver %s listening on %s:%d", self.settings.aet,
                 self.settings.dicom_host, self.port)
        if tls is not None:
            tls_listener = self._tls_listener or bind_listener(self.settings.dicom_host,
                                                               self.settings.tls_port)
            self._tls_server = ReceiverServer(self.ae, tls_listener, SoleReceiver(),
                                              self._handlers(), tls=tls)
            threading.Thread(target=self._tls_server.serve_forever,
                             name="dicom-tls-acceptor", daemon=True).start()
            log.info("DICOM TLS listener on %s:%d", self.settings.dicom_host,
                     tls_listener.getsockname()[1])
        if self.policy.open:
            log.warning("no access rules (the access setting is empty): any calling AE may "
                        "store, query and retrieve")

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let running associations finish, and never cut an ingest short.

        Associations still open after ``grace`` seconds are aborted, but only once no
        C-STORE is being archived: a sender whose instance was not acknowledged keeps it and
        sends it again, so nothing is lost either way.
        """
        servers = [server for server in (self._server, self._tls_server) if server is not None]
        if not servers:
            return
        for server in servers:
            server.shutdown()  # no new associations
        deadline = time.monotonic() + grace
        # A connection that never asked for an association (a port probe, a half-open
        # socket) holds no data: only established associations are waited for.
        while any(self._established(server) for server in servers) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        store_deadline = time.monotonic() + self.settings.dimse_timeout
        while self.assoc_log.in_flight and time.monotonic() < store_deadline:
            time.sleep(0.01)
        for assoc in [assoc for server in servers for assoc in server.active_associations]:
            if assoc.is_established:
                log.warning("aborting association from %s at shutdown",
                            assoc.requestor.ae_title.strip())
            else:
                log.debug("closing a connection that never asked for an association")
            assoc.abort()
        self._server = self._tls_server = None
        log.info("DICOM receiver stopped")

    @staticmethod
    def _established(server: AssociationServer) -> list[Association]:
        return [assoc for assoc in server.active_associations if assoc.is_established]
