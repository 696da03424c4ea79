"""The services every front end shares, built once per process from the settings.

``pacs serve``, ``pacs import``, the web app and the tests all call :func:`open_services`, so
they see the same object store, index and ingest path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from pacs.config import Settings
from pacs.ingest import Ingestor, IngestResult, Origin
from pacs.storage.index import Index
from pacs.storage.objects import ObjectStore, open_object_store
from pacs.storage.sql import Database


@dataclass
class Services:
    """The object store, the index and the ingest path bound to them."""

    settings: Settings
    store: ObjectStore
    db: Database
    index: Index
    ingestor: Ingestor

    def ingest(self, data: bytes | BinaryIO, origin: Origin) -> IngestResult:
        """Archive one Part-10 instance (see :mod:`pacs.ingest`)."""
        return self.ingestor.ingest(data, origin)

    def close(self) -> None:
        """Release database connections."""
        self.db.dispose()


def open_services(settings: Settings) -> Services:
    """Open the object store and the index the settings name, creating them if needed."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_object_store(settings)
    db = Database(settings.index_url, pool_size=settings.max_associations + 2)
    index = Index(db)
    return Services(settings, store, db, index, Ingestor(store, index))
