"""Nightly releases from the archive into the catalog: the listing cache, and download-verify-ingest.

Three concerns meet here and nowhere else: what the archive offers (its index page and ``MD5SUMS``, read by
:mod:`ztfcat.sources.http`), what the catalog already holds (its ``releases`` table), and moving one release
from the first to the second.

*The listing* is cached in the catalog's ``remote_files`` table, because the exact sizes the index page
does not show cost one HEAD request per file (about 3,000 on the real archive): a refresh fetches the
page and ``MD5SUMS`` again but sends HEAD only for files it has not seen, or whose MD5 changed.

*A download* is never written out and then read back: :meth:`ArchiveClient.open_release` hands the bytes
to the ingest as they arrive, while saving them to ``<data_dir>/downloads/<name>.part`` and hashing them.
The size and MD5 are checked after the last byte and before the release can be marked complete (the
``verify`` hook of :meth:`Catalog.ingest`), so a release is never seen complete with bad bytes; on a
mismatch the ingest fails the release and removes what it held.  An interrupted run (dropped connection,
Ctrl-C, a kill, a stall) keeps the ``.part`` file, which holds every byte received; the next run replays it
into a fresh ingest and downloads only the rest, with HTTP ``Range``, so the result is that of one
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote, urljoin

from sqlalchemy import delete, insert, select

from ..errors import (
    ChecksumMismatchError,
    DownloadError,
    IngestError,
    InvalidNightError,
    NotFoundError,
    ZtfcatError,
)
from ..ingest.pipeline import IngestReport
from ..sources.http import ArchiveClient
from ..sources.names import classify, night_file_name, parse_night
from ..store.tables import releases, remote_files

if TYPE_CHECKING:
    from astropy.table import Table

    from ..catalog import Catalog

DOWNLOADS = "downloads"
"""Folder of the data dir where ``.part`` files (and kept tarballs) live."""

HEAD_WORKERS = 8
_CHUNK = 500  # names per IN (...) list: well under every driver's parameter limit


# --- the listing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One release the archive offers.

    Attributes
    ----------
    name : str
        File name, e.g. ``ztf_public_20180626.tar.gz``.
    night : date
        The night it holds.
    kind : {"public", "programid3"}
        See :func:`ztfcat.sources.http.classify`.
    size : int or None
        Exact size in bytes (``Content-Length``); None if the archive did not answer the HEAD request.
    md5 : str or None
        Hex MD5 from ``MD5SUMS``; None if the manifest has no line for it.
    url : str
        Where to fetch it.
    """

    name: str
    night: date
    kind: str
    size: int | None
    md5: str | None
    url: str


def merge_listing(
    names: Iterable[str],
    md5s: Mapping[str, str],
    cached: Mapping[str, RemoteFile],
    url_of: Callable[[str], str],
) -> tuple[list[RemoteFile], list[str]]:
    """The releases of a fresh listing, sizes filled from the cache, and the names still needing a HEAD.

    Pure, so the rule "ask only about what is new" is tested without a server.  A release is any name on
    the index page or in ``MD5SUMS`` that :func:`~ztfcat.sources.http.classify` accepts.  Its cached size is
    reused when the cache knows one and the MD5 is unchanged (a changed MD5 means a changed file).

    Returns
    -------
    files : list of RemoteFile
        Sorted by name (so by night, oldest first); ``size`` None where a HEAD is still needed.
    to_head : list of str
        Names whose exact size must be asked for.
    """
    files: list[RemoteFile] = []
    to_head: list[str] = []
    for name in sorted(set(names) | set(md5s)):
        release = classify(name)
        if release is None:
            continue
        md5 = md5s.get(name)
        known = cached.get(name)
        size = known.size if known is not None and known.md5 == md5 else None
        if size is None:
            to_head.append(name)
        files.append(RemoteFile(name, release.night, release.kind, size, md5, url_of(name)))
    return files, to_head


