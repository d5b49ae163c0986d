"""What the science queries share: time windows and the range join.

The range join is how a query over many sky pixels stays a handful of statements: the pixels' ``hpx``
ranges go into a temporary table and one join reads every alert inside any of them through the B-tree
index on ``alerts.hpx`` (one index range scan per range), instead of one query per position or pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, Column, Connection, MetaData, Table, and_, select, text

from ..errors import InvalidQueryError
from ..store.tables import alerts

#: Rows per INSERT batch into the temporary range table.
_INSERT_BATCH = 20_000


def check_window(jd: Any, name: str = "jd") -> tuple[float | None, float | None] | None:
    """A time window ``(start, end)`` in JD, either end None, validated; None for no window.

    A window the wrong way round selects nothing, which looks like "no alerts" rather than the typo it
    is, so it is refused.
    """
    if jd is None:
        return None
    if not isinstance(jd, tuple | list) or len(jd) != 2:
        raise InvalidQueryError(f"{name} must be a (start, end) pair of JD values, not {jd!r}")
    try:
        lo, hi = (None if v is None else float(v) for v in jd)
    except (TypeError, ValueError) as exc:
        raise InvalidQueryError(f"{name}={jd!r}: the ends must be numbers (JD) or None") from exc
    for value in (lo, hi):
        if value is not None and not math.isfinite(value):
            raise InvalidQueryError(f"{name}={jd!r}: the ends must be finite")
    if lo is not None and hi is not None and lo > hi:
        raise InvalidQueryError(f"{name}=({lo}, {hi}) is the wrong way round: the start is after the end")
    return lo, hi


def window_clauses(window: tuple[float | None, float | None] | None) -> list:
    """SQL conditions on ``alerts.jd`` for a validated window (inclusive ends)."""
    if window is None:
        return []
    lo, hi = window
    clauses = []
    if lo is not None:
        clauses.append(alerts.c.jd >= lo)
    if hi is not None:
        clauses.append(alerts.c.jd <= hi)
    return clauses


def rows_in_ranges(conn: Connection, ranges: np.ndarray, columns: Sequence[Any], clauses: Sequence[Any]):
    """Rows of ``alerts`` (``columns``) whose ``hpx`` lies in any of the disjoint ``[lo, hi)`` ``ranges``.

    The ranges travel as rows of a temporary table, never as SQL text, and the join is written so that
    each range is one scan of the ``hpx`` index: SQLite is told to use that index (``INDEXED BY``),
    PostgreSQL evaluates the alerts side per range (``LATERAL``), so neither planner can choose a scan of
    the whole table however many ranges there are.  Ranges must be disjoint, so each row comes once.
    """
    if len(ranges) == 0:
        return []
    temp = Table(
        "ztfcat_xm_ranges",
        MetaData(),
        Column("lo", BigInteger, nullable=False),
        Column("hi", BigInteger, nullable=False),
        prefixes=["TEMPORARY"],
    )
    temp.drop(conn, checkfirst=True)
    temp.create(conn)
    try:
        # Straight through the driver's executemany: building a dict per range costs more than the join.
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        sql = f"INSERT INTO ztfcat_xm_ranges (lo, hi) VALUES ({mark}, {mark})"  # noqa: S608 - placeholders only
        cursor = conn.connection.cursor()  # the same DB-API connection, so the same transaction
        try:
            if conn.dialect.name == "postgresql":
                # One statement with two arrays: psycopg's executemany is a round trip per row.
                for start in range(0, len(ranges), _INSERT_BATCH):
                    part = ranges[start : start + _INSERT_BATCH]
                    cursor.execute(
                        "INSERT INTO ztfcat_xm_ranges (lo, hi) SELECT * FROM unnest(%s::bigint[], %s::bigint[])",
                        (part[:, 0].tolist(), part[:, 1].tolist()),
                    )
            else:
                values = ranges.tolist()
                for start in range(0, len(values), _INSERT_BATCH):
                    cursor.executemany(sql, values[start : start + _INSERT_BATCH])
        finally:
            cursor.close()
        inner = and_(alerts.c.hpx >= temp.c.lo, alerts.c.hpx < temp.c.hi, *clauses)
        if conn.dialect.name == "sqlite":
            query = (
                select(*columns)
                .select_from(temp.join(alerts, inner))
                .with_hint(alerts, "INDEXED BY ix_alerts_hpx", "sqlite")
            )
        else:
            conn.execute(text("ANALYZE ztfcat_xm_ranges"))
            # The estimate (a share of the table per range) is far above the real few rows, and would
            # buy each chunk a JIT compilation that costs more than the join itself.
            conn.execute(text("SET LOCAL jit = off"))
            lateral = select(*columns).where(inner).lateral("ztfcat_xm_hit")
            query = select(*lateral.c).select_from(temp).join(lateral, text("true"))
        return conn.execute(query).all()
    finally:
        temp.drop(conn)
