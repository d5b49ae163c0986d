"""Science queries against brute force: cross-match of a list, sky-map regions, the objects table.

Every answer is compared with one computed independently over all rows: astropy separations of every
(input, alert) pair, each alert's map pixel looked up with astropy-healpix (or mocpy), and the objects
recomputed in Python from whole-table dumps of ``alerts`` and ``prv_candidates``.
"""

from __future__ import annotations

import math

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy_healpix import healpix_to_lonlat, lonlat_to_healpix
from click.testing import CliRunner
from sqlalchemy import delete, insert, select, text

from tests.test_conesearch import random_sky
from ztfcat.errors import InvalidQueryError
from ztfcat.ingest.pipeline import night_observed
from ztfcat.science.objects import refresh_objects
from ztfcat.store.sky import hpx_index
from ztfcat.store.tables import (
    OBJECT_BANDS,
    OBJECT_CANDIDATE_FIELDS,
    alerts,
    objects,
    prv_candidates,
    releases,
)
from ztfcat.testing.synthetic import make_night

JD0 = 2458849.5


# -- a sky of bare alerts --------------------------------------------------------------------------
def fill(engine, ra, dec, rng, n_objects=None):
    """One bare alerts row per position; objects share ids (``n_objects`` of them) and jd spans 10 days."""
    n = len(ra)
    candid = 1_100_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 7919
    fid = rng.integers(1, 4, n)
    jd = JD0 + rng.uniform(0.0, 10.0, n)
    obj = np.arange(n) % (n_objects or n)
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
                    "candid": int(candid[i]),
                    "objectId": f"ZTF20{obj[i]:07d}",
                    "schemavsn": "4.02",
                    "release_id": release_id,
                    "blob_path": f"alerts/x/{candid[i]}.avro",
                    "blob_size": 1,
                    "hpx": int(hpx[i]),
                    "ra": float(ra[i]),
                    "dec": float(dec[i]),
                    "jd": float(jd[i]),
                    "night": night_observed(float(jd[i])),
                    "fid": int(fid[i]),
                    "magpsf": float(15 + i % 7),
                }
                for i in range(n)
            ],
        )
    return release_id, candid, jd, fid, np.array([f"ZTF20{o:07d}" for o in obj])


@pytest.fixture
def sky(catalog):
    rng = np.random.default_rng(17)
    ra, dec = random_sky(rng, 2400)
    release_id, candid, jd, fid, oid = fill(catalog.engine, ra, dec, rng, n_objects=900)
    return dict(
        catalog=catalog, ra=ra, dec=dec, candid=candid, jd=jd, fid=fid, oid=oid, release_id=release_id
    )


