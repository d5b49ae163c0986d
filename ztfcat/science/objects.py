"""Objects at a glance: one row per object, recomputed from the alerts and their history in SQL.

The ``objects`` table (:data:`ztfcat.store.tables.objects`) answers "what is this object" and "which objects
appeared last night brighter than 18" without touching light curves: mean position, first and last
detection, counts of detections and upper limits, peak and latest magnitude per band, and the latest
alert's real-bogus scores and nearest PS1 / Gaia / solar-system fields.

:func:`refresh_objects` rebuilds the rows of given objects with a few set-based statements per batch
of objectIds (aggregates and window functions over ``prv_candidates`` and ``alerts``; SQLite and
PostgreSQL alike), so ingest calls it once per release with the release's objects, and deletes call
it with the objects they touched (objects left with no alert lose their row).

Detections are the history's detections (``candid`` not null) plus any alert whose own candidate is not
in the history yet, each candid once; upper limits are the history rows without a candid.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    Engine,
    String,
    and_,
    any_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    union_all,
)
from sqlalchemy.sql.elements import BindParameter

from ..store.filters import column, keyword_match, parse_condition
from ..store.lightcurve import sql_column
from ..store.tables import OBJECT_BANDS, OBJECT_CANDIDATE_FIELDS, alerts, objects, prv_candidates

#: objectIds per refresh statement on SQLite (bound parameters of one ``IN``).
BATCH = 500
#: objectIds per refresh statement on PostgreSQL (one array parameter): bounds each statement's sort.
PG_BATCH = 4000
#: Columns ``Catalog.objects`` returns by default.
DEFAULT_OBJECT_COLUMNS = (
    "objectId",
    "ra",
    "dec",
    "first_jd",
    "last_jd",
    "ndet",
    "nlim",
    "peak_mag",
    "latest_mag_g",
    "latest_mag_r",
    "latest_drb",
    "ssnamenr",
    "distpsnr1",
    "sgscore1",
)
_MATH = ("cos", "sin", "atan2", "sqrt", "radians", "degrees")


def _sqlite_math(conn: Connection) -> None:
    """Give a SQLite connection the math functions where its library was built without them."""
    try:
        conn.exec_driver_sql("SELECT cos(0), atan2(0, 1), radians(0), degrees(0), sqrt(1)").all()
        return
    except Exception:  # noqa: BLE001 - "no such function": register Python ones on this connection
        conn.rollback()
    dbapi = conn.connection.driver_connection
    for name, arity, fn in (
        ("cos", 1, math.cos),
        ("sin", 1, math.sin),
        ("atan2", 2, math.atan2),
        ("sqrt", 1, math.sqrt),
        ("radians", 1, math.radians),
        ("degrees", 1, math.degrees),
    ):
        dbapi.create_function(
            name, arity, lambda *a, _f=fn: None if None in a else _f(*a), deterministic=True
        )


def _among(column, ids):
    """``column IN ids``: a list is bound value by value, a bound array parameter as ``= ANY(...)``."""
    if isinstance(ids, BindParameter):
        return column == any_(ids)
    return column.in_(ids)


def _detections(ids: Sequence[str] | None):
    """Every detection of the objects, each candid once: the history's, plus alerts not in it yet."""
    prv, a = prv_candidates.c, alerts.c
    history = select(prv.objectId, prv.candid, prv.jd, prv.fid, prv.magpsf, prv.ra, prv.dec).where(
        prv.candid.is_not(None)
    )
    own = select(a.objectId, a.candid, a.jd, a.fid, a.magpsf, a.ra, a.dec).where(
        ~exists().where(prv.candid == a.candid)
    )
    if ids is not None:
        history = history.where(_among(prv.objectId, ids))
        own = own.where(_among(a.objectId, ids))
    return union_all(history, own).subquery("dets")


