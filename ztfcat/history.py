"""Light-curve history: ``prv_candidates`` and ``fp_hists`` rows, deduplicated by natural key.

Every alert of a night is a detection and goes in straight from the ``alerts`` table, with no decoding.
The earlier points come from the alerts' ``prv_candidates``; those of successive alerts of one object
overlap almost entirely (a 30-day window that the newest alert carries whole), so for each object only
its newest alert of the release is decoded, on every core, and points already known are ignored by the
unique keys (detection: ``candid``; upper limit: object, ``pid``, ``fid``).  Forced photometry can be
revised from one alert to the next, so there the newest alert's values replace older ones.

Cost: about 0.9 ms of fastavro per object (its ~16 prv_candidates and ~10 fp_hists) and 0.3-0.4 ms of
inserts, CPU-bound on both cores.  Which alert is an object's newest is known only once the whole tarball
is read, so the exact pass runs at the end; while bytes still arrive from a network, :class:`EarlyHistory`
does most of that work ahead of it on otherwise idle CPU.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

from sqlalchemy import Engine, and_, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from .avro import AlertDecoder
from .blobs import read_blob
from .bulk import BulkWriter
from .errors import AlertDecodeError
from .tables import FP_COLUMNS, PRV_COLUMNS, alerts, fp_hists, prv_candidates

PRV_INSERT = ("objectId", "release_id", "alert_candid", *PRV_COLUMNS)
FP_INSERT = ("objectId", "release_id", "alert_candid", "alert_jd", *FP_COLUMNS)
FP_KEY = ("objectId", "pid", "fid")
#: prv_candidate fields that the alerts table also has: the triggering candidate as a history point.
FROM_ALERT = tuple(c for c in PRV_COLUMNS if c in alerts.c)
CHUNK = 256
INLINE_BELOW = 2000  # a process pool costs more than it saves on small releases

# A task: (candid, objectId, jd, blob_path, blob_offset, blob_size, candids of the object's alerts)
Task = tuple[int, str, float, str, "int | None", int, frozenset]


def _insert_detections(engine: Engine, release_id: int, object_ids: Sequence[str] | None) -> None:
    """Each alert's own candidate is a detection of the light curve (prv_candidates omit it)."""
    query = select(
        alerts.c.objectId, alerts.c.release_id, alerts.c.candid, *[alerts.c[c] for c in FROM_ALERT]
    ).where(alerts.c.release_id == release_id)
    if object_ids is not None:
        query = query.where(alerts.c.objectId.in_(object_ids))
    dialect = sqlite if engine.dialect.name == "sqlite" else postgresql
    statement = (
        dialect.insert(prv_candidates)
        .from_select(["objectId", "release_id", "alert_candid", *FROM_ALERT], query)
        .on_conflict_do_nothing()
    )
    with engine.begin() as conn:
        conn.execute(statement)


def newest_alerts(engine: Engine, release_id: int, object_ids: Sequence[str] | None = None) -> Iterator[Task]:
    """For each object of the release, its newest alert (ties: all of them), with the candids of the
    object's alerts in the release, whose points are already in from the alerts table.

    Streams rows in object order, so memory stays flat however many objects a night has.
    """
    query = (
        select(
            alerts.c.candid,
            alerts.c.objectId,
            alerts.c.jd,
            alerts.c.blob_path,
            alerts.c.blob_offset,
            alerts.c.blob_size,
        )
        .where(alerts.c.release_id == release_id)
        .order_by(alerts.c.objectId, alerts.c.jd.desc())
    )
    if object_ids is not None:
        query = query.where(alerts.c.objectId.in_(object_ids))
    with engine.connect().execution_options(yield_per=CHUNK) as conn:
        current: str | None = None
        newest: list[tuple] = []
        known: list[int] = []
        for row in conn.execute(query):
            if row.objectId != current:
                yield from ((*task, frozenset(known)) for task in newest)
                current, newest, known = row.objectId, [], []
            known.append(row.candid)
            if not newest or row.jd == newest[0][2]:
                newest.append(tuple(row))
        yield from ((*task, frozenset(known)) for task in newest)


def history_rows(data_dir: str, release_id: int, tasks: Sequence[Task]) -> tuple[list, list, list]:
    """Decode the history of each task's packet: (prv rows, fp rows, [(candid, reason)] failures).

    A top-level function so a process pool can run it.
    """
    decoder = AlertDecoder()
    root = Path(data_dir)
    prv_rows: list[tuple] = []
    fp_rows: list[tuple] = []
    failures: list[tuple[int, str]] = []
    for candid, object_id, jd, path, offset, size, known in tasks:
        try:
            _parsed, record = decoder.history(read_blob(root, path, offset, size))
        except (AlertDecodeError, OSError) as exc:
            failures.append((candid, str(exc)))
            continue
        for point in record.get("prv_candidates") or ():
            if point.get("candid") in known:
                continue  # an alert of this release: its own candidate is already in
            prv_rows.append((object_id, release_id, candid, *[point.get(c) for c in PRV_COLUMNS]))
        for point in record.get("fp_hists") or ():
            fp_rows.append((object_id, release_id, candid, jd, *[point.get(c) for c in FP_COLUMNS]))
    return prv_rows, fp_rows, failures


