"""The archive's exceptions, one tree for every front end.

::

    PacsError
     ├── InvalidInstance          the bytes are not a DICOM instance we can archive
     │    └── InvalidUID          a Study/Series/SOP UID is missing or not digits-and-dots
     ├── UnsupportedSOPClass      not a storage SOP class
     ├── StorageFull              the object store or the index has no room left
     ├── StorageUnavailable       the object store cannot be reached or failed
     │    └── ObjectNotFound      no object under that key
     └── IndexUnavailable         the SQL index cannot be reached or failed

Third-party exceptions (minio ``S3Error``, SQLAlchemy ``OperationalError``, ``OSError``,
pydicom's ``InvalidDicomError``) are wrapped where they enter, in ``pacs.storage`` and
``pacs.ingest``; each edge (DIMSE statuses, HTTP) maps this tree in one table.
"""

from __future__ import annotations


class PacsError(Exception):
    """Base of every error the archive raises on purpose."""


class InvalidInstance(PacsError):
    """The data is not a DICOM instance the archive can keep (the message says why)."""


class InvalidUID(InvalidInstance):
    """A UID is missing, empty, too long or has characters other than digits and dots."""


class UnsupportedSOPClass(PacsError):
    """The SOP class is not one the archive stores."""


class StorageFull(PacsError):
    """No space left in the object store or the index."""


class StorageUnavailable(PacsError):
    """The object store failed or cannot be reached."""


class ObjectNotFound(StorageUnavailable):
    """No object is stored under the key asked for."""


class IndexUnavailable(PacsError):
    """The index database failed or cannot be reached."""


class IndexConflict(IndexUnavailable):
    """The database broke a lock cycle or a serialisation conflict; a retry will succeed."""
