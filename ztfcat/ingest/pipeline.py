"""Stream-ingest one nightly tarball: gzip, tar, decode, blobs and rows in a single pass.

The work is split so both cores stay busy and nothing waits on the disk: a child process inflates
(isal), the calling thread frames tar members and decodes each packet with the compiled row decoder up
to its ``candidate``, and a writer thread stores the packets and inserts the rows with the driver's bulk
path, committing once per batch.  A batch's rows are committed only after its packets are written, so
a committed row always has its blob.  (With :data:`INLINE_HISTORY` the main pass also decodes each
packet's history and stores its points in the batch's transaction; off, as measured slower.)

A release is ``ingesting`` until its alerts are in, ``history`` while the light-curve points not yet
stored are derived (all of them for a local file; a stream's early-history workers do most of theirs
during the main pass), then ``complete``.  Anything short of ``complete`` found at the next ingest (a killed run) is
purged and redone from the start, so the result is always that of one clean ingest.  A tarball that
fails as a whole (not gzip, truncated, corrupt) leaves its release ``failed`` and holding nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import gc
import hashlib
import io
import json
import math
import os
import queue
import resource
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import numpy as np
from sqlalchemy import Engine, bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import OperationalError

from ..errors import AlertDecodeError, IngestError, ReleaseBusyError, ZtfcatError
from ..sources.names import night_of, release_key
from ..store import blobstore
from ..store.blobs import BlobWriter, remove_release
from ..store.fields import KNOWN_VERSIONS
from ..store.partitions import release_hints
from ..store.sky import hpx_index
from ..store.tables import CANDIDATE_COLUMNS, alert_releases, alerts, ingest_errors, releases
from . import history
from .avro import AlertDecoder
from .bulk import BulkWriter, lock_alert_writes
from .rowdecode import DecodedAlert
from .rows import ALERT_COLUMNS, MEMBER_COLUMNS, AlertRow
from .tarstream import GzipStream, iter_members

_NEEDED = tuple((name, CANDIDATE_COLUMNS.index(name)) for name in ("jd", "ra", "dec"))
_JD_AT, _DEC_AT = CANDIDATE_COLUMNS.index("jd"), CANDIDATE_COLUMNS.index("dec")
_UNIX_EPOCH_JD = 2440587.5
_EPOCH = date(1970, 1, 1)
ERROR_COLUMNS = ("release_id", "member", "reason")
BATCH = 256
EARLY_HISTORY_BYTES = 64 << 20  # ~1,300 alerts: below, the final pass alone is quicker
#: Whether a local file's main pass decodes each packet's history too and stores its points with the
#: batch (no packet read twice).  Off: measured slower on 2 cores (docs/benchmarks.md, issue 12), as
#: the main pass is one GIL-bound lane while the history pass decodes on every core.
INLINE_HISTORY = False
MAX_MEMBER = 4 << 20  # 25x the largest real packet; decoding one amplifies memory about 20x

IngestProgress = Callable[[int, int], None]

#: Allocations between young-generation collections while an ingest runs (the default is 700).
GC_THRESHOLD = 50_000
_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, ...] | None = None


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    """Collect garbage rarely while ingests run: freeze what exists (the imported modules: a full
    collection would walk them again and again) and collect the young generation every
    :data:`GC_THRESHOLD` allocations.  An ingest makes millions of short-lived tuples, no cycles to
    speak of; with the default settings the collector took 0.7 s of an 8,000-alert night's 4.4 s of
    CPU, 0.05 s with these (docs/benchmarks.md).  Process-wide settings, so the first of concurrent
    ingests sets them and the last one restores them.
    """
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(GC_THRESHOLD, *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
                gc.unfreeze()


@dataclass
class IngestReport:
    """What one ingest did: counts, digest, and the first member errors, by name."""

    release: str
    status: str = "ingesting"
    n_alerts: int = 0
    n_errors: int = 0
    n_duplicates: int = 0
    n_shared: int = 0
    n_skipped: int = 0
    size: int = 0
    md5: str | None = None
    seconds: float = 0.0
    seconds_alerts: float = 0.0
    already_complete: bool = False
    versions: Counter = field(default_factory=Counter)
    unknown_versions: set[str] = field(default_factory=set)
    unknown_fields: set[str] = field(default_factory=set)
    unknown_top_fields: set[str] = field(default_factory=set)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Plain JSON-able values, for ``ztfcat ingest --json`` and logs."""
        data = dataclasses.asdict(self)
        data["versions"] = dict(self.versions)
        data["unknown_versions"] = sorted(self.unknown_versions)
        data["unknown_fields"] = sorted(self.unknown_fields)
        data["unknown_top_fields"] = sorted(self.unknown_top_fields)
        return data

    def __str__(self) -> str:
        if self.already_complete:
            return f"{self.release}: already complete ({self.n_alerts} alerts), nothing to do"
        text = (
            f"{self.release}: {self.status}, {self.n_alerts} alerts, {self.n_errors} bad members, "
            f"{self.n_shared} also held by other releases, {self.n_duplicates} repeated in the tarball, "
            f"{self.size} bytes in {self.seconds:.1f} s"
        )
        if self.unknown_versions:
            text += f"; schema versions new to ztfcat: {', '.join(sorted(self.unknown_versions))}"
        unknown = sorted(self.unknown_top_fields) + [f"candidate.{n}" for n in sorted(self.unknown_fields)]
        if unknown:
            text += f"; fields new to ztfcat (kept in the packets): {', '.join(unknown)}"
        return text


