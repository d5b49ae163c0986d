"""The ``ztfcat`` command: a thin layer that resolves settings, calls one library function and formats.

Progress bars live here; the library reports progress through callbacks.  Library errors
(:class:`ZtfcatError`) become one-line messages and exit status 1, never tracebacks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from sqlalchemy.exc import DBAPIError

from .catalog import Catalog
from .errors import QueryInterruptedError, ZtfcatError
from .readonly import DEFAULT_MAX_ROWS, DEFAULT_TIME_LIMIT_S


class _Group(click.Group):
    """Turns library errors into clean CLI errors."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ZtfcatError as exc:
            raise click.ClickException(str(exc)) from exc
        except DBAPIError as exc:  # a catalog that opened but fails on reading (a corrupt page)
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise click.ClickException(f"the catalog database failed: {reason}") from exc


@click.group(cls=_Group)
@click.option(
    "--data-dir", envvar="ZTFCAT_DATA_DIR", type=click.Path(file_okay=False), help="Data directory."
)
@click.option("--database-url", envvar="ZTFCAT_DATABASE_URL", help="SQLAlchemy URL of the catalog database.")
@click.option("--archive-url", envvar="ZTFCAT_ARCHIVE_URL", help="Base URL of the alert archive or a mirror.")
@click.option("--layout", envvar="ZTFCAT_LAYOUT", type=click.Choice(["files", "pack"]), help="Blob layout.")
@click.version_option(package_name="ztfcat")
@click.pass_context
def main(ctx: click.Context, data_dir, database_url, archive_url, layout) -> None:
    """ztfcat: the ZTF public alert archive on your own disk, as a SQL catalog."""
    ctx.obj = dict(data_dir=data_dir, database_url=database_url, archive_url=archive_url, layout=layout)


def _catalog(ctx: click.Context) -> Catalog:
    obj = ctx.find_root().obj
    catalog = Catalog(obj["database_url"], obj["data_dir"], obj["archive_url"], layout=obj["layout"])
    ctx.call_on_close(catalog.close)
    return catalog


def emit_table(table, fmt: str) -> None:
    """Write an astropy Table to stdout as an aligned table, CSV or JSON lines."""
    if fmt == "csv":
        table.write(sys.stdout, format="ascii.csv")
    elif fmt == "json":
        for row in table:
            record = {name: _plain(row[name]) for name in table.colnames}
            click.echo(json.dumps(record))
    else:
        if len(table) == 0:
            click.echo("(no rows)")
        else:
            table.pprint_all()


def _plain(value):
    if hasattr(value, "mask") and value.mask is not False and bool(getattr(value, "mask", False)):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value != value:
        return None
    return value


FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format (json: one object per line).",
)
WHERE = click.option(
    "--where",
    "-w",
    "conditions",
    multiple=True,
    metavar="COND",
    help="Condition on an alert column, e.g. 'rb > 0.9' or 'fid = 1'; repeat to combine.",
)


def _filters(night, night_from, night_to, object_id, release, schemavsn) -> dict:
    filters = {}
    if night:
        filters["night"] = night
    elif night_from or night_to:
        filters["night"] = (night_from, night_to)
    if object_id:
        filters["objectId"] = object_id
    if release:
        filters["release"] = release
    if schemavsn:
        filters["schemavsn"] = schemavsn
    return filters


