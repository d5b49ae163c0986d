"""Cone search through ``hpx`` ranges must find exactly what a brute-force distance check finds."""

from __future__ import annotations

import functools
import math
import subprocess
import sys

import astropy.units as u
import numpy as np
import pytest
import sqlalchemy as sa
from astropy.coordinates import Angle, SkyCoord, angular_separation
from astropy_healpix import lonlat_to_healpix

from ztfcat.errors import InvalidQueryError
from ztfcat.store.sky import (
    HPX_END,
    HPX_ORDER,
    MAX_RANGES,
    cone_ranges,
    hpx_condition,
    hpx_index,
    merge_ranges,
    parse_position,
    parse_radius,
    separation_deg,
)


def offset(ra: float, dec: float, bearing: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points ``dist`` degrees from (ra, dec) along ``bearing`` (radians east of north)."""
    lat1, lon1, d = math.radians(dec), math.radians(ra), np.radians(dist)
    lat2 = np.arcsin(np.sin(lat1) * np.cos(d) + np.cos(lat1) * np.sin(d) * np.cos(bearing))
    lon2 = lon1 + np.arctan2(
        np.sin(bearing) * np.sin(d) * np.cos(lat1), np.cos(d) - np.sin(lat1) * np.sin(lat2)
    )
    return np.degrees(lon2) % 360.0, np.clip(np.degrees(lat2), -90.0, 90.0)


def catalog(rng: np.random.Generator, ra: float, dec: float, radius: float, n: int = 20_000):
    """20k points: clustered around the cone, many right on its edge, plus poles, RA 0/360 and sky."""
    parts = []
    k = n // 5
    # Inside and around the cone.
    parts.append(offset(ra, dec, rng.uniform(0, 2 * np.pi, k), radius * np.sqrt(rng.uniform(0, 4, k))))
    # On the edge, within one part in 10^6 either side: the points a lossy cover would drop.
    parts.append(offset(ra, dec, rng.uniform(0, 2 * np.pi, k), radius * (1 + rng.uniform(-1e-6, 1e-6, k))))
    # Hugging the edge a little further out and in.
    parts.append(offset(ra, dec, rng.uniform(0, 2 * np.pi, k), radius * rng.uniform(0.9, 1.1, k)))
    m = k // 4
    # Near both poles, RA near 0/360, and the whole sky.
    parts.append((rng.uniform(0, 360, m), 90 - 10 ** rng.uniform(-9, 0.5, m)))
    parts.append((rng.uniform(0, 360, m), -90 + 10 ** rng.uniform(-9, 0.5, m)))
    parts.append(((rng.choice([-1, 1], m) * 10 ** rng.uniform(-10, 0, m)) % 360, rng.uniform(-89, 89, m)))
    rest = n - sum(len(p[0]) for p in parts)
    parts.append((rng.uniform(0, 360, rest), np.degrees(np.arcsin(rng.uniform(-1, 1, rest)))))
    ras = np.concatenate([p[0] for p in parts])
    decs = np.concatenate([p[1] for p in parts])
    return ras, decs


_VALUES = sa.Table(
    "hpx_values", sa.MetaData(), sa.Column("i", sa.Integer), sa.Column("hpx", sa.BigInteger, index=True)
)


@functools.cache
def _sqlite() -> sa.Engine:
    engine = sa.create_engine("sqlite://")  # in memory, one connection kept for the whole module
    _VALUES.create(engine)
    return engine


def in_ranges(hpx, ranges) -> np.ndarray:
    """Which of ``hpx`` the catalog's SQL selects: :func:`hpx_condition` run by SQLite over the values."""
    values = np.atleast_1d(np.asarray(hpx, dtype=np.int64))
    with _sqlite().begin() as conn:
        conn.execute(_VALUES.delete())
        conn.exec_driver_sql(
            "INSERT INTO hpx_values (i, hpx) VALUES (?, ?)", list(enumerate(values.tolist()))
        )
        chosen = list(
            conn.execute(sa.select(_VALUES.c.i).where(hpx_condition(_VALUES.c.hpx, ranges))).scalars()
        )
    mask = np.zeros(values.shape, dtype=bool)
    mask[chosen] = True
    return mask


def check_cone(rng: np.random.Generator, ra: float, dec: float, radius: float) -> list[tuple[int, int]]:
    ras, decs = catalog(rng, ra, dec, radius)
    ranges = cone_ranges(ra, dec, radius)
    hpx = hpx_index(ras, decs)
    sep = separation_deg(ra, dec, ras, decs)
    truth = sep <= radius
    candidates = in_ranges(hpx, ranges)
    # Every point of the cone is among the candidates ...
    missed = np.flatnonzero(truth & ~candidates)
    assert missed.size == 0, f"cone ({ra}, {dec}, {radius}) missed {ras[missed][:5]}, {decs[missed][:5]}"
    # ... so candidates + exact check is exactly brute force.
    assert np.array_equal(candidates & (sep <= radius), truth)
    assert truth.sum() > 0
    assert len(ranges) <= MAX_RANGES
    return ranges


def test_hpx_order_fits_int64_and_nested_parents_are_shifts() -> None:
    assert HPX_END == 12 * 4**HPX_ORDER < 2**63
    rng = np.random.default_rng(1)
    ra = np.concatenate([rng.uniform(0, 360, 5000), [0.0, 359.9999999999, 12.0, 12.0]])
    dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 5000))), [0.0, 1.0, 90.0, -90.0]])
    fine = hpx_index(ra, dec)
    assert fine.dtype == np.int64 and fine.min() >= 0 and fine.max() < HPX_END
    for order in (0, 5, 12, 20, 28):
        coarse = lonlat_to_healpix(ra * u.deg, dec * u.deg, 2**order, order="nested")
        assert np.array_equal(fine >> (2 * (HPX_ORDER - order)), coarse)


