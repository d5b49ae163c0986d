"""Benchmark: ``ztfcat export --parquet`` and ``--hats`` rates, and Parquet bytes per alert against SQLite's.

    python benchmarks/export.py [--alerts 20000] [--nights 1] [--workdir DIR] [--database-url URL] [--no-hats]
                                [--check-cones N]

Makes a synthetic night (null cutouts: the export reads database rows only, never a packet, so cutouts
change the ingest, not the export) and ingests it into a fresh catalog, both cached in ``--workdir``
for the next run; or exports the catalog at ``--database-url`` / ``--data-dir`` as it is (e.g. the
million-alert catalog of benchmarks/scale.py).  ``--nights 10 --alerts 100000`` grows the million-alert
catalog the way benchmarks/scale.py does (ten synthetic nights of new objects, each ingested with
``ztfcat ingest``, so every alerts, prv_candidates and fp_hists row is what a real ingest writes), one
night at a time: each tarball and its packets are deleted once the night is in, since the export never
reads them (a million cutout-less packets would be 33 GB).  Then it times, each in a child process with its peak
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
            [sys.executable, "-m", "ztfcat.synthetic", str(night), "--alerts", str(n_alerts), "--no-cutouts"],
            check=True,
        )
        print("ingesting ...", file=sys.stderr, flush=True)
        env = dict(os.environ, ZTFCAT_DATA_DIR=str(data), ZTFCAT_DATABASE_URL=url)
        subprocess.run([sys.executable, "-m", "ztfcat.cli", "ingest", str(night)], check=True, env=env)
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
            [sys.executable, "-m", "ztfcat.synthetic", str(tarball), "--alerts", str(n_alerts),
             "--night", night, "--seed", night, "--no-cutouts"],
            check=True,
        )  # fmt: skip
        print(f"ingesting {tarball.name} ...", file=sys.stderr, flush=True)
        run = run_timed([sys.executable, "-m", "ztfcat.cli", "ingest", "--json", str(tarball)], env=env)
        print(
            f"  {n_alerts / run.seconds:,.0f} alerts/s, {run.peak_rss_mb:.0f} MB", file=sys.stderr, flush=True
        )
        tarball.unlink()
        shutil.rmtree(data / "alerts", ignore_errors=True)  # the export reads rows, never packets
        done.write_text("ok")
    return url, data


def check_cones(catalog, hats_dir: Path, n: int, seed: int = 3) -> list[tuple]:
    """``lsdb.read_hats(hats_dir).cone_search`` against ``catalog.cone_search`` at ``n`` positions."""
    import lsdb
    import numpy as np
    from sqlalchemy import select

    from ztfcat.tables import alerts

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
    parser.add_argument("--check-cones", type=int, default=0, metavar="N",
                        help="then compare N lsdb cone searches with Catalog.cone_search")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--database-url", help="export this catalog instead of a synthetic night")
    parser.add_argument("--data-dir", type=Path, help="its data directory (with --database-url)")
    parser.add_argument("--no-hats", action="store_true", help="time the Parquet export only")
    args = parser.parse_args()

    from ztfcat import Catalog

    if args.database_url:
        url, data = args.database_url, args.data_dir or Path(".")
    elif args.nights > 1:
        url, data = grown_catalog(args.workdir, args.nights, args.alerts)
    else:
        url, data = prepared_catalog(args.workdir, args.alerts)
    catalog = Catalog(url, data)
    n_alerts = catalog.count()
    counts = catalog.info()["counts"]
    out = args.workdir / "export-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = dict(os.environ, ZTFCAT_DATA_DIR=str(data), ZTFCAT_DATABASE_URL=url)
    cli = [sys.executable, "-m", "ztfcat.cli", "export"]

    rows = []
    runs = [("export --parquet", "--parquet", out / "parquet")]
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

    sizes = [
        ("Parquet, all three datasets", dir_bytes(out / "parquet")),
        ("Parquet, alerts dataset only", dir_bytes(out / "parquet" / "alerts")),
    ]
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
