"""One contract for every object store, run against the folder and a real S3 server."""

from __future__ import annotations

import hashlib
import os

import pytest

from pacs.errors import ObjectNotFound
from pacs.storage.filesystem import FANOUT_MARKER, FilesystemObjectStore
from pacs.storage.keys import digest_of_key, instance_key, is_valid_key
from pacs.storage.objects import ObjectStore, open_object_store


@pytest.fixture
def store(backend) -> ObjectStore:
    return open_object_store(backend)


def key_for(data: bytes) -> str:
    return instance_key(hashlib.sha256(data).hexdigest())


def test_store_implements_the_protocol(store):
    assert isinstance(store, ObjectStore)


def test_put_then_open_returns_the_same_bytes(store):
    data = os.urandom(300_000)
    store.put(key_for(data), data)
    with store.open(key_for(data)) as stream:
        assert stream.read() == data


def test_put_accepts_a_stream(store, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    with source.open("rb") as stream:
        store.put(key_for(data), stream)
    assert store.size(key_for(data)) == len(data)


def test_exists_size_and_delete(store):
    data = b"DICM" * 100
    key = key_for(data)
    assert not store.exists(key)
    store.put(key, data)
    assert store.exists(key)
    assert store.size(key) == 400
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting an absent object is not an error


def test_putting_the_same_key_twice_keeps_one_object(store):
    data = b"same bytes"
    store.put(key_for(data), data)
    store.put(key_for(data), data)
    assert list(store.list("instances/")) == [key_for(data)]


def test_list_by_prefix(store):
    blobs = [f"object {i}".encode() for i in range(5)]
    for blob in blobs:
        store.put(key_for(blob), blob)
    assert sorted(store.list("instances/")) == sorted(key_for(b) for b in blobs)
    first = key_for(blobs[0])
    assert first in list(store.list(first[:13]))
    assert list(store.list("thumbnails/")) == []


def test_missing_object_raises_object_not_found(store):
    key = key_for(b"never stored")
    with pytest.raises(ObjectNotFound):
        store.open(key)
    with pytest.raises(ObjectNotFound):
        store.size(key)


@pytest.mark.parametrize(
    "key", ["../../etc/passwd", "instances/abc/../../x", "/etc/passwd", "1.2.3.4", ""]
)
def test_keys_not_made_by_the_archive_are_refused(store, key):
    with pytest.raises(ValueError, match="not made by the archive"):
        store.put(key, b"x")
    with pytest.raises(ValueError):
        store.open(key)


def test_instance_key_is_content_addressed_and_fanned_out():
    digest = hashlib.sha256(b"x").hexdigest()
    key = instance_key(digest)
    assert key == f"instances/{digest[:3]}/{digest}"
    assert is_valid_key(key)
    assert digest_of_key(key) == digest


def test_instance_key_refuses_anything_but_a_digest():
    with pytest.raises(ValueError):
        instance_key("../../etc/passwd")


def test_a_key_whose_fan_out_does_not_match_its_digest_is_invalid():
    digest = hashlib.sha256(b"x").hexdigest()
    assert not is_valid_key(f"instances/000/{digest}")


def test_filesystem_write_leaves_no_temp_file(tmp_path):
    store = FilesystemObjectStore(tmp_path / "objects")
    data = os.urandom(1000)
    store.put(key_for(data), data)
    assert [p.name for p in _files(tmp_path / "objects")] == [hashlib.sha256(data).hexdigest()]


def test_filesystem_store_makes_every_fan_out_folder_at_creation(tmp_path):
    FilesystemObjectStore(tmp_path / "objects")
    folders = sorted(p.name for p in (tmp_path / "objects" / "instances").iterdir()
                     if p.is_dir())
    assert len(folders) == 4096
    assert folders[0] == "000" and folders[-1] == "fff"


def test_filesystem_store_remakes_a_fan_out_folder_removed_by_hand(tmp_path):
    store = FilesystemObjectStore(tmp_path / "objects")
    data = os.urandom(1000)
    key = key_for(data)
    (tmp_path / "objects" / key).parent.rmdir()
    store.put(key, data)
    assert store.read_range(key, 0, len(data)) == data


def test_staged_object_is_invisible_until_published(tmp_path):
    store = FilesystemObjectStore(tmp_path / "objects")
    data = os.urandom(1000)
    staged = store.stage(key_for(data), data)
    assert not store.exists(staged.key)
    assert list(store.list()) == []
    store.publish([staged])
    assert store.read_range(staged.key, 0, len(data)) == data


def test_discarded_staged_object_leaves_nothing(tmp_path):
    store = FilesystemObjectStore(tmp_path / "objects")
    data = os.urandom(1000)
    store.discard([store.stage(key_for(data), data)])
    assert _files(tmp_path / "objects") == []


def test_filesystem_failed_write_leaves_no_object(tmp_path, monkeypatch):
    store = FilesystemObjectStore(tmp_path / "objects")
    data = os.urandom(1000)

    def broken_fsync(_fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    from pacs.errors import StorageUnavailable

    with pytest.raises(StorageUnavailable):
        store.put(key_for(data), data)
    monkeypatch.undo()
    assert not store.exists(key_for(data))
    assert _files(tmp_path / "objects") == []


def test_read_range_returns_those_bytes_and_stops_at_the_end(store):
    data = os.urandom(100_000)
    store.put(key_for(data), data)
    assert store.read_range(key_for(data), 40_000, 1234) == data[40_000:41_234]
    assert store.read_range(key_for(data), 99_990, 100) == data[99_990:]
    assert store.read_range(key_for(data), 200_000, 10) == b""
    with pytest.raises(ObjectNotFound):
        store.read_range(key_for(b"never stored"), 0, 10)


def _files(root):
    """The files under a store's root, but its fan-out marker."""
    return [p for p in root.rglob("*") if p.is_file() and p.name != FANOUT_MARKER]


def test_publishing_a_group_syncs_each_folder_once(tmp_path, monkeypatch):
    store = FilesystemObjectStore(tmp_path / "objects")
    by_folder = {}
    while not any(len(blobs) >= 2 for blobs in by_folder.values()):  # two keys, one folder
        data = os.urandom(64)
        by_folder.setdefault(key_for(data).rsplit("/", 1)[0], []).append(data)
    same_folder = next(blobs for blobs in by_folder.values() if len(blobs) >= 2)[:2]
    other = next(blobs for blobs in by_folder.values() if len(blobs) == 1)
    staged = [store.stage(key_for(data), data) for data in [*same_folder, *other]]
    synced = []
    monkeypatch.setattr("pacs.storage.filesystem._fsync_dir", synced.append)
    store.publish(staged)
    assert sorted(synced) == sorted({(tmp_path / "objects" / s.key).parent for s in staged})
    assert len(synced) == 2
