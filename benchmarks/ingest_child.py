"""``ztfcat ingest --json FILE`` in this process, with each stage's wall time and CPU written to a file.

    python benchmarks/ingest_child.py FILE STAGES.json

Run by :mod:`ingest` as the timed child, with ``PYTHONPATH`` naming the code under test (this branch, or
an older checkout for a before/after comparison), so it only relies on what every version has: the
``ztfcat ingest`` command and :func:`ztfcat.ingest.history.derive_history`, which the ingest calls once
between its main pass (alerts and packets in) and the end (objects refreshed, release complete).  The
marks are ``time.perf_counter()`` and user/system CPU of this process and its reaped children (the
history pass's worker processes are reaped before ``derive_history`` returns).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _usage() -> tuple[float, float, float]:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), own.ru_utime + kids.ru_utime, own.ru_stime + kids.ru_stime


def main() -> None:
    path, stages = sys.argv[1], sys.argv[2]
    marks = {"start": _usage()}
    from ztfcat.cli.root import main as cli
    from ztfcat.ingest import history

    derive = history.derive_history

    def timed(*args, **kwargs):
        marks["history_start"] = _usage()
        try:
            return derive(*args, **kwargs)
        finally:
            marks["history_end"] = _usage()

    history.derive_history = timed
    try:
        cli.main(args=["ingest", "--json", path], prog_name="ztfcat", standalone_mode=False)
    finally:
        marks["end"] = _usage()
        with open(stages, "w") as out:
            json.dump(marks, out)


if __name__ == "__main__":
    main()
