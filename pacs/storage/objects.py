"""The object-store protocol every backend implements, and the factory that picks one.

Nothing vendor-specific: ``put`` (atomic: a reader sees the whole object or none), or the same
in two steps for the ingest path's group commit (``stage`` the bytes durably, then ``publish``
many staged objects at once, or ``discard`` them), ``open`` (a stream), ``read_range`` (some
bytes from the middle: one frame of an instance), ``exists``, ``size``, ``delete`` and
``list`` (keys by prefix). Keys come only from :mod:`pacs.storage.keys`; backends refuse
anything else.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

from pacs.config import Settings

CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class StagedObject:
    """An object written by :meth:`ObjectStore.stage` and not yet published."""

    key: str
    temp: str | None = None
    """Where the bytes wait (a backend's own name), or None when there is nothing left to
    publish (the object existed already, or the backend wrote it in place)."""


@runtime_checkable
class ObjectStore(Protocol):
    """Where the archived bytes live."""

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        """Store ``data`` under ``key`` atomically and durably; a no-op if ``key`` exists."""

    def stage(self, key: str, data: bytes | BinaryIO) -> StagedObject:
        """Write ``data`` durably, not yet visible under ``key`` (a backend whose writes are
        atomic anyway may publish at once); a no-op if ``key`` exists."""

    def publish(self, staged: Sequence[StagedObject]) -> None:
        """Make staged objects visible under their keys, durably, all before returning."""

    def discard(self, staged: Sequence[StagedObject]) -> None:
        """Drop staged objects that will not be published (never a published object)."""

    def open(self, key: str) -> BinaryIO:
        """Return a readable stream of the object; raise ``ObjectNotFound`` if absent."""

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """The ``length`` bytes from ``offset`` (fewer when the object ends sooner); raise
        ``ObjectNotFound`` if absent."""

    def exists(self, key: str) -> bool:
        """True if an object is stored under ``key``."""

    def size(self, key: str) -> int:
        """The object's size in bytes; raise ``ObjectNotFound`` if absent."""

    def delete(self, key: str) -> None:
        """Remove the object; removing an absent object is not an error."""

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys that start with ``prefix``, in no particular order."""


def open_object_store(settings: Settings) -> ObjectStore:
    """Build the object store the settings name (``filesystem`` or ``s3``)."""
    if settings.object_store == "s3":
        from pacs.storage.s3 import S3ObjectStore

        return S3ObjectStore.from_settings(settings)
    from pacs.storage.filesystem import FilesystemObjectStore

    return FilesystemObjectStore(settings.objects_path)
