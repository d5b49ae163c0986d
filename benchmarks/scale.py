"""The scale run: a catalog grown night by night to a million alerts, on SQLite or PostgreSQL.

    python benchmarks/scale.py generate [--nights 10] [--alerts 100000] [--work DIR]
    python benchmarks/scale.py run --database sqlite|postgresql [--postgres-url URL] [--work DIR]

``generate`` writes ``--nights`` synthetic nights of ``--alerts`` alerts each, real shape except the three
cutouts, which are null (a million full packets would be 69 GB; the difference is a fixed ~37 KB per
packet, corrected for in docs/scale.md from full-size measurements).  ``run`` ingests them one after the
other with ``ztfcat ingest`` in a child process (wall time and peak RSS per night), records the size of
every table and its indexes after each night, then times the queries a user makes at that size: lookup
by id, listing, a filtered query, light curves and cone searches.  Results go to
``<work>/scale-<database>.json``; docs/scale.md is written by hand from them.

With PostgreSQL, a scratch database ``ztfcat_scale`` is created on the server of ``--postgres-url`` (never
the database the URL names) and dropped at the end; packets are deleted after the queries, so the two
runs never hold two copies of the blobs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_WORK, scratch_postgres, ztfcat_ingest  # noqa: E402

NIGHT0 = 20190701


def night_paths(work: Path, nights: int) -> list[Path]:
    """The tarballs of the scale run, oldest first."""
    return [work / "nights" / f"ztf_public_{NIGHT0 + i}.tar.gz" for i in range(nights)]


def generate(work: Path, nights: int, alerts: int) -> None:
    """Write the nights that are missing, two at a time (the machine has two cores)."""
    pending = [p for p in night_paths(work, nights) if not p.with_suffix(".done").exists()]
    for p in pending:
        p.parent.mkdir(parents=True, exist_ok=True)
    running: list[tuple[subprocess.Popen, Path]] = []
    while pending or running:
        while pending and len(running) < 2:
            path = pending.pop(0)
            night = path.name.removeprefix("ztf_public_").removesuffix(".tar.gz")
            argv = [sys.executable, "-m", "ztfcat.testing.synthetic", str(path), "--alerts", str(alerts)]
            argv += ["--night", night, "--seed", night, "--no-cutouts"]
            running.append((subprocess.Popen(argv), path))
        proc, path = running.pop(0)
        if proc.wait() != 0:
            raise SystemExit(f"making {path} failed")
        path.with_suffix(".done").write_text("ok")


def table_sizes(engine) -> dict[str, int]:
    """Bytes on disk of each table with its indexes (SQLite: ``dbstat``; PostgreSQL: total relation size)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(
                "SELECT m.tbl_name, SUM(s.pgsize) FROM dbstat AS s JOIN sqlite_master AS m ON m.name = s.name "
                "GROUP BY m.tbl_name"
            ).all()
        else:
            rows = conn.exec_driver_sql(
                "SELECT relname, pg_total_relation_size(relid) FROM pg_catalog.pg_statio_user_tables"
            ).all()
    return {name: int(size) for name, size in rows}


def database_bytes(engine, url: str) -> int:
    """The whole database on disk: the SQLite file with its WAL, or ``pg_database_size``."""
    if engine.dialect.name == "sqlite":
        path = Path(engine.url.database)
        return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one())


def _timings(fn, items) -> dict[str, float]:
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - start)
    times.sort()
    return {
        "n": len(times),
        "median_ms": 1000 * statistics.median(times),
        "p90_ms": 1000 * times[int(0.9 * (len(times) - 1))],
    }


