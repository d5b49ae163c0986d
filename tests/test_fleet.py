"""Many ingest workers into one PostgreSQL catalog (:mod:`ztfcat.fleet`, issue 16).

The reference is always a single-process ingest of the same nights into a fresh database, compared as
whole-catalog snapshots (:func:`tests.tarballs.snapshot`).  Faults are real: a dask worker process
killed with SIGKILL while its night is half in, a PostgreSQL server restarted under the workers.  A
night is held half-way deterministically by serving its tarball through a FIFO that stops after half
the bytes until the test has struck (:class:`HeldNight`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from tests.pg import fresh_database, postgres_url
from tests.tarballs import differences, snapshot, tar_members, write_tarball
from ztfcat import Catalog
from ztfcat.cli.root import main
from ztfcat.fleet import ingest_sources
from ztfcat.fleet.cluster import dask_client
from ztfcat.fleet.run import task_key
from ztfcat.store.tables import alert_releases, releases
from ztfcat.testing.synthetic import make_archive, make_night

pytest.importorskip("distributed")


@pytest.fixture
def pg():
    """A factory of fresh databases on the shared test server (dropped afterwards)."""
    server = postgres_url()
    if server is None:
        pytest.skip("no PostgreSQL server: set ZTFCAT_TEST_POSTGRES_URL (see .ci/start-postgres)")
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(fresh_database(server))


@pytest.fixture(scope="module")
def nights(tmp_path_factory) -> list[Path]:
    """Five nights that overlap: C holds alerts of A and B, E alerts of A and D (shared objects too)."""
    root = tmp_path_factory.mktemp("nights")
    a = make_night(
        root / "ztf_public_20240601.tar.gz", night="20240601", n_alerts=1500, seed=41, cutouts=False
    )
    b = make_night(
        root / "ztf_public_20240602.tar.gz", night="20240602", n_alerts=300, seed=42, cutouts=False
    )
    d = make_night(
        root / "ztf_public_20240604.tar.gz", night="20240604", n_alerts=200, seed=44, cutouts=False
    )
    a_members, b_members = list(tar_members(a.path).items()), list(tar_members(b.path).items())
    d_members = list(tar_members(d.path).items())
    c = write_tarball(root / "ztf_public_20240603.tar.gz", a_members[100:160] + b_members[50:150])
    e = write_tarball(root / "ztf_public_20240605.tar.gz", d_members[:40] + a_members[500:560])
    return [a.path, b.path, c, d.path, e]


def reference(url: str, data_dir: Path, paths) -> dict:
    """The catalog one process makes of ``paths``, in order (failures recorded as the ingest leaves them)."""
    with Catalog(url, data_dir) as cat:
        for path in paths:
            with contextlib.suppress(Exception):
                cat.ingest(path)
        return snapshot(cat)


class HeldNight(threading.Thread):
    """Serves a tarball to its first reader through a FIFO named as the release, slowly, until
    :meth:`hold`; then nothing more until :meth:`release`.  :meth:`swap` puts the regular file in the
    FIFO's place first, so a redone night reads it whole from disk (the held reader keeps its pipe)."""

    PIECE = 64 << 10

    def __init__(self, tarball: Path, folder: Path) -> None:
        super().__init__(daemon=True)
        folder.mkdir(parents=True, exist_ok=True)
        self.tarball = tarball
        self.path = folder / tarball.name
        os.mkfifo(self.path)
        self.data = tarball.read_bytes()
        self.written = 0
        self.held = threading.Event()
        self.go = threading.Event()
        self.stop = threading.Event()

    def hold(self) -> int:
        """Stop writing; returns how many bytes the reader was given."""
        self.held.set()
        time.sleep(0.1)  # a piece being written lands
        return self.written

    def swap(self) -> None:
        copy = self.path.with_suffix(".copy")
        shutil.copyfile(self.tarball, copy)
        os.replace(copy, self.path)

    def release(self) -> None:
        self.go.set()

    def run(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:  # ENXIO: no reader yet
                assert exc.errno == errno.ENXIO
                if self.stop.wait(0.02):
                    return
        os.set_blocking(fd, True)
        try:
            while self.written < len(self.data) and not self.held.is_set():
                self.written += os.write(fd, self.data[self.written : self.written + self.PIECE])
                time.sleep(0.02)
            while not self.go.wait(0.1) and not self.stop.is_set():
                pass
            view = memoryview(self.data)[self.written :]
            while view:
                view = view[os.write(fd, view) :]
        except BrokenPipeError:
            pass  # the reader was killed
        finally:
            os.close(fd)


def wait_half_in(url: str, name: str, timeout: float = 120) -> int:
    """Poll until the release ``name`` has committed alerts while still ``ingesting``; their number."""
    with Catalog(url, "/nonexistent") as cat:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with cat.engine.connect() as conn:
                row = conn.execute(
                    select(releases.c.status, func.count(alert_releases.c.candid))
                    .select_from(releases)
                    .outerjoin(alert_releases, alert_releases.c.release_id == releases.c.id)
                    .where(releases.c.name == name)
                    .group_by(releases.c.status)
                ).first()
            if row is not None and row.status == "ingesting" and row[1] > 0:
                return row[1]
            time.sleep(0.05)
    raise AssertionError(f"{name} never got half in")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc")
def test_a_spawned_process_peak_is_its_own_not_its_parents():
    """A parent that once held 300 MB spawns a child (as a nanny spawns a dask worker): the child's
    ``ru_maxrss`` carries the parent's peak, :func:`peak_rss` is the child's own."""
    import sys

    child = (
        "import resource; from ztfcat.fleet.tasks import peak_rss; "
        "print(peak_rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10)"
    )
    parent = (
        "import subprocess, sys; block = bytearray(300 << 20); block[::4096] = b'x' * len(block[::4096]); "
        f"del block; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    )
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True).stdout
    own, inherited = map(int, out.split())
    # CPython >= 3.10 spawns with vfork on Linux, so ru_maxrss is the parent's 300 MB peak (what the
    # fleet reported before); a plain fork would carry the parent's RSS at the fork instead
    assert 0 < own < 100 << 20 and own <= inherited, (own, inherited)  # an interpreter and light imports


def test_history_pools_share_the_cores_under_a_cap():
    from ztfcat.fleet.tasks import history_cap
    from ztfcat.ingest.history import pool_size, pool_size_at_most

    cores = os.cpu_count() or 1
    assert pool_size() == cores and pool_size(5) == 5
    with pool_size_at_most(1):
        assert pool_size() == 1 and pool_size(5) == 5  # an explicit size is the caller's
        with pool_size_at_most(cores + 4):
            assert pool_size() == cores  # never more than the cores
        assert pool_size() == 1
    assert pool_size() == cores
    seen = []
    worker = threading.Thread(target=lambda: seen.append(pool_size()))
    with pool_size_at_most(1):
        worker.start()
        worker.join()
    assert seen == [cores]  # a cap is its context's (a dask task's), not the process's
    assert history_cap({"127.0.0.1": 3}) == cores  # not in a dask worker: a lone ingest's pool


def _diff(got: dict, expected: dict) -> dict:
    """The first rows that differ per part, for the failure message."""
    out = {}
    for part in ("releases", "alert_releases", "errors"):
        a, b = set(map(repr, got[part])), set(map(repr, expected[part]))
        out[part] = (sorted(a - b)[:3], sorted(b - a)[:3])
    return out


def _executing(dask_worker) -> list[str]:
    return [str(ts.key) for ts in dask_worker.state.executing]


def _ru_maxrss(dask_worker) -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10


def _peak_rss(dask_worker) -> int:
    from ztfcat.fleet.tasks import peak_rss

    return peak_rss()


#: Issue 16: memory per worker.
MAX_WORKER_BYTES = 300 << 20


def _status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (bytes) of a live process, and its ``Pss`` (bytes: pages shared with
    other processes counted by their share); {} once it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1]) << 10
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1]) << 10
    except (OSError, ValueError):
        return {}
    return out