def query_positions(sky, n=400, seed=3):
    """Input positions: half jittered copies of alerts (poles and RA 0 among them), half random."""
    rng = np.random.default_rng(seed)
    qra, qdec = random_sky(rng, n)
    pick = rng.integers(0, len(sky["ra"]), n // 2)
    pick[:20] = np.arange(20)  # the first alerts sit at and near the poles (random_sky)
    qra[: n // 2] = sky["ra"][pick] + rng.normal(0, 2e-4, n // 2)
    qdec[: n // 2] = np.clip(sky["dec"][pick] + rng.normal(0, 2e-4, n // 2), -90, 90)
    return np.mod(qra, 360.0), qdec


def brute_pairs(sky, qra, qdec, radius_arcsec, keep=None):
    """{(input row, candid): separation arcsec} over every pair, by astropy."""
    alerts_coord = SkyCoord(sky["ra"] * u.deg, sky["dec"] * u.deg)
    out = {}
    for i, (r, d) in enumerate(zip(qra, qdec, strict=True)):
        sep = SkyCoord(r * u.deg, d * u.deg).separation(alerts_coord).arcsec
        hit = sep <= radius_arcsec
        if keep is not None:
            hit &= keep
        for j in np.flatnonzero(hit):
            out[(i, int(sky["candid"][j]))] = float(sep[j])
    return out


def as_pairs(table):
    return {
        (int(r), int(c)): float(s)
        for r, c, s in zip(table["input_row"], table["candid"], table["separation"], strict=True)
    }


def assert_same(got, expected):
    assert set(got) == set(expected)
    for key, sep in expected.items():
        assert got[key] == pytest.approx(sep, abs=1e-6)


# -- cross-match -------------------------------------------------------------------------------------
@pytest.mark.parametrize("radius", [2.0, 30.0, 1800.0])
def test_crossmatch_equals_brute_force(sky, radius):
    qra, qdec = query_positions(sky)
    names = [f"src{i}" for i in range(len(qra))]
    table = Table({"ra": qra, "dec": qdec, "name": names, "weight": np.arange(len(qra)) * 0.5})
    result = sky["catalog"].crossmatch(table, radius, chunk_size=97)
    expected = brute_pairs(sky, qra, qdec, radius)
    assert len(expected) > 50
    assert_same(as_pairs(result), expected)
    # input columns ride along with their row, the input's own ra/dec renamed
    assert list(result["name"]) == [names[i] for i in result["input_row"]]
    assert np.array_equal(result["input_ra"], qra[result["input_row"]])
    assert np.array_equal(result["weight"], np.asarray(result["input_row"]) * 0.5)
    assert result["separation"].unit == u.arcsec
    # ordered by input row, then separation
    keys = list(zip(result["input_row"], result["separation"], strict=True))
    assert keys == sorted(keys)


def test_crossmatch_nearest_window_and_filters(sky):
    qra, qdec = query_positions(sky, seed=4)
    catalog = sky["catalog"]
    window = (JD0 + 2.0, JD0 + 7.0)
    keep = (sky["jd"] >= window[0]) & (sky["jd"] <= window[1]) & (sky["fid"] != 3)
    result = catalog.crossmatch(SkyCoord(qra * u.deg, qdec * u.deg), 600, "fid != 3", jd=window)
    expected = brute_pairs(sky, qra, qdec, 600.0, keep)
    assert len(expected) > 20
    assert_same(as_pairs(result), expected)

    nearest = catalog.crossmatch(Table({"ra": qra, "dec": qdec}), 600, nearest=True, fid=[1, 2], jd=window)
    best = {}
    for (i, candid), sep in expected.items():
        if i not in best or (sep, candid) < (best[i][1], best[i][0]):
            best[i] = (candid, sep)
    assert {int(r): int(c) for r, c in zip(nearest["input_row"], nearest["candid"], strict=True)} == {
        i: c for i, (c, _s) in best.items()
    }
    assert len(nearest) == len(set(nearest["input_row"]))


def test_crossmatch_csv_and_dataframe(sky, tmp_path):
    qra, qdec = query_positions(sky, n=120, seed=5)
    path = tmp_path / "targets.csv"
    Table({"id": np.arange(len(qra)) + 1000, "RAdeg": qra, "DEdeg": qdec}).write(path, format="ascii.csv")
    expected = brute_pairs(sky, qra, qdec, 20.0)
    result = sky["catalog"].crossmatch(path, "20 arcsec", ra_col="RAdeg", dec_col="DEdeg", chunk_size=25)
    assert_same(as_pairs(result), expected)
    assert list(result["id"]) == [i + 1000 for i in result["input_row"]]

    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"ra": qra, "dec": qdec, "label": [f"t{i}" for i in range(len(qra))]})
    from_frame = sky["catalog"].crossmatch(frame, 20.0)
    assert_same(as_pairs(from_frame), expected)
    assert list(from_frame["label"]) == [f"t{i}" for i in from_frame["input_row"]]


def test_crossmatch_bad_input(sky, tmp_path):
    catalog = sky["catalog"]
    path = tmp_path / "nopos.csv"
    path.write_text("name,x,y\na,1,2\n")
    with pytest.raises(InvalidQueryError, match=r"nopos\.csv: no position column 'ra' and 'dec'"):
        catalog.crossmatch(path, 2)
    good = Table({"ra": [10.0], "dec": [20.0]})
    for radius in (0, -1, "-3 arcsec"):
        with pytest.raises(InvalidQueryError, match="radius"):
            catalog.crossmatch(good, radius)
    with pytest.raises(InvalidQueryError, match="wrong way round"):
        catalog.crossmatch(good, 2, jd=(JD0 + 5, JD0 + 1))
    with pytest.raises(InvalidQueryError, match="row 1"):
        catalog.crossmatch(Table({"ra": [1.0, 2.0], "dec": [0.0, 95.0]}), 2)
    with pytest.raises(InvalidQueryError, match="missing.csv: no such file"):
        catalog.crossmatch(tmp_path / "missing.csv", 2)


def test_cone_search_refuses_a_reversed_window(sky):
    with pytest.raises(InvalidQueryError, match="wrong way round"):
        sky["catalog"].cone_search(10.0, 20.0, 5, jd=(JD0 + 5, JD0 + 1))


# -- sky maps ---------------------------------------------------------------------------------------
def gaussian(lon_deg, lat_deg, ra0, dec0, sigma):
    sep = SkyCoord(lon_deg * u.deg, lat_deg * u.deg).separation(SkyCoord(ra0 * u.deg, dec0 * u.deg)).deg
    return np.exp(-0.5 * (sep / sigma) ** 2)


def flat_map(path, nside, ordering, ra0, dec0, sigma):
    lon, lat = healpix_to_lonlat(np.arange(12 * nside * nside), nside, order=ordering.lower())
    prob = gaussian(lon.deg, lat.deg, ra0, dec0, sigma)
    prob /= prob.sum()
    hdu = fits.BinTableHDU(Table({"PROB": prob}))
    hdu.header.update(PIXTYPE="HEALPIX", ORDERING=ordering, NSIDE=nside, INDXSCHM="IMPLICIT")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return prob


def multiorder_map(path, ra0, dec0, sigma):
    """A multi-order map: order 4 everywhere, refined to order 7 within 3 sigma of the centre."""
    coarse = np.arange(12 * 4**4)
    lon, lat = healpix_to_lonlat(coarse, 2**4, order="nested")
    centre = SkyCoord(ra0 * u.deg, dec0 * u.deg)
    near = SkyCoord(lon, lat).separation(centre).deg < 3 * sigma + 4.0
    fine = (coarse[near][:, None] * 64 + np.arange(64)).ravel()
    orders = np.r_[np.full((~near).sum(), 4), np.full(fine.size, 7)]
    ipix = np.r_[coarse[~near], fine]
    lon, lat = (
        np.r_[
            healpix_to_lonlat(coarse[~near], 16, order="nested")[0].deg,
            healpix_to_lonlat(fine, 128, order="nested")[0].deg,
        ],
        np.r_[
            healpix_to_lonlat(coarse[~near], 16, order="nested")[1].deg,
            healpix_to_lonlat(fine, 128, order="nested")[1].deg,
        ],
    )
    density = gaussian(lon, lat, ra0, dec0, sigma)
    area = 4 * np.pi / (12 * 4.0**orders)
    density /= (density * area).sum()
    uniq = 4 * 4**orders + ipix
    hdu = fits.BinTableHDU(Table({"UNIQ": uniq.astype(np.int64), "PROBDENSITY": density}))
    hdu.header.update(PIXTYPE="HEALPIX", ORDERING="NUNIQ", INDXSCHM="EXPLICIT", MOCORDER=7)
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return orders, ipix, density


def credible_set(density, prob, credible):
    rank = np.argsort(-density, kind="stable")
    before = np.cumsum(prob[rank]) - prob[rank]
    chosen = np.zeros(density.size, dtype=bool)
    chosen[rank[(before < credible * prob.sum()) & (prob[rank] > 0)]] = True
    return chosen


def inside_flat(sky, prob, nside, ordering, credible):
    chosen = credible_set(prob, prob, credible)
    pix = lonlat_to_healpix(sky["ra"] * u.deg, sky["dec"] * u.deg, nside, order=ordering.lower())
    return chosen[pix]


@pytest.mark.parametrize(
    ("ordering", "ra0", "dec0", "sigma"),
    [("NESTED", 150.0, 20.0, 12.0), ("RING", 0.0, -5.0, 8.0), ("RING", 0.0, 89.0, 5.0)],
    ids=["blob", "across-ra0", "north-pole"],
)
def test_flat_map_region_equals_brute_force(sky, tmp_path, ordering, ra0, dec0, sigma):
    path = tmp_path / "map.fits"
    nside = 32
    prob = flat_map(path, nside, ordering, ra0, dec0, sigma)
    for credible in (0.5, 0.9):
        inside = inside_flat(sky, prob, nside, ordering, credible)
        assert inside.sum() > 10
        result = sky["catalog"].skymap_search(path, credible)
        assert sorted(result["candid"]) == sorted(sky["candid"][inside].tolist())
        assert np.all(result["credible_level"] < credible + prob.max())  # the last pixel may pass it
        rank = np.argsort(-prob, kind="stable")
        level = np.empty(prob.size)
        level[rank] = np.cumsum(prob[rank]) / prob.sum()
        pix = lonlat_to_healpix(sky["ra"] * u.deg, sky["dec"] * u.deg, nside, order=ordering.lower())
        by_candid = dict(zip(sky["candid"].tolist(), level[pix], strict=True))
        assert np.allclose(result["credible_level"], [by_candid[c] for c in result["candid"]], atol=1e-9)
    if ordering == "RING" and ra0 == 0.0 and dec0 < 0:  # the region really straddles RA 0
        hit = sky["ra"][inside_flat(sky, prob, nside, ordering, 0.9)]
        assert (hit < 10).any() and (hit > 350).any()


@pytest.mark.parametrize(
    ("ra0", "dec0"), [(200.0, -30.0), (359.0, 0.0), (45.0, -89.5)], ids=["blob", "ra0", "south-pole"]
)
def test_multiorder_map_region_equals_brute_force(sky, tmp_path, ra0, dec0):
    path = tmp_path / "bayestar.multiorder.fits"
    orders, ipix, density = multiorder_map(path, ra0, dec0, 10.0)
    prob = density * 4 * np.pi / (12 * 4.0**orders)
    chosen = credible_set(density, prob, 0.9)
    lookup = {(int(o), int(p)): k for k, (o, p) in enumerate(zip(orders, ipix, strict=True))}
    inside = np.zeros(len(sky["ra"]), dtype=bool)
    for o in (4, 7):
        pix = lonlat_to_healpix(sky["ra"] * u.deg, sky["dec"] * u.deg, 2**o, order="nested")
        for i, p in enumerate(pix):
            k = lookup.get((o, int(p)))
            if k is not None:
                inside[i] = chosen[k]
    assert inside.sum() > 10
    result = sky["catalog"].skymap_search(path, 0.9)
    assert sorted(result["candid"]) == sorted(sky["candid"][inside].tolist())
    assert result.meta["area_deg2"] == pytest.approx(
        float((4 * np.pi / (12 * 4.0 ** orders[chosen])).sum()) * (180 / np.pi) ** 2
    )
    # most probable first
    assert list(result["credible_level"]) == sorted(result["credible_level"])


def test_moc_region_equals_mocpy(sky, tmp_path):
    mocpy = pytest.importorskip("mocpy")
    from astropy.coordinates import Latitude, Longitude

    moc = mocpy.MOC.from_cone(Longitude(0.5 * u.deg), Latitude(89.0 * u.deg), radius=3 * u.deg, max_depth=10)
    moc = moc.union(
        mocpy.MOC.from_cone(Longitude(300 * u.deg), Latitude(-20 * u.deg), radius=15 * u.deg, max_depth=8)
    )
    inside = moc.contains_lonlat(sky["ra"] * u.deg, sky["dec"] * u.deg)
    assert inside.sum() > 10
    expected = sorted(sky["candid"][inside].tolist())
    assert sorted(sky["catalog"].skymap_search(moc)["candid"]) == expected
    path = tmp_path / "region.moc.fits"
    moc.save(path, format="fits")
    assert sorted(sky["catalog"].skymap_search(path)["candid"]) == expected


def test_skymap_window_new_objects_and_detections(sky, tmp_path):
    catalog = sky["catalog"]
    path = tmp_path / "map.fits"
    prob = flat_map(path, 16, "NESTED", 0.0, 0.0, 60.0)  # most of the sky
    inside = inside_flat(sky, prob, 16, "NESTED", 0.9)
    t0 = JD0 + 4.0
    oid, jd = sky["oid"], sky["jd"]
    # some objects have an earlier detection in their history only, one an earlier upper limit only
    earlier_hist = sorted(set(oid[::11]))
    limit_only = sorted(set(oid[5::11]) - set(earlier_hist))
    with catalog.engine.begin() as conn:
        rows = [
            dict(objectId=str(o), candid=10**15 + k, jd=JD0 - 1.0, fid=1, magpsf=18.0, diffmaglim=20.5)
            for k, o in enumerate(earlier_hist)
        ]
        rows += [
            dict(objectId=str(o), candid=None, jd=JD0 - 2.0, fid=2, magpsf=None, diffmaglim=20.0)
            for o in limit_only
        ]
        conn.execute(
            insert(prv_candidates),
            [
                dict(r, alert_candid=int(sky["candid"][0]), alert_jd=float(sky["jd"][0]), pid=k)
                for k, r in enumerate(rows)
            ],
        )
    in_window = (jd >= t0) & (jd <= t0 + 3)
    result = catalog.skymap_search(path, 0.9, jd=(t0, t0 + 3))
    assert sorted(result["candid"]) == sorted(sky["candid"][inside & in_window].tolist())

    first = {}
    for o, t in zip(oid, jd, strict=True):
        first[o] = min(first.get(o, math.inf), t)
    for o in earlier_hist:
        first[o] = JD0 - 1.0
    new = np.array([first[o] >= t0 for o in oid])
    result = catalog.skymap_search(path, 0.9, jd=(t0, t0 + 3), new_only=True)
    assert sorted(result["candid"]) == sorted(sky["candid"][inside & in_window & new].tolist())
    assert set(result["objectId"]).isdisjoint(earlier_hist)

    n_in_window = {o: int(((oid == o) & in_window).sum()) for o in set(oid)}
    enough = np.array([n_in_window[o] >= 2 for o in oid])
    result = catalog.skymap_search(path, 0.9, jd=(t0, t0 + 3), min_detections=2)
    assert sorted(result["candid"]) == sorted(sky["candid"][inside & in_window & enough].tolist())
    assert all(n >= 2 for n in result["n_detections"])


def test_skymap_bad_input(sky, tmp_path):
    catalog = sky["catalog"]
    junk = tmp_path / "notamap.fits"
    junk.write_bytes(b"this is not FITS at all" * 100)
    with pytest.raises(InvalidQueryError, match=r"notamap\.fits: not a FITS sky map"):
        catalog.skymap_search(junk)
    image = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(image)
    with pytest.raises(InvalidQueryError, match=r"image\.fits: not a HEALPix or MOC map"):
        catalog.skymap_search(image)
    table = tmp_path / "table.fits"
    fits.BinTableHDU(Table({"x": [1.0, 2.0]})).writeto(table)
    with pytest.raises(InvalidQueryError, match=r"table\.fits: not a HEALPix map"):
        catalog.skymap_search(table)
    good = tmp_path / "good.fits"
    flat_map(good, 4, "NESTED", 10, 10, 10)
    with pytest.raises(InvalidQueryError, match="credible level"):
        catalog.skymap_search(good, 1.5)
    with pytest.raises(InvalidQueryError, match="wrong way round"):
        catalog.skymap_search(good, jd=(JD0 + 3, JD0))
    with pytest.raises(InvalidQueryError, match="new_only needs"):
        catalog.skymap_search(good, new_only=True)


# -- objects ----------------------------------------------------------------------------------------
def expected_objects(engine) -> dict[str, dict]:
    """The objects rows recomputed in Python from whole-table dumps."""
    with engine.connect() as conn:
        prv = [r._asdict() for r in conn.execute(select(prv_candidates))]
        alert_rows = [r._asdict() for r in conn.execute(select(alerts))]
    history = {r["candid"] for r in prv if r["candid"] is not None}
    detections: dict[str, list[dict]] = {}
    for r in [p for p in prv if p["candid"] is not None] + [
        a for a in alert_rows if a["candid"] not in history
    ]:
        detections.setdefault(r["objectId"], []).append(r)
    out = {}
    for object_id in {a["objectId"] for a in alert_rows}:
        dets = detections[object_id]
        ra, dec = np.radians([d["ra"] for d in dets]), np.radians([d["dec"] for d in dets])
        x, y, z = (np.cos(dec) * np.cos(ra)).mean(), (np.cos(dec) * np.sin(ra)).mean(), np.sin(dec).mean()
        latest = max(
            (a for a in alert_rows if a["objectId"] == object_id), key=lambda a: (a["jd"], a["candid"])
        )
        row = {
            "ra": math.degrees(math.atan2(y, x)) % 360.0,
            "dec": math.degrees(math.atan2(z, math.hypot(x, y))),
            "first_jd": min(d["jd"] for d in dets),
            "last_jd": max(d["jd"] for d in dets),
            "ndet": len(dets),
            "nlim": sum(1 for p in prv if p["objectId"] == object_id and p["candid"] is None),
            "n_alerts": sum(1 for a in alert_rows if a["objectId"] == object_id),
            "peak_mag": min(d["magpsf"] for d in dets),
            "latest_candid": latest["candid"],
            "latest_drb": latest["drb"],
            "latest_rb": latest["rb"],
            **{n: latest[n] for n in OBJECT_CANDIDATE_FIELDS},
        }
        for fid, band in OBJECT_BANDS.items():
            in_band = [d for d in dets if d["fid"] == fid]
            last = max(in_band, key=lambda d: (d["jd"], d["candid"])) if in_band else None
            row[f"peak_mag_{band}"] = min(d["magpsf"] for d in in_band) if in_band else None
            row[f"latest_mag_{band}"] = last["magpsf"] if last else None
            row[f"latest_jd_{band}"] = last["jd"] if last else None
        out[object_id] = row
    return out


def stored_objects(engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r.objectId: r._asdict() for r in conn.execute(select(objects))}


def assert_objects_match(engine):
    expected, stored = expected_objects(engine), stored_objects(engine)
    assert set(stored) == set(expected)
    for object_id, row in expected.items():
        for name, value in row.items():
            got = stored[object_id][name]
            if isinstance(value, float) and name in ("ra", "dec"):
                assert got == pytest.approx(value, abs=1e-9), (object_id, name)
            elif isinstance(value, float):
                assert got == pytest.approx(value, rel=1e-6), (object_id, name)
            else:
                assert got == value, (object_id, name)


@pytest.fixture
def nights(tmp_path):
    a = make_night(tmp_path / "ztf_public_20180819.tar.gz", night="20180819", n_alerts=40, seed=11)
    b = make_night(
        tmp_path / "ztf_public_20180820.tar.gz", night="20180820", n_alerts=30, seed=12, version="3.3"
    )
    return a, b


def test_objects_refresh_equals_brute_force(catalog, nights):
    a, b = nights
    catalog.ingest(a.path)
    refresh_objects(catalog.engine, a.object_ids)
    assert_objects_match(catalog.engine)
    catalog.ingest(b.path)
    assert refresh_objects(catalog.engine, b.object_ids) == len(set(b.object_ids))
    assert_objects_match(catalog.engine)
    incremental = stored_objects(catalog.engine)
    assert refresh_objects(catalog.engine) == len(incremental)  # a full rebuild gives the same rows
    assert stored_objects(catalog.engine) == incremental
    assert all(row["nlim"] > 0 for row in incremental.values()) or any(
        row["nlim"] for row in incremental.values()
    )

    catalog.delete(names=[b.path.name])
    refresh_objects(catalog.engine, b.object_ids)
    assert_objects_match(catalog.engine)
    assert not set(stored_objects(catalog.engine)) & (set(b.object_ids) - set(a.object_ids))


def test_objects_refresh_in_many_batches_equals_one_and_keeps_the_callers_settings(
    catalog, nights, monkeypatch
):
    a, b = nights
    catalog.ingest(a.path)
    catalog.ingest(b.path)
    ids = sorted(set(a.object_ids) | set(b.object_ids))
    assert_objects_match(catalog.engine)
    whole = stored_objects(catalog.engine)
    monkeypatch.setattr("ztfcat.science.objects.BATCH", 7)
    monkeypatch.setattr("ztfcat.science.objects.PG_BATCH", 7)
    with catalog.engine.begin() as conn:
        conn.execute(delete(objects))
    with catalog.engine.begin() as conn:
        assert refresh_objects(conn, reversed(ids)) == len(ids)
        if conn.dialect.name == "postgresql":  # the generic plans were the refresh's own
            assert conn.execute(text("SELECT current_setting('plan_cache_mode')")).scalar_one() == "auto"
    assert stored_objects(catalog.engine) == whole


def test_objects_mean_position_across_ra0_and_at_the_pole(catalog):
    rng = np.random.default_rng(1)
    ra = np.array([359.9999, 0.0001, 359.9998, 120.0, 300.0, 210.0])
    dec = np.array([10.0, 10.0001, 9.9999, 89.99999, 89.99999, 89.99999])
    fill(catalog.engine, ra, dec, rng, n_objects=None)
    with catalog.engine.begin() as conn:
        conn.execute(text("UPDATE alerts SET \"objectId\" = CASE WHEN dec > 80 THEN 'POLE' ELSE 'RA0' END"))
    refresh_objects(catalog.engine)
    stored = stored_objects(catalog.engine)
    assert min(stored["RA0"]["ra"], 360 - stored["RA0"]["ra"]) < 1e-3
    assert stored["RA0"]["dec"] == pytest.approx(10.0, abs=1e-3)
    assert stored["POLE"]["dec"] > 89.9999
    assert_objects_match(catalog.engine)


def test_objects_query_first_seen_and_bright(catalog, nights):
    for night in nights:
        catalog.ingest(night.path)
    refresh_objects(catalog.engine)
    everything = stored_objects(catalog.engine)
    start = min(r["first_jd"] for r in everything.values())
    window = (start + 0.1, start + 1.5)
    expected = sorted(
        o for o, r in everything.items() if window[0] <= r["first_jd"] <= window[1] and r["peak_mag"] < 18.5
    )
    result = catalog.objects("peak_mag < 18.5", first_jd=window)
    assert list(result["objectId"]) == expected and expected
    assert list(catalog.objects(columns=["objectId"], order_by="-peak_mag", limit=3)["objectId"]) == [
        o for o, _ in sorted(everything.items(), key=lambda kv: (-kv[1]["peak_mag"], kv[0]))[:3]
    ]
    with pytest.raises(InvalidQueryError, match="unknown column 'nope'"):
        catalog.objects("nope > 1")
    with pytest.raises(InvalidQueryError, match="wrong way round"):
        catalog.objects(first_jd=(window[1], window[0]))
    if catalog.engine.dialect.name == "sqlite":
        from ztfcat.science.objects import query_objects  # noqa: F401 - the same query, planned

        with catalog.engine.connect() as conn:
            plan = conn.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT * FROM objects WHERE first_jd BETWEEN :a AND :b AND peak_mag < 18"
                ),
                {"a": window[0], "b": window[1]},
            ).all()
        assert "ix_objects_first_jd_peak_mag" in " ".join(str(r) for r in plan)


