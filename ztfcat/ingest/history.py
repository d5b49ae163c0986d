"""Light-curve history: ``prv_candidates`` and ``fp_hists`` rows, lossless and independent of order.

An object's light curve is a pure function of the set of its alerts in the catalog.  Every alert's
packet is read: its own candidate (a detection), each of its ``prv_candidates`` (detections and upper
limits) and each of its ``fp_hists`` (forced photometry).  Two alerts of one object can each hold points
the other lacks, at either end of their windows (ARCHIVE.md: windows reach 2 to 72 days back and are not
always sorted), so no alert can stand in for another.  Points are keyed naturally — a detection by
``candid``, an upper limit and a forced-photometry point by ``(objectId, pid, fid)`` — and when several
alerts carry one point, fixed precedence picks the row kept:

1. an alert's own ``candidate`` is its detection row (``alert_candid = candid``);
2. otherwise the copy of the newest alert that holds the point, by ``(jd, candid)``.

The rule is an upsert whose winner depends only on the two rows (:class:`ztfcat.ingest.bulk.Upsert`), so
ingests in any order, in parallel, again, or from any source leave identical tables.  Deleting alerts
re-derives the light curves of their objects from the alerts that remain (:func:`rebuild_objects`),
recorded first in ``history_rebuilds`` so a kill at any instant is finished by the next run.

Cost: one decode of each packet's history, spread over every core (CHUNK packets per task, one object
never split between tasks, so its copies of shared points are merged before they reach the database);
``ingest.INLINE_HISTORY`` does it in the main pass instead (:class:`PointSet`, then
:func:`insert_points` in the batch's transaction), measured slower on 2 cores.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextvars import ContextVar
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Engine, delete, event, func, select

from ..errors import AlertDecodeError, ZtfcatError
from ..store.blobs import read_blob
from ..store.partitions import release_hints
from ..store.tables import (
    CANDIDATE_COLUMNS,
    FP_COLUMNS,
    PRV_COLUMNS,
    alerts,
    fp_hists,
    history_rebuilds,
    prv_candidates,
)
from .avro import AlertDecoder
from .bulk import BulkWriter, Upsert, lock_alert_writes
from .rowdecode import DecodedAlert

PRV_INSERT = ("objectId", "alert_candid", "alert_jd", *PRV_COLUMNS)
FP_INSERT = ("objectId", "alert_candid", "alert_jd", *FP_COLUMNS)
CHUNK = 256
INLINE_BELOW = 2000  # a process pool costs more than it saves on small releases
REBUILD_CHUNK = 200  # objects re-derived per transaction after a delete

# The most history workers an ingest in this context may fork (None: one per core); see pool_size.
_pool_cap: ContextVar[int | None] = ContextVar("ztfcat_history_pool_cap", default=None)


def pool_size(workers: int | None = None) -> int:
    """How many history worker processes an ingest forks: ``workers`` if given, else one per core,
    at most the cap of :func:`pool_size_at_most` in effect."""
    if workers:
        return workers
    cores = os.cpu_count() or 1
    cap = _pool_cap.get()
    return max(1, min(cores, cap)) if cap else cores


@contextlib.contextmanager
def pool_size_at_most(cap: int) -> Iterator[None]:
    """Ingests run in this thread (and context) fork at most ``cap`` history workers each.

    For several ingests sharing one machine (the fleet's workers, :mod:`ztfcat.fleet.tasks`): each
    would otherwise fork one worker per core, N times the cores in all, each worker with its own
    resident memory.  A cap changes only where history is decoded, never what is stored: every point
    goes in by the order-independent rule, from whichever process, in whatever chunks.
    """
    token = _pool_cap.set(max(1, int(cap)))
    try:
        yield
    finally:
        _pool_cap.reset(token)


_NEWEST = "({row}.alert_jd, {row}.alert_candid)"
#: Detections: an alert's own candidate first, then the newest copy.
DETECTION = Upsert(
    ("candid",),
    "({row}.candid = {row}.alert_candid, {row}.alert_jd, {row}.alert_candid)",
    "candid IS NOT NULL",
)
#: Upper limits: the newest copy of each (objectId, pid, fid).
LIMIT = Upsert(("objectId", "pid", "fid"), _NEWEST, "candid IS NULL")
#: Forced photometry: the newest alert's values of each (objectId, pid, fid).
FORCED = Upsert(("objectId", "pid", "fid"), _NEWEST)

_AT = {name: i for i, name in enumerate(PRV_INSERT)}
_FP_AT = {name: i for i, name in enumerate(FP_INSERT)}
_CANDID, _PID, _FID = _AT["candid"], _AT["pid"], _AT["fid"]
_FP_PID, _FP_FID = _FP_AT["pid"], _FP_AT["fid"]


class Packet(NamedTuple):
    """Where one alert's packet is, and what ranks its copies of the points it carries."""

    candid: int
    objectId: str  # noqa: N815 - ZTF's spelling
    jd: float
    path: str
    offset: int | None
    size: int


class Points(NamedTuple):
    """Rows for the three upserts, in :data:`PRV_INSERT` / :data:`FP_INSERT` order."""

    detections: list[tuple]
    limits: list[tuple]
    forced: list[tuple]
    failures: list[tuple[int, str]]


_SELF = -1
#: Where each prv_candidate column of an alert's own detection row comes from in its candidate tuple.
_OWN = tuple(
    _SELF if c == "candid" else (CANDIDATE_COLUMNS.index(c) if c in CANDIDATE_COLUMNS else None)
    for c in PRV_COLUMNS
)


def _rank(row: tuple, at_candid: int | None) -> tuple:
    own = at_candid is not None and row[at_candid] == row[1]
    return (own, row[2], row[1])


class PointSet:
    """Points of packets as they are decoded, merged by natural key with the precedence rule, so one
    statement never touches a key twice.  Used by the history pass (:func:`history_rows`) and by the
    main pass of an ingest, which hands over each packet's rows as it decodes them (no second read).
    """

    def __init__(self) -> None:
        self.detections: dict = {}
        self.limits: dict = {}
        self.forced: dict = {}
        self.failures: list[tuple[int, str]] = []

    def add(self, candid: int, object_id: str, jd: float, decoded: DecodedAlert) -> None:
        """One packet's own candidate, ``prv_candidates`` and ``fp_hists`` (``decoded`` with history).

        The hot loop of an ingest (~25 points per alert): the precedence written out, with the ranks of
        :data:`DETECTION`, :data:`LIMIT` and :data:`FORCED`.
        """
        head = (object_id, candid, jd)
        candidate = decoded.candidate
        own = (*head, *[candid if i == _SELF else None if i is None else candidate[i] for i in _OWN])
        detections, limits, forced = self.detections, self.limits, self.forced
        detections[candid] = own  # its own candidate outranks every copy
        newest = (jd, candid)
        for point in decoded.prv or ():
            row = head + point
            point_candid = row[_CANDID]
            if point_candid is not None:
                kept = detections.get(point_candid)
                if kept is None or (point_candid == candid, jd, candid) >= _rank(kept, _CANDID):
                    detections[point_candid] = row
            else:
                key = (object_id, row[_PID], row[_FID])
                kept = limits.get(key)
                if kept is None or newest >= (kept[2], kept[1]):
                    limits[key] = row
        for point in decoded.fp or ():
            row = head + point
            key = (object_id, row[_FP_PID], row[_FP_FID])
            kept = forced.get(key)
            if kept is None or newest >= (kept[2], kept[1]):
                forced[key] = row

    def points(self) -> Points:
        """Everything added so far, one row per key."""
        return Points(
            list(self.detections.values()),
            list(self.limits.values()),
            list(self.forced.values()),
            self.failures,
        )


def history_rows(data_dir: str, tasks: Sequence[Packet], strict: bool = False) -> Points:
    """Decode each packet's own candidate, ``prv_candidates`` and ``fp_hists`` into rows, merged by
    natural key with the precedence rule (so one statement never touches a key twice).

    A top-level function so a process pool can run it.
    """
    decoder = AlertDecoder()
    root = Path(data_dir)
    merged = PointSet()
    for task in tasks:
        try:
            decoded = decoder.rows(read_blob(root, task.path, task.offset, task.size, task.candid))
        except AlertDecodeError as exc:  # damage, a NUL byte: the packet's history is not read
            merged.failures.append((task.candid, str(exc)))
            continue
        except (ZtfcatError, OSError) as exc:  # a missing or unreadable file
            if strict:
                raise ZtfcatError(f"the packet of alert {task.candid} cannot be read: {exc}") from exc
            merged.failures.append((task.candid, str(exc)))
            continue
        merged.add(task.candid, task.objectId, task.jd, decoded)
    return merged.points()


def insert_points(bulk: BulkWriter, points: Points) -> None:
    """Upsert the rows, no commit.  With concurrent writers (PostgreSQL workers, parallel ingests that
    share objects), rows go in natural-key order so key locks are taken in one order: no deadlock."""
    detections, limits, forced = points.detections, points.limits, points.forced
    if not bulk.sqlite:  # SQLite has one writer at a time: no lock order to keep
        detections = sorted(detections, key=lambda r: r[_CANDID])
        limits = sorted(limits, key=lambda r: (r[0], r[_PID], r[_FID]))
        forced = sorted(forced, key=lambda r: (r[0], r[_FP_PID], r[_FP_FID]))
    bulk.insert(prv_candidates, PRV_INSERT, detections, on_conflict=DETECTION)
    bulk.insert(prv_candidates, PRV_INSERT, limits, on_conflict=LIMIT)
    bulk.insert(fp_hists, FP_INSERT, forced, on_conflict=FORCED)


_ENGINES: dict[str, Engine] = {}


def store_history(url: str, data_dir: str, tasks: Sequence[Packet]) -> list[tuple[int, str]] | None:
    """Decode and insert in the worker itself: the rows never travel back to the parent, so neither
    pickling them nor inserting them serialises there.

    PostgreSQL takes the workers' transactions side by side.  SQLite has one writer at a time, so a
    worker decodes its chunk while another one writes, then waits for the pool's write lock
    (:func:`worker_pool`) and writes in a ``BEGIN IMMEDIATE`` transaction: the writes follow each
    other with no wait in SQLite's busy handler, whose sleeps grow to 100 ms, and the decoding of
    one chunk overlaps the insert of the next (docs/benchmarks.md: the history pass on two cores).

    On SQLite, once one worker's write fails, the others store nothing more and return ``None``: the
    failing chunk's error reaches the parent and fails the release, which is purged.  Without that, a
    catalog held locked by another program would cost one busy timeout (a minute) per chunk in flight.
    """
    engine = _ENGINES.get(url)
    if engine is None:
        from ..store.db import make_engine

        engine = _ENGINES[url] = make_engine(url)
        if engine.dialect.name == "sqlite":
            # Every sibling's commit empties this connection's page cache, so it only serves one
            # chunk's transaction: 8 MiB, not the 32 MiB of a long-lived connection, per worker.
            event.listen(engine, "connect", _small_cache)
    points = history_rows(data_dir, tasks)
    bulk = BulkWriter(engine)
    try:
        if bulk.sqlite:
            with _write_lock or contextlib.nullcontext():
                if _write_failed is not None and _write_failed.is_set():
                    return None  # a sibling could not write: its error ends the pass, this wait would not
                bulk.begin_exclusive()
                insert_points(bulk, points)
                bulk.commit()
        else:
            insert_points(bulk, points)
            bulk.commit()
    except BaseException:
        bulk.rollback()
        if _write_failed is not None:
            _write_failed.set()
        raise
    finally:
        bulk.close()
    return points.failures


def _small_cache(dbapi_connection, _record) -> None:
    dbapi_connection.execute("PRAGMA cache_size=-8192")


def _packets_query(*where):
    return (
        select(
            alerts.c.candid,
            alerts.c.objectId,
            alerts.c.jd,
            alerts.c.blob_path,
            alerts.c.blob_offset,
            alerts.c.blob_size,
        )
        .where(*where)
        .order_by(alerts.c.objectId, alerts.c.candid)
    )


def packets(engine: Engine, *where) -> Iterator[Packet]:
    """The packets of the alerts matching ``where``, in object order, streamed (flat memory)."""
    with engine.connect().execution_options(yield_per=CHUNK) as conn:
        for row in conn.execute(_packets_query(*where)):
            yield Packet(*row)


def _chunks(tasks: Iterable[Packet]) -> Iterator[list[Packet]]:
    """Groups of about CHUNK packets, never splitting one object's packets between two groups."""
    chunk: list[Packet] = []
    for task in tasks:
        if len(chunk) >= CHUNK and task.objectId != chunk[-1].objectId:
            yield chunk
            chunk = []
        chunk.append(task)
    if chunk:
        yield chunk


def derive_history(
    engine: Engine,
    data_dir: Path,
    release_id: int,
    workers: int | None = None,
    done: frozenset[int] | set[int] = frozenset(),
    shared_process: bool = False,
) -> list[tuple[int, str]]:
    """Add the points of every packet a release's rows read (``alerts.release_id``) to the light-curve
    tables; returns packets whose history failed to decode.

    ``done`` holds alerts whose history was already stored while the main pass ran (:class:`EarlyHistory`).
    ``shared_process``: another ingest runs in this process.  Its threads may be inside SQLite when the
    pool forks, and SQLite's mutexes and lock bookkeeping do not survive a fork, so the workers then
    send their rows back and this process inserts them, as it must for a database only it can open.
    """
    with engine.connect() as conn:
        owned = [alerts.c.release_id == release_id, *release_hints(conn, release_id)]
        n_alerts = conn.execute(select(func.count()).select_from(alerts).where(*owned)).scalar_one()
    tasks = (t for t in packets(engine, *owned) if t.candid not in done)
    workers = pool_size(workers)
    bulk = BulkWriter(engine)
    failures: list[tuple[int, str]] = []

    def store(result: Points | list | None) -> None:
        if result is None:
            return  # skipped after a sibling's failure, which is in another future: it raises there
        if isinstance(result, Points):
            insert_points(bulk, result)
            bulk.commit()
            result = result.failures
        failures.extend(result)

    if bulk.sqlite and (shared_process or _private(engine)):
        work, args = history_rows, (str(data_dir),)  # rows come back to this process
    else:
        work, args = store_history, (engine.url.render_as_string(hide_password=False), str(data_dir))
    try:
        if n_alerts < INLINE_BELOW or workers < 2:
            for chunk in _chunks(tasks):
                store(history_rows(str(data_dir), chunk))
        else:
            with worker_pool(workers) as pool:
                try:
                    pending = set()
                    for chunk in _chunks(tasks):
                        if len(pending) >= 2 * workers:
                            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                            for future in finished:
                                store(future.result())
                        pending.add(pool.submit(work, *args, chunk))
                    for future in pending:
                        store(future.result())
                except BaseException:
                    # The chunks not started are dropped: the release is purged anyway, and their
                    # decoding would only be thrown away (the workers already skip their writes).
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    except BaseException:
        bulk.rollback()
        raise
    finally:
        bulk.close()
    return failures


def _private(engine: Engine) -> bool:
    """Whether the SQLite database is one only this process can open (in memory)."""
    database = engine.url.database or ""
    return (
        database in ("", ":memory:") or "mode=memory" in database or engine.url.query.get("mode") == "memory"
    )


def rebuild_objects(engine: Engine, data_dir: Path, object_ids: Sequence[str]) -> None:
    """Derive the light curves of ``object_ids`` again from the alerts that remain in the catalog, and
    take them off ``history_rebuilds``.

    Each chunk of objects is one transaction under the alert-writes lock: which packets exist is read,
    the objects' rows are deleted and derived again, their ``objects`` rows computed and their marks
    removed, all or nothing.  An ingest adding an alert of one of them waits for it (or went before
    it), so no point is lost between the read and the write; a kill leaves the marks for the next run.
    A packet that cannot be read (a missing file, a disk error) stops the rebuild with the marks kept.
    """
    from ..science.objects import refresh_objects

    for start in range(0, len(object_ids), REBUILD_CHUNK):
        chunk = list(object_ids[start : start + REBUILD_CHUNK])
        with engine.connect() as conn:
            lock_alert_writes(conn)
            tasks = [Packet(*row) for row in conn.execute(_packets_query(alerts.c.objectId.in_(chunk)))]
            points = history_rows(str(data_dir), tasks, strict=True)
            bulk = BulkWriter(engine, within=conn)
            bulk.execute_core(delete(prv_candidates).where(prv_candidates.c.objectId.in_(chunk)))
            bulk.execute_core(delete(fp_hists).where(fp_hists.c.objectId.in_(chunk)))
            insert_points(bulk, points)
            refresh_objects(conn, chunk)
            conn.execute(delete(history_rebuilds).where(history_rebuilds.c.objectId.in_(chunk)))
            conn.commit()


def mark_for_rebuild(conn, object_ids: Iterable[str]) -> None:
    """Record, inside the caller's transaction, objects whose light curves must be derived again
    (an object marked already stays marked once)."""
    # Imported here: the PostgreSQL dialect is about 30 ms of modules at every SQLite ingest's start.
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects import sqlite as dialect
    else:
        from sqlalchemy.dialects import postgresql as dialect
    wanted = sorted(set(object_ids))
    for start in range(0, len(wanted), 5000):  # bounded statements, whatever the release's size
        rows = [{"objectId": o} for o in wanted[start : start + 5000]]
        conn.execute(dialect.insert(history_rebuilds).on_conflict_do_nothing(), rows)


def finish_rebuilds(engine: Engine, data_dir: Path) -> int:
    """Finish the rebuilds a killed delete (or an upgraded catalog) left marked; returns how many."""
    with engine.connect() as conn:
        marked = list(
            conn.execute(select(history_rebuilds.c.objectId).order_by(history_rebuilds.c.objectId)).scalars()
        )
    rebuild_objects(engine, data_dir, marked)
    return len(marked)


# -- worker processes ------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


#: In a worker of :func:`worker_pool`: the lock its siblings take to write to a SQLite catalog, and
#: the event one of them sets when its write fails (:func:`store_history`).
_write_lock = None
_write_failed = None


def _start_worker(parent: int, nice: int, lock, failed) -> None:
    global _write_lock, _write_failed
    _write_lock, _write_failed = lock, failed
    _die_with_parent(parent, nice)


def _die_with_parent(parent: int, nice: int = 0) -> None:
    """Worker initializer: the kernel kills this worker when the ingest that forked it dies, however it
    dies (``kill -9`` included), so no orphan keeps its release lock or its database connections."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the pool's own checks remain
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if nice:
        os.nice(nice)


def worker_pool(workers: int, nice: int = 0) -> ProcessPoolExecutor:
    """A pool whose workers die with their parent, and share one lock to write to SQLite with (and an
    event that says one of their writes failed).

    ``fork`` where there is one: unlike spawn and forkserver it does not re-run the user's ``__main__``,
    so a script without an ``if __name__ == "__main__"`` guard can still ingest.  The workers only read
    packet files, decode them and (on PostgreSQL) open connections of their own; they never touch the
    parent's connections or threads.  A fork taken while an ingest streams is safe: the child lets go
    of every inflate pipe it inherited (:func:`ztfcat.ingest.tarstream._release_pipes_in_child`), so no
    worker can keep an inflater waiting for the end of its input.
    """
    context = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
    return ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(os.getpid(), nice, context.Lock(), context.Event()),
    )


class EarlyHistory:
    """Light-curve history decoded while the main pass still runs, on CPU it leaves idle.

    Every packet's points go in with the order-independent rule, so any packet can be done at any
    time: packets are queued as their rows commit, handed to workers at the lowest priority only when
    they have nothing else to do (longest-waiting objects first, so an object's later alerts tend to
    join its earlier ones in one task), and the final pass skips every packet done here.  During a
    download limited by the network most of the history is done by the last byte; a CPU-bound ingest
    lends it only the idle part of a core.  Memory is capped by :data:`LIMIT` queued packets.
    """

    LIMIT = 200_000

    def __init__(self, data_dir: Path, workers: int | None = None) -> None:
        self.data_dir = str(data_dir)
        self.workers = pool_size(workers)
        # objectId -> its packets not yet handed out, least recently updated object first
        self.pending: OrderedDict[str, list[Packet]] = OrderedDict()
        self.n_pending = 0
        self.done: set[int] = set()
        self._running: set = set()
        # Forked now, before the ingest starts its threads, and kept idle until there is work.
        self.pool = worker_pool(self.workers, nice=19)
        self.pool.submit(int).result()

    def saw(self, rows: Iterable[Packet]) -> None:
        """Packets whose rows were just committed."""
        for task in rows:
            if self.n_pending >= self.LIMIT:
                return  # the final pass will do the rest
            self.pending.setdefault(task.objectId, []).append(task)
            self.pending.move_to_end(task.objectId)
            self.n_pending += 1

    def collect(self, bulk: BulkWriter) -> None:
        """Store what the workers finished, and hand them more if they are idle; no commit."""
        for future in [f for f in self._running if f.done()]:
            self._running.discard(future)
            candids, points = future.result()
            insert_points(bulk, points)
            self.done.update(candids)
        while len(self._running) < self.workers and self.pending:
            chunk: list[Packet] = []
            while self.pending and len(chunk) < CHUNK // 4:
                _object_id, tasks = self.pending.popitem(last=False)
                chunk.extend(tasks)
                self.n_pending -= len(tasks)
            self._running.add(self.pool.submit(_early_rows, self.data_dir, chunk))

    def close(self) -> None:
        """Stop the workers.  Results not yet collected are dropped, not lost: their packets are not in
        :attr:`done`, so the final pass decodes them."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def _early_rows(data_dir: str, tasks: Sequence[Packet]) -> tuple[list[int], Points]:
    points = history_rows(data_dir, tasks)
    failed = {candid for candid, _ in points.failures}
    return [t.candid for t in tasks if t.candid not in failed], points
