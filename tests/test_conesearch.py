"""Cone search: the same answer as a brute-force scan, at the poles, across RA 0/360 and anywhere else."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import Angle, SkyCoord
from sqlalchemy import insert, text

from ztfcat.errors import InvalidQueryError
from ztfcat.ingest.pipeline import night_observed
from ztfcat.store.conesearch import cone_query, cone_search
from ztfcat.store.sky import hpx_index, separation_deg
from ztfcat.store.tables import alerts, releases


def random_sky(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions uniform on the sphere, plus crowds at both poles, along RA 0/360 and in tight pairs."""
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    k = n // 6
    # Within 0.05 deg of each pole (dec exactly +-90 included), any RA.
    dec[:k] = 90.0 - rng.uniform(0.0, 0.05, k)
    dec[k : 2 * k] = -90.0 + rng.uniform(0.0, 0.05, k)
    dec[0], dec[k] = 90.0, -90.0
    # Straddling RA 0/360.
    ra[2 * k : 3 * k] = np.mod(rng.uniform(-0.05, 0.05, k), 360.0)
    dec[2 * k : 3 * k] = rng.uniform(-1.0, 1.0, k)
    # Pairs a fraction of an arcsecond apart.
    ra[3 * k : 4 * k] = ra[4 * k : 5 * k] + rng.normal(0.0, 1e-4, k)
    dec[3 * k : 4 * k] = np.clip(dec[4 * k : 5 * k] + rng.normal(0.0, 1e-4, k), -90.0, 90.0)
    return np.mod(ra, 360.0), dec


