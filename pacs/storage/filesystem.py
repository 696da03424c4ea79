"""Object store on a local folder: temp file in the same folder, fsync, rename, fsync folder.

A crash at any point leaves either no file or the whole file under the final name, never a
half file; leftover ``.*.tmp`` files are ignored by :meth:`list` (a sweep, still to come, will
remove them). The ingest path writes in two steps (:meth:`FilesystemObjectStore.stage` in each
caller's thread, :meth:`FilesystemObjectStore.publish` once for a group of callers), so that
the folder syncs of a group are one journal commit rather than one per instance.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from pacs.errors import ObjectNotFound, StorageFull, StorageUnavailable
from pacs.storage.keys import fanout_folders, is_valid_key
from pacs.storage.objects import CHUNK_SIZE, StagedObject

TMP_SUFFIX = ".tmp"
FANOUT_MARKER = ".fanout-made"
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


class FilesystemObjectStore:
    """Objects as files under ``root``, one file per key."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._make_fanout()

    def __repr__(self) -> str:
        return f"FilesystemObjectStore({str(self.root)!r})"

    def _make_fanout(self) -> None:
        """Create the 4,096 fan-out folders once, so that no write has to make (and sync)
        a folder: on a fresh archive nearly every instance of the first thousands did."""
        marker = self.root / FANOUT_MARKER
        if marker.exists():
            return
        folders = [self.root / folder for folder in fanout_folders()]
        parents = dict.fromkeys(folder.parent for folder in folders)
        for parent in parents:
            parent.mkdir(parents=True, exist_ok=True)
        for folder in folders:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder)
        for parent in parents:  # one sync per parent makes all its new entries durable
            _fsync_dir(parent)
        marker.touch()
        _fsync_dir(self.root)

    def _path(self, key: str) -> Path:
        # Keys are made by pacs.storage.keys only; refusing anything else means no caller can
        # ever turn received text into a path, even by mistake.
        if not is_valid_key(key):
            raise ValueError(f"refusing object key not made by the archive: {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        """Write the object atomically and durably; a no-op if it already exists."""
        self.publish([self.stage(key, data)])

    def stage(self, key: str, data: bytes | BinaryIO) -> StagedObject:
        """Write the object's bytes durably under a temporary name in its folder.

        Nothing is visible under ``key`` until :meth:`publish`; a no-op (nothing staged) if
        the object already exists.
        """
        path = self._path(key)
        if path.exists():
            return StagedObject(key)  # content-addressed: the same key holds the same bytes
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
        try:
            try:
                fd = os.open(tmp, _CREATE_FLAGS, 0o644)
            except FileNotFoundError:  # a fan-out folder removed by hand: make it again
                self._make_folder(path.parent)
                fd = os.open(tmp, _CREATE_FLAGS, 0o644)
            try:
                with open(fd, "wb", closefd=False) as fh:
                    if isinstance(data, bytes | bytearray | memoryview):
                        fh.write(data)
                    else:
                        while chunk := data.read(CHUNK_SIZE):
                            fh.write(chunk)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _storage_error(exc, key) from exc
        return StagedObject(key, str(tmp))

    def publish(self, staged: Sequence[StagedObject]) -> None:
        """Rename staged objects to their keys, durably: each folder is synced once, however
        many of them it received (the first sync commits the journal for all)."""
        folders: dict[Path, None] = {}
        try:
            for item in staged:
                if item.temp is not None:
                    path = self._path(item.key)
                    os.replace(item.temp, path)
                    folders[path.parent] = None
            for folder in folders:
                _fsync_dir(folder)
        except OSError as exc:
            self.discard(staged)
            raise _storage_error(exc, staged[0].key) from exc

    def _make_folder(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents under the root, durably."""
        missing = []
        while folder != self.root and not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
            # Sync the parent even when another writer won the race to make the folder: its
            # sync may not have happened yet, and ours must not depend on it.
            _fsync_dir(folder.parent)

    def discard(self, staged: Sequence[StagedObject]) -> None:
        """Remove staged objects that will not be published."""
        for item in staged:
            if item.temp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(item.temp)

    def open(self, key: str) -> BinaryIO:
        """Open the object for reading."""
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageUnavailable(f"cannot read object {key}: {exc.strerror}") from exc

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes from ``offset`` with one positioned read."""
        with self.open(key) as stream:
            try:
                return os.pread(stream.fileno(), length, offset)
            except OSError as exc:
                raise StorageUnavailable(f"cannot read object {key}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        """True if the object's file exists."""
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        """The object's size in bytes."""
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def delete(self, key: str) -> None:
        """Remove the object's file if it exists."""
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield keys under ``prefix`` (temp files of writes in progress are skipped)."""
        for dirpath, _dirs, files in os.walk(self.root):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith("."):  # a write in progress, or the fan-out marker
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    yield key


def _storage_error(exc: OSError, key: str) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"no space left for object {key}")
    return StorageUnavailable(f"cannot write object {key}: {exc.strerror}")


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
