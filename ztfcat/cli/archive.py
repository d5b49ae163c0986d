"""Commands that talk to the archive: ``remote``, ``download``, ``delete`` and ``demo``.

They are the commands that need the archive (or, for ``demo``, a synthetic one): each resolves the
catalog, calls :mod:`ztfcat.mirror.archive` (or :mod:`ztfcat.testing.demo`) and formats; which releases a
download fetches is decided there (:func:`~ztfcat.mirror.archive.plan_download`), not here.  Progress bars
are drawn here, on stderr, from the library's callbacks; stdout carries only results, so
``ztfcat remote --format csv > listing.csv`` works.
"""

from __future__ import annotations

import time

import click

from ..errors import ZtfcatError
from .common import FORMAT, echo_error, open_catalog
from .fleet import fleet_options, report_fleet, wants_fleet
from .output import emit_table, human_bytes, plural
from .progress import Bar, DownloadBar, DownloadBars


@click.command()
@click.option("--from", "night_from", help="First night (YYYY-MM-DD).")
@click.option("--to", "night_to", help="Last night (YYYY-MM-DD).")
@click.option("--refresh", is_flag=True, help="Ask the archive again (HEAD only for new files).")
@click.option(
    "--missing",
    is_flag=True,
    help="Only releases not complete in the catalog (what download would fetch).",
)
@FORMAT
@click.pass_context
def remote(ctx, night_from, night_to, refresh, missing, fmt) -> None:
    """List the releases the archive offers: night, exact size, MD5, and whether the catalog has it.

    The listing is cached in the catalog; the first call, and --refresh, ask the archive.
    """
    from ..mirror.archive import listing_table

    table = listing_table(
        open_catalog(ctx), refresh=refresh, first=night_from, last=night_to, missing=missing
    )
    emit_table(table, fmt)
    known = table["size"][table["size"] >= 0]
    click.echo(
        f"{plural(len(table), 'release')}, {human_bytes(int(known.sum()))}; "
        f"{int(table['in_catalog'].sum())} complete in the catalog",
        err=True,
    )


@click.command()
@click.argument("nights", nargs=-1)
@click.option("--recent", type=int, metavar="N", help="The N newest releases not yet complete.")
@click.option("--from", "night_from", help="Every release from this night (YYYY-MM-DD) ...")
@click.option("--to", "night_to", help="... to this night (default: the newest).")
@click.option("--stop-on-exist", is_flag=True, help="With --recent: stop at the first complete night.")
@click.option("--keep-tarballs", is_flag=True, help="Keep verified tarballs in <data-dir>/downloads.")
@click.option("--force", is_flag=True, help="Download and ingest again even if complete.")
@click.option("--refresh/--no-refresh", default=True, help="Refresh the listing first (default yes).")
@click.option("--no-md5", is_flag=True, help="Accept releases MD5SUMS does not list (size checked only).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars (pipes never get them).")
@click.option(
    "--stall-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Fail a read after this long without a byte (default ZTFCAT_STALL_TIMEOUT or 60).",
)
@click.option(
    "--min-speed",
    type=click.FloatRange(min=0),
    metavar="BYTES/S",
    help="Fail a download slower than this on average (default ZTFCAT_MIN_SPEED or 10000; 0: off).",
)
@click.option(
    "--allow-redirect-host",
    "redirect_hosts",
    multiple=True,
    metavar="HOST[:PORT]",
    help="A host the archive may redirect to (default ZTFCAT_ALLOW_REDIRECT_HOSTS; others are refused).",
)
@fleet_options
@click.pass_context
def download(
    ctx,
    nights,
    recent,
    night_from,
    night_to,
    stop_on_exist,
    keep_tarballs,
    force,
    refresh,
    no_md5,
    quiet,
    stall_timeout,
    min_speed,
    redirect_hosts,
    workers,
    dask_scheduler,
) -> None:
    """Download, verify (size and MD5) and ingest nightly releases, newest first with --recent.

    Bytes go into the catalog as they arrive; an interrupted download resumes where it stopped.
    On a terminal each release draws a progress bar (bytes, rate, ETA, alerts so far).
    Examples: ``ztfcat download 2018-06-26``, ``ztfcat download --recent 3``,
    ``ztfcat download --from 2018-06-01 --to 2018-06-30``.
    With --workers N (or --dask-scheduler) the releases download in parallel, one per worker,
    into a PostgreSQL catalog: ``ztfcat download --workers 4 --from 2018-06-01``.
    """
    from ..mirror.archive import download_release, plan_download
    from ..sources.http import ArchiveClient

    chosen = [bool(nights), recent is not None, bool(night_from or night_to)]
    if sum(chosen) != 1:
        raise click.UsageError("give NIGHTS, or --recent N, or --from/--to (one of them)")
    catalog = open_catalog(ctx)
    fleet = wants_fleet(workers, dask_scheduler)
    if fleet:
        from ..fleet import require_postgresql

        require_postgresql(catalog)  # before the listing is fetched
    client = ArchiveClient(
        catalog.archive_url,
        timeout=(None, stall_timeout),
        min_speed=min_speed,
        allow_redirects_to=redirect_hosts or None,
    )
    ctx.call_on_close(client.close)
    plan = plan_download(
        catalog,
        nights=nights,
        recent=recent,
        first=night_from,
        last=night_to,
        stop_on_exist=stop_on_exist,
        force=force,
        refresh=refresh,
        client=client,
    )
    files = plan.files
    failed = [str(night) for night, _ in plan.missing]
    for _, exc in plan.missing:
        echo_error(exc)
    if not files and not failed:
        click.echo("nothing to download: every release asked for is complete in the catalog", err=True)
        return
    if fleet:
        from ..fleet import DownloadOptions, download_releases

        options = DownloadOptions(stall_timeout, min_speed, tuple(redirect_hosts), keep_tarballs, not no_md5)
        run = dict(workers=workers, scheduler=dask_scheduler, force=force)
        report_fleet(lambda on_result: download_releases(catalog, files, options, on_result=on_result, **run))
        if failed:  # nights the archive does not have, named above
            raise click.ClickException(f"{len(failed)} nights not in the archive: {', '.join(failed)}")
        return
    asked = len(files) + len(failed)
    started = time.perf_counter()
    done, skipped, alerts, size = 0, 0, 0, 0
    for file in files:
        try:
            with DownloadBar(file.name, file.size, quiet) as bar:
                report = download_release(
                    catalog,
                    file,
                    client=client,
                    keep_tarballs=keep_tarballs,
                    force=force,
                    require_md5=not no_md5,
                    progress=bar,
                )
        except ZtfcatError as exc:
            failed.append(file.name)
            echo_error(exc)
            continue
        if report.already_complete:
            skipped += 1
        else:
            done += 1
            alerts += report.n_alerts
            size += report.size
        click.echo(str(report))
    seconds = time.perf_counter() - started
    summary = f"{plural(done, 'release')} ingested ({plural(alerts, 'alert')}, {human_bytes(size)}) in {seconds:.1f} s"
    if skipped:
        summary += f"; {skipped} already complete"
    click.echo(summary, err=True)
    if failed:
        raise click.ClickException(f"{len(failed)} of {asked} failed: {', '.join(failed)}")