def fill(engine, ra: np.ndarray, dec: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Insert one bare alerts row per position (and a release row for them); returns the candids."""
    candid = 1_000_000_000_000_000_000 + np.arange(len(ra), dtype=np.int64) * 7919
    fid = rng.integers(1, 3, len(ra))
    hpx = hpx_index(ra, dec)
    with engine.begin() as conn:
        release_id = conn.execute(
            insert(releases)
            .values(name="ztf_public_20200101.tar.gz", status="complete")
            .returning(releases.c.id)
        ).scalar_one()
        conn.execute(
            insert(alerts),
            [
                {
                    "candid": int(c),
                    "objectId": f"ZTF20{i:07d}",
                    "schemavsn": "4.02",
                    "release_id": release_id,
                    "blob_path": f"alerts/x/{c}.avro",
                    "blob_size": 1,
                    "hpx": int(h),
                    "ra": float(r),
                    "dec": float(d),
                    "jd": 2458849.5 + i * 1e-4,
                    "night": night_observed(2458849.5 + i * 1e-4),
                    "fid": int(f),
                }
                for i, (c, h, r, d, f) in enumerate(zip(candid, hpx, ra, dec, fid, strict=True))
            ],
        )
    return candid


def brute_force(candid, ra, dec, ra0, dec0, radius_deg, keep=None) -> list[int]:
    distance = np.asarray(separation_deg(ra0, dec0, ra, dec))
    inside = distance <= radius_deg
    if keep is not None:
        inside &= keep
    index = np.flatnonzero(inside)
    return [int(candid[i]) for i in index[np.lexsort((candid[index], distance[index]))]]


@pytest.fixture
def sky(catalog):
    rng = np.random.default_rng(2024)
    ra, dec = random_sky(rng, 3000)
    candid = fill(catalog.engine, ra, dec, rng)
    return catalog, candid, ra, dec


def cones(ra: np.ndarray, dec: np.ndarray) -> list[tuple[float, float, float]]:
    """(ra, dec, radius in arcsec): poles, RA 0/360, alert positions, random spots; 0.5" to 10 deg."""
    rng = np.random.default_rng(5)
    fixed = [
        (0.0, 90.0, 60.0),
        (123.0, 90.0, 180.0),
        (0.0, -90.0, 120.0),
        (270.0, -89.99, 100.0),
        (45.0, 89.98, 90.0),
        (0.0, 0.0, 150.0),
        (359.999, 0.5, 120.0),
        (0.0005, -0.3, 60.0),
        (180.0, 10.0, 36000.0),
        (359.9, 89.9, 36000.0),
        (float(ra[0]), float(dec[0]), 0.0),  # the pole alert itself, radius zero
        (float(ra[700]), float(dec[700]), 0.0),
    ]
    at_alerts = [(float(ra[i]), float(dec[i]), 2.0) for i in rng.integers(0, len(ra), 20)]
    spots = list(
        zip(
            rng.uniform(0, 360, 15).tolist(),
            np.degrees(np.arcsin(rng.uniform(-1, 1, 15))).tolist(),
            rng.choice([0.5, 10.0, 600.0, 7200.0], 15).tolist(),
            strict=True,
        )
    )
    return fixed + at_alerts + spots


def test_cone_search_equals_brute_force(sky) -> None:
    catalog, candid, ra, dec = sky
    found_any = 0
    for ra0, dec0, radius in cones(ra, dec):
        table = cone_search(catalog.engine, ra0, dec0, radius)
        expected = brute_force(candid, ra, dec, ra0, dec0, radius / 3600.0)
        assert list(table["candid"]) == expected, (ra0, dec0, radius)
        np.testing.assert_allclose(
            table["separation"], np.asarray(separation_deg(ra0, dec0, table["ra"], table["dec"])) * 3600.0
        )
        assert np.all(np.diff(table["separation"]) >= 0)
        found_any += bool(expected)
    assert found_any >= 25  # the cones are not all empty: the comparison means something


def test_cone_search_with_filters_columns_limit(sky) -> None:
    catalog, candid, ra, dec = sky
    with catalog.engine.connect() as conn:
        rows = conn.execute(text("SELECT candid, fid FROM alerts")).all()
    fid_of = dict(rows)
    g_band = np.array([fid_of[int(c)] == 1 for c in candid])
    ra0, dec0, radius = 0.0, 89.97, 200.0
    expected = brute_force(candid, ra, dec, ra0, dec0, radius / 3600.0, keep=g_band)
    assert len(expected) > 5

    assert list(cone_search(catalog.engine, ra0, dec0, radius, "fid = 1")["candid"]) == expected
    assert list(cone_search(catalog.engine, ra0, dec0, radius, fid=1)["candid"]) == expected
    nearest = cone_search(catalog.engine, ra0, dec0, radius, "fid = 1", columns=["candid", "fid"], limit=3)
    assert nearest.colnames == ["candid", "fid", "separation"]
    assert list(nearest["candid"]) == expected[:3]
    assert set(nearest["fid"]) == {1}
    assert nearest["separation"].unit == u.arcsec
    assert nearest.meta["radius"] == pytest.approx(radius)


def test_cone_search_takes_skycoord_quantity_angle_and_strings(sky) -> None:
    catalog, candid, ra, dec = sky
    ra0, dec0 = float(ra[2 * 500]), float(dec[2 * 500])
    expected = brute_force(candid, ra, dec, ra0, dec0, 0.05)
    assert expected
    coord = SkyCoord(ra0 * u.deg, dec0 * u.deg)
    assert list(cone_search(catalog.engine, coord, 3 * u.arcmin)["candid"]) == expected
    assert list(cone_search(catalog.engine, coord, Angle("0.05d"))["candid"]) == expected
    assert list(cone_search(catalog.engine, ra0 * u.deg, dec0 * u.deg, "180 arcsec")["candid"]) == expected
    assert list(cone_search(catalog.engine, ra0, dec0, 180)["candid"]) == expected
    galactic = coord.galactic
    assert list(cone_search(catalog.engine, galactic, 180.0)["candid"]) == expected
    # With a SkyCoord, a string after the radius is a condition.
    assert set(cone_search(catalog.engine, coord, 180, "fid = 2")["candid"]) <= set(expected)


def test_cone_search_rejects_bad_input_and_returns_typed_empty_tables(catalog) -> None:
    for args in ((10.0, 95.0, 5), (10.0, 20.0, -1), (10.0, 20.0, "five"), (10.0, 20.0, None)):
        with pytest.raises(InvalidQueryError):
            cone_search(catalog.engine, *args)
    with pytest.raises(InvalidQueryError, match="nosuch"):
        cone_search(catalog.engine, 10.0, 20.0, 5, "nosuch > 1")
    empty = cone_search(catalog.engine, 10.0, 20.0, 5)
    assert len(empty) == 0
    assert empty.colnames[-1] == "separation"
    assert empty["candid"].dtype == np.int64
    assert empty["ra"].dtype == np.float64
    assert empty["objectId"].dtype.kind == "U"


def test_cone_query_can_read_the_hpx_index(catalog) -> None:
    """A cone must be index range scans, not a table scan (the whole point of the hpx column)."""
    query = cone_query(150.0, 2.2, 10.0 / 3600.0, "rb > 0.5")
    compiled = query.compile(catalog.engine, compile_kwargs={"literal_binds": True})
    with catalog.engine.connect() as conn:
        if catalog.engine.dialect.name == "sqlite":
            rows = conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
            plan = " ".join(str(row[-1]) for row in rows)
            assert "SCAN alerts" not in plan
        else:
            # An empty table invites a sequential scan; forbid it to see whether the index can serve.
            conn.execute(text("SET enable_seqscan = off"))
            plan = " ".join(str(row[0]) for row in conn.execute(text(f"EXPLAIN {compiled}")))
            assert "Seq Scan" not in plan
    # PostgreSQL: the index of every partition (alerts_m2019_07_hpx_idx, ...) on a partitioned catalog
    assert "ix_alerts_hpx" in plan or ("_hpx_idx" in plan and "Seq Scan" not in plan)
