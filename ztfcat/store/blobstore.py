"""Packets on shared storage: each night's pack file as one object in a shared directory or a GCS bucket.

Many ingest workers on different machines write into one PostgreSQL catalog; their packets cannot live
under each machine's own data directory.  With a blob store (``Catalog(blobs=...)``, ``ZTFCAT_BLOB_URL``
or ``ztfcat ingest --blobs``) an ingest writes the night's pack (:mod:`ztfcat.blobs`) to a staging file
in its local data directory, derives the history from it there, and only once the night is otherwise
done puts the whole file to the store under a name no other worker can pick (the release's file name
and 64 random bits), then marks the release ``complete``.  A reader anywhere finds the object from the
row itself: ``blob_path`` is the object's full URL (``gs://bucket/prefix/alerts/<night>.<token>.tar`` or
``file:///mnt/shared/alerts/...``) and a lookup is one ranged read of ``blob_size`` bytes at
``blob_offset``.

Why the order is safe: rows carry the object's URL from their first commit, so a purge (a failed or
killed ingest, a delete) always knows which object to remove; until the put, reads of those rows are
served from the staging file (looked up by the object's base name in the data directory), and the
release is not ``complete``, so nothing outside the ingest relies on them.  A put is atomic: a
directory store copies to a hidden temporary name and hard-links it into place (never over an existing
file); GCS makes an object visible only once its upload is finalized, and ``if_generation_match=0``
refuses to overwrite one.

Every network call is bounded: connect and read timeouts from :mod:`ztfcat.settings`, retries of
transient errors (429, 5xx, dropped connections) with a deadline, and a ranged read must return exactly
the bytes the row names or fail.  ``google-cloud-storage`` is imported only by the GCS store.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import secrets
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from .. import settings
from ..errors import PacketReadError, SettingError, StorageError, ZtfcatError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

STAGING = "staging"
"""Folder of the data directory holding packs not yet put to the store, under their object's base name."""

MAX_READ = 64 << 20
"""Largest ranged read accepted (16x the largest packet an ingest stores): a damaged row cannot make
a lookup pull gigabytes."""

RETRY_SECONDS = 30.0
"""How long transient errors of one GCS call are retried before the call fails."""