@click.command()
@click.argument("nights", nargs=-1)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx, nights, yes) -> None:
    """Delete ingested releases (rows and packets): those of NIGHTS, or all of them.

    Partial downloads and kept tarballs of those releases go too.  A progress bar on a terminal.
    """
    from ..mirror.archive import delete_releases
    from ..sources.names import parse_night

    catalog = open_catalog(ctx)
    wanted = {parse_night(n) for n in nights}
    table = catalog.releases()
    if wanted:
        table = table[[r["night"] in wanted for r in table]]
    if len(table) == 0:
        click.echo("nothing to delete", err=True)
        return
    n_alerts = int(sum(table["n_alerts"]))
    what = "ALL " if not wanted else ""
    if not yes:
        click.confirm(
            f"Delete {what}{plural(len(table), 'release')} ({plural(n_alerts, 'alert')}) from {catalog.data_dir}?",
            abort=True,
            err=True,
        )
    names = [str(n) for n in table["name"]]
    with Bar("deleting", len(names), "release") as bar:
        removed = delete_releases(catalog, names if wanted else None, progress=bar.deleted)
    click.echo(f"deleted {plural(removed, 'release')} ({plural(n_alerts, 'alert')})")


@click.command()
@click.option(
    "--data-dir",
    "demo_dir",
    type=click.Path(file_okay=False),
    help="An empty (or new) folder for the demo catalog; default: a new temporary folder.",
)
@click.option("--nights", default=3, show_default=True, help="Synthetic nights to serve (one is empty).")
@click.option("--alerts", default=40, show_default=True, help="Alerts per non-empty night.")
@click.pass_context
def demo(ctx, demo_dir, nights, alerts) -> None:
    """Try ztfcat without the internet: a synthetic archive on 127.0.0.1, downloaded and ingested.

    Runs the real download path (listing, MD5SUMS, streaming download, verify, ingest), then
    shows a summary, a few alerts, a stamps PNG and how to open the catalog with sqlite3.
    """
    from click.core import ParameterSource

    from ..testing.demo import run_demo

    root = ctx.find_root()
    if demo_dir is None and root.get_parameter_source("data_dir") is ParameterSource.COMMANDLINE:
        demo_dir = root.obj["data_dir"]  # `ztfcat --data-dir X demo`; never the env's real catalog
    with DownloadBars() as bars:
        run_demo(demo_dir, n_nights=nights, n_alerts=alerts, echo=click.echo, progress=bars)