def head_sizes(
    client: ArchiveClient, names: Iterable[str], workers: int = HEAD_WORKERS
) -> dict[str, int | None]:
    """Exact sizes, ``workers`` HEAD requests at a time (a HEAD is mostly waiting); None for a file the
    archive will not size.

    One listed file that answers 404 or 500 does not stop the listing: it is kept without a size and
    asked about again at the next refresh.
    """

    def one(name: str) -> int | None:
        try:
            return client.head_size(name)
        except ZtfcatError:
            return None

    names = list(names)
    if not names:
        return {}
    with ThreadPoolExecutor(max(1, min(workers, len(names))), thread_name_prefix="ztfcat-head") as pool:
        return dict(zip(names, pool.map(one, names), strict=True))


def _cached(catalog: Catalog) -> dict[str, RemoteFile]:
    base = catalog.archive_url
    with catalog.engine.connect() as conn:
        rows = conn.execute(select(remote_files).where(remote_files.c.archive_url == base)).all()
    out = {}
    for row in rows:
        release = classify(row.name)
        if release is not None:
            out[row.name] = RemoteFile(
                row.name, release.night, release.kind, row.size, row.md5, _url(base, row.name)
            )
    return out


def _url(base: str, name: str) -> str:
    """As :meth:`ArchiveClient.url`, without making a client (and its session) to read the cache."""
    return urljoin(base, quote(name, safe=""))


def _store(catalog: Catalog, files: list[RemoteFile], checked: Mapping[str, datetime]) -> None:
    """Replace the cache of this archive with ``files`` (in one transaction)."""
    base = catalog.archive_url
    names = [f.name for f in files]
    with catalog.engine.begin() as conn:
        conn.execute(delete(remote_files).where(remote_files.c.archive_url == base))
        for i in range(0, len(names), _CHUNK):  # the same names cached for another archive URL
            conn.execute(delete(remote_files).where(remote_files.c.name.in_(names[i : i + _CHUNK])))
        rows = [
            dict(
                name=f.name,
                night=f.night,
                kind=f.kind,
                size=f.size,
                md5=f.md5,
                archive_url=base,
                checked_at=checked.get(f.name),
            )
            for f in files
        ]
        if rows:
            conn.execute(insert(remote_files), rows)


def refresh_listing(catalog: Catalog, *, client: ArchiveClient | None = None) -> list[RemoteFile]:
    """Read the archive's index page and ``MD5SUMS`` again and update the cache; HEAD only new files."""
    with _client_for(catalog, client) as archive:
        cached = _cached(catalog)
        with catalog.engine.connect() as conn:
            checked_at = dict(
                conn.execute(
                    select(remote_files.c.name, remote_files.c.checked_at).where(
                        remote_files.c.archive_url == catalog.archive_url
                    )
                ).all()
            )
        names = [entry.name for entry in archive.listing()]
        md5s = archive.md5sums()
        files, to_head = merge_listing(names, md5s, cached, archive.url)
        sizes = head_sizes(archive, to_head)
    now = datetime.now(UTC)
    files = [replace(f, size=sizes[f.name]) if f.name in sizes else f for f in files]
    for name, size in sizes.items():
        checked_at[name] = now if size is not None else None
    _store(catalog, files, checked_at)
    return files


def cached_listing(
    catalog: Catalog, refresh: bool = False, *, client: ArchiveClient | None = None
) -> list[RemoteFile]:
    """The releases the catalog's archive offers, oldest first, from the cache in the catalog.

    Parameters
    ----------
    refresh : bool
        Ask the archive again (index page, ``MD5SUMS``, and HEAD for files not seen before).  The
        first call for an archive always asks.
    client : ArchiveClient, optional
        Use this client (timeouts, retries); by default one for ``catalog.archive_url``.
    """
    if not refresh:
        cached = _cached(catalog)
        if cached:
            return [cached[name] for name in sorted(cached)]
    return refresh_listing(catalog, client=client)


def local_statuses(catalog: Catalog) -> dict[str, str]:
    """Release file name to its status in the catalog (``complete``, ``failed``, ...)."""
    with catalog.engine.connect() as conn:
        return dict(conn.execute(select(releases.c.name, releases.c.status)).all())


