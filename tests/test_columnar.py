"""The catalog as Parquet and as HATS, checked with the real consumers: LSDB, DuckDB, pandas, fastavro.

Synthetic nights get positions crowded at both poles, along RA 0/360 and in tight pairs (as in
test_conesearch), and mixed schema versions, so one export must carry every version's columns.  The
LSDB cone search is compared with ``Catalog.cone_search``, the LSDB cross-match with a brute-force
nearest-neighbour search, and every exported value with fastavro's reading of the packet it names.
One LocalCluster serves the whole module.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import fastavro
import numpy as np
import pytest
from click.testing import CliRunner

from tests.tarballs import write_tarball
from tests.test_conesearch import random_sky
from ztfcat import Catalog
from ztfcat.cli.root import main
from ztfcat.errors import ZtfcatError
from ztfcat.store.blobs import read_blob
from ztfcat.store.fields import FIELDS
from ztfcat.store.sky import separation_deg
from ztfcat.store.tables import alerts
from ztfcat.testing.synthetic import alert_bytes, make_night

pa = pytest.importorskip("pyarrow")  # CI installs them with the test extra; a bare install skips here
pq = pytest.importorskip("pyarrow.parquet")
lsdb = pytest.importorskip("lsdb")

ARROW = {"float": pa.float32(), "double": pa.float64(), "int": pa.int32(), "long": pa.int64()}
ARROW |= {"string": pa.string(), "boolean": pa.bool_()}


def sky_night(path: Path, night: str, n: int, seed: int, versions=("1.8", "3.3", "4.02")):
    """A synthetic night whose alerts sit at the poles, across RA 0/360, in pairs and anywhere."""
    spec = make_night(path, night=night, n_alerts=n, seed=seed, version=versions, cutouts=False, n_fp=4)
    ra, dec = random_sky(np.random.default_rng(seed), len(spec.candids))
    members = []
    for candid, r, d in zip(spec.candids, ra, dec, strict=True):
        record = copy.deepcopy(spec.records[candid])
        record["candidate"]["ra"], record["candidate"]["dec"] = float(r), float(d)
        members.append((f"{candid}.avro", alert_bytes(record, spec.versions[candid])))
    write_tarball(path, members)
    return spec


def fill(catalog, tmp_path):
    """Two nights into ``catalog``: 240 alerts of versions 1.8/3.3/4.02, then 120 of 4.02."""
    catalog.ingest(sky_night(tmp_path / "ztf_public_20200101.tar.gz", "20200101", 240, seed=5).path)
    catalog.ingest(sky_night(tmp_path / "ztf_public_20200102.tar.gz", "20200102", 120, 6, ("4.02",)).path)
    return catalog


@pytest.fixture
def filled(catalog, tmp_path):
    """The catalog, on each database, with :func:`fill`'s two nights."""
    return fill(catalog, tmp_path)


@pytest.fixture
def filled_sqlite(tmp_path):
    """The same on SQLite only, for tests of what does not depend on the database (kills, errors)."""
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}", tmp_path / "data")
    yield fill(catalog, tmp_path)
    catalog.close()


@pytest.fixture(scope="module")
def client():
    from ztfcat.export.hats import dask_client

    with dask_client() as c:
        yield c


def _packet(catalog, row) -> dict:
    offset = None if row["blob_offset"] is None or _isnan(row["blob_offset"]) else int(row["blob_offset"])
    raw = read_blob(catalog.data_dir, row["blob_path"], offset, int(row["blob_size"]))
    return next(fastavro.reader(io.BytesIO(raw)))


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _same(avro_type: str, ours, theirs) -> bool:
    """Parquet value equals the Avro value, float32 compared bit for bit (NaN equal to NaN)."""
    if theirs is None:
        return ours is None
    if avro_type in ("float", "double") and math.isnan(theirs) and ours is None:
        return True  # SQLite stores a NaN as NULL (PostgreSQL keeps it), so the catalog has a null
    if avro_type == "float":
        return ours is not None and np.float32(ours).tobytes() == np.float32(theirs).tobytes()
    if avro_type == "double":
        return ours is not None and (ours == theirs or (math.isnan(ours) and math.isnan(theirs)))
    return ours == theirs