def _unsafe(member: str) -> str | None:
    path = PurePosixPath(member.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        return "unsafe member name (absolute or with '..'): skipped"
    return None


def _is_avro(member: str) -> bool:
    return member.endswith(".avro")


def _now() -> datetime:
    return datetime.now(UTC)


def _json_default(value):
    return value.hex() if isinstance(value, bytes) else str(value)


def night_observed(jd: float) -> date:
    """The UT date of a Julian date: the night observed (ZTF's nights at Palomar never cross 0h UT)."""
    return _EPOCH + timedelta(days=math.floor(jd - _UNIX_EPOCH_JD))


def _row(decoded: DecodedAlert, release_id: int, size: int) -> AlertRow:
    """An ``alerts`` row from a decoded packet, or why it cannot be one; its packet's place
    (``blob_path``, ``blob_offset``) and ``hpx`` are filled in by the writer thread.

    The decoder has already turned NaN into None and refused NUL bytes in every string it stores.
    """
    candid, object_id, version = decoded.candid, decoded.objectId, decoded.schemavsn
    if not isinstance(candid, int) or not isinstance(object_id, str) or not object_id:
        raise AlertDecodeError("the alert has no candid or objectId")
    if len(object_id) > 32 or len(version) > 16:  # the columns' widths, enforced by PostgreSQL
        raise AlertDecodeError(f"alert {candid} has an objectId or schemavsn too long to be ZTF's")
    if "\0" in object_id or "\0" in version:
        raise AlertDecodeError(f"alert {candid} has a NUL byte in its objectId or schemavsn")
    values = decoded.candidate
    for name, at in _NEEDED:
        value = values[at]
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise AlertDecodeError(f"alert {candid} has no usable candidate.{name} ({value!r})")
    if abs(values[_DEC_AT]) > 90:
        raise AlertDecodeError(f"alert {candid} has candidate.dec {values[_DEC_AT]} outside [-90, 90]")
    extra = json.dumps(decoded.extra, default=_json_default) if decoded.extra else None
    night = night_observed(values[_JD_AT]).isoformat()  # ISO text: both drivers store it as a date
    return AlertRow((candid, object_id, version, release_id, None, None, size, None, extra, night, *values))


class _Writer(threading.Thread):
    """Stores packets and inserts rows, one batch at a time, in the order the reader made them.

    Every alert of the tarball becomes a member of the release (``alert_releases``) with its own copy
    of the packet in the release's storage, so each release is whole by itself.  An alert already in
    the catalog keeps one ``alerts`` row, which reads the copy of the holding release whose name sorts
    first: a fixed rule, so the catalog does not depend on which release came first.
    """

    def __init__(self, engine: Engine, blobs: BlobWriter, report: IngestReport, progress, gz, early) -> None:
        super().__init__(name=f"writer {report.release}", daemon=True)
        self.early: history.EarlyHistory | None = early
        self.queue: queue.Queue = queue.Queue(maxsize=1)  # batches in memory: this one, one here, one stored
        self.engine = engine
        self.blobs = blobs
        self.report = report
        self.progress = progress
        self.gz = gz
        self.error: BaseException | None = None
        #: Alerts whose history was stored with their batch (decoded by the main pass).
        self.done: set[int] = set()
        self.decoder = AlertDecoder()

    def run(self) -> None:
        bulk = None
        try:
            bulk = BulkWriter(self.engine)
            while (item := self.queue.get()) is not None:
                self._store(bulk, *item)
        except BaseException as exc:  # re-raised by the reader thread
            self.error = exc
            while self.queue.get() is not None:  # let the reader finish putting
                pass
        finally:
            if bulk is not None:
                bulk.close()

    def _store(
        self, bulk: BulkWriter, rows: list, packets: list, with_history: list, points, errors: list
    ) -> None:
        """Store one batch.  ``points`` holds the history of every row marked in ``with_history``, merged
        by the main thread (which waits on the inflater meanwhile); when some of them are not stored
        (repeated, or another release's copy stays), the stored ones are decoded and merged again here."""
        bulk.begin_exclusive()
        release_id = rows[0].release_id if rows else None
        candids = [row.candid for row in rows]
        owners = bulk.owners(candids)  # candid -> (owning release id, its name)
        members = bulk.existing(alert_releases, "candid", candids, release_id=release_id)
        fresh, taken, joined = [], [], []
        done = []
        for row, packet, has_history in zip(rows, packets, with_history, strict=True):
            candid = row.candid
            if candid in members:  # the same alert twice in one tarball
                self.report.n_duplicates += 1
                continue
            members.add(candid)
            row.blob_path, row.blob_offset = self.blobs.write(candid, packet)
            joined.append(row.membership())
            owner = owners.get(candid)
            if owner is None:
                fresh.append(row)
                owners[candid] = (release_id, self.report.release)
            else:
                self.report.n_shared += 1
                if self.report.release < owner[1]:
                    taken.append(row)  # this release's copy becomes the one the row reads
                else:
                    continue
            if has_history:  # its points go in with its row; the history pass skips it
                done.append(candid)
        stored = fresh + taken
        if stored:
            ras = np.fromiter((r.ra for r in stored), float, len(stored))
            decs = np.fromiter((r.dec for r in stored), float, len(stored))
            for row, pixel in zip(stored, hpx_index(ras, decs).tolist(), strict=True):
                row.hpx = pixel
        self.blobs.flush()
        if taken:
            bulk.execute_core(delete(alerts).where(alerts.c.candid.in_([r.candid for r in taken])))
        bulk.insert(alerts, ALERT_COLUMNS, stored)
        bulk.insert(alert_releases, MEMBER_COLUMNS, joined)
        bulk.insert(ingest_errors, ERROR_COLUMNS, errors)
        if done:
            if len(done) < sum(with_history):
                points = history.PointSet()
                wanted = set(done)
                for row, packet in zip(rows, packets, strict=True):
                    if row.candid in wanted:
                        wanted.discard(row.candid)  # a repeated alert: its first row is the one stored
                        points.add(row.candid, row.object_id, row.jd, self.decoder.rows(packet))
            history.insert_points(bulk, points.points())
        if self.early is not None:
            self.early.saw(
                history.Packet(r.candid, r.object_id, r.jd, r.blob_path, r.blob_offset, r.blob_size)
                for r in stored
            )
            self.early.collect(bulk)
        bulk.commit()
        self.done.update(done)
        self.report.n_alerts += len(joined)
        if self.progress:
            self.progress(self.report.n_alerts, self.gz.size)


def _early_history_pays(source) -> bool:
    """Whether to derive history while the main pass runs (:class:`history.EarlyHistory`).

    It runs on CPU the main pass leaves idle: plenty while the bytes come from a network (a download, a
    bucket), none while a local file is read as fast as the disk gives it (measured there: the whole
    ingest 10 % slower; on a 50 MB/s download: 1.32x the download's time down to 1.05x).
    """
    if isinstance(source, io.BytesIO):
        return False
    try:
        if stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            return False
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        pass
    size = getattr(source, "total", None)  # a download knows its Content-Length
    return not isinstance(size, int) or size > EARLY_HISTORY_BYTES


def _main_pass(
    engine, data_dir, source, report, release_id, key, layout, progress, decoder, staged=None
) -> set[int]:
    """Alerts and packets in, one batch at a time; returns the alerts whose history is already stored."""
    with contextlib.ExitStack() as stack:  # whatever fails, workers, pack file and inflater are closed
        # Its workers fork now, while this process has one thread; a fork made later would let go of
        # the inflate pipes anyway (tarstream._release_pipes_in_child).
        early = history.EarlyHistory(data_dir) if _early_history_pays(source) else None
        if early is not None:
            stack.callback(early.close)
        remove_release(data_dir, key)  # whatever a killed run left there: a release's store starts empty
        blobs = stack.enter_context(contextlib.closing(BlobWriter(data_dir, key, layout, staged=staged)))
        gz = stack.enter_context(GzipStream(source, report.release))
        writer = _Writer(engine, blobs, report, progress, gz, early)
        writer.start()
        inline = INLINE_HISTORY and early is None
        rows: list = []
        packets: list = []
        with_history: list = []
        points = history.PointSet()
        errors: list = []

        def hand_over() -> None:
            nonlocal rows, packets, with_history, points, errors
            writer.queue.put((rows, packets, with_history, points, errors))
            rows, packets, with_history, points, errors = [], [], [], history.PointSet(), []
            if writer.error is not None:
                raise writer.error

        try:
            for member, data, size in iter_members(gz, _is_avro, MAX_MEMBER):
                if data is None:
                    if _is_avro(member):
                        errors.append((release_id, member, f"{size} bytes: too large for an alert packet"))
                    else:
                        report.n_skipped += 1
                    continue
                problem = _unsafe(member)
                if problem:
                    errors.append((release_id, member, problem))
                    continue
                try:
                    found = _decode_member(decoder, data, release_id, inline)
                except AlertDecodeError as exc:
                    errors.append((release_id, member, str(exc)))
                    continue
                for row, packet, decoded in found:
                    rows.append(row)
                    packets.append(packet)
                    with_history.append(decoded.prv is not None)
                    if decoded.prv is not None:
                        points.add(row.candid, row.object_id, row.jd, decoded)
                    report.versions[row.schemavsn] += 1
                    if decoded.extra:
                        report.unknown_fields.update(decoded.extra)
                    if decoded.unknown_top_level:
                        report.unknown_top_fields.update(decoded.unknown_top_level)
                if len(rows) >= BATCH or len(errors) >= BATCH:
                    hand_over()
            gz.drain()
            hand_over()
        finally:
            writer.queue.put(None)
            writer.join()
        if writer.error is not None:
            raise writer.error
        report.size = gz.size
        report.md5 = gz.md5
    with engine.connect() as conn:
        report.n_errors = conn.execute(
            select(func.count()).select_from(ingest_errors).where(ingest_errors.c.release_id == release_id)
        ).scalar_one()
        report.errors = [
            (m, r)
            for m, r in conn.execute(
                select(ingest_errors.c.member, ingest_errors.c.reason)
                .where(ingest_errors.c.release_id == release_id)
                .order_by(ingest_errors.c.id)
                .limit(100)
            )
        ]
    report.unknown_versions = {v for v in report.versions if v not in KNOWN_VERSIONS}
    return early.done if early is not None else writer.done


def _decode_member(decoder: AlertDecoder, data, release_id: int, history_too: bool) -> list[tuple]:
    """(``alerts`` row, packet, decoded rows) of each alert of one tar member.

    With ``history_too`` the history is decoded as well; a packet whose candidate reads but whose
    history does not is still stored, its history left to the history pass, which names the reason.
    """
    if history_too:
        try:
            return [
                (_row(decoded, release_id, len(packet)), packet, decoded)
                for packet, _parsed, decoded in decoder.members_rows(data, history=True)
            ]
        except AlertDecodeError:
            pass
    return [
        (_row(decoded, release_id, len(packet)), packet, decoded)
        for packet, _parsed, decoded in decoder.members_rows(data, history=False)
    ]


def purge_release(engine: Engine, data_dir: Path, release_id: int, name: str) -> None:
    """Remove what a release holds (memberships, packets, errors, alerts no other release holds) but
    its ``releases`` row, in an order that a kill at any instant cannot break.

    The caller first marks the release as not complete (``ingesting`` or ``deleting``), so an
    interrupted purge is seen and redone.  Then, in one transaction: alerts it shares move to the
    copy of the next holding release (by name); the objects of the alerts only it holds are marked in
    ``history_rebuilds``; those alerts, its memberships and its errors are deleted.  Then its packet
    files go, and the marked light curves are derived again from the alerts that remain.  Each step
    can be repeated: a rerun after a kill ends in exactly the state of an uninterrupted one.
    """
    # Its objects on shared storage go before its rows: a failed delete is retried by the next purge.
    with engine.connect() as conn:
        objects = blobstore.release_objects(conn, [release_id])
    blobstore.remove_objects(data_dir, objects)
    with engine.connect() as conn:
        lock_alert_writes(conn)  # no ingest batch adds a holder between the reads and the writes
        # Every object the release's rows read a packet of is derived again: a moved alert's points
        # may never have been derived (its old owner's ingest died before its history pass).
        history.mark_for_rebuild(
            conn,
            conn.execute(
                select(alerts.c.objectId).where(alerts.c.release_id == release_id).distinct()
            ).scalars(),
        )
        shared = conn.execute(
            select(
                alert_releases.c.candid,
                alert_releases.c.release_id,
                releases.c.name,
                alert_releases.c.blob_path,
                alert_releases.c.blob_offset,
                alert_releases.c.blob_size,
            )
            .join(releases, releases.c.id == alert_releases.c.release_id)
            .join(alerts, alerts.c.candid == alert_releases.c.candid)
            .where(alerts.c.release_id == release_id, alert_releases.c.release_id != release_id)
        ).all()
        moved: dict[int, tuple] = {}
        for candid, holder, holder_name, path, offset, size in shared:
            # The next holder by name, compared as the ingest compares (code points, not a collation).
            if candid not in moved or holder_name < moved[candid][0]:
                moved[candid] = (holder_name, holder, path, offset, size)
        if moved:
            conn.execute(
                update(alerts)
                .where(alerts.c.candid == bindparam("c"))
                .values(
                    release_id=bindparam("r"),
                    blob_path=bindparam("p"),
                    blob_offset=bindparam("o"),
                    blob_size=bindparam("s"),
                ),
                [
                    {"c": c, "r": holder, "p": path, "o": offset, "s": size}
                    for c, (_name, holder, path, offset, size) in moved.items()
                ],
            )
        conn.execute(delete(alerts).where(alerts.c.release_id == release_id))
        for table in (alert_releases, ingest_errors):
            conn.execute(delete(table).where(table.c.release_id == release_id))
        conn.commit()
    remove_release(data_dir, release_key(name))
    history.finish_rebuilds(engine, data_dir)


def repair(engine: Engine, data_dir: Path) -> None:
    """Finish what killed runs left: releases half deleted are deleted; releases a killed ingest left
    ``ingesting`` or ``history`` are purged and marked ``failed`` (ingest them again); light curves
    marked for a rebuild are derived again.  A release whose lock another process holds is that
    process's to finish, and is left alone."""
    with engine.connect() as conn:
        unfinished = conn.execute(
            select(releases.c.id, releases.c.name, releases.c.status).where(
                releases.c.status.in_(("deleting", "ingesting", "history"))
            )
        ).all()
    for row in unfinished:
        with contextlib.suppress(ZtfcatError), release_lock(engine, data_dir, row.name):
            # Read again under the lock: the ingest that held it may have finished (``complete``) since.
            with engine.connect() as conn:
                status = conn.execute(select(releases.c.status).where(releases.c.id == row.id)).scalar()
            if status == "deleting":
                delete_release(engine, data_dir, row.name)
            elif status in ("ingesting", "history"):
                purge_release(engine, data_dir, row.id, row.name)
                _set(engine, row.id, status="failed", n_alerts=0, finished_at=_now(),
                     error="interrupted (the process was killed); ingest it again")  # fmt: skip
    history.finish_rebuilds(engine, data_dir)


def delete_release(engine: Engine, data_dir: Path, name: str) -> None:
    """Delete one release (the caller holds its lock): marked ``deleting`` first, then purged, then
    its row removed; a kill at any step leaves ``deleting``, which :func:`repair` finishes."""
    with engine.begin() as conn:
        row = conn.execute(select(releases.c.id).where(releases.c.name == name)).first()
        if row is None:
            return
        conn.execute(update(releases).where(releases.c.id == row.id).values(status="deleting"))
    purge_release(engine, data_dir, row.id, name)
    with engine.begin() as conn:
        conn.execute(delete(releases).where(releases.c.id == row.id))


def ingest(
    engine: Engine,
    data_dir: Path,
    source: BinaryIO,
    name: str,
    *,
    layout: str = "pack",
    origin: str | None = None,
    progress: IngestProgress | None = None,
    force: bool = False,
    decoder: AlertDecoder | None = None,
    verify: Callable[[], None] | None = None,
    blobs: blobstore.BlobStore | None = None,
) -> IngestReport:
    """Ingest the ``.tar.gz`` bytes readable from ``source`` as the release ``name``.

    Parameters
    ----------
    source : binary file object
        Read once, front to back; never seeked, so a socket or a bucket stream works.
    name : str
        The tarball's file name, e.g. ``ztf_public_20180819.tar.gz``; the release's identity.
    force : bool
        Ingest again even when the release is already complete (its old content is replaced).
    verify : callable, optional
        Called once every byte is read and before anything is marked complete (a download checks its
        size and MD5 here); whatever it raises fails the release like a broken tarball.
    blobs : BlobStore, optional
        Shared storage for the night's pack (:mod:`ztfcat.store.blobstore`): staged in ``data_dir``, put to
        the store once the night is otherwise done, and only then ``complete``.
    """
    if blobs is not None and layout != "pack":
        raise ZtfcatError(f"{name}: a blob store ({blobs.url}) holds pack files; the layout must be pack")
    repair(engine, data_dir)
    with release_lock(engine, data_dir, name), _quiet_gc():
        return _ingest_locked(
            engine, data_dir, source, name, layout, origin, progress, force, decoder, verify, blobs
        )


def _ingest_locked(
    engine, data_dir, source, name, layout, origin, progress, force, decoder, verify, blobs=None
):
    key = release_key(name)
    report = IngestReport(name)
    started = time.perf_counter()
    with engine.begin() as conn:
        existing = conn.execute(select(releases).where(releases.c.name == name)).first()
    if existing is not None and existing.status == "complete" and not force:
        report.status, report.already_complete = "complete", True
        report.n_alerts, report.n_errors = existing.n_alerts, existing.n_errors
        report.size, report.md5 = existing.size or 0, existing.md5
        return report
    values = dict(
        night=night_of(name),
        status="ingesting",
        layout=layout,
        source=origin,
        started_at=_now(),
        finished_at=None,
        error=None,
        size=None,
        md5=None,
        n_alerts=0,
        n_errors=0,
        n_duplicates=0,
        unknown_fields=None,
    )
    if existing is not None:
        # Not complete from this instant: a kill during the purge is seen, and the purge redone.
        _set(engine, existing.id, status="ingesting")
        purge_release(engine, data_dir, existing.id, name)
    with engine.begin() as conn:
        if existing is None:
            release_id = conn.execute(insert(releases).values(name=name, **values)).inserted_primary_key[0]
        else:
            release_id = existing.id
            conn.execute(update(releases).where(releases.c.id == release_id).values(**values))
    token = values["started_at"]  # this ingest's mark on its row: what a takeover would change
    staged = blobstore.stage(data_dir, key, blobs) if blobs is not None else None
    try:
        done = _main_pass(
            engine, data_dir, source, report, release_id, key, layout, progress, decoder or AlertDecoder(),
            staged,
        )  # fmt: skip
        if verify is not None:
            verify()
        report.seconds_alerts = time.perf_counter() - started
        _advance(
            engine,
            release_id,
            name,
            token,
            "ingesting",
            status="history",
            size=report.size,
            md5=report.md5,
            n_alerts=report.n_alerts,
            n_errors=report.n_errors,
            n_duplicates=report.n_duplicates,
            unknown_fields=_unknown_fields(report),
        )
        alone = _gc_users == 1  # no other ingest's threads in this process (see derive_history)
        for candid, reason in history.derive_history(
            engine, data_dir, release_id, done=done, shared_process=not alone
        ):
            report.errors.append((f"{candid}.avro", f"history not read: {reason}"))
        _backfill(engine)
        _refresh_objects(engine, release_id)
        if staged is not None:
            staged.publish()  # the whole night, at once, under its own name; a failure fails the night
        _advance(engine, release_id, name, token, "history", status="complete", finished_at=_now())
        report.status = "complete"
    except BaseException as exc:
        report.status = "failed"
        # The original error matters more; the next run purges.  A release another process has taken
        # (its row no longer carries this ingest's start) is that process's: nothing of it is touched.
        with contextlib.suppress(Exception):
            if _owned(engine, release_id, token):
                purge_release(engine, data_dir, release_id, name)
                _set(
                    engine,
                    release_id,
                    status="failed",
                    error=str(exc) or type(exc).__name__,
                    finished_at=_now(),
                    n_alerts=0,
                )
        if staged is not None:
            with contextlib.suppress(Exception):
                staged.withdraw(engine, release_id)
        if isinstance(exc, ZtfcatError) or not isinstance(exc, Exception):
            raise
        raise IngestError(f"{name}: {_reason(exc)}; nothing of it is kept") from exc
    finally:
        report.seconds = time.perf_counter() - started
    return report


def _backfill(engine: Engine) -> None:
    """SQLite: copy the write-ahead log into the database file before the ``objects`` refresh reads.

    The history pass leaves ~6 KB of log per alert (its reading of the release's packets holds one
    snapshot, so no automatic checkpoint can finish meanwhile), and every page a query reads is first
    looked up in the log's index; once the log is wholly copied, readers go to the file directly.  On
    an 8,000-alert night: refresh 0.64 s, against 0.14 s of checkpoint then 0.30 s (docs/benchmarks.md).
    ``PASSIVE`` never waits for other connections; what they still need stays in the log.
    """
    if engine.dialect.name == "sqlite":
        with contextlib.suppress(OperationalError), engine.connect() as conn:  # only an optimisation
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").all()


def _refresh_objects(engine: Engine, release_id: int) -> None:
    """The ``objects`` rows of every object the release holds an alert of, computed again."""
    from ..science.objects import refresh_objects

    with engine.connect() as conn:
        object_ids = list(
            conn.execute(
                select(alerts.c.objectId)
                .join(alert_releases, alert_releases.c.candid == alerts.c.candid)
                .where(alert_releases.c.release_id == release_id, *release_hints(conn, release_id))
                .distinct()
            ).scalars()
        )
    refresh_objects(engine, object_ids)


def _unknown_fields(report: IngestReport) -> str | None:
    names = sorted(report.unknown_top_fields) + [f"candidate.{n}" for n in sorted(report.unknown_fields)]
    return json.dumps(names) if names else None


def _reason(exc: Exception) -> str:
    """One line for an unexpected failure: the disk, the database, or what the exception says."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    orig = getattr(exc, "orig", None)  # a SQLAlchemy DBAPIError wraps the driver's own
    text = str(orig if orig is not None else exc).strip().splitlines()
    return f"{type(orig or exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def release_lock(engine: Engine, data_dir: Path, name: str) -> Iterator[None]:
    """Hold the right to ingest (or purge) one release; a second ingest of it gets a clear error."""
    with release_locks(engine, data_dir, [name]):
        yield


@contextlib.contextmanager
def release_locks(engine: Engine, data_dir: Path, names: Sequence[str]) -> Iterator[None]:
    """Hold the right to ingest (or purge) each of ``names``, or raise naming the first one taken.

    A lock file per release (``flock``, released by the kernel even on kill -9, and by no one else:
    worker processes die with their parent) guards the processes that share the lock folder; on
    PostgreSQL session advisory locks, all on one connection however many releases, also guard workers
    on other machines writing to the same catalog.  Without it, an ingest would take a live one's rows
    for the leftovers of a killed run and purge them.
    """
    # ztfcat before 1d28d47 kept every lock in the data directory: during a rolling upgrade, an old
    # process on the same data directory locks there, so a SQLite file's locks are taken in both.
    folders = dict.fromkeys([lock_folder(engine, data_dir), data_dir / "locks"])
    _room_for(len(folders) * len(names))
    with contextlib.ExitStack() as stack:
        for locks in folders:
            locks.mkdir(parents=True, exist_ok=True)
            for name in names:
                # Opened for reading: flock needs no more, and a lock file another user made still opens.
                try:
                    handle = os.open(locks / f"{release_key(name)}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
                except OSError as exc:
                    raise ZtfcatError(
                        f"{name}: cannot open its lock file in {locks} ({exc.strerror or exc}) while "
                        f"holding the locks of {len(names)} releases; raise the open-file limit (ulimit -n)"
                        if exc.errno == errno.EMFILE
                        else f"{name}: cannot open its lock file in {locks}: {exc.strerror or exc}"
                    ) from None
                stack.callback(os.close, handle)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ReleaseBusyError(
                        f"{name} is being ingested by another process; try again when it ends"
                    ) from None
        if engine.dialect.name != "postgresql" or not names:
            yield
            return
        keys = [int.from_bytes(hashlib.blake2b(n.encode(), digest_size=7).digest(), "big") for n in names]
        conn = stack.enter_context(engine.connect())
        held: list[int] = []
        try:
            for name, key in zip(names, keys, strict=True):
                if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                    raise ZtfcatError(f"{name} is being ingested by another worker; try again when it ends")
                held.append(key)
            yield
        finally:
            for key in held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def _room_for(files: int) -> None:
    """Raise this process's soft limit on open files, up to the hard one, if ``files`` more lock files
    need it: deleting every night of a whole-archive catalog holds ~3,000 (twice that on SQLite)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = files + 256  # the database's, the pack's and the interpreter's own files
    if soft == resource.RLIM_INFINITY or wanted <= soft:
        return
    with contextlib.suppress(ValueError, OSError):  # not allowed: the open that fails says so
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
        )


