"""Follow up a sky map: the alerts inside a credible region of a gravitational-wave (or any) localisation.

Sky maps come as LIGO/Virgo/KAGRA multi-order FITS files (``UNIQ`` and ``PROBDENSITY`` columns), flat
HEALPix maps (``RING`` or ``NESTED``, one probability per pixel) or MOCs (a ``mocpy.MOC`` or a MOC FITS
file, which is already a region).  Every HEALPix pixel is a contiguous run of the order-29 ``hpx``
index, so the credible region -- the most probable pixels, by probability density, until their
probability adds up to ``credible`` -- is a sorted list of ``hpx`` ranges, and the alerts inside it are
one range join through the index (:func:`.common.rows_in_ranges`).  Membership is exact: an alert is in
the region when the map pixel that contains it is, which is also what a brute-force check does.

FITS files are read with astropy alone (no healpy); mocpy is only needed to hand in a ``MOC`` object.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, exists, select, union

from ..errors import InvalidQueryError
from ..store.filters import DEFAULT_COLUMNS, column, where_clauses
from ..store.lightcurve import sql_column
from ..store.sky import HPX_ORDER
from ..store.tables import alerts, prv_candidates
from .common import check_window, rows_in_ranges, window_clauses

_HPX = "_sm_hpx"


@dataclass
class Region:
    """Sorted, disjoint ``hpx`` ranges of a selected region, with what each range's pixel is worth.

    Attributes
    ----------
    lo, hi : numpy.ndarray
        Half-open order-29 ranges, one per map pixel kept, sorted by ``lo``.
    level : numpy.ndarray or None
        Credible level of each pixel: the probability of all pixels at least as dense, itself included
        (None for a MOC, which has no probabilities).
    density : numpy.ndarray or None
        Probability per steradian of each pixel.
    area_deg2 : float
        Area of the region.
    """

    lo: np.ndarray
    hi: np.ndarray
    level: np.ndarray | None
    density: np.ndarray | None
    area_deg2: float


def _pixel_area_sr(order: np.ndarray) -> np.ndarray:
    return 4.0 * math.pi / (12.0 * np.power(4.0, order))


def uniq_to_order_ipix(uniq: Any) -> tuple[np.ndarray, np.ndarray]:
    """Order and nested index of NUNIQ pixel numbers (``uniq = 4 * 4**order + ipix``), in exact integers."""
    uniq = np.asarray(uniq, dtype=np.int64).reshape(-1)
    if uniq.size and (uniq.min() < 4 or uniq.max() >= 4 * 4 ** (HPX_ORDER + 1)):
        raise ValueError("UNIQ values outside the orders 0-29")
    order = np.zeros(uniq.shape, dtype=np.int64)
    for o in range(1, HPX_ORDER + 1):
        order[uniq >= 4 * 4**o] = o
    return order, uniq - 4 * np.power(4, order, dtype=np.int64)


@dataclass
class _Map:
    order: np.ndarray
    ipix: np.ndarray
    density: np.ndarray | None  # None: a MOC, every pixel is in the region


def _flat(values: np.ndarray, header: Any, where: str, pixels: np.ndarray | None = None) -> _Map:
    from astropy_healpix.core import ring_to_nested

    ordering = str(header.get("ORDERING", "")).strip().upper()
    if ordering not in ("RING", "NESTED"):
        raise InvalidQueryError(f"{where}: not a HEALPix map (ORDERING is {ordering or 'missing'!r})")
    values = np.asarray(values, dtype=float).reshape(-1)
    if pixels is None:
        npix = values.size
        nside = int(header.get("NSIDE", round(math.sqrt(npix / 12)))) if npix else 0
        if npix == 0 or npix != 12 * nside * nside:
            raise InvalidQueryError(f"{where}: {npix} values is not a full HEALPix map (12 * NSIDE**2)")
        ipix = np.arange(npix, dtype=np.int64)
    else:
        nside = int(header.get("NSIDE", 0))
        ipix = np.asarray(pixels, dtype=np.int64).reshape(-1)
    order = int(round(math.log2(nside))) if nside > 0 else -1
    if nside <= 0 or (1 << order) != nside or order > HPX_ORDER:
        raise InvalidQueryError(f"{where}: NSIDE {nside} is not a power of two up to 2**{HPX_ORDER}")
    if ordering == "RING":
        ipix = np.asarray(ring_to_nested(ipix, nside), dtype=np.int64)
    values = np.where(np.isfinite(values), values, 0.0)  # UNSEEN / NaN pixels hold no probability
    area = _pixel_area_sr(np.array(order))
    return _Map(np.full(ipix.shape, order, dtype=np.int64), ipix, values / area)


def _from_table(table: Any, header: Any, where: str) -> _Map:
    names = [n.upper() for n in table.colnames]
    by_upper = dict(zip(names, table.colnames, strict=True))
    if "UNIQ" in by_upper:
        try:
            order, ipix = uniq_to_order_ipix(np.asarray(table[by_upper["UNIQ"]]))
        except ValueError as exc:
            raise InvalidQueryError(f"{where}: {exc}") from exc
        if "PROBDENSITY" in by_upper:
            density = np.asarray(table[by_upper["PROBDENSITY"]], dtype=float).reshape(-1)
        elif "PROB" in by_upper:
            density = np.asarray(table[by_upper["PROB"]], dtype=float).reshape(-1) / _pixel_area_sr(order)
        else:
            density = None  # a MOC: the pixels are the region
        if density is not None:
            density = np.where(np.isfinite(density), density, 0.0)
        return _Map(order, ipix, density)
    if not table.colnames:
        raise InvalidQueryError(f"{where}: not a HEALPix map (a table without columns)")
    if str(header.get("ORDERING", "")).strip().upper() == "RANGE" and "RANGE" in by_upper:
        # A MOC 2.0 file (what mocpy writes): flattened [lo, hi) pairs of order-29 cells.
        ranges = np.asarray(table[by_upper["RANGE"]], dtype=np.int64).reshape(-1)
        if ranges.size % 2 or (ranges.size and (ranges.min() < 0 or ranges.max() > 12 << (2 * HPX_ORDER))):
            raise InvalidQueryError(f"{where}: not a MOC (RANGE values are not [lo, hi) pairs at order 29)")
        return _Map(np.full(ranges.size // 2, -1, dtype=np.int64), ranges.reshape(-1, 2), None)
    pixels = None
    if str(header.get("INDXSCHM", "")).strip().upper() == "EXPLICIT" and "PIXEL" in by_upper:
        pixels = np.asarray(table[by_upper["PIXEL"]])
    value_name = by_upper.get("PROB") or next(n for n in table.colnames if n.upper() != "PIXEL")
    return _flat(np.asarray(table[value_name]), header, where, pixels)


def _read_fits(path: Path) -> _Map:
    from astropy.io import fits
    from astropy.table import Table

    where = str(path)
    if not path.is_file():
        raise InvalidQueryError(f"{where}: no such file")
    try:
        with fits.open(path, memmap=False) as hdus:
            tables = [h for h in hdus if isinstance(h, fits.BinTableHDU)]
            if not tables:
                raise InvalidQueryError(f"{where}: not a HEALPix or MOC map (no FITS binary table)")
            hdu = tables[0]
            header = hdus[0].header.copy()
            header.update(hdu.header)
            table = Table(hdu.data)
    except (OSError, ValueError) as exc:  # astropy: not FITS, truncated, bad header
        raise InvalidQueryError(f"{where}: not a FITS sky map ({exc})") from exc
    return _from_table(table, header, where)


def load_map(source: Any) -> _Map:
    """A sky map's pixels from a FITS path, an astropy Table (multi-order, or flat with ORDERING/NSIDE in
    its ``meta``) or a ``mocpy.MOC``."""
    from astropy.table import Table

    if isinstance(source, str | os.PathLike):
        return _read_fits(Path(source))
    if type(source).__module__.split(".")[0] == "mocpy":
        ranges = np.asarray(source.to_depth29_ranges, dtype=np.int64).reshape(-1, 2)
        # Depth-29 ranges are pixels of order 29 already: keep them as ranges (one "pixel" each).
        return _Map(np.full(len(ranges), -1, dtype=np.int64), ranges, None)
    if isinstance(source, Table):
        return _from_table(source, source.meta, "sky map table")
    raise InvalidQueryError(
        f"cannot read a sky map from a {type(source).__name__}: give a FITS path, an astropy Table or a "
        "mocpy.MOC"
    )


def credible_region(source: Any, credible: float = 0.9) -> Region:
    """The smallest set of the densest pixels whose probability reaches ``credible`` (all of a MOC).

    Pixels are sorted by probability density, highest first (ties in map order), and kept while the
    probability before them is below ``credible`` of the map's total; pixels of zero probability are
    never kept.  This is the usual "searched area" construction (as in ligo.skymap).
    """
    credible = float(credible)
    if not (0.0 < credible <= 1.0):
        raise InvalidQueryError(f"credible level {credible} must be in (0, 1]")
    smap = load_map(source)
    if smap.order.size and smap.order[0] == -1:  # MOC ranges
        ranges = smap.ipix[np.argsort(smap.ipix[:, 0], kind="stable")]
        area = float((ranges[:, 1] - ranges[:, 0]).sum()) * 4 * math.pi / (12 * 4.0**HPX_ORDER)
        return Region(ranges[:, 0], ranges[:, 1], None, None, math.degrees(1) ** 2 * area)
    shift = 2 * (HPX_ORDER - smap.order)
    lo, hi = smap.ipix << shift, (smap.ipix + 1) << shift
    if smap.density is None:
        keep = np.arange(lo.size)
        level = density = None
    else:
        area = _pixel_area_sr(smap.order)
        prob = smap.density * area
        total = prob[prob > 0].sum()
        if not total > 0:
            raise InvalidQueryError("the sky map holds no probability (every pixel is zero or negative)")
        rank = np.argsort(-smap.density, kind="stable")
        cumulative = np.cumsum(prob[rank]) / total
        before = cumulative - prob[rank] / total
        chosen = (before < credible) & (prob[rank] > 0)
        keep = rank[chosen]
        level_all = np.empty(lo.size)
        level_all[rank] = cumulative
        level, density = level_all[keep], smap.density[keep]
    order = np.argsort(lo[keep], kind="stable")
    keep = keep[order]
    pixel_area = float(_pixel_area_sr(smap.order[keep]).sum())
    return Region(
        lo[keep],
        hi[keep],
        None if level is None else level[order],
        None if density is None else density[order],
        math.degrees(1) ** 2 * pixel_area,
    )


def _merge(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Join touching sorted ranges into as few as possible, for the SQL."""
    if lo.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, lo[1:] != hi[:-1]])
    ends = np.r_[starts[1:], lo.size] - 1
    return np.stack([lo[starts], hi[ends]], axis=1)


