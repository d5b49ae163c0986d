"""Ingest speed against ``gzip -dc`` on the same synthetic night, measured in the same run.

    python benchmarks/ingest.py [--alerts 20000] [--repeat 1] [--layout files|pack] [--database-url URL]

Prints alerts/s for ``gzip -dc FILE > /dev/null`` and for ``ztfcat ingest FILE`` into a fresh catalog, and
the ratios the issues set as targets: alerts and blobs in the catalog (the main pass) ≥ 1.2× gzip -dc,
the complete catalog with history ≥ 0.7× (files layout; ≥ 1.6× and ≥ 0.8× with the pack layout),
peak RSS < 300 MB.  Ratios, never absolute pass/fail times: the machine's speed cancels out.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_WORK, gzip_baseline, synthetic_night, table, ztfcat_ingest  # noqa: E402


def measure(alerts: int, repeat: int, layout: str, database_url: str | None, work: Path) -> dict:
    night = synthetic_night(work, alerts)
    gz, main, total, rss = [], [], [], []
    for i in range(repeat):
        gz.append(gzip_baseline(night))
        data = work / f"catalog-{layout}-{i}"
        shutil.rmtree(data, ignore_errors=True)
        if database_url:
            _reset_postgres(database_url)
        report, timed = ztfcat_ingest(night, data, database_url, layout)
        assert report["n_alerts"] == alerts, report
        startup = timed.seconds - report["seconds"]  # interpreter and imports, part of the user's wait
        main.append(report["seconds_alerts"] + startup)
        total.append(timed.seconds)
        rss.append(timed.peak_rss_mb)
        shutil.rmtree(data, ignore_errors=True)
    g, m, t = statistics.median(gz), statistics.median(main), statistics.median(total)
    return {
        "alerts": alerts,
        "layout": layout,
        "database": "postgresql" if database_url else "sqlite",
        "gzip_rate": alerts / g,
        "main_rate": alerts / m,
        "total_rate": alerts / t,
        "main_ratio": g / m,
        "total_ratio": g / t,
        "peak_rss_mb": max(rss),
    }


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine

    from ztfcat.tables import metadata

    engine = create_engine(url)
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--layout", choices=["files", "pack"], default="files")
    parser.add_argument("--database-url", help="PostgreSQL URL (its tables are dropped!); default SQLite")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()
    r = measure(args.alerts, args.repeat, args.layout, args.database_url, args.work)
    target_main, target_total = (1.6, 0.8) if args.layout == "pack" else (1.2, 0.7)
    print(
        table(
            [
                ("gzip -dc FILE > /dev/null", f"{r['gzip_rate']:.0f}", "1.00", ""),
                (
                    "ztfcat ingest: alerts + blobs",
                    f"{r['main_rate']:.0f}",
                    f"{r['main_ratio']:.2f}",
                    f">= {target_main}",
                ),
                (
                    "ztfcat ingest: complete catalog",
                    f"{r['total_rate']:.0f}",
                    f"{r['total_ratio']:.2f}",
                    f">= {target_total}",
                ),
            ],
            ("stage", "alerts/s", "x gzip -dc", "target"),
        )
    )
    print(
        f"{r['alerts']} alerts, {r['layout']} layout, {r['database']}; peak RSS {r['peak_rss_mb']:.0f} MB (target < 300)"
    )


if __name__ == "__main__":
    main()