_FP_KEY_AT = tuple(FP_INSERT.index(k) for k in FP_KEY)
_FP_JD_AT = FP_INSERT.index("alert_jd")


def _newest_per_key(rows: list[tuple]) -> list[tuple]:
    """One row per forced-photometry point, the newest alert's: PostgreSQL refuses to update one row
    twice in a statement, and the newest values are the ones to keep anyway."""
    newest: dict[tuple, tuple] = {}
    for row in rows:
        key = tuple(row[i] for i in _FP_KEY_AT)
        kept = newest.get(key)
        if kept is None or row[_FP_JD_AT] > kept[_FP_JD_AT]:
            newest[key] = row
    return list(newest.values())


_ENGINES: dict[str, Engine] = {}


def store_history(url: str, data_dir: str, release_id: int, tasks: Sequence[Task]) -> list[tuple[int, str]]:
    """Decode and insert in the worker itself (PostgreSQL, which takes concurrent writers): the rows
    never travel back to the parent, so neither pickling them nor inserting them serialises there."""
    engine = _ENGINES.get(url)
    if engine is None:
        from .db import make_engine

        engine = _ENGINES[url] = make_engine(url)
    prv_rows, fp_rows, failures = history_rows(data_dir, release_id, tasks)
    bulk = BulkWriter(engine)
    try:
        _insert_history(bulk, prv_rows, fp_rows)
    finally:
        bulk.close()
    return failures


def _insert_history(bulk: BulkWriter, prv_rows: list, fp_rows: list) -> None:
    _insert_rows(bulk, prv_rows, fp_rows)
    bulk.commit()


def _insert_rows(bulk: BulkWriter, prv_rows: list, fp_rows: list) -> None:
    """Insert in natural-key order: concurrent writers (PostgreSQL workers, parallel ingests sharing
    objects) then take their key locks in one order and cannot deadlock."""
    fp_rows = _newest_per_key(fp_rows)
    if not bulk.sqlite:  # SQLite has one writer at a time: no lock order to keep
        prv_rows.sort(key=_PRV_ORDER)
        fp_rows.sort(key=_FP_ORDER)
    bulk.insert(prv_candidates, PRV_INSERT, prv_rows)
    bulk.insert(fp_hists, FP_INSERT, fp_rows, on_conflict=(FP_KEY, "alert_jd"))


def _order(columns: Sequence[str], names: Sequence[str]):
    at = [columns.index(n) for n in names]
    return lambda row: tuple((row[i] is None, row[i] or 0) for i in at)


_PRV_ORDER = _order(PRV_INSERT, ("objectId", "pid", "fid", "candid"))
_FP_ORDER = _order(FP_INSERT, FP_KEY)


def _chunks(tasks: Iterable[Task]) -> Iterator[list[Task]]:
    """Groups of about CHUNK tasks, never splitting one object's tasks (ties) between two groups."""
    chunk: list[Task] = []
    for task in tasks:
        if len(chunk) >= CHUNK and task[1] != chunk[-1][1]:
            yield chunk
            chunk = []
        chunk.append(task)
    if chunk:
        yield chunk


def derive_history(
    engine: Engine,
    data_dir: Path,
    release_id: int,
    object_ids: Sequence[str] | None = None,
    workers: int | None = None,
    done: frozenset[int] | set[int] = frozenset(),
) -> list[tuple[int, str]]:
    """Add a release's points to the light-curve tables; returns packets whose history failed to decode.

    ``done`` holds alerts whose history was already stored while the main pass ran (:class:`EarlyHistory`).
    """
    _insert_detections(engine, release_id, object_ids)
    with engine.connect() as conn:
        n_alerts = conn.execute(
            select(func.count()).select_from(alerts).where(alerts.c.release_id == release_id)
        ).scalar_one()
    tasks = (task for task in newest_alerts(engine, release_id, object_ids) if task[0] not in done)
    workers = workers or os.cpu_count() or 1
    bulk = BulkWriter(engine)
    failures: list[tuple[int, str]] = []

    def store(result: tuple[list, list, list] | list) -> None:
        if isinstance(result, tuple):
            prv_rows, fp_rows, result = result
            _insert_history(bulk, prv_rows, fp_rows)
        failures.extend(result)

    if bulk.sqlite:
        work, args = history_rows, (str(data_dir), release_id)
    else:
        work, args = (
            store_history,
            (engine.url.render_as_string(hide_password=False), str(data_dir), release_id),
        )

    try:
        if n_alerts < INLINE_BELOW or object_ids is not None or workers < 2:
            for chunk in _chunks(tasks):
                store(history_rows(str(data_dir), release_id, chunk))
        else:
            with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
                pending = set()
                for chunk in _chunks(tasks):
                    if len(pending) >= 2 * workers:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            store(future.result())
                    pending.add(pool.submit(work, *args, chunk))
                for future in pending:
                    store(future.result())
    except BaseException:
        bulk.rollback()
        raise
    finally:
        bulk.close()
    return failures


