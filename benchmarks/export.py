"""Benchmark: ``ztfcat export --parquet`` and ``--hats`` rates, and Parquet bytes per alert against SQLite's.

    python benchmarks/export.py [--alerts 20000] [--nights 1] [--workdir DIR] [--database-url URL] [--no-hats]
                                [--copies K] [--check-cones N]

Makes a synthetic night (null cutouts: the export reads database rows only, never a packet, so cutouts
change the ingest, not the export) and ingests it into a fresh catalog, both cached in ``--workdir``
for the next run; or exports the catalog at ``--database-url`` / ``--data-dir`` as it is (e.g. the
million-alert catalog of benchmarks/scale.py).  ``--nights 10 --alerts 100000`` grows the million-alert
catalog the way benchmarks/scale.py does (ten synthetic nights of new objects, each ingested with
``ztfcat ingest``, so every alerts, prv_candidates and fp_hists row is what a real ingest writes), one
night at a time: each tarball and its packets are deleted once the night is in, since the export never
reads them (a million cutout-less packets would be 33 GB).  ``--copies K`` then makes the catalog K
times the ingested nights by copying their rows in SQL to new keys, later nights and rotated
positions (:func:`replicate`): on a loaded 2-core machine making and ingesting a night of 100,000
took ~11 minutes, a copy of it well under one.  Then it times, each in a child process with its peak
RSS (the Dask workers of ``--hats`` are processes of their own and not counted):

- ``ztfcat export --parquet DIR``: alerts by night and the light-curve tables;
- ``ztfcat export --hats DIR``: staging Parquet, then hats-import on a 2-worker LocalCluster;

and prints alerts/s of wall time and of CPU time (on a shared machine the wall time mostly measures
the other load), and the bytes per alert of the Parquet datasets, the SQLite database file (tables
and indexes, no packets) and the raw Avro packets.  Times are printed, never asserted.  ``--check-cones N`` then opens the
HATS catalog with ``lsdb.read_hats`` and checks that N cone searches (one at a pole, one across RA 0/360,
the rest at random alerts) return the same candids as ``Catalog.cone_search``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_WORK, run_timed, table  # noqa: E402


def timed_cpu(argv: list[str], env: dict):
    """``run_timed`` plus the CPU seconds (user + system) of the child and every process it reaped."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_timed(argv, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def prepared_catalog(work: Path, n_alerts: int) -> tuple[str, Path]:
    """A SQLite catalog of one synthetic night of ``n_alerts``, made once and reused."""
    base = work / f"export-n{n_alerts}"
    data = base / "data"
    url = f"sqlite:///{data / 'catalog.sqlite'}"
    done = base / "ingested.done"
    if not done.exists():
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        night = base / "ztf_public_20180819.tar.gz"
        print(f"making {night} ({n_alerts} alerts) ...", file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, "-m", "ztfcat.testing.synthetic", str(night), "--alerts", str(n_alerts), "--no-cutouts"],
            check=True,
        )
        print("ingesting ...", file=sys.stderr, flush=True)
        env = dict(os.environ, ZTFCAT_DATA_DIR=str(data), ZTFCAT_DATABASE_URL=url)
        subprocess.run([sys.executable, "-m", "ztfcat.cli.root", "ingest", str(night)], check=True, env=env)
        night.unlink()
        done.write_text("ok")
    return url, data