def test_hpx_index_is_astropy_healpix_to_the_bit_without_importing_astropy() -> None:
    """The ingest's index is astropy_healpix's public function of Quantities, bit for bit, on random
    points, ZTF-like decimals, pixel boundaries of coarse orders, the poles and RA 0/360; computed in a
    fresh process that imports neither astropy nor astropy_healpix's package."""
    rng = np.random.default_rng(29)
    edges = np.linspace(-90, 90, 4097)  # many lie on or next to coarse pixel boundaries
    ra = np.concatenate(
        [rng.uniform(0, 360, 400_000), np.round(rng.uniform(0, 360, 100_000), 7), np.full(4097, 45.0),
         np.arange(0, 360, 0.5), [0.0, 359.99999999999994, 1e-300, 90.0, 180.0, 270.0]]
    )  # fmt: skip
    dec = np.concatenate(
        [np.degrees(np.arcsin(rng.uniform(-1, 1, 400_000))), np.round(rng.uniform(-30, 90, 100_000), 7),
         edges, np.full(720, 41.8103148957786), [90.0, -90.0, 0.0, 89.99999999999999, -41.8103148957786, 0.0]]
    )  # fmt: skip
    expected = lonlat_to_healpix(ra * u.deg, dec * u.deg, 2**HPX_ORDER, order="nested")
    code = (
        "import sys, numpy as np; from ztfcat.store.sky import hpx_index; "
        "ra, dec = np.frombuffer(sys.stdin.buffer.read()).reshape(2, -1); "
        "sys.stdout.buffer.write(hpx_index(ra, dec).tobytes()); "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('astropy', 'astropy_healpix') "
        "and m != 'astropy_healpix._core'], sorted(sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=np.stack([ra, dec]).tobytes(), capture_output=True, check=True
    )
    assert np.array_equal(np.frombuffer(done.stdout, dtype=np.int64), expected)


def test_hpx_index_falls_back_to_the_public_function(monkeypatch) -> None:
    """Where the extension module cannot be found on its own, the public route gives the same index."""
    from ztfcat.store import sky

    monkeypatch.delitem(sys.modules, "astropy_healpix._core", raising=False)
    monkeypatch.setattr(sky.importlib.util, "find_spec", lambda name: None)
    fallback = sky._load_core_ufunc()
    assert fallback.__name__ == "public"
    rng = np.random.default_rng(3)
    ra, dec = rng.uniform(0, 360, 1000), np.degrees(np.arcsin(rng.uniform(-1, 1, 1000)))
    got = np.asarray(fallback(np.radians(ra), np.radians(dec), sky._NSIDE_INTC)[0], np.int64)
    assert np.array_equal(got, hpx_index(ra, dec))


def test_hpx_index_scalar_and_wrapping() -> None:
    value = hpx_index(10.5, -20.25)
    assert isinstance(value, int)
    assert value == hpx_index(np.array([10.5]), np.array([-20.25]))[0]
    assert hpx_index(370.5, -20.25) == value
    assert hpx_index(-349.5, -20.25) == value
    with pytest.raises(ValueError):
        hpx_index(10.0, 91.0)
    with pytest.raises(ValueError):
        hpx_index(np.array([1.0, np.nan]), np.array([0.0, 0.0]))


