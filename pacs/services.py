"""The services every front end shares, built once per process from the settings.

``pacs serve``, ``pacs import``, the web app and the tests all call :func:`open_services`, so
they see the same object store, index and ingest path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from pacs.accounts import Accounts
from pacs.audit import AuditTrail, SyslogForwarder
from pacs.config import Settings
from pacs.ingest import Ingestor, IngestResult, Origin
from pacs.sharing import Shares
from pacs.storage.index import Index
from pacs.storage.objects import ObjectStore, open_object_store
from pacs.storage.sql import Database


@dataclass
class Services:
    """The object store, the index and the ingest path bound to them; the accounts, share
    links and audit trail kept beside the index."""

    settings: Settings
    store: ObjectStore
    db: Database
    index: Index
    ingestor: Ingestor
    accounts: Accounts
    shares: Shares
    audit: AuditTrail

    def ingest(self, data: bytes | BinaryIO, origin: Origin) -> IngestResult:
        """Archive one Part-10 instance (see :mod:`pacs.ingest`)."""
        return self.ingestor.ingest(data, origin)

    def close(self) -> None:
        """Write the queued audit records and release database connections."""
        self.audit.close()
        self.db.dispose()


def open_services(settings: Settings) -> Services:
    """Open the object store and the index the settings name, creating them if needed."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_object_store(settings)
    db = Database(settings.index_url, pool_size=settings.max_associations + 2)
    index = Index(db)
    forward = (SyslogForwarder(settings.audit_syslog, settings.aet)
               if settings.audit_syslog else None)
    return Services(settings, store, db, index, Ingestor(store, index), Accounts(db),
                    Shares(db), AuditTrail(db, forward=forward))