def query_latencies(catalog, seed: int = 7) -> dict[str, dict]:
    """Median and p90 latencies of the user-facing calls on the catalog as it is."""
    import numpy as np

    rng = np.random.default_rng(seed)
    engine = catalog.engine
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        lo, hi = conn.exec_driver_sql("SELECT MIN(jd), MAX(jd) FROM alerts").one()
    ids = catalog.alert_ids()  # also warms the cache, as a user's session would
    picks = [int(ids[i]) for i in rng.integers(0, len(ids), 300)]
    from sqlalchemy import select

    from ztfcat.store.tables import alerts

    query = select(alerts.c.objectId, alerts.c.ra, alerts.c.dec).where(alerts.c.candid.in_(picks[:100]))
    with engine.connect() as conn:
        positions = conn.execute(query).all()
    out: dict[str, dict] = {"alerts": {"n": len(ids)}}
    out["get_alert raw"] = _timings(lambda c: catalog.get_alert(c, raw=True), picks)
    out["get_alert decoded"] = _timings(lambda c: catalog.get_alert(c), picks[:100])
    out["alert_ids (all)"] = _timings(lambda _: catalog.alert_ids(), range(3))
    span = (hi - lo) / 10  # about one night of ten
    mid = lo + 4 * span
    out["alert_ids rb>0.9, 1 night"] = _timings(
        lambda _: catalog.alert_ids("rb > 0.9", jd=(mid, mid + span)), range(5)
    )
    out["count rb>0.9, 1 night"] = _timings(
        lambda _: catalog.count("rb > 0.9", jd=(mid, mid + span)), range(5)
    )
    out["query rb>0.9 fid=1, 1 night, limit 1000"] = _timings(
        lambda _: catalog.query("rb > 0.9", fid=1, jd=(mid, mid + span), limit=1000), range(5)
    )
    out["lightcurve"] = _timings(lambda p: catalog.lightcurve(p[0]), positions)
    out["cone_search 5 arcsec"] = _timings(lambda p: catalog.cone_search(p[1], p[2], 5), positions)
    out["iter_alerts raw, first 10k"] = _timings(lambda _: _iterate(catalog, 10_000), range(1))
    return out


def _iterate(catalog, n: int) -> None:
    for i, _ in enumerate(catalog.iter_alerts(None, raw=True)):
        if i + 1 >= n:
            break


def run(work: Path, database: str, postgres_url: str | None, nights: int, layout: str) -> dict:
    """Ingest every night into a fresh catalog, recording growth, then time the queries."""
    from ztfcat import Catalog

    paths = night_paths(work, nights)
    missing = [p for p in paths if not p.with_suffix(".done").exists()]
    if missing:
        raise SystemExit(f"{len(missing)} nights missing: run `generate` first")
    data = work / f"catalog-{database}"
    shutil.rmtree(data, ignore_errors=True)
    results: dict = {"database": database, "layout": layout, "nights": []}
    out_path = work / f"scale-{database}.json"
    with scratch_postgres(postgres_url if database == "postgresql" else None, "ztfcat_scale") as url:
        db_url = url or f"sqlite:///{data / 'catalog.sqlite'}"
        catalog = Catalog(db_url, data, layout=layout)
        total = 0
        for path in paths:
            report, timed = ztfcat_ingest(path, data, url, layout)
            total += report["n_alerts"]
            sizes = table_sizes(catalog.engine)
            row = {
                "night": path.name,
                "alerts": report["n_alerts"],
                "catalog_alerts": total,
                "seconds": timed.seconds,
                "seconds_alerts": report["seconds_alerts"],
                "seconds_ingest": report["seconds"],
                "rate": report["n_alerts"] / timed.seconds,
                "peak_rss_mb": timed.peak_rss_mb,
                "tarball_bytes": path.stat().st_size,
                "database_bytes": database_bytes(catalog.engine, db_url),
                "blob_bytes": sum(f.stat().st_size for f in (data / "alerts").rglob("*") if f.is_file()),
                "tables": sizes,
            }
            results["nights"].append(row)
            print(
                f"{database}: {path.name} {row['alerts']} alerts in {row['seconds']:.1f} s "
                f"({row['rate']:.0f}/s), catalog {total:,} alerts, db {row['database_bytes'] / 1e6:.0f} MB, "
                f"RSS {row['peak_rss_mb']:.0f} MB",
                flush=True,
            )
            out_path.write_text(json.dumps(results, indent=1))
        with catalog.engine.connect() as conn:
            results["rows"] = {
                t: conn.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar_one()  # noqa: S608 - fixed names
                for t in ("alerts", "prv_candidates", "fp_hists")
            }
        results["queries"] = query_latencies(catalog)
        results["query_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        catalog.close()
    shutil.rmtree(data / "alerts", ignore_errors=True)
    out_path.write_text(json.dumps(results, indent=1))
    for name, value in results["queries"].items():
        print(f"{database}: {name}: {value}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["generate", "run"])
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--alerts", type=int, default=100_000, help="alerts per night")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get("ZTFCAT_TEST_POSTGRES_URL"))
    parser.add_argument("--layout", choices=["files", "pack"], default="pack")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK / "scale")
    args = parser.parse_args(argv)
    if args.command == "generate":
        generate(args.work, args.nights, args.alerts)
        return 0
    if args.database == "postgresql" and not args.postgres_url:
        parser.error("--database postgresql needs --postgres-url (or ZTFCAT_TEST_POSTGRES_URL)")
    run(args.work, args.database, args.postgres_url, args.nights, args.layout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