@pytest.mark.parametrize("seed", range(6))
def test_random_cones_equal_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(8):
        radius = 10 ** rng.uniform(math.log10(0.5 / 3600), math.log10(2.0))
        ra = rng.uniform(0, 360)
        dec = np.degrees(np.arcsin(rng.uniform(-1, 1)))
        check_cone(rng, ra, dec, radius)


@pytest.mark.parametrize("radius_arcsec", [0.1, 0.5, 3.0, 60.0, 900.0, 3600.0, 7200.0, 18000.0])
@pytest.mark.parametrize("dec", [90.0, -90.0])
def test_cones_on_the_poles(radius_arcsec: float, dec: float) -> None:
    rng = np.random.default_rng(int(radius_arcsec * 10) + (dec > 0))
    check_cone(rng, 123.0, dec, radius_arcsec / 3600)


@pytest.mark.parametrize("radius", [0.5, 2.0, 6.0])
def test_cones_containing_a_pole_off_centre(radius: float) -> None:
    rng = np.random.default_rng(7)
    for sign in (1, -1):
        for ra in (0.0, 45.0, 200.0, 359.9):
            ranges = check_cone(rng, ra, sign * (90 - radius / 3), radius)
            pole = hpx_index(rng.uniform(0, 360, 50), np.full(50, sign * 90.0))
            assert in_ranges(pole, ranges).all()


@pytest.mark.parametrize("ra", [0.0, 359.99999, 1e-6, 360.0, -0.0001])
@pytest.mark.parametrize("radius_arcsec", [0.5, 20.0, 3600.0, 7200.0])
def test_cones_across_ra_zero(ra: float, radius_arcsec: float) -> None:
    rng = np.random.default_rng(11)
    for dec in (0.0, 45.0, -70.0):
        ranges = check_cone(rng, ra, dec, radius_arcsec / 3600)
        # Points on both sides of RA 0 inside the cone are candidates.
        d = radius_arcsec / 3600 / 2
        both = hpx_index(np.array([(ra - d / 2) % 360, (ra + d / 2) % 360]), np.array([dec, dec]))
        assert in_ranges(both, ranges).all()


def test_tiny_cone_finds_exact_position_and_range_count_stays_small() -> None:
    rng = np.random.default_rng(3)
    for _ in range(100):
        ra, dec = rng.uniform(0, 360), np.degrees(np.arcsin(rng.uniform(-1, 1)))
        ranges = cone_ranges(ra, dec, 0.1 / 3600)
        assert 1 <= len(ranges) <= 50
        assert in_ranges(np.array([hpx_index(ra, dec)]), ranges).all()
        assert all(lo < hi for lo, hi in ranges)
        assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert in_ranges(np.array([hpx_index(5.0, 5.0)]), cone_ranges(5.0, 5.0, 0.0)).all()


def test_candidate_area_is_close_to_the_cone() -> None:
    # The cover is a superset but a tight one: at most a few times the cone's area.
    for radius in (1 / 3600, 30 / 3600, 1.0):
        ranges = cone_ranges(150.0, 2.2, radius)
        cover_sr = sum(hi - lo for lo, hi in ranges) / HPX_END * 4 * math.pi
        cone_sr = 2 * math.pi * (1 - math.cos(math.radians(radius)))
        assert 1.0 < cover_sr / cone_sr < 4.0


def test_whole_sky_and_invalid_cones() -> None:
    assert cone_ranges(10, 10, 180) == [(0, HPX_END)]
    for bad in [(10, 91, 1), (10, 0, -1), (float("nan"), 0, 1), (0, 0, float("inf"))]:
        with pytest.raises(InvalidQueryError):
            cone_ranges(*bad)


def test_merge_ranges_caps_count_by_closing_smallest_gaps() -> None:
    assert merge_ranges([(5, 6), (0, 2), (2, 3), (10, 20), (1, 2)]) == [(0, 3), (5, 6), (10, 20)]
    assert merge_ranges([(0, 1), (3, 4), (100, 101)], max_ranges=2) == [(0, 4), (100, 101)]
    assert merge_ranges([(0, 1), (3, 4), (100, 101)], max_ranges=1) == [(0, 101)]