def _children(pids: set[int]) -> dict[int, int]:
    """Live processes whose parent is one of ``pids``: {pid: parent}."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent in pids:
                out[int(entry)] = parent
    return out


def _is_dask_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"spawn_main" in f.read()  # not multiprocessing's resource tracker
    except OSError:
        return False


class MemorySampler(threading.Thread):
    """Samples, every 0.1 s, the dask worker processes and their children (inflaters, history
    workers) from outside: each process's peak ``VmHWM``, and the peak over time of each worker's
    whole tree in PSS (what it costs the machine, shared pages counted once).  ``getrusage`` in the
    worker would not do: Linux carries the client's own peak into a spawned worker's ``ru_maxrss``."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.workers: set[int] = set()  # the LocalCluster's nannies spawn them from this process
        self.peak: dict[int, int] = {}  # pid -> its VmHWM, last seen
        self.parent: dict[int, int] = {}  # child pid -> its worker
        self.tree_pss: dict[int, int] = {}  # worker pid -> peak of its own + its children's PSS
        self.most_children = 0  # of one worker at once
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.workers.update(p for p in _children({os.getpid()}) if _is_dask_worker(p))
            kids = _children(self.workers)
            self.parent.update(kids)
            for worker in self.workers:
                self.most_children = max(self.most_children, sum(p == worker for p in kids.values()))
            tree = dict.fromkeys(self.workers, 0)
            for pid in [*self.workers, *kids]:
                st = _status(pid)
                if st:
                    self.peak[pid] = max(self.peak.get(pid, 0), st["VmHWM"])
                    tree[kids.get(pid, pid)] += st.get("Pss", 0)
            for pid, pss in tree.items():
                self.tree_pss[pid] = max(self.tree_pss.get(pid, 0), pss)

    def stop(self) -> None:
        self.done.set()
        self.join()

    def summary(self) -> dict:
        mb = 1 << 20
        return {
            "worker VmHWM MB": {p: self.peak.get(p, 0) // mb for p in sorted(self.workers)},
            "child VmHWM MB": {p: v // mb for p, v in sorted(self.peak.items()) if p in self.parent},
            "worker+children PSS MB": {p: v // mb for p, v in sorted(self.tree_pss.items())},
        }


@pytest.mark.slow
@pytest.mark.postgres
def test_three_workers_one_killed_mid_night_give_the_single_process_catalog(pg, nights, tmp_path):
    expected = reference(pg(), tmp_path / "ref", nights)
    url = pg()
    held = HeldNight(nights[0], tmp_path / "fifo")
    held.start()
    sources = [str(held.path), *map(str, nights[1:])]
    outcome: dict = {}
    try:
        with dask_client(workers=3) as client:
            sampler = MemorySampler()
            sampler.start()
            runner = threading.Thread(
                target=lambda: outcome.update(
                    report=ingest_sources(Catalog(url, tmp_path / "data"), sources, client=client)
                )
            )
            runner.start()
            wait_half_in(url, held.path.name)
            given = held.hold()
            key = task_key(held.path.name)
            running = [addr for addr, keys in client.run(_executing).items() if key in keys]
            assert len(running) == 1, running
            victim = client.run(os.getpid)[running[0]]
            os.kill(victim, signal.SIGKILL)
            held.swap()
            held.release()
            runner.join(180)
            assert not runner.is_alive()
            peaks = client.run(_peak_rss)
            inherited = client.run(_ru_maxrss)
            sampler.stop()
    finally:
        held.stop.set()
    report = outcome["report"]
    assert given < len(held.data)  # killed with part of the night in
    assert len(report.results) == 5 and report.failed == [], [str(r) for r in report.results]
    redone = next(r for r in report.results if r.name == held.path.name)
    assert redone.status == "complete" and not redone.worker.endswith(f":{victim}")
    with Catalog(url, tmp_path / "data") as cat:
        got = snapshot(cat)
    assert differences(got, expected) == {}, _diff(got, expected)
    memory = sampler.summary()
    memory["client VmHWM MB"] = _status(os.getpid())["VmHWM"] >> 20
    memory["worker ru_maxrss MB"] = sorted(v >> 20 for v in inherited.values())  # the client's, carried over
    print("memory:", memory, "peak RSS per night MB:", [(r.name, r.peak_rss >> 20) for r in report.results])
    # memory per worker < 300 MB: each worker process's own peak, each of its children's, and the
    # peak of the whole tree counted in PSS (a forked history worker shares most pages with its worker)
    assert 0 < max(peaks.values()) < MAX_WORKER_BYTES, peaks
    assert all(0 < r.peak_rss < MAX_WORKER_BYTES for r in report.results), report.results
    assert victim in sampler.workers and len(sampler.workers) >= 3, memory  # every worker was seen
    assert max(sampler.peak.values()) < MAX_WORKER_BYTES, memory
    assert sampler.parent, memory  # the inflaters at least were sampled
    assert max(sampler.tree_pss.values()) < MAX_WORKER_BYTES, memory
    # three workers share the cores: each night's history pool gets its share (an inflater besides)
    assert sampler.most_children <= 1 + max(1, (os.cpu_count() or 1) // 3), memory


@pytest.mark.slow
@pytest.mark.postgres
def test_cli_ingest_with_two_workers_names_each_failed_night(pg, nights, tmp_path):
    broken = tmp_path / "ztf_public_20240609.tar.gz"
    broken.write_bytes(b"this is no tarball at all " * 40)
    paths = [*nights[:3], broken]
    expected = reference(pg(), tmp_path / "ref", paths)
    url = pg()
    result = CliRunner().invoke(
        main,
        [
            "--database-url",
            url,
            "--data-dir",
            str(tmp_path / "data"),
            "ingest",
            "--workers",
            "2",
            *map(str, paths),
        ],
    )
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert (
        errors[0].startswith("error: ztf_public_20240609.tar.gz: failed: ") and "not a gzip file" in errors[0]
    )
    assert "3 nights done" in result.stderr and "1 failed: ztf_public_20240609.tar.gz" in result.stderr
    assert sum("complete" in line for line in result.stdout.splitlines()) == 3
    with Catalog(url, tmp_path / "data") as cat:
        assert differences(snapshot(cat), expected) == {}
    again = CliRunner().invoke(
        main,
        [
            "--database-url",
            url,
            "--data-dir",
            str(tmp_path / "data"),
            "ingest",
            "--workers",
            "2",
            *map(str, nights[:3]),
        ],
    )
    assert again.exit_code == 0, again.output
    assert "0 nights done" in again.stderr and "3 already complete" in again.stderr


def test_sqlite_catalogs_refuse_workers_in_one_line(tmp_path):
    sqlite = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    for args in (
        ["ingest", "--workers", "2", str(tmp_path / "ztf_public_20240601.tar.gz")],
        ["download", "--dask-scheduler", "tcp://127.0.0.1:1", "2024-06-01"],
    ):
        result = CliRunner().invoke(
            main, ["--database-url", sqlite, "--data-dir", str(tmp_path / "d"), *args]
        )
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert "need a PostgreSQL catalog" in lines[0] and "one writer at a time" in lines[0]
    assert not (tmp_path / "catalog.sqlite").exists()  # refused before anything was opened


def test_both_options_at_once_are_a_usage_error(tmp_path):
    result = CliRunner().invoke(
        main, ["ingest", "--workers", "2", "--dask-scheduler", "tcp://x:1", "a.tar.gz"]
    )
    assert result.exit_code == 2 and "not both" in result.output


# -- a PostgreSQL server restarted mid-ingest: a private server, the shared one is other tests' -------

PG_BIN = Path(os.environ.get("ZTFCAT_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_server():
    """A throw-away PostgreSQL server of this test's own, on a free port: (url, restart)."""
    if not (PG_BIN / "initdb").is_file():
        pytest.skip(f"no PostgreSQL binaries in {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="ztfcat-fleet-pg-", dir="/tmp"))
    root.chmod(0o755)
    data = root / "data"
    as_owner: list[str] = []
    if os.getuid() == 0:  # initdb refuses root: the cluster belongs to `postgres`
        if subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode != 0:
            pytest.skip("running as root and there is no postgres user")
        as_owner = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = _free_port()

    def ctl(*args: str) -> None:
        subprocess.run(
            [*as_owner, str(PG_BIN / "pg_ctl"), "-D", str(data), *args], check=True, capture_output=True
        )

    subprocess.run(
        [
            *as_owner,
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-instructions",
        ],
        check=True,
        capture_output=True,
    )
    with open(data / "postgresql.conf", "a") as conf:  # root may write it: the file stays postgres's
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 60\n"
        )
    ctl("-l", str(root / "log"), "-w", "-t", "60", "start")
    try:
        yield (
            f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
            lambda: ctl("-l", str(root / "log"), "-m", "fast", "-w", "-t", "60", "restart"),
        )
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_server_restart_mid_ingest_is_redone_to_a_clean_catalog(private_server, nights, tmp_path):
    server, restart = private_server
    chosen = nights[:3]
    with fresh_database(server) as ref_url, fresh_database(server) as url:
        expected = reference(ref_url, tmp_path / "ref", chosen)
        held = HeldNight(chosen[0], tmp_path / "fifo")
        held.start()
        outcome: dict = {}
        try:
            catalog = Catalog(url, tmp_path / "data")
            catalog.engine  # noqa: B018 - the schema, made before the workers start
            runner = threading.Thread(
                target=lambda: outcome.update(
                    report=ingest_sources(catalog, [str(held.path), *map(str, chosen[1:])], workers=2)
                )
            )
            runner.start()
            wait_half_in(url, held.path.name)
            assert held.hold() < len(held.data)
            restart()
            held.swap()
            held.release()
            runner.join(180)
            assert not runner.is_alive()
        finally:
            held.stop.set()
        report = outcome["report"]
        assert report.failed == [], [str(r) for r in report.results]
        redone = next(r for r in report.results if r.name == held.path.name)
        assert redone.attempts >= 2
        with Catalog(url, tmp_path / "data") as cat:
            assert differences(snapshot(cat), expected) == {}


# -- download --workers from the project's local archive server --------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_download_with_two_workers_equals_a_serial_download(pg, tmp_path):
    from ztfcat.testing.archive_server import ArchiveServer

    root = make_archive(
        tmp_path / "archive", [("20180601", 30), ("20180602", 0), ("20180603", 50), ("20180604", 20)]
    )
    with ArchiveServer(root) as server:

        def download(url: str, data: Path, *extra: str):
            args = ["--database-url", url, "--data-dir", str(data), "--archive-url", server.url, "download"]
            return CliRunner().invoke(main, [*args, "--from", "2018-06-01", "--to", "2018-06-04", *extra])

        serial = pg()
        assert download(serial, tmp_path / "ref").exit_code == 0
        with Catalog(serial, tmp_path / "ref") as cat:
            expected = snapshot(cat)
        url = pg()
        result = download(url, tmp_path / "data", "--workers", "2")
        assert result.exit_code == 0, result.output
        assert "4 nights done (100 alerts)" in result.stderr and "0 failed" in result.stderr
        with Catalog(url, tmp_path / "data") as cat:
            assert differences(snapshot(cat), expected) == {}
            assert {r["status"] for r in cat.releases()} == {"complete"}
            assert list((tmp_path / "data" / "downloads").glob("*")) == []  # no .part left behind


# -- claims and repair under concurrency (no dask) -------------------------------------------------


def test_repair_leaves_a_release_that_finished_while_it_waited_for_its_lock(
    database_url, tmp_path, monkeypatch
):
    """A worker's repair reads the unfinished releases, then takes each one's lock: a live ingest in its
    history pass may finish (``complete``) and let go in between; repair must not purge it then."""
    from sqlalchemy import update

    from ztfcat.ingest import pipeline as ingest

    night = make_night(tmp_path / "ztf_public_20240610.tar.gz", night="20240610", n_alerts=30, seed=5).path
    with Catalog(database_url, tmp_path / "data") as cat:
        cat.ingest(night)
        before = snapshot(cat)
        with cat.engine.begin() as conn:  # as the repair saw it: the ingest still in its history pass
            conn.execute(update(releases).where(releases.c.name == night.name).values(status="history"))
        real = ingest.release_lock

        @contextlib.contextmanager
        def finished_meanwhile(engine, data_dir, name):
            with engine.begin() as conn:
                conn.execute(update(releases).where(releases.c.name == name).values(status="complete"))
            with real(engine, data_dir, name):
                yield

        monkeypatch.setattr(ingest, "release_lock", finished_meanwhile)
        cat.repair()
        assert differences(snapshot(cat), before) == {}


@pytest.mark.postgres
def test_a_claim_waits_for_its_holder_and_a_dead_holder_lets_go(pg):
    """The claim blocks a second worker while the first holds it, and the server drops it with the
    first one's connection (as when a worker is killed)."""
    from ztfcat.errors import FleetError
    from ztfcat.fleet.claims import claim_key, night_claim

    url = pg()
    with Catalog(url, "/nonexistent") as cat:
        holder = cat.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (claim_key("ztf_public_20240611.tar.gz"),))
        started = time.monotonic()
        claimed = night_claim(cat.engine, "ztf_public_20240611.tar.gz", timeout_s=1)
        with (
            pytest.raises(FleetError, match="ztf_public_20240611.tar.gz: another worker has held its claim"),
            claimed,
        ):
            pass
        assert time.monotonic() - started >= 0.9
        with night_claim(cat.engine, "ztf_public_20240612.tar.gz", timeout_s=1):
            pass  # another night's claim is free
        holder.invalidate()  # the holder's connection ends, as a killed worker's does
        with night_claim(cat.engine, "ztf_public_20240611.tar.gz", timeout_s=5):
            pass
