"""Where an ingest's time goes, per alert: cProfile of the main thread and of the writer thread.

    python benchmarks/profile_ingest.py [--alerts 8000] [--layout pack] [--per-object 2.5]

One in-process ingest of a synthetic night (benchmarks/common.py) into a fresh SQLite catalog, with the
history pass run by one worker in this process so that it is profiled too.  Prints a Markdown table of
microseconds per alert for each part (docs/benchmarks.md, "Where each microsecond per alert goes now").
cProfile inflates Python-level calls: read the proportions, not the absolute values.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_WORK, synthetic_night  # noqa: E402

_READ = "<method 'read' of '_io.BufferedReader' objects>"
_WAIT = "<method 'acquire' of '_thread.lock' objects>"

#: (label, which profile, function predicate on (file, name), cumulative time or own time)
PARTS = (
    ("main pass, main thread: waiting for inflated bytes (pipe read)", "main", lambda f, n: n == _READ, False),
    ("main pass, main thread: waiting for the writer (queue put)", "main", lambda f, n: n == _WAIT, False),
    ("main pass, main thread: tar framing (iter_members, own time)", "main", lambda f, n: n == "iter_members", False),
    ("main pass, main thread: decode to candidate (members_rows)", "main", lambda f, n: n == "members_rows", True),
    ("main pass, main thread: alerts row (_row)", "main", lambda f, n: n == "_row" and f.endswith("pipeline.py"), True),
    ("main pass, writer: packet writes (BlobWriter.write)", "writer", lambda f, n: n == "write" and f.endswith("blobs.py"), True),
    ("main pass, writer: SQLite inserts (executemany)", "writer", lambda f, n: "executemany" in n, False),
    ("main pass, writer: commits", "writer", lambda f, n: "commit' of 'sqlite3" in n, False),
    ("main pass, writer: hpx_index (its astropy import included)", "writer", lambda f, n: n == "hpx_index", True),
    ("main pass, writer: waiting for a batch", "writer", lambda f, n: n == _WAIT, False),
    ("history pass: packet read (read_blob)", "main", lambda f, n: n == "read_blob", True),
    ("history pass: decode with history (AlertDecoder.rows)", "main", lambda f, n: n == "rows" and f.endswith("avro.py"), True),
    ("history pass: merge by key (PointSet.add)", "main", lambda f, n: n == "add" and f.endswith("history.py"), True),
    ("history pass: upserts (insert_points)", "main", lambda f, n: n == "insert_points", True),
    ("history pass, whole (derive_history, one worker)", "main", lambda f, n: n == "derive_history", True),
    ("objects refresh (_refresh_objects)", "main", lambda f, n: n == "_refresh_objects", True),
)  # fmt: skip


def _seconds(stats: pstats.Stats, match, cumulative: bool) -> float:
    return sum(
        (ct if cumulative else tt)
        for (file, _line, name), (_cc, _nc, tt, ct, _callers) in stats.stats.items()  # type: ignore[attr-defined]
        if match(file, name)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=8000)
    parser.add_argument("--layout", choices=["files", "pack"], default="pack")
    parser.add_argument("--per-object", type=float, default=2.5)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()
    night = synthetic_night(args.work, args.alerts, per_object=args.per_object)

    import ztfcat.ingest.pipeline as ingest
    from ztfcat import Catalog
    from ztfcat.ingest import history

    profiles = {"main": cProfile.Profile(), "writer": cProfile.Profile()}
    run = ingest._Writer.run

    def profiled_run(self) -> None:
        profiles["writer"].enable()
        try:
            run(self)
        finally:
            profiles["writer"].disable()

    derive = history.derive_history

    def one_worker(*a, **kw):
        kw["workers"] = 1
        return derive(*a, **kw)

    ingest._Writer.run = profiled_run
    history.derive_history = one_worker
    data = args.work / f"profile-{args.layout}"
    shutil.rmtree(data, ignore_errors=True)
    catalog = Catalog(f"sqlite:///{data / 'catalog.sqlite'}", data, layout=args.layout)
    try:
        profiles["main"].enable()
        report = catalog.ingest(night)
        profiles["main"].disable()
    finally:
        catalog.close()
        shutil.rmtree(data, ignore_errors=True)
    print(f"{report}; main pass {report.seconds_alerts:.2f} s")
    stats = {k: pstats.Stats(p) for k, p in profiles.items()}
    print(f"| where ({args.alerts:,} alerts, {args.per_object:g}/object, {args.layout}) | µs per alert |")
    print("|---|---:|")
    for label, which, match, cumulative in PARTS:
        print(f"| {label} | {1e6 * _seconds(stats[which], match, cumulative) / args.alerts:,.0f} |")


if __name__ == "__main__":
    main()
