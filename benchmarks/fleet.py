"""Many ingest workers into one PostgreSQL: nights/hour and alerts/s with 1 and 2 workers (issue 16).

    python benchmarks/fleet.py [--postgres-url URL] [--nights 6] [--alerts 3000] [--rounds 2]
                               [--workers 1,2] [--work DIR] [--json OUT]

Makes ``--nights`` synthetic nights of real shape (cutouts included, ~2.5 alerts per object), once, in
``<work>/fleet``.  Each run ingests all of them with :func:`ztfcat.fleet.ingest_sources` on a fresh
``LocalCluster`` into a fresh scratch database ``ztfcat_fleet`` and a fresh data directory.  The
server is a private throw-away PostgreSQL 15 started here (``initdb`` in a temporary folder, on a free
port, with the settings of ``.ci/start-postgres``), so its CPU time is this benchmark's alone; or the
server of ``--postgres-url`` (never the database the URL names), whose CPU then includes whatever else
uses it; runs alternate between the worker counts
(1, 2, 1, 2, ...) so the machine's drift hits both alike.  Measured per run:

- wall time of the ingest (cluster start-up apart, reported on its own), nights/hour, alerts/s;
- CPU seconds of the worker processes and their children (``getrusage`` in each worker, before/after);
- CPU seconds of the PostgreSQL server: the postmaster's own and reaped children's times plus every
  live backend's, from ``/proc`` via psutil, before/after; its share of client + server CPU;
- peak RSS of each worker process (its own ``VmHWM``, :func:`ztfcat.fleet.tasks.peak_rss`: its
  ``ru_maxrss`` would be this script's peak, which Linux carries into the processes it spawns) and the
  ``ru_maxrss`` of its largest child (an upper bound: a forked child counts pages it shares).

Prints a table per run, then the median and the spread (min-max) per worker count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_WORK, scratch_postgres, table  # noqa: E402

NIGHT0 = 20190801


def make_nights(work: Path, nights: int, alerts: int) -> list[Path]:
    """The benchmark's nights, made once (full-size packets, cutouts included)."""
    from ztfcat.testing.synthetic import make_night

    folder = work / "fleet" / f"{nights}x{alerts}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(nights):
        path = folder / f"ztf_public_{NIGHT0 + i}.tar.gz"
        done = path.with_suffix(".done")
        if not done.exists():
            print(f"making {path.name} ({alerts} alerts) ...", file=sys.stderr, flush=True)
            make_night(path, night=str(NIGHT0 + i), n_alerts=alerts, seed=100 + i, keep_records=False)
            done.touch()
        paths.append(path)
    return paths


PG_BIN = Path(os.environ.get("ZTFCAT_PG_BIN", "/usr/lib/postgresql/15/bin"))


@contextlib.contextmanager
def private_server() -> Iterator[str]:
    """A throw-away PostgreSQL server of this benchmark's own; yields its URL, then stops and removes it.
    As root, the cluster belongs to ``postgres`` (initdb refuses root)."""
    root = Path(tempfile.mkdtemp(prefix="ztfcat-fleet-bench-pg-", dir="/tmp"))
    root.chmod(0o755)
    as_owner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    if as_owner:
        shutil.chown(root, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = root / "data"

    def run(*argv: str) -> None:
        subprocess.run([*as_owner, *argv], check=True, capture_output=True)

    run(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-instructions")
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 128MB\n"
        )
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def server_process(url: str):
    """The postmaster of the server ``url`` names: the process listening on its port."""
    import psutil
    from sqlalchemy.engine import make_url

    port = make_url(url).port or 5432
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise SystemExit(f"no process listens on port {port}: is the server on this machine?")


def server_cpu(postmaster) -> float:
    """CPU seconds the server has used so far: the postmaster's, its reaped children's (backends that
    ended), and every live child's."""
    own = postmaster.cpu_times()
    total = own.user + own.system + own.children_user + own.children_system
    for child in postmaster.children():
        try:
            times = child.cpu_times()
        except Exception:  # ended meanwhile: its time moved to children_* above, or is lost (tiny)
            continue
        total += times.user + times.system
    return total


def _usage() -> dict:
    import resource

    from ztfcat.fleet.tasks import peak_rss

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
        "rss": peak_rss(),
        "rss_children": children.ru_maxrss * 1024,
    }


