"""The ``ztfcat`` command: the root group, its global options, and the one place commands are added to it.

Every command is a plain function of one command module (:mod:`~ztfcat.cli.manage`,
:mod:`~ztfcat.cli.query`, :mod:`~ztfcat.cli.archive`, :mod:`~ztfcat.cli.explore`,
:mod:`~ztfcat.cli.science`, :mod:`~ztfcat.cli.transfer`, :mod:`~ztfcat.cli.web`); :data:`COMMANDS` below
lists them, so a new command is a function in the module of its kind and one line here.  The command
modules import their shared pieces from :mod:`ztfcat.cli.common`, never from here, so importing this module
builds the whole group without a cycle.  Each command is thin: it resolves settings, calls one library
function and formats; library errors (:class:`ZtfcatError`) become one-line messages and exit status 1,
never tracebacks.
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import ZtfcatError
from . import archive, explore, manage, query, science, transfer, web

__all__ = ["COMMANDS", "main"]

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


#: Every command of ``ztfcat``, by module; ``ztfcat --help`` lists them by name.
COMMANDS: tuple[click.Command, ...] = (
    manage.ingest,
    manage.releases,
    manage.errors,
    manage.repair,
    manage.info,
    manage.layout,
    manage.db,
    query.alerts,
    query.show,
    query.sql,
    query.columns,
    archive.remote,
    archive.download,
    archive.delete,
    archive.demo,
    explore.plot,
    explore.lightcurve,
    explore.cone,
    explore.export,
    science.xmatch,
    science.skymap,
    science.objects,
    transfer.sync_table,
    transfer.sync_bucket,
    web.serve,
)
for _command in COMMANDS:
    main.add_command(_command)
del _command

if __name__ == "__main__":
    main(prog_name="ztfcat")
