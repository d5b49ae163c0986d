"""An integer sky index so that a cone search is a few integer range scans on any SQL database.

Each alert row carries ``hpx``, the HEALPix NESTED index of its (ra, dec) at order :data:`HPX_ORDER`.  In
the nested scheme the parent of a pixel at a coarser order is the index shifted right by two bits per
order, so every coarse pixel is one contiguous run of fine indices.  A cone therefore becomes a short list
of half-open ranges ``[lo, hi)`` of ``hpx`` that a plain B-tree index answers on SQLite and PostgreSQL
alike (no spatial extension), and the few candidate rows are then checked exactly with
:func:`separation_deg`.

The ranges are built by our own hierarchical descent rather than ``astropy_healpix``'s cone search,
because that one samples pixel boundaries and is known to miss pixels that graze the cone
(astropy-healpix issue 287); a cone search that silently drops alerts is worse than a slow one.  The
descent keeps every pixel whose centre is within ``radius + R(order)`` of the cone centre, where
``R(order)`` is a proven-by-measurement upper bound on the distance from a pixel's centre to any point of
the pixel, so the result is always a superset of the pixels the cone touches.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ztfcat.errors import InvalidQueryError

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement

#: HEALPix order of the stored ``hpx`` column.  29 is the finest order whose nested indices fit a signed
#: 64-bit integer (12 * 4**29 < 2**63, so SQLite INTEGER and PostgreSQL BIGINT hold it) and that
#: astropy_healpix supports (nside = 2**29 still fits its C int).  Its pixels are about 0.4 mas across,
#: far below ZTF's astrometric error, so the index never lumps distinct positions together, and any
#: coarser order is a plain bit shift of it.  Checked: for 10**6 random points, including points within
#: 1e-12 deg of the poles and of RA 360, ``index >> 2*(29 - k)`` equals the index computed at order k.
HPX_ORDER: int = 29
HPX_NSIDE: int = 1 << HPX_ORDER
#: One past the largest ``hpx`` value.
HPX_END: int = 12 << (2 * HPX_ORDER)

# Upper bound, in radians times nside, on the angular distance from a pixel's centre to any point of
# the pixel.  Measured on every pixel of orders 0-8 (boundaries sampled 16 points per edge): the maximum
# grows from 0.841 (order 0) to 1.0682 (order 8), converging to about 1.069; 1.25 leaves a wide margin.
_PIXRAD_NSIDE = 1.25
# Absolute padding of every cone radius, in degrees (3.6 mas): room for rounding in positions and in the
# index computation, ten times the order-29 pixel size.
_PAD_DEG = 1e-6
#: Default cap on the number of ranges one cone turns into.
MAX_RANGES: int = 32
# The descent refines boundary pixels until they are about this many times smaller than the radius.
_REFINE = 4.0


def hpx_index(ra: Any, dec: Any) -> int | np.ndarray:
    """HEALPix NESTED index at order :data:`HPX_ORDER` of positions in degrees.

    Parameters
    ----------
    ra, dec : float or array_like
        ICRS right ascension (any value, wrapped to [0, 360)) and declination in [-90, 90], degrees.

    Returns
    -------
    int or numpy.ndarray
        A Python ``int`` for scalar input (ready to bind in SQL), else an ``int64`` array of the
        broadcast shape.

    Raises
    ------
    ValueError
        A coordinate is not finite or a declination is outside [-90, 90]; a silently wrong index would
        hide the alert from every cone search.
    """
    ra_arr = np.asarray(ra, dtype=float)
    dec_arr = np.asarray(dec, dtype=float)
    if not (np.all(np.isfinite(ra_arr)) and np.all(np.isfinite(dec_arr))):
        raise ValueError("hpx_index: ra and dec must be finite")
    if np.any(np.abs(dec_arr) > 90.0):
        raise ValueError(f"hpx_index: declination outside [-90, 90]: {dec_arr[np.abs(dec_arr) > 90.0]}")
    ra_arr, dec_arr = np.broadcast_arrays(np.mod(ra_arr, 360.0), dec_arr)
    index = np.asarray(_lonlat_to_nested()(ra_arr, dec_arr), dtype=np.int64)
    if index.ndim == 0:
        return int(index)
    return index


@functools.cache
def _lonlat_to_nested() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``(ra, dec)`` in degrees to order-29 nested indices, by astropy_healpix's own C ufunc.

    Its public ``lonlat_to_healpix`` takes astropy Quantities, and importing the package imports
    ``astropy.units`` and ``astropy.coordinates``: about 26 MB of resident memory and 0.3 s in every
    ingest process (a fleet worker among them) for one multiplication by pi/180.  So the compiled
    ``_core`` module is loaded from the package's folder without running the package's ``__init__``,
    and given radians as ``Quantity.to_value(u.rad)`` computes them (the same one multiplication, so
    the same bits, checked in tests/test_sky.py).  The module registers itself under its own name, so
    the package, imported later (a cone search), uses the same one.  If that module is not where this expects it (another
    astropy_healpix layout), the public function is used.
    """
    import importlib.machinery
    import importlib.util

    spec = importlib.util.find_spec("astropy_healpix")  # finds the package, runs nothing
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            core = importlib.util.spec_from_file_location("astropy_healpix._core", f"{folder}/_core{suffix}")
            if core is None or core.loader is None or not os.path.isfile(core.origin or ""):
                continue
            try:
                module = importlib.util.module_from_spec(core)
                core.loader.exec_module(module)
                ufunc = module.lonlat_to_healpix_nested
            except (ImportError, AttributeError, OSError):
                break
            nside = np.asarray(HPX_NSIDE, dtype=np.intc)
            return lambda ra, dec: ufunc(ra * _RAD_PER_DEG, dec * _RAD_PER_DEG, nside)[0]
    import astropy.units as u
    from astropy_healpix import lonlat_to_healpix

    return lambda ra, dec: lonlat_to_healpix(ra * u.deg, dec * u.deg, HPX_NSIDE, order="nested")


