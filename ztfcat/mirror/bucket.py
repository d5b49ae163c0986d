"""Mirror the archive into a Google Cloud Storage bucket, and fill the catalog from that bucket.

Two halves, both thin I/O around pure code in :mod:`ztfcat.mirror.urllist`:

* :func:`create_sync_table` builds the Storage Transfer Service URL list of the archive tarballs a bucket
  still lacks.  Sizes and MD5s come from the catalog's cached listing of the archive
  (``ztfcat.mirror.archive.cached_listing``: exact ``Content-Length`` fetched in a parallel pool, digests from
  ``MD5SUMS``), never from one serial HEAD per file, and the bucket is compared under the names the
  service writes (``HOST/PATH``; the port of the URL is not part of the name).
* :func:`sync_bucket` ingests every release the bucket holds that the catalog does not have complete yet,
  streaming each object through the single-pass ingest (no local copy).

A file the archive gives no usable MD5 (absent from ``MD5SUMS``, or given two different digests, as one
real night is) is left out of the URL list and named in ``table.meta["skipped"]`` with a warning: the
service cannot transfer a file without its digest, and a guessed digest would make that transfer fail.
"""

from __future__ import annotations

import os
import posixpath
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..errors import ManifestFormatError, ZtfcatError
from ..sources.http import MD5SUMS, ArchiveClient, classify, parse_md5sums
from ..store.tables import releases, remote_files
from .urllist import (
    ArchiveFile,
    SyncRow,
    format_tsv,
    md5_base64,
    md5_hex_from_base64,
    sync_rows,
    sync_table,
    transfer_object_name,
    write_tsv,
)

if TYPE_CHECKING:
    from astropy.table import Table

    from ..catalog import Catalog
    from ..ingest.pipeline import IngestReport
    from ..sources.gcs import BucketObject

BucketProgress = Callable[["BucketObject", int, int], None]
"""``progress(bucket_object, n_alerts, n_bytes)`` during :func:`sync_bucket`, per object ingested."""


class SkippedFilesWarning(UserWarning):
    """Archive files left out of a URL list because the archive gives no exact size or single MD5."""


def lenient_md5sums(
    text: str, source: str = "MD5SUMS"
) -> tuple[dict[str, str], dict[str, list[str]], list[str]]:
    """``MD5SUMS`` read as the real one must be read for a URL list: one bad entry costs one file, not all.

    :func:`ztfcat.sources.http.parse_md5sums` refuses the whole manifest when a line is damaged or a name has
    two different digests, which is right before a download is trusted.  The real manifest has a night
    listed twice with two digests, so a URL list built with it would never be made.  Here each line is
    read on its own: a name with two different digests gets none (it is left out of the list and named),
    and a line that is not ``<32 hex digits>  <name>`` is reported and ignored.

    Returns
    -------
    digests : dict
        Name to lowercase hex MD5, for names with exactly one distinct digest.
    conflicts : dict
        Name to its distinct digests, for names given more than one.
    bad_lines : list of str
        ``"<source> line N: ..."`` for lines that could not be read.
    """
    seen: dict[str, set[str]] = {}
    bad_lines: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = parse_md5sums(line, source=f"{source} line {number}")
        except ManifestFormatError:
            bad_lines.append(f"{source} line {number} is not '<md5>  <name>': {line[:120]!r}")
            continue
        for name, digest in entry.items():
            seen.setdefault(name, set()).add(digest)
    digests = {name: next(iter(found)) for name, found in seen.items() if len(found) == 1}
    conflicts = {name: sorted(found) for name, found in seen.items() if len(found) > 1}
    return digests, conflicts, bad_lines


