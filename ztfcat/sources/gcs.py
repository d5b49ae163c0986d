"""Thin I/O over Google Cloud Storage: list a bucket's MD5s, stream an object.

``google-cloud-storage`` is an optional extra (``pip install ztfcat[gcs]``), so it is imported inside the
functions that need it.  Every failure the library or the auth layer raises comes out as
:class:`~ztfcat.errors.StorageError` (or :class:`~ztfcat.errors.ChecksumMismatchError` for a damaged
read) with the bucket or ``gs://`` URL in the message.

Setting ``STORAGE_EMULATOR_HOST`` (e.g. ``http://127.0.0.1:9023``) points everything at a local emulator
with anonymous credentials, which is how the tests run.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from ztfcat.errors import ChecksumMismatchError, StorageError

from .names import classify

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Client

TIMEOUT = 60.0
"""Seconds allowed for each HTTP request to GCS (connect and read)."""

CHUNK_SIZE = 8 * 1024 * 1024
"""Bytes fetched per ranged request when streaming; bounds the memory a read holds."""

EMULATOR_PROJECT = "ztfcat-emulator"

"""Base names of nightly releases, odd ones included (``_programid3``, plain ``.tar``, ``.tar.tar``)."""


class BucketObject(NamedTuple):
    """One object of a bucket: name, size in bytes and base64 MD5 (``None`` for composite objects)."""

    name: str
    size: int
    md5_base64: str | None


def parse_gs_url(url: str) -> tuple[str, str]:
    """Split ``gs://bucket/path/to/object`` into ``(bucket, path)``; the path may be empty.

    Raises
    ------
    ValueError
        If ``url`` does not start with ``gs://`` or names no bucket.
    """
    if not url.startswith("gs://"):
        raise ValueError(f"not a gs:// URL: {url!r}")
    bucket, _, path = url[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    return bucket, path


def _split_location(url_or_bucket_path: str) -> tuple[str, str]:
    """``gs://bucket/path`` or ``bucket/path`` as ``(bucket, path)``, with a non-empty path."""
    if url_or_bucket_path.startswith("gs://"):
        bucket, path = parse_gs_url(url_or_bucket_path)
    else:
        bucket, _, path = url_or_bucket_path.partition("/")
    if not bucket or not path:
        raise ValueError(f"need gs://bucket/object, got {url_or_bucket_path!r}")
    return bucket, path


@contextlib.contextmanager
def _storage_errors(what: str, bucket: str, not_found: str | None = None) -> Iterator[None]:
    """Turn google-api-core, google-auth and transport exceptions into :class:`StorageError`.

    ``what`` names the resource (a bucket or a ``gs://`` URL) for the message; ``not_found`` says what
    a 404 means where the caller knows it.
    """
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth
    from requests import RequestException

    try:
        yield
    except auth.DefaultCredentialsError as exc:
        raise StorageError(
            f"{what}: no Google Cloud credentials found; run `gcloud auth application-default login` "
            "or set GOOGLE_APPLICATION_CREDENTIALS"
        ) from exc
    except auth.GoogleAuthError as exc:
        raise StorageError(f"{what}: Google Cloud authentication failed: {exc}") from exc
    except api.NotFound as exc:
        raise StorageError(f"{what}: {not_found or f'no such bucket or object (bucket {bucket!r})'}") from exc
    except (api.Forbidden, api.Unauthorized) as exc:
        raise StorageError(
            f"{what}: permission denied on bucket {bucket!r}; check the account's roles on it"
        ) from exc
    except api.PreconditionFailed as exc:
        raise StorageError(f"{what}: object replaced by a new generation while being read") from exc
    except (api.GoogleAPIError, RequestException) as exc:
        raise StorageError(f"{what}: Google Cloud Storage request failed: {exc}") from exc


def client(project: str | None = None) -> Client:
    """A ``google.cloud.storage.Client`` with the default credentials.

    With ``STORAGE_EMULATOR_HOST`` set, anonymous credentials and a dummy project are used, since an
    emulator checks neither.

    Raises
    ------
    StorageError
        If the package is missing or no credentials are found.
    """
    try:
        from google.cloud import storage
    except ImportError as exc:
        raise StorageError(
            "Google Cloud Storage support needs google-cloud-storage: pip install 'ztfcat[gcs]'"
        ) from exc
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or EMULATOR_PROJECT, credentials=AnonymousCredentials())
    from google.auth import exceptions as auth

    try:
        return storage.Client(project=project)
    except auth.DefaultCredentialsError as exc:
        raise StorageError(
            "no Google Cloud credentials found; run `gcloud auth application-default login` "
            "or set GOOGLE_APPLICATION_CREDENTIALS"
        ) from exc
    except auth.GoogleAuthError as exc:
        raise StorageError(f"Google Cloud authentication failed: {exc}") from exc


def _client_for(bucket: str, given: Client | None) -> Client:
    """``given``, or a default client whose credential errors name ``bucket``."""
    if given is not None:
        return given
    try:
        return client()
    except StorageError as exc:
        raise StorageError(f"gs://{bucket}: {exc}") from exc


def iter_objects(bucket_name: str, prefix: str = "", client: Client | None = None) -> Iterator[BucketObject]:
    """Every object of a bucket under ``prefix``, as :class:`BucketObject`, following pagination.

    Raises
    ------
    StorageError
        If the bucket does not exist, is not readable or credentials are missing.
    """
    gcs = _client_for(bucket_name, client)
    with _storage_errors(f"gs://{bucket_name}/{prefix}", bucket_name, f"no such bucket {bucket_name!r}"):
        for blob in gcs.list_blobs(bucket_name, prefix=prefix or None, timeout=TIMEOUT):
            yield BucketObject(blob.name, int(blob.size or 0), blob.md5_hash or None)


