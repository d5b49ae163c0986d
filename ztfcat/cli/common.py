"""What the command modules share: the catalog of the command line, the filter options, ``--format``.

It exists so that every command module (:mod:`~ztfcat.cli.manage`, :mod:`~ztfcat.cli.query`,
:mod:`~ztfcat.cli.archive`, ...) and :mod:`ztfcat.cli.root`, which gathers them into the ``ztfcat``
group, import these pieces from below: no command module imports the root, so there is no import cycle
and each module can be read (and imported) alone.  Importing it costs click and nothing else; the
catalog, and SQLAlchemy with it, is loaded only when a command opens one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..catalog import Catalog

__all__ = ["FORMAT", "WHERE", "column_list", "echo_error", "filter_options", "named_filters", "open_catalog"]


def open_catalog(ctx: click.Context, **options) -> Catalog:
    """The catalog the global options (``--data-dir``, ``--database-url``, ...) name, closed with the command.

    Parameters
    ----------
    ctx : click.Context
        The running command's context; the global options are on its root's ``obj``.
    **options
        More :class:`~ztfcat.Catalog` arguments a command takes (``blobs=``).
    """
    from ..catalog import Catalog  # SQLAlchemy and friends: loaded by the commands that need a catalog

    obj = ctx.find_root().obj
    catalog = Catalog(
        obj["database_url"], obj["data_dir"], obj["archive_url"], layout=obj["layout"], **options
    )
    ctx.call_on_close(catalog.close)
    return catalog


def echo_error(exc: Exception) -> None:
    """Report one failure of a command that goes on with the rest (one tarball of several): one line on stderr."""
    click.echo(f"error: {exc}", err=True)


def column_list(text: str | None) -> list[str] | None:
    """The names of a ``--columns a,b,c`` option (blanks around names and empty names dropped); None if absent."""
    if not text:
        return None
    return [c.strip() for c in text.split(",") if c.strip()]


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


def filter_options(func):
    """The named filters shared by every command that selects alerts: ``--where`` and ``--night`` ... ``--schemavsn``.

    The command receives ``conditions, night, night_from, night_to, object_id, release, schemavsn``;
    :func:`named_filters` turns the last six into the library's keyword filters.
    """
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


def named_filters(night, night_from, night_to, object_id, release, schemavsn) -> dict:
    """The keyword filters of :meth:`ztfcat.Catalog.query` that :func:`filter_options` were given."""
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
