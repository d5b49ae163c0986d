"""Ingest speed against ``gzip -dc`` on the same synthetic night, alternating runs, with the spread.

    python benchmarks/ingest.py [--alerts 20000] [--repeat 3] [--layout files|pack] [--per-object 2.5]
                                [--database-url URL] [--code LABEL=PATH ...]

Each round runs ``gzip -dc FILE > /dev/null`` and then ``ztfcat ingest FILE`` into a fresh catalog (once
per ``--code``, in turn), so a machine that slows down slows both sides of a pair; each ratio is that of
one round, and the table gives the median over ``--repeat`` rounds with its min-max.  The ratios the
issues set as targets: alerts and blobs in the catalog (the main pass) >= 1.2x gzip -dc (files layout;
>= 1.6x with pack), the complete catalog with its lossless history >= 0.7x (>= 0.8x with pack) on a
night of ~2.5 alerts per object, >= 0.5x on a night where every alert is a new object
(``--per-object 1``); peak RSS < 300 MB.  Ratios, never absolute pass/fail times.

Each stage's CPU per alert, user and system, comes from the child's own marks
(:mod:`ingest_child`: ``getrusage`` of itself and its reaped children where the history pass starts and
ends) and its ``wait4`` total: *main* is everything up to the history pass (interpreter start and
imports included: part of the user's wait), *history* the history pass, *objects* what follows (the
``objects`` refresh, marking the release complete).  ``--code before=/path/to/old/checkout`` times
another version of ztfcat (its directory goes first on ``PYTHONPATH``) in the same rounds.  The last
column is the share of the machine's CPU the hypervisor gave to other guests (``steal`` in
``/proc/stat``) during each round's ``gzip -dc`` and ingest: a busy host shows there rather than as a
different result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import DEFAULT_WORK, gzip_baseline, run_timed, synthetic_night, table  # noqa: E402

STAGES = ("main", "history", "objects")


@dataclass
class Run:
    """One timed ingest: wall seconds per stage, CPU seconds (user, system) per stage, peak RSS."""

    gzip: float
    main: float
    total: float
    cpu: dict[str, tuple[float, float]]
    peak_rss_mb: float
    steal: float | None = None  # host steal during the ingest (common.Timed.steal)
    gzip_steal: float | None = None  # and during this round's gzip -dc


@dataclass
class Spread:
    """Median and range of one quantity over the rounds."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def __format__(self, spec: str) -> str:
        spec = spec or ".2f"
        return f"{self.median:{spec}} [{self.low:{spec}}-{self.high:{spec}}]"


@dataclass
class Result:
    """Every round of one ingest configuration for one version of the code."""

    alerts: int
    layout: str
    per_object: float
    database: str
    code: str
    runs: list[Run] = field(default_factory=list)

    def spread(self, fn) -> Spread:
        return Spread.of([fn(r) for r in self.runs])

    @property
    def gzip_rate(self) -> Spread:
        return self.spread(lambda r: self.alerts / r.gzip)

    @property
    def main_rate(self) -> Spread:
        return self.spread(lambda r: self.alerts / r.main)

    @property
    def total_rate(self) -> Spread:
        return self.spread(lambda r: self.alerts / r.total)

    @property
    def main_ratio(self) -> Spread:
        return self.spread(lambda r: r.gzip / r.main)

    @property
    def total_ratio(self) -> Spread:
        return self.spread(lambda r: r.gzip / r.total)

    @property
    def peak_rss_mb(self) -> float:
        return max(r.peak_rss_mb for r in self.runs)

    def cpu_us(self, stage: str, which: int) -> Spread:
        """User (0) or system (1) CPU of one stage, in microseconds per alert."""
        return self.spread(lambda r: 1e6 * r.cpu[stage][which] / self.alerts)

    def wall_us(self, stage: str) -> Spread:
        """Wall time of one stage, in microseconds per alert."""
        return self.spread(lambda r: 1e6 * _stage_wall(r, stage) / self.alerts)

    def steal_text(self) -> str:
        """The host's steal during the rounds' gzip -dc and ingests, percent (see ``common.Timed.steal``):
        above a few percent the host was busy, and the run is not one to compare with a quiet hour's."""
        ours = [100 * r.steal for r in self.runs if r.steal is not None]
        theirs = [100 * r.gzip_steal for r in self.runs if r.gzip_steal is not None]
        if not ours or not theirs:
            return "n/a"
        return f"{Spread.of(theirs):.0f} | {Spread.of(ours):.0f}"

    @property
    def label(self) -> str:
        shape = "new objects" if self.per_object == 1 else f"{self.per_object:g} alerts/object"
        return f"{self.alerts:,} alerts, {shape}, {self.layout}, {self.database}, {self.code}"


def _stage_wall(run: Run, stage: str) -> float:
    if stage == "main":
        return run.main
    history, objects = run.cpu["wall"]
    return history if stage == "history" else objects


