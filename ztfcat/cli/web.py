"""``ztfcat serve``: the catalog in a web browser (datasette with the ztfcat plugin, :mod:`ztfcat.web`).

A module of its own because it is the one command over an optional extra: datasette is ``ztfcat[web]``,
looked for only when ``serve`` runs (without it the command says so in one line), and the pages are built
by :mod:`ztfcat.web.app`.  :mod:`ztfcat.cli.root` adds it to the ``ztfcat`` group.
"""

from __future__ import annotations

import click

from .common import open_catalog

MISSING = "ztfcat serve needs datasette: pip install 'ztfcat[web]'"


@click.command()
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="Port to listen on (0: any free port).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; 0.0.0.0 makes the catalog visible to the whole network.")  # fmt: skip
@click.option("--open", "open_browser", is_flag=True, help="Open the home page in a web browser.")
@click.option("--sql-time-limit-ms", type=click.IntRange(1), default=3000, show_default=True,
              help="Time limit of every SQL query a page runs.")  # fmt: skip
@click.option("--max-returned-rows", type=click.IntRange(1), default=1000, show_default=True,
              help="Row cap of the SQL page and of table pages.")  # fmt: skip
@click.option("--immutable", is_flag=True,
              help="Open the SQLite file immutable (faster); only when nothing ingests meanwhile.")  # fmt: skip
@click.pass_context
def serve(ctx, port, host, open_browser, sql_time_limit_ms, max_returned_rows, immutable) -> None:
    """Serve the catalog read-only in a web browser: alert, object and cone-search pages, and
    datasette's tables and SQL page.  Ctrl-C stops it."""
    import importlib.util

    if importlib.util.find_spec("datasette") is None:
        raise click.ClickException(MISSING)
    from ..web.app import make_datasette
    from ..web.app import serve as run

    datasette = make_datasette(
        open_catalog(ctx),
        sql_time_limit_ms=sql_time_limit_ms,
        max_returned_rows=max_returned_rows,
        immutable=immutable,
    )
    run(
        datasette,
        host=host,
        port=port,
        open_browser=open_browser,
        announce=lambda m: click.echo(m, err=True),
    )