def lock_folder(engine: Engine, data_dir: Path) -> Path:
    """Where the release lock files are: beside a SQLite file, as its own ``-wal`` and ``-shm`` are,
    so every process writing that file meets the same locks whatever its data directory or its
    spelling of the file's name (relative, a symlink, a ``file:`` URI); in the data directory for
    PostgreSQL (whose advisory locks guard the rest) and an in-memory SQLite."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return data_dir / "locks"
    if database.startswith("file:"):
        uri = urlsplit(database)
        if engine.url.query.get("mode") == "memory" or not uri.path:  # the URI's query is the URL's
            return data_dir / "locks"
        database = unquote(uri.path)
    path = Path(database).resolve()
    return path.with_name(path.name + "-locks")


def _set(engine: Engine, release_id: int, **values) -> None:
    with engine.begin() as conn:
        conn.execute(update(releases).where(releases.c.id == release_id).values(**values))


def _advance(engine: Engine, release_id: int, name: str, token: datetime, current: str, **values) -> None:
    """Move the release on from the ``current`` status, or raise if it is no longer this ingest's
    (its ``started_at`` is ``token``) or no longer in that status: an ingest never calls complete a
    release that something else purged, marked or began again meanwhile.  Its locks forbid that;
    this makes a broken lock a failed night rather than a complete one that holds nothing."""
    mine = (releases.c.id == release_id, releases.c.started_at == token, releases.c.status == current)
    with engine.begin() as conn:
        moved = conn.execute(update(releases).where(*mine).values(**values)).rowcount
    if moved != 1:
        raise IngestError(f"{name}: another process changed the release while it was being ingested")


def _owned(engine: Engine, release_id: int, token: datetime) -> bool:
    """Whether the release row still carries the start of the ingest that set ``token`` (compared by
    the database, as it was stored: SQLite gives it back without its time zone)."""
    mine = select(releases.c.id).where(releases.c.id == release_id, releases.c.started_at == token)
    with engine.connect() as conn:
        return conn.execute(mine).first() is not None