def listing_table(
    catalog: Catalog,
    refresh: bool = False,
    *,
    client: ArchiveClient | None = None,
    first: str | date | None = None,
    last: str | date | None = None,
    missing: bool = False,
) -> Table:
    """The archive's releases as an astropy Table, oldest first, with what the catalog holds of each.

    Columns: ``file``, ``night`` (ISO date), ``kind``, ``size`` (exact bytes, -1 if unknown), ``md5``,
    ``url``, ``status`` (the release's status in the catalog, ``""`` if absent) and ``in_catalog``
    (True when complete).

    Parameters
    ----------
    first, last : str or date, optional
        Only the nights from ``first`` to ``last`` (inclusive; ``YYYY-MM-DD``), checked before any request.
    missing : bool
        Only the releases not complete in the catalog (what a download would fetch).
    """
    from astropy.table import Table

    first = None if first is None else parse_night(first)
    last = None if last is None else parse_night(last)
    statuses = local_statuses(catalog)
    files = [
        f
        for f in cached_listing(catalog, refresh, client=client)
        if (first is None or f.night >= first)
        and (last is None or f.night <= last)
        and not (missing and statuses.get(f.name) == "complete")
    ]
    names = ("file", "night", "kind", "size", "md5", "url", "status", "in_catalog")
    dtypes = (str, str, str, "i8", str, str, str, bool)
    if not files:
        return Table(names=names, dtype=dtypes)
    rows = [
        (
            f.name,
            f.night.isoformat(),
            f.kind,
            -1 if f.size is None else f.size,
            f.md5 or "",
            f.url,
            statuses.get(f.name, ""),
            statuses.get(f.name) == "complete",
        )
        for f in files
    ]
    return Table(rows=rows, names=names, dtype=dtypes)


def remote_md5_table(
    catalog: Catalog, refresh: bool = True, *, client: ArchiveClient | None = None
) -> tuple[list[str], list[int | None]]:
    """The seed's ``get_remote_md5_table``: release names and exact sizes in bytes, oldest first.

    A size is None only for a listed file that did not answer its HEAD request.
    """
    files = cached_listing(catalog, refresh, client=client)
    return [f.name for f in files], [f.size for f in files]


# --- one release ------------------------------------------------------------------------------------


@dataclass
class DownloadState:
    """How far one release has got, handed to a ``progress`` callback (from background threads).

    Attributes
    ----------
    name : str
        The release.
    bytes_done, bytes_total : int, int or None
        Bytes received so far (including those replayed from an earlier run's ``.part`` file) and the
        size the archive announced.
    alerts : int
        Alerts in the catalog so far.
    """

    name: str
    bytes_done: int = 0
    bytes_total: int | None = None
    alerts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


DownloadProgress = Callable[[DownloadState], None]


def downloads_dir(catalog: Catalog) -> Path:
    """``<data_dir>/downloads``: ``.part`` files, and tarballs kept with ``keep_tarballs=True``."""
    return catalog.data_dir / DOWNLOADS


def _status(catalog: Catalog, name: str):
    with catalog.engine.connect() as conn:
        return conn.execute(select(releases).where(releases.c.name == name)).first()


def _already(row) -> IngestReport:
    report = IngestReport(row.name, status="complete", already_complete=True)
    report.n_alerts, report.n_errors = row.n_alerts, row.n_errors
    report.size, report.md5 = row.size or 0, row.md5
    return report


class _HashingReader(io.RawIOBase):
    """Read a file while hashing it, so a kept tarball is checked against ``MD5SUMS`` as it is ingested."""

    def __init__(self, raw: BinaryIO, name: str) -> None:
        super().__init__()
        self.raw = raw
        self.name = name
        self.md5 = hashlib.md5()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.md5.update(memoryview(buffer)[:n])
            self.size += n
        return n or 0


def _check_kept(reader: _HashingReader, md5: str | None, size: int | None, path: Path) -> None:
    if size is not None and reader.size != size:
        raise ChecksumMismatchError(f"{path}: {reader.size} bytes, the archive lists {size} bytes")
    if md5 is not None and reader.md5.hexdigest() != md5:
        raise ChecksumMismatchError(
            f"{path}: MD5 of the kept tarball is {reader.md5.hexdigest()}, MD5SUMS says {md5}"
        )