class _LenientArchiveClient(ArchiveClient):
    """An :class:`ArchiveClient` whose ``md5sums`` is :func:`lenient_md5sums`, remembering what it dropped."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.conflicts: dict[str, list[str]] | None = None  # None until MD5SUMS is read
        self.bad_lines: list[str] = []

    def md5sums(self) -> dict[str, str]:
        url = self.url(MD5SUMS)
        digests, self.conflicts, self.bad_lines = lenient_md5sums(self.md5sums_text(), source=url)
        return digests


def transferable(
    listing: Iterable[Any], conflicts: Mapping[str, list[str]] | None = None
) -> tuple[list[ArchiveFile], list[str]]:
    """Split the archive's listing into files the service can transfer and the reasons the others can't.

    Only releases (per :func:`ztfcat.sources.http.classify`) are kept; ``MD5SUMS`` and the odd 0-byte
    ``.tar`` entries are not tarballs anyone wants mirrored.  A release needs an exact size and one
    hex MD5: the service skips a file of the wrong size and fails one of the wrong digest.

    Parameters
    ----------
    listing : iterable
        Records with ``name``, ``url``, ``size`` and ``md5`` (hex, or ``None``) attributes, as
        ``ztfcat.mirror.archive.cached_listing`` returns them.
    conflicts : mapping, optional
        Name to the different digests ``MD5SUMS`` gives it (see :func:`lenient_md5sums`), to say why
        such a file has no MD5; None when the manifest was not read (the listing came from the cache).

    Returns
    -------
    files : list of ArchiveFile
        Sorted by URL.
    skipped : list of str
        ``"<name>: <why>"`` for each release left out, sorted by name.
    """
    files: dict[str, ArchiveFile] = {}
    skipped: dict[str, str] = {}
    for item in listing:
        name = item.name
        if classify(name) is None:
            continue
        if item.size is None:
            skipped[name] = "exact size unknown (the archive gave no Content-Length)"
            continue
        if not item.md5:
            if conflicts is None:
                skipped[name] = "no single MD5 in the archive's MD5SUMS (no line, or lines that disagree)"
            elif name in conflicts:
                skipped[name] = (
                    f"MD5SUMS gives it {len(conflicts[name])} different MD5s ({', '.join(conflicts[name])})"
                )
            else:
                skipped[name] = "not in the archive's MD5SUMS, so its transfer could not be verified"
            continue
        record = ArchiveFile(name, item.url, int(item.size), item.md5.strip().lower())
        try:
            md5_base64(record.md5_hex)
        except ValueError:
            skipped[name] = f"MD5SUMS entry {item.md5!r} is not an MD5 of 32 hex digits"
            continue
        seen = files.get(record.url)
        if seen is not None and seen != record:
            skipped[name] = f"listed twice, with MD5 {seen.md5_hex} and {record.md5_hex}"
        files[record.url] = record
    ordered = sorted(
        (f for f in files.values() if f.name not in skipped), key=lambda f: f.url.encode("utf-8")
    )
    return ordered, [f"{name}: {why}" for name, why in sorted(skipped.items())]


def listing_prefix(urls: Iterable[str], prefix: str = "") -> str:
    """The bucket folder that holds every object the service would write for ``urls``.

    Listing only that folder (``[prefix/]HOST/alerts/public/``) keeps a large bucket's unrelated
    objects out of the comparison; with URLs on several hosts it is the prefix alone.
    """
    names = [transfer_object_name(url, prefix) for url in urls]
    if not names:
        return ""
    common = os.path.commonprefix(names)
    return common[: common.rfind("/") + 1]


def _base_prefix(archive_url: str, prefix: str) -> str:
    """The bucket folder the service writes the archive folder ``archive_url`` to."""
    base = archive_url if archive_url.endswith("/") else archive_url + "/"
    try:
        return listing_prefix([base + "x"], prefix)
    except ValueError as exc:
        raise ZtfcatError(f"archive URL {archive_url!r} is not an HTTP(S) folder: {exc}") from exc


def create_sync_table(
    catalog: Catalog,
    bucket_name: str | None = None,
    out_path: str | os.PathLike[str] | None = None,
    *,
    prefix: str = "",
    include_empty: bool = True,
    refresh: bool = True,
) -> Table:
    """The Storage Transfer Service URL list of the archive tarballs ``bucket_name`` does not hold yet.

    A tarball counts as held when the bucket has an object named as the service names it,
    ``[prefix/]HOST/PATH`` of its URL, with the archive's MD5.  An object under another name (a bare
    ``ztf_public_20180626.tar.gz``) does not count, since the service would write the ``HOST/PATH``
    object anyway; an object with another MD5 is listed again and its row says why.

    Parameters
    ----------
    catalog : Catalog
        Whose archive (``catalog.archive_url``) and cached listing are used.
    bucket_name : str, optional
        The destination bucket; without one, every tarball is listed.
    out_path : path, optional
        Also write the URL list there: ``TsvHttpData-1.0``, then ``url<TAB>size<TAB>base64 md5`` lines
        sorted by URL, ready to upload for a transfer job.
    prefix : str, optional
        The transfer job's destination folder in the bucket.
    include_empty : bool, optional
        ``False`` leaves out empty nights (tarballs of at most 100 bytes, a gzip'd empty tar).
    refresh : bool, optional
        Ask the archive again for its listing, MD5SUMS and sizes (``False``: use the cached listing when
        there is one).

    Returns
    -------
    astropy.table.Table
        Columns ``url``, ``size`` (bytes), ``md5`` (base64) and ``reason`` (``"new"``,
        ``"md5 differs (bucket X, archive Y)"``, ...).  ``meta`` holds ``bucket``, ``prefix``,
        ``archive_url``, ``n_archive`` (tarballs the archive offers), ``n_in_bucket`` (of those, held
        with the right MD5), ``total_bytes``, ``skipped`` (``"name: why"`` of releases that cannot be
        transferred), ``manifest_problems`` (unreadable ``MD5SUMS`` lines) and ``out_path``.

    Raises
    ------
    StorageError
        If the bucket does not exist or cannot be read, or there are no credentials.
    DownloadError, NotFoundError
        If the archive's listing or ``MD5SUMS`` cannot be had.  A damaged or self-contradicting
        ``MD5SUMS`` line is not an error here (see :func:`lenient_md5sums`): it costs only its file.

    Warns
    -----
    SkippedFilesWarning
        When releases are left out for want of an exact size or a single MD5, or ``MD5SUMS`` has lines
        that cannot be read (also in ``meta["skipped"]`` and ``meta["manifest_problems"]``).
    """
    from .archive import cached_listing

    bucket_objects: dict[str, str | None] | None = None
    listed_under = ""
    if bucket_name:
        from ..sources.gcs import bucket_md5s

        # The bucket first: a wrong name or missing credentials fail before the archive's slow listing.
        listed_under = _base_prefix(catalog.archive_url, prefix)
        bucket_objects = bucket_md5s(bucket_name, listed_under)

    with _LenientArchiveClient(catalog.archive_url) as archive:
        listing = cached_listing(catalog, refresh=refresh, client=archive)
    files, skipped = transferable(listing, archive.conflicts)
    if bucket_name:
        needed = listing_prefix([f.url for f in files], prefix)
        if files and not needed.startswith(listed_under):  # the cache holds URLs of another archive folder
            bucket_objects = bucket_md5s(bucket_name, needed)

    rows = sync_rows(files, bucket_objects, prefix=prefix, include_empty=include_empty)
    table = sync_table(rows)
    n_in_bucket = 0
    if bucket_objects is not None:
        n_in_bucket = sum(
            bucket_objects.get(transfer_object_name(f.url, prefix)) == md5_base64(f.md5_hex) for f in files
        )
    table.meta.update(
        bucket=bucket_name or None,
        prefix=prefix,
        archive_url=catalog.archive_url,
        n_archive=len(files) + len(skipped),
        n_in_bucket=n_in_bucket,
        total_bytes=int(sum(row.size for row in rows)),
        skipped=skipped,
        manifest_problems=archive.bad_lines,
        out_path=None,
    )
    if out_path is not None:
        table.meta["out_path"] = str(write_tsv(rows, out_path))
    if skipped or archive.bad_lines:
        warnings.warn(
            f"{len(skipped)} archive release(s) left out of the URL list, "
            f"{len(archive.bad_lines)} unreadable MD5SUMS line(s): " + "; ".join(skipped + archive.bad_lines),
            SkippedFilesWarning,
            stacklevel=2,
        )
    return table


def sync_table_tsv(table: Table) -> str:
    """The URL list (``TsvHttpData-1.0``) of a :func:`create_sync_table` table: the text its ``out_path`` gets.

    For ``ztfcat sync-table -o -``, which writes the list to stdout instead of a file.
    """
    return format_tsv(SyncRow(r["url"], int(r["size"]), r["md5"], r["reason"]) for r in table)


def _release_state(catalog: Catalog, name: str):
    with catalog.engine.connect() as conn:
        return conn.execute(
            select(
                releases.c.status, releases.c.n_alerts, releases.c.n_errors, releases.c.size, releases.c.md5
            ).where(releases.c.name == name)
        ).first()


def _archive_md5s(catalog: Catalog) -> dict[str, str]:
    """Hex MD5 per release name from the cached listing (no network), to check bucket copies against."""
    with catalog.engine.connect() as conn:
        rows = conn.execute(select(remote_files.c.name, remote_files.c.md5)).all()
    return {name: md5.lower() for name, md5 in rows if md5}


def sync_bucket(
    catalog: Catalog,
    bucket_name: str,
    prefix: str = "",
    progress: BucketProgress | None = None,
    *,
    client: Any = None,
) -> list[IngestReport]:
    """Ingest every release in ``bucket_name`` (under ``prefix``) that the catalog lacks or has incomplete.

    Releases are found by name (``ztf_public_YYYYMMDD[_programid3].tar.gz`` at any depth, so both a
    transfer job's ``HOST/PATH`` objects and hand-uploaded ones count), in object-name order, and each
    is streamed from the bucket through the single-pass ingest without a local copy.  A release already
    complete in the catalog is not read again, whichever object it came from.  When the catalog's cached
    archive listing knows a release's MD5 and the bucket's copy has another, the copy is not ingested:
    it is not the archive's file.  Every object read is checked against its own GCS MD5 as it streams
    (composite objects, which have none, are read unchecked).

    Parameters
    ----------
    catalog : Catalog
        The catalog to fill.
    bucket_name : str
        The bucket to read.
    prefix : str, optional
        Only objects whose names start with this.
    progress : callable, optional
        ``progress(bucket_object, n_alerts, n_bytes)`` while an object is ingested.
    client : google.cloud.storage.Client, optional
        Used to list the bucket; default credentials otherwise.

    Returns
    -------
    list of IngestReport
        One per release object, in name order: ingested, ``already_complete``, or ``status="failed"``
        with the reason as its one error (one bad object does not stop the others).

    Raises
    ------
    StorageError
        If the bucket does not exist or cannot be listed, or there are no credentials.
    """
    from ..ingest.pipeline import IngestReport
    from ..sources.gcs import list_release_objects

    objects = [
        obj
        for obj in list_release_objects(bucket_name, prefix, client)
        if classify(posixpath.basename(obj.name)) is not None
    ]
    archive_md5 = _archive_md5s(catalog) if objects else {}
    reports: list[IngestReport] = []
    for obj in objects:
        name = posixpath.basename(obj.name)
        url = f"gs://{bucket_name}/{obj.name}"
        state = _release_state(catalog, name)
        if state is not None and state.status == "complete":
            reports.append(
                IngestReport(
                    name,
                    status="complete",
                    already_complete=True,
                    n_alerts=state.n_alerts,
                    n_errors=state.n_errors,
                    size=state.size or 0,
                    md5=state.md5,
                )
            )
            continue
        expected = archive_md5.get(name)
        got = md5_hex_from_base64(obj.md5_base64) if obj.md5_base64 else None
        if expected is not None and got is not None and got != expected:
            reports.append(
                IngestReport(
                    name,
                    status="failed",
                    errors=[(url, f"md5 {got} is not the archive's {expected}; not ingested")],
                )
            )
            continue
        callback = None if progress is None else (lambda n, b, _obj=obj: progress(_obj, n, b))
        try:
            reports.append(catalog.ingest(url, progress=callback))
        except ZtfcatError as exc:
            reports.append(IngestReport(name, status="failed", errors=[(url, str(exc))]))
    return reports
