"""Commands that read alerts: ``alerts``, ``show``, ``sql`` and ``columns``.

The read side of the catalog for a terminal: a filtered listing, one alert in full (or its raw Avro
bytes), one read-only SQL statement, and the columns all of them can name.  Each opens the catalog,
calls one :class:`~ztfcat.Catalog` method and writes the result through :mod:`ztfcat.cli.output`;
:mod:`ztfcat.cli.root` adds them to the ``ztfcat`` group.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import QueryInterruptedError, ZtfcatError
from ..store.readonly import DEFAULT_MAX_ROWS, DEFAULT_TIME_LIMIT_S
from .common import FORMAT, column_list, filter_options, named_filters, open_catalog
from .output import emit_rows


@click.command()
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
    names, rows = open_catalog(ctx).query_rows(
        *conditions,
        columns=column_list(columns),
        limit=limit or None,
        order_by=order_by,
        **named_filters(night, night_from, night_to, object_id, release, schemavsn),
    )
    emit_rows(names, rows, fmt)


@click.command()
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
    catalog = open_catalog(ctx)
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


@click.command()
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
    from ..store.readonly import Cancel, cancel_on_sigint

    if max_rows == 0 and fmt == "table":
        raise click.ClickException("ztfcat sql: --max-rows 0 (no cap) needs --format csv or json")
    catalog = open_catalog(ctx)
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


@click.command()
@click.argument("table", default="alerts", required=False)
@click.option("--search", "-s", metavar="TEXT", help="Only columns whose name or description has TEXT.")
@FORMAT
@click.pass_context
def columns(ctx, table, search, fmt) -> None:
    """Every column of TABLE (alerts, prv_candidates, fp_hists, releases, ...) with its type and
    ZTF's own description (the doc of the field in ZTF's Avro schema).

    Needs no catalog: these are the columns --where, --columns and SQL can name.
    """
    from ..catalog import Catalog

    rows = Catalog().columns(table, search)  # nothing is opened: the schema is this ztfcat's own
    emit_rows(["column", "type", "description"], rows, fmt)