def download_release(
    catalog: Catalog,
    file: RemoteFile,
    *,
    client: ArchiveClient | None = None,
    keep_tarballs: bool = False,
    force: bool = False,
    require_md5: bool = True,
    progress: DownloadProgress | None = None,
) -> IngestReport:
    """Download, verify and ingest one release, streaming: the ingest reads the bytes as they arrive.

    Parameters
    ----------
    file : RemoteFile
        The release (from :func:`cached_listing`); its ``md5`` and ``size``, when known, are checked.
    keep_tarballs : bool
        Keep the verified tarball as ``<data_dir>/downloads/<name>`` (a later ``force`` re-ingest
        then reads it from disk, checking it again); by default it is deleted once ingested.
    force : bool
        Ingest again even if the release is already complete.
    require_md5 : bool
        Refuse a release that ``MD5SUMS`` does not list (it could not be verified); False checks the
        size only.
    progress : callable, optional
        Called with a :class:`DownloadState` as bytes arrive and alerts go in (from other threads).

    Returns
    -------
    IngestReport
        ``already_complete`` set, and no request made, when the release was complete.

    Raises
    ------
    ChecksumMismatchError
        Size or MD5 wrong: the release is ``failed`` and holds nothing; the message names the file and
        both digests (or sizes).
    NotFoundError, DownloadError
        The archive has no such file, or it could not be fetched; the ``.part`` file stays for a resume.
    """
    row = _status(catalog, file.name)
    if row is not None and row.status == "complete" and not force:
        return _already(row)
    if file.md5 is None and require_md5:
        raise DownloadError(
            f"{file.name} is not in the archive's MD5SUMS, so it cannot be verified; "
            "pass require_md5=False (ztfcat download --no-md5) to check its size only"
        )
    state = DownloadState(file.name, bytes_total=file.size)

    def tell() -> None:
        if progress is not None:
            with state._lock:
                progress(state)

    def on_bytes(done: int, total: int | None) -> None:
        state.bytes_done, state.bytes_total = done, total if total is not None else state.bytes_total
        tell()

    def on_alerts(n_alerts: int, _bytes: int) -> None:
        state.alerts = n_alerts
        tell()

    folder = downloads_dir(catalog)
    part = folder / f"{file.name}.part"
    kept = folder / file.name
    if kept.is_file():  # verified by an earlier run with keep_tarballs: no need to fetch it again
        try:
            with open(kept, "rb") as raw:
                reader = _HashingReader(raw, file.name)
                return catalog.ingest(
                    io.BufferedReader(reader, 1 << 20),
                    name=file.name,
                    progress=on_alerts,
                    force=force,
                    verify=lambda: _check_kept(reader, file.md5, file.size, kept),
                )
        except (ChecksumMismatchError, IngestError):
            kept.unlink(missing_ok=True)  # damaged since: the next run downloads it again
            raise
    with _client_for(catalog, client) as archive:
        stream = archive.open_release(
            file.name,
            part,
            expected_md5=file.md5,
            expected_size=file.size,
            progress=on_bytes,
            keep_path=kept if keep_tarballs else None,
        )
        bad_bytes = False
        try:
            with stream:  # a 0-byte night (the archive has some) ingests as an empty release
                return catalog.ingest(
                    stream,
                    name=file.name,
                    progress=on_alerts,
                    force=force,
                    verify=stream.finish,
                    origin=archive.url(file.name),
                )
        except IngestError:
            bad_bytes = True  # not a tarball: replaying these bytes next time would fail the same way
            raise
        finally:
            if bad_bytes:
                part.unlink(missing_ok=True)


@contextlib.contextmanager
def _client_for(catalog: Catalog, client: ArchiveClient | None) -> Iterator[ArchiveClient]:
    if client is not None:
        yield client
        return
    with ArchiveClient(catalog.archive_url) as made:
        yield made


# --- nights -----------------------------------------------------------------------------------------

