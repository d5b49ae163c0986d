"""The :class:`Catalog`: one object that is the whole Python API over a local alert catalog.

Every lookup is an indexed query: ids come from the primary key, packets from the path (and offset)
stored in their row, iteration pages by key (``WHERE candid > :last ORDER BY candid LIMIT n``), never by
``OFFSET`` and never by looking at the disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, delete, func, select

from . import settings
from .errors import AlertDecodeError, InvalidQueryError, NotFoundError, ZtfcatError
from .store.blobs import LAYOUTS, read_blob, remove_release
from .store.db import ensure_schema, is_sqlite, make_engine
from .store.filters import DEFAULT_COLUMNS, as_date, column, unfinished_hidden, where_clauses
from .store.readonly import DEFAULT_MAX_ROWS, DEFAULT_TIME_LIMIT_S, Cancel, SqlResult, run_readonly
from .store.tables import (
    alert_releases,
    alerts,
    catalog_settings,
    fp_hists,
    history_rebuilds,
    ingest_errors,
    objects,
    prv_candidates,
    releases,
    remote_files,
)

if TYPE_CHECKING:  # ingest pulls in numpy and the tar reader: imported by the methods that ingest or delete
    from .ingest.pipeline import IngestProgress, IngestReport

PAGE = 1000


class Catalog:
    """A local ZTF alert catalog: a database (SQLite by default, or PostgreSQL) and a data directory.

    Parameters
    ----------
    database_url : str, optional
        Any SQLAlchemy URL; default ``ZTFCAT_DATABASE_URL``, then ``catalog.sqlite`` in the data dir.
    data_dir : path, optional
        Where raw packets live; default ``ZTFCAT_DATA_DIR``, then a per-user folder.
    archive_url : str, optional
        The public archive (or a mirror); default ``ZTFCAT_ARCHIVE_URL``, then ZTF's own.
    layout : {"files", "pack"}, optional
        How new releases store their packets; default ``ZTFCAT_LAYOUT``, then the layout the catalog
        was made or last converted with, then ``pack``.
    blobs : str, optional
        Shared storage for new nights' packs, for ingest workers on several machines: ``gs://bucket/prefix``
        or a directory every machine mounts (:mod:`ztfcat.store.blobstore`); default ``ZTFCAT_BLOB_URL``, then
        the store the catalog recorded, then none (packets under the data directory).  Implies ``pack``.

    Nothing is opened or created until the catalog is first used.
    """

    def __init__(
        self,
        database_url: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        archive_url: str | None = None,
        *,
        layout: str | None = None,
        blobs: str | os.PathLike[str] | None = None,
    ) -> None:
        self.data_dir = settings.data_dir(data_dir)
        self.database_url = settings.database_url(database_url, self.data_dir)
        self.archive_url = settings.archive_url(archive_url)
        self._layout = layout or os.environ.get("ZTFCAT_LAYOUT") or None
        self._asked_layout = self._layout
        if self._layout is not None and self._layout not in LAYOUTS:
            raise ZtfcatError(f"unknown blob layout {self._layout!r}; choose one of {', '.join(LAYOUTS)}")
        self._blobs = settings.blob_url(blobs)
        if self._blobs is not None:
            from .store.blobstore import open_store

            self._blobs = open_store(self._blobs).url  # refused here if it is no store at all
        self._engine: Engine | None = None
        self._decoder_instance = None
        self._local = threading.local()
        self._lookups: list = []

    def __repr__(self) -> str:
        return f"Catalog(database_url={self.url_for_display!r}, data_dir={str(self.data_dir)!r})"

    @property
    def url_for_display(self) -> str:
        """The database URL with any password hidden, for messages and ``ztfcat info``; opens nothing."""
        from sqlalchemy.engine import make_url

        return make_url(self.database_url).render_as_string(hide_password=True)

    @property
    def _decoder(self):
        """The Avro decoder, made when the first packet is decoded, not when a query runs.

        It reads packets with the compiled reader (:func:`ztfcat.ingest.rowdecode.compile_record_reader`),
        with fastavro where that is not built.
        """
        if self._decoder_instance is None:
            from .ingest.avro import AlertDecoder

            self._decoder_instance = AlertDecoder()
        return self._decoder_instance

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, created (and the schema checked or created) on first use."""
        if self._engine is None:
            engine = make_engine(self.database_url)
            try:
                ensure_schema(engine)
            except BaseException:
                engine.dispose()  # a refused catalog keeps no connection open to its file
                raise
            self._engine = engine
        return self._engine

    @property
    def layout(self) -> str:
        """The blob layout new releases get: the argument, ``ZTFCAT_LAYOUT``, the catalog's own, ``pack``.

        A catalog made before the layout was recorded keeps that of its latest release.  ``pack`` is the
        default because creating a file per packet costs the kernel ~6x more than appending to one
        file a night: the ingest's main pass runs at about half the speed with ``files``
        (docs/benchmarks.md).
        """
        if self._layout is None:
            with self.engine.connect() as conn:
                stored = conn.execute(
                    select(catalog_settings.c.value).where(catalog_settings.c.key == "layout")
                ).scalar()
                if stored is None:
                    stored = conn.execute(
                        select(releases.c.layout).order_by(releases.c.id.desc()).limit(1)
                    ).scalar()
            self._layout = stored or "pack"
        return self._layout

    @property
    def blobs(self) -> str | None:
        """Where new nights' packs go: the argument, ``ZTFCAT_BLOB_URL``, the catalog's recorded store,
        or None for the data directory."""
        if self._blobs is None:
            with self.engine.connect() as conn:
                self._blobs = conn.execute(
                    select(catalog_settings.c.value).where(catalog_settings.c.key == "blobs")
                ).scalar()
        return self._blobs

    def _remember_layout(self, layout: str, key: str = "layout") -> None:
        """Store the catalog's layout (or another setting under ``key``): an upsert, so two first ingests
        at once cannot collide on the key."""
        if is_sqlite(self.engine):
            from sqlalchemy.dialects.sqlite import insert as upsert
        else:
            from sqlalchemy.dialects.postgresql import insert as upsert
        statement = upsert(catalog_settings).values(key=key, value=layout)
        statement = statement.on_conflict_do_update(
            index_elements=[catalog_settings.c.key], set_={"value": statement.excluded.value}
        )
        with self.engine.begin() as conn:
            conn.execute(statement)

    def _check_home(self, local: bool) -> None:
        """Refuse to write from a data directory that lacks some of the catalog's local packets (see
        :mod:`ztfcat.store.home`); ``local``: this call writes packets into the data directory."""
        from .store.home import check

        check(self.engine, self.data_dir, local)

    def convert_layout(self, target: str, progress: Callable[[str, int], None] | None = None) -> int:
        """Move every release's packets to the ``target`` layout and make it the catalog's layout.

        Safe to interrupt: run it again to finish.  Returns how many releases were converted.
        """
        from .store.layout import convert

        self._check_home(local=True)
        converted = convert(self.engine, self.data_dir, target, progress)
        self._remember_layout(target)
        self._layout = target
        return converted

    def close(self) -> None:
        """Release database connections."""
        for connection in self._lookups:
            with contextlib.suppress(Exception):  # a connection of another, finished thread
                connection.close()
        self._lookups.clear()
        self._local = threading.local()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- ingest ----------------------------------------------------------------------------------
    def ingest(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        *,
        name: str | None = None,
        progress: IngestProgress | None = None,
        force: bool = False,
        verify: Callable[[], None] | None = None,
        origin: str | None = None,
    ) -> IngestReport:
        """Ingest one nightly ``.tar.gz``: a path, a ``gs://bucket/object`` URL or a binary stream.

        A stream needs ``name`` (the tarball's file name) unless it has a ``name`` attribute.
        Ingesting a release that is already complete does nothing (``force=True`` replaces it).
        ``verify`` is called after the last byte is read and before the release can be complete; what
        it raises fails the release (downloads check their size and MD5 there).  ``origin`` is recorded
        as the release's source (default: the path, URL or stream name).
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(source, str | os.PathLike):
            from .sources.tarballs import source_for

            where = source_for(source)
            with where.open() as stream:
                return self._ingest(stream, name or where.name, origin or where.origin, progress, force, verify)
        if name is None:
            name = Path(str(getattr(source, "name", "") or "")).name
            if not name:
                raise ZtfcatError("ingesting a stream needs name= (the tarball's file name)")
        return self._ingest(source, name, origin or getattr(source, "name", None), progress, force, verify)

    def _ingest(self, stream, name, origin, progress, force, verify) -> IngestReport:
        from .ingest.pipeline import ingest

        local = self.blobs is None
        self._check_home(local)  # before anything is written
        if local:
            from .store.home import confirm

            given = verify

            def verify() -> None:  # once every row is stored: still the home?  (see home.confirm)
                confirm(self.engine, self.data_dir, name)
                if given is not None:
                    given()

        with self.engine.connect() as conn:
            if (
                conn.execute(select(catalog_settings.c.key).where(catalog_settings.c.key == "layout")).first()
                is None
            ):
                self._remember_layout(self.layout)  # the first ingest fixes the catalog's layout
        store, layout = None, self.layout
        if self.blobs is not None:
            from .store.blobstore import open_store

            store, layout = open_store(self.blobs), "pack"
            if self._asked_layout == "files":
                raise ZtfcatError(f"{name}: a blob store ({self.blobs}) needs the pack layout, not files")
            self._remember_layout(store.url, key="blobs")  # workers elsewhere put their nights there too
        return ingest(
            self.engine,
            self.data_dir,
            stream,
            name,
            layout=layout,
            origin=str(origin) if origin else None,
            progress=progress,
            force=force,
            decoder=self._decoder,
            verify=verify,
            blobs=store,
        )

    # -- the archive and buckets (ztfcat.mirror) ------------------------------------------------
    def remote_releases(self, refresh: bool = False):
        """The archive's releases as an astropy Table with what this catalog holds of each; the listing
        is cached in the catalog, ``refresh=True`` asks the archive again.  See
        :func:`ztfcat.mirror.archive.listing_table`."""
        from .mirror.archive import listing_table

        return listing_table(self, refresh)

    def download_night(self, year: int, month: int, day: int, **options: Any) -> IngestReport:
        """Download, verify (size and MD5) and ingest the release of one night, streaming; options as
        in :func:`ztfcat.mirror.archive.download_release` (``force``, ``keep_tarballs``, ``progress``)."""
        from .mirror.archive import download_night

        return download_night(self, year, month, day, **options)

    def download_recent(self, max_downloads: int | None = 1, stop_on_exist: bool = False, **options: Any):
        """Download the newest releases not yet complete here, newest first; a list of ingest reports.
        See :func:`ztfcat.mirror.archive.download_recent`."""
        from .mirror.archive import download_recent

        return download_recent(self, max_downloads, stop_on_exist, **options)

    def remove_downloads(self, names=None) -> int:
        """Delete kept tarballs and ``.part`` files of the given releases (all when None); how many."""
        from .mirror.archive import remove_downloads

        return remove_downloads(self, names)

    def sync_bucket(self, bucket_name: str, prefix: str = "", progress=None, **options: Any):
        """Ingest every release a Google Cloud Storage bucket holds that this catalog lacks, streamed.
        See :func:`ztfcat.mirror.bucket.sync_bucket`."""
        from .mirror.bucket import sync_bucket

        return sync_bucket(self, bucket_name, prefix, progress, **options)

    def create_sync_table(self, bucket_name: str | None = None, out_path=None, **options: Any):
        """The Storage Transfer Service URL list of archive tarballs the bucket lacks (an astropy Table).
        See :func:`ztfcat.mirror.bucket.create_sync_table`."""
        from .mirror.bucket import create_sync_table

        return create_sync_table(self, bucket_name, out_path, **options)

    # -- releases --------------------------------------------------------------------------------
    def releases(self):
        """Every release in the catalog as an astropy Table, newest night first."""
        query = select(releases).order_by(releases.c.night.desc(), releases.c.name)
        return self._table(query)

    def release(self, name: str):
        """One release's row (as a SQLAlchemy Row), by file name; NotFoundError if absent."""
        with self.engine.connect() as conn:
            row = conn.execute(select(releases).where(releases.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no release {name!r} in the catalog")
        return row

    def ingest_errors(self, name: str | None = None):
        """Members that failed to decode, with their release and reason, as an astropy Table."""
        query = select(releases.c.name.label("release"), ingest_errors.c.member, ingest_errors.c.reason).join(
            releases, releases.c.id == ingest_errors.c.release_id
        )
        if name is not None:
            query = query.where(releases.c.name == name)
        return self._table(query.order_by(ingest_errors.c.id))

    def delete(
        self,
        nights: Any = None,
        *,
        names: Sequence[str] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> int:
        """Delete releases (rows and packets): every one, or those of the given nights / file names.

        Light-curve points that other releases also carry are rebuilt from those. Returns how many
        releases were removed.  ``progress(name)`` is called as each release's packets are gone.
        """
        from .ingest.pipeline import delete_release, release_key, release_locks, repair

        self._check_home(local=False)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(releases.c.id, releases.c.name, releases.c.status, releases.c.night)
            ).all()
        if nights is None and names is None:
            chosen = rows
        else:
            wanted_nights = set() if nights is None else {as_date(n) for n in _as_list(nights)}
            wanted_names = set(names or ())
            chosen = [r for r in rows if r.night in wanted_nights or r.name in wanted_names]
        # never purge a release another process is ingesting
        with release_locks(self.engine, self.data_dir, [row.name for row in chosen]):
            if nights is None and names is None and self._delete_everything(chosen):
                for row in chosen:
                    remove_release(self.data_dir, release_key(row.name))
                    if progress is not None:
                        progress(row.name)
                return len(chosen)
            for row in chosen:
                delete_release(self.engine, self.data_dir, row.name)
                if progress is not None:
                    progress(row.name)
        repair(self.engine, self.data_dir)
        return len(chosen)

    def _delete_everything(self, chosen) -> bool:
        """Empty the catalog's tables at once if ``chosen`` (whose locks the caller holds) is still
        every release.  False when a release began meanwhile: its rows are kept, and the caller deletes
        the chosen releases one by one (their shared-storage objects are already gone, as then)."""
        from .ingest.bulk import lock_alert_writes
        from .store.blobstore import release_objects, remove_objects

        with self.engine.connect() as conn:
            shared = release_objects(conn, [row.id for row in chosen])
        remove_objects(self.data_dir, shared)  # objects first: a failure keeps the rows naming them
        with self.engine.connect() as conn:
            lock_alert_writes(conn)  # no ingest batch writes between this check and the deletes
            if set(conn.execute(select(releases.c.id)).scalars()) != {row.id for row in chosen}:
                conn.rollback()
                return False
            for table in (
                objects,
                fp_hists,
                prv_candidates,
                history_rebuilds,
                ingest_errors,
                alert_releases,
                alerts,
            ):
                conn.execute(delete(table))
            # Only the chosen rows: a release row made since the check (nothing of it written yet) stays.
            conn.execute(delete(releases).where(releases.c.id.in_([row.id for row in chosen])))
            conn.commit()
        return True

    def upgrade(self) -> str | None:
        """Bring the catalog's schema to the revision this ztfcat needs (``ztfcat db upgrade``); the revision now.

        Runs on an engine of its own: :attr:`engine` checks the schema first and refuses an old one.
        Light curves an upgrade marks for rebuilding wait for :meth:`repair` (see :meth:`pending_rebuilds`).
        """
        from .store.db import upgrade

        engine = make_engine(self.database_url)
        try:
            return upgrade(engine)
        finally:
            engine.dispose()

    def pending_rebuilds(self) -> int:
        """How many objects' light curves wait to be derived again (after a killed delete, or an
        upgrade from a catalog whose light curves were lossy); :meth:`repair` does them."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(history_rebuilds)).scalar_one()

    def repair(self) -> None:
        """Finish what killed runs left behind: releases half deleted, light curves half rebuilt.

        Ingests and deletes do this themselves; it is here for ``ztfcat repair`` and for catalogs
        upgraded from a schema whose light curves must be derived again.  It also checks that every
        complete night on shared storage still has its pack object (one existence check per night):
        a night whose object is gone is purged and marked ``failed`` naming it, to be ingested again.
        """
        from .ingest.pipeline import repair
        from .store.blobstore import repair_missing

        self._check_home(local=False)
        repair(self.engine, self.data_dir)
        repair_missing(self.engine, self.data_dir)  # complete nights whose shared object vanished

    # -- alerts ----------------------------------------------------------------------------------
    def alert_ids(self, *conditions: str, **filters: Any) -> list[int]:
        """Candids of every alert (or those matching the filters), in increasing order."""
        query = select(alerts.c.candid).order_by(alerts.c.candid)
        clauses = where_clauses(conditions, filters, self.engine) + unfinished_hidden(self.engine)
        if clauses:
            query = query.where(and_(*clauses))
            with self.engine.connect() as conn:
                return list(conn.execute(query).scalars())
        # The whole list: straight through the driver, ~3x faster than building Row objects.
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("SELECT candid FROM alerts ORDER BY candid")
            ids: list[int] = []
            while rows := cursor.fetchmany(1 << 16):  # never a million tuples at once beside the list
                ids.extend(row[0] for row in rows)
            return ids
        finally:
            raw.close()

    def count(self, *conditions: str, **filters: Any) -> int:
        """How many alerts match the filters."""
        query = select(func.count()).select_from(alerts)
        clauses = where_clauses(conditions, filters, self.engine) + unfinished_hidden(self.engine)
        if clauses:
            query = query.where(and_(*clauses))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def _lookup_cursor(self):
        """A cursor on a connection of this thread's own, kept for point lookups by candid.

        Checking a connection out of the pool and building a Core statement costs ten times the
        indexed read itself (docs/benchmarks.md).  The connection is detached from the pool and in
        autocommit mode, so it never holds a transaction open between lookups.
        """
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            fairy = self.engine.raw_connection()
            dbapi = fairy.driver_connection
            fairy.detach()
            if is_sqlite(self.engine):
                dbapi.isolation_level = None
            else:
                dbapi.autocommit = True
            cursor = self._local.cursor = dbapi.cursor()
            self._lookups.append(dbapi)
        return cursor

    def _locate(self, candid: int):
        mark = "?" if is_sqlite(self.engine) else "%s"
        cursor = self._lookup_cursor()
        cursor.execute(
            f"SELECT blob_path, blob_offset, blob_size FROM alerts WHERE candid = {mark}",  # noqa: S608
            (int(candid),),
        )
        row = cursor.fetchone()
        if row is None:
            raise NotFoundError(f"no alert with candid {candid} in the catalog at {self.data_dir}")
        return row

    def get_alert(self, candid: int, raw: bool = False) -> dict | bytes:
        """One alert by candid: the packet as a dict (as fastavro parses it), or its Avro bytes."""
        path, offset, size = self._locate(candid)
        data = read_blob(self.data_dir, path, offset, size, candid)
        return data if raw else self._decoded(data, candid, path)

    def _decoded(self, data: bytes, candid: int, path: str) -> dict:
        """A stored packet as a dict; a packet damaged since it was stored is named in the error."""
        try:
            return self._decoder.full(data)
        except AlertDecodeError as exc:
            raise AlertDecodeError(f"alert {candid} (its packet in {path}): {exc}") from exc

    def iter_alerts(
        self, n: int | None = None, *conditions: str, raw: bool = False, **filters: Any
    ) -> Iterator[dict | bytes | list]:
        """Every alert (or those matching the filters) in candid order: one at a time, or lists of ``n``.

        Pages through the primary key, so memory stays bounded and each page costs the same.
        """
        if n is not None and (not isinstance(n, int) or n < 1):
            raise InvalidQueryError(f"iter_alerts takes a positive batch size, not {n!r}")
        clauses = where_clauses(conditions, filters, self.engine) + unfinished_hidden(self.engine)
        page = max(PAGE, n or 1)
        batch: list = []
        last = None
        cols = (alerts.c.candid, alerts.c.blob_path, alerts.c.blob_offset, alerts.c.blob_size)
        while True:
            query = select(*cols).order_by(alerts.c.candid).limit(page)
            keyed = [*clauses, alerts.c.candid > last] if last is not None else clauses
            if keyed:
                query = query.where(and_(*keyed))
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                break
            last = rows[-1][0]
            for candid, path, offset, size in rows:
                data = read_blob(self.data_dir, path, offset, size, candid)
                item = data if raw else self._decoded(data, candid, path)
                if n is None:
                    yield item
                else:
                    batch.append(item)
                    if len(batch) == n:
                        yield batch
                        batch = []
            if len(rows) < page:
                break
        if batch:
            yield batch

    def query(
        self,
        *conditions: str,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
        order_by: str = "candid",
        **filters: Any,
    ):
        """Alerts matching the filters as an astropy Table of catalog columns (default: a useful few)."""
        return self._table(self._select(conditions, columns, limit, order_by, filters))

    def query_rows(
        self,
        *conditions: str,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
        order_by: str = "candid",
        **filters: Any,
    ) -> tuple[list[str], list[tuple]]:
        """What :meth:`query` selects, as column names and plain tuples.

        For callers that only print rows (the CLI): it spares them importing astropy, which costs more
        than a small query.
        """
        with self.engine.connect() as conn:
            result = conn.execute(self._select(conditions, columns, limit, order_by, filters))
            return list(result.keys()), [tuple(r) for r in result]

    def _select(self, conditions, columns, limit, order_by, filters):
        names = columns or DEFAULT_COLUMNS
        cols = [column(c) for c in names]
        order = order_by.lstrip("-")
        query = select(*cols).order_by(column(order).desc() if order_by.startswith("-") else column(order))
        clauses = where_clauses(conditions, filters, self.engine) + unfinished_hidden(self.engine)
        if clauses:
            query = query.where(and_(*clauses))
        if limit is not None:
            query = query.limit(int(limit))
        return query

    def _table(self, query):
        from astropy.table import Table

        with self.engine.connect() as conn:
            result = conn.execute(query)
            names = list(result.keys())
            rows = result.all()
        if not rows:
            return Table(names=names, dtype=[_empty_dtype(query, n) for n in names])
        return Table(rows=[tuple(r) for r in rows], names=names, masked=any(None in r for r in rows))

    # -- exploring -------------------------------------------------------------------------------
    def lightcurve(self, object_id: str, *, forced: bool = True):
        """The deduplicated light curve of one object: detections, upper limits and forced photometry.

        An astropy Table with one row per point, sorted by jd: ``kind`` ("detection", "upper_limit",
        "forced"), ``upper_limit``, ``fid`` and ``band``, ``jd`` and ``mjd``, the PSF photometry, the
        forced-photometry fields and ``alert_candid``; nulls masked, ``meta["objectId"]`` set, ready for
        ``plot_lightcurve``.  Read from the history tables, which hold each point once, so nothing is
        decoded.  NotFoundError when no alert of the object is in the catalog.
        """
        from .store.lightcurve import lightcurve

        return lightcurve(self.engine, object_id, forced=forced)

    def cone_search(self, ra, dec=None, radius=None, *conditions: str, columns=None, limit=None, **filters):
        """Alerts within ``radius`` of a sky position, nearest first, with ``separation`` in arcsec.

        ``ra`` and ``dec`` are degrees (or Quantities/Angles); or give a SkyCoord as ``ra`` and the radius
        next: ``cone_search(coord, 5)``.  A number radius is arcseconds; ``5 * u.arcsec``, an Angle or
        ``"1 arcmin"`` carry units.  Conditions, keyword filters and ``columns`` work as in :meth:`query`;
        ``limit`` keeps the nearest.  Integer ``hpx`` range scans, then an exact distance check: exact at
        the poles and across RA 0/360, on SQLite and PostgreSQL alike.
        """
        from .store.conesearch import cone_search

        return cone_search(self.engine, ra, dec, radius, *conditions, columns=columns, limit=limit, **filters)

    # -- science (ztfcat.science) -----------------------------------------------------------------
    def crossmatch(self, positions, radius, *conditions: str, nearest: bool = False, jd=None, **options):
        """Every alert (or the nearest) within ``radius`` of each row of a list of positions.

        ``positions``: an astropy Table, a pandas DataFrame, a SkyCoord or a CSV path (columns ``ra``/``dec``
        or ``ra_col=``/``dec_col=``); a number radius is arcseconds.  One row per pair, the input's
        columns carried through, ``separation`` in arcsec.  See :func:`ztfcat.science.crossmatch.crossmatch`.
        """
        from .science.crossmatch import crossmatch

        return crossmatch(self.engine, positions, radius, *conditions, nearest=nearest, jd=jd, **options)

    def skymap_search(self, skymap, credible: float = 0.9, *conditions: str, jd=None, **options):
        """Alerts inside the ``credible`` region of a HEALPix / multi-order sky map or a MOC, in a window.

        See :func:`ztfcat.science.skymap.skymap_search` (``new_only``, ``min_detections``, filters).
        """
        from .science.skymap import skymap_search

        return skymap_search(self.engine, skymap, credible, *conditions, jd=jd, **options)

    def objects(self, *conditions: str, **options):
        """Objects at a glance: rows of the ``objects`` table matching conditions on its columns.

        See :func:`ztfcat.science.objects.query_objects`.
        """
        from .science.objects import query_objects

        return query_objects(self.engine, *conditions, **options)

    def refresh_objects(self, object_ids=None) -> int:
        """Recompute the ``objects`` rows of these objectIds (all when None) from alerts and history."""
        from .science.objects import refresh_objects

        return refresh_objects(self.engine, object_ids)

    def export_raw(
        self, *conditions: str, to_dir=None, to_tar=None, overwrite: bool = False, progress=None, **filters
    ):
        """Write the raw Avro packets of the matching alerts, byte for byte, to a folder or a new tarball.

        ``to_dir``: one ``<candid>.avro`` per alert (identical files already there are left alone).
        ``to_tar``: a new ``.tar.gz``/``.tgz`` (which :meth:`ingest` takes back) or ``.tar`` of
        ``<candid>.avro`` members, written in stream mode.  Give exactly one of them.  Filters as in
        :meth:`query`.  ``progress(n_alerts, n_bytes)`` is called after each packet.  Returns an
        :class:`~ztfcat.export.raw.ExportReport`.
        """
        from .export.raw import export_raw

        return export_raw(
            self.engine,
            self.data_dir,
            *conditions,
            to_dir=to_dir,
            to_tar=to_tar,
            overwrite=overwrite,
            progress=progress,
            **filters,
        )

    def to_parquet(self, target, *, overwrite: bool = False, progress=None, **kwargs):
        """Export the whole catalog as typed Parquet datasets in the new directory ``target``.

        Alerts (every column typed as in Avro, partitioned by night) and the ``prv_candidates`` and
        ``fp_hists`` light-curve tables, each row with its release and packet location; built beside
        ``target`` and renamed into place.  Needs ``ztfcat[hats]``.  Returns a
        :class:`~ztfcat.export.parquet.ParquetReport`; see :mod:`ztfcat.export.parquet`.
        """
        from .export.parquet import write_parquet

        return write_parquet(self.engine, target, overwrite=overwrite, progress=progress, **kwargs)

    def to_hats(
        self,
        target,
        *,
        overwrite: bool = False,
        client=None,
        scheduler=None,
        progress=None,
        objects: bool = False,
        **kwargs,
    ):
        """Build a HATS catalog of every alert at ``target`` (for ``lsdb.read_hats``) with hats-import on Dask.

        ``_healpix_29`` is the catalog's own ``hpx``.  ``objects=True`` builds the catalog of objects
        instead: one row per objectId at its alerts' mean position, light curves nested.  Runs on
        ``client``, on the scheduler at ``scheduler``, or on a small new ``LocalCluster``.  Needs
        ``ztfcat[hats]``.  Returns a :class:`~ztfcat.export.hats.HatsReport`; see
        :mod:`ztfcat.export.hats`.
        """
        from .export.hats import write_hats, write_hats_objects

        return (write_hats_objects if objects else write_hats)(
            self.engine,
            target,
            overwrite=overwrite,
            client=client,
            scheduler=scheduler,
            progress=progress,
            **kwargs,
        )

    def plot_stamps(self, candid: int, fig=None):
        """The Science / Template / Difference cutouts of one alert, by candid, as a Figure."""
        from .plotting import plot_stamps

        return plot_stamps(self.get_alert(candid), fig=fig)

    def plot_lightcurve(self, object_id: str, *, forced: bool = True, ax=None, fig=None):
        """The light curve of one object as a Figure (see :meth:`lightcurve`)."""
        from .plotting import plot_lightcurve

        return plot_lightcurve(self.lightcurve(object_id, forced=forced), ax=ax, fig=fig)

    # -- ad-hoc SQL ------------------------------------------------------------------------------
    def sql(
        self,
        statement: str,
        params: dict | None = None,
        limit: int | None = None,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        timeout: float | None = DEFAULT_TIME_LIMIT_S,
    ):
        """Run one read-only SQL statement and return (column names, rows).

        Read-only is enforced by the database (see :mod:`ztfcat.store.readonly`): a SQLite authorizer that
        allows reads only, a PostgreSQL session that is READ ONLY.  ``limit`` returns at most that many
        rows quietly; otherwise at most ``max_rows`` are returned, with a warning when there were more.
        ``timeout`` stops the statement after that many seconds (None: no limit).  For more rows than
        fit in memory, iterate :meth:`sql_stream`.
        """
        cap = limit if limit else max_rows
        if not cap:
            raise InvalidQueryError(
                "Catalog.sql returns a list, so it needs a row cap; use sql_stream for all rows"
            )
        with self.sql_stream(statement, params, max_rows=cap, timeout=timeout) as result:
            rows = list(result)
        if result.truncated and not limit:
            warnings.warn(f"SQL result truncated at {cap} rows (max_rows)", stacklevel=2)
        return result.columns, rows

    def sql_stream(
        self,
        statement: str,
        params: dict | None = None,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        timeout: float | None = DEFAULT_TIME_LIMIT_S,
        cancel: Cancel | None = None,
    ) -> contextlib.AbstractContextManager[SqlResult]:
        """A context manager yielding a :class:`~ztfcat.store.readonly.SqlResult` whose rows arrive in batches.

        ``max_rows=0`` lifts the row cap; ``cancel`` (a :class:`~ztfcat.store.readonly.Cancel`) stops the
        statement when set, e.g. by Ctrl-C through :func:`~ztfcat.store.readonly.cancel_on_sigint`.
        """
        return run_readonly(
            self.engine, statement, params, max_rows=max_rows, time_limit_s=timeout, cancel=cancel
        )

    # -- summary ---------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether a catalog is already there, found without creating one (``ztfcat info`` asks this).

        A SQLite catalog is its file; any other database holds one when its ``alerts`` table exists.
        """
        from sqlalchemy import inspect
        from sqlalchemy.engine import make_url

        if self._engine is not None:
            return True
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite":
            return url.database not in (None, "", ":memory:") and Path(url.database).is_file()
        engine = make_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return inspect(conn).has_table(alerts.name)
        finally:
            engine.dispose()

    def columns(self, table: str = "alerts", search: str | None = None) -> list[tuple[str, str, str]]:
        """Every column of a catalog table as ``(name, SQL type, description)``, in table order.

        The descriptions of ZTF's own fields are the ``doc`` strings of ZTF's Avro schemas; the
        catalog's own columns say what ztfcat keeps in them.  Read from the schema this ztfcat
        defines, so it needs no database.  ``search`` keeps only the columns whose name or description
        holds that text (case-insensitive).
        """
        from .store.tables import metadata

        if table not in metadata.tables:
            raise InvalidQueryError(f"no table {table!r}; tables are {', '.join(sorted(metadata.tables))}")
        from .store.fields import FIELDS

        docs = {**_OWN_DOCS, **FIELDS.get(_FIELD_PART.get(table, ""), {})}
        out = []
        for col in metadata.tables[table].columns:
            doc = docs.get(col.name)
            doc = doc[2] if isinstance(doc, tuple) else doc
            out.append((col.name, _type_name(col.type), doc or col.comment or ""))
        if search:
            needle = search.lower()
            out = [r for r in out if needle in r[0].lower() or needle in r[2].lower()]
        return out

    def info(self) -> dict[str, Any]:
        """Where the catalog is and what it holds, for ``ztfcat info``."""
        with self.engine.connect() as conn:
            per_release = conn.execute(
                select(releases.c.name, releases.c.status, releases.c.n_alerts, releases.c.n_errors).order_by(
                    releases.c.name
                )
            ).all()
            per_version = conn.execute(
                select(alerts.c.schemavsn, func.count())
                .group_by(alerts.c.schemavsn)
                .order_by(alerts.c.schemavsn)
            ).all()
            counts = {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (alerts, prv_candidates, fp_hists, ingest_errors, releases, remote_files)
            }
            extra = conn.execute(
                select(alerts.c.extra).where(alerts.c.extra.is_not(None)).limit(1000)
            ).scalars()
            unknown_fields: set[str] = set()
            for value in extra:
                unknown_fields.update(json.loads(value))
            unknown_top: set[str] = set()
            for value in conn.execute(
                select(releases.c.unknown_fields).where(releases.c.unknown_fields.is_not(None))
            ).scalars():
                unknown_top.update(n for n in json.loads(value) if not n.startswith("candidate."))
            n_extra = conn.execute(
                select(func.count()).select_from(alerts).where(alerts.c.extra.is_not(None))
            ).scalar_one()
        from .store.fields import KNOWN_VERSIONS

        return {
            "database": self.url_for_display,
            "data_dir": str(self.data_dir),
            "layout": self.layout,
            "blobs": self.blobs,
            "counts": counts,
            "releases": [tuple(r) for r in per_release],
            "schema_versions": [tuple(r) for r in per_version],
            "unknown_versions": sorted(v for v, _ in per_version if v not in KNOWN_VERSIONS),
            "alerts_with_unknown_fields": n_extra,
            "unknown_fields": sorted(unknown_fields),
            "unknown_top_fields": sorted(unknown_top),
        }


#: Where the ZTF docs of each table's columns are (``ztfcat.store.fields.FIELDS``), and the docs of the
#: columns that are ZTF's but outside the candidate record, or ztfcat's own.
_FIELD_PART = {"alerts": "candidate", "prv_candidates": "prv_candidate", "fp_hists": "fp_hist"}
_OWN_DOCS = {
    "objectId": "ZTF object identifier (the alert's objectId)",
    "schemavsn": "Avro schema version of the alert packet",
    "release_id": "the release (releases.id) the alert was ingested from",
    "alert_candid": "candid of the alert this point was read from",
    "blob_size": "bytes of the raw Avro packet",
}


def _type_name(sql_type) -> str:
    """A column type as people read it: float32 and float64 told apart, lengths kept."""
    from sqlalchemy import Float

    if isinstance(sql_type, Float):
        return "DOUBLE" if (sql_type.precision or 53) > 24 else "REAL"
    from sqlalchemy.dialects import sqlite

    return str(sql_type.compile(dialect=sqlite.dialect()))


def _empty_dtype(query, name: str):
    try:
        return query.selected_columns[name].type.python_type
    except (NotImplementedError, KeyError):
        return str


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list | tuple | set) else [value]
