"""The ``ztfcat`` command: a thin layer that resolves settings, calls one library function and formats.

Progress bars live here; the library reports progress through callbacks.  Library errors
(:class:`ZtfcatError`) become one-line messages and exit status 1, never tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import __version__
from .cli_fleet import fleet_options, report_fleet, wants_fleet
from .cli_output import emit_rows, emit_table, plain, plural
from .errors import QueryInterruptedError, ZtfcatError
from .readonly import DEFAULT_MAX_ROWS, DEFAULT_TIME_LIMIT_S

if TYPE_CHECKING:
    from .catalog import Catalog

__all__ = ["emit_rows", "emit_table", "main", "plain", "plural"]

#: ``-h`` as well as ``--help`` on every command (subcommands inherit the setting).
CONTEXT = {"help_option_names": ["-h", "--help"]}


class _Group(click.Group):
    """Turns library errors into clean CLI errors."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ZtfcatError as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            # A catalog that opened but fails on reading (a corrupt page).  SQLAlchemy is looked up, not
            # imported: --help and --version must not pay for it.
            errors = sys.modules.get("sqlalchemy.exc")
            if errors is None or not isinstance(exc, errors.DBAPIError):
                raise
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise click.ClickException(f"the catalog database failed: {reason}") from exc


@click.group(cls=_Group, context_settings=CONTEXT)
@click.option(
    "--data-dir", envvar="ZTFCAT_DATA_DIR", type=click.Path(file_okay=False), help="Data directory."
)
@click.option("--database-url", envvar="ZTFCAT_DATABASE_URL", help="SQLAlchemy URL of the catalog database.")
@click.option("--archive-url", envvar="ZTFCAT_ARCHIVE_URL", help="Base URL of the alert archive or a mirror.")
@click.option("--layout", envvar="ZTFCAT_LAYOUT", type=click.Choice(["files", "pack"]), help="Blob layout.")
@click.version_option(__version__, "--version", "-V", prog_name="ztfcat")
@click.pass_context
def main(ctx: click.Context, data_dir, database_url, archive_url, layout) -> None:
    """ztfcat: the ZTF public alert archive on your own disk, as a SQL catalog.

    Every command takes -h for its help.  Long work draws progress bars on a terminal only.
    """
    ctx.obj = dict(data_dir=data_dir, database_url=database_url, archive_url=archive_url, layout=layout)


def _catalog(ctx: click.Context) -> Catalog:
    from .catalog import Catalog  # SQLAlchemy and friends: loaded by the commands that need a catalog

    obj = ctx.find_root().obj
    catalog = Catalog(obj["database_url"], obj["data_dir"], obj["archive_url"], layout=obj["layout"])
    ctx.call_on_close(catalog.close)
    return catalog


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
    help="Condition on alert columns, e.g. 'rb > 0.9 and fid = 1' or '(fid = 1 or fid = 2) and rb >= 0.5'"
    " (and, or, not, parentheses; values are bound, columns checked: see `ztfcat columns`); repeats AND.",
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
@fleet_options
@click.pass_context
def ingest(ctx, sources, force, as_json, workers, dask_scheduler) -> None:
    """Ingest nightly tarballs (paths or gs://bucket/object URLs) into the catalog.

    A progress bar (bytes, rate, ETA, alerts so far) is drawn on a terminal; pipes stay quiet.
    With --workers N (or --dask-scheduler) the tarballs are ingested in parallel, one night per
    worker, into a PostgreSQL catalog; the paths must be readable by every worker.
    """
    from .cli_progress import Bar

    catalog = _catalog(ctx)
    if wants_fleet(workers, dask_scheduler):
        from .fleet import ingest_sources

        options = dict(workers=workers, scheduler=dask_scheduler, force=force)
        report_fleet(lambda on_result: ingest_sources(catalog, sources, on_result=on_result, **options))
        return
    failed = 0
    for source in sources:
        size = Path(source).stat().st_size if Path(source).is_file() else None
        with Bar(Path(source).name, size, "B", hidden=as_json) as bar:

            def progress(n_alerts, n_bytes, bar=bar):
                bar.to(n_bytes, plural(n_alerts, "alert"))

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
        raise click.ClickException(f"{failed} of {plural(len(sources), 'tarball')} failed")


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
    """List alerts, filtered on any candidate column (see `ztfcat columns`).

    Floats are rounded in the aligned table; --format csv and json carry full precision.
    Example: ``ztfcat alerts -w 'rb > 0.9 and fid = 1' -c candid,objectId,magpsf -n 5``.
    """
    names, rows = _catalog(ctx).query_rows(
        *conditions,
        columns=[c.strip() for c in columns.split(",") if c.strip()] if columns else None,
        limit=limit or None,
        order_by=order_by,
        **_filters(night, night_from, night_to, object_id, release, schemavsn),
    )
    emit_rows(names, rows, fmt)