def _pool_context():
    """``fork`` where there is one: unlike spawn and forkserver it does not re-run the user's ``__main__``,
    so a script without an ``if __name__ == "__main__"`` guard can still ingest.  The workers only read
    packet files and decode them; they never touch the parent's database connections or threads."""
    return get_context("fork" if "fork" in get_all_start_methods() else "spawn")


def forget_history(engine: Engine, release_id: int) -> list[str]:
    """Remove a release's history points; returns the objects whose light curves must be rebuilt."""
    with engine.begin() as conn:
        objects = set(
            conn.execute(
                select(prv_candidates.c.objectId).where(prv_candidates.c.release_id == release_id).distinct()
            ).scalars()
        )
        objects |= set(
            conn.execute(
                select(fp_hists.c.objectId).where(fp_hists.c.release_id == release_id).distinct()
            ).scalars()
        )
        conn.execute(delete(prv_candidates).where(prv_candidates.c.release_id == release_id))
        conn.execute(delete(fp_hists).where(fp_hists.c.release_id == release_id))
    return sorted(objects)


def rebuild_objects(engine: Engine, data_dir: Path, object_ids: Sequence[str], exclude_release: int) -> None:
    """Re-derive the light curves of ``object_ids`` from every other release that holds their alerts.

    Points shared with a deleted release were stored once, under whichever release came first; after
    that release goes, the others must supply them again.
    """
    if not object_ids:
        return
    for start in range(0, len(object_ids), 500):
        chunk = list(object_ids[start : start + 500])
        with engine.begin() as conn:
            conn.execute(delete(prv_candidates).where(prv_candidates.c.objectId.in_(chunk)))
            conn.execute(delete(fp_hists).where(fp_hists.c.objectId.in_(chunk)))
            release_ids = sorted(
                conn.execute(
                    select(alerts.c.release_id)
                    .where(and_(alerts.c.objectId.in_(chunk), alerts.c.release_id != exclude_release))
                    .distinct()
                ).scalars()
            )
        for release_id in release_ids:
            derive_history(engine, data_dir, release_id, chunk, workers=1)


def _lower_priority() -> None:
    os.nice(19)


class EarlyHistory:
    """Light-curve history decoded while the main pass still runs, on CPU it leaves idle.

    Which alert is an object's newest is known only at the end, but decoding *any* alert's history is
    correct (its points are real, deduplicated by key; forced photometry keeps the newest values), so
    the objects not seen for the longest are decoded early by workers at the lowest priority, only when
    they have nothing else to do, and the final pass skips every object whose newest alert was done.
    During a download limited by the network most of the history is done by the last byte; a
    CPU-bound ingest lends it only the idle part of a core.  Memory is capped by :data:`LIMIT` objects.
    """

    LIMIT = 200_000

    def __init__(self, data_dir: Path, release_id: int, workers: int | None = None) -> None:
        self.data_dir = str(data_dir)
        self.release_id = release_id
        self.workers = workers or os.cpu_count() or 1
        # objectId -> (jd, task) of its newest alert so far, least recently updated first
        self.pending: OrderedDict[str, tuple[float, Task]] = OrderedDict()
        self.done: set[int] = set()
        self._running: set = set()
        # Forked now, before the ingest starts its threads, and kept idle until there is work.
        self.pool = ProcessPoolExecutor(self.workers, mp_context=_pool_context(), initializer=_lower_priority)
        self.pool.submit(int).result()

    def saw(self, rows: Iterable[tuple[int, str, float, str, int | None, int]]) -> None:
        """Alerts just committed: (candid, objectId, jd, blob_path, blob_offset, blob_size)."""
        for candid, object_id, jd, path, offset, size in rows:
            kept = self.pending.get(object_id)
            if kept is not None and jd < kept[0]:
                continue
            if kept is None and len(self.pending) + len(self.done) >= self.LIMIT:
                continue  # the final pass will do it
            self.pending[object_id] = (jd, (candid, object_id, jd, path, offset, size, frozenset()))
            self.pending.move_to_end(object_id)

    def collect(self, bulk: BulkWriter) -> None:
        """Store what the workers finished, and hand them more if they are idle; no commit."""
        for future in [f for f in self._running if f.done()]:
            self._running.discard(future)
            candids, (prv_rows, fp_rows, _failed) = future.result()
            _insert_rows(bulk, prv_rows, fp_rows)
            self.done.update(candids)
        while len(self._running) < self.workers and self.pending:
            chunk = []
            while self.pending and len(chunk) < CHUNK // 4:
                _object_id, (_jd, task) = self.pending.popitem(last=False)
                chunk.append(task)
            self._running.add(self.pool.submit(_early_rows, self.data_dir, self.release_id, chunk))

    def close(self) -> None:
        """Stop the workers.  Results not yet collected are dropped, not lost: their objects are not in
        :attr:`done`, so the final pass decodes them."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def _early_rows(data_dir: str, release_id: int, tasks: Sequence[Task]) -> tuple[list[int], tuple]:
    return [task[0] for task in tasks], history_rows(data_dir, release_id, tasks)
