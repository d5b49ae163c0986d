"""One catalog, several data directories (ztfcat.store.home): local packets live in one of them only,
so a process with another data directory may read the catalog but not write to it, unless the packets
are on a shared blob store."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import delete, select

from ztfcat import Catalog, ZtfcatError
from ztfcat.store import home
from ztfcat.store.tables import catalog_settings, metadata
from ztfcat.testing.synthetic import make_night

FIRST, SECOND = "ztf_public_20181101.tar.gz", "ztf_public_20181102.tar.gz"


@pytest.fixture
def nights(tmp_path):
    """Two nights sharing objects (the second's prv_candidates repeat the first's alerts)."""
    first = make_night(tmp_path / FIRST, night="20181101", n_alerts=6, seed=61, n_prv=3)
    second = make_night(tmp_path / SECOND, night="20181102", n_alerts=5, seed=62, n_prv=3)
    return first, second


def _dump(catalog) -> dict[str, list[tuple]]:
    """Every row of every table."""
    with catalog.engine.connect() as conn:
        return {
            name: sorted((tuple(r) for r in conn.execute(select(table))), key=lambda r: tuple(map(str, r)))
            for name, table in metadata.tables.items()
        }


def _files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_second_data_dir_reads_but_cannot_write_local_packets(database_url, nights, tmp_path):
    first, second = nights
    owner = Catalog(database_url, tmp_path / "owner")
    owner.ingest(first.path)
    stranger = Catalog(database_url, tmp_path / "stranger")
    before, packets = _dump(owner), _files(owner.data_dir)
    try:
        assert stranger.count() == len(first.candids)  # reading is fine
        for attempt in (
            lambda: stranger.ingest(second.path),
            lambda: stranger.ingest(first.path, force=True),
            lambda: stranger.delete(names=[FIRST]),
            lambda: stranger.delete(),
            stranger.repair,
            lambda: stranger.convert_layout("files"),
        ):
            with pytest.raises(ZtfcatError) as refused:
                attempt()
            message = str(refused.value)
            assert "\n" not in message and str(stranger.data_dir) in message
            assert FIRST in message and "--blobs" in message
            assert _dump(owner) == before and _files(owner.data_dir) == packets  # nothing touched
        assert not (stranger.data_dir / "alerts").exists()
        # The owner goes on as before, and its light curves are whole.
        assert owner.ingest(second.path).status == "complete"
        assert sorted(owner.alert_ids()) == sorted(set(first.candids) | set(second.candids))
        owner.delete(names=[FIRST])
        assert sorted(owner.alert_ids()) == sorted(second.candids)
    finally:
        stranger.close()
        owner.close()


def test_a_catalog_older_than_the_record_finds_its_home_by_its_packets(database_url, nights, tmp_path):
    """No token recorded (a catalog from before this check, or a token file lost): the directory that
    holds every local packet is let in and becomes the home; one that lacks them is refused."""
    first, second = nights
    with Catalog(database_url, tmp_path / "owner") as owner:
        owner.ingest(first.path)
        with owner.engine.begin() as conn:
            conn.execute(delete(catalog_settings).where(catalog_settings.c.key == home.KEY))
        (owner.data_dir / home.TOKEN_FILE).unlink()
    with Catalog(database_url, tmp_path / "stranger") as stranger, pytest.raises(ZtfcatError, match=FIRST):
        stranger.ingest(second.path)
    with Catalog(database_url, tmp_path / "owner") as owner:
        assert owner.ingest(second.path).status == "complete"
        assert (owner.data_dir / home.TOKEN_FILE).is_file()


def test_a_moved_data_dir_stays_home_and_an_emptied_catalog_takes_a_new_one(database_url, nights, tmp_path):
    first, second = nights
    with Catalog(database_url, tmp_path / "owner") as owner:
        owner.ingest(first.path)
    shutil.move(tmp_path / "owner", tmp_path / "moved")  # a disk mounted elsewhere, its token with it
    with Catalog(database_url, tmp_path / "moved") as moved:
        assert moved.ingest(second.path).status == "complete"
        moved.delete()
    # Nothing local is left: another directory may now hold the catalog's packets.
    with Catalog(database_url, tmp_path / "new") as new:
        assert new.ingest(first.path).status == "complete"
        assert sorted(new.alert_ids()) == sorted(first.candids)
        assert new.get_alert(first.candids[0])["candid"] == first.candids[0]
    with Catalog(database_url, tmp_path / "moved") as moved, pytest.raises(ZtfcatError, match=FIRST):
        moved.ingest(second.path)


def test_workers_on_a_blob_store_each_with_a_data_dir_of_their_own(database_url, nights, tmp_path):
    first, second = nights
    store = str(tmp_path / "shared")
    with (
        Catalog(database_url, tmp_path / "a", blobs=store) as a,
        Catalog(database_url, tmp_path / "b", blobs=store) as b,
    ):
        assert a.ingest(first.path).status == "complete"
        assert b.ingest(second.path).status == "complete"
        b.delete(names=[FIRST])
        a.repair()
        assert sorted(a.alert_ids()) == sorted(second.candids)
        with a.engine.connect() as conn:
            recorded = conn.execute(
                select(catalog_settings.c.value).where(catalog_settings.c.key == home.KEY)
            ).scalar()
        assert recorded == home.NOWHERE  # no local packets: every worker passes with one query
    # A local ingest into that catalog makes its data directory the home; the others stay readers.
    with Catalog(database_url, tmp_path / "c") as c:
        with c.engine.begin() as conn:  # else the recorded store is used: this ingest is a local one
            conn.execute(delete(catalog_settings).where(catalog_settings.c.key == "blobs"))
        assert c.ingest(first.path).status == "complete"
    with Catalog(database_url, tmp_path / "a") as a, pytest.raises(ZtfcatError, match=FIRST):
        a.ingest(second.path, force=True)


def test_of_two_first_writers_the_overtaken_one_fails_its_night(database_url, nights, tmp_path, monkeypatch):
    """Both pass the check before either has stored a row: the second takes the home, and the first,
    finding the home no longer its own once its rows are in, fails its night and keeps nothing of it."""
    from ztfcat.ingest import pipeline

    first, second = nights
    a, b = Catalog(database_url, tmp_path / "a"), Catalog(database_url, tmp_path / "b")
    real = pipeline._main_pass

    def overtaken(*args, **kwargs):  # a's check passed and its release row exists; no alert is stored
        monkeypatch.setattr(pipeline, "_main_pass", real)
        assert b.ingest(second.path).status == "complete"
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_main_pass", overtaken)
    try:
        with pytest.raises(ZtfcatError, match=f"{FIRST}: another data directory became the home") as failed:
            a.ingest(first.path)
        assert "\n" not in str(failed.value)
        assert a.release(FIRST).status == "failed"
        assert sorted(b.alert_ids()) == sorted(second.candids)  # nothing of a's night, all of b's
        assert not (a.data_dir / "alerts" / "ztf_public_20181101.tar").exists()  # its packets are gone
        with pytest.raises(ZtfcatError, match=SECOND):  # and a stays refused: b is the home now
            a.ingest(first.path)
        assert b.ingest(first.path).status == "complete"
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("content", ["", "not a token\n", "ab" * 8])
def test_a_damaged_token_file_is_a_one_line_error_naming_it(database_url, nights, tmp_path, content):
    first, second = nights
    with Catalog(database_url, tmp_path / "owner") as owner:
        owner.ingest(first.path)
        before = _dump(owner)
        (owner.data_dir / home.TOKEN_FILE).write_text(content)
        with pytest.raises(ZtfcatError) as refused:
            owner.ingest(second.path)
        message = str(refused.value)
        assert "\n" not in message and str(owner.data_dir / home.TOKEN_FILE) in message
        assert _dump(owner) == before
