"""PostgreSQL partitions, measured: plans of a night query before and after, sizes, creation time.

    eval "$(.ci/start-postgres)"
    python benchmarks/partitions.py --work /tmp/ztfcat-partitions [--alerts 5000]

Ingests four synthetic nights (three months) into a new, partitioned catalog, copies the database
and downgrades the copy to revision 0003 (unpartitioned), then prints for both: the EXPLAIN of
``alert_ids(night=...)`` and ``count(jd=...)`` as the catalog runs them, and each table's size with
its indexes (the partitions summed).  Scratch databases ``ztfcat_part_new`` / ``ztfcat_part_old``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from ztfcat import Catalog
from ztfcat.store.db import _alembic_config, make_engine
from ztfcat.store.filters import unfinished_hidden, where_clauses
from ztfcat.store.tables import alerts
from ztfcat.testing.synthetic import make_night

NIGHTS = ("20190730", "20190731", "20190801", "20200115")
QUERIES = {
    "count(night='2019-07-31')": {"night": "2019-07-31"},
    "count(jd=(2458695.6, 2458695.8))": {"jd": (2458695.6, 2458695.8)},
}
SIZE = """
SELECT CASE WHEN c.relkind = 'p'
    THEN (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree(c.oid))
    ELSE pg_total_relation_size(c.oid) END
FROM pg_class c WHERE c.oid = CAST(:t AS regclass)
"""


def _plan(engine, keywords, hints) -> str:
    query = (
        select(func.count())
        .select_from(alerts)
        .where(*where_clauses((), keywords, engine if hints else None), *unfinished_hidden(engine))
    )
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        return "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}"))


def _timed(engine, keywords, hints, repeat=20) -> float:
    query = (
        select(func.count())
        .select_from(alerts)
        .where(*where_clauses((), keywords, engine if hints else None))
    )
    with engine.connect() as conn:
        conn.execute(query)
        started = time.perf_counter()
        for _ in range(repeat):
            conn.execute(query).scalar()
    return (time.perf_counter() - started) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--alerts", type=int, default=5000, help="alerts per night")
    parser.add_argument("--reuse", action="store_true", help="keep ztfcat_part_new from a previous run")
    args = parser.parse_args()
    server = make_url(os.environ["ZTFCAT_TEST_POSTGRES_URL"])
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    new_url = server.set(database="ztfcat_part_new").render_as_string(hide_password=False)
    old_url = server.set(database="ztfcat_part_old").render_as_string(hide_password=False)
    with admin.connect() as conn:
        for name in ("ztfcat_part_old",) if args.reuse else ("ztfcat_part_new", "ztfcat_part_old"):
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        if not args.reuse:
            conn.exec_driver_sql("CREATE DATABASE ztfcat_part_new")
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not args.reuse:
        with Catalog(new_url, args.work / "data") as cat:
            cat.count()
            print(f"new partitioned catalog created in {time.perf_counter() - started:.2f} s")
            for night in NIGHTS:
                path = args.work / f"ztf_public_{night}.tar.gz"
                if not path.exists():
                    make_night(path, night=night, n_alerts=args.alerts, seed=int(night), cutouts=False)
                cat.ingest(path)
            print(f"{cat.count()} alerts")
    with admin.connect() as conn:
        conn.exec_driver_sql("CREATE DATABASE ztfcat_part_old TEMPLATE ztfcat_part_new")
    old = make_engine(old_url)
    from alembic import command

    command.downgrade(_alembic_config(old), "0003")
    new = make_engine(new_url)
    runs = (
        ("unpartitioned (0003)", old, False),
        ("partitioned, no hints", new, False),
        ("partitioned (0004)", new, True),
    )
    for label, engine, hints in runs:
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            sizes = {
                t: conn.execute(text(SIZE), {"t": t}).scalar()
                for t in ("alerts", "prv_candidates", "fp_hists")
            }
            total = float(conn.execute(text("SELECT pg_database_size(current_database())")).scalar())
        print(f"\n== {label}")
        print(
            " ".join(f"{t}={float(v) / 1e6:.1f} MB" for t, v in sizes.items()),
            f"database={total / 1e6:.1f} MB",
        )
        for name, keywords in QUERIES.items():
            print(f"-- {name}: {_timed(engine, keywords, hints):.2f} ms")
            print(_plan(engine, keywords, hints))
    old.dispose()
    new.dispose()


if __name__ == "__main__":
    main()
