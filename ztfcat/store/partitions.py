"""PostgreSQL partitioning of the big tables: ``alerts`` by candid month, light curves by object hash.

Why these keys.  PostgreSQL requires every primary key and unique index of a partitioned table to
contain the partition key.  ZTF's candid starts with the night: ``candid = pid * 10**6 + ...`` and
``pid`` begins with the days since 2017-01-01 UT followed by the time of day in 1e-5 day (every packet
in ../shared/data/ztf-alerts, 2017-12 to 2025-05, 6,752 candids: ``candid / 10**15`` is the days since
2017-01-01 of its ``jd`` to within 1e-5 day).  So ranges of candid are ranges of time, and ``alerts``
partitioned by candid RANGE, one partition a month, keeps ``candid`` its primary key.  The history
tables' natural keys span nights (a point recurs in later alerts of its object), so they are
partitioned by HASH of ``objectId``, which every one of their keys then starts with: a detection is
keyed ``(objectId, candid)`` here, ``candid`` on SQLite (one detection never belongs to two objects).

``alert_releases``, ``objects`` and ``history_rebuilds`` stay plain tables: the first is narrow and
probed by its keys, the second one row per object filtered on columns no partition key could serve,
the third a queue that is empty between runs.

The planner prunes only on the partition key, and the catalog's filters speak of ``jd`` and
``night``: :func:`candid_hints` turns those ranges into candid bounds, with a margin far wider than
the relation's error.  A trigger keeps the promise behind them: an alert whose candid does not follow
its ``jd`` (made-up test data, some other survey's packets) records it in ``catalog_settings``, and the
hints are off for that catalog from then on, so no row is ever missed.  SQLite has no partitions and
gets no hints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    ForeignKeyConstraint,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    func,
    select,
    text,
)

from ..errors import ZtfcatError

#: Julian date of 2017-01-01 0h UT, the day ZTF's night ids count from.
EPOCH_JD = 2457754.5
#: Candid units per day: ``candid // CANDID_PER_DAY`` is the night id.
CANDID_PER_DAY = 10**15
#: Largest distance, in days, between ``candid / CANDID_PER_DAY`` and ``jd - EPOCH_JD`` the hints
#: trust (1,000 times the largest seen in real packets); the trigger checks every alert against it.
CLOCK_TOLERANCE_DAYS = 0.01
#: The hints widen their bounds by twice the tolerance, so float rounding never cuts a row the
#: trigger let through.
HINT_MARGIN_DAYS = 2 * CLOCK_TOLERANCE_DAYS
#: The months with a partition of their own; earlier and later candids go to ``alerts_default``.
FIRST_MONTH = date(2018, 3, 1)
END_MONTH = date(2036, 1, 1)  # exclusive: the last partition is 2035-12
#: Partitions of each light-curve table.
HASH_PARTITIONS = 16
#: Tables partitioned on PostgreSQL, and how.
PARTITION_BY = {
    "alerts": "RANGE (candid)",
    "prv_candidates": 'HASH ("objectId")',
    "fp_hists": 'HASH ("objectId")',
}
#: Key of the ``catalog_settings`` row that turns the hints off.
CLOCK_SETTING = "candid_clock"
#: Conflict targets that gain ``objectId`` on PostgreSQL, by table and SQLite target.
_PG_KEYS = {("prv_candidates", ("candid",)): ("objectId", "candid")}


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def months() -> list[date]:
    """First day of every month with its own ``alerts`` partition, oldest first."""
    out, day = [], FIRST_MONTH
    while day < END_MONTH:
        out.append(day)
        day = _next_month(day)
    return out


def candid_at(day: date) -> int:
    """The smallest candid of the night ``day`` (UT): its night id times :data:`CANDID_PER_DAY`."""
    return (day - date(2017, 1, 1)).days * CANDID_PER_DAY


def partition_ddl(names=tuple(PARTITION_BY)) -> list[str]:
    """``CREATE TABLE ... PARTITION OF`` for every partition of the tables ``names`` (they must exist)."""
    ddl = []
    if "alerts" in names:
        ddl += [
            f"CREATE TABLE alerts_m{day:%Y_%m} PARTITION OF alerts "
            f"FOR VALUES FROM ({candid_at(day)}) TO ({candid_at(_next_month(day))})"
            for day in months()
        ]
        ddl.append("CREATE TABLE alerts_default PARTITION OF alerts DEFAULT")
    for name in ("prv_candidates", "fp_hists"):
        if name not in names:
            continue
        ddl += [
            f"CREATE TABLE {name}_h{i:02d} PARTITION OF {name} "
            f"FOR VALUES WITH (MODULUS {HASH_PARTITIONS}, REMAINDER {i})"
            for i in range(HASH_PARTITIONS)
        ]
    return ddl


#: An alert whose candid the hints cannot vouch for: more than the tolerance from its jd, or not on
#: its jd's UT day, or not on its ``night`` (a NULL jd or night is never matched by a jd/night filter).
_OFF_CLOCK = (
    f"(abs(candid::float8 / {CANDID_PER_DAY}::float8 - (jd - {EPOCH_JD}::float8)) > {CLOCK_TOLERANCE_DAYS}"
    f" OR candid / {CANDID_PER_DAY} <> floor(jd - {EPOCH_JD}::float8)"
    f" OR night <> date '2017-01-01' + (candid / {CANDID_PER_DAY})::integer)"
)

#: Records, once, the first alert whose candid does not follow its jd.  A statement trigger over the
#: statement's new rows: one scan of what the statement wrote, nothing per row.
CLOCK_FUNCTION = f"""
CREATE OR REPLACE FUNCTION ztfcat_candid_clock() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    stray record;
BEGIN
    SELECT candid, jd INTO stray FROM new_rows
    WHERE {_OFF_CLOCK}
    LIMIT 1;
    IF FOUND THEN
        INSERT INTO catalog_settings (key, value)
        VALUES ('{CLOCK_SETTING}', 'off: alert ' || stray.candid || ' has jd ' || stray.jd)
        ON CONFLICT (key) DO NOTHING;
    END IF;
    RETURN NULL;
