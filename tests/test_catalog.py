"""Queries: the seed's calls on the default catalog, filters, paging, read-only SQL, deleting releases."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess

import pytest

import ztfcat
from ztfcat import Catalog, InvalidQueryError, NotFoundError
from ztfcat.testing.synthetic import make_night


@pytest.fixture
def two_nights(catalog, tmp_path):
    a = make_night(tmp_path / "ztf_public_20180819.tar.gz", night="20180819", n_alerts=30, seed=1)
    b = make_night(
        tmp_path / "ztf_public_20180820.tar.gz", night="20180820", n_alerts=20, seed=2, version="3.3"
    )
    catalog.ingest(a.path)
    catalog.ingest(b.path)
    return a, b


def test_seed_calls_on_the_default_catalog(monkeypatch, tmp_path):
    spec = make_night(tmp_path / "ztf_public_20180819.tar.gz", n_alerts=12, seed=3)
    monkeypatch.setenv("ZTFCAT_DATA_DIR", str(tmp_path / "data"))
    ztfcat.default_catalog().ingest(spec.path)

    alert_ids = ztfcat.get_local_alert_list()
    assert alert_ids == sorted(spec.candids) and all(type(i) is int for i in alert_ids)
    demo_id = alert_ids[0]
    alert_data = ztfcat.get_alert_data(demo_id)
    assert alert_data["candid"] == demo_id
    assert ztfcat.get_alert_data(demo_id, raw=True).startswith(b"Obj\x01")
    fig = ztfcat.plot_stamps(alert_data)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["Science", "Template", "Difference"]

    one_at_a_time = list(ztfcat.iter_alerts())
    assert [a["candid"] for a in one_at_a_time] == alert_ids
    batches = list(ztfcat.iter_alerts(5))
    assert [len(b) for b in batches] == [5, 5, 2]
    assert [a["candid"] for b in batches for a in b] == alert_ids

    assert ztfcat.delete_local_data() == 1
    assert ztfcat.get_local_alert_list() == []
    assert not [p for p in (tmp_path / "data" / "alerts").rglob("*") if p.is_file()]  # either layout
    with pytest.raises(NotFoundError, match=str(demo_id)):
        ztfcat.get_alert_data(demo_id)


def test_iter_alerts_pages_by_key(catalog, two_nights, monkeypatch):
    import ztfcat.catalog as module

    monkeypatch.setattr(module, "PAGE", 7)  # many pages, including a partial last one
    ids = catalog.alert_ids()
    assert [a["candid"] for a in catalog.iter_alerts()] == ids
    assert [len(b) for b in catalog.iter_alerts(8)] == [8] * 6 + [2]
    filtered = [a["candid"] for a in catalog.iter_alerts(None, "fid = 1")]
    assert filtered == catalog.alert_ids("fid = 1") and 0 < len(filtered) < len(ids)
    with pytest.raises(InvalidQueryError):
        next(catalog.iter_alerts(0))


def test_filters(catalog, two_nights):
    a, b = two_nights
    everything = catalog.query(
        columns=["candid", "objectId", "jd", "fid", "rb", "schemavsn", "magpsf"], limit=None
    )
    assert len(everything) == 50
    rb = [r for r in everything if r["rb"] > 0.5 and r["fid"] == 1]
    got = catalog.query("rb > 0.5", "fid = 1", columns=["candid"])
    assert sorted(got["candid"]) == sorted(r["candid"] for r in rb)
    assert set(catalog.alert_ids(night="2018-08-20")) == set(b.candids)
    assert set(catalog.alert_ids(night=("2018-08-19", "2018-08-19"))) == set(a.candids)
    assert set(catalog.alert_ids(release=a.path.name)) == set(a.candids)
    assert set(catalog.alert_ids(schemavsn="3.3")) == set(b.candids)
    obj = b.object_ids[0]
    assert set(catalog.alert_ids(objectId=obj)) == set(b.alerts_by_object[obj])
    assert set(catalog.alert_ids(f"objectId = {obj}")) == set(b.alerts_by_object[obj])
    jds = sorted(everything["jd"])
    lo, hi = jds[10], jds[20]
    assert len(catalog.alert_ids(jd=(lo, hi))) == 11
    assert catalog.count("fid in 1,2") == 50
    assert catalog.count("ssnamenr is not null") + catalog.count("ssnamenr is null") == 50
    assert catalog.count("objectId like ZTF%") == 50
    with pytest.raises(InvalidQueryError, match="unknown column 'nosuch'"):
        catalog.query("nosuch > 1")
    with pytest.raises(InvalidQueryError, match="takes a number"):
        catalog.query("rb > 'x'; DROP TABLE alerts")
    # a value is a bound parameter, never SQL: this matches nothing and harms nothing
    assert catalog.count("objectId = x' OR '1'='1") == 0
    assert catalog.count() == 50


def test_read_only_sql(catalog, two_nights):
    names, rows = catalog.sql("SELECT count(*) AS n FROM alerts WHERE fid = :fid", {"fid": 1})
    assert names == ["n"] and rows[0][0] == catalog.count("fid = 1")
    with pytest.raises(InvalidQueryError):
        catalog.sql("DELETE FROM alerts")
    assert catalog.count() == 50
    _names, rows = catalog.sql(
        'SELECT "objectId", jd, mjd, upper_limit FROM lightcurves ORDER BY jd', limit=5
    )
    assert len(rows) == 5


def test_sqlite3_shell_query_from_the_readme(tmp_path):
    catalog = Catalog(data_dir=tmp_path / "data")
    spec = make_night(tmp_path / "ztf_public_20180819.tar.gz", n_alerts=25, seed=5)
    catalog.ingest(spec.path)
    db = tmp_path / "data" / "catalog.sqlite"
    query = "SELECT objectId, magpsf FROM alerts WHERE rb > 0.5 AND fid = 1"
    with sqlite3.connect(db) as conn:
        rows = conn.execute(query).fetchall()
    assert len(rows) == catalog.count("rb > 0.5", "fid = 1")
    if shutil.which("sqlite3"):
        out = subprocess.run(["sqlite3", str(db), query], capture_output=True, text=True, check=True).stdout
        assert len(out.splitlines()) == len(rows)
    catalog.close()


@pytest.mark.files_layout
def test_delete_a_night_leaves_the_others(catalog, two_nights):
    a, b = two_nights
    obj = b.object_ids[0]
    assert catalog.delete("2018-08-19") == 1
    assert set(catalog.alert_ids()) == set(b.candids)
    assert not (catalog.data_dir / "alerts" / "ztf_public_20180819").exists()
    assert all(
        (catalog.data_dir / "alerts" / "ztf_public_20180820" / f"{c}.avro").is_file() for c in b.candids
    )
    assert len(catalog.lightcurve(obj)) > 0
    assert [r["name"] for r in catalog.releases()] == [b.path.name]


def test_lookups_of_missing_things(catalog):
    with pytest.raises(NotFoundError, match="12345"):
        catalog.get_alert(12345)
    with pytest.raises(NotFoundError):
        catalog.release("ztf_public_20000101.tar.gz")
    assert catalog.alert_ids() == [] and list(catalog.iter_alerts(3)) == []
    assert len(catalog.query()) == 0


def test_info(catalog, two_nights):
    facts = catalog.info()
    assert facts["counts"]["alerts"] == 50 and facts["counts"]["releases"] == 2
    assert dict(facts["schema_versions"]) == {"3.3": 20, "4.02": 30}
    assert facts["unknown_versions"] == [] and facts["unknown_fields"] == []


def test_nothing_happens_at_import(tmp_path):
    code = (
        "import os, sys; os.environ['XDG_DATA_HOME'] = sys.argv[1]; import ztfcat, ztfcat.cli.root; "
        "c = ztfcat.Catalog(); print(os.listdir(sys.argv[1]))"
    )
    out = subprocess.run(
        [__import__("sys").executable, "-c", code, str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]" and out.stderr == ""


def test_a_packet_damaged_after_it_was_stored_is_named_when_read(catalog, tmp_path):
    """Reading back a packet whose bytes changed on disk fails in one line naming the alert and where
    its packet lies; the other alerts still read, and the raw bytes are still given as they are."""
    from sqlalchemy import select

    from ztfcat.errors import AlertDecodeError
    from ztfcat.store.tables import alerts

    spec = make_night(tmp_path / "ztf_public_20180821.tar.gz", n_alerts=4, seed=14)
    catalog.ingest(spec.path)
    victim, *others = sorted(spec.candids)
    with catalog.engine.connect() as conn:
        columns = (alerts.c.blob_path, alerts.c.blob_offset, alerts.c.blob_size)
        path, offset, size = conn.execute(select(*columns).where(alerts.c.candid == victim)).one()
    with open(catalog.data_dir / path, "r+b") as fh:  # the sync marker at the packet's end, overwritten
        fh.seek((offset or 0) + size - 16)
        fh.write(bytes(16))
    for read in (lambda: catalog.get_alert(victim), lambda: list(catalog.iter_alerts())):
        with pytest.raises(AlertDecodeError) as caught:
            read()
        message = str(caught.value)
        assert "\n" not in message and f"alert {victim} " in message and path in message
    assert [catalog.get_alert(c)["candid"] for c in others] == others
    assert len(catalog.get_alert(victim, raw=True)) == size
