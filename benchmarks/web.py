"""A benchmark row for ``ztfcat serve``: how long an alert page takes, over HTTP, on a catalog of N alerts.

    python benchmarks/web.py [--alerts N] [--pad-rows R] [--pages M] [--work DIR] [--database-url URL]

Makes (once, kept in ``--work``) a synthetic night of N alerts with full cutouts, ingests it, serves the
catalog in this process (uvicorn on a free 127.0.0.1 port, as ``ztfcat serve`` does) and fetches M
alert pages of random candids with ``requests``, each a new page never asked for before.  Prints one
JSON line: the median, min and max page time, and the same for the page's first stamp image drawn cold
and served again from the cache.  The issue's target is a median under 200 ms on the million-alert
catalog; a page reads one row by primary key, one packet, one release and one small cone, so the time
hardly depends on N (the row says which N was measured).  ``--pad-rows R`` adds R index-only rows
(``cone_search.build``: ZTF-like positions, no packets) so the tables and their indexes have the size of a
big catalog without writing R packets (a million full packets are ~69 GB); pages are asked only of the
N alerts that have packets.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_WORK, synthetic_night  # noqa: E402


def stats(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {
        "median_ms": round(statistics.median(ms), 1),
        "min_ms": round(min(ms), 1),
        "max_ms": round(max(ms), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=5000, help="alerts in the catalog (default 5,000)")
    parser.add_argument("--pad-rows", type=int, default=0, help="index-only rows added (default 0)")
    parser.add_argument("--pages", type=int, default=100, help="alert pages to fetch (default 100)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--database-url", help="a PostgreSQL URL instead of a SQLite file in --work")
    args = parser.parse_args()

    import requests

    from ztfcat import Catalog
    from ztfcat.web.app import make_datasette, serve

    night = synthetic_night(args.work, args.alerts)
    root = night.parent / "web-catalog"
    url = args.database_url or f"sqlite:///{root / 'catalog.sqlite'}"
    catalog = Catalog(url, root / "data")
    if not (root / "ingested").exists() or args.database_url:
        print(f"ingesting {night} ...", file=sys.stderr, flush=True)
        catalog.ingest(night)
        (root / "ingested").write_text("ok")
    candids = catalog.alert_ids(release=night.name)
    if args.pad_rows and catalog.count() < len(candids) + args.pad_rows:
        from cone_search import build

        build(catalog, args.pad_rows, seed=1)

    started = threading.Event()
    box: dict = {}

    def on_started(base, server):
        box.update(base=base.rstrip("/"), server=server)
        started.set()

    thread = threading.Thread(
        target=serve,
        args=(make_datasette(catalog),),
        kwargs=dict(port=0, announce=lambda m: None, on_started=on_started),
        daemon=True,
    )
    thread.start()
    started.wait(60)
    base = box["base"]
    session = requests.Session()
    session.get(f"{base}/alert/{candids[0]}").raise_for_status()  # imports and first connections
    session.get(f"{base}/alert/{candids[0]}/Science.png").raise_for_status()

    pages, cold, warm = [], [], []
    for candid in random.Random(0).sample(candids[1:], min(args.pages, len(candids) - 1)):
        start = time.perf_counter()
        session.get(f"{base}/alert/{candid}").raise_for_status()
        pages.append(time.perf_counter() - start)
        for bucket in (cold, warm):
            start = time.perf_counter()
            session.get(f"{base}/alert/{candid}/Science.png").raise_for_status()
            bucket.append(time.perf_counter() - start)
    box["server"].should_exit = True
    thread.join(10)
    row = {
        "benchmark": "web alert page",
        "database": catalog.engine.dialect.name,
        "alerts": catalog.count(),
        "alerts_with_packets": len(candids),
        "pages": len(pages),
        "alert_page": stats(pages),
        "stamp_cold": stats(cold),
        "stamp_cached": stats(warm),
    }
    catalog.close()
    print(json.dumps(row))


if __name__ == "__main__":
    main()
