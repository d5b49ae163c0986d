"""Listing cache, download-verify-ingest and every fault, against a real local archive server.

Each fault test ends by comparing the catalog with one made by a clean ingest of the same tarball
(:func:`tests.tarballs.snapshot`): nothing lost, nothing duplicated, whatever happened on the way.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import threading
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

import ztfcat
from tests.tarballs import snapshot, tar_members
from ztfcat.errors import ChecksumMismatchError, DownloadError, InvalidNightError, NotFoundError
from ztfcat.mirror import archive
from ztfcat.mirror.archive import RemoteFile, merge_listing, parse_night, plan_recent
from ztfcat.sources.http import ArchiveClient
from ztfcat.store.tables import alerts, releases, remote_files
from ztfcat.testing.archive_server import ArchiveServer
from ztfcat.testing.synthetic import make_archive, make_night

N1, N2, N3 = (f"ztf_public_2018060{d}.tar.gz" for d in (1, 2, 3))
ODD = {
    "ztf_public_20200211_programid3.tar": b"",
    "ztf_20200219_programid1.tar.tar": b"",
    "VALIDATE": b"ok\n",
    "VALIDATE.out": b"",
}


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory) -> Path:
    """Three nights (12 alerts, empty, 20 alerts) and the odd files the real archive has."""
    root = make_archive(
        tmp_path_factory.mktemp("archive"), [("20180601", 12), ("20180602", 0), ("20180603", 20)]
    )
    (root / "MD5SUMS").unlink()  # the server computes one that lists every file added here
    for name, data in ODD.items():
        (root / name).write_bytes(data)
    return root


@pytest.fixture
def root(archive_root, tmp_path) -> Path:
    """A copy a test may change."""
    return Path(shutil.copytree(archive_root, tmp_path / "archive"))


@pytest.fixture
def server(archive_root):
    with ArchiveServer(archive_root) as srv:
        yield srv


@pytest.fixture
def client(server):
    with ArchiveClient(server.url, retries=3, backoff=0.01, timeout=(5, 5)) as made:
        yield made


@pytest.fixture
def cat(catalog, server):
    """The ``catalog`` fixture (SQLite, PostgreSQL) pointed at the local archive."""
    catalog.archive_url = server.url
    return catalog


def clean_snapshot(catalog, tarball: Path) -> dict:
    """What the catalog holds after ingesting ``tarball`` again from disk, cleanly."""
    catalog.ingest(tarball, force=True)
    return snapshot(catalog)


def candids_of(tarball: Path) -> list[int]:
    return sorted(int(Path(name).stem) for name in tar_members(tarball) if name.endswith(".avro"))


def alerts_of(catalog, name: str) -> list[int]:
    with catalog.engine.connect() as conn:
        return sorted(
            conn.execute(
                select(alerts.c.candid)
                .join(releases, releases.c.id == alerts.c.release_id)
                .where(releases.c.name == name)
            ).scalars()
        )


def gets(server: ArchiveServer, name: str) -> list[str | None]:
    """The Range header of each GET of ``name``."""
    return [rng for _m, _p, rng in server.requests_for(name, "GET")]


# --- pure -------------------------------------------------------------------------------------------


def test_merge_listing_asks_only_about_new_or_changed_files():
    url = "http://h/a/".__add__
    names = [
        N1,
        N2,
        "MD5SUMS",
        "VALIDATE",
        "ztf_public_20200211_programid3.tar",
        "ztf_public_20180631.tar.gz",
    ]
    md5s = {N1: "a" * 32, N2: "b" * 32, N3: "c" * 32, "ztf_public_20180604_programid3.tar.gz": "d" * 32}
    cached = {
        N1: RemoteFile(N1, date(2018, 6, 1), "public", 100, "a" * 32, url(N1)),
        N2: RemoteFile(N2, date(2018, 6, 2), "public", 44, "0" * 32, url(N2)),  # MD5 changed since
    }
    files, to_head = merge_listing(names, md5s, cached, url)
    assert [f.name for f in files] == [N1, N2, N3, "ztf_public_20180604_programid3.tar.gz"]
    assert to_head == [N2, N3, "ztf_public_20180604_programid3.tar.gz"]
    assert files[0].size == 100 and files[1].size is None and files[3].kind == "programid3"
    assert files[2].md5 == "c" * 32 and files[2].url == "http://h/a/" + N3


def test_plan_recent_newest_first_skipping_complete():
    def rf(day: int, kind: str = "public") -> RemoteFile:
        suffix = "_programid3" if kind != "public" else ""
        name = f"ztf_public_201806{day:02d}{suffix}.tar.gz"
        return RemoteFile(name, date(2018, 6, day), kind, 1, "0" * 32, name)

    files = [rf(1), rf(2), rf(3), rf(3, "programid3"), rf(4), rf(5)]
    names = lambda plan: [f.name[11:19] + ("p3" if f.kind != "public" else "") for f in plan]  # noqa: E731
    statuses = {files[4].name: "complete", files[1].name: "failed", files[2].name: "ingesting"}
    assert names(plan_recent(files, statuses, 3)) == ["20180605", "20180603", "20180603p3"]
    assert names(plan_recent(files, statuses, None)) == [
        "20180605",
        "20180603",
        "20180603p3",
        "20180602",
        "20180601",
    ]
    assert names(plan_recent(files, statuses, None, stop_on_exist=True)) == ["20180605"]
    assert plan_recent(files, statuses, 0) == []
    assert plan_recent([], {}, 5) == []


def test_parse_night():
    assert parse_night("2018-06-26") == parse_night("20180626") == date(2018, 6, 26)
    for bad in ("2018-06-31", "2018-13-01", "yesterday", "2018-6-1"):
        with pytest.raises(InvalidNightError, match="not a night"):
            parse_night(bad)


# --- the listing ------------------------------------------------------------------------------------


def test_listing_is_cached_and_a_refresh_heads_only_new_files(catalog, root, tmp_path):
    with ArchiveServer(root) as srv, ArchiveClient(srv.url, retries=1, backoff=0.01) as client:
        catalog.archive_url = srv.url
        srv.faults.missing.add(N2)  # listed, but 404: kept without a size, asked again next time
        files = archive.cached_listing(catalog, client=client)
        assert [f.name for f in files] == [N1, N2, N3]  # odd entries are not releases
        sizes = {f.name: f.size for f in files}
        assert sizes == {N1: (root / N1).stat().st_size, N2: None, N3: (root / N3).stat().st_size}
        heads = sorted(p.rsplit("/", 1)[1] for m, p, _ in srv.requests if m == "HEAD")
        assert heads == [N1, N2, N3]

        srv.requests.clear()
        assert archive.cached_listing(catalog, client=client) == files  # from the catalog only
        assert srv.requests == []

        srv.faults.missing.clear()
        make_night(root / "ztf_public_20180604.tar.gz", night="20180604", n_alerts=3, seed=7)
        (root / "ztf_public_20180604_programid3.tar.gz").write_bytes((root / N2).read_bytes())
        files = archive.cached_listing(catalog, refresh=True, client=client)
        heads = sorted(p.rsplit("/", 1)[1] for m, p, _ in srv.requests if m == "HEAD")
        assert heads == [N2, "ztf_public_20180604.tar.gz", "ztf_public_20180604_programid3.tar.gz"]
        assert all(f.size == (root / f.name).stat().st_size for f in files)
        assert files[-1].kind == "programid3" and files[-1].night == date(2018, 6, 4)
        md5 = hashlib.md5((root / N3).read_bytes()).hexdigest()
        assert {f.name: f.md5 for f in files}[N3] == md5

        srv.requests.clear()
        archive.cached_listing(catalog, refresh=True, client=client)
        assert [m for m, _p, _r in srv.requests] == ["GET", "GET"]  # page and MD5SUMS, no HEAD

        table = archive.listing_table(catalog)
        assert table.colnames == ["file", "night", "kind", "size", "md5", "url", "status", "in_catalog"]
        assert list(table["file"])[:3] == [N1, N2, N3] and not any(table["in_catalog"])
        assert table["url"][0] == srv.url + N1
        names, sizes = archive.remote_md5_table(catalog, refresh=False)
        assert names == list(table["file"]) and sizes == list(table["size"])
    with catalog.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(remote_files)).scalar_one() == 5


def test_listing_of_another_archive_is_not_mixed_in(cat, client, server):
    archive.cached_listing(cat, client=client)
    cat.archive_url = "http://127.0.0.1:9/elsewhere/"
    with pytest.raises(DownloadError):  # nothing cached for that archive, and nothing listens there
        archive.cached_listing(cat, client=ArchiveClient(cat.archive_url, retries=0, timeout=(1, 1)))


# --- the seed's calls ---------------------------------------------------------------------------------


def test_seed_snippets_as_written(server, archive_root, database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("ZTFCAT_ARCHIVE_URL", server.url)
    monkeypatch.setenv("ZTFCAT_DATA_DIR", str(tmp_path / "seed"))
    monkeypatch.setenv("ZTFCAT_DATABASE_URL", database_url)
    import ztfcat as ztfa

    file_names, file_sizes = ztfa.get_remote_md5_table()
    assert file_names == [N1, N2, N3]
    assert file_sizes == [(archive_root / n).stat().st_size for n in file_names]

    report = ztfa.download_data_date(year=2018, month=6, day=3)
    assert report.status == "complete" and report.n_alerts == 20

    reports = ztfa.download_recent_data(max_downloads=1)  # 06-03 is complete: the next newest
    assert [(r.release, r.n_alerts) for r in reports] == [(N2, 0)]

    catalog = ztfa.default_catalog()
    assert sorted(ztfa.get_local_alert_list()) == candids_of(archive_root / N3)
    assert not list((catalog.data_dir / "downloads").iterdir())  # .part files gone once verified
    ztfa.delete_local_data()
    assert ztfa.get_local_alert_list() == []
    assert len(catalog.releases()) == 0
    assert not [p for p in (catalog.data_dir / "alerts").rglob("*") if p.is_file()]  # either layout
    catalog.close()


# --- downloads ------------------------------------------------------------------------------------------


def test_download_night_streams_verifies_and_keeps_nothing_but_the_catalog(cat, client, server, archive_root):
    report = archive.download_night(cat, 2018, 6, 3, client=client)
    assert (report.status, report.n_alerts) == ("complete", 20)
    assert report.md5 == hashlib.md5((archive_root / N3).read_bytes()).hexdigest()
    assert alerts_of(cat, N3) == candids_of(archive_root / N3)
    assert list(archive.downloads_dir(cat).iterdir()) == []
    assert gets(server, N3) == [None]
    assert snapshot(cat) == clean_snapshot(cat, archive_root / N3)

    server.requests.clear()
    again = archive.download_night(cat, 2018, 6, 3, client=client)
    assert again.already_complete and again.n_alerts == 20
    assert server.requests == []  # complete: not even a listing


def test_keep_tarballs_then_force_reingests_from_disk(cat, client, server, archive_root):
    seen = []
    archive.download_night(cat, 2018, 6, 1, client=client, keep_tarballs=True, progress=seen.append)
    kept = archive.downloads_dir(cat) / N1
    assert kept.read_bytes() == (archive_root / N1).read_bytes()
    assert seen and seen[-1].bytes_done == kept.stat().st_size and seen[-1].alerts == 12
    server.requests.clear()
    report = archive.download_night(cat, 2018, 6, 1, client=client, force=True)
    assert report.n_alerts == 12 and gets(server, N1) == []  # read from the kept file
    kept.write_bytes(kept.read_bytes() + b"\0")  # changed on disk (gzip ignores trailing zeros)
    with pytest.raises(ChecksumMismatchError, match="MD5 of the kept tarball"):
        archive.download_night(cat, 2018, 6, 1, client=client, force=True)
    assert cat.release(N1).status == "failed" and alerts_of(cat, N1) == []
    assert not kept.exists()
    report = archive.download_night(cat, 2018, 6, 1, client=client, keep_tarballs=True)
    assert report.n_alerts == 12 and len(gets(server, N1)) == 1 and kept.exists()


def test_dropped_connections_resume_with_range_and_change_nothing(cat, client, server, archive_root):
    server.faults.drop_after[N3] = 300_000
    server.faults.drop_times = 2
    report = archive.download_night(cat, 2018, 6, 3, client=client)
    assert report.n_alerts == 20
    ranges = gets(server, N3)
    assert ranges[0] is None and ranges[1:] == ["bytes=300000-", "bytes=600000-"]
    assert alerts_of(cat, N3) == candids_of(archive_root / N3)
    assert snapshot(cat) == clean_snapshot(cat, archive_root / N3)


def test_a_reset_at_an_odd_byte_resumes_there_and_changes_nothing(cat, client, server, archive_root):
    """A TCP reset mid-chunk: the resume asks for the very next byte, and the catalog is a clean one."""
    cut = (archive_root / N3).stat().st_size // 2 + 12_345
    server.faults.drop_after[N3] = cut
    server.faults.drop_reset = True
    report = archive.download_night(cat, 2018, 6, 3, client=client)
    assert report.n_alerts == 20
    assert gets(server, N3) == [None, f"bytes={cut}-"]
    assert snapshot(cat) == clean_snapshot(cat, archive_root / N3)


def test_a_stalled_download_fails_keeps_its_bytes_and_the_rerun_resumes(cat, server, archive_root):
    data = (archive_root / N3).read_bytes()
    cut = len(data) // 2 + 12_345
    server.faults.stall_after[N3] = cut
    server.faults.stall_times = 100
    with (
        ArchiveClient(server.url, retries=1, backoff=0.01, timeout=(5, 0.3)) as client,
        pytest.raises(DownloadError) as info,
    ):
        archive.download_night(cat, 2018, 6, 3, client=client)
    message = str(info.value)
    assert message.startswith(f"{N3}: {cut} of {len(data)} bytes received from {server.url}{N3}")
    assert "no byte for 0.3 s" in message and "\n" not in message
    assert cat.release(N3).status == "failed" and alerts_of(cat, N3) == []
    part = archive.downloads_dir(cat) / f"{N3}.part"
    assert part.read_bytes() == data[:cut]  # every byte received, none more

    server.faults.stall_after.clear()
    with ArchiveClient(server.url, backoff=0.01) as client:
        report = archive.download_night(cat, 2018, 6, 3, client=client)
    assert report.n_alerts == 20 and gets(server, N3)[-1] == f"bytes={cut}-"
    assert not part.exists()
    assert snapshot(cat) == clean_snapshot(cat, archive_root / N3)


def test_user_interrupt_then_rerun_resumes_and_changes_nothing(catalog, root):
    name = "ztf_public_20180604.tar.gz"
    spec = make_night(root / name, night="20180604", n_alerts=60, seed=4, keep_records=False)
    assert spec.size > 2_500_000  # the download thread reads 1 MB at a time: several progress calls
    fired = []

    def interrupt(state):
        if not fired and 0 < state.bytes_done < spec.size:
            fired.append(state.bytes_done)
            # Ctrl-C: a real SIGINT to the main thread (as the kernel delivers it), so a blocking read
            # there is interrupted, unlike _thread.interrupt_main's simulated signal
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    with ArchiveServer(root) as srv, ArchiveClient(srv.url, backoff=0.01) as client:
        catalog.archive_url = srv.url
        srv.faults.rate_limit_bps = spec.size / 1.5
        with pytest.raises(KeyboardInterrupt):
            archive.download_night(catalog, 2018, 6, 4, client=client, progress=interrupt)
        part = archive.downloads_dir(catalog) / f"{name}.part"
        have = part.stat().st_size
        assert 0 < have < spec.size
        assert part.read_bytes() == spec.path.read_bytes()[:have]
        assert catalog.release(name).status == "failed" and alerts_of(catalog, name) == []

        srv.faults.rate_limit_bps = None
        report = archive.download_night(catalog, 2018, 6, 4, client=client)
        assert report.n_alerts == 60
        assert gets(srv, name)[-1] == f"bytes={have}-"  # only the rest was downloaded
    assert not part.exists()
    assert alerts_of(catalog, name) == sorted(spec.candids)
    assert snapshot(catalog) == clean_snapshot(catalog, spec.path)


def test_part_file_of_a_killed_run_is_replayed(cat, client, server, archive_root):
    data = (archive_root / N3).read_bytes()
    part = archive.downloads_dir(cat) / f"{N3}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:250_000])
    report = archive.download_night(cat, 2018, 6, 3, client=client)
    assert report.n_alerts == 20 and gets(server, N3) == ["bytes=250000-"]
    assert snapshot(cat) == clean_snapshot(cat, archive_root / N3)


def test_wrong_md5_fails_the_release_and_leaves_nothing(cat, client, server, archive_root):
    archive.download_night(cat, 2018, 6, 1, client=client)
    before = snapshot(cat)
    server.faults.wrong_md5.add(N3)
    listed = archive.release_for_night(cat, date(2018, 6, 3), client=client).md5
    actual = hashlib.md5((archive_root / N3).read_bytes()).hexdigest()
    assert listed != actual
    with pytest.raises(ChecksumMismatchError) as caught:
        archive.download_night(cat, 2018, 6, 3, client=client)
    for needed in (N3, listed, actual):
        assert needed in str(caught.value)
    row = cat.release(N3)
    assert row.status == "failed" and row.n_alerts == 0
    assert listed in row.error and actual in row.error
    assert alerts_of(cat, N3) == []
    assert not (cat.data_dir / "alerts" / "ztf_public_20180603").exists()
    assert not (archive.downloads_dir(cat) / f"{N3}.part").exists()
    after = snapshot(cat)
    after["releases"] = [r for r in after["releases"] if r[0] != N3]
    assert after == before  # the other release untouched

    server.faults.wrong_md5.clear()  # the archive fixed its manifest: a retry succeeds
    assert archive.download_recent(cat, max_downloads=1, client=client)[0].release == N3
    assert alerts_of(cat, N3) == candids_of(archive_root / N3)


def test_missing_night_is_not_found_by_date(cat, client, server):
    server.faults.missing.add(N3)  # listed in MD5SUMS, but 404
    with pytest.raises(NotFoundError, match="no release for 2018-06-03"):
        archive.download_night(cat, 2018, 6, 3, client=client)
    with pytest.raises(NotFoundError, match="no release for 2018-06-10"):
        archive.download_night(cat, 2018, 6, 10, client=client)
    assert len(cat.releases()) == 0


def test_503_then_ok(cat, client, server, archive_root):
    server.faults.fail_first[N1] = 2
    report = archive.download_night(cat, 2018, 6, 1, client=client)
    assert report.n_alerts == 12 and len(gets(server, N1)) == 3
    assert alerts_of(cat, N1) == candids_of(archive_root / N1)


def test_invalid_date_makes_no_request(cat, client, server, monkeypatch):
    with pytest.raises(InvalidNightError, match="2018-6-31"):
        archive.download_night(cat, 2018, 6, 31, client=client)
    monkeypatch.setenv("ZTFCAT_ARCHIVE_URL", server.url)
    monkeypatch.setenv("ZTFCAT_DATA_DIR", str(cat.data_dir.parent / "seed"))
    with pytest.raises(InvalidNightError):
        ztfcat.download_data_date(year=2018, month=2, day=30)
    assert server.requests == []


def test_empty_nights_are_complete_releases(catalog, root):
    (root / "ztf_public_20180605.tar.gz").write_bytes(b"")  # a 0-byte night, as the archive has
    with ArchiveServer(root) as srv, ArchiveClient(srv.url, backoff=0.01) as client:
        catalog.archive_url = srv.url
        for day in (2, 5):
            report = archive.download_night(catalog, 2018, 6, day, client=client)
            assert (report.status, report.n_alerts, report.n_errors) == ("complete", 0, 0)
    assert catalog.count() == 0
    assert {r["name"]: r["status"] for r in catalog.releases()} == {
        N2: "complete",
        "ztf_public_20180605.tar.gz": "complete",
    }


def test_download_recent_skips_complete_stops_and_counts(cat, client, server):
    archive.download_night(cat, 2018, 6, 1, client=client)
    first = archive.download_recent(cat, max_downloads=1, client=client)
    assert [r.release for r in first] == [N3]
    assert archive.download_recent(cat, max_downloads=5, stop_on_exist=True, client=client) == []
    server.requests.clear()
    rest = archive.download_recent(cat, max_downloads=5, client=client)
    assert [r.release for r in rest] == [N2]  # 06-03 and 06-01 complete: skipped, not fetched
    assert gets(server, N1) == gets(server, N3) == []
    assert archive.download_recent(cat, max_downloads=None, client=client) == []


def test_keep_going_then_retry_then_delete_one_night(cat, client, server, archive_root):
    server.faults.wrong_md5.add(N3)
    with pytest.raises(DownloadError, match=f"1 of 3 releases failed: {N3}"):
        archive.download_recent(cat, max_downloads=None, keep_going=True, client=client)
    assert archive.local_statuses(cat) == {N1: "complete", N2: "complete", N3: "failed"}
    before = snapshot(cat)

    server.faults.wrong_md5.clear()
    assert [r.release for r in archive.download_recent(cat, max_downloads=5, client=client)] == [N3]
    assert cat.count() == 32 and alerts_of(cat, N3) == candids_of(archive_root / N3)
    assert archive.listing_table(cat)["in_catalog"].tolist() == [True, True, True]

    assert cat.delete(date(2018, 6, 3)) == 1
    assert alerts_of(cat, N3) == [] and cat.count() == 12
    assert not (cat.data_dir / "alerts" / "ztf_public_20180603").exists()
    after = snapshot(cat)
    before["releases"] = [r for r in before["releases"] if r[0] != N3]
    assert after == before  # the other nights exactly as they were
    assert archive.listing_table(cat)["in_catalog"].tolist() == [True, True, False]


def test_the_catalog_holds_the_mirror_calls(cat, archive_root):
    """Downloads are Catalog methods like every other call (the seed's module calls go through them)."""
    table = cat.remote_releases(refresh=True)
    assert list(table["file"]) == [f"ztf_public_2018060{d}.tar.gz" for d in (1, 2, 3)]
    assert not any(table["in_catalog"])
    report = cat.download_night(2018, 6, 3)
    assert report.status == "complete"
    assert alerts_of(cat, "ztf_public_20180603.tar.gz") == candids_of(
        archive_root / "ztf_public_20180603.tar.gz"
    )
    newest = cat.download_recent(2)
    assert [r.release for r in newest] == ["ztf_public_20180602.tar.gz", "ztf_public_20180601.tar.gz"]
    assert list(cat.remote_releases()["in_catalog"]) == [True, True, True]
    assert cat.remove_downloads() == 0  # nothing kept: downloads stream into the catalog


# --- what the CLI asks for: plans, filtered listings, deletes with their downloads ----------------


def test_plan_download_by_nights_range_and_recent(cat, client, server):
    archive.download_night(cat, 2018, 6, 1, client=client)
    plan = archive.plan_download(cat, nights=["2018-06-03", "20180610"], client=client)
    assert [f.name for f in plan.files] == [N3]
    assert [night for night, _ in plan.missing] == [date(2018, 6, 10)]
    assert "2018-06-10" in str(plan.missing[0][1])
    ranged = archive.plan_download(cat, first="2018-06-01", last="2018-06-02", client=client)
    assert [f.name for f in ranged.files] == [N2]  # N1 is complete
    forced = archive.plan_download(cat, first="2018-06-01", last="2018-06-02", force=True, client=client)
    assert [f.name for f in forced.files] == [N1, N2]
    listing = archive.cached_listing(cat, client=client)
    recent = archive.plan_download(cat, recent=5, refresh=False, client=client)
    expected = plan_recent(listing, archive.local_statuses(cat), 5)
    assert [f.name for f in recent.files] == [f.name for f in expected] and recent.missing == []
    server.requests.clear()
    with pytest.raises(InvalidNightError):
        archive.plan_download(cat, nights=["2018-06-03", "2018-06-31"], client=client)
    assert server.requests == []  # every night is checked before any request


def test_listing_table_by_nights_and_missing(cat, client):
    archive.download_night(cat, 2018, 6, 1, client=client)
    whole = archive.listing_table(cat, refresh=True, client=client)
    later = archive.listing_table(cat, client=client, first="2018-06-02", last=date(2018, 6, 3))
    assert list(later["file"]) == [r["file"] for r in whole if "2018-06-02" <= r["night"] <= "2018-06-03"]
    missing = archive.listing_table(cat, client=client, missing=True)
    assert list(missing["file"]) == [r["file"] for r in whole if r["status"] != "complete"]
    assert N1 in list(whole["file"]) and N1 not in list(missing["file"])


def test_delete_releases_takes_their_downloads_too(cat, client):
    archive.download_night(cat, 2018, 6, 1, client=client, keep_tarballs=True)
    archive.download_night(cat, 2018, 6, 3, client=client, keep_tarballs=True)
    folder = archive.downloads_dir(cat)
    assert {p.name for p in folder.iterdir()} == {N1, N3}
    gone = []
    assert archive.delete_releases(cat, [N1], progress=gone.append) == 1
    assert gone == [N1] and {p.name for p in folder.iterdir()} == {N3}
    assert [r["name"] for r in cat.releases()] == [N3]
    assert archive.delete_releases(cat) == 1
    assert list(folder.iterdir()) == [] and len(cat.releases()) == 0
