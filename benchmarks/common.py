"""Shared by the benchmark scripts: synthetic nights cached on disk, child processes timed with their RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORK = Path(os.environ.get("ZTFCAT_BENCH_DIR", "/tmp/ztfcat-bench"))


@dataclass
class Timed:
    """A child's wall time, peak RSS and CPU (user and system, its own and its reaped children's)."""

    seconds: float
    peak_rss_mb: float
    stdout: str
    user: float = 0.0
    system: float = 0.0
    steal: float | None = None
    """Share of the machine's CPU time the hypervisor gave to other guests during the run (``steal`` in
    ``/proc/stat``); None where the kernel does not say.  A busy host shows here, not as a result."""


def cpu_ticks() -> tuple[int, int] | None:
    """``(steal, all)`` clock ticks of every CPU since boot, from the first line of ``/proc/stat``."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already counted in user/nice]
    return (fields[7], sum(fields[:8])) if len(fields) >= 8 else None


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def run_timed(argv: list[str], *, env: dict | None = None, stdout=subprocess.PIPE) -> Timed:
    """Run a command to completion; its wall time and peak RSS (``wait4``: that child and its own children)."""
    with tempfile.TemporaryFile() as err:
        ticks = cpu_ticks()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=stdout, stderr=err, env=env)
        out = proc.stdout.read() if proc.stdout else b""
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        steal = steal_share(ticks, cpu_ticks())
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err.read().decode()}")
    return Timed(seconds, usage.ru_maxrss / 1024, out.decode(), usage.ru_utime, usage.ru_stime, steal)


def synthetic_night(
    work: Path, n_alerts: int, version: str = "4.02", seed: int = 0, per_object: float = 2.5
) -> Path:
    """A synthetic night of real shape (~69 KB per alert, ~15 prv_candidates), made once and reused.

    ``per_object`` is the mean number of alerts per object (:func:`ztfcat.testing.synthetic.make_night`): about
    2.5 on a real night; 1 makes every alert a new object, the history's worst case (nothing to merge).
    """
    tag = "" if per_object == 2.5 else f"_p{per_object:g}"
    path = work / f"n{n_alerts}_v{version}_s{seed}{tag}" / "ztf_public_20180819.tar.gz"
    done = path.with_suffix(".done")
    if not done.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"making {path} ({n_alerts} alerts) ...", file=sys.stderr, flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ztfcat.testing.synthetic",
                str(path),
                "--alerts",
                str(n_alerts),
                "--version",
                version,
                "--seed",
                str(seed),
                "--per-object",
                str(per_object),
            ],
            check=True,
        )
        done.write_text("ok")
    return path


def gzip_baseline(path: Path, steals: list[float] | None = None) -> float:
    """Seconds for ``gzip -dc FILE > /dev/null`` (its host steal appended to ``steals``)."""
    with open(os.devnull, "wb") as sink:
        timed = run_timed(["gzip", "-dc", str(path)], stdout=sink)
    if steals is not None and timed.steal is not None:
        steals.append(timed.steal)
    return timed.seconds


def ztfcat_ingest(
    path: Path, data_dir: Path, database_url: str | None = None, layout: str = "files"
) -> tuple[dict, Timed]:
    """``ztfcat ingest FILE --json`` into a fresh catalog; its report and timing."""
    env = dict(os.environ, ZTFCAT_DATA_DIR=str(data_dir), ZTFCAT_LAYOUT=layout)
    env.pop("ZTFCAT_DATABASE_URL", None)
    if database_url:
        env["ZTFCAT_DATABASE_URL"] = database_url
    timed = run_timed([sys.executable, "-m", "ztfcat.cli.root", "ingest", "--json", str(path)], env=env)
    return json.loads(timed.stdout.strip().splitlines()[-1]), timed


def table(rows: list[tuple], headers: tuple[str, ...]) -> str:
    """A plain aligned text table."""
    cells = [headers, *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@contextmanager
def scratch_postgres(server_url: str | None, name: str) -> Iterator[str | None]:
    """A fresh database ``name`` on the server of ``server_url``, dropped afterwards; None without a server.

    Benchmarks drop and rebuild tables at will, so they never touch the database the URL names (on CI's
    and the developers' server that is the test database): they make their own next to it.
    """
    if not server_url:
        yield None
        return
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    parsed = make_url(server_url)
    connect = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
        "connect_timeout": 10,
    }
    connect = {k: v for k, v in connect.items() if v is not None}

    def drop() -> None:
        with psycopg.connect(**connect, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    drop()
    with psycopg.connect(**connect, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        drop()