def objects_select(ids: Sequence[str] | None):
    """The ``SELECT`` whose rows are the ``objects`` rows of ``ids`` (all objects when None)."""
    dets = _detections(ids)
    d = dets.c
    band_rank = (
        func.row_number()
        .over(partition_by=(d.objectId, d.fid), order_by=(d.jd.desc(), d.candid.desc()))
        .label("band_rank")
    )
    ranked = select(*d, band_rank).subquery("ranked")
    r = ranked.c
    rad_ra, rad_dec = func.radians(r.ra), func.radians(r.dec)
    per_band = []
    for fid, band in OBJECT_BANDS.items():
        latest = and_(r.fid == fid, r.band_rank == 1)
        per_band += [
            func.min(case((r.fid == fid, r.magpsf))).label(f"peak_mag_{band}"),
            func.max(case((latest, r.magpsf))).label(f"latest_mag_{band}"),
            func.max(case((latest, r.jd))).label(f"latest_jd_{band}"),
        ]
    agg = (
        select(
            r.objectId,
            func.avg(func.cos(rad_dec) * func.cos(rad_ra)).label("x"),
            func.avg(func.cos(rad_dec) * func.sin(rad_ra)).label("y"),
            func.avg(func.sin(rad_dec)).label("z"),
            func.min(r.jd).label("first_jd"),
            func.max(r.jd).label("last_jd"),
            func.count().label("ndet"),
            func.min(r.magpsf).label("peak_mag"),
            *per_band,
        )
        .group_by(r.objectId)
        .cte("agg")
        .prefix_with("MATERIALIZED")
    )
    prv = prv_candidates.c
    limits = select(prv.objectId, func.count().label("nlim")).where(prv.candid.is_(None))
    if ids is not None:
        limits = limits.where(_among(prv.objectId, ids))
    limits = limits.group_by(prv.objectId).subquery("limits")
    a = alerts.c
    alert_rank = (
        func.row_number().over(partition_by=a.objectId, order_by=(a.jd.desc(), a.candid.desc())).label("rank")
    )
    n_alerts = func.count().over(partition_by=a.objectId).label("n_alerts")
    latest = select(
        a.objectId, a.candid, a.drb, a.rb, *(a[n] for n in OBJECT_CANDIDATE_FIELDS), alert_rank, n_alerts
    )
    if ids is not None:
        latest = latest.where(_among(a.objectId, ids))
    latest = latest.subquery("latest")
    lt = latest.c
    ra = func.degrees(func.atan2(agg.c.y, agg.c.x))
    values = {
        "objectId": agg.c.objectId,
        "ra": case((ra < 0, ra + 360.0), else_=ra),
        "dec": func.degrees(func.atan2(agg.c.z, func.sqrt(agg.c.x * agg.c.x + agg.c.y * agg.c.y))),
        "first_jd": agg.c.first_jd,
        "last_jd": agg.c.last_jd,
        "ndet": agg.c.ndet,
        "nlim": func.coalesce(limits.c.nlim, 0),
        "n_alerts": func.coalesce(lt.n_alerts, 0),
        "peak_mag": agg.c.peak_mag,
        **{
            f"{k}_{b}": agg.c[f"{k}_{b}"]
            for b in OBJECT_BANDS.values()
            for k in ("peak_mag", "latest_mag", "latest_jd")
        },
        "latest_candid": lt.candid,
        "latest_drb": lt.drb,
        "latest_rb": lt.rb,
        **{n: lt[n] for n in OBJECT_CANDIDATE_FIELDS},
    }
    query = select(*(v.label(k) for k, v in values.items())).select_from(
        agg.outerjoin(limits, limits.c.objectId == agg.c.objectId).join(
            latest, and_(lt.objectId == agg.c.objectId, lt.rank == 1)
        )
    )
    return query, list(values)


#: Advisory lock key that serialises ``objects`` refreshes on PostgreSQL.
OBJECTS_LOCK = 0x7A7463_02


def refresh_objects(bind: Engine | Connection, object_ids: Iterable[str] | None = None) -> int:
    """Recompute the ``objects`` rows of ``object_ids`` (every object when None) from alerts and history.

    Parameters
    ----------
    bind : sqlalchemy.Engine or Connection
        The catalog's engine (one transaction per batch), or a connection already in a transaction
        (the caller commits), e.g. inside an ingest or a migration.
    object_ids : iterable of str, optional
        The objects whose alerts or history changed (a release's objects after its ingest; the objects
        of a deleted release).  Objects without alerts any more lose their row.

    Returns
    -------
    int
        How many ``objects`` rows were written.

    Notes
    -----
    Two statements per batch of objectIds (:data:`BATCH` on SQLite, :data:`PG_BATCH` on PostgreSQL),
    ``DELETE`` then ``INSERT ... SELECT``, so the table never holds a half-computed row and the work is
    done by the database, not in Python.  An object has a row only while it has an alert (the latest
    alert supplies the candidate fields).
    """
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            return refresh_objects(conn, object_ids)
    conn = bind
    if conn.dialect.name == "sqlite":
        _sqlite_math(conn)
    else:
        # Two ingests sharing objects would each delete, then insert, the same rows: one at a time.
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": OBJECTS_LOCK})
    if object_ids is None:
        conn.execute(delete(objects))
        query, names = objects_select(None)
        conn.execute(insert(objects).from_select(names, query))
        return conn.execute(select(func.count()).select_from(objects)).scalar_one()
    ids = sorted({str(i) for i in object_ids})
    if conn.dialect.name == "sqlite":
        return sum(_refresh_batch(conn, batch) for batch in _batches(ids, BATCH))
    # PostgreSQL: the batch as one array parameter, so the statements' text is the same for every batch
    # and every release, and they are prepared with a generic plan: planned once per connection.  A
    # list of values would be planned again for every batch, over every month's partition of
    # ``alerts``, and that planning took longer than the work (0.2 s a batch).
    previous = conn.execute(text("SELECT current_setting('plan_cache_mode')")).scalar_one()
    conn.execute(text("SELECT set_config('plan_cache_mode', 'force_generic_plan', true)"))
    remove, add, count = _pg_statements(conn.dialect)
    dbapi = conn.connection.driver_connection
    written = 0
    for batch in _batches(ids, PG_BATCH):
        for sql, params in (remove, add):
            dbapi.execute(sql, {**params, "ids": list(batch)}, prepare=True)
        sql, params = count
        written += dbapi.execute(sql, {**params, "ids": list(batch)}, prepare=True).fetchone()[0]
    # Back to the caller's setting for the rest of its transaction (a failure rolls the SET back anyway).
    conn.execute(text("SELECT set_config('plan_cache_mode', :previous, true)"), {"previous": previous})
    return written


