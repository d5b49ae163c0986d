"""Several ingests at once into one catalog (parallel workers): nothing lost, nothing stored twice."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest
from sqlalchemy import select

from tests.tarballs import tar_members, write_tarball
from ztfcat import Catalog, ZtfcatError
from ztfcat.ingest import pipeline
from ztfcat.ingest.pipeline import _set, release_lock
from ztfcat.store.tables import alert_releases, alerts
from ztfcat.testing.synthetic import make_night

WORKER = """
import sys
from ztfcat import Catalog
report = Catalog(sys.argv[1], sys.argv[2], layout="files").ingest(sys.argv[3])  # one file per copy, counted below
print(report.n_alerts, report.n_duplicates)
"""


@pytest.mark.slow
def test_parallel_workers_sharing_alerts_store_each_once(database_url, tmp_path):
    a = make_night(tmp_path / "a.tar.gz", night="20181001", n_alerts=600, seed=41, n_prv=4)
    b = make_night(tmp_path / "b.tar.gz", night="20181002", n_alerts=600, seed=42, n_prv=4)
    members_a, members_b = tar_members(a.path), tar_members(b.path)
    shared = dict(list(members_a.items())[::3])  # a third of night A's alerts are also in both others
    nights = [
        write_tarball(tmp_path / "ztf_public_20181001.tar.gz", list(members_a.items())),
        write_tarball(tmp_path / "ztf_public_20181002.tar.gz", [*members_b.items(), *shared.items()]),
        write_tarball(tmp_path / "ztf_public_20181003.tar.gz", list(reversed(shared.items()))),
    ]
    catalog = Catalog(database_url, tmp_path / "data")
    assert catalog.count() == 0  # schema made before the workers start
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, database_url, str(tmp_path / "data"), str(night)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for night in nights
    ]
    counts = [tuple(map(int, w.communicate()[0].split())) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    expected = set(a.candids) | set(b.candids)
    assert set(catalog.alert_ids()) == expected and len(catalog.alert_ids()) == len(expected)
    # each release accounts for every alert of its tarball; none is repeated within a tarball
    assert sorted(n for n, _ in counts) == sorted([len(members_a), len(members_b) + len(shared), len(shared)])
    assert sum(d for _, d in counts) == 0
    with catalog.engine.connect() as conn:
        rows = conn.execute(select(alerts.c.candid, alerts.c.blob_path)).all()
        copies = conn.execute(select(alert_releases.c.blob_path)).scalars().all()
    on_disk = {
        p.relative_to(catalog.data_dir).as_posix() for p in (catalog.data_dir / "alerts").rglob("*.avro")
    }
    assert on_disk == set(copies) and len(copies) == sum(n for n, _ in counts)  # no orphan, no loss
    assert {path for _, path in rows} <= on_disk
    # the row reads the copy of the first holding release by name: night A's, whoever came first
    assert all(path.startswith("alerts/ztf_public_20181001/") for c, path in rows if c in set(a.candids))
    for candid, _ in rows[:50]:
        assert catalog.get_alert(candid)["candid"] == candid
    catalog.close()


def test_one_release_is_ingested_by_one_process_at_a_time(catalog, tmp_path):
    spec = make_night(tmp_path / "ztf_public_20181004.tar.gz", n_alerts=3, seed=43)
    lock = release_lock(catalog.engine, catalog.data_dir, spec.path.name)  # as another process would
    with lock, pytest.raises(ZtfcatError, match="being ingested by another"):
        catalog.ingest(spec.path)
    assert catalog.ingest(spec.path).n_alerts == 3
    lock = release_lock(catalog.engine, catalog.data_dir, spec.path.name)
    with lock, pytest.raises(ZtfcatError, match="being ingested by another"):
        catalog.delete(names=[spec.path.name])
    assert catalog.count() == 3


def test_an_older_ztfcat_locking_in_the_data_dir_is_met_too(catalog, tmp_path):
    """A rolling upgrade: an older ztfcat on the same data directory locks in ``<data dir>/locks``
    whatever the database (a SQLite file's locks are now beside it); a new one must meet that lock."""
    import fcntl
    import os

    spec = make_night(tmp_path / "ztf_public_20181012.tar.gz", n_alerts=3, seed=51)
    catalog.ingest(spec.path)
    (catalog.data_dir / "locks").mkdir(exist_ok=True)
    handle = os.open(catalog.data_dir / "locks" / "ztf_public_20181012.lock", os.O_RDONLY | os.O_CREAT)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old process's lock, as it took it
        for attempt in (lambda: catalog.ingest(spec.path, force=True), lambda: catalog.delete()):
            with pytest.raises(ZtfcatError, match="being ingested by another"):
                attempt()
        assert sorted(catalog.alert_ids()) == sorted(spec.candids)
    finally:
        os.close(handle)
    assert catalog.ingest(spec.path, force=True).status == "complete"


MANY_LOCKS = """
import resource, sys
from ztfcat import Catalog, ZtfcatError
from ztfcat.ingest.pipeline import release_locks
catalog = Catalog(sys.argv[1], sys.argv[2])
names = [f"ztf_public_2019{i:04d}.tar.gz" for i in range(300)]
resource.setrlimit(resource.RLIMIT_NOFILE, (200, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
with release_locks(catalog.engine, catalog.data_dir, names):
    print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))  # a hard limit cannot be raised again: a child
try:
    with release_locks(catalog.engine, catalog.data_dir, names):
        pass
except ZtfcatError as exc:
    print(exc)
"""


def test_locking_more_releases_than_the_open_file_limit_allows(catalog):
    """Deleting every night of a large catalog holds one lock file per night (two for a SQLite file):
    the soft limit on open files is raised as far as the hard one allows, else a one-line error."""
    done = subprocess.run(
        [sys.executable, "-c", MANY_LOCKS, catalog.database_url, str(catalog.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    raised, message = done.stdout.splitlines()
    assert int(raised) >= 300 + 256
    assert "ztf_public_2019" in message and "open-file limit (ulimit -n)" in message


def test_a_release_lock_holds_for_every_data_dir_of_one_catalog(catalog, tmp_path):
    """Workers with data directories of their own on one catalog (the fleet's machines) meet the same
    release locks: one's repair never purges a night another is still ingesting.  CI once lost a whole
    night this way: both workers said ``complete`` and the second night held no alert.  (Their packets
    are on a shared store: a data directory of its own holds only its own local packets.)"""
    spec = make_night(tmp_path / "ztf_public_20181005.tar.gz", n_alerts=4, seed=44)
    with Catalog(catalog.database_url, catalog.data_dir, blobs=str(tmp_path / "shared")) as worker:
        worker.ingest(spec.path)
    release_id = catalog.release(spec.path.name).id
    _set(catalog.engine, release_id, status="ingesting")  # as a live ingest leaves it until its end
    url = catalog.database_url
    if url.startswith("sqlite:///"):  # and through a symlink: another name of the same file
        (tmp_path / "alias.sqlite").symlink_to(catalog.engine.url.database)
        url = f"sqlite:///{tmp_path / 'alias.sqlite'}"
    other = Catalog(url, tmp_path / "elsewhere")
    try:
        with release_lock(catalog.engine, catalog.data_dir, spec.path.name):  # the live ingest's lock
            other.repair()
            assert catalog.release(spec.path.name).status == "ingesting"  # left to its owner
            assert _stored(other) == sorted(spec.candids)  # its rows too (queries hide them meanwhile)
            with pytest.raises(ZtfcatError, match="being ingested by another"):
                other.ingest(spec.path, force=True)
            with pytest.raises(ZtfcatError, match="being ingested by another"):
                other.delete(names=[spec.path.name])
        other.repair()  # the owner is gone: now it is a killed run's leftovers
        assert catalog.release(spec.path.name).status == "failed" and _stored(other) == []
    finally:
        other.close()


def test_an_ingest_whose_release_was_taken_from_it_is_never_complete(catalog, tmp_path, monkeypatch):
    """The second guard, for a lock that failed anyway: the release's status moves on only from the
    status the ingest itself set, so a night purged under it fails instead of ending complete."""
    spec = make_night(tmp_path / "ztf_public_20181006.tar.gz", n_alerts=4, seed=45)
    real = pipeline._backfill

    def purged_meanwhile(engine):  # another process's repair, between the history pass and the end
        row = catalog.release(spec.path.name)
        pipeline.purge_release(engine, catalog.data_dir, row.id, row.name)
        _set(engine, row.id, status="failed", error="interrupted")
        real(engine)

    monkeypatch.setattr(pipeline, "_backfill", purged_meanwhile)
    with pytest.raises(ZtfcatError, match="ztf_public_20181006.tar.gz: another process changed the release"):
        catalog.ingest(spec.path)
    assert catalog.release(spec.path.name).status == "failed" and _stored(catalog) == []
    monkeypatch.setattr(pipeline, "_backfill", real)
    assert catalog.ingest(spec.path).status == "complete" and sorted(catalog.alert_ids()) == sorted(
        spec.candids
    )


def test_an_ingest_never_touches_a_release_another_process_began_again(catalog, tmp_path, monkeypatch):
    """Taken and begun again (a new start, its own rows): the first ingest fails and leaves the new
    owner's release, rows and status exactly as they were, instead of purging or completing them."""
    spec = make_night(tmp_path / "ztf_public_20181007.tar.gz", n_alerts=4, seed=46)
    real = pipeline._backfill
    seen = {}

    def begun_again(engine):  # another process's ingest of the night, now in its history pass
        row = catalog.release(spec.path.name)
        _set(engine, row.id, status="history", started_at=pipeline._now())
        seen["row"] = catalog.release(spec.path.name)
        real(engine)

    monkeypatch.setattr(pipeline, "_backfill", begun_again)
    with pytest.raises(ZtfcatError, match="another process changed the release"):
        catalog.ingest(spec.path)
    assert catalog.release(spec.path.name) == seen["row"]  # the new owner's row, as it left it
    assert _stored(catalog) == sorted(spec.candids)  # and its rows


def test_deleting_everything_keeps_a_release_begun_meanwhile(catalog, tmp_path, monkeypatch):
    """``delete()`` locks the releases it read; one another process begins in between is not among
    them, so it must survive whole rather than be emptied with the tables."""
    first = make_night(tmp_path / "ztf_public_20181008.tar.gz", n_alerts=3, seed=47)
    later = make_night(tmp_path / "ztf_public_20181009.tar.gz", n_alerts=4, seed=48)
    catalog.ingest(first.path)
    real = pipeline.release_locks
    other = Catalog(catalog.database_url, catalog.data_dir)  # another process on the same machine

    @contextlib.contextmanager
    def meanwhile(engine, data_dir, names):
        if names == [first.path.name]:  # the delete's: another worker's night begins first
            other.ingest(later.path)
        with real(engine, data_dir, names):
            yield

    monkeypatch.setattr(pipeline, "release_locks", meanwhile)
    try:
        assert catalog.delete() == 1
        assert [r["name"] for r in catalog.releases()] == [later.path.name]
        assert catalog.release(later.path.name).status == "complete"
        assert sorted(catalog.alert_ids()) == sorted(later.candids)
        alone = Catalog(f"sqlite:///{tmp_path / 'alone.sqlite'}", tmp_path / "alone")
        alone.ingest(later.path)  # the independent reference: that night in a catalog of its own
        for object_id in sorted({other.get_alert(c)["objectId"] for c in later.candids}):
            ours, theirs = catalog.lightcurve(object_id), alone.lightcurve(object_id)
            assert ours.colnames == theirs.colnames and len(ours) > 0
            assert [tuple(row) for row in ours] == [tuple(row) for row in theirs], object_id
        alone.close()
    finally:
        other.close()


def test_the_lock_folder_is_one_for_every_spelling_of_a_sqlite_file(tmp_path):
    from sqlalchemy import create_engine

    file = tmp_path / "cat.sqlite"
    (tmp_path / "link.sqlite").symlink_to(file)
    spellings = [
        f"sqlite:///{file}",
        f"sqlite:///{tmp_path}/./sub/../cat.sqlite",
        f"sqlite:///{tmp_path / 'link.sqlite'}",
        f"sqlite:///file:{file}?uri=true",
        f"sqlite:///file:{file}?mode=rw&uri=true",
    ]
    folders = {
        pipeline.lock_folder(create_engine(url), tmp_path / f"data{i}") for i, url in enumerate(spellings)
    }
    assert folders == {tmp_path / "cat.sqlite-locks"}
    assert pipeline.lock_folder(create_engine("sqlite://"), tmp_path / "d") == tmp_path / "d" / "locks"


def _stored(catalog: Catalog) -> list[int]:
    """The candids in the alerts table, hidden or not."""
    with catalog.engine.connect() as conn:
        return sorted(conn.execute(select(alerts.c.candid)).scalars())
