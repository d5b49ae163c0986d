"""Cross-match a list of positions with the catalog: every alert (or the nearest) within a radius of each.

A list of 100,000 positions is not 100,000 cone searches.  Each chunk of the input goes through the
vectorised HEALPix descent (:func:`ztfcat.store.sky.cover_pixels`), which gives every position the few pixels
at one order that can hold an alert within the radius; the distinct pixels become ``hpx`` ranges, read in
one join through the index (:func:`.common.rows_in_ranges`); each alert found is paired back with the
positions that share its pixel, and the exact separation (:func:`ztfcat.store.sky.separation_deg`) decides.
The answer is exactly the brute-force one, poles and RA 0/360 included, in a few statements per chunk.

Chunks bound the memory: a million-row CSV is read and matched ``chunk_size`` rows at a time.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from ..errors import InvalidQueryError
from ..store.filters import DEFAULT_COLUMNS, column, where_clauses
from ..store.lightcurve import sql_column
from ..store.sky import _PIXRAD_NSIDE, HPX_ORDER, cover_pixels, parse_radius, pixel_ranges, separation_deg
from ..store.tables import alerts
from .common import check_window, rows_in_ranges, window_clauses

#: Input rows matched at a time: bounds memory (about 50 MB at the peak of the descent).
CHUNK_SIZE = 20_000
# The pixels are chosen so that their centre-to-corner bound R(order) is at least this many radii:
# coarser means fewer pixels per position (often one and its neighbours), finer means fewer candidate
# rows; past a few radii the extra rows are negligible against the index probes.
_PIXELS_PER_RADIUS = 4.0
# Never coarser than this order (about 1.8 deg pixels), so a big radius still gets a useful cover.
_MIN_ORDER = 5
_HPX, _RA, _DEC, _KEY = "_xm_hpx", "_xm_ra", "_xm_dec", "_xm_candid"


def match_order(radius_deg: float) -> int:
    """HEALPix order of the pixels a cross-match of this radius uses (see ``_PIXELS_PER_RADIUS``)."""
    if radius_deg <= 0:
        return HPX_ORDER
    order = math.floor(math.log2(_PIXRAD_NSIDE / (_PIXELS_PER_RADIUS * math.radians(radius_deg))))
    return int(min(HPX_ORDER - 3, max(_MIN_ORDER, order)))


# -- the input -------------------------------------------------------------------------------------
def _describe(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return str(source)
    return type(source).__name__


def _find(names: Sequence[str], wanted: str) -> str | None:
    if wanted in names:
        return wanted
    folded = [n for n in names if n.lower() == wanted.lower()]
    return folded[0] if len(folded) == 1 else None


def _position_names(names: Sequence[str], ra_col: str, dec_col: str, where: str) -> tuple[str, str]:
    ra_name, dec_name = _find(names, ra_col), _find(names, dec_col)
    if ra_name is None or dec_name is None:
        missing = " and ".join(repr(c) for c, n in ((ra_col, ra_name), (dec_col, dec_name)) if n is None)
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") or "none"
        raise InvalidQueryError(
            f"{where}: no position column {missing} (columns: {shown}); name them with ra_col=/dec_col= "
            "(--ra-col/--dec-col)"
        )
    return ra_name, dec_name


def _csv_chunks(path: Path, ra_col: str, dec_col: str, chunk_size: int) -> Iterator[Any]:
    """Astropy tables of ``chunk_size`` data rows of a CSV file, each parsed with the header."""
    from astropy.io import ascii

    if not path.is_file():
        raise InvalidQueryError(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8") as handle:
        header = handle.readline()
        names = next(csv.reader([header]), [])
        _position_names([n.strip() for n in names], ra_col, dec_col, str(path))
        while True:
            lines = [line for line in itertools.islice(handle, chunk_size) if line.strip()]
            if not lines:
                return
            try:
                yield ascii.read([header, *lines], format="csv", guess=False)
            except (ValueError, ascii.InconsistentTableError) as exc:
                raise InvalidQueryError(f"{path}: cannot read as CSV: {exc}") from exc


def input_chunks(source: Any, ra_col: str, dec_col: str, chunk_size: int) -> Iterator[Any]:
    """The input as astropy tables of at most ``chunk_size`` rows, whatever its kind."""
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    if isinstance(source, str | os.PathLike):
        yield from _csv_chunks(Path(source), ra_col, dec_col, chunk_size)
        return
    if isinstance(source, SkyCoord):
        coord = source.icrs
        if coord.isscalar:
            coord = coord.reshape(1)
        for start in range(0, len(coord), chunk_size):
            part = coord[start : start + chunk_size]
            yield Table({ra_col: part.ra.deg, dec_col: part.dec.deg})
        return
    if type(source).__module__.split(".")[0] == "pandas":
        for start in range(0, len(source), chunk_size):
            yield Table.from_pandas(source.iloc[start : start + chunk_size])
        return
    if isinstance(source, Table):
        for start in range(0, len(source), chunk_size):
            yield source[start : start + chunk_size]
        return
    raise InvalidQueryError(
        f"cannot cross-match a {type(source).__name__}: give an astropy Table, a pandas DataFrame, a "
        "SkyCoord or the path of a CSV file"
    )


def _degrees(col: Any, name: str, hours: bool) -> np.ndarray:
    import astropy.units as u
    from astropy.coordinates import Angle

    if getattr(col, "unit", None) is not None and col.unit != u.dimensionless_unscaled:
        return np.asarray(u.Quantity(col).to_value(u.deg), dtype=float)
    values = (
        np.ma.filled(np.ma.asarray(col).astype(float, copy=False), np.nan)
        if col.dtype.kind in "iuf"
        else None
    )
    if values is not None:
        return np.asarray(values, dtype=float)
    # Text: sexagesimal (RA in hours when it has h/m/s or colons) or decimal degrees.
    text = [str(v) for v in col]
    try:
        sexagesimal = hours and any(c in text[0] for c in ":hms") if text else False
        return Angle(text, unit=u.hourangle if sexagesimal else u.deg).deg
    except (ValueError, u.UnitsError) as exc:
        raise InvalidQueryError(f"column {name!r}: cannot read angles: {exc}") from exc


def positions(
    table: Any, ra_col: str, dec_col: str, where: str, offset: int
) -> tuple[np.ndarray, np.ndarray]:
    """ICRS degrees of a chunk's rows; a bad row is an error naming its number in the whole input."""
    ra_name, dec_name = _position_names(table.colnames, ra_col, dec_col, where)
    ra = _degrees(table[ra_name], ra_name, hours=True)
    dec = _degrees(table[dec_name], dec_name, hours=False)
    bad = ~(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidQueryError(
            f"{where}: row {offset + i}: ({ra[i]}, {dec[i]}) is not a valid position "
            f"({int(bad.sum())} such rows in this chunk)"
        )
    return np.mod(ra, 360.0), dec


# -- the match -------------------------------------------------------------------------------------
def pair_up(
    pos_of_pair: np.ndarray,
    pix_of_pair: np.ndarray,
    row_pixels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, position) pair whose pixels agree, from pairs sorted by pixel; in numpy."""
    lo = np.searchsorted(pix_of_pair, row_pixels, side="left")
    hi = np.searchsorted(pix_of_pair, row_pixels, side="right")
    counts = hi - lo
    row = np.repeat(np.arange(row_pixels.size, dtype=np.int64), counts)
    starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
    pair = starts + np.arange(row.size, dtype=np.int64)
    return row, pos_of_pair[pair]


def iter_crossmatch(
    engine: Engine,
    source: Any,
    radius: Any,
    *conditions: str,
    ra_col: str = "ra",
    dec_col: str = "dec",
    columns: Sequence[str] | None = None,
    nearest: bool = False,
    jd: Any = None,
    chunk_size: int = CHUNK_SIZE,
    **filters: Any,
) -> Iterator[Any]:
    """The cross-match one input chunk at a time (astropy tables); see :func:`crossmatch`.

    What the CLI streams, so that a million-row list never has its whole answer in memory either.
    """
    from astropy.table import Table, hstack

    radius_deg = parse_radius(radius)
    if radius_deg <= 0:
        raise InvalidQueryError(f"cross-match radius {radius!r} must be positive")
    if chunk_size < 1:
        raise InvalidQueryError(f"chunk_size must be at least 1, not {chunk_size}")
    window = check_window(jd)
    if columns is None:
        columns = DEFAULT_COLUMNS
    selected = [column(n) for n in columns]
    clauses = [*where_clauses(conditions, filters), *window_clauses(window)]
    order = match_order(radius_deg)
    shift = 2 * (HPX_ORDER - order)
    where = _describe(source)
    query_columns = [
        alerts.c.hpx.label(_HPX),
        alerts.c.ra.label(_RA),
        alerts.c.dec.label(_DEC),
        alerts.c.candid.label(_KEY),
        *selected,
    ]
    offset = 0
    with engine.connect() as conn:
        for chunk in input_chunks(source, ra_col, dec_col, chunk_size):
            ra, dec = positions(chunk, ra_col, dec_col, where, offset)
            pos_of_pair, pix_of_pair = cover_pixels(ra, dec, radius_deg, order)
            rows = rows_in_ranges(conn, pixel_ranges(pix_of_pair, order), query_columns, clauses)
            hpx = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            row_ra = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
            row_dec = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
            candid = np.fromiter((r[3] for r in rows), dtype=np.int64, count=len(rows))
            row, pos = pair_up(pos_of_pair, pix_of_pair, hpx >> shift)
            sep = np.asarray(separation_deg(ra[pos], dec[pos], row_ra[row], row_dec[row]), dtype=float)
            keep = sep <= radius_deg
            row, pos, sep = row[keep], pos[keep], sep[keep].reshape(-1)
            keys = np.lexsort((candid[row], sep, pos))
            row, pos, sep = row[keys], pos[keys], sep[keys]
            if nearest and pos.size:
                first = np.r_[True, pos[1:] != pos[:-1]]
                row, pos, sep = row[first], pos[first], sep[first]
            yield _assemble(chunk, selected, rows, row, pos, sep, offset, Table, hstack)
            offset += len(chunk)
        conn.rollback()


def _assemble(chunk, selected, rows, row, pos, sep, offset, Table, hstack):
    """One output table: input_row, the input's columns, the alert's columns, separation (arcsec)."""
    alert_names = {c.name for c in selected} | {"separation", "input_row"}
    left = chunk[pos]
    for name in list(left.colnames):
        if name in alert_names:
            left.rename_column(name, f"input_{name}")
    left.add_column(pos + offset, name="input_row", index=0)
    right = Table()
    base = 4
    for i, col in enumerate(selected):
        right[col.name] = sql_column(col.name, [rows[j][base + i] for j in row], col.type)
    right["separation"] = sep * 3600.0
    right["separation"].unit = "arcsec"
    table = hstack([left, right], join_type="exact", metadata_conflicts="silent")
    return table


def crossmatch(
    engine: Engine,
    source: Any,
    radius: Any,
    *conditions: str,
    ra_col: str = "ra",
    dec_col: str = "dec",
    columns: Sequence[str] | None = None,
    nearest: bool = False,
    jd: Any = None,
    chunk_size: int = CHUNK_SIZE,
    **filters: Any,
):
    """Every alert within ``radius`` of each input position (or the nearest one), with the input's columns.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The catalog's engine (``Catalog.engine``).
    source : astropy.table.Table, pandas.DataFrame, SkyCoord or path
        The positions: a table or data frame with columns ``ra_col``/``dec_col`` (degrees, a unit, or
        sexagesimal text), a SkyCoord (any frame; converted to ICRS), or a CSV file with a header line.
    radius : float, Quantity, Angle or str
        Match radius; a number is arcseconds.  Must be positive.
    *conditions : str
        Filters on the alerts, as for ``Catalog.query`` (``"rb > 0.65"``, ``"fid = 1"``).
    ra_col, dec_col : str
        Names of the position columns (an exact match first, then case-insensitive).
    columns : sequence of str, optional
        Alert columns to return (default: those ``Catalog.query`` returns).
    nearest : bool
        Keep only the nearest alert of each input row (ties: the smallest candid).
    jd : (float, float), optional
        Only alerts with ``start <= jd <= end`` (either end may be None).
    chunk_size : int
        Input rows matched at a time, which bounds memory.
    **filters
        Keyword filters as for ``Catalog.query`` (``fid=1``, ``night=...``).

    Returns
    -------
    astropy.table.Table
        One row per (input row, alert) pair within the radius, ordered by input row then separation:
        ``input_row`` (0-based position in the input), the input's columns (renamed ``input_<name>``
        where an alert column has the same name, e.g. ``input_ra``), the alert columns and
        ``separation`` in arcsec.  Input rows without a match are absent.

    Raises
    ------
    InvalidQueryError
        A radius that is not positive, a window the wrong way round, a CSV without the position
        columns, a row that is not a position, a filter on an unknown column.
    """
    from astropy.table import vstack

    parts = list(
        iter_crossmatch(
            engine,
            source,
            radius,
            *conditions,
            ra_col=ra_col,
            dec_col=dec_col,
            columns=columns,
            nearest=nearest,
            jd=jd,
            chunk_size=chunk_size,
            **filters,
        )
    )
    if not parts:
        from astropy.table import Table

        return Table()
    if len(parts) == 1:
        return parts[0]
    return vstack(parts, join_type="exact", metadata_conflicts="silent")
