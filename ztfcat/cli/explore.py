"""Commands for looking at the data: ``plot``, ``lightcurve``, ``cone`` and ``export``.

They are the commands that turn alerts into something to look at or carry away: an image, a light
curve, the alerts near a position, files in other formats.  Each is a few lines that open the catalog,
call one library function and write its result; the HATS export's orchestration (one Dask cluster for
two catalogs) lives in :func:`ztfcat.export.hats.write_hats_catalogs`.  :mod:`ztfcat.cli.root` adds them to
the ``ztfcat`` group.
"""

from __future__ import annotations

import click

from .common import FORMAT, column_list, filter_options, named_filters, open_catalog
from .output import emit_table
from .progress import Bar


@click.command()
@click.argument("candid", type=int)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Image file to write (format from its suffix: png, pdf, svg); default <candid>.png.",
)
@click.option(
    "--cutout",
    type=click.Choice(["Science", "Template", "Difference"], case_sensitive=False),
    help="Only this cutout, alone, instead of the three side by side.",
)
@click.option("--dpi", type=int, default=120, show_default=True, help="Resolution of raster images.")
@click.pass_context
def plot(ctx, candid, output, cutout, dpi) -> None:
    """Draw an alert's Science, Template and Difference cutouts to an image file."""
    from ..plotting import plot_cutout, plot_stamps

    alert = open_catalog(ctx).get_alert(candid)
    fig = plot_cutout(alert, cutout) if cutout else plot_stamps(alert)
    output = output or f"{candid}.png"
    fig.savefig(output, dpi=dpi)
    click.echo(f"wrote {output}", err=True)


@click.command()
@click.argument("object_id", metavar="OBJECTID")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Draw the light curve to this image file instead of listing its points.",
)
@click.option("--csv", "as_csv", is_flag=True, help="List the points as CSV (same as --format csv).")
@click.option("--no-forced", is_flag=True, help="Leave out forced photometry.")
@click.option(
    "--columns",
    "-c",
    help="Comma-separated columns to list (default: kind, band, jd, mjd, magpsf, sigmapsf, ...).",
)
@FORMAT
@click.pass_context
def lightcurve(ctx, object_id, output, as_csv, no_forced, columns, fmt) -> None:
    """An object's light curve: detections, upper limits and forced photometry, oldest first.

    Lists the points (all of them with --format csv or json), or draws them with -o; give both to
    do both.
    """
    table = open_catalog(ctx).lightcurve(object_id, forced=not no_forced)
    if output:
        from ..plotting import plot_lightcurve

        plot_lightcurve(table).savefig(output, dpi=120)
        click.echo(f"wrote {output} ({len(table)} points)", err=True)
    explicit = as_csv or ctx.get_parameter_source("fmt") is not click.core.ParameterSource.DEFAULT
    if output and not explicit:
        return
    fmt = "csv" if as_csv else fmt
    if columns:
        names = [c.strip() for c in columns.split(",") if c.strip()]
    elif fmt == "table":
        names = [n for n in _LIST_COLUMNS if n in table.colnames]
    else:
        names = table.colnames
    unknown = [n for n in names if n not in table.colnames]
    if unknown:
        raise click.BadParameter(f"no column {', '.join(unknown)}; columns are {', '.join(table.colnames)}")
    table = table[names]
    if fmt == "table":
        for name, spec in _LIST_FORMATS.items():
            if name in table.colnames:
                table[name].format = spec
    emit_table(table, fmt)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("ra")
@click.argument("dec")
@click.argument("radius")
@filter_options
@click.option("--columns", "-c", help="Comma-separated columns (default: a useful few).")
@click.option("--limit", "-n", type=int, default=0, help="Only the nearest this many (0: all).")
@FORMAT
@click.pass_context
def cone(
    ctx, ra, dec, radius, conditions, night, night_from, night_to, object_id, release, schemavsn,
    columns, limit, fmt,
) -> None:  # fmt: skip
    """Alerts within RADIUS of (RA, DEC), nearest first, with their separation in arcsec.

    RA and DEC are degrees, or sexagesimal (RA in hours: 12:30:49.4 +12:23:28); a negative DEC
    may be written as is.  RADIUS is arcseconds, or has a unit: 5, 30arcsec, 1.5arcmin, 0.1deg.
    """
    from ..store.sky import parse_position

    position = parse_position(f"{ra} {dec}")
    table = open_catalog(ctx).cone_search(
        *position,
        radius,
        *conditions,
        columns=column_list(columns),
        limit=limit or None,
        **named_filters(night, night_from, night_to, object_id, release, schemavsn),
    )
    emit_table(table, fmt)


