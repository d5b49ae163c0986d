"""Catalog creation is atomic and safe under concurrency; odd catalogs give one-line errors (issue 10: 6, 8).

Children are forked (``multiprocessing`` "fork"), so a kill can land within milliseconds of the start
of creation; each run is compared with a catalog created undisturbed (the reference schema).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text

from ztfcat import Catalog
from ztfcat.cli.root import main
from ztfcat.errors import CatalogUnreadableError, SchemaOutOfDateError, SchemaTooNewError
from ztfcat.store import db as dbmod
from ztfcat.store.tables import HEAD_REVISION, metadata
from ztfcat.testing.synthetic import make_night

ROOT = Path(__file__).resolve().parents[1]
# forkserver, not fork: a child forked from this process would inherit SQLite's per-process lock
# bookkeeping for files earlier tests opened, which a reused inode number can turn into "disk I/O error".
FORK = multiprocessing.get_context("forkserver")
FORK.set_forkserver_preload(["ztfcat.catalog", "ztfcat.ingest.pipeline"])


def schema(url: str) -> dict:
    """Tables with their columns and indexes, views, and the revision: what 'the full schema' means."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            tables = {
                name: (
                    sorted(c["name"] for c in insp.get_columns(name)),
                    sorted(ix["name"] for ix in insp.get_indexes(name)),
                )
                for name in insp.get_table_names()
            }
            revision = (
                conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                if "alembic_version" in tables
                else None
            )
            return {"tables": tables, "views": sorted(insp.get_view_names()), "revision": revision}
    finally:
        engine.dispose()


def reset(url: str) -> None:
    """Empty the database again: a new SQLite file, or an empty public schema on PostgreSQL."""
    if url.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
        return
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def reference(database_url, tmp_path):
    """The full schema, as a catalog created undisturbed has it; the database is emptied again after."""
    _open(database_url, tmp_path / "ref")
    expected = schema(database_url)
    reset(database_url)
    assert expected["revision"] == HEAD_REVISION and set(metadata.tables) <= set(expected["tables"])
    assert expected["views"] == ["lightcurves"]
    return expected


def _open(url, data_dir, ready=None) -> int:
    if ready is not None:
        ready.set()
    with Catalog(url, data_dir) as catalog:
        return catalog.count()


# -- atomic creation ----------------------------------------------------------------------------------------
def test_a_new_catalog_is_stamped_and_alembic_agrees(database_url, tmp_path, reference):
    _open(database_url, tmp_path / "d")
    assert schema(database_url) == reference
    from alembic.migration import MigrationContext

    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == HEAD_REVISION
    engine.dispose()
    result = CliRunner().invoke(
        main, ["--database-url", database_url, "--data-dir", str(tmp_path), "db", "upgrade"]
    )
    assert result.exit_code == 0, result.output
    assert f"is at revision {HEAD_REVISION}" in result.output
    assert schema(database_url) == reference  # a no-op


def test_a_failure_between_create_and_stamp_leaves_nothing(database_url, tmp_path, reference, monkeypatch):
    def crash(conn, revision):
        raise RuntimeError("crash between create and stamp")

    monkeypatch.setattr(dbmod, "_stamp", crash)
    with pytest.raises(RuntimeError, match="between create and stamp"):
        _open(database_url, tmp_path / "d")
    assert schema(database_url) == {"tables": {}, "views": [], "revision": None}
    monkeypatch.undo()
    assert _open(database_url, tmp_path / "d") == 0
    assert schema(database_url) == reference


@pytest.mark.slow
def test_killed_at_many_instants_the_next_open_works(database_url, tmp_path, reference):
    """A child creating the catalog is SIGKILLed at instants spread over the creation; then we open it."""
    data = tmp_path / "d"
    ready = FORK.Event()
    child = FORK.Process(target=_open, args=(database_url, data, ready))
    child.start()
    assert ready.wait(30)
    started = time.monotonic()
    child.join(60)
    duration = time.monotonic() - started  # an undisturbed creation by a child like the ones killed
    assert child.exitcode == 0
    reset(database_url)
    rng = random.Random(10)
    killed_midway = 0
    runs = 12 if database_url.startswith("sqlite") else 6  # a PostgreSQL creation takes ~10x longer
    for i in range(runs):
        ready = FORK.Event()
        child = FORK.Process(target=_open, args=(database_url, data, ready))
        child.start()
        assert ready.wait(30)
        time.sleep(duration * (i + rng.random()) / runs)  # spread over the whole creation
        with contextlib.suppress(ProcessLookupError):  # it finished first: fine, the open is then checked
            os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        if child.exitcode == -signal.SIGKILL:
            killed_midway += 1
        partial = schema(database_url)
        assert partial["revision"] in (None, HEAD_REVISION)
        if partial["revision"] is None:  # nothing of a half-made catalog is left behind
            assert partial["tables"] == {} and partial["views"] == [], partial
        assert _open(database_url, data) == 0  # the next open works...
        assert schema(database_url) == reference  # ...and gives the full schema
        reset(database_url)
    print(f"{killed_midway} of {runs} kills landed during a {duration:.3f} s creation")
    assert killed_midway >= runs // 3, f"only {killed_midway} of {runs} kills landed before the end"


