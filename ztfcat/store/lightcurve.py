"""One object's light curve from the catalog: detections, upper limits and forced photometry.

The history tables already hold each point once (ingest deduplicates by natural key: a detection by its
``candid``, an upper limit by object, ``pid`` and ``fid``, a forced-photometry point by object, ``pid``
and ``fid`` with the newest alert's values), and ``prv_candidates`` includes each alert's own triggering
candidate.  So a light curve is two indexed reads by ``objectId`` (no packet is decoded), merged into one
astropy Table in the shape :func:`ztfcat.plotting.plot_lightcurve` draws, which is also the shape the
broker clients (ALeRCE, Fink, Lasair) hand out: one row per point, a ``kind`` column saying which.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine, exists, select
from sqlalchemy.types import TypeEngine

from ..errors import NotFoundError
from .tables import FP_COLUMNS, alerts, fp_hists, prv_candidates

if TYPE_CHECKING:
    from astropy.table import Column, MaskedColumn, Table

MJD_OFFSET = 2400000.5
#: ZTF filter id -> band name.
BANDS: dict[int, str] = {1: "g", 2: "r", 3: "i"}
#: Values of the ``kind`` column, in the order rows of equal ``jd`` are listed.
KINDS: tuple[str, ...] = ("detection", "upper_limit", "forced")

#: Columns read from ``prv_candidates`` (detections and upper limits) for every row.
POINT_COLUMNS: tuple[str, ...] = (
    "jd",
    "fid",
    "magpsf",
    "sigmapsf",
    "diffmaglim",
    "isdiffpos",
    "candid",
    "pid",
    "ra",
    "dec",
    "programid",
    "rb",
)
#: Forced-photometry columns (every ``fp_hist`` field not already above); detections carry the ones
#: their schema version has (``magzpsci``, ``field``, ...), upper limits mostly null.
FORCED_COLUMNS: tuple[str, ...] = tuple(c for c in FP_COLUMNS if c not in POINT_COLUMNS)
#: Every column of a light curve, in order.
LIGHTCURVE_COLUMNS: tuple[str, ...] = (
    "kind",
    "upper_limit",
    "jd",
    "mjd",
    "fid",
    "band",
    *POINT_COLUMNS[2:],
    *FORCED_COLUMNS,
    "alert_candid",
)


def sql_column(name: str, values: Sequence[Any], sql_type: TypeEngine) -> Column | MaskedColumn:
    """An astropy column of ``values`` typed from the SQL column type, nulls masked.

    Typing from the schema rather than from the values means an all-null or empty column still has
    the right dtype (float, int, str), so tables of different objects stack and compare.
    """
    from astropy.table import Column, MaskedColumn

    try:
        python_type = sql_type.python_type
    except NotImplementedError:
        python_type = str
    mask = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    if python_type is float:
        data = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    elif python_type is int:
        data = np.array([0 if v is None else v for v in values], dtype=np.int64)
    elif python_type is bool:
        data = np.array([bool(v) for v in values], dtype=bool)
    else:
        data = np.array(["" if v is None else str(v) for v in values], dtype=str)
    if mask.any():
        return MaskedColumn(data, name=name, mask=mask)
    return Column(data, name=name)


def _sql_type(name: str) -> TypeEngine:
    if name in prv_candidates.c:
        return prv_candidates.c[name].type
    return fp_hists.c[name].type


def lightcurve(engine: Engine, object_id: str, *, forced: bool = True) -> Table:
    """The deduplicated light curve of one object as an astropy Table, oldest point first.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The catalog's engine (``Catalog.engine``).
    object_id : str
        A ZTF ``objectId`` such as ``"ZTF18abudxnw"``.
    forced : bool
        Include forced-photometry rows (from ``fp_hists``, schema 4.x alerts); default True.

    Returns
    -------
    astropy.table.Table
        One row per point, sorted by ``jd`` (then detection, upper limit, forced; then ``fid``), with
        the columns :data:`LIGHTCURVE_COLUMNS`: ``kind`` (``"detection"``, ``"upper_limit"`` or
        ``"forced"``), ``upper_limit`` (bool), ``jd``, ``mjd``, ``fid`` and ``band`` (g, r, i), the PSF
        photometry (``magpsf``, ``sigmapsf``, ``isdiffpos``; masked on upper limits and forced rows),
        ``diffmaglim``, ``candid`` (masked unless a detection), ``pid``, position, ``programid``,
        ``rb``, the forced-photometry fields (``forcediffimflux``, ``forcediffimfluxunc``,
        ``magzpsci``, ...) and ``alert_candid``, the alert each point was read from.  Nulls are
        masked.  ``meta["objectId"]`` names the object, so ``plot_lightcurve(table)`` titles itself.

    Raises
    ------
    NotFoundError
        No alert of ``object_id`` is in the catalog.
    """
    from astropy.table import Table

    read = (*POINT_COLUMNS, *FORCED_COLUMNS, "alert_candid")
    prv_query = (
        select(*(prv_candidates.c[c] for c in read))
        .where(prv_candidates.c.objectId == object_id)
        .order_by(prv_candidates.c.jd)
    )
    fp_query = (
        select(*(fp_hists.c[c] for c in ("alert_candid", *FP_COLUMNS)))
        .where(fp_hists.c.objectId == object_id)
        .order_by(fp_hists.c.jd)
    )
    with engine.connect() as conn:
        points = conn.execute(prv_query).all()
        fp_points = conn.execute(fp_query).all() if forced else []
        if not points and not fp_points:
            known = conn.execute(select(exists().where(alerts.c.objectId == object_id))).scalar()
            if not known:
                raise NotFoundError(f"no object {object_id!r} in the catalog: no alert carries it")

    columns: dict[str, list[Any]] = {name: [] for name in LIGHTCURVE_COLUMNS}
    for row in points:
        values = dict(zip(read, row, strict=True))
        kind = "detection" if values["candid"] is not None else "upper_limit"
        _append(columns, values, kind)
    for row in fp_points:
        values = dict(zip(("alert_candid", *FP_COLUMNS), row, strict=True))
        _append(columns, values, "forced")

    order = np.lexsort(
        (
            np.array([-1 if f is None else f for f in columns["fid"]], dtype=np.int64),
            np.array([KINDS.index(k) for k in columns["kind"]], dtype=np.int64),
            np.array([np.inf if j is None else j for j in columns["jd"]], dtype=np.float64),
        )
    )
    table = Table(meta={"objectId": object_id})
    for name in LIGHTCURVE_COLUMNS:
        values = [columns[name][i] for i in order]
        if name == "kind" or name == "band":
            table[name] = np.array(values, dtype="U11" if name == "kind" else "U5")
        elif name == "upper_limit":
            table[name] = np.array(values, dtype=bool)
        elif name == "mjd":
            table[name] = sql_column(name, values, prv_candidates.c.jd.type)
        elif name == "alert_candid":
            table[name] = sql_column(name, values, prv_candidates.c.alert_candid.type)
        else:
            table[name] = sql_column(name, values, _sql_type(name))
    return table


def _append(columns: dict[str, list[Any]], values: dict[str, Any], kind: str) -> None:
    """Add one point to the column lists; fields the point's table lacks are null."""
    jd = values.get("jd")
    fid = values.get("fid")
    derived = {
        "kind": kind,
        "upper_limit": kind == "upper_limit",
        "mjd": None if jd is None else jd - MJD_OFFSET,
        "band": BANDS.get(fid, "other") if fid is not None else "other",
    }
    for name, store in columns.items():
        store.append(derived[name] if name in derived else values.get(name))