@click.command()
@filter_options
@click.option(
    "--to-dir", type=click.Path(file_okay=False), help="Write one <candid>.avro per alert in this folder."
)
@click.option(
    "--to-tar",
    type=click.Path(dir_okay=False),
    help="Write a new tarball (.tar.gz, .tgz or .tar) of <candid>.avro members.",
)
@click.option(
    "--parquet",
    type=click.Path(file_okay=False),
    help="Write the whole catalog as typed Parquet datasets (alerts by night, light curves) in this new folder.",
)
@click.option(
    "--hats",
    type=click.Path(file_okay=False),
    help="Build a HATS catalog of every alert in this new folder (for lsdb.read_hats), with hats-import on Dask.",
)
@click.option(
    "--hats-objects",
    type=click.Path(file_okay=False),
    help="Build a HATS catalog of objects (mean position, light curves nested) in this new folder.",
)
@click.option(
    "--dask-scheduler",
    metavar="ADDRESS",
    help="With --hats: run on this Dask scheduler (tcp://host:8786) instead of a small local cluster.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace existing files (or a non-empty --parquet/--hats folder)."
)
@click.pass_context
def export(
    ctx, conditions, night, night_from, night_to, object_id, release, schemavsn, to_dir, to_tar, parquet,
    hats, hats_objects, dask_scheduler, overwrite,
) -> None:  # fmt: skip
    """Write the raw Avro packets of the selected alerts to a folder or a tarball, or the catalog as Parquet/HATS.

    The packets are the archive's own bytes; a .tar.gz made here can be ingested into another
    catalog with `ztfcat ingest`; an empty selection writes nothing and exits 1; a progress bar on a
    terminal.  --parquet and --hats export the whole catalog (no filters); a HATS catalog is rebuilt
    whole on each export, so after new nights run it again with --overwrite.
    """
    filters = named_filters(night, night_from, night_to, object_id, release, schemavsn)
    if parquet or hats or hats_objects:
        if to_dir or to_tar or conditions or filters:
            raise click.UsageError(
                "--parquet and --hats export the whole catalog: no filters, --to-dir or --to-tar"
            )
        if dask_scheduler and not (hats or hats_objects):
            raise click.UsageError("--dask-scheduler goes with --hats")
        catalog = open_catalog(ctx)
        if parquet:
            click.echo(str(catalog.to_parquet(parquet, overwrite=overwrite)))
        if hats or hats_objects:
            from ..export.hats import write_hats_catalogs

            reports = write_hats_catalogs(
                catalog.engine,
                alerts=hats,
                objects=hats_objects,
                overwrite=overwrite,
                scheduler=dask_scheduler,
            )
            for report in reports:
                click.echo(str(report))
        return
    if dask_scheduler:
        raise click.UsageError("--dask-scheduler goes with --hats")
    if (to_dir is None) == (to_tar is None):
        raise click.UsageError("give one of --to-dir DIR or --to-tar FILE.tar.gz (or --parquet/--hats DIR)")
    catalog = open_catalog(ctx)
    total = catalog.count(*conditions, **filters)
    if total == 0:
        raise click.ClickException("no alerts match the selection; nothing exported")
    with Bar("exporting", total, "alert") as bar:
        report = catalog.export_raw(
            *conditions,
            to_dir=to_dir,
            to_tar=to_tar,
            overwrite=overwrite,
            progress=bar.exported,
            **filters,
        )
    click.echo(str(report))


#: Columns ``ztfcat lightcurve`` shows as an aligned table (CSV and JSON carry every column).
_LIST_COLUMNS = (
    "kind",
    "band",
    "jd",
    "mjd",
    "magpsf",
    "sigmapsf",
    "diffmaglim",
    "isdiffpos",
    "candid",
    "forcediffimflux",
    "forcediffimfluxunc",
    "magzpsci",
)
#: Display precision of the aligned table: what the photometry means, not every float32 digit.
_LIST_FORMATS = {
    "jd": ".5f",
    "mjd": ".5f",
    "magpsf": ".3f",
    "sigmapsf": ".3f",
    "diffmaglim": ".3f",
    "forcediffimflux": ".1f",
    "forcediffimfluxunc": ".1f",
    "magzpsci": ".3f",
}