def _first_open(url, data_dir, barrier, results):
    try:
        barrier.wait(30)
        _open(url, data_dir)
        results.put("ok")
    except BaseException as exc:  # reported to the parent, which asserts on it
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_three_concurrent_first_opens_all_succeed(database_url, tmp_path, reference):
    for _round in range(6 if database_url.startswith("sqlite") else 3):
        barrier, results = FORK.Barrier(3), FORK.Queue()
        children = [
            FORK.Process(target=_first_open, args=(database_url, tmp_path / "d", barrier, results))
            for _ in range(3)
        ]
        for child in children:
            child.start()
        outcomes = [results.get(timeout=60) for _ in children]
        for child in children:
            child.join(30)
        assert outcomes == ["ok"] * 3
        assert schema(database_url) == reference
        reset(database_url)


def _first_ingest(url, data_dir, tarball, barrier, results):
    try:
        barrier.wait(30)
        with Catalog(url, data_dir) as catalog:
            report = catalog.ingest(tarball)
        results.put(("ok", report.n_alerts))
    except BaseException as exc:
        results.put((f"{type(exc).__name__}: {exc}", 0))


@pytest.mark.empty_database
@pytest.mark.slow
def test_two_first_ingests_at_once(database_url, tmp_path):
    nights = [
        make_night(tmp_path / f"ztf_public_2018081{d}.tar.gz", night=f"2018081{d}", n_alerts=10, seed=d)
        for d in (8, 9)
    ]
    barrier, results = FORK.Barrier(2), FORK.Queue()
    children = [
        FORK.Process(target=_first_ingest, args=(database_url, tmp_path / "d", n.path, barrier, results))
        for n in nights
    ]
    for child in children:
        child.start()
    outcomes = sorted(results.get(timeout=120) for _ in children)
    for child in children:
        child.join(30)
    assert outcomes == [("ok", 10), ("ok", 10)]
    with Catalog(database_url, tmp_path / "d") as catalog:
        assert catalog.count() == 20
        _names, rows = catalog.sql("SELECT key, value FROM catalog_settings")
        token = (tmp_path / "d" / "packets-home").read_text().strip()
        assert dict(rows) == {"layout": "pack", "packets_home": token}  # one home for the shared dir


def test_remembering_the_layout_twice_is_an_upsert(catalog):
    catalog._remember_layout("pack")
    catalog._remember_layout("files")
    assert catalog.sql("SELECT key, value FROM catalog_settings")[1] == [("layout", "files")]


