"""Science commands: ``xmatch`` (cross-match a list), ``skymap`` (follow up a sky map), ``objects``.

They are the commands of the science room: each opens the catalog, calls one function of
:mod:`ztfcat.science` and writes its result; :mod:`ztfcat.cli.root` adds them to the ``ztfcat`` group.
``xmatch`` streams CSV and JSON output chunk by chunk (:func:`~ztfcat.cli.output.emit_tables`), so a
million-row list is matched in bounded memory end to end.
"""

from __future__ import annotations

import click

from .common import FORMAT, WHERE, column_list, open_catalog
from .output import emit_table, emit_tables


def _jd(value: str | None, option: str) -> float | None:
    """A time as JD: a number is a JD, anything else is read by astropy (``2019-04-25T08:18:05``)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    from astropy.time import Time

    try:
        return float(Time(value).jd)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is neither a JD nor a date/time ({exc})", param_hint=option
        ) from exc


def _window(after: str | None, before: str | None, days: float | None) -> tuple | None:
    start, end = _jd(after, "--after"), _jd(before, "--before")
    if days is not None:
        if start is None:
            raise click.UsageError("--days needs --after (the start of the window)")
        if end is not None:
            raise click.UsageError("give --before or --days, not both")
        end = start + days
    return None if start is None and end is None else (start, end)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--radius", "-r", required=True, help="Match radius: arcseconds, or with a unit (1arcmin).")
@click.option("--ra-col", default="ra", show_default=True, help="Column of right ascension in FILE.")
@click.option("--dec-col", default="dec", show_default=True, help="Column of declination in FILE.")
@click.option("--nearest", is_flag=True, help="Only the nearest alert of each row.")
@click.option("--after", help="Only alerts at or after this time (JD, or a date/time).")
@click.option("--before", help="Only alerts at or before this time (JD, or a date/time).")
@click.option("--columns", "-c", help="Comma-separated alert columns (default: as ztfcat query).")
@WHERE
@FORMAT
@click.pass_context
def xmatch(ctx, file, radius, ra_col, dec_col, nearest, after, before, columns, conditions, fmt) -> None:
    """Cross-match the positions of a CSV FILE with the catalog's alerts.

    One output row per (input row, alert) pair within the radius: input_row, the file's columns
    (input_ra, input_dec, ...), the alert's columns and the separation in arcsec.
    """
    from ..science.crossmatch import iter_crossmatch

    catalog = open_catalog(ctx)
    chunks = iter_crossmatch(
        catalog.engine,
        file,
        radius,
        *conditions,
        ra_col=ra_col,
        dec_col=dec_col,
        columns=column_list(columns),
        nearest=nearest,
        jd=_window(after, before, None),
    )
    emit_tables(chunks, fmt)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--prob", default=0.9, show_default=True, type=float, help="Credible level of the region.")
@click.option("--after", help="Start of the window: the event time t0 (JD, or a date/time).")
@click.option("--days", type=float, help="Length of the window in days after --after.")
@click.option("--before", help="End of the window (JD, or a date/time), instead of --days.")
@click.option("--new", "new_only", is_flag=True, help="Only objects first detected after --after.")
@click.option("--min-detections", type=int, help="Only objects with this many detections in the window.")
@click.option("--columns", "-c", help="Comma-separated alert columns (default: as ztfcat query).")
@WHERE
@FORMAT
@click.pass_context
def skymap(ctx, file, prob, after, days, before, new_only, min_detections, columns, conditions, fmt) -> None:
    """Alerts inside the credible region of a sky map FILE (multi-order or flat HEALPix FITS, or MOC).

    E.g. `ztfcat skymap S190425z.multiorder.fits --prob 0.9 --after 2019-04-25T08:18:05 --days 3 --new`.
    """
    table = open_catalog(ctx).skymap_search(
        file,
        prob,
        *conditions,
        jd=_window(after, before, days),
        new_only=new_only,
        min_detections=min_detections,
        columns=column_list(columns),
    )
    click.echo(
        f"{len(table)} alerts in the {prob:g} credible region ({table.meta['area_deg2']:.1f} deg2)",
        err=True,
    )
    emit_table(table, fmt)


@click.command()
@click.option(
    "--where",
    "-w",
    "conditions",
    multiple=True,
    metavar="COND",
    help="Condition on an objects column, e.g. 'peak_mag < 18' or 'ndet >= 3'; repeat to combine.",
)
@click.option("--first-after", help="Only objects first detected at or after this time (JD or date/time).")
@click.option("--first-before", help="Only objects first detected at or before this time.")
@click.option("--columns", "-c", help="Comma-separated objects columns, or '*' for all.")
@click.option("--order-by", default="objectId", show_default=True, help="Column; prefix - for descending.")
@click.option("--limit", "-n", type=int, help="At most this many objects.")
@click.option("--refresh", is_flag=True, help="Recompute the whole objects table first.")
@FORMAT
@click.pass_context
def objects(ctx, conditions, first_after, first_before, columns, order_by, limit, refresh, fmt) -> None:
    """Objects at a glance: position, first/last detection, counts, peak and latest magnitudes.

    E.g. objects first seen since a time and brighter than 18:
    `ztfcat objects --first-after 2458350.5 --where 'peak_mag < 18'`.
    """
    catalog = open_catalog(ctx)
    if refresh:
        click.echo(f"{catalog.refresh_objects()} objects recomputed", err=True)
    filters = {}
    window = _window(first_after, first_before, None)
    if window is not None:
        filters["first_jd"] = window
    table = catalog.objects(
        *conditions,
        columns=column_list(columns),
        order_by=order_by,
        limit=limit,
        **filters,
    )
    emit_table(table, fmt)