class BlobStore(Protocol):
    """Where nights' pack objects live: written once per night, read back by ranges.

    ``url`` is the store's root; object URLs are ``url + "/" + name``.  Methods that take an object
    URL accept any object of the same kind of store (any bucket, any directory), so a reader needs no
    configuration beyond what the row says.
    """

    url: str

    def put(self, local: Path, name: str) -> str:
        """Publish the finished file ``local`` as ``name`` under the root, atomically; its URL."""
        ...

    def read(self, url: str, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` of an object, or raise :class:`Unreadable` with the reason."""
        ...

    def exists(self, url: str) -> bool:
        """Whether the object is there (for ``repair``)."""
        ...

    def delete(self, url: str) -> None:
        """Remove the object; a missing one is fine."""
        ...


class Unreadable(Exception):
    """Why a ranged read failed, in a few words; :func:`read_shared` names the alert and the object."""


def is_shared(path: str) -> bool:
    """Whether a row's ``blob_path`` is an object URL on shared storage (else it is relative to the
    data directory; release names cannot hold ``/``, so a relative path never holds ``://``)."""
    return "://" in path


def open_store(url: str | os.PathLike[str]) -> BlobStore:
    """The store rooted at ``url``: ``gs://bucket[/prefix]``, ``file:///path`` or a directory path.

    Nothing is contacted here; a directory is made when the first night is put.
    """
    text = os.fspath(url).strip()
    if not text:
        raise SettingError("an empty blob store URL (ZTFCAT_BLOB_URL / --blobs)")
    scheme = urlsplit(text).scheme if "://" in text else ""
    factory = _STORES.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in _STORES if s)
        raise SettingError(f"blob store {text!r}: unknown scheme {scheme!r}; use a directory, {known}")
    return factory(text)


# -- staging and publishing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedPack:
    """A night's pack being written locally (``path``) that will become the object ``url``."""

    store: BlobStore
    release_key: str
    name: str
    url: str
    path: Path

    def publish(self) -> None:
        """Put the finished pack to the store, then drop the staging file (reads then go to the store)."""
        try:
            self.store.put(self.path, self.name)
        except ZtfcatError as exc:
            raise StorageError(
                f"{self.release_key}: its pack was not put to the blob store ({exc}); "
                "the night is not complete: ingest it again"
            ) from exc
        self.path.unlink(missing_ok=True)

    def withdraw(self, engine: Engine, release_id: int) -> None:
        """After a failed ingest: drop the staging file, and the object itself if it was put and no row
        of the release reads it.

        The failed ingest's own purge removes the objects its rows name; this covers the object no purge
        can see: put after another process had already purged the rows (a broken lock), so that no row
        names it any more.  One probe of the release's rows (the ``(release_id, candid)`` index)."""
        from sqlalchemy import select

        from .tables import alert_releases

        self.path.unlink(missing_ok=True)
        read = select(alert_releases.c.candid).where(
            alert_releases.c.release_id == release_id, alert_releases.c.blob_path == self.url
        )
        with engine.connect() as conn:
            named = conn.execute(read.limit(1)).first() is not None
        if not named:
            self.store.delete(self.url)  # a no-op for an object never put


def stage(data_dir: Path, release_key: str, store: BlobStore) -> StagedPack:
    """Plan one ingest's pack: a fresh object name, and its staging file in ``data_dir``.

    The caller holds the release's lock, so staging files a killed run left for the same release are
    removed here; the random token keeps two workers (or two runs) from ever naming the same object.
    """
    folder = data_dir / STAGING
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{glob.escape(release_key)}.*.tar"):
        stale.unlink(missing_ok=True)
    name = f"alerts/{release_key}.{secrets.token_hex(8)}.tar"
    url = f"{store.url}/{name}"
    return StagedPack(store, release_key, name, url, folder / _basename(url))


def _basename(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def read_shared(data_dir: Path, url: str, offset: int | None, size: int, candid: int | None = None) -> bytes:
    """The packet at ``offset`` of the object ``url``: from the staging file while its ingest runs,
    else by one ranged read of the store.  Exactly ``size`` bytes or :class:`PacketReadError`."""
    offset = offset or 0
    try:
        if size < 0 or size > MAX_READ:
            raise Unreadable(f"a packet size of {size} bytes is outside 0..{MAX_READ}")
        try:
            fh = open(data_dir / STAGING / _basename(url), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            data = store_for(url).read(url, offset, size)
        else:
            with fh:
                fh.seek(offset)
                data = fh.read(size)
        if len(data) != size:
            raise Unreadable(f"got {len(data)} bytes")
    except (Unreadable, ZtfcatError) as exc:  # a reason, or a store that cannot even be opened
        who = f"alert {candid}: " if candid is not None else ""
        raise PacketReadError(
            f"{who}cannot read its {size}-byte packet at offset {offset} of {url}: {exc}"
        ) from None
    return data


# -- the rows' objects, for purges, deletes and repair ---------------------------------------------------


def release_objects(conn: Connection, release_ids: Iterable[int]) -> list[str]:
    """Every shared-storage object the rows of these releases point at (none for local layouts)."""
    from sqlalchemy import select

    from .tables import alert_releases

    found: set[str] = set()
    for release_id in release_ids:
        found.update(
            conn.execute(
                select(alert_releases.c.blob_path)
                .where(alert_releases.c.release_id == release_id, alert_releases.c.blob_path.like("%://%"))
                .distinct()
            ).scalars()
        )
    return sorted(found)


def remove_objects(data_dir: Path, urls: Sequence[str]) -> None:
    """Delete objects from their stores, and their staging files from this data directory."""
    for url in urls:
        store_for(url).delete(url)
        (data_dir / STAGING / _basename(url)).unlink(missing_ok=True)


def missing_objects(engine: Engine) -> list[tuple[int, str, str]]:
    """``(release id, name, object URL)`` of each complete release whose pack object is gone.

    One indexed probe per release for the object its rows read (a pack release has exactly one),
    then one existence check per shared object: for ``ztfcat repair``, not for every ingest.
    """
    from sqlalchemy import select

    from .tables import alert_releases, releases

    with engine.connect() as conn:
        done = conn.execute(
            select(releases.c.id, releases.c.name).where(releases.c.status == "complete")
        ).all()
        probes = [
            (row.id, row.name, conn.execute(
                select(alert_releases.c.blob_path).where(alert_releases.c.release_id == row.id).limit(1)
            ).scalar())
            for row in done
        ]  # fmt: skip
    return [
        (rid, name, url)
        for rid, name, url in probes
        if url and is_shared(url) and not store_for(url).exists(url)
    ]


def repair_missing(engine: Engine, data_dir: Path) -> list[str]:
    """Purge each complete release whose pack object vanished and mark it ``failed`` naming the object,
    so the next ingest of its tarball redoes it; returns their names.  A release another process holds
    the lock of is left alone."""
    from ..ingest.pipeline import _now, _set, purge_release, release_lock

    repaired = []
    for release_id, name, url in missing_objects(engine):
        with contextlib.suppress(ZtfcatError), release_lock(engine, data_dir, name):
            if not _still_missing(engine, release_id, url):  # read again under the lock: redone since?
                continue
            _set(engine, release_id, status="ingesting")  # not complete from here: a kill is redone
            purge_release(engine, data_dir, release_id, name)
            _set(engine, release_id, status="failed", n_alerts=0, finished_at=_now(),
                 error=f"its packets object {url} is missing from the blob store; ingest it again")  # fmt: skip
            repaired.append(name)
    return repaired


def _still_missing(engine: Engine, release_id: int, url: str) -> bool:
    """Whether the release is still complete, still reads the object ``url``, and it is still gone."""
    from sqlalchemy import select

    from .tables import alert_releases, releases

    with engine.connect() as conn:
        complete = conn.execute(select(releases.c.status).where(releases.c.id == release_id)).scalar()
        reads = conn.execute(
            select(alert_releases.c.blob_path)
            .where(alert_releases.c.release_id == release_id, alert_releases.c.blob_path == url)
            .limit(1)
        ).first()
    return complete == "complete" and reads is not None and not store_for(url).exists(url)


# -- stores ------------------------------------------------------------------------------------------


_cache: dict[tuple[int, str], BlobStore] = {}


def store_for(url: str) -> BlobStore:
    """The store that reads the object ``url``: one per bucket (or one for all directories) and per
    process, so a forked history worker never shares its parent's HTTP connections."""
    scheme = urlsplit(url).scheme
    key = (os.getpid(), f"{scheme}://{urlsplit(url).netloc}" if scheme == "gs" else scheme)
    store = _cache.get(key)
    if store is None:
        store = _cache[key] = open_store(key[1] if scheme == "gs" else "file:///")
    return store


class DirectoryStore:
    """Objects as files under a directory any machine mounts at the same path (NFS, a shared disk)."""

    def __init__(self, url: str) -> None:
        root = _local_path(url) if url.startswith("file:") else Path(url)
        self.root = root.expanduser().resolve()
        self.url = self.root.as_uri().rstrip("/")

    def __repr__(self) -> str:
        return f"DirectoryStore({self.url!r})"

    def put(self, local: Path, name: str) -> str:
        target = self.root / name
        url = f"{self.url}/{name}"
        temporary = target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(local, "rb") as src, open(temporary, "xb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            try:
                os.link(temporary, target)  # never replaces: a name taken stays the other writer's
            except FileExistsError:
                raise StorageError(f"{url}: already exists; not overwritten") from None
            except OSError:  # a file system without hard links: a checked rename instead
                if target.exists():
                    raise StorageError(f"{url}: already exists; not overwritten") from None
                os.replace(temporary, target)
        except OSError as exc:
            raise StorageError(f"{url}: cannot write the night's pack: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(OSError):  # linked into place already, or never made
                temporary.unlink(missing_ok=True)
        return url

    def read(self, url: str, offset: int, size: int) -> bytes:
        try:
            with open(_local_path(url), "rb") as fh:
                fh.seek(offset)
                return fh.read(size)
        except FileNotFoundError:
            raise Unreadable("no such file (deleted after ingest?)") from None
        except OSError as exc:
            raise Unreadable(exc.strerror or str(exc)) from None

    def exists(self, url: str) -> bool:
        return _local_path(url).is_file()

    def delete(self, url: str) -> None:
        try:
            _local_path(url).unlink(missing_ok=True)
        except NotADirectoryError:  # a file where its folder would be: the object is not there either
            pass
        except OSError as exc:
            raise StorageError(f"{url}: cannot delete: {exc.strerror or exc}") from exc


def _local_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise SettingError(f"{url}: a file:// URL on another host; mount it and give its local path")
    return Path(unquote(parts.path))


class GCSStore:
    """Objects in a Google Cloud Storage bucket, under an optional prefix (``gs://bucket/prefix``)."""

    def __init__(self, url: str) -> None:
        from ..sources.gcs import parse_gs_url

        try:
            self.bucket_name, prefix = parse_gs_url(url)
        except ValueError as exc:
            raise SettingError(f"blob store {url!r}: {exc}") from None
        self.prefix = prefix.strip("/")
        self.url = f"gs://{self.bucket_name}" + (f"/{self.prefix}" if self.prefix else "")
        self._client: Any = None
        self._call_limits: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"GCSStore({self.url!r})"

    def _blob(self, url: str) -> tuple[Any, str]:
        from ..sources.gcs import client, parse_gs_url

        if self._client is None:
            self._client = client()
        bucket, name = parse_gs_url(url)
        return self._client.bucket(bucket).blob(name), bucket

    def _limits(self) -> dict[str, Any]:
        """Timeouts (``ZTFCAT_CONNECT_TIMEOUT``, ``ZTFCAT_STALL_TIMEOUT``) and the retry of every call,
        resolved on the store's first call."""
        if self._call_limits is None:
            from google.cloud.storage.retry import DEFAULT_RETRY

            self._call_limits = {
                "timeout": (settings.connect_timeout(), settings.stall_timeout()),
                "retry": DEFAULT_RETRY.with_delay(initial=0.1, maximum=4.0).with_timeout(RETRY_SECONDS),
            }
        return self._call_limits

    def put(self, local: Path, name: str) -> str:
        from google.api_core import exceptions as api

        from ..sources.gcs import _storage_errors

        url = f"{self.url}/{name}"
        blob, bucket = self._blob(url)
        size = local.stat().st_size
        with _storage_errors(url, bucket, f"no such bucket {bucket!r}"):
            try:
                # if_generation_match=0: create only; also what makes a retried upload safe to repeat
                blob.upload_from_filename(str(local), if_generation_match=0, **self._limits())
            except api.PreconditionFailed:  # there already: our own earlier attempt, or a collision
                blob.reload(**self._limits())
                if blob.size != size:
                    raise StorageError(f"{url}: already exists with other content; not overwritten") from None
            blob.reload(**self._limits())
        if blob.size != size:
            raise StorageError(f"{url}: stored {blob.size} bytes of {size}")
        return url

    def read(self, url: str, offset: int, size: int) -> bytes:
        from google.api_core import exceptions as api
        from google.auth import exceptions as auth
        from requests import RequestException

        if size == 0:
            return b""
        blob, _bucket = self._blob(url)
        sink = _Capped(size)
        try:
            blob.download_to_file(
                sink,
                start=offset,
                end=offset + size - 1,  # inclusive
                raw_download=True,
                checksum=None,  # a range has no checksum to compare; the length is checked instead
                single_shot_download=True,
                **self._limits(),
            )
        except _TooLong:
            raise Unreadable(f"the store sent more than {size} bytes") from None
        except api.NotFound:
            raise Unreadable("no such object (deleted after ingest?)") from None
        except api.RequestRangeNotSatisfiable:
            raise Unreadable("the object is shorter than the row says") from None
        except (api.Forbidden, api.Unauthorized):
            raise Unreadable("permission denied; check the account's roles on the bucket") from None
        except auth.GoogleAuthError as exc:
            raise Unreadable(f"Google Cloud authentication failed: {_first_line(exc)}") from None
        except (api.GoogleAPIError, RequestException) as exc:
            raise Unreadable(
                f"request failed after retries: {type(exc).__name__}: {_first_line(exc)}"
            ) from None
        return sink.getvalue()

    def exists(self, url: str) -> bool:
        from ..sources.gcs import _storage_errors

        blob, bucket = self._blob(url)
        with _storage_errors(url, bucket):
            return bool(blob.exists(**self._limits()))

    def delete(self, url: str) -> None:
        from google.api_core import exceptions as api

        from ..sources.gcs import _storage_errors

        blob, bucket = self._blob(url)
        with _storage_errors(url, bucket), contextlib.suppress(api.NotFound):
            blob.delete(**self._limits())


class _TooLong(Exception):
    pass


class _Capped(io.BytesIO):
    """A download target that refuses past ``cap`` bytes, so a server ignoring the range cannot make a
    lookup hold a whole night's object in memory."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.cap:
            raise _TooLong
        return super().write(data)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


_STORES: dict[str, Any] = {"": DirectoryStore, "file": DirectoryStore, "gs": GCSStore}
"""The one registry of store kinds, by URL scheme (a plain path is a directory)."""