def filter_options(func):
    """The named filters shared by every command that selects alerts."""
    for option in reversed(
        [
            WHERE,
            click.option("--night", help="Only alerts of this night (YYYY-MM-DD)."),
            click.option("--from", "night_from", help="First night (YYYY-MM-DD)."),
            click.option("--to", "night_to", help="Last night (YYYY-MM-DD)."),
            click.option("--object", "object_id", help="Only this objectId."),
            click.option("--release", help="Only this release (tarball file name)."),
            click.option("--schemavsn", help="Only this schema version."),
        ]
    ):
        func = option(func)
    return func


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Ingest again even if the release is complete.")
@click.option("--json", "as_json", is_flag=True, help="Print each report as one JSON line.")
@click.pass_context
def ingest(ctx, sources, force, as_json) -> None:
    """Ingest nightly tarballs (paths or gs://bucket/object URLs) into the catalog."""
    catalog = _catalog(ctx)
    failed = 0
    for source in sources:
        size = Path(source).stat().st_size if Path(source).is_file() else None
        label = Path(source).name
        with click.progressbar(
            length=size or 0, label=label, show_pos=False, file=sys.stderr, hidden=as_json
        ) as bar:
            seen = [0]

            def progress(_n_alerts, n_bytes, bar=bar, seen=seen):
                bar.update(n_bytes - seen[0])
                seen[0] = n_bytes

            try:
                report = catalog.ingest(source, progress=progress, force=force)
            except ZtfcatError as exc:
                failed += 1
                click.echo(f"error: {exc}", err=True)
                continue
        if as_json:
            click.echo(json.dumps(report.as_dict()))
            continue
        click.echo(str(report))
        for member, reason in report.errors[:10]:
            click.echo(f"  bad member {member}: {reason}")
        if report.n_errors > 10:
            click.echo(f"  ... {report.n_errors - 10} more: ztfcat errors --release {report.release}")
    if failed:
        raise click.ClickException(f"{failed} of {len(sources)} tarballs failed")


@main.command()
@FORMAT
@click.pass_context
def releases(ctx, fmt) -> None:
    """List ingested releases with their status and counts."""
    table = _catalog(ctx).releases()
    emit_table(table[["name", "night", "status", "n_alerts", "n_errors", "n_duplicates", "size", "md5"]], fmt)


@main.command()
@click.option("--release", help="Only this release.")
@FORMAT
@click.pass_context
def errors(ctx, release, fmt) -> None:
    """List tar members that failed to decode, with the reason."""
    emit_table(_catalog(ctx).ingest_errors(release), fmt)


@main.command()
@filter_options
@click.option("--columns", "-c", help="Comma-separated columns (default: a useful few).")
@click.option(
    "--limit", "-n", type=int, default=20, show_default=True, help="At most this many rows (0: all)."
)
@click.option("--order-by", default="candid", show_default=True, help="Column to sort by; '-col' descending.")
@FORMAT
@click.pass_context
def alerts(
    ctx, conditions, night, night_from, night_to, object_id, release, schemavsn, columns, limit, order_by, fmt
) -> None:
    """List alerts, filtered on any candidate column."""
    table = _catalog(ctx).query(
        *conditions,
        columns=columns.split(",") if columns else None,
        limit=limit or None,
        order_by=order_by,
        **_filters(night, night_from, night_to, object_id, release, schemavsn),
    )
    emit_table(table, fmt)


@main.command()
@click.argument("candid", type=int)
@click.option("--raw", is_flag=True, help="Write the original Avro bytes instead of JSON.")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write here, not stdout."
)
@click.pass_context
def show(ctx, candid, raw, output) -> None:
    """Show one alert as JSON (cutouts summarised), or write its raw Avro with --raw."""
    catalog = _catalog(ctx)
    if raw:
        data = catalog.get_alert(candid, raw=True)
        if output:
            Path(output).write_bytes(data)
            click.echo(f"wrote {len(data)} bytes to {output}", err=True)
        else:
            click.get_binary_stream("stdout").write(data)
        return
    alert = catalog.get_alert(candid)
    text = json.dumps(alert, default=_json_default, indent=2)
    if output:
        Path(output).write_text(text)
    else:
        click.echo(text)


def _json_default(value):
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


