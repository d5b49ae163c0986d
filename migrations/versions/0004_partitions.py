"""PostgreSQL: alerts partitioned by candid month, light curves by hash of objectId

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:00:00

``alerts`` becomes ``PARTITION BY RANGE (candid)``, one partition a month 2018-03 … 2035-12 plus a
default; ``prv_candidates`` and ``fp_hists`` become ``PARTITION BY HASH ("objectId")`` in 16, their
primary keys ``(id, objectId)`` and the detection key ``(objectId, candid)``.  Each table is renamed
out of the way, made anew, copied, dropped; the indexes are built after the copy; a trigger on
``alerts`` records an alert whose candid does not follow its jd (:mod:`ztfcat.store.partitions`).  Columns do
not change, so the tables are built from today's :mod:`ztfcat.store.tables` through the same code that
creates a new catalog: the two schemas are the same by construction (and a test compares them).

SQLite has no partitions: a no-op there.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LIGHTCURVES_VIEW = """
CREATE VIEW lightcurves AS
SELECT "objectId", jd, jd - 2400000.5 AS mjd, fid, magpsf, sigmapsf, diffmaglim, isdiffpos, candid,
       CASE WHEN candid IS NULL THEN 1 ELSE 0 END AS upper_limit, ra, dec, programid, rb, alert_candid
FROM prv_candidates
"""
_TABLES = ("alerts", "prv_candidates", "fp_hists")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _set_aside(conn, name: str, suffix: str) -> None:
    """Rename ``name`` to ``name + suffix`` with every name the new table will want: constraints and
    the id sequence; its secondary indexes are dropped (the copy does not need them)."""
    from sqlalchemy import inspect

    old = name + suffix
    inspector = inspect(conn)
    constraints = [inspector.get_pk_constraint(name)["name"]]
    constraints += [fk["name"] for fk in inspector.get_foreign_keys(name)]
    for index in inspector.get_indexes(name):
        conn.exec_driver_sql(f"DROP INDEX {_q(index['name'])}")
    conn.exec_driver_sql(f"ALTER TABLE {_q(name)} RENAME TO {_q(old)}")
    for constraint in constraints:
        conn.exec_driver_sql(
            f"ALTER TABLE {_q(old)} RENAME CONSTRAINT {_q(constraint)} TO {_q(constraint + suffix)}"
        )
    if name != "alerts":
        sequence = conn.exec_driver_sql("SELECT pg_get_serial_sequence(%s, 'id')", (old,)).scalar()
        if sequence:
            conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} RENAME TO {_q(f'{name}{suffix}_id_seq')}")


def _copy(conn, table, source: str) -> None:
    cols = ", ".join(_q(c.name) for c in table.columns)
    conn.exec_driver_sql(f"INSERT INTO {_q(table.name)} ({cols}) SELECT {cols} FROM {_q(source)}")  # noqa: S608
    if "id" in table.c:
        sql = f"SELECT setval(pg_get_serial_sequence(%s, 'id'), coalesce(max(id), 0) + 1, false) FROM {_q(table.name)}"  # noqa: S608, E501
        conn.exec_driver_sql(sql, (table.name,))


def _copy_detections_once(conn, table, source: str) -> None:
    """Back to ``candid`` alone as the detection key: a candid kept under two objects (never in real
    packets) keeps the row the upsert would have kept, its own alert's first, then the newest copy."""
    cols = ", ".join(_q(c.name) for c in table.columns)
    conn.exec_driver_sql(
        f"INSERT INTO {_q(table.name)} ({cols}) SELECT {cols} FROM {_q(source)} WHERE candid IS NULL"  # noqa: S608
    )
    conn.exec_driver_sql(
        f"INSERT INTO {_q(table.name)} ({cols}) SELECT DISTINCT ON (candid) {cols} FROM {_q(source)} "  # noqa: S608
        "WHERE candid IS NOT NULL ORDER BY candid, candid = alert_candid DESC, alert_jd DESC, alert_candid DESC"
    )
    conn.exec_driver_sql(
        "SELECT setval(pg_get_serial_sequence('prv_candidates', 'id'), coalesce(max(id), 0) + 1, false) "
        "FROM prv_candidates"
    )


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        return
    from ztfcat.store import partitions
    from ztfcat.store.tables import metadata

    # Each table that is not partitioned yet (a catalog completed by `ztfcat db upgrade` can have some)
    plain = [name for name in _TABLES if not partitions.is_partitioned(conn, name)]
    conn.exec_driver_sql("DROP VIEW IF EXISTS lightcurves")
    for name in plain:
        _set_aside(conn, name, "_0003")
    partitions.create_tables(conn, metadata, indexes=False, names=plain)
    for name in plain:
        _copy(conn, metadata.tables[name], f"{name}_0003")
        conn.exec_driver_sql(f"DROP TABLE {_q(name + '_0003')}")
    partitions.create_indexes(conn, metadata, names=plain)
    partitions.create_trigger(conn)
    conn.exec_driver_sql(partitions.CLOCK_SCAN)
    conn.exec_driver_sql(LIGHTCURVES_VIEW)
    for name in plain:
        conn.exec_driver_sql(f"ANALYZE {_q(name)}")


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        return
    from ztfcat.store import partitions
    from ztfcat.store.tables import metadata

    if not partitions.is_partitioned(conn, "alerts"):
        return
    conn.exec_driver_sql("DROP VIEW IF EXISTS lightcurves")
    for trigger in ("insert", "update"):
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS ztfcat_candid_clock_{trigger} ON alerts")
    conn.exec_driver_sql("DROP FUNCTION IF EXISTS ztfcat_candid_clock()")
    conn.exec_driver_sql("DELETE FROM catalog_settings WHERE key = %s", (partitions.CLOCK_SETTING,))
    for name in _TABLES:
        _set_aside(conn, name, "_0004")
    for name in _TABLES:
        metadata.tables[name].create(conn)
        if name == "prv_candidates":
            _copy_detections_once(conn, metadata.tables[name], f"{name}_0004")
        else:
            _copy(conn, metadata.tables[name], f"{name}_0004")
        conn.exec_driver_sql(f"DROP TABLE {_q(name + '_0004')}")
    conn.exec_driver_sql(LIGHTCURVES_VIEW)