def bucket_md5s(bucket_name: str, prefix: str = "", client: Client | None = None) -> dict[str, str | None]:
    """Object name to base64 MD5 (``None`` for composite objects) for every object under ``prefix``.

    This is the ``bucket_objects`` argument of :func:`ztfcat.mirror.urllist.sync_rows`.

    Raises
    ------
    StorageError
        If the bucket does not exist, is not readable or credentials are missing.
    """
    return {obj.name: obj.md5_base64 for obj in iter_objects(bucket_name, prefix, client)}


def list_release_objects(
    bucket_name: str, prefix: str = "", client: Client | None = None
) -> list[BucketObject]:
    """Objects whose base name is a nightly release by the archive's rule
    (:func:`ztfcat.sources.names.classify`), sorted by name, for ingesting a bucket that the transfer
    service filled (its zero-byte near misses are not releases).

    Raises
    ------
    StorageError
        If the bucket does not exist, is not readable or credentials are missing.
    """
    found = [
        obj
        for obj in iter_objects(bucket_name, prefix, client)
        if classify(posixpath.basename(obj.name))
    ]
    return sorted(found, key=lambda obj: obj.name)


def _get_blob(location: str, client: Client | None) -> Blob:
    """The blob at ``location`` with its metadata loaded; StorageError naming what is missing."""
    bucket_name, path = _split_location(location)
    url = f"gs://{bucket_name}/{path}"
    gcs = _client_for(bucket_name, client)
    with _storage_errors(url, bucket_name):
        blob = gcs.bucket(bucket_name).get_blob(path, timeout=TIMEOUT)
        if blob is None:
            # get_blob answers None for a missing bucket as well; say which it is.
            if gcs.bucket(bucket_name).exists(timeout=TIMEOUT):
                raise StorageError(f"{url}: no such object in bucket {bucket_name!r}")
            raise StorageError(f"{url}: no such bucket {bucket_name!r}")
    return blob


def object_info(url: str, client: Client | None = None) -> BucketObject:
    """Name, size in bytes and base64 MD5 of one object (``gs://bucket/path`` or ``bucket/path``).

    Raises
    ------
    StorageError
        If the bucket or the object does not exist or is not readable.
    """
    blob = _get_blob(url, client)
    return BucketObject(blob.name, int(blob.size or 0), blob.md5_hash or None)


class ObjectReader(io.BufferedIOBase):
    """A read-only binary stream over one object, fetched ``chunk_size`` bytes at a time.

    Memory stays bounded whatever the object's size, and nothing is written to disk.  The bytes are
    hashed as they go by: on reaching the end, a size or MD5 different from the object's metadata raises
    :class:`ChecksumMismatchError`, so a single-pass ingest learns about a damaged read.  A reader that
    stops before the end (a tar stream ignores the padding after its last block) is not checked.

    Attributes
    ----------
    name : str
        The object's ``gs://`` URL.
    size : int
        The object's size in bytes.
    md5_base64 : str or None
        The object's MD5 as GCS reports it (``None`` for composite objects).
    """

    def __init__(self, blob: Blob, url: str, chunk_size: int = CHUNK_SIZE) -> None:
        super().__init__()
        self.name = url
        self.size = int(blob.size or 0)
        self.md5_base64 = blob.md5_hash or None
        self._bucket = blob.bucket.name
        # raw_download: the stored bytes, even for objects uploaded with Content-Encoding: gzip.
        # if_generation_match: a concurrent overwrite fails the read instead of splicing two versions.
        self._reader = blob.open(
            "rb",
            chunk_size=chunk_size,
            timeout=TIMEOUT,
            raw_download=True,
            if_generation_match=blob.generation,
        )
        self._md5 = hashlib.md5()
        self._position = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end.

        A negative or ``None`` size reads all the rest into memory at once: read in pieces instead.
        """
        if self.closed:
            raise ValueError(f"{self.name}: read from a closed stream")
        if size is None:
            size = -1
        if size == 0:
            return b""
        with _storage_errors(self.name, self._bucket, "object deleted while being read"):
            data = self._reader.read(size)
        self._md5.update(data)
        self._position += len(data)
        if size < 0 or not data:
            self._verify()
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()

    def _verify(self) -> None:
        if self._checked:
            return
        self._checked = True
        if self._position != self.size:
            raise ChecksumMismatchError(f"{self.name}: read {self._position} bytes, object has {self.size}")
        if self.md5_base64 is not None:
            got = base64.b64encode(self._md5.digest()).decode("ascii")
            if got != self.md5_base64:
                raise ChecksumMismatchError(
                    f"{self.name}: read bytes have md5 {got}, object has {self.md5_base64}"
                )


def open_object(
    url_or_bucket_path: str, client: Client | None = None, chunk_size: int = CHUNK_SIZE
) -> ObjectReader:
    """Stream one object (``gs://bucket/path`` or ``bucket/path``) as a readable binary file.

    For the single-pass ingest of a release already in a bucket: the object is read with ranged requests
    of ``chunk_size`` bytes, never copied whole to memory or disk.  Close it (or use ``with``) when done.

    Raises
    ------
    StorageError
        If the bucket or the object does not exist or is not readable (also raised by ``read``).
    ChecksumMismatchError
        From ``read``, when the bytes read to the end differ in size or MD5 from the object's metadata.
    """
    blob = _get_blob(url_or_bucket_path, client)
    bucket_name, path = _split_location(url_or_bucket_path)
    return ObjectReader(blob, f"gs://{bucket_name}/{path}", chunk_size)