def release_for_night(
    catalog: Catalog,
    night: date,
    *,
    client: ArchiveClient | None = None,
    md5s: Mapping[str, str] | None = None,
) -> RemoteFile:
    """The public release of ``night``: from the listing cache, else from ``MD5SUMS`` (one request).

    A whole listing refresh would send a HEAD per archive file the first time; fetching one night needs
    only its MD5, and its exact size comes with the download itself.

    Parameters
    ----------
    md5s : mapping, optional
        ``MD5SUMS`` already read (name to hex digest), so asking for many nights reads it once.

    Raises
    ------
    NotFoundError
        The archive has no release for that night.
    """
    name = night_file_name(night.year, night.month, night.day)
    cached = _cached(catalog).get(name)
    if cached is not None:
        return cached
    with _client_for(catalog, client) as archive:
        md5 = (archive.md5sums() if md5s is None else md5s).get(name)
        if md5 is None:
            try:
                archive.head_size(name)
            except NotFoundError as exc:
                raise NotFoundError(f"no release for {night:%Y-%m-%d}: {exc}") from exc
        return RemoteFile(name, night, "public", None, md5, archive.url(name))


def download_night(
    catalog: Catalog,
    year: int,
    month: int,
    day: int,
    *,
    client: ArchiveClient | None = None,
    **kwargs: Any,
) -> IngestReport:
    """The seed's ``download_data_date``: download, verify and ingest the public release of one night.

    The date is checked before any request (:class:`~ztfcat.errors.InvalidNightError`); a night the
    archive does not have is a :class:`~ztfcat.errors.NotFoundError` naming it.  Other keyword arguments
    are those of :func:`download_release`.
    """
    try:
        night = date(int(year), int(month), int(day))
    except (TypeError, ValueError) as exc:
        raise InvalidNightError(f"{year}-{month}-{day} is not a night: {exc}") from exc
    row = _status(catalog, night_file_name(night.year, night.month, night.day))
    if row is not None and row.status == "complete" and not kwargs.get("force"):
        return _already(row)  # no request at all
    with _client_for(catalog, client) as archive:
        file = release_for_night(catalog, night, client=archive)
        try:
            return download_release(catalog, file, client=archive, **kwargs)
        except NotFoundError as exc:
            if _status(catalog, file.name) is None:  # 404 before any byte: the archive has no such night
                raise NotFoundError(f"no release for {night:%Y-%m-%d}: {exc}") from exc
            raise


def plan_recent(
    files: Iterable[RemoteFile],
    statuses: Mapping[str, str],
    max_downloads: int | None = 1,
    stop_on_exist: bool = False,
) -> list[RemoteFile]:
    """Which releases :func:`download_recent` fetches, in order: pure, so the rule is tested on its own.

    Newest night first (a night's public release before its ``programid3`` one).  A release complete in
    the catalog is skipped, or ends the plan with ``stop_on_exist``; any other status (``failed``, or an
    ``ingesting`` left by a killed run) is fetched again.  At most ``max_downloads`` (None: no limit).
    """
    if max_downloads is not None and max_downloads < 1:
        return []
    ordered = sorted(files, key=lambda f: (-f.night.toordinal(), f.kind != "public", f.name))
    plan: list[RemoteFile] = []
    for file in ordered:
        if statuses.get(file.name) == "complete":
            if stop_on_exist:
                break
            continue
        plan.append(file)
        if max_downloads is not None and len(plan) >= max_downloads:
            break
    return plan


def download_recent(
    catalog: Catalog,
    max_downloads: int | None = 1,
    stop_on_exist: bool = False,
    *,
    refresh: bool = True,
    keep_going: bool = False,
    client: ArchiveClient | None = None,
    **kwargs: Any,
) -> list[IngestReport]:
    """The seed's ``download_recent_data``: the newest releases not yet complete, newest first.

    Parameters
    ----------
    max_downloads : int or None
        At most this many releases fetched (already complete ones do not count); None for all.
    stop_on_exist : bool
        Stop at the first release already complete, as the seed did (so only what is newer than the
        newest local night is fetched).
    refresh : bool
        Ask the archive for its listing first (only new files cost a HEAD); False uses the cache.
    keep_going : bool
        On a failed release go on with the next; a :class:`DownloadError` naming every failure is raised
        at the end.  By default the first failure is raised at once (releases done before stay done).
    **kwargs
        Passed to :func:`download_release` (``keep_tarballs``, ``force``, ``progress``, ...).

    Returns
    -------
    list of IngestReport
        One per release fetched, in the order fetched.
    """
    with _client_for(catalog, client) as archive:
        files = cached_listing(catalog, refresh, client=archive)
        plan = plan_recent(files, local_statuses(catalog), max_downloads, stop_on_exist)
        reports: list[IngestReport] = []
        failures: list[str] = []
        for file in plan:
            try:
                reports.append(download_release(catalog, file, client=archive, **kwargs))
            except ZtfcatError as exc:
                if not keep_going:
                    raise
                failures.append(f"{file.name}: {exc}")
        if failures:
            raise DownloadError(f"{len(failures)} of {len(plan)} releases failed: " + "; ".join(failures))
        return reports


