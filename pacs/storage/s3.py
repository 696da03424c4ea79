"""Object store on MinIO or any S3 server, through the ``minio`` client.

A single PUT is atomic on S3, so there is no temp-and-rename dance; the bucket is created at
start if it is missing. Errors from the client are wrapped into the archive's error tree here.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from pacs.config import Settings
from pacs.errors import ObjectNotFound, StorageFull, StorageUnavailable
from pacs.storage.keys import is_valid_key
from pacs.storage.objects import StagedObject

_MISSING = ("NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound")
_PART_SIZE = 16 * 1024 * 1024


class S3ObjectStore:
    """Objects in one S3 bucket, one object per key."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        try:
            if not client.bucket_exists(bucket_name=bucket):
                client.make_bucket(bucket_name=bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StorageUnavailable(f"cannot use bucket {bucket!r}: {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"cannot reach the S3 server: {exc}") from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ObjectStore:
        """Connect with the ``s3_*`` settings (a pool big enough for every association)."""
        http = urllib3.PoolManager(
            maxsize=max(10, settings.max_associations),
            timeout=urllib3.Timeout(connect=10, read=120),
            retries=urllib3.Retry(
                total=3, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)
            ),
        )
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region or None,
            http_client=http,
        )
        return cls(client, settings.s3_bucket)

    def __repr__(self) -> str:
        return f"S3ObjectStore(bucket={self.bucket!r})"

    @staticmethod
    def _check(key: str) -> str:
        if not is_valid_key(key):
            raise ValueError(f"refusing object key not made by the archive: {key!r}")
        return key

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        """Upload the object in one PUT (multipart for streams of unknown length)."""
        self._check(key)
        try:
            if isinstance(data, bytes | bytearray | memoryview):
                self.client.put_object(
                    bucket_name=self.bucket, object_name=key,
                    data=io.BytesIO(data), length=len(data),
                    content_type="application/dicom",
                )
            else:
                self.client.put_object(
                    bucket_name=self.bucket, object_name=key, data=data, length=-1,
                    part_size=_PART_SIZE, content_type="application/dicom",
                )
        except S3Error as exc:
            if exc.code in ("QuotaExceeded", "XMinioStorageFull", "EntityTooLarge"):
                raise StorageFull(f"S3 refused object {key}: {exc.code}") from exc
            raise StorageUnavailable(f"S3 refused object {key}: {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"cannot write object {key} to S3: {exc}") from exc

    def stage(self, key: str, data: bytes | BinaryIO) -> StagedObject:
        """One PUT is atomic and durable on S3: the object is published at once."""
        self.put(key, data)
        return StagedObject(key)

    def publish(self, staged: Sequence[StagedObject]) -> None:
        """Nothing to do: :meth:`stage` published each object."""

    def discard(self, staged: Sequence[StagedObject]) -> None:
        """Nothing to do: a published object may be shared by another instance (the keys
        are content addresses), so it is left for the sweep."""

    def open(self, key: str) -> BinaryIO:
        """Stream the object; the stream releases its connection when closed."""
        self._check(key)
        try:
            response = self.client.get_object(bucket_name=self.bucket, object_name=key)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectNotFound(key) from None
            raise StorageUnavailable(f"cannot read object {key}: {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"cannot read object {key} from S3: {exc}") from exc
        return _ResponseStream(response)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """One ranged GET (HTTP ``Range``): only those bytes cross the network."""
        self._check(key)
        if length <= 0:
            return b""
        try:
            response = self.client.get_object(bucket_name=self.bucket, object_name=key,
                                              offset=offset, length=length)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectNotFound(key) from None
            if exc.code == "InvalidRange":  # starts past the end
                return b""
            raise StorageUnavailable(f"cannot read object {key}: {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"cannot read object {key} from S3: {exc}") from exc
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        """True if ``stat`` finds the object."""
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        """The object's size from a HEAD request."""
        self._check(key)
        try:
            stat = self.client.stat_object(bucket_name=self.bucket, object_name=key)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectNotFound(key) from None
            raise StorageUnavailable(f"cannot stat object {key}: {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"cannot stat object {key} on S3: {exc}") from exc
        return int(stat.size or 0)

    def delete(self, key: str) -> None:
        """Remove the object (S3 treats an absent key as success)."""
        self._check(key)
        try:
            self.client.remove_object(bucket_name=self.bucket, object_name=key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"cannot delete object {key}: {exc}") from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key under ``prefix``."""
        try:
            for obj in self.client.list_objects(
                bucket_name=self.bucket, prefix=prefix, recursive=True
            ):
                if obj.object_name is not None:
                    yield obj.object_name
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"cannot list objects under {prefix!r}: {exc}") from exc


class _ResponseStream(io.RawIOBase):
    """A readable stream over a minio response that returns its connection on close."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._response.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()