def grown_catalog(work: Path, nights: int, n_alerts: int) -> tuple[str, Path]:
    """A SQLite catalog of ``nights`` synthetic nights of ``n_alerts`` each, grown a night at a time.

    Each night is made, ingested (pack layout) and then deleted with its packets; a night already in
    (its ``.done`` marker) is skipped, so an interrupted build resumes where it stopped.
    """
    base = work / f"export-{nights}x{n_alerts}"
    data = base / "data"
    url = f"sqlite:///{data / 'catalog.sqlite'}"
    env = dict(os.environ, ZTFCAT_DATA_DIR=str(data), ZTFCAT_DATABASE_URL=url, ZTFCAT_LAYOUT="pack")
    base.mkdir(parents=True, exist_ok=True)
    for i in range(nights):
        night = str(20190701 + i)
        done = base / f"{night}.done"
        if done.exists():
            continue
        tarball = base / f"ztf_public_{night}.tar.gz"
        print(f"making {tarball.name} ({n_alerts} alerts) ...", file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, "-m", "ztfcat.testing.synthetic", str(tarball), "--alerts", str(n_alerts),
             "--night", night, "--seed", night, "--no-cutouts"],
            check=True,
        )  # fmt: skip
        print(f"ingesting {tarball.name} ...", file=sys.stderr, flush=True)
        run = run_timed([sys.executable, "-m", "ztfcat.cli.root", "ingest", "--json", str(tarball)], env=env)
        print(
            f"  {n_alerts / run.seconds:,.0f} alerts/s, {run.peak_rss_mb:.0f} MB", file=sys.stderr, flush=True
        )
        tarball.unlink()
        shutil.rmtree(data / "alerts", ignore_errors=True)  # the export reads rows, never packets
        done.write_text("ok")
    return url, data


#: candid offset of each copy made by :func:`replicate` (ZTF candids are below 10**18).
COPY_OFFSET = 10**18