def test_separation_matches_astropy_and_is_stable_for_tiny_angles() -> None:
    rng = np.random.default_rng(5)
    ra1, ra2 = rng.uniform(0, 360, (2, 1000))
    dec1, dec2 = np.degrees(np.arcsin(rng.uniform(-1, 1, (2, 1000))))
    expected = angular_separation(ra1 * u.deg, dec1 * u.deg, ra2 * u.deg, dec2 * u.deg).to_value(u.deg)
    np.testing.assert_allclose(separation_deg(ra1, dec1, ra2, dec2), expected, rtol=1e-12, atol=1e-12)
    # 1 microarcsecond in dec, and across RA 0 at dec 60 (cos 60 = 1/2).
    assert separation_deg(10.0, 20.0, 10.0, 20.0 + 1e-6 / 3600) == pytest.approx(1e-6 / 3600, rel=1e-6)
    assert separation_deg(359.9999, 60.0, 0.0001, 60.0) == pytest.approx(0.0001, rel=1e-6)
    assert separation_deg(0.0, 90.0, 180.0, 89.0) == pytest.approx(1.0, rel=1e-12)
    assert separation_deg(0.0, 0.0, 180.0, 0.0) == pytest.approx(180.0)
    assert isinstance(separation_deg(1.0, 2.0, 3.0, 4.0), float)


def test_sqlite_query_with_ranges_matches_brute_force(tmp_path) -> None:
    rng = np.random.default_rng(9)
    ra0, dec0, radius = 359.99, 12.0, 30 / 3600
    ras, decs = catalog(rng, ra0, dec0, radius, n=5000)
    hpx = hpx_index(ras, decs)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'sky.sqlite'}")
    meta = sa.MetaData()
    table = sa.Table(
        "alert",
        meta,
        sa.Column("candid", sa.BigInteger, primary_key=True),
        sa.Column("ra", sa.Float),
        sa.Column("dec", sa.Float),
        sa.Column("hpx", sa.BigInteger, index=True),
    )
    meta.create_all(engine)
    rows = [
        {"candid": i, "ra": float(r), "dec": float(d), "hpx": int(h)}
        for i, (r, d, h) in enumerate(zip(ras, decs, hpx, strict=True))
    ]
    ranges = cone_ranges(ra0, dec0, radius)
    query = sa.select(table.c.candid, table.c.ra, table.c.dec).where(hpx_condition(table.c.hpx, ranges))
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
        found = conn.execute(query).all()
        # The plan of the very statement, with its integer bounds inlined (no user values involved).
        literal = query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(literal)))
    engine.dispose()
    assert "INDEX" in plan.upper()
    cand = np.array([r[0] for r in found])
    sep = separation_deg(ra0, dec0, [r[1] for r in found], [r[2] for r in found])
    selected = set(cand[sep <= radius].tolist())
    truth = set(np.flatnonzero(separation_deg(ra0, dec0, ras, decs) <= radius).tolist())
    assert selected == truth and len(truth) > 100
    # The index did the work: far fewer candidates than rows.
    assert len(found) < len(rows) / 2
    assert hpx_condition(table.c.hpx, []) is not None


def test_parse_radius() -> None:
    assert parse_radius(3.6) == pytest.approx(0.001)
    assert parse_radius(2 * u.arcmin) == pytest.approx(2 / 60)
    assert parse_radius(Angle(0.5, u.deg)) == pytest.approx(0.5)
    assert parse_radius("5 arcsec") == pytest.approx(5 / 3600)
    assert parse_radius("7.2") == pytest.approx(0.002)
    for bad in (-1, "five", 3 * u.m, float("nan")):
        with pytest.raises(InvalidQueryError):
            parse_radius(bad)


def test_parse_position() -> None:
    assert parse_position(10.5, -3.25) == (10.5, -3.25)
    assert parse_position(-10.0, 0.0) == (350.0, 0.0)
    assert parse_position(1 * u.hourangle, 30 * u.arcmin) == pytest.approx((15.0, 0.5))
    galactic = SkyCoord(l=0 * u.deg, b=0 * u.deg, frame="galactic")
    ra, dec = parse_position(galactic)
    assert (ra, dec) == pytest.approx((266.40499, -28.93617), abs=1e-4)
    assert parse_position("10.68 41.27") == pytest.approx((10.68, 41.27))
    assert parse_position("00h42m44.3s +41d16m09s") == pytest.approx((10.68458, 41.26917), abs=1e-4)
    assert parse_position("00:42:44.3 +41:16:09") == pytest.approx((10.68458, 41.26917), abs=1e-4)
    for bad in [(10.0, 95.0), ("nowhere", None), (10.0, None)]:
        with pytest.raises(InvalidQueryError):
            parse_position(*bad)