def _detections_in_window(conn, object_ids: Sequence[str], window) -> dict[str, int]:
    """Distinct detections (candids of alerts and of their history) of each object inside the window."""
    counts: dict[str, set[int]] = {}
    for start in range(0, len(object_ids), 500):
        ids = list(object_ids[start : start + 500])
        lo, hi = window or (None, None)
        parts = []
        for table in (alerts, prv_candidates):
            conds = [table.c.objectId.in_(ids), table.c.candid.is_not(None)]
            if lo is not None:
                conds.append(table.c.jd >= lo)
            if hi is not None:
                conds.append(table.c.jd <= hi)
            parts.append(select(table.c.objectId, table.c.candid).where(and_(*conds)))
        for object_id, candid in conn.execute(union(*parts)):
            counts.setdefault(object_id, set()).add(int(candid))
    return {k: len(v) for k, v in counts.items()}


def skymap_search(
    engine: Engine,
    skymap: Any,
    credible: float = 0.9,
    *conditions: str,
    jd: Any = None,
    new_only: bool = False,
    min_detections: int | None = None,
    columns: Sequence[str] | None = None,
    **filters: Any,
):
    """Alerts inside the ``credible`` region of a sky map, in a time window.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The catalog's engine (``Catalog.engine``).
    skymap : path, astropy.table.Table or mocpy.MOC
        A multi-order FITS map (``UNIQ``/``PROBDENSITY``), a flat HEALPix FITS map (RING or NESTED), a
        MOC FITS file, such a table, or a MOC.
    credible : float
        Credible level in (0, 1]; ignored for a MOC, which is the region itself.
    *conditions : str
        Filters on the alerts, as for ``Catalog.query``.
    jd : (float, float), optional
        Only alerts with ``t0 <= jd <= t1``, typically ``(t0, t0 + 3)`` after the merger time ``t0``.
    new_only : bool
        Only objects first detected at or after the window's start: no alert and no history detection
        before it (needs a window with a start).
    min_detections : int, optional
        Only objects with at least this many detections (distinct candids, alerts and history) in the
        window.
    columns : sequence of str, optional
        Alert columns (default: those ``Catalog.query`` returns).

    Returns
    -------
    astropy.table.Table
        One row per alert, most probable first (then by candid): the columns, ``credible_level`` (the
        level at which the alert's pixel joins the region) and ``probdensity`` (per steradian; both
        masked for a MOC) and ``n_detections`` in the window.  ``meta`` holds ``credible`` and
        ``area_deg2``.
    """
    from astropy.table import MaskedColumn, Table

    window = check_window(jd)
    if new_only and (window is None or window[0] is None):
        raise InvalidQueryError("new_only needs a time window with a start: jd=(t0, t1)")
    if min_detections is not None and int(min_detections) < 1:
        raise InvalidQueryError(f"min_detections must be at least 1, not {min_detections}")
    region = credible_region(skymap, credible)
    if columns is None:
        columns = DEFAULT_COLUMNS
    selected = [column(n) for n in columns]
    if not any(c.name == "objectId" for c in selected):
        selected.append(alerts.c.objectId)
    clauses = [*where_clauses(conditions, filters), *window_clauses(window)]
    if new_only:
        t0 = window[0]
        earlier = alerts.alias("earlier")
        clauses.append(~exists().where(earlier.c.objectId == alerts.c.objectId, earlier.c.jd < t0))
        clauses.append(
            ~exists().where(
                prv_candidates.c.objectId == alerts.c.objectId,
                prv_candidates.c.candid.is_not(None),
                prv_candidates.c.jd < t0,
            )
        )
    with engine.connect() as conn:
        rows = rows_in_ranges(
            conn, _merge(region.lo, region.hi), [alerts.c.hpx.label(_HPX), *selected], clauses
        )
        oid_at = [c.name for c in selected].index("objectId") + 1
        object_ids = sorted({r[oid_at] for r in rows})
        counts = _detections_in_window(conn, object_ids, window) if rows else {}
        conn.rollback()
    hpx = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    pixel = np.searchsorted(region.lo, hpx, side="right") - 1
    n_det = np.array([counts.get(r[oid_at], 0) for r in rows], dtype=np.int64)
    keep = np.ones(len(rows), dtype=bool) if min_detections is None else n_det >= int(min_detections)
    level = region.level[pixel] if region.level is not None else np.zeros(len(rows))
    candid_at = next((i + 1 for i, c in enumerate(selected) if c.name == "candid"), None)
    tiebreak = np.array([r[candid_at] for r in rows] if candid_at else np.zeros(len(rows)), dtype=np.int64)
    index = np.flatnonzero(keep)
    index = index[np.lexsort((tiebreak[index], level[index]))]
    table = Table(meta={"credible": float(credible), "area_deg2": region.area_deg2})
    for i, col in enumerate(selected):
        table[col.name] = sql_column(col.name, [rows[j][i + 1] for j in index], col.type)
    masked = region.level is None
    table["credible_level"] = MaskedColumn(level[index], mask=np.full(index.size, masked))
    density = region.density[pixel[index]] if region.density is not None else np.zeros(index.size)
    table["probdensity"] = MaskedColumn(density, mask=np.full(index.size, masked), unit="1/sr")
    table["n_detections"] = n_det[index]
    return table