def replicate(url: str, copies: int) -> None:
    """Make the SQLite catalog ``copies`` times what was ingested, copying its rows in SQL.

    Copy ``k`` of every alerts, alert_releases, prv_candidates and fp_hists row of the ingested nights
    is that row with ``candid`` (and ``alert_candid``) + k * :data:`COPY_OFFSET`, objectIds of another
    year (ZTF18... -> ZTF28...), ``jd``/``night`` k times the ingested span later (so the copies are
    further nights, with releases of their own) and RA rotated by k * 360 / copies degrees, ``hpx``
    recomputed by :func:`ztfcat.store.sky.hpx_index` (the HATS export checks every one against hats' own).
    So every row is one an ingest wrote, at distinct keys and positions; only the ``objects`` aggregate
    is not copied (no export reads it).  Copies already made are kept.
    """
    import datetime as dt
    import sqlite3

    import numpy as np

    from ztfcat.store.sky import hpx_index
    from ztfcat.store.tables import alert_releases, alerts, fp_hists, prv_candidates

    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        originals = conn.execute(
            "SELECT id, name, night FROM releases WHERE id IN "
            "(SELECT DISTINCT release_id FROM alerts WHERE candid < ?) ORDER BY id", (COPY_OFFSET,)
        ).fetchall()  # fmt: skip
        lo, hi = conn.execute(
            "SELECT min(night), max(night) FROM alerts WHERE candid < ?", (COPY_OFFSET,)
        ).fetchone()
        span = (dt.date.fromisoformat(hi) - dt.date.fromisoformat(lo)).days + 1
        base = conn.execute(
            "SELECT candid, ra, dec FROM alerts WHERE candid < ? ORDER BY candid", (COPY_OFFSET,)
        )
        candid, ra, dec = (np.array(c) for c in zip(*base.fetchall(), strict=True))
        top_release = conn.execute("SELECT max(id) FROM releases").fetchone()[0]
        for k in range(1, copies):
            if conn.execute(
                "SELECT 1 FROM alerts WHERE candid >= ? AND candid < ? LIMIT 1", (k * COPY_OFFSET, (k + 1) * COPY_OFFSET)
            ).fetchone():  # fmt: skip
                continue
            print(f"copy {k} of the {len(candid):,} ingested alerts ...", file=sys.stderr, flush=True)
            shift, days, turn = k * COPY_OFFSET, k * span, 360.0 * k / copies
            new_ra = np.mod(ra + turn, 360.0)
            new_hpx = hpx_index(new_ra, dec)
            release_of = {
                rid: top_release + (k - 1) * len(originals) + i + 1 for i, (rid, _, _) in enumerate(originals)
            }
            oid = f"'ZTF' || printf('%02d', CAST(substr(\"objectId\", 4, 2) AS INTEGER) + {10 * k}) || substr(\"objectId\", 6)"
            release = (
                "CASE release_id " + " ".join(f"WHEN {a} THEN {b}" for a, b in release_of.items()) + " END"
            )
            with conn:
                conn.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS moved (candid INTEGER PRIMARY KEY, ra REAL, hpx INTEGER)"
                )
                conn.execute("DELETE FROM moved")
                conn.executemany("INSERT INTO moved VALUES (?, ?, ?)",
                                 zip(candid.tolist(), new_ra.tolist(), new_hpx.tolist(), strict=True))  # fmt: skip
                for rid, name, night in originals:
                    later = (dt.date.fromisoformat(night) + dt.timedelta(days=days)).isoformat()
                    conn.execute(
                        "INSERT INTO releases (id, name, night, status, n_alerts, n_errors, n_duplicates, layout, source)"
                        " SELECT ?, ?, ?, 'complete', n_alerts, 0, 0, layout, ? FROM releases WHERE id = ?",
                        (release_of[rid], f"ztf_public_{later.replace('-', '')}.tar.gz", later,
                         f"copy {k} of {name} (benchmarks/export.py --copies)", rid),
                    )  # fmt: skip

                def copy(table, exprs, where):
                    names = [c.name for c in table.c if c.name != "id" or table is alerts]
                    cols = ", ".join(f'"{n}"' for n in names)
                    picked = ", ".join(exprs.get(n, f'{table.name}."{n}"') for n in names)
                    sql = f"INSERT INTO {table.name} ({cols}) SELECT {picked} FROM {table.name} {where}"  # noqa: S608 - fixed names, numbers
                    conn.execute(sql)

                rotated = f"CASE WHEN ra IS NULL THEN NULL WHEN ra + {turn} >= 360 THEN ra + {turn} - 360 ELSE ra + {turn} END"
                copy(alerts, {
                    "candid": f"alerts.candid + {shift}", "objectId": oid, "release_id": release,
                    "night": f"date(night, '+{days} days')", "jd": f"jd + {days}",
                    "jdstarthist": f"jdstarthist + {days}", "jdendhist": f"jdendhist + {days}",
                    "ra": "moved.ra", "hpx": "moved.hpx",
                }, f"JOIN moved ON moved.candid = alerts.candid WHERE alerts.candid < {COPY_OFFSET}")  # fmt: skip
                copy(alert_releases, {"candid": f"candid + {shift}", "release_id": release},
                     f"WHERE candid < {COPY_OFFSET}")  # fmt: skip
                copy(prv_candidates, {
                    "objectId": oid, "alert_candid": f"alert_candid + {shift}", "alert_jd": f"alert_jd + {days}",
                    "jd": f"jd + {days}", "candid": f"candid + {shift}", "ra": rotated,
                }, f"WHERE alert_candid < {COPY_OFFSET}")  # fmt: skip
                copy(fp_hists, {
                    "objectId": oid, "alert_candid": f"alert_candid + {shift}", "alert_jd": f"alert_jd + {days}",
                    "jd": f"jd + {days}",
                }, f"WHERE alert_candid < {COPY_OFFSET}")  # fmt: skip
        conn.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()