def _batches(ids: Sequence[str], size: int):
    return (ids[start : start + size] for start in range(0, len(ids), size))


def _refresh_batch(conn: Connection, batch: Sequence[str]) -> int:
    """Delete, then insert again, the ``objects`` rows of ``batch``; how many rows it now has."""
    remove, add, count = _statements(batch)
    conn.execute(remove)
    conn.execute(add)
    return conn.execute(count).scalar_one()


def _statements(ids):
    """The refresh's ``DELETE``, ``INSERT ... SELECT`` and count for ``ids`` (a list, or an array
    parameter).  The count: rowcount of ``INSERT ... SELECT`` is not reported by every driver."""
    query, names = objects_select(ids)
    among = _among(objects.c.objectId, ids)
    return (
        delete(objects).where(among),
        insert(objects).from_select(names, query),
        select(func.count()).select_from(objects).where(among),
    )


@functools.cache
def _pg_statements(dialect) -> tuple[tuple[str, dict], ...]:
    """:func:`_statements` for an array parameter ``ids``, as the driver's SQL and parameters
    (compiled once: the text is the same for every batch)."""
    compiled = [s.compile(dialect=dialect) for s in _statements(bindparam("ids", type_=ARRAY(String)))]
    return tuple((str(c), dict(c.params)) for c in compiled)


def _keyword(name: str, value: Any):
    return keyword_match(column(name, objects), name, value)


def query_objects(
    engine: Engine,
    *conditions: str,
    columns: Sequence[str] | None = None,
    limit: int | None = None,
    order_by: str = "objectId",
    **filters: Any,
):
    """Rows of the ``objects`` table matching conditions on its columns, as an astropy Table.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The catalog's engine.
    *conditions : str
        ``"peak_mag < 18"``, ``"ndet >= 3"``, ``"ssnamenr is null"``, ``"sgscore1 < 0.5"`` (any column of
        ``objects``; values bound, never SQL text).
    columns : sequence of str, optional
        Columns to return (default :data:`DEFAULT_OBJECT_COLUMNS`; ``["*"]`` for all).
    limit : int, optional
        At most this many rows.
    order_by : str
        A column, ``-column`` for descending.
    **filters
        ``first_jd=(a, b)`` (inclusive range, either end None), ``fid``-style equality, lists for "any of".

    Examples
    --------
    Objects first seen last night brighter than 18 (the ``(first_jd, peak_mag)`` index)::

        catalog.objects("peak_mag < 18", first_jd=(t - 1, t))
    """
    names = list(DEFAULT_OBJECT_COLUMNS) if columns is None else list(columns)
    if names == ["*"]:
        names = [c.name for c in objects.c]
    cols = [column(n, objects) for n in names]
    order = column(order_by.lstrip("-"), objects)
    query = select(*cols).order_by(order.desc() if order_by.startswith("-") else order, objects.c.objectId)
    clauses = [parse_condition(c, objects) for c in conditions] + [_keyword(k, v) for k, v in filters.items()]
    if clauses:
        query = query.where(and_(*clauses))
    if limit is not None:
        query = query.limit(max(int(limit), 0))
    from astropy.table import Table

    with engine.connect() as conn:
        rows = conn.execute(query).all()
    table = Table()
    for i, col in enumerate(cols):
        table[col.name] = sql_column(col.name, [r[i] for r in rows], col.type)
    return table


__all__ = ["DEFAULT_OBJECT_COLUMNS", "objects_select", "query_objects", "refresh_objects"]