# -- catalogs left by older or newer code --------------------------------------------------------------------
def _drop(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def test_an_unstamped_catalog_is_repaired_by_db_upgrade(database_url, tmp_path, reference):
    spec = make_night(tmp_path / "ztf_public_20180819.tar.gz", night="20180819", n_alerts=8, seed=3)
    with Catalog(database_url, tmp_path / "d") as catalog:
        catalog.ingest(spec.path)
    _drop(database_url, "DROP TABLE alembic_version")  # the old code, killed before its stamp
    with pytest.raises(SchemaOutOfDateError, match="ztfcat db upgrade"):
        _open(database_url, tmp_path / "d")
    args = ["--database-url", database_url, "--data-dir", str(tmp_path / "d")]
    result = CliRunner().invoke(main, [*args, "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert schema(database_url) == reference
    with Catalog(database_url, tmp_path / "d") as catalog:
        assert sorted(catalog.alert_ids()) == sorted(spec.candids)


def test_a_partly_created_unstamped_catalog_is_completed(database_url, tmp_path, reference):
    _open(database_url, tmp_path / "d")
    index = next(ix.name for ix in metadata.tables["alerts"].indexes)
    _drop(
        database_url,
        "DROP TABLE alembic_version",
        "DROP VIEW lightcurves",
        "DROP TABLE fp_hists",
        f'DROP INDEX "{index}"',
    )
    engine = dbmod.make_engine(database_url)
    assert dbmod.upgrade(engine) == HEAD_REVISION
    engine.dispose()
    assert schema(database_url) == reference


@pytest.mark.empty_database
def test_unstamped_tables_that_are_not_ours_are_refused(database_url, tmp_path):
    _drop(database_url, "CREATE TABLE alerts (something_else INTEGER)")
    engine = dbmod.make_engine(database_url)
    with pytest.raises(SchemaOutOfDateError, match="cannot be stamped"):
        dbmod.upgrade(engine)
    engine.dispose()
    assert schema(database_url)["revision"] is None


def test_a_catalog_from_a_newer_ztfcat(database_url, tmp_path):
    _open(database_url, tmp_path / "d")
    _drop(database_url, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaTooNewError, match="made by a newer ztfcat .*upgrade ztfcat"):
        _open(database_url, tmp_path / "d")
    args = ["--database-url", database_url, "--data-dir", str(tmp_path / "d")]
    for command in (["info"], ["alerts"], ["db", "upgrade"]):
        result = CliRunner().invoke(main, [*args, *command])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "made by a newer ztfcat" in lines[0], result.output
        assert "db upgrade" not in lines[0]
    assert schema(database_url)["revision"] == "9999"


# -- files that are not catalogs ------------------------------------------------------------------------------
def _real_catalog(tmp_path) -> Path:
    spec = make_night(tmp_path / "ztf_public_20180819.tar.gz", night="20180819", n_alerts=30, seed=5)
    with Catalog(None, tmp_path / "real") as catalog:
        catalog.ingest(spec.path)
    path = tmp_path / "real" / "catalog.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


def _cli_one_line_error(data_dir: Path, *command: str) -> str:
    result = CliRunner().invoke(main, ["--data-dir", str(data_dir), *command])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "corrupt pages", "another kind of file"])
def test_damaged_sqlite_files_give_one_line(tmp_path, damage):
    real = _real_catalog(tmp_path)
    data = tmp_path / "damaged"
    data.mkdir()
    target = data / "catalog.sqlite"
    blob = real.read_bytes()
    if damage == "garbage":
        target.write_bytes(b"this is not a database\n" * 100)
    elif damage == "truncated":
        target.write_bytes(blob[: len(blob) // 2])
    elif damage == "corrupt pages":
        rng = random.Random(1)
        target.write_bytes(blob[:4096] + bytes(rng.getrandbits(8) for _ in range(len(blob) - 4096)))
    else:
        shutil.copy(tmp_path / "ztf_public_20180819.tar.gz", target)
    before = target.read_bytes()
    with pytest.raises(CatalogUnreadableError, match=str(target)):
        _open(None, data)
    for command in (["info"], ["alerts"]):
        line = _cli_one_line_error(data, *command)
        assert str(target) in line, line
    assert target.read_bytes() == before  # refused, never "repaired" into something else


def test_a_zero_byte_file_is_a_new_empty_catalog(tmp_path):
    """SQLite defines an empty file as an empty database; a second process opening a new catalog sees
    exactly that, so it must work, and it gives the full schema."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "catalog.sqlite").write_bytes(b"")
    assert _open(None, tmp_path / "d") == 0
    assert schema(f"sqlite:///{tmp_path / 'd' / 'catalog.sqlite'}")["revision"] == HEAD_REVISION


def _read_only_run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI with ``folder`` read-only: a read-only bind mount as root (chmod does not stop
    root), chmod otherwise."""
    cli = [sys.executable, "-m", "ztfcat.cli.root", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            return subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
        finally:
            folder.chmod(0o755)
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("running as root without unshare: cannot make a read-only folder")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    probe = subprocess.run([unshare, "-m", "sh", "-c", script, str(folder), "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root and cannot bind-mount read-only: {probe.stderr.decode().strip()}")
    return subprocess.run(
        [unshare, "-m", "sh", "-c", script, str(folder), *cli],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
@pytest.mark.parametrize("state", ["existing catalog", "empty folder"])
def test_a_read_only_data_dir_gives_one_line(tmp_path, state):
    data = tmp_path / "ro"
    if state == "existing catalog":
        real = _real_catalog(tmp_path)
        shutil.copytree(real.parent, data)
    else:
        data.mkdir()
    for command in (["info"], ["alerts"]):
        result = _read_only_run(data, "--data-dir", str(data), *command)
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert str(data / "catalog.sqlite") in lines[0] and "not writable" in lines[0], lines[0]
