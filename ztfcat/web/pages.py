"""The ztfcat pages: an alert, an object, a cone search, and the images they show.

Each view is an ``async`` function datasette calls with the request (see :func:`routes`).  Every read goes
through :class:`ztfcat.Catalog` (``get_alert``, ``lightcurve``, ``cone_search``, ``query``), run in a
worker thread so one slow page never stalls the others, and so the pages work on a PostgreSQL catalog
as on SQLite.  Nothing from the URL reaches SQL except as a bound parameter: ids are parsed to integers
or compared as values, cone-search conditions go through :func:`ztfcat.store.filters.parse_condition`.

Bad input is the user's, not the server's: an unknown id is a 404 that names it, a malformed parameter a
400 that says why (:class:`datasette.utils.asgi.NotFound` / ``BadRequest``, rendered by datasette's
error page).
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from ztfcat.errors import AlertDecodeError, InvalidQueryError, NotFoundError, ZtfcatError

from . import images

PANELS = ("Science", "Template", "Difference")
#: Neighbours of an alert are searched within this radius (arcsec).
NEIGHBOUR_RADIUS_ARCSEC = 5.0
#: The largest cone the web view runs (degrees): bigger ones belong in the CLI or the library.
MAX_RADIUS_DEG = 1.0
MAX_CONE_ROWS = 5000
DEFAULT_CONE_ROWS = 500
#: An object's alerts table shows thumbnails for at most this many alerts.
MAX_THUMBNAILS = 200
_OBJECT_ID = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")
ALERT_COLUMNS = ("candid", "jd", "fid", "magpsf", "sigmapsf", "isdiffpos", "rb", "drb", "schemavsn")
#: Display precision of the object page's alerts table: what the numbers mean, not every float32 digit.
ALERT_FORMATS = {
    "jd": "%.5f",
    "ra": "%.6f",
    "dec": "%+.6f",
    "magpsf": "%.3f",
    "sigmapsf": "%.3f",
    "rb": "%.3f",
    "drb": "%.3f",
}
CONE_FILTERS = ("night", "from", "to", "object", "release", "schemavsn")


async def _run(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)`` in datasette's thread pool: catalog reads and drawing block."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(func, *args, **kwargs))


def _errors():
    from datasette.utils.asgi import BadRequest, NotFound

    return BadRequest, NotFound


def parse_candid(text: str) -> int:
    """A candid from the URL; BadRequest when it is not a positive integer."""
    bad_request, _ = _errors()
    if not text.isdigit() or len(text) > 19:
        raise bad_request(f"candid {text!r} is not a positive integer")
    return int(text)


def parse_object_id(text: str) -> str:
    """An objectId from the URL: letters, digits, ``_`` and ``-``, at most 32 (the column's width)."""
    bad_request, _ = _errors()
    if not _OBJECT_ID.match(text):
        raise bad_request(f"objectId {text!r} is not an objectId (letters and digits, at most 32)")
    return text


def _state(datasette):
    from .app import state

    return state(datasette)


async def _get_alert(catalog, candid: int) -> dict:
    _, not_found = _errors()
    try:
        return await _run(catalog.get_alert, candid)
    except NotFoundError as exc:
        raise not_found(f"no alert with candid {candid} in this catalog") from exc


def _stamp_status(alert: dict) -> list[dict]:
    """Per panel: whether a picture can be drawn, or the reason (no cutout, undecodable stamp)."""
    from ztfcat.plotting import cutout_array

    status = []
    for panel in PANELS:
        try:
            data = cutout_array(alert, panel)
            reason = None if data is not None else "this alert carries no cutout here"
        except AlertDecodeError as exc:
            reason = str(exc)
        status.append({"panel": panel, "reason": reason})
    return status


def _cached_status(state, candid: int, alert: dict) -> list[dict]:
    """:func:`_stamp_status`, kept in the image cache: a packet never changes, and parsing three FITS
    stamps is a third of an alert page's time."""
    import json

    made = state.images.get_or_make(("status", candid), lambda: json.dumps(_stamp_status(alert)).encode())
    return json.loads(made)


def _plain(value: Any) -> Any:
    """A cell of an astropy Table as a plain Python value; masked and NaN are None."""
    import numpy as np

    if value is np.ma.masked:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _rows(table) -> list[dict]:
    return [{name: _plain(row[name]) for name in table.colnames} for row in table]


def _release_of(state, candid: int) -> dict | None:
    """The release an alert came from: its row id by candid, then the (cached) releases by id.

    A release's name and night never change, so the list is read again only for an id not seen yet
    (a night ingested while the server runs).
    """
    table = state.catalog.query(columns=["release_id"], candid=candid, limit=1)
    if not len(table):
        return None
    release_id = int(table["release_id"][0])
    if release_id not in state.releases:
        state.releases.update({row["id"]: row for row in _rows(state.catalog.releases())})
    return state.releases.get(release_id)


def _alert_context(state, candid: int, alert: dict) -> dict:
    """Everything the alert page shows besides the packet: release, neighbours, field descriptions."""
    from ztfcat.store.fields import FIELDS

    catalog = state.catalog
    candidate = alert.get("candidate") or {}
    fields = []
    for name, value in candidate.items():
        doc = FIELDS["candidate"].get(name, (None, None, "(a field this ztfcat does not know)"))[2]
        fields.append({"name": name, "value": value, "doc": doc})
    neighbours = []
    ra, dec = candidate.get("ra"), candidate.get("dec")
    if ra is not None and dec is not None:
        table = catalog.cone_search(
            ra, dec, NEIGHBOUR_RADIUS_ARCSEC, columns=["candid", "objectId", "jd", "fid", "magpsf"]
        )
        neighbours = [r for r in _rows(table) if r["candid"] != candid]
    cutouts = {panel: len((alert.get("cutout" + panel) or {}).get("stampData") or b"") for panel in PANELS}
    return {
        "fields": fields,
        "neighbours": neighbours,
        "release": _release_of(state, candid),
        "stamps": _cached_status(state, candid, alert),
        "cutout_bytes": cutouts,
        "n_prv": len(alert.get("prv_candidates") or []),
        "n_fp": len(alert.get("fp_hists") or []),
    }


async def alert_page(datasette, request):
    """``/alert/<candid>``: stamps, every candidate field with ZTF's description, links, neighbours."""
    state = _state(datasette)
    candid = parse_candid(request.url_vars["candid"])
    alert = await _get_alert(state.catalog, candid)
    context = await _run(_alert_context, state, candid, alert)
    context.update(
        title=f"Alert {candid}",
        candid=candid,
        alert=alert,
        objectId=alert.get("objectId"),
        schemavsn=alert.get("schemavsn"),
        neighbour_radius=NEIGHBOUR_RADIUS_ARCSEC,
    )
    return await _html(datasette, request, "ztfcat_alert.html", context)


async def alert_packet(datasette, request):
    """``/alert/<candid>.avro``: the packet's original bytes, as a download."""
    from datasette.utils.asgi import Response

    _, not_found = _errors()
    state = _state(datasette)
    candid = parse_candid(request.url_vars["candid"])
    try:
        data = await _run(state.catalog.get_alert, candid, raw=True)
    except NotFoundError as exc:
        raise not_found(f"no alert with candid {candid} in this catalog") from exc
    return Response(
        bytes(data),
        content_type="application/avro",
        headers={"content-disposition": f'attachment; filename="{candid}.avro"'},
    )


def _png_response(data: bytes):
    from datasette.utils.asgi import Response

    return Response(data, content_type="image/png", headers={"cache-control": "max-age=3600"})


async def stamp_image(datasette, request):
    """``/alert/<candid>/<panel>.png`` (``?size=thumb`` for a thumbnail): one cutout, drawn once."""
    bad_request, _ = _errors()
    state = _state(datasette)
    candid = parse_candid(request.url_vars["candid"])
    panel = request.url_vars["panel"]
    size = request.args.get("size", "full")
    if size not in images.STAMP_INCHES:
        raise bad_request(f"size {size!r} is not one of {', '.join(images.STAMP_INCHES)}")
    key = ("stamp", candid, panel, size)

    def make() -> bytes:
        return images.stamp_png(state.catalog.get_alert(candid), panel, size)

    _, not_found = _errors()
    try:
        data = await _run(state.images.get_or_make, key, make)
    except NotFoundError as exc:
        raise not_found(f"no alert with candid {candid} in this catalog") from exc
    return _png_response(data)


async def stamps_image(datasette, request):
    """``/alert/<candid>/stamps.png``: the three cutouts as the one figure ``plot_stamps`` makes."""
    state = _state(datasette)
    candid = parse_candid(request.url_vars["candid"])
    alert = await _get_alert(state.catalog, candid)
    data = await _run(state.images.get_or_make, ("stamps", candid), lambda: images.stamps_png(alert))
    return _png_response(data)


async def _lightcurve(catalog, object_id: str):
    _, not_found = _errors()
    try:
        return await _run(catalog.lightcurve, object_id)
    except NotFoundError as exc:
        raise not_found(f"no object {object_id!r} in this catalog") from exc


def _lightcurve_key(object_id: str, table) -> tuple:
    import numpy as np

    jd = np.ma.filled(np.ma.asarray(table["jd"], dtype=float), np.nan) if len(table) else []
    return ("lightcurve", object_id, len(table), float(np.nanmax(jd)) if len(jd) else None)


def _bands(table) -> list[dict]:
    """Per band: detections (positive and negative), upper limits, forced points, first/last, peak."""
    summary = []
    rows = _rows(table)
    for band in sorted({r["band"] for r in rows}, key=lambda b: "gri".find(b) % 10):
        mine = [r for r in rows if r["band"] == band]
        detections = [r for r in mine if r["kind"] == "detection"]
        mags = [r for r in detections if r["magpsf"] is not None]
        peak = min(mags, key=lambda r: r["magpsf"]) if mags else None
        summary.append(
            {
                "band": band,
                "n_detections": len(detections),
                "n_negative": sum(1 for r in detections if str(r["isdiffpos"]).lower() in ("f", "0")),
                "n_upper_limits": sum(1 for r in mine if r["kind"] == "upper_limit"),
                "n_forced": sum(1 for r in mine if r["kind"] == "forced"),
                "first_mjd": min((r["mjd"] for r in detections), default=None),
                "last_mjd": max((r["mjd"] for r in detections), default=None),
                "peak_mag": peak["magpsf"] if peak else None,
                "peak_sigma": peak["sigmapsf"] if peak else None,
                "peak_mjd": peak["mjd"] if peak else None,
            }
        )
    return summary


async def object_page(datasette, request):
    """``/object/<objectId>``: the light curve, per-band summary, and the object's alerts with thumbnails."""
    state = _state(datasette)
    object_id = parse_object_id(request.url_vars["object_id"])
    table = await _lightcurve(state.catalog, object_id)
    alerts = _rows(
        await _run(state.catalog.query, columns=list(ALERT_COLUMNS), objectId=object_id, order_by="jd")
    )
    context = {
        "title": f"Object {object_id}",
        "objectId": object_id,
        "bands": _bands(table),
        "n_points": len(table),
        "alerts": alerts,
        "max_thumbnails": MAX_THUMBNAILS,
        "formats": ALERT_FORMATS,
    }
    return await _html(datasette, request, "ztfcat_object.html", context)


async def lightcurve_image(datasette, request):
    """``/object/<objectId>/lightcurve.png``: the light curve ``plot_lightcurve`` draws."""
    state = _state(datasette)
    object_id = parse_object_id(request.url_vars["object_id"])
    table = await _lightcurve(state.catalog, object_id)
    key = _lightcurve_key(object_id, table)
    data = await _run(state.images.get_or_make, key, lambda: images.lightcurve_png(table))
    return _png_response(data)


def parse_cone(args) -> dict:
    """Cone-search parameters from a query string, checked; InvalidQueryError says what is wrong.

    ``pos`` ("RA Dec": degrees, or sexagesimal with RA in hours) or ``ra`` and ``dec`` separately;
    ``radius`` (arcsec, or with a unit: ``1arcmin``); the CLI's filters ``where`` (repeatable),
    ``night``, ``from``, ``to``, ``object``, ``release``, ``schemavsn``; ``limit``.
    """
    from ztfcat.store.sky import parse_position, parse_radius

    pos = (args.get("pos") or "").strip()
    ra, dec = (args.get("ra") or "").strip(), (args.get("dec") or "").strip()
    if pos and (ra or dec):
        raise InvalidQueryError("give either pos or ra and dec, not both")
    if not pos:
        if not ra or not dec:
            raise InvalidQueryError("a cone search needs a position: pos, or ra and dec")
        pos = f"{ra} {dec}"
    parts = pos.split()
    if len(parts) == 2 and not any(c in pos for c in ":hmsd"):
        try:
            ra_value, dec_value = float(parts[0]), float(parts[1])
        except ValueError:
            ra_value = dec_value = None
        if ra_value is not None and not 0.0 <= ra_value < 360.0:
            raise InvalidQueryError(f"RA {parts[0]} is outside [0, 360) degrees")
        if dec_value is not None and not -90.0 <= dec_value <= 90.0:
            raise InvalidQueryError(f"Dec {parts[1]} is outside [-90, 90] degrees")
    position = parse_position(pos)
    radius_text = (args.get("radius") or "5").strip()
    radius = parse_radius(radius_text)
    if radius > MAX_RADIUS_DEG:
        raise InvalidQueryError(
            f"radius {radius_text!r} is larger than the {MAX_RADIUS_DEG:g} deg the browser view searches; "
            "use ztfcat cone or Catalog.cone_search"
        )
    limit_text = (args.get("limit") or str(DEFAULT_CONE_ROWS)).strip()
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_CONE_ROWS:
        raise InvalidQueryError(f"limit {limit_text!r} is not a whole number from 1 to {MAX_CONE_ROWS}")
    filters: dict[str, Any] = {}
    night, first, last = (args.get(k, "").strip() for k in ("night", "from", "to"))
    if night:
        filters["night"] = night
    elif first or last:
        filters["night"] = (first or None, last or None)
    for key, name in (("object", "objectId"), ("release", "release"), ("schemavsn", "schemavsn")):
        if args.get(key, "").strip():
            filters[name] = args[key].strip()
    conditions = [c for c in args.getlist("where") if c.strip()]
    return {
        "ra": position[0],
        "dec": position[1],
        "radius": radius_text,
        "conditions": conditions,
        "filters": filters,
        "limit": int(limit_text),
    }


def run_cone(catalog, params: dict):
    """The cone search a form asks for, through :meth:`ztfcat.Catalog.cone_search`."""
    return catalog.cone_search(
        params["ra"],
        params["dec"],
        params["radius"],
        *params["conditions"],
        limit=params["limit"],
        **params["filters"],
    )


async def cone_page(datasette, request):
    """``/cone``: the form, and with a position, the alerts in the cone (nearest first)."""
    bad_request, _ = _errors()
    state = _state(datasette)
    args = request.args
    context: dict[str, Any] = {
        "title": "Cone search",
        "form": {k: args.get(k, "") for k in ("pos", "ra", "dec", "radius", "limit", *CONE_FILTERS)},
        "wheres": [w for w in args.getlist("where") if w.strip()] or [""],
        "rows": None,
    }
    asked = any(args.get(k) for k in ("pos", "ra", "dec"))
    if asked:
        try:
            params = parse_cone(args)
            table = await _run(run_cone, state.catalog, params)
        except ZtfcatError as exc:
            raise bad_request(str(exc)) from exc
        names = table.colnames
        if "separation" in names:  # nearest first, so the distance goes next to the id
            names = [n for n in names if n != "separation"]
            names.insert(1 if "candid" in names else 0, "separation")
        context.update(params=params, columns=names, rows=_rows(table), formats=ALERT_FORMATS)
    return await _html(datasette, request, "ztfcat_cone.html", context)


async def home_page(datasette, request):
    """``/``: what the catalog holds, the cone form, the canned queries and datasette's own pages."""
    state = _state(datasette)
    info = await _run(state.catalog.info)
    context = {"title": "ztfcat", "info": info, "form": {}, "wheres": [""]}
    return await _html(datasette, request, "ztfcat_home.html", context)


async def _html(datasette, request, template: str, context: dict):
    from datasette.utils.asgi import Response

    state = _state(datasette)
    context = {**context, "ztfcat": state.template_vars()}
    return Response.html(await datasette.render_template(template, context, request=request))


def url_with(path: str, **params: Any) -> str:
    """A URL with a query string of the given (non-empty) parameters, for links between pages."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")}, doseq=True)
    return f"{path}?{query}" if query else path


def routes() -> list[tuple[str, Callable]]:
    """The plugin's URL routes (regex, view); checked in order, before datasette's own."""
    candid = r"(?P<candid>[^/]+?)"
    object_id = r"(?P<object_id>[^/]+?)"
    return [
        (r"^/$", home_page),
        (rf"^/alert/{candid}\.avro$", alert_packet),
        (rf"^/alert/{candid}/stamps\.png$", stamps_image),
        (rf"^/alert/{candid}/(?P<panel>Science|Template|Difference)\.png$", stamp_image),
        (rf"^/alert/{candid}/?$", alert_page),
        (rf"^/object/{object_id}/lightcurve\.png$", lightcurve_image),
        (rf"^/object/{object_id}/?$", object_page),
        (r"^/cone/?$", cone_page),
    ]
