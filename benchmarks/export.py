"""Benchmark: ``ztfcat export --parquet`` and ``--hats`` rates, and Parquet bytes per alert against SQLite's.

    python benchmarks/export.py [--alerts 20000] [--workdir DIR] [--database-url URL] [--no-hats]

Makes a synthetic night (null cutouts: the export reads database rows only, never a packet, so cutouts
change the ingest, not the export) and ingests it into a fresh catalog, both cached in ``--workdir``
for the next run; or exports the catalog at ``--database-url`` / ``--data-dir`` as it is (e.g. the
million-alert catalog of benchmarks/scale.py).  Then it times, each in a child process with its peak
RSS (the Dask workers of ``--hats`` are processes of their own and not counted):

- ``ztfcat export --parquet DIR``: alerts by night and the light-curve tables;
- ``ztfcat export --hats DIR``: staging Parquet, then hats-import on a 2-worker LocalCluster;

and prints alerts/s of wall time and of CPU time (on a shared machine the wall time mostly measures
the other load), and the bytes per alert of the Parquet datasets, the SQLite database file (tables
and indexes, no packets) and the raw Avro packets.  Times are printed, never asserted.
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=20_000)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--database-url", help="export this catalog instead of a synthetic night")
    parser.add_argument("--data-dir", type=Path, help="its data directory (with --database-url)")
    parser.add_argument("--no-hats", action="store_true", help="time the Parquet export only")
    args = parser.parse_args()

    from ztfcat import Catalog

    if args.database_url:
        url, data = args.database_url, args.data_dir or Path(".")
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
    catalog.close()


if __name__ == "__main__":
    main()