def one_run(server: str, paths: list[Path], workers: int, work: Path) -> dict:
    """Ingest every night with ``workers`` workers into a fresh scratch database; the measurements."""
    from ztfcat import Catalog
    from ztfcat.fleet import ingest_sources
    from ztfcat.fleet.cluster import dask_client

    data = work / "fleet-data"
    shutil.rmtree(data, ignore_errors=True)
    postmaster = server_process(server)
    with scratch_postgres(server, "ztfcat_fleet") as url:
        catalog = Catalog(url, data, layout="pack")
        catalog.engine  # noqa: B018 - the schema, before the clock starts
        started = time.perf_counter()
        with dask_client(workers=workers) as client:
            ready = time.perf_counter() - started
            before = client.run(_usage)
            pg_before = server_cpu(postmaster)
            report = ingest_sources(catalog, [str(p) for p in paths], client=client)
            pg_after = server_cpu(postmaster)
            after = client.run(_usage)
        catalog.close()
    shutil.rmtree(data, ignore_errors=True)
    if report.failed:
        raise SystemExit("; ".join(str(r) for r in report.failed))
    worker_cpu = sum(after[w]["cpu"] - before[w]["cpu"] for w in after if w in before)
    pg = pg_after - pg_before
    return {
        "workers": workers,
        "seconds": report.seconds,
        "cluster_start_s": ready,
        "nights": len(report.results),
        "alerts": report.n_alerts,
        "nights_per_hour": len(report.results) / report.seconds * 3600,
        "alerts_per_s": report.n_alerts / report.seconds,
        "worker_cpu_s": worker_cpu,
        "server_cpu_s": pg,
        "server_share": pg / (pg + worker_cpu) if pg + worker_cpu else 0.0,
        "peak_rss_mb": max(v["rss"] for v in after.values()) / 1e6,
        "peak_child_rss_mb": max(v["rss_children"] for v in after.values()) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url", help="A server to use instead of a private one (any database URL on it)."
    )
    parser.add_argument("--nights", type=int, default=6)
    parser.add_argument("--alerts", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2, help="Runs per worker count, alternating.")
    parser.add_argument("--workers", default="1,2", help="Worker counts, comma-separated.")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--json", type=Path, help="Write every run's numbers here.")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    paths = make_nights(args.work, args.nights, args.alerts)
    runs = []
    with contextlib.ExitStack() as stack:
        server = args.postgres_url or stack.enter_context(private_server())
        for round_no in range(args.rounds):
            for workers in counts:
                print(f"round {round_no + 1}: {workers} workers ...", file=sys.stderr, flush=True)
                run = one_run(server, paths, workers, args.work)
                run["round"] = round_no + 1
                runs.append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
    rows = [
        (
            r["workers"],
            r["round"],
            f"{r['seconds']:.1f}",
            f"{r['nights_per_hour']:.0f}",
            f"{r['alerts_per_s']:.0f}",
            f"{r['worker_cpu_s']:.1f}",
            f"{r['server_cpu_s']:.1f}",
            f"{r['server_share']:.0%}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['peak_child_rss_mb']:.0f}",
            f"{r['cluster_start_s']:.1f}",
        )
        for r in runs
    ]
    where = "the server of --postgres-url" if args.postgres_url else "a private server"
    print(
        f"{args.nights} nights x {args.alerts} alerts (cutouts included), pack layout, PostgreSQL 15 ({where})"
    )
    headers = ("workers", "round", "wall s", "nights/h", "alerts/s", "worker CPU s", "server CPU s",
               "server share", "worker RSS MB", "child RSS MB", "cluster start s")  # fmt: skip
    print(table(rows, headers))
    print()
    summary = []
    for workers in counts:
        mine = [r for r in runs if r["workers"] == workers]
        rates = [r["alerts_per_s"] for r in mine]
        nights = [r["nights_per_hour"] for r in mine]
        shares = [r["server_share"] for r in mine]
        summary.append(
            (
                workers,
                len(mine),
                f"{statistics.median(nights):.0f} ({min(nights):.0f}-{max(nights):.0f})",
                f"{statistics.median(rates):.0f} ({min(rates):.0f}-{max(rates):.0f})",
                f"{statistics.median(shares):.0%} ({min(shares):.0%}-{max(shares):.0%})",
                f"{max(r['peak_rss_mb'] for r in mine):.0f}",
            )
        )
    print(table(summary, ("workers", "runs", "nights/h median (range)", "alerts/s median (range)",
                          "server CPU share", "max worker RSS MB")))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