# -- Parquet -------------------------------------------------------------------------------------


def test_parquet_types_and_values_equal_fastavro(filled, tmp_path):
    report = filled.to_parquet(tmp_path / "export", page=100)  # several pages
    counts = filled.info()["counts"]
    assert (report.n_alerts, report.n_prv_candidates, report.n_fp_hists) == (
        counts["alerts"],
        counts["prv_candidates"],
        counts["fp_hists"],
    )
    root = tmp_path / "export"
    assert json.loads((root / "ztfcat_export.json").read_text())["rows"]["alerts"] == 360
    assert sorted(p.name for p in (root / "alerts").iterdir()) == ["night=2020-01-01", "night=2020-01-02"]

    # One schema whatever the version: every candidate field, typed as Avro declares it.
    import pyarrow.dataset as ds

    night = ds.partitioning(pa.schema([("night", pa.date32())]), flavor="hive")
    table = ds.dataset(root / "alerts", format="parquet", partitioning=night).to_table()
    for name, (avro_type, _nullable, _doc) in FIELDS["candidate"].items():
        assert table.schema.field(name).type == ARROW[avro_type], name
    for name in ("candid", "objectId", "release", "blob_path", "blob_offset", "blob_size", "hpx", "night"):
        assert name in table.schema.names
    assert "release_id" not in table.schema.names

    # Every value equals fastavro's reading of the packet the row points at.
    rows = table.to_pylist()
    assert sorted(r["candid"] for r in rows) == filled.alert_ids()
    releases = {r["candid"]: r["release"] for r in rows}
    assert set(releases.values()) == {"ztf_public_20200101.tar.gz", "ztf_public_20200102.tar.gz"}
    for row in rows:
        packet = _packet(filled, row)
        assert packet["candid"] == row["candid"] and packet["objectId"] == row["objectId"]
        assert str(row["night"]).replace("-", "") == row["release"][11:19]
        for name, (avro_type, _n, _d) in FIELDS["candidate"].items():
            assert _same(avro_type, row[name], packet["candidate"].get(name)), (row["candid"], name)

    # Light curves: each point equals the point of the packet it was read from.
    for dataset, part, key in (
        ("prv_candidates", "prv_candidate", "prv_candidates"),
        ("fp_hists", "fp_hist", "fp_hists"),
    ):
        points = pq.read_table(root / dataset).to_pylist()
        assert len(points) == counts[dataset] > 0
        schema = pq.read_schema(next((root / dataset).glob("*.parquet")))
        for name, (avro_type, _n, _d) in FIELDS[part].items():
            assert schema.field(name).type == ARROW[avro_type], name
        for point in points:
            assert point["release"] == releases[point["alert_candid"]]
            packet = _packet(filled, point)
            assert packet["candid"] == point["alert_candid"] and packet["objectId"] == point["objectId"]
            if point.get("candid") is not None and point["candid"] == point["alert_candid"]:
                # The alert's own candidate, a detection of its light curve: the fields alerts has.
                expected = {n: packet["candidate"].get(n) if n in alerts.c else None for n in FIELDS[part]}
            else:
                same = [
                    p
                    for p in packet[key] or ()
                    if (p["pid"], p["fid"], p.get("candid"))
                    == (point["pid"], point["fid"], point.get("candid"))
                ]
                assert len(same) == 1, point
                expected = same[0]
            for name, (avro_type, _n, _d) in FIELDS[part].items():
                assert _same(avro_type, point[name], expected.get(name)), (dataset, name)


