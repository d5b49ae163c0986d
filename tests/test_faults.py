"""Faults a user meets: a kill -9 with worker processes alive, a disk that fills, a lock held too long.

Each test fails on the code before issue "Nothing lost, nobody in" and passes now: workers die with
their parent and free the release; a failure is one line naming the release and the reason, and the
release holds nothing afterwards.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.tarballs import snapshot
from ztfcat import Catalog
from ztfcat.errors import IngestError
from ztfcat.ingest import pipeline as ingest
from ztfcat.store.tables import alerts, releases
from ztfcat.testing.synthetic import make_night

SLOW_INGEST = textwrap.dedent(
    """
    import sys, time
    import ztfcat.ingest.history as history
    import ztfcat.ingest.pipeline as ingest
    from ztfcat import Catalog

    url, data_dir, path, phase = sys.argv[1:5]
    history.INLINE_BELOW = 0          # a worker pool even for a small night
    ingest.EARLY_HISTORY_BYTES = 0
    ingest.INLINE_HISTORY = False     # leave every packet's history to the pass this test kills
    original = history.history_rows

    def slow(*args, **kwargs):        # runs in the workers: they are busy when the parent dies
        time.sleep(60)
        return original(*args, **kwargs)

    history.history_rows = slow

    class Pipe:                       # not a regular file: early-history workers start too
        def __init__(self, fh):
            self.fh = fh
            self.name = fh.name
        def read(self, n=-1):
            if phase == "early":
                time.sleep(0.2)       # a slow network: the kill comes during the main pass
            return self.fh.read(min(n, 4096) if n and n > 0 else 4096)
        def readinto(self, b):
            data = self.read(len(b))
            b[: len(data)] = data
            return len(data)

    with open(path, "rb") as fh, Catalog(url, data_dir) as cat:
        cat.ingest(Pipe(fh) if phase == "early" else fh, name=path.rsplit("/", 1)[-1])
    """
)


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        found.update(int(c) for c in children)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("phase", ["history", "early"])
def test_kill_9_leaves_no_worker_and_no_lock(database_url, tmp_path, phase):
    spec = make_night(tmp_path / "ztf_public_20240701.tar.gz", n_alerts=30, seed=41)
    data_dir = tmp_path / "data"
    with Catalog(database_url, data_dir) as cat:
        cat.info()  # the catalog exists before the child starts
    script = tmp_path / "slow_ingest.py"
    script.write_text(SLOW_INGEST)
    child = subprocess.Popen([sys.executable, str(script), database_url, str(data_dir), str(spec.path), phase])
    try:
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while time.monotonic() < deadline:
            with Catalog(database_url, data_dir) as cat, cat.engine.connect() as conn:
                status = conn.execute(select(releases.c.status)).scalar()
            workers = _children(child.pid)
            wanted = "history" if phase == "history" else "ingesting"
            if status == wanted and len(workers) >= 2:
                break
            assert child.poll() is None, "the ingest ended before it could be killed"
            time.sleep(0.1)
        else:
            pytest.fail(f"the ingest never reached its {phase} phase with workers")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "worker processes outlived their parent"
    finally:
        if child.poll() is None:
            child.kill()
    with Catalog(database_url, data_dir) as cat:  # the next run is not blocked, and ends clean
        report = cat.ingest(spec.path)
        assert report.status == "complete" and report.n_alerts == 30
        got = snapshot(cat)
        cat.delete()  # and a clean ingest of the same night gives exactly that
        cat.ingest(spec.path)
        assert got == snapshot(cat)


def test_a_full_disk_fails_the_release_in_one_line_and_keeps_nothing(catalog, tmp_path, monkeypatch):
    spec = make_night(tmp_path / "ztf_public_20240702.tar.gz", n_alerts=20, seed=42)
    from ztfcat.store import blobs

    original = blobs.BlobWriter.write
    calls = [0]

    def write(self, candid, data):
        calls[0] += 1
        if calls[0] > 7:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.data_dir / "alerts"))
        return original(self, candid, data)

    monkeypatch.setattr(blobs.BlobWriter, "write", write)
    with pytest.raises(IngestError) as caught:
        catalog.ingest(spec.path)
    message = str(caught.value)
    assert "\n" not in message and spec.path.name in message and "No space left on device" in message
    with catalog.engine.connect() as conn:
        assert conn.execute(select(releases.c.status)).scalar() == "failed"
        assert conn.execute(select(alerts.c.candid)).first() is None
    monkeypatch.undo()
    assert catalog.ingest(spec.path).n_alerts == 20  # and the next run ingests it whole


def test_a_database_error_is_one_line_naming_the_release(catalog, tmp_path, monkeypatch):
    spec = make_night(tmp_path / "ztf_public_20240703.tar.gz", n_alerts=10, seed=43)
    from sqlalchemy.exc import OperationalError

    def locked(*_args, **_kwargs):
        raise OperationalError("INSERT INTO prv_candidates ...", {}, Exception("database is locked"))

    monkeypatch.setattr(ingest.history, "derive_history", locked)
    with pytest.raises(IngestError) as caught:
        catalog.ingest(spec.path)
    message = str(caught.value)
    assert "\n" not in message and spec.path.name in message and "database is locked" in message
    assert catalog.count() == 0


def test_ztfcat_repair_finishes_an_interrupted_ingest(database_url, tmp_path, monkeypatch):
    """A release a killed ingest left behind is purged and marked failed by `ztfcat repair`, and the
    light curves it touched are exactly those of the releases that remain."""
    from click.testing import CliRunner

    from tests.test_history import Killed, _kill_at_commit
    from ztfcat.cli.root import main

    first = make_night(tmp_path / "ztf_public_20240704.tar.gz", n_alerts=20, seed=44)
    second = make_night(tmp_path / "ztf_public_20240705.tar.gz", n_alerts=20, seed=45)
    data = tmp_path / "data"
    with Catalog(database_url, data) as cat:
        cat.delete()
        cat.ingest(first.path)
        reference = snapshot(cat)
        with monkeypatch.context() as patch:
            _kill_at_commit(patch, cat, 3)  # its release row and first batch are in
            with pytest.raises(Killed):
                cat.ingest(second.path)
    with Catalog(database_url, data) as cat:
        assert cat.release(second.path.name).status == "ingesting"
    result = CliRunner().invoke(main, ["--data-dir", str(data), "--database-url", database_url, "repair"])
    assert result.exit_code == 0, result.output
    with Catalog(database_url, data) as cat:
        assert cat.release(second.path.name).status == "failed"
        got = snapshot(cat)
    got["releases"] = [r for r in got["releases"] if r[0] != second.path.name]
    assert got == reference


HOLD_WRITE_LOCK = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")   # the write lock, as a program with the catalog open would hold it
    print("locked", flush=True)
    sys.stdin.readline()
    conn.rollback()
    """
)