@main.command()
@click.argument("candid", type=int)
@click.option("--raw", is_flag=True, help="Write the original Avro bytes instead of JSON.")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write here, not stdout."
)
@click.pass_context
def show(ctx, candid, raw, output) -> None:
    """Show one alert as JSON (cutouts summarised), or write its raw Avro with --raw.

    --raw writes binary: give -o FILE, or send stdout to a pipe or file (it refuses a terminal).
    """
    if raw and not output and sys.stdout.isatty():
        raise click.UsageError("--raw writes binary Avro; give -o FILE or redirect stdout (> alert.avro)")
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
            emit_rows(result.columns, result if fmt != "table" else list(result), fmt)
        if result.truncated:
            click.echo(f"ztfcat sql: truncated at {max_rows} rows (--max-rows)", err=True)
    except QueryInterruptedError as exc:
        click.echo(f"ztfcat sql: {exc}", err=True)
        ctx.exit(130)
    except ZtfcatError as exc:
        raise click.ClickException(f"ztfcat sql: {exc}") from exc



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
    pending = catalog.pending_rebuilds()
    if pending:
        click.echo(f"deriving the light curves of {plural(pending, 'object')} again from their packets ...")
        catalog.repair()
        click.echo("done")


@main.command()
@click.pass_context
def repair(ctx) -> None:
    """Finish what killed runs left: half-deleted releases, interrupted ingests, light curves to rebuild.

    Every ingest and delete does this first; run it by hand after `ztfcat db upgrade` or a crash.
    """
    catalog = _catalog(ctx)
    if not catalog.exists():
        raise click.ClickException(f"no catalog at {catalog.database_url}; nothing to repair")
    before = catalog.pending_rebuilds()
    catalog.repair()
    click.echo(f"repaired: {plural(before, 'light curve')} derived again; every release is complete or failed")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def info(ctx, as_json) -> None:
    """Where the catalog is and what it holds; never creates one (exit 1 where there is none)."""
    catalog = _catalog(ctx)
    if not catalog.exists():
        where = f"no catalog at {catalog.database_url} (data dir {catalog.data_dir})"
        if catalog.data_dir.is_dir() and not os.access(catalog.data_dir, os.W_OK):
            raise click.ClickException(f"{where}, and the data dir is not writable: none can be made there")
        raise click.ClickException(f"{where}; make one with `ztfcat download`, `ztfcat ingest` or `ztfcat demo`")
    facts = catalog.info()
    if as_json:
        click.echo(json.dumps(facts, default=str, indent=2))
        return
    click.echo(f"database:  {facts['database']}")
    click.echo(f"data dir:  {facts['data_dir']}  (layout: {facts['layout']})")
    counts = facts["counts"]
    click.echo(
        f"alerts:    {counts['alerts']} in {plural(counts['releases'], 'release')}; history: "
        f"{counts['prv_candidates']} prv_candidates, {counts['fp_hists']} fp_hists; "
        f"{plural(counts['ingest_errors'], 'bad member')}"
    )
    if facts["schema_versions"]:
        click.echo("by schema version: " + ", ".join(f"{v}: {n}" for v, n in facts["schema_versions"]))
    for name, status, n_alerts, n_errors in facts["releases"]:
        click.echo(
            f"  {name:40s} {status:10s} {n_alerts:8d} {'alert ' if n_alerts == 1 else 'alerts'} {n_errors:5d} bad"
        )
    if facts["unknown_versions"]:
        click.echo("schema versions new to this ztfcat: " + ", ".join(facts["unknown_versions"]))
    if facts.get("unknown_top_fields"):
        click.echo(
            "alert fields this ztfcat does not know (kept in the raw packets): "
            + ", ".join(facts["unknown_top_fields"])
        )
    if facts["alerts_with_unknown_fields"]:
        click.echo(
            f"{plural(facts['alerts_with_unknown_fields'], 'alert')} carry candidate fields this ztfcat does not know "
            f"({', '.join(facts['unknown_fields'])}); they are kept in the alerts.extra JSON column"
        )


@main.command()
@click.argument("target", type=click.Choice(["files", "pack"]), required=False)
@click.pass_context
def layout(ctx, target) -> None:
    """Show the blob layout, or convert every release to TARGET (files: one .avro per alert; pack: one
    uncompressed tar per night).  Safe to interrupt and run again; a progress bar on a terminal."""
    catalog = _catalog(ctx)
    if target is None:
        click.echo(catalog.layout)
        return
    from .cli_progress import Bar

    todo = sum(1 for layout_now in catalog.releases()["layout"] if layout_now != target)
    with Bar(f"to {target}", todo, "release") as bar:
        converted = catalog.convert_layout(
            target, progress=lambda name, n: bar.add(1, f"{name}: {n} packets")
        )
    click.echo(f"{plural(converted, 'release')} converted; the catalog's layout is now {target}")


@main.command()
@click.argument("table", default="alerts", required=False)
@click.option("--search", "-s", metavar="TEXT", help="Only columns whose name or description has TEXT.")
@FORMAT
@click.pass_context
def columns(ctx, table, search, fmt) -> None:
    """Every column of TABLE (alerts, prv_candidates, fp_hists, releases, ...) with its type and
    ZTF's own description (the doc of the field in ZTF's Avro schema).

    Needs no catalog: these are the columns --where, --columns and SQL can name.
    """
    from .catalog import Catalog

    rows = Catalog().columns(table)  # nothing is opened: the schema is this ztfcat's own
    if search:
        rows = [r for r in rows if search.lower() in r[0].lower() or search.lower() in r[2].lower()]
    emit_rows(["column", "type", "description"], rows, fmt)


def _register_commands() -> None:
    """Commands of the other areas live beside the library modules they call."""
    from . import cli_archive, cli_explore, cli_science, cli_transfer, cli_web

    cli_archive.register(main)
    cli_explore.register(main)
    cli_science.register(main)
    cli_transfer.register(main)
    cli_web.register(main)


_register_commands()

if __name__ == "__main__":
    main(prog_name="ztfcat")