# -- the commands -----------------------------------------------------------------------------------
def test_cli_xmatch_skymap_objects(catalog, nights, tmp_path):
    from ztfcat.cli.root import main

    for night in nights:
        catalog.ingest(night.path)
    catalog.refresh_objects()
    some = catalog.query(columns=["candid", "ra", "dec"], limit=5)
    csv_path = tmp_path / "list.csv"
    Table({"name": ["a", "b", "c", "d", "e"], "ra": some["ra"], "dec": some["dec"]}).write(
        csv_path, format="ascii.csv"
    )
    base = ["--database-url", catalog.database_url, "--data-dir", str(catalog.data_dir)]
    runner = CliRunner()
    result = runner.invoke(main, [*base, "xmatch", str(csv_path), "--radius", "1", "--format", "csv"])
    assert result.exit_code == 0, result.output
    out = Table.read(result.stdout, format="ascii.csv")
    assert set(some["candid"]) <= set(out["candid"])
    assert set(out["name"]) == {"a", "b", "c", "d", "e"}

    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    result = runner.invoke(main, [*base, "xmatch", str(bad), "--radius", "2"])
    assert result.exit_code == 1 and "bad.csv: no position column" in result.output
    assert len(result.output.strip().splitlines()) == 1

    path = tmp_path / "map.fits"
    flat_map(path, 8, "RING", 0.0, 0.0, 90.0)
    result = runner.invoke(main, [*base, "skymap", str(path), "--prob", "0.9", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "credible region" in result.stderr
    assert len(result.stdout.splitlines()) == len(catalog.skymap_search(path, 0.9))
    result = runner.invoke(main, [*base, "skymap", str(path), "--after", "2458400", "--before", "2458300"])
    assert result.exit_code == 1 and "wrong way round" in result.output

    result = runner.invoke(
        main, [*base, "objects", "--where", "ndet >= 1", "--format", "csv", "-c", "objectId,ndet"]
    )
    assert result.exit_code == 0, result.output
    listed = Table.read(result.stdout, format="ascii.csv")
    assert sorted(listed["objectId"]) == sorted(stored_objects(catalog.engine))


def test_upgrading_an_older_catalog_fills_its_objects(catalog, nights):
    from ztfcat.store.db import current_revision, upgrade
    from ztfcat.store.tables import HEAD_REVISION

    for night in nights:
        catalog.ingest(night.path)
    engine = catalog.engine
    with engine.begin() as conn:  # the catalog as revision 0002 left it: no objects table
        objects.drop(conn)
        conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))
    assert upgrade(engine) == HEAD_REVISION == current_revision(engine)
    assert len(stored_objects(engine)) == len({o for n in nights for o in n.object_ids})
    assert_objects_match(engine)


def test_crossmatch_is_a_few_statements_per_chunk_not_one_per_row(sky):
    from sqlalchemy import event

    qra, qdec = query_positions(sky, n=1000, seed=9)
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    engine = sky["catalog"].engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        result = sky["catalog"].crossmatch(Table({"ra": qra, "dec": qdec}), 5.0, chunk_size=500)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert_same(as_pairs(result), brute_pairs(sky, qra, qdec, 5.0))
    # per chunk: drop-if-exists check, create, (analyze, jit off), the join, drop; the ranges go in
    # through the driver in one batch
    assert len(statements) <= 2 * 8, statements
