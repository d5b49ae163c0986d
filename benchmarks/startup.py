"""How long the ``ztfcat`` command takes before it does anything: ``--version``, ``--help``, ``alerts -n 1``.

    python benchmarks/startup.py [--runs 7] [--work DIR] [--json]

Each command runs ``--runs`` times in a fresh interpreter (``python -m ztfcat.cli.root``, as the console
script does), on a tiny catalog (one synthetic night of 5 alerts, made once in ``--work``); prints the
median wall time with the min–max, next to the target, and the median CPU time (user + system, from
``wait4``), which a busy machine inflates far less than wall time.  The query command's time is its fixed cost:
one row from a tiny catalog is nothing but start-up, imports, opening the database and printing.
Targets: ``--version`` and ``--help`` under 0.3 s, ``alerts -n 1`` under 0.6 s.  Find what a command
imports with ``python -X importtime -m ztfcat.cli.root --version 2> imports.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TARGETS = {"--version": 0.3, "--help": 0.3, "alerts -n 1": 0.6}


def tiny_catalog(work: Path) -> list[str]:
    """Global options of a one-night, five-alert catalog in ``work`` (made on first use)."""
    data = work / "startup-catalog"
    database = data / "catalog.sqlite"
    if not database.is_file():
        from ztfcat import Catalog
        from ztfcat.testing.synthetic import make_night

        data.mkdir(parents=True, exist_ok=True)
        spec = make_night(work / "ztf_public_20180601.tar.gz", night="20180601", n_alerts=5, seed=1)
        with Catalog(f"sqlite:///{database}", data) as catalog:
            catalog.ingest(spec.path)
    return ["--data-dir", str(data), "--database-url", f"sqlite:///{database}"]


def time_command(argv: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``runs`` fresh runs of ``argv`` (each must succeed)."""
    walls, cpus = [], []
    for _ in range(runs):
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
            _pid, status, usage = os.wait4(proc.pid, 0)
            walls.append(time.perf_counter() - start)
            cpus.append(usage.ru_utime + usage.ru_stime)
            if os.waitstatus_to_exitcode(status) != 0:
                err.seek(0)
                raise SystemExit(f"{' '.join(argv)} failed:\n{err.read().decode()}")
    return walls, cpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (at least 5)")
    parser.add_argument("--work", type=Path, help="where the tiny catalog is kept (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="one JSON line per command instead of a table")
    args = parser.parse_args(argv)
    runs = max(5, args.runs)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZTFCAT_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        catalog = tiny_catalog(work)
        base = [sys.executable, "-m", "ztfcat.cli.root"]
        commands = {
            "--version": base + ["--version"],
            "--help": base + ["--help"],
            "alerts -n 1": base + catalog + ["alerts", "-n", "1"],
        }
        python = statistics.median(time_command([sys.executable, "-c", "pass"], runs, env)[0])
        if not args.json:
            load = os.getloadavg()[0]
            print(
                f"ztfcat start-up, {runs} runs each (bare `python -c pass`: {python:.3f} s; load {load:.1f})"
            )
            print(f"{'command':<14} {'median':>8} {'min-max':>15} {'cpu':>7} {'target':>8}")
        failed = 0
        for name, command in commands.items():
            times, cpus = time_command(command, runs, env)
            median, cpu = statistics.median(times), statistics.median(cpus)
            ok = median < TARGETS[name]
            failed += not ok
            if args.json:
                print(json.dumps({"command": name, "median": median, "min": min(times), "max": max(times),
                                  "cpu_median": cpu, "target": TARGETS[name], "runs": runs}))  # fmt: skip
            else:
                print(
                    f"{name:<14} {median:>7.3f}s {min(times):>6.3f}-{max(times):.3f}s {cpu:>6.3f}s "
                    f"{'<' + str(TARGETS[name]) + 's':>8} {'ok' if ok else 'SLOW'}"
                )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