def ingest_once(
    night: Path, data_dir: Path, database_url: str | None, layout: str, pythonpath: str | None
) -> tuple[dict, Run]:
    """One ``ztfcat ingest`` of ``night`` into a fresh catalog in a child process; its report and timing."""
    env = dict(os.environ, ZTFCAT_DATA_DIR=str(data_dir), ZTFCAT_LAYOUT=layout)
    env.pop("ZTFCAT_DATABASE_URL", None)
    if database_url:
        env["ZTFCAT_DATABASE_URL"] = database_url
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.NamedTemporaryFile(suffix=".json") as stages:
        timed = run_timed([sys.executable, str(HERE / "ingest_child.py"), str(night), stages.name], env=env)
        marks = json.loads(Path(stages.name).read_text())
    report = json.loads(timed.stdout.strip().splitlines()[-1])
    start, h0, h1, end = (marks[k] for k in ("start", "history_start", "history_end", "end"))
    history = (h1[1] - h0[1], h1[2] - h0[2])
    objects = (end[1] - h1[1], end[2] - h1[2])
    main = (timed.user - history[0] - objects[0], timed.system - history[1] - objects[1])
    cpu = {"main": main, "history": history, "objects": objects, "wall": (h1[0] - h0[0], end[0] - h1[0])}
    # The main pass's wall time is the whole wait but the history pass and what follows it.
    main_wall = timed.seconds - (end[0] - h0[0])
    return report, Run(0.0, main_wall, timed.seconds, cpu, timed.peak_rss_mb, timed.steal)


def measure(
    alerts: int,
    repeat: int,
    layout: str,
    database_url: str | None,
    work: Path,
    per_object: float = 2.5,
    codes: dict[str, str | None] | None = None,
) -> dict[str, Result]:
    """``repeat`` rounds of gzip -dc then one ingest per version in ``codes`` (label -> PYTHONPATH)."""
    codes = codes or {"ztfcat": None}
    night = synthetic_night(work, alerts, per_object=per_object)
    database = "postgresql" if database_url else "sqlite"
    results = {label: Result(alerts, layout, per_object, database, label) for label in codes}
    for i in range(repeat):
        steals: list[float] = []
        gz = gzip_baseline(night, steals)
        for label, pythonpath in codes.items():
            data = work / f"catalog-{layout}-{i}"
            shutil.rmtree(data, ignore_errors=True)
            if database_url:
                _reset_postgres(database_url)
            report, run = ingest_once(night, data, database_url, layout, pythonpath)
            if report["n_alerts"] != alerts:
                raise SystemExit(f"{label}: ingested {report['n_alerts']} of {alerts} alerts: {report}")
            run.gzip, run.gzip_steal = gz, (steals or [None])[0]
            results[label].runs.append(run)
            shutil.rmtree(data, ignore_errors=True)
    return results


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine

    from ztfcat.store.tables import metadata

    engine = create_engine(url)
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    engine.dispose()


def targets(layout: str, per_object: float) -> tuple[float, float]:
    """The issue's targets (main pass, complete catalog) as multiples of gzip -dc's rate."""
    main, total = (1.6, 0.8) if layout == "pack" else (1.2, 0.7)
    return main, (0.5 if per_object == 1 else total)


def stage_table(results: list[Result]) -> str:
    """CPU (user + system) and wall time per alert of each stage, medians with their range."""
    rows = []
    for r in results:
        for stage in STAGES:
            rows.append(
                (
                    r.label if stage == "main" else "",
                    stage,
                    f"{r.wall_us(stage):.0f}",
                    f"{r.cpu_us(stage, 0):.0f}",
                    f"{r.cpu_us(stage, 1):.0f}",
                    r.steal_text() if stage == "main" else "",
                )
            )
    headers = ("ingest run", "stage", "wall us/alert", "user us/alert", "system us/alert")
    return table(rows, (*headers, "host steal %: gzip | ingest"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layout", choices=["files", "pack"], default="files")
    parser.add_argument("--per-object", type=float, default=2.5, help="mean alerts per object (1: all new)")
    parser.add_argument("--database-url", help="PostgreSQL URL (its tables are dropped!); default SQLite")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument(
        "--code",
        action="append",
        metavar="LABEL=PATH",
        help="time the ztfcat found at PATH too (repeatable; the code of this checkout is 'ztfcat')",
    )
    args = parser.parse_args()
    codes: dict[str, str | None] = {"ztfcat": None}
    for item in args.code or ():
        label, _, path = item.partition("=")
        codes[label] = path
    results = measure(
        args.alerts, args.repeat, args.layout, args.database_url, args.work, args.per_object, codes
    )
    target_main, target_total = targets(args.layout, args.per_object)
    first = next(iter(results.values()))
    rows = [("gzip -dc FILE > /dev/null", "", f"{first.gzip_rate:.0f}", "1.00", "")]
    for label, r in results.items():
        rows.append(
            (label, "alerts + blobs", f"{r.main_rate:.0f}", f"{r.main_ratio:.2f}", f">= {target_main}")
        )
        rows.append(
            (label, "complete catalog", f"{r.total_rate:.0f}", f"{r.total_ratio:.2f}", f">= {target_total}")
        )
    print(table(rows, ("code", "stage", "alerts/s", "x gzip -dc", "target")))
    print(
        f"{args.alerts} alerts ({args.per_object:g} per object), {args.layout} layout, {first.database}; "
        f"median [min-max] of {args.repeat} alternating rounds; peak RSS "
        + ", ".join(f"{label} {r.peak_rss_mb:.0f} MB" for label, r in results.items())
        + " (target < 300)"
    )
    print()
    print(stage_table(list(results.values())))


if __name__ == "__main__":
    main()