def test_duckdb_and_pandas_read_the_dataset(filled, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    import pandas as pd

    filled.to_parquet(tmp_path / "export")
    glob = str(tmp_path / "export" / "alerts" / "**" / "*.parquet")
    con = duckdb.connect()
    per_night = con.execute(
        "SELECT night, count(*), typeof(any_value(magpsf)), typeof(any_value(fid)), typeof(any_value(jd)) "
        "FROM read_parquet(?, hive_partitioning = true) GROUP BY night ORDER BY night",
        [glob],
    ).fetchall()
    assert [(str(n), c) for n, c, *_ in per_night] == [
        ("2020-01-01", filled.count(night="2020-01-01")),
        ("2020-01-02", filled.count(night="2020-01-02")),
    ]
    assert {tuple(r[2:]) for r in per_night} == {("FLOAT", "INTEGER", "DOUBLE")}
    candids = [
        r[0] for r in con.execute("SELECT candid FROM read_parquet(?) ORDER BY candid", [glob]).fetchall()
    ]
    assert candids == filled.alert_ids()
    lc = str(tmp_path / "export" / "prv_candidates" / "*.parquet")
    (n_points,) = con.execute("SELECT count(*) FROM read_parquet(?)", [lc]).fetchone()
    assert n_points == filled.info()["counts"]["prv_candidates"]

    df = pd.read_parquet(tmp_path / "export" / "alerts", dtype_backend="numpy_nullable")
    assert len(df) == 360
    assert str(df["magpsf"].dtype) == "Float32" and str(df["jd"].dtype) == "Float64"
    assert str(df["nid"].dtype) == "Int32" and str(df["candid"].dtype) == "Int64"
    query = filled.query(columns=["candid", "magpsf", "nid"], limit=None)
    mine = df.set_index("candid").loc[list(query["candid"])]
    assert np.array_equal(mine["magpsf"].to_numpy(np.float32), np.asarray(query["magpsf"], dtype=np.float32))


def test_parquet_of_real_packets_of_every_version(catalog, tmp_path, shared_alerts):
    files = sorted((shared_alerts / "alerts").glob("v*/*.avro"))
    catalog.ingest(
        write_tarball(tmp_path / "ztf_public_20240101.tar.gz", [(p.name, p.read_bytes()) for p in files])
    )
    catalog.to_parquet(tmp_path / "export")
    table = pq.read_table(tmp_path / "export" / "alerts")
    assert sorted(table.column("candid").to_pylist()) == catalog.alert_ids()
    for row in table.to_pylist():
        packet = _packet(catalog, row)
        for name, (avro_type, _n, _d) in FIELDS["candidate"].items():
            assert _same(avro_type, row[name], packet["candidate"].get(name)), (row["candid"], name)


def test_empty_catalog_exports_empty_datasets(catalog, tmp_path):
    report = catalog.to_parquet(tmp_path / "export")
    assert report.n_alerts == 0
    assert pq.read_table(tmp_path / "export" / "prv_candidates").num_rows == 0
    with pytest.raises(ZtfcatError, match="no alerts"):
        catalog.to_hats(tmp_path / "hats")
    assert not (tmp_path / "hats").exists()


# -- safety --------------------------------------------------------------------------------------


def _partials(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def test_non_empty_target_refuses_unless_overwrite(filled, tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    with pytest.raises(ZtfcatError, match=f"{target}.*not empty.*--overwrite"):
        filled.to_parquet(target)
    assert [p.name for p in target.iterdir()] == ["mine.txt"]
    result = CliRunner().invoke(
        main,
        [
            "--database-url",
            filled.database_url,
            "--data-dir",
            str(filled.data_dir),
            "export",
            "--parquet",
            str(target),
        ],
    )
    assert (
        result.exit_code == 1
        and "not empty" in result.output
        and len(result.output.strip().splitlines()) == 1
    )
    result = CliRunner().invoke(
        main,
        [
            "--database-url",
            filled.database_url,
            "--data-dir",
            str(filled.data_dir),
            "export",
            "--parquet",
            str(target),
            "--overwrite",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "exported 360 alerts" in result.output
    assert not (target / "mine.txt").exists() and (target / "alerts").is_dir()
    assert _partials(tmp_path) == []
    (tmp_path / "empty").mkdir()
    assert filled.to_parquet(tmp_path / "empty").n_alerts == 360  # an empty folder is no catalog to lose


def test_failed_export_leaves_no_dataset_and_the_old_one_whole(filled, tmp_path):
    target = tmp_path / "export"

    def interrupt(dataset, n_rows):
        if dataset == "prv_candidates":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        filled.to_parquet(target, page=50, progress=interrupt)
    assert not target.exists() and _partials(tmp_path) == []
    filled.to_parquet(target)
    before = pq.read_table(target / "alerts").sort_by("candid")
    with pytest.raises(KeyboardInterrupt):
        filled.to_parquet(target, overwrite=True, page=50, progress=interrupt)
    assert pq.read_table(target / "alerts").sort_by("candid").equals(before)
    assert _partials(tmp_path) == []


KILL_SCRIPT = """
import sys
from ztfcat import Catalog
if __name__ == "__main__":
    catalog = Catalog(sys.argv[1], sys.argv[2])
    getattr(catalog, sys.argv[3])(sys.argv[4], page=1)  # one row a query: slow enough to be caught
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["to_parquet", "to_hats"])
def test_killed_export_leaves_nothing_lsdb_would_open(filled_sqlite, tmp_path, method, client):
    target = tmp_path / "out"
    script = tmp_path / "kill_me.py"
    script.write_text(KILL_SCRIPT)
    # Its own session, so the kill reaches the Dask workers it starts too.
    child = subprocess.Popen(
        [
            sys.executable,
            str(script),
            filled_sqlite.database_url,
            str(filled_sqlite.data_dir),
            method,
            str(target),
        ],
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    deadline = time.monotonic() + 120
    mark = ".ztfcat-tmp" if method == "to_hats" else "prv_candidates"  # hats-import / light curves running
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if any((p / mark).exists() for p in tmp_path.glob(".out.partial-*")):
                break
            time.sleep(0.01)
        assert child.poll() is None, "the export finished before it could be killed"
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert not target.exists()
    with pytest.raises(Exception):  # noqa: B017 - whatever lsdb raises, it must not open a catalog
        lsdb.read_hats(target)
    assert len(_partials(tmp_path)) == 1  # the killed build, hidden beside the target
    if method == "to_hats":
        filled_sqlite.to_hats(target, client=client)
        assert len(lsdb.read_hats(target).compute()) == 360
    else:
        filled_sqlite.to_parquet(target)
    assert _partials(tmp_path) == []  # a new export clears the dead one's leftovers


def test_missing_extra_is_one_line_naming_it(filled_sqlite, tmp_path, monkeypatch):
    for name in ("lsdb", "hats_import"):
        monkeypatch.setitem(sys.modules, name, None)  # what an install without the extra sees
    with pytest.raises(ZtfcatError, match=r"ztfcat\[hats\]"):
        filled_sqlite.to_hats(tmp_path / "hats")
    result = CliRunner().invoke(
        main,
        [
            "--database-url",
            filled_sqlite.database_url,
            "--data-dir",
            str(filled_sqlite.data_dir),
            "export",
            "--hats",
            str(tmp_path / "h"),
        ],
    )
    assert result.exit_code == 1
    assert (
        result.output.strip().splitlines() == [result.output.strip()]
        and "pip install 'ztfcat[hats]'" in result.output
    )
    assert not (tmp_path / "h").exists()
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ZtfcatError, match=r"pyarrow.*ztfcat\[hats\]"):
        filled_sqlite.to_parquet(tmp_path / "p")


def test_dead_scheduler_is_one_line_naming_it(filled_sqlite, tmp_path, monkeypatch):
    import ztfcat.export.hats as module

    monkeypatch.setattr(module, "CONNECT_TIMEOUT", 2)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(module.SchedulerError, match=f"Dask scheduler at {address}"):
        filled_sqlite.to_hats(tmp_path / "hats", scheduler=address)
    result = CliRunner().invoke(
        main,
        ["--database-url", filled_sqlite.database_url, "--data-dir", str(filled_sqlite.data_dir), "export", "--hats", str(tmp_path / "h"),
         "--dask-scheduler", address],
    )  # fmt: skip
    assert result.exit_code == 1 and address in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "h").exists() and _partials(tmp_path) == []


# -- HATS and LSDB -------------------------------------------------------------------------------

#: Cones at both poles, across RA 0/360, at large and at arcsecond radii (degrees).
CONES = [
    (0.0, 90.0, 0.03),
    (200.0, 89.99, 0.05),
    (45.0, -90.0, 0.04),
    (0.0, 0.0, 0.04),
    (359.99, 0.5, 0.06),
    (0.02, -0.7, 0.3),
    (120.0, 30.0, 40.0),
]


#: A position on an order-29 pixel edge where astropy-healpix (ztfcat's hpx) and cdshealpix (hats')
#: round to different pixels: the one alert of the million-alert scale catalog that stopped the export.
EDGE = (217.0903309, -7.510094)


def _index_batch(candid, ra, dec, index):
    return pa.RecordBatch.from_arrays(
        [pa.array(candid, pa.int64()), pa.array(ra), pa.array(dec), pa.array(index, pa.int64())],
        names=["candid", "ra", "dec", "_healpix_29"],
    )


def test_hats_index_check_passes_a_pixel_edge_and_stops_a_wrong_index():
    from hats.pixel_math.spatial_index import compute_spatial_index

    from ztfcat.export.hats import _checked
    from ztfcat.store.sky import hpx_index

    ra, dec = np.array([EDGE[0], 10.0, 300.0]), np.array([EDGE[1], 20.0, -25.0])
    ours = hpx_index(ra, dec)
    theirs = compute_spatial_index(ra, dec)
    assert ours[0] != theirs[0] and np.array_equal(ours[1:], theirs[1:])  # the two libraries differ there
    batch = _index_batch([1, 2, 3], ra, dec, ours)
    assert list(_checked(iter([batch]))) == [batch]  # the edge point keeps its hpx
    stale = ours.copy()
    stale[2] = hpx_index(300.0 + 1 / 3600, -25.0)  # the index of a position an arcsecond away
    with pytest.raises(ZtfcatError, match="alert 3: hpx .* is not hats' _healpix_29"):
        list(_checked(iter([_index_batch([1, 2, 3], ra, dec, stale)])))


@pytest.mark.slow
def test_hats_export_of_an_alert_on_a_pixel_edge(tmp_path, client):
    """HEALPix geometry, not the database: SQLite only."""
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}", tmp_path / "data")
    spec = make_night(tmp_path / "n.tar.gz", night="20200103", n_alerts=12, seed=8, cutouts=False, n_fp=2)
    members = []
    for i, candid in enumerate(spec.candids):
        record = copy.deepcopy(spec.records[candid])
        if i == 0:
            record["candidate"]["ra"], record["candidate"]["dec"] = EDGE
        members.append((f"{candid}.avro", alert_bytes(record, spec.versions[candid])))
    path = tmp_path / "ztf_public_20200103.tar.gz"
    write_tarball(path, members)
    catalog.ingest(path)
    catalog.to_hats(tmp_path / "edge_hats", client=client)
    cat = lsdb.read_hats(tmp_path / "edge_hats")
    assert sorted(cat.compute()["candid"]) == catalog.alert_ids()
    ours = sorted(catalog.cone_search(*EDGE, 1.0, columns=["candid"])["candid"])
    theirs = sorted(cat.cone_search(*EDGE, 1.0).compute()["candid"])
    assert theirs == ours == [spec.candids[0]]
    catalog.close()


@pytest.mark.slow
def test_hats_cone_search_and_crossmatch_agree_with_the_catalog(filled, tmp_path, client):
    from hats.pixel_math.spatial_index import compute_spatial_index

    report = filled.to_hats(tmp_path / "alerts_hats", client=client, pixel_threshold=60, highest_order=6)
    assert report.n_alerts == 360 and report.n_partitions > 1
    cat = lsdb.read_hats(tmp_path / "alerts_hats")
    assert cat.hc_structure.catalog_info.healpix_column == "_healpix_29"
    everything = cat.compute()
    assert sorted(everything["candid"]) == filled.alert_ids()
    index = everything.index.to_numpy()
    assert np.array_equal(index, everything["hpx"].to_numpy())  # _healpix_29 is hpx on every row
    ra, dec = everything["ra"].to_numpy(float), everything["dec"].to_numpy(float)
    assert np.array_equal(index, compute_spatial_index(ra, dec))  # and hats' own index of (ra, dec)
    assert everything["magpsf"].dtype.pyarrow_dtype == pa.float32()
    assert everything["nid"].dtype.pyarrow_dtype == pa.int32()

    cones = [*CONES, *[(float(r), float(d), 2 / 60) for r, d in zip(ra[::90], dec[::90], strict=True)]]
    for ra0, dec0, radius in cones:
        ours = sorted(filled.cone_search(ra0, dec0, f"{radius} deg", columns=["candid"])["candid"])
        theirs = sorted(cat.cone_search(ra0, dec0, radius * 3600).compute()["candid"])
        assert theirs == ours, (ra0, dec0, radius)
        if radius < 1:
            assert ours or (ra0, dec0) == (120.0, 30.0)

    # A synthetic "Gaia": a counterpart 0.3" from every third alert that has no other alert within 5",
    # and field stars more than 1' from every alert; so exactly the planted pairs must match.
    rng = np.random.default_rng(11)
    isolated = [
        i for i in range(len(ra)) if np.sort(np.asarray(separation_deg(ra[i], dec[i], ra, dec)))[1] > 5 / 3600
    ]
    pick = np.array(isolated[::3])
    offset = 0.3 / 3600
    angle = rng.uniform(0, 2 * np.pi, len(pick))
    g_dec = np.clip(dec[pick] + offset * np.cos(angle), -90, 90)
    g_ra = np.mod(ra[pick] + offset * np.sin(angle) / np.maximum(np.cos(np.radians(g_dec)), 1e-3), 360)
    f_ra, f_dec = rng.uniform(0, 360, 300), np.degrees(np.arcsin(rng.uniform(-1, 1, 300)))
    far = np.array([np.min(separation_deg(r, d, ra, dec)) > 1 / 60 for r, d in zip(f_ra, f_dec, strict=True)])
    import pandas as pd

    gaia = pd.DataFrame(
        {
            "source_id": np.arange(len(pick) + far.sum(), dtype=np.int64) + 10**15,
            "ra": np.r_[g_ra, f_ra[far]],
            "dec": np.r_[g_dec, f_dec[far]],
            "phot_g_mean_mag": rng.uniform(12, 20, len(pick) + far.sum()).astype(np.float32),
        }
    )
    lsdb.from_dataframe(gaia, ra_column="ra", dec_column="dec", lowest_order=0, highest_order=5,
                        partition_rows=40, margin_threshold=10.0).write_catalog(tmp_path / "gaia", progress_bar=False)  # fmt: skip
    gaia_cat = lsdb.read_hats(tmp_path / "gaia")
    radius = 2.0
    matched = cat.crossmatch(
        gaia_cat, radius_arcsec=radius, n_neighbors=1, suffixes=("_ztf", "_gaia"), suffix_method="all_columns"
    ).compute()
    got = sorted(zip(matched["candid_ztf"], matched["source_id_gaia"], strict=True))
    # Brute force: the nearest Gaia source within the radius of each alert.
    g_all_ra, g_all_dec, ids = gaia["ra"].to_numpy(), gaia["dec"].to_numpy(), gaia["source_id"].to_numpy()
    expected = []
    for candid, r, d in zip(everything["candid"], ra, dec, strict=True):
        sep = np.asarray(separation_deg(r, d, g_all_ra, g_all_dec)) * 3600
        best = int(np.argmin(sep))
        if sep[best] <= radius:
            expected.append((int(candid), int(ids[best])))
    assert got == sorted(expected)
    planted = {(int(everything["candid"].iloc[i]), int(ids[j])) for j, i in enumerate(pick)}
    assert len(planted) > 30 and any(abs(dec[i]) > 89.9 for i in pick) and any(ra[i] > 359.9 for i in pick)
    assert set(got) == planted


@pytest.mark.slow
def test_cli_hats_export_then_re_export(filled_sqlite, tmp_path, client):
    """The command's messages and refusals; what it writes from each database is the API's tests'."""
    filled = filled_sqlite
    address = client.scheduler.address
    args = ["--database-url", filled.database_url, "--data-dir", str(filled.data_dir), "export"]
    result = CliRunner().invoke(main, [*args, "--hats", str(tmp_path / "h"), "--dask-scheduler", address])
    assert result.exit_code == 0, result.output
    assert "360 alerts" in result.output and "rebuilds it whole" in result.output
    result = CliRunner().invoke(main, [*args, "--hats", str(tmp_path / "h"), "--dask-scheduler", address])
    assert result.exit_code == 1 and "--overwrite" in result.output
    filled.ingest(
        sky_night(tmp_path / "ztf_public_20200103.tar.gz", "20200103", 30, seed=7, versions=("4.02",)).path
    )
    result = CliRunner().invoke(
        main, [*args, "--hats", str(tmp_path / "h"), "--dask-scheduler", address, "--overwrite"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("rebuilt HATS catalog") and "390 alerts" in result.output
    assert sorted(lsdb.read_hats(tmp_path / "h").compute()["candid"]) == filled.alert_ids()


@pytest.mark.slow
def test_hats_objects_with_nested_light_curves(filled, tmp_path, client):
    import pandas as pd
    from astropy.coordinates import SkyCoord
    from sqlalchemy import select

    from ztfcat.store.tables import fp_hists, prv_candidates

    report = filled.to_hats(tmp_path / "objects", objects=True, client=client, page=50)
    objects = lsdb.read_hats(tmp_path / "objects")
    df = objects.compute()
    with filled.engine.connect() as conn:
        positions = conn.execute(select(alerts.c.objectId, alerts.c.ra, alerts.c.dec)).all()
        points = conn.execute(
            select(prv_candidates.c.objectId, prv_candidates.c.jd, prv_candidates.c.fid, prv_candidates.c.pid,
                   prv_candidates.c.candid, prv_candidates.c.magpsf)
        ).all()  # fmt: skip
        forced = conn.execute(select(fp_hists.c.objectId, fp_hists.c.pid, fp_hists.c.fid)).all()
    by_object: dict[str, list] = {}
    for oid, r, d in positions:
        by_object.setdefault(oid, []).append((r, d))
    assert report.n_alerts == len(by_object) == len(df)
    assert sorted(df["objectId"]) == sorted(by_object)

    lc = df["lightcurve"].nest.to_flat()
    fp = df["forced"].nest.to_flat()
    assert lc["magpsf"].dtype.pyarrow_dtype == pa.float32()
    oid_of = dict(zip(df.index, df["objectId"], strict=True))  # _healpix_29 -> objectId (unique here)
    assert len(oid_of) == len(df)
    got = sorted(
        (oid_of[i], jd, fid, pid, None if pd.isna(cand) else int(cand))
        for i, jd, fid, pid, cand in zip(lc.index, lc["jd"], lc["fid"], lc["pid"], lc["candid"].tolist(),
                                         strict=True)
    )  # fmt: skip
    assert got == sorted((o, jd, fid, pid, c) for o, jd, fid, pid, c, _m in points)
    for _i, group in lc.groupby(level=0):
        assert list(group["jd"]) == sorted(group["jd"])  # oldest first within each object
    assert sorted(
        (oid_of[i], p, f) for i, p, f in zip(fp.index, fp["pid"], fp["fid"], strict=True)
    ) == sorted(tuple(r) for r in forced)

    # Mean positions: astropy's mean of the unit vectors, right at the poles and across RA 0/360.
    for oid, ra, dec in zip(df["objectId"], df["ra"], df["dec"], strict=True):
        r, d = zip(*by_object[oid], strict=True)
        mean = SkyCoord(np.array(r), np.array(d), unit="deg").cartesian.mean()
        expected = SkyCoord(mean, representation_type="cartesian").spherical
        assert float(separation_deg(ra, dec, expected.lon.deg, expected.lat.deg)) < 1e-9, oid
    ra, dec = df["ra"].to_numpy(float), df["dec"].to_numpy(float)
    for ra0, dec0, radius in CONES:
        inside = np.asarray(separation_deg(ra0, dec0, ra, dec)) <= radius
        theirs = sorted(objects.cone_search(ra0, dec0, radius * 3600).compute()["objectId"])
        assert theirs == sorted(df["objectId"][inside]), (ra0, dec0)
