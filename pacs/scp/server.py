"""The DICOM receiver: a pynetdicom Application Entity that accepts C-ECHO and C-STORE.

Every storage SOP class is accepted with every transfer syntax pynetdicom knows (implicit and
explicit little endian, big endian, deflate, JPEG, JPEG-LS, JPEG 2000, HTJ2K, RLE, MPEG...):
the bytes are stored as received, so the archive never needs to decode them to accept them.

Sockets get ``TCP_NODELAY``: pynetdicom never sets it, and without it every 0.5 MB C-STORE
response waits ~40 ms for a delayed ACK. With ``reuse_port`` several processes can listen on
one port (``SO_REUSEPORT``) and the kernel spreads associations between them.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification
from pynetdicom.transport import AssociationServer, ThreadedAssociationServer

from pacs.config import Settings
from pacs.scp import handlers
from pacs.services import Services

log = logging.getLogger("pacs.scp")


class _TunedServer(ThreadedAssociationServer):
    """pynetdicom's server with TCP_NODELAY on every socket and optional SO_REUSEPORT."""

    reuse_port = False

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def shutdown(self) -> None:
        # pynetdicom's shutdown also unregisters from AE.start_server's list, which this
        # server (made with make_server) was never on.
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def build_ae(settings: Settings) -> AE:
    """The Application Entity with the receiver's contexts and limits from the settings."""
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
    return ae


class DicomReceiver:
    """A running (or ready to run) C-STORE/C-ECHO SCP bound to the archive's services."""

    def __init__(self, settings: Settings, services: Services, *, reuse_port: bool = False):
        self.settings = settings
        self.services = services
        self.ae = build_ae(settings)
        self.assoc_log = handlers.AssociationLog()
        self._reuse_port = reuse_port
        self._server: _TunedServer | None = None
        self._thread: threading.Thread | None = None

    def _handlers(self) -> list[Any]:
        return [
            (evt.EVT_C_STORE, handlers.handle_store, [self.services, self.assoc_log]),
            (evt.EVT_ACCEPTED, handlers.handle_accepted),
            (evt.EVT_REJECTED, handlers.handle_rejected),
            (evt.EVT_RELEASED, handlers.handle_released, [self.assoc_log]),
            (evt.EVT_ABORTED, handlers.handle_aborted, [self.assoc_log]),
        ]

    @property
    def port(self) -> int:
        """The TCP port the receiver listens on."""
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind the port and serve associations in a background thread."""
        server_class = type("Server", (_TunedServer,), {"reuse_port": self._reuse_port})
        self._server = self.ae.make_server(
            (self.settings.dicom_host, self.settings.dicom_port),
            evt_handlers=self._handlers(),
            server_class=server_class,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dicom-acceptor", daemon=True
        )
        self._thread.start()
        log.info("DICOM receiver %s listening on %s:%d", self.settings.aet,
                 self.settings.dicom_host, self.port)

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let running associations finish, and never cut an ingest short.

        Associations still open after ``grace`` seconds are aborted, but only once no
        C-STORE is being archived: a sender whose instance was not acknowledged keeps it and
        sends it again, so nothing is lost either way.
        """
        server = self._server
        if server is None:
            return
        server.shutdown()  # no new associations
        deadline = time.monotonic() + grace
        # A connection that never asked for an association (a port probe, a half-open
        # socket) holds no data: only established associations are waited for.
        while self._established(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        store_deadline = time.monotonic() + self.settings.dimse_timeout
        while self.assoc_log.in_flight and time.monotonic() < store_deadline:
            time.sleep(0.01)
        for assoc in server.active_associations:
            if assoc.is_established:
                log.warning("aborting association from %s at shutdown",
                            assoc.requestor.ae_title.strip())
            else:
                log.debug("closing a connection that never asked for an association")
            assoc.abort()
        self._server = None
        log.info("DICOM receiver stopped")

    @staticmethod
    def _established(server: AssociationServer) -> list[Association]:
        return [assoc for assoc in server.active_associations if assoc.is_established]