END $$
"""  # noqa: S608 - constants of this module, no user value
CLOCK_TRIGGERS = [
    f"CREATE OR REPLACE TRIGGER ztfcat_candid_clock_{event.lower()} AFTER {event} ON alerts "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ztfcat_candid_clock()"
    for event in ("INSERT", "UPDATE")
]
#: The same check over every row already there (the migration runs it once after its copy).
CLOCK_SCAN = f"""
INSERT INTO catalog_settings (key, value)
SELECT '{CLOCK_SETTING}', 'off: alert ' || candid || ' has jd ' || jd FROM alerts
WHERE {_OFF_CLOCK}
LIMIT 1
ON CONFLICT (key) DO NOTHING
"""  # noqa: S608 - constants of this module, no user value


def pg_table(table: Table) -> Table:
    """``table`` as PostgreSQL partitions it: the partition clause, and keys that contain ``objectId``.

    A copy in a scratch :class:`~sqlalchemy.MetaData` (with ``releases`` beside it, for the foreign
    key); :mod:`ztfcat.tables` keeps describing the logical table, which SQLite creates as it is.
    """
    scratch = MetaData(naming_convention=table.metadata.naming_convention)
    table.metadata.tables["releases"].to_metadata(scratch)  # what the foreign key refers to
    history = table.name != "alerts"
    columns = []
    for original in table.columns:
        column = original._copy()
        if history and column.name == "id":
            column.primary_key, column.autoincrement = False, True  # a bigserial in a two-column key
        columns.append(column)
    keys = [PrimaryKeyConstraint("id", "objectId", name=f"pk_{table.name}")] if history else []
    keys += [
        ForeignKeyConstraint(
            [c.name for c in fk.columns],
            [e.target_fullname for e in fk.elements],
            name=fk.name,
            ondelete=fk.ondelete,
        )
        for fk in table.foreign_key_constraints
    ]
    copy = Table(
        table.name,
        scratch,
        *columns,
        *keys,
        comment=table.comment,
        postgresql_partition_by=PARTITION_BY[table.name],
    )
    for index in table.indexes:
        names = [c.name for c in index.columns]
        if index.name == "uq_prv_candidates_candid":  # the detection key gains the partition key
            names = ["objectId", *names]
        Index(
            index.name,
            *(copy.c[n] for n in names),
            unique=index.unique,
            postgresql_where=index.dialect_options["postgresql"]["where"],
        )
    return copy


def create_tables(
    conn: Connection, metadata: MetaData, indexes: bool = True, names=tuple(PARTITION_BY)
) -> None:
    """Create the partitioned tables ``names`` and their partitions (``releases`` must exist).

    ``indexes=False`` leaves out the secondary indexes and the trigger, for a bulk copy
    (:func:`create_indexes` and :func:`create_trigger` afterwards); the primary keys are always there.
    """
    for name in names:
        copy = pg_table(metadata.tables[name])
        saved = set(copy.indexes)
        if not indexes:
            copy.indexes.clear()
        copy.create(conn)
        copy.indexes.update(saved)
    conn.exec_driver_sql(";\n".join(partition_ddl(names)))  # one round trip for 247 statements
    if indexes and "alerts" in names:
        create_trigger(conn)


def create_indexes(conn: Connection, metadata: MetaData, names=tuple(PARTITION_BY)) -> None:
    """The secondary indexes of the tables ``names``, on every partition (after a bulk copy)."""
    for name in names:
        for index in pg_table(metadata.tables[name]).indexes:
            index.create(conn)


def create_trigger(conn: Connection) -> None:
    """The candid-clock check on ``alerts`` (see the module docstring)."""
    conn.exec_driver_sql(CLOCK_FUNCTION)
    for statement in CLOCK_TRIGGERS:
        conn.exec_driver_sql(statement)


def create_schema(conn: Connection, metadata: MetaData) -> None:
    """A whole new PostgreSQL catalog: what upgrading through revision 0004 leaves, table for table."""
    metadata.tables["releases"].create(conn)
    create_tables(conn, metadata)
    metadata.create_all(conn)  # everything else, and the view (existing tables are skipped)


def is_partitioned(conn: Connection, name: str) -> bool:
    """Whether the table ``name`` is a partitioned one (PostgreSQL's relkind ``p``)."""
    return bool(
        conn.execute(
            text("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(:name)"), {"name": name}
        ).scalar()
    )


def conflict_keys(table_name: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    """The PostgreSQL conflict target for the SQLite one ``keys`` of ``table_name``."""
    return _PG_KEYS.get((table_name, tuple(keys)), tuple(keys))


# -- pruning hints --------------------------------------------------------------------------------


def jd_range(keywords: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The inclusive jd interval the ``jd=`` keyword filter confines alerts to (None: open)."""
    value = keywords.get("jd")
    if isinstance(value, tuple) and len(value) == 2:
        lo, hi = value
        return (None if lo is None else float(lo), None if hi is None else float(hi))
    if isinstance(value, list | set | frozenset) and value:
        return float(min(value)), float(max(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), float(value)
    return None, None


def night_range(keywords: Mapping[str, Any]) -> tuple[date | None, date | None]:
    """The inclusive range of nights the ``night=`` keyword filter confines alerts to (None: open)."""
    from .filters import as_date

    value = keywords.get("night")
    if value is None:
        return None, None
    lo, hi = value if isinstance(value, tuple | list) else (value, value)
    return (None if lo is None else as_date(lo), None if hi is None else as_date(hi))


_BIGINT = (-(2**63), 2**63 - 1)


def _clamp(value: float, rounding) -> int:
    if math.isnan(value):
        raise ValueError("NaN")  # no hint: the filter alone decides
    if not math.isfinite(value):
        return _BIGINT[0] if value < 0 else _BIGINT[1]
    return min(max(rounding(value), _BIGINT[0]), _BIGINT[1])


def _day_start(days: float) -> float:
    return math.floor(days) * CANDID_PER_DAY if math.isfinite(days) else days


def candid_bounds(jd_lo: float | None, jd_hi: float | None) -> tuple[int | None, int | None]:
    """Candids every alert with ``jd_lo <= jd <= jd_hi`` lies between, on a catalog the trigger
    vouches for: within :data:`HINT_MARGIN_DAYS` of its jd, and on its jd's UT day."""
    lo = hi = None
    if jd_lo is not None:
        days = jd_lo - EPOCH_JD
        lo = _clamp(max((days - HINT_MARGIN_DAYS) * CANDID_PER_DAY, _day_start(days)), math.floor)
    if jd_hi is not None:
        days = jd_hi - EPOCH_JD
        hi = _clamp(
            min((days + HINT_MARGIN_DAYS) * CANDID_PER_DAY, _day_start(days) + CANDID_PER_DAY - 1), math.ceil
        )
    return lo, hi


def night_bounds(lo: date | None, hi: date | None) -> tuple[int | None, int | None]:
    """Candids of the alerts observed in the nights ``lo`` to ``hi``: their night ids are those days."""
    return (
        None if lo is None else candid_at(lo),
        None if hi is None else candid_at(hi + timedelta(days=1)) - 1,
    )


def candid_hints(engine: Engine | None, keywords: Mapping[str, Any] | None) -> list:
    """Candid bounds implied by the ``jd=``/``night=`` filters, for the planner to prune partitions.

    Nothing on SQLite, without such a filter, or on a catalog where some alert's candid does not
    follow its jd (the trigger's record in ``catalog_settings``): the bounds only ever repeat what
    the filters already say, so the rows matched are the same with and without them.
    """
    if engine is None or engine.dialect.name == "sqlite" or not keywords:
        return []
    if "jd" not in keywords and "night" not in keywords:
        return []
    try:
        bounds = [candid_bounds(*jd_range(keywords)), night_bounds(*night_range(keywords))]
    except (TypeError, ValueError, ZtfcatError):
        return []  # an unreadable value: the filter itself says why
    lows = [lo for lo, _ in bounds if lo is not None]
    highs = [hi for _, hi in bounds if hi is not None]
    if not lows and not highs:
        return []
    from .tables import alerts, catalog_settings

    with engine.connect() as conn:
        off = conn.execute(
            select(catalog_settings.c.value).where(catalog_settings.c.key == CLOCK_SETTING)
        ).first()
    if off is not None:
        return []
    clauses = []
    if lows:
        clauses.append(alerts.c.candid >= max(lows))
    if highs:
        clauses.append(alerts.c.candid <= min(highs))
    return clauses


def release_hints(conn: Connection, release_id: int) -> list:
    """Candid bounds of the alerts a release holds, for the planner to prune partitions.

    A query of one release's ``alerts`` rows (``release_id =`` or a join to ``alert_releases``) names
    no candid, so PostgreSQL plans it over every month's partition: about 0.1 s of planning for a
    night of a few alerts.  Every alert a release's rows own is one it holds, so the least and
    greatest candid of its ``alert_releases`` rows (one probe of their ``(release_id, candid)`` index)
    bound them, and a night's query plans the month or two of that night.  The bounds are taken from
    the held rows themselves, not from any clock, so they hold on every catalog.  Nothing on SQLite,
    which has no partitions, or for a release holding nothing.
    """
    if conn.dialect.name == "sqlite":
        return []
    from .tables import alert_releases, alerts

    held = alert_releases.c
    lo, hi = conn.execute(
        select(func.min(held.candid), func.max(held.candid)).where(held.release_id == release_id)
    ).one()
    if lo is None:
        return []
    return [alerts.c.candid.between(lo, hi)]