# astropy's degree: ``pi / 180.0`` radians, the factor ``Quantity.to_value(u.rad)`` multiplies by.
_RAD_PER_DEG = math.pi / 180.0


def separation_deg(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray | float:
    """Angular distance in degrees between positions given in degrees (broadcasting).

    Uses the Vincenty formula (``atan2`` of the cross and dot products), which stays accurate both for
    sub-milliarcsecond separations, where the law of cosines loses everything to rounding, and near 180
    degrees, where haversine does.
    """
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    dlon = lon2 - lon1
    sin_dlon, cos_dlon = np.sin(dlon), np.cos(dlon)
    sin1, cos1 = np.sin(lat1), np.cos(lat1)
    sin2, cos2 = np.sin(lat2), np.cos(lat2)
    num1 = cos2 * sin_dlon
    num2 = cos1 * sin2 - sin1 * cos2 * cos_dlon
    denom = sin1 * sin2 + cos1 * cos2 * cos_dlon
    result = np.degrees(np.arctan2(np.hypot(num1, num2), denom))
    return float(result) if np.ndim(result) == 0 else result


def _centres(pixels: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres, in degrees, of nested pixels at ``order``."""
    import astropy.units as u
    from astropy_healpix import healpix_to_lonlat

    lon, lat = healpix_to_lonlat(pixels, 1 << order, order="nested")
    return lon.to_value(u.deg), lat.to_value(u.deg)


def _cover(ra: float, dec: float, radius: float, max_order: int) -> list[tuple[int, int]]:
    """Nested pixels ``(order, pixel)`` that together contain every point within ``radius`` degrees.

    Pixels wholly inside the cone are kept as they are; pixels that straddle its edge are split into
    their four children down to ``max_order``; pixels surely outside are dropped.
    """
    kept: list[tuple[int, int]] = []
    pixels = np.arange(12, dtype=np.int64)
    for order in range(max_order + 1):
        if pixels.size == 0:
            break
        bound = math.degrees(_PIXRAD_NSIDE / (1 << order))
        lon, lat = _centres(pixels, order)
        dist = np.asarray(separation_deg(ra, dec, lon, lat))
        near = dist <= radius + bound
        inside = dist + bound <= radius
        if order == max_order:
            kept.extend((order, int(p)) for p in pixels[near])
            break
        kept.extend((order, int(p)) for p in pixels[inside])
        edge = pixels[near & ~inside]
        pixels = (edge[:, None] * 4 + np.arange(4, dtype=np.int64)).ravel()
    return kept


def merge_ranges(ranges: Sequence[tuple[int, int]], max_ranges: int = MAX_RANGES) -> list[tuple[int, int]]:
    """Sort half-open ranges, join touching or overlapping ones, then close the smallest gaps.

    Closing a gap only adds candidate rows (later rejected by the exact distance check), never loses
    one, so capping the count keeps the SQL short without harming correctness.
    """
    if max_ranges < 1:
        raise ValueError(f"max_ranges must be at least 1, not {max_ranges}")
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    while len(merged) > max_ranges:
        gaps = [merged[i + 1][0] - merged[i][1] for i in range(len(merged) - 1)]
        i = min(range(len(gaps)), key=gaps.__getitem__)
        merged[i][1] = merged[i + 1][1]
        del merged[i + 1]
    return [(lo, hi) for lo, hi in merged]


def cone_ranges(
    ra: float, dec: float, radius_deg: float, max_ranges: int = MAX_RANGES
) -> list[tuple[int, int]]:
    """Half-open ranges ``[lo, hi)`` of ``hpx`` that hold every position within a cone.

    Parameters
    ----------
    ra, dec : float
        Cone centre in degrees (ICRS).
    radius_deg : float
        Cone radius in degrees; 0 is allowed (an exact-position lookup), 180 or more is the whole sky.
    max_ranges : int
        Upper bound on the number of ranges returned, so the SQL ``OR`` stays short.

    Returns
    -------
    list of (int, int)
        Sorted, disjoint ranges at order :data:`HPX_ORDER`.  Their union is a superset of the cone
        (padded by a few mas); rows found with them must still pass an exact :func:`separation_deg`
        check.  Correct across RA 0/360 and at and around the poles, since the descent works on
        distances, never on RA intervals.
    """
    ra = float(ra)
    dec = float(dec)
    radius = float(radius_deg)
    if not (math.isfinite(ra) and math.isfinite(dec) and math.isfinite(radius)):
        raise InvalidQueryError(f"cone ({ra}, {dec}, r={radius}) must have finite values")
    if abs(dec) > 90.0:
        raise InvalidQueryError(f"cone centre declination {dec} is outside [-90, 90]")
    if radius < 0:
        raise InvalidQueryError(f"cone radius {radius} deg is negative")
    if radius >= 180.0:
        return [(0, HPX_END)]
    ra = ra % 360.0
    radius += _PAD_DEG
    # Stop refining once boundary pixels are about radius / _REFINE across (pixel side ~ 58.6 deg / nside).
    side0 = math.degrees(math.sqrt(math.pi / 3.0))
    max_order = min(HPX_ORDER, max(0, math.ceil(math.log2(side0 * _REFINE / radius))))
    ranges = [
        (p << (2 * (HPX_ORDER - order)), (p + 1) << (2 * (HPX_ORDER - order)))
        for order, p in _cover(ra, dec, radius, max_order)
    ]
    return merge_ranges(ranges, max_ranges)


def hpx_condition(column: ColumnElement[Any], ranges: Sequence[tuple[int, int]]) -> ColumnElement[bool]:
    """SQLAlchemy ``WHERE`` clause ``(col >= lo1 AND col < hi1) OR ...`` with bound parameters.

    Each range is a separate index range scan on SQLite and PostgreSQL; values are bound, never
    formatted into the SQL text.
    """
    from sqlalchemy import and_, false, or_

    if not ranges:
        return false()
    return or_(*(and_(column >= lo, column < hi) for lo, hi in ranges))


def parse_radius(radius: Any) -> float:
    """A search radius in degrees: a plain number is arcseconds; a Quantity, Angle or string has units.

    Strings such as ``"5 arcsec"`` or ``"0.5 deg"`` are read with astropy; a unitless string is
    arcseconds like a number.  Arcseconds are the default because that is the scale of alert
    cross-matching.

    Raises
    ------
    InvalidQueryError
        Not an angle, negative or not finite.
    """
    import astropy.units as u

    try:
        if isinstance(radius, u.Quantity):
            value = radius.to_value(u.deg)
        elif isinstance(radius, str):
            quantity = u.Quantity(radius)
            unit = u.arcsec if quantity.unit == u.dimensionless_unscaled else quantity.unit
            value = (quantity.value * unit).to_value(u.deg)
        else:
            value = float(radius) / 3600.0
    except (TypeError, ValueError, u.UnitsError) as exc:
        raise InvalidQueryError(f"cannot read a search radius from {radius!r}: {exc}") from exc
    value = float(np.asarray(value))
    if not math.isfinite(value) or value < 0:
        raise InvalidQueryError(f"search radius {radius!r} must be finite and not negative")
    return value


def parse_position(ra: Any, dec: Any = None) -> tuple[float, float]:
    """A sky position as ICRS ``(ra, dec)`` in degrees, ra in [0, 360).

    Accepts two numbers in degrees, two Quantities/Angles, a ``SkyCoord`` in any frame (converted to
    ICRS) or, with ``dec`` omitted, a string such as ``"10.68 41.27"`` (degrees) or
    ``"00h42m44.3s +41d16m09s"`` / ``"00:42:44.3 +41:16:09"`` (sexagesimal RA in hours).

    Raises
    ------
    InvalidQueryError
        The input is not a single valid position.
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    try:
        if isinstance(ra, SkyCoord):
            if dec is not None:
                raise ValueError("dec must be omitted when a SkyCoord is given")
            coord = ra.icrs
            ra_deg, dec_deg = coord.ra.deg, coord.dec.deg
        elif dec is None:
            if not isinstance(ra, str):
                raise ValueError("dec is missing")
            sexagesimal = any(c in ra for c in ":hms")
            unit = (u.hourangle, u.deg) if sexagesimal else (u.deg, u.deg)
            coord = SkyCoord(ra, unit=unit, frame="icrs")
            ra_deg, dec_deg = coord.ra.deg, coord.dec.deg
        else:
            ra_deg = ra.to_value(u.deg) if isinstance(ra, u.Quantity) else float(ra)
            dec_deg = dec.to_value(u.deg) if isinstance(dec, u.Quantity) else float(dec)
        ra_deg = float(np.asarray(ra_deg))
        dec_deg = float(np.asarray(dec_deg))
    except (TypeError, ValueError, u.UnitsError) as exc:
        raise InvalidQueryError(f"cannot read a sky position from {ra!r}, {dec!r}: {exc}") from exc
    if not (math.isfinite(ra_deg) and math.isfinite(dec_deg)) or abs(dec_deg) > 90.0:
        raise InvalidQueryError(f"position ({ra_deg}, {dec_deg}) is not a valid ICRS position")
    ra_deg %= 360.0
    return (0.0 if ra_deg == 360.0 else ra_deg), dec_deg


# Levels whose every pixel centre is kept as unit vectors once computed (order 7: 196,608 pixels, 4.7 MB),
# so the coarse half of a many-cone descent is a gather instead of a HEALPix computation.
_CACHED_LEVELS = 7
_UNIT_CENTRES: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _unit_centres(level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors of the centres of every nested pixel at ``level`` (computed on first use)."""
    if level not in _UNIT_CENTRES:
        from astropy_healpix import healpix_to_xyz

        xyz = healpix_to_xyz(np.arange(12 << (2 * level), dtype=np.int64), 1 << level, order="nested")
        _UNIT_CENTRES[level] = tuple(np.ascontiguousarray(c, dtype=np.float64) for c in xyz)
    return _UNIT_CENTRES[level]


def cover_pixels(ra: Any, dec: Any, radius_deg: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Nested pixels at ``order`` that may hold a point within ``radius_deg`` of each of many positions.

    The many-cone form of the descent behind :func:`cone_ranges`, vectorised over positions so that a
    cross-match of a long list costs a few numpy passes per order instead of one Python descent per
    row.  It keeps every pixel whose centre is within ``radius + R(order)`` of a position, with the same
    proven bound ``R``, so the pixels returned for a position always contain its whole cone (padded by
    a few mas); they are a superset, and the rows they select still need an exact distance check.

    The distance test is a dot product of unit vectors against ``cos(radius + R + 1e-7 rad)``: three
    multiplications instead of Vincenty's trigonometry, with the extra 20 mas far above the rounding of
    the dot product (about 1e-16 against a step of ``sin(angle) * 1e-7``), so it can only keep more.

    Parameters
    ----------
    ra, dec : array_like
        Positions in degrees (ICRS), already validated (finite, ``|dec| <= 90``).
    radius_deg : float
        One radius for all positions, degrees.
    order : int
        HEALPix order of the pixels returned, 0 to :data:`HPX_ORDER`.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(position, pixel)``: the index of the position in the input and a nested pixel at ``order``,
        sorted by pixel then position, each pair once.
    """
    from astropy_healpix import healpix_to_xyz

    lon = np.radians(np.asarray(ra, dtype=float).reshape(-1))
    lat = np.radians(np.asarray(dec, dtype=float).reshape(-1))
    px, py, pz = np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)
    radius = math.radians(float(radius_deg) + _PAD_DEG) + 1e-7
    n = lon.size
    position = np.repeat(np.arange(n, dtype=np.int64), 12)
    pixels = np.tile(np.arange(12, dtype=np.int64), n)
    for level in range(order + 1):
        threshold = math.cos(min(math.pi, radius + _PIXRAD_NSIDE / (1 << level)))
        if level <= _CACHED_LEVELS:
            cx, cy, cz = (column[pixels] for column in _unit_centres(level))
        else:
            cx, cy, cz = healpix_to_xyz(pixels, 1 << level, order="nested")
        near = px[position] * cx + py[position] * cy + pz[position] * cz >= threshold
        position, pixels = position[near], pixels[near]
        if level < order:
            position = np.repeat(position, 4)
            pixels = (pixels[:, None] * 4 + np.arange(4, dtype=np.int64)).ravel()
    keys = np.lexsort((position, pixels))
    return position[keys], pixels[keys]


def pixel_ranges(pixels: np.ndarray, order: int) -> np.ndarray:
    """Sorted, disjoint half-open ``hpx`` ranges (an ``(n, 2)`` int64 array) covering nested ``pixels``.

    Touching ranges are joined, so sibling pixels become one index range scan.
    """
    shift = 2 * (HPX_ORDER - int(order))
    values = np.asarray(pixels, dtype=np.int64).reshape(-1)
    if values.size > 1 and not bool(np.all(values[1:] >= values[:-1])):
        values = np.sort(values)
    unique = values[np.r_[True, values[1:] != values[:-1]]] if values.size else values
    if unique.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, np.diff(unique) != 1])
    ends = np.r_[starts[1:], unique.size] - 1
    return np.stack([unique[starts] << shift, (unique[ends] + 1) << shift], axis=1)