@main.command()
@click.argument("statement")
@click.option(
    "--max-rows",
    "--limit",
    "-n",
    "max_rows",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_ROWS,
    show_default=True,
    help="Stop after this many rows, saying so on stderr (0: no cap, with --format csv or json).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_TIME_LIMIT_S,
    show_default=True,
    help="Stop the statement after this many seconds (0: no limit).",
)
@FORMAT
@click.pass_context
def sql(ctx, statement, max_rows, timeout, fmt) -> None:
    """Run one read-only SQL statement against the catalog (the database itself refuses writes).

    csv and json rows are written as they arrive; Ctrl-C stops the statement at once.
    """
    from .readonly import Cancel, cancel_on_sigint

    if max_rows == 0 and fmt == "table":
        raise click.ClickException("ztfcat sql: --max-rows 0 (no cap) needs --format csv or json")
    catalog = _catalog(ctx)
    try:
        with (
            cancel_on_sigint(Cancel()) as cancel,
            catalog.sql_stream(statement, max_rows=max_rows, timeout=timeout, cancel=cancel) as result,
        ):
            if not result.columns:
                click.echo("(no result)")
                return
            _emit_rows(result.columns, result, fmt)
        if result.truncated:
            click.echo(f"ztfcat sql: truncated at {max_rows} rows (--max-rows)", err=True)
    except QueryInterruptedError as exc:
        click.echo(f"ztfcat sql: {exc}", err=True)
        ctx.exit(130)
    except ZtfcatError as exc:
        raise click.ClickException(f"ztfcat sql: {exc}") from exc


def _emit_rows(columns, rows, fmt: str) -> None:
    """Rows of a SQL result: csv and json stream row by row; the aligned table needs them all."""
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else _plain(v) for v in row])
    elif fmt == "json":
        for row in rows:
            click.echo(json.dumps({c: _plain(v) for c, v in zip(columns, row, strict=True)}))
    else:
        from astropy.table import Table

        got = [tuple(r) for r in rows]
        emit_table(Table(rows=got, names=columns) if got else Table(names=columns), fmt)


@main.group()
def db() -> None:
    """Manage the catalog's database schema."""


@db.command()
@click.pass_context
def upgrade(ctx) -> None:
    """Bring the catalog's schema to the version this ztfcat needs."""
    from . import db as dbmod

    catalog = _catalog(ctx)
    engine = dbmod.make_engine(catalog.database_url)
    try:
        revision = dbmod.upgrade(engine)
    finally:
        engine.dispose()
    click.echo(f"catalog at {engine.url.render_as_string(hide_password=True)} is at revision {revision}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def info(ctx, as_json) -> None:
    """Where the catalog is and what it holds."""
    facts = _catalog(ctx).info()
    if as_json:
        click.echo(json.dumps(facts, default=str, indent=2))
        return
    click.echo(f"database:  {facts['database']}")
    click.echo(f"data dir:  {facts['data_dir']}  (layout: {facts['layout']})")
    counts = facts["counts"]
    click.echo(
        f"alerts:    {counts['alerts']} in {counts['releases']} releases; history: "
        f"{counts['prv_candidates']} prv_candidates, {counts['fp_hists']} fp_hists; "
        f"{counts['ingest_errors']} bad members"
    )
    if facts["schema_versions"]:
        click.echo("by schema version: " + ", ".join(f"{v}: {n}" for v, n in facts["schema_versions"]))
    for name, status, n_alerts, n_errors in facts["releases"]:
        click.echo(f"  {name:40s} {status:10s} {n_alerts:8d} alerts {n_errors:5d} bad")
    if facts["unknown_versions"]:
        click.echo("schema versions new to this ztfcat: " + ", ".join(facts["unknown_versions"]))
    if facts["alerts_with_unknown_fields"]:
        click.echo(
            f"{facts['alerts_with_unknown_fields']} alerts carry candidate fields this ztfcat does not know "
            f"({', '.join(facts['unknown_fields'])}); they are kept in the alerts.extra JSON column"
        )


@main.command()
@click.argument("target", type=click.Choice(["files", "pack"]), required=False)
@click.pass_context
def layout(ctx, target) -> None:
    """Show the blob layout, or convert every release to TARGET (files: one .avro per alert; pack: one
    uncompressed tar per night).  Safe to interrupt and run again."""
    catalog = _catalog(ctx)
    if target is None:
        click.echo(catalog.layout)
        return
    converted = catalog.convert_layout(
        target, progress=lambda name, n: click.echo(f"  {name}: {n} packets moved to {target}", err=True)
    )
    click.echo(f"{converted} releases converted; the catalog's layout is now {target}")


def _register_commands() -> None:
    """Commands of the other areas live beside the library modules they call."""
    from . import cli_archive, cli_explore, cli_transfer

    cli_archive.register(main)
    cli_explore.register(main)
    cli_transfer.register(main)


_register_commands()

if __name__ == "__main__":
    main()