@dataclass
class DownloadPlan:
    """What ``ztfcat download`` fetches, in order, and the nights asked for that the archive lacks."""

    files: list[RemoteFile]
    missing: list[tuple[date, NotFoundError]] = field(default_factory=list)


def plan_download(
    catalog: Catalog,
    *,
    nights: Iterable[str | date] = (),
    recent: int | None = None,
    first: str | date | None = None,
    last: str | date | None = None,
    stop_on_exist: bool = False,
    force: bool = False,
    refresh: bool = True,
    client: ArchiveClient | None = None,
) -> DownloadPlan:
    """Which releases to download: those of ``nights``, or the ``recent`` newest missing, or ``first``..``last``.

    Every night is parsed (:func:`parse_night`) before any request.  Given nights read ``MD5SUMS`` once
    and need no listing refresh (:func:`release_for_night`); one the archive does not have goes into
    :attr:`DownloadPlan.missing` and the others are still planned.  ``recent`` follows :func:`plan_recent`;
    a range takes every release of its nights not complete in the catalog (all of them with ``force``).
    """
    nights = [parse_night(n) for n in nights]
    first = None if first is None else parse_night(first)
    last = None if last is None else parse_night(last)
    with _client_for(catalog, client) as archive:
        if nights:
            plan = DownloadPlan([])
            md5s = archive.md5sums()
            for night in nights:
                try:
                    plan.files.append(release_for_night(catalog, night, client=archive, md5s=md5s))
                except NotFoundError as exc:
                    plan.missing.append((night, exc))
            return plan
        listing = cached_listing(catalog, refresh, client=archive)
    statuses = local_statuses(catalog)
    if recent is not None:
        return DownloadPlan(plan_recent(listing, statuses, recent, stop_on_exist))
    return DownloadPlan(
        [
            f
            for f in listing
            if (first is None or f.night >= first)
            and (last is None or f.night <= last)
            and (force or statuses.get(f.name) != "complete")
        ]
    )


def delete_releases(
    catalog: Catalog, names: Sequence[str] | None = None, *, progress: Callable[[str], None] | None = None
) -> int:
    """Delete releases (every one when None) with their ``.part`` files and kept tarballs; how many went.

    ``ztfcat delete``: :meth:`Catalog.delete` for the rows and packets, then :func:`remove_downloads`, so
    a later download starts from nothing.  ``progress(name)`` as in :meth:`Catalog.delete`.
    """
    if names is None:
        removed = catalog.delete(progress=progress)
    else:
        removed = catalog.delete(names=names, progress=progress)
    remove_downloads(catalog, names)
    return removed


def remove_downloads(catalog: Catalog, names: Iterable[str] | None = None) -> int:
    """Delete ``.part`` files and kept tarballs of the given releases (all when None); how many went."""
    folder = downloads_dir(catalog)
    if not folder.is_dir():
        return 0
    wanted = None if names is None else set(names)
    removed = 0
    for path in folder.iterdir():
        base = path.name.removesuffix(".part")
        if path.is_file() and (wanted is None or base in wanted):
            path.unlink()
            removed += 1
    return removed


__all__ = [
    "DOWNLOADS",
    "DownloadPlan",
    "DownloadProgress",
    "DownloadState",
    "RemoteFile",
    "cached_listing",
    "delete_releases",
    "download_night",
    "download_recent",
    "download_release",
    "downloads_dir",
    "head_sizes",
    "listing_table",
    "local_statuses",
    "merge_listing",
    "parse_night",
    "plan_download",
    "plan_recent",
    "refresh_listing",
    "release_for_night",
    "remote_md5_table",
    "remove_downloads",
]
