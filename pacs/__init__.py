"""Filmless PACS: a DICOM archive that keeps every image in object storage and indexes it."""

from pacs.config import Settings
from pacs.ingest import IngestResult, IngestStatus, Origin
from pacs.services import Services, open_services

__all__ = ["IngestResult", "IngestStatus", "Origin", "Services", "Settings", "open_services"]
__version__ = "0.1.0"
