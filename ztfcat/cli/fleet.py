"""``--workers N`` and ``--dask-scheduler ADDRESS`` on ``ztfcat ingest`` and ``ztfcat download``.

Thin, as the rest of the CLI: the options, then one call of :mod:`ztfcat.fleet` and one line per night
as it finishes (failures on stderr, each naming its night and the reason), a summary on stderr, and
exit status 1 when any night failed.  No progress bars: nights finish out of order on other processes.
"""

from __future__ import annotations

import click


def fleet_options(func):
    """The two options that send a command's nights to dask workers."""
    func = click.option(
        "--dask-scheduler",
        "dask_scheduler",
        metavar="ADDRESS",
        help="Run the nights on this dask scheduler's workers (e.g. tcp://host:8786); PostgreSQL only.",
    )(func)
    return click.option(
        "--workers",
        type=click.IntRange(min=1),
        metavar="N",
        help="Run the nights on N local worker processes, one night each at a time; PostgreSQL only.",
    )(func)


def wants_fleet(workers: int | None, dask_scheduler: str | None) -> bool:
    """Whether the command runs on workers; both options at once is a usage error."""
    if workers and dask_scheduler:
        raise click.UsageError("give --workers N or --dask-scheduler ADDRESS, not both")
    return bool(workers or dask_scheduler)


def _print_night(result) -> None:
    """One finished night: its line on stdout, or its error (naming it and the reason) on stderr."""
    if result.ok:
        click.echo(str(result))
    else:
        click.echo(f"error: {result}", err=True)


def report_fleet(run) -> None:
    """Call ``run(on_result)`` (a :mod:`ztfcat.fleet` function), print each night and the summary."""
    report = run(_print_night)
    click.echo(str(report), err=True)
    if report.failed:
        raise click.ClickException(
            f"{len(report.failed)} of {len(report.results)} nights failed: "
            + ", ".join(r.name for r in report.failed)
        )
