"""The benchmark suite runs end to end: ``benchmarks/run.py --quick`` prints a table with every row.

A smoke test, not a measurement: at quick sizes the ratios are dominated by interpreter start-up, so only
the table's shape and the agreement checks (ztfcat and the seed's way must find the same alerts, or
run.py exits non-zero) are asserted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import postgres_url

ROOT = Path(__file__).resolve().parents[1]
INGEST_ROWS = tuple(
    f"ingest {layout} 100 {shape}: {stage} vs gzip -dc"
    for shape in ("2.5/object", "new objects")
    for layout in ("files", "pack")
    for stage in ("alerts + blobs", "complete")
)
ROWS = (
    *INGEST_ROWS,
    "get_alert(raw=True) vs glob over",
    "alert_ids() vs glob every file",
    "iter_alerts(1000) vs fastavro.reader per file",
    "rb > 0.9 in a jd range vs decoding every file",
    'cone_search 10" vs full scan',
)
PG_ROW = "ingest files 100, complete: PostgreSQL vs SQLite"


@pytest.mark.slow
def test_quick_suite_prints_every_row(tmp_path):
    argv = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--work", str(tmp_path)]
    server = postgres_url()
    if server:
        argv += ["--postgres-url", server]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZTFCAT_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("benchmark"))
    assert lines[header].split() == [
        "benchmark",
        "ztfcat",
        "baseline",
        "ratio",
        "target",
        "met?",
        "peak",
        "RSS",
    ]
    body = lines[header + 2 :]
    n = len(INGEST_ROWS)
    expected = (*ROWS[:n], PG_ROW, *ROWS[n:]) if server else ROWS
    assert len(body) == len(expected)
    for label, line in zip(expected, body, strict=True):
        assert line.startswith(label), line
        assert line.rstrip().endswith("MB"), line  # every row states its peak RSS
        assert line.split()[-3] in ("yes", "NO"), line
        if label in INGEST_ROWS or label.startswith("iter_alerts"):
            assert re.search(r"x \[\d+\.\d+-\d+\.\d+\]", line), line  # the ratio's min-max
    stages = lines[:header]
    assert any(line.split()[:1] == ["history"] for line in stages), stages  # CPU per stage, each run