def check_cones(catalog, hats_dir: Path, n: int, seed: int = 3) -> list[tuple]:
    """``lsdb.read_hats(hats_dir).cone_search`` against ``catalog.cone_search`` at ``n`` positions."""
    import lsdb
    import numpy as np
    from sqlalchemy import select

    from ztfcat.store.tables import alerts

    ids = catalog.alert_ids()
    rng = np.random.default_rng(seed)
    chosen = [int(c) for c in rng.choice(ids, max(n - 2, 0), replace=False)]
    with catalog.engine.connect() as conn:
        picks = conn.execute(select(alerts.c.ra, alerts.c.dec).where(alerts.c.candid.in_(chosen))).all()
    centres = [(0.3, 89.9, 3600.0), (359.99, 0.0, 3600.0)]
    centres += [(float(r), float(d), 60.0) for r, d in picks]
    hats = lsdb.read_hats(hats_dir)
    rows = []
    for ra, dec, radius in centres[:n]:
        ours = sorted(int(c) for c in catalog.cone_search(ra, dec, radius, columns=["candid"])["candid"])
        theirs = sorted(int(c) for c in hats.cone_search(ra, dec, radius).compute()["candid"])
        rows.append((f"({ra:.4f}, {dec:+.4f}) r={radius:g}\"", len(ours), len(theirs),
                     "same" if ours == theirs else "DIFFERENT"))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=20_000, help="alerts (per night with --nights)")
    parser.add_argument("--nights", type=int, default=1, help="grow a catalog of this many nights")
    parser.add_argument("--copies", type=int, default=1,
                        help="then make the catalog this many times the ingested nights (see replicate)")  # fmt: skip
    parser.add_argument("--check-cones", type=int, default=0, metavar="N",
                        help="then compare N lsdb cone searches with Catalog.cone_search")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--database-url", help="export this catalog instead of a synthetic night")
    parser.add_argument("--data-dir", type=Path, help="its data directory (with --database-url)")
    parser.add_argument("--no-hats", action="store_true", help="time the Parquet export only")
    parser.add_argument("--no-parquet", action="store_true", help="time the HATS export only")
    args = parser.parse_args()

    from ztfcat import Catalog

    if args.database_url:
        url, data = args.database_url, args.data_dir or Path(".")
    elif args.nights > 1 or args.copies > 1:
        url, data = grown_catalog(args.workdir, args.nights, args.alerts)
        if args.copies > 1:
            replicate(url, args.copies)
    else:
        url, data = prepared_catalog(args.workdir, args.alerts)
    catalog = Catalog(url, data)
    n_alerts = catalog.count()
    counts = catalog.info()["counts"]
    out = args.workdir / "export-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = dict(os.environ, ZTFCAT_DATA_DIR=str(data), ZTFCAT_DATABASE_URL=url)
    cli = [sys.executable, "-m", "ztfcat.cli.root", "export"]

    rows = []
    runs = [] if args.no_parquet else [("export --parquet", "--parquet", out / "parquet")]
    if not args.no_hats:
        runs.append(("export --hats (LocalCluster, 2 workers)", "--hats", out / "hats"))
    for label, option, path in runs:
        run, cpu = timed_cpu([*cli, option, str(path)], env)
        rows.append(
            (label, f"{n_alerts / run.seconds:,.0f}", f"{run.seconds:.1f}", f"{cpu:.1f}",
             f"{n_alerts / cpu:,.0f}" if cpu else "-", f"{run.peak_rss_mb:.0f} MB")
        )  # fmt: skip
    print(
        f"{n_alerts} alerts, {counts['prv_candidates']} prv_candidates, {counts['fp_hists']} fp_hists; {url}"
    )
    print(table(rows, ("export", "alerts/s", "wall s", "CPU s", "alerts/CPU-s", "peak RSS")))
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    sizes = []
    if not args.no_parquet:
        sizes.append(("Parquet, all three datasets", dir_bytes(out / "parquet")))
        sizes.append(("Parquet, alerts dataset only", dir_bytes(out / "parquet" / "alerts")))
    if not args.no_hats:
        sizes.append(("HATS catalog (alerts)", dir_bytes(out / "hats")))
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///"))
        sizes.append(("SQLite database file (tables + indexes)", db.stat().st_size))
    packets = data / "alerts"
    if packets.exists():
        sizes.append(("raw Avro packets (data dir)", dir_bytes(packets)))
    print()
    print(table([(name, f"{b / n_alerts:,.0f}", f"{b / 1e6:,.1f} MB") for name, b in sizes],
                ("storage", "bytes/alert", "total")))  # fmt: skip
    if args.check_cones and not args.no_hats:
        print()
        print(table(check_cones(catalog, out / "hats", args.check_cones),
                    ("cone", "Catalog.cone_search", "lsdb cone_search", "candids")))  # fmt: skip
    catalog.close()


if __name__ == "__main__":
    main()
