"""Lookups of raw packets on shared storage: ``get_alert(candid, raw=True)`` per blob store.

    python benchmarks/shared_blobs.py [--alerts 2000] [--lookups 300] [--work DIR]

One synthetic night of full-size packets (cutouts included, ~73 kB each) is ingested three times with the
pack layout: packets under the data directory (today's default), in a shared directory (``--blobs DIR``;
here a folder on the same local disk: a network file system adds its own round trip), and in a GCS
bucket on ``gcp-storage-emulator`` run as a separate process on 127.0.0.1 (``--blobs gs://...``).  A
reader with a data directory of its own (another machine's view) then looks up random candids; the
first few lookups warm the connection and are not counted.

The emulator is a pure-Python HTTP server, so its row mostly measures the emulator.  To show how much,
the same ranged requests are also timed with a bare keep-alive ``requests`` session (the HTTP round
trip alone, no google-cloud-storage client) and the client library's own CPU per call is reported.
Prints a markdown table and one JSON line per row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_WORK  # noqa: E402

WARMUP = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _emulator(port: int) -> subprocess.Popen:
    """gcp-storage-emulator in its own process, in memory, quiet; waits until it answers."""
    import requests

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--quiet",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/", timeout=1).ok:
                return proc
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gcp-storage-emulator did not start")


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in seconds)
    return statistics.median(ms), ms[int(0.9 * (len(ms) - 1))]


def _lookups(catalog, candids: list[int], bare=None) -> tuple[list[float], float, list[float]]:
    """Wall seconds per lookup, this process's CPU seconds per lookup, and (with ``bare``, a function of
    the candid) the wall seconds of a bare HTTP request for the same range, made right after each lookup
    so that both see the same load on a shared machine."""
    for candid in candids[:WARMUP]:
        catalog.get_alert(candid, raw=True)
        if bare is not None:
            bare(candid)
    times, bare_times, cpu = [], [], 0.0
    for candid in candids[WARMUP:]:
        cpu0 = time.process_time()
        start = time.perf_counter()
        catalog.get_alert(candid, raw=True)
        times.append(time.perf_counter() - start)
        cpu += time.process_time() - cpu0
        if bare is not None:
            start = time.perf_counter()
            bare(candid)
            bare_times.append(time.perf_counter() - start)
    return times, cpu / len(times), bare_times


def _bare_http(port: int, located: dict[int, tuple[str, int, int]]):
    """A function doing the lookup's ranged GET with a keep-alive ``requests`` session and nothing else:
    the emulator's own round trip."""
    from urllib.parse import quote

    import requests

    session = requests.Session()

    def get(candid: int) -> None:
        url, offset, size = located[candid]
        bucket, _, name = url.removeprefix("gs://").partition("/")
        media = f"http://127.0.0.1:{port}/download/storage/v1/b/{bucket}/o/{quote(name, safe='')}?alt=media"
        got = session.get(media, headers={"Range": f"bytes={offset}-{offset + size - 1}"}, timeout=10)
        assert len(got.content) == size

    return get


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK / "shared-blobs")
    args = parser.parse_args(argv)

    from sqlalchemy import select

    from ztfcat import Catalog
    from ztfcat.store.tables import alerts
    from ztfcat.testing.synthetic import make_night

    args.work.mkdir(parents=True, exist_ok=True)
    tarball = args.work / "ztf_public_20190819.tar.gz"
    if not tarball.exists():
        make_night(tarball, night="20190819", n_alerts=args.alerts, seed=11, keep_records=False)
    port = _free_port()
    emulator = _emulator(port)
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    results = []
    try:
        from ztfcat.sources import gcs

        gcs.client().create_bucket("ztfcat-bench")
        with tempfile.TemporaryDirectory(dir=args.work) as scratch:
            root = Path(scratch)
            stores = {
                "data dir (pack)": None,
                "shared directory": str(root / "shared"),
                "GCS emulator": "gs://ztfcat-bench/packs",
            }
            for label, blobs in stores.items():
                db = f"sqlite:///{root / (str(len(results)) + '.sqlite')}"
                worker = Catalog(db, root / f"worker{len(results)}", layout="pack", blobs=blobs)
                started = time.perf_counter()
                worker.ingest(tarball)
                ingest_s = time.perf_counter() - started
                worker.close()
                reader = Catalog(db, root / f"worker{len(results)}" if blobs is None else root / "reader")
                ids = reader.alert_ids()
                picks = random.Random(5).choices(ids, k=args.lookups + WARMUP)
                bare = None
                if blobs and blobs.startswith("gs://"):
                    cols = (alerts.c.candid, alerts.c.blob_path, alerts.c.blob_offset, alerts.c.blob_size)
                    with reader.engine.connect() as conn:
                        located = {c: (p, o, s) for c, p, o, s in conn.execute(select(*cols))}
                    bare = _bare_http(port, located)
                times, cpu, bare_times = _lookups(reader, picks, bare)
                median, p90 = _percentiles(times)
                row = {"store": label, "alerts": len(ids), "ingest_s": round(ingest_s, 2),
                       "median_ms": round(median, 3), "p90_ms": round(p90, 3),
                       "client_cpu_ms": round(cpu * 1000, 3)}  # fmt: skip
                if bare_times:
                    row["bare_http_median_ms"], row["bare_http_p90_ms"] = (
                        round(x, 3) for x in _percentiles(bare_times)
                    )
                reader.close()
                results.append(row)
    finally:
        emulator.terminate()
        emulator.wait(10)
    print("| store | median ms | p90 ms | client CPU ms/lookup | bare HTTP median (p90) ms |")
    print("|---|---:|---:|---:|---:|")
    for row in results:
        bare = (
            f"{row['bare_http_median_ms']} ({row['bare_http_p90_ms']})"
            if "bare_http_median_ms" in row
            else ""
        )
        print(f"| {row['store']} | {row['median_ms']} | {row['p90_ms']} | {row['client_cpu_ms']} | {bare} |")
    for row in results:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