def test_a_catalog_locked_by_another_program_during_the_history_pass_fails_soon(tmp_path, monkeypatch):
    """Another program holds the catalog's write lock while the history workers want to write: the
    ingest ends with one line naming the night after about one busy timeout, not one per queued chunk,
    the night holds nothing, and once the lock is gone the next run ingests it whole."""
    import ztfcat.ingest.history as history
    import ztfcat.store.db as db

    busy_s = 1.0
    monkeypatch.setattr(db, "BUSY_TIMEOUT_S", busy_s)  # the forked workers inherit it
    monkeypatch.setattr(history, "INLINE_BELOW", 0)  # a worker pool even for a small night
    monkeypatch.setattr(history, "CHUNK", 16)  # and many chunks: ~19 for 300 alerts
    monkeypatch.setattr(history, "pool_size", lambda workers=None: 2)
    monkeypatch.setattr(ingest, "EARLY_HISTORY_BYTES", 1 << 40)  # the whole history in the pass locked
    spec = make_night(tmp_path / "ztf_public_20240706.tar.gz", n_alerts=300, seed=46, n_prv=4)
    path = tmp_path / "catalog.sqlite"
    url, data = f"sqlite:///{path}", tmp_path / "data"
    holder: list[subprocess.Popen] = []
    timings: dict[str, float] = {}

    def derive_while_locked(*args, **kwargs):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_WRITE_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        holder.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        timings["start"] = time.monotonic()
        try:
            return original_derive(*args, **kwargs)
        finally:
            timings["end"] = time.monotonic()

    def purge_after_unlocking(*args, **kwargs):
        if holder and holder[0].poll() is None:
            holder[0].communicate("go\n", timeout=30)  # the other program lets go; the purge can write
        return original_purge(*args, **kwargs)

    original_derive, original_purge = history.derive_history, ingest.purge_release
    monkeypatch.setattr(history, "derive_history", derive_while_locked)
    monkeypatch.setattr(ingest, "purge_release", purge_after_unlocking)
    with Catalog(url, data) as cat:
        with pytest.raises(IngestError) as caught:
            cat.ingest(spec.path)
        message = str(caught.value)
        assert "\n" not in message and spec.path.name in message and "database is locked" in message
        waited = timings["end"] - timings["start"]
        # One chunk's wait: the chunks handed to the workers (4) do not wait in turn, nor run the queued ones.
        assert busy_s <= waited < 2.5 * busy_s, waited
        with cat.engine.connect() as conn:
            assert conn.execute(select(releases.c.status)).scalar() == "failed"
            assert conn.execute(select(alerts.c.candid)).first() is None
            got = snapshot(cat)
        assert not any(got[table] for table in ("alerts", "prv_candidates", "fp_hists", "objects"))
        monkeypatch.undo()
        assert cat.ingest(spec.path).n_alerts == 300
        got = snapshot(cat)
    with Catalog(f"sqlite:///{tmp_path / 'clean.sqlite'}", tmp_path / "clean") as clean:
        clean.ingest(spec.path)
        expected = snapshot(clean)
    for table in ("alerts", "prv_candidates", "fp_hists", "objects"):
        assert got[table] == expected[table], table
