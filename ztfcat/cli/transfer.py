"""Commands for a Google Cloud Storage mirror: ``sync-table`` and ``sync-bucket``.

They are the commands for a bucket mirror of the archive (the Storage Transfer Service's URL list, and
ingesting what a bucket holds): each opens the catalog, calls one function of :mod:`ztfcat.mirror.bucket`
and reports; :mod:`ztfcat.cli.root` adds them to the ``ztfcat`` group.
"""

from __future__ import annotations

import json
import sys
import warnings

import click

from .common import FORMAT, open_catalog
from .output import emit_table, plural
from .progress import ObjectBars


@click.command("sync-table")
@click.argument("bucket", required=False)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the URL list (TsvHttpData-1.0) here; '-' writes it to stdout instead of the table.",
)
@click.option("--prefix", default="", help="Destination folder of the transfer job in the bucket.")
@click.option("--no-empty", is_flag=True, help="Leave out empty nights (tarballs of at most 100 bytes).")
@click.option("--cached", is_flag=True, help="Use the cached archive listing instead of asking again.")
@FORMAT
@click.pass_context
def sync_table(ctx, bucket, output, prefix, no_empty, cached, fmt) -> None:
    """List the archive tarballs BUCKET lacks (all without BUCKET), for the Storage Transfer Service.

    A tarball counts as held when BUCKET has it under the name the service writes, HOST/PATH of its
    URL (e.g. ztf.uw.edu/alerts/public/ztf_public_20180626.tar.gz), with the archive's MD5.
    """
    from ..mirror.bucket import SkippedFilesWarning, create_sync_table, sync_table_tsv

    catalog = open_catalog(ctx)
    to_stdout = output == "-"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFilesWarning)  # reported below, one line each
        table = create_sync_table(
            catalog,
            bucket,
            None if to_stdout else output,
            prefix=prefix,
            include_empty=not no_empty,
            refresh=not cached,
        )
    for line in table.meta["skipped"]:
        click.echo(f"left out {line}", err=True)
    if to_stdout:
        sys.stdout.write(sync_table_tsv(table))
        return
    emit_table(table, fmt)
    where = f" in gs://{bucket}/{prefix}" if bucket else ""
    summary = (
        f"{len(table)} of {plural(table.meta['n_archive'], 'archive tarball')} to transfer "
        f"({table.meta['total_bytes']} bytes); {table.meta['n_in_bucket']} already{where}"
    )
    if output:
        summary += f"; URL list written to {output}"
    click.echo(summary, err=True)


@click.command("sync-bucket")
@click.argument("bucket")
@click.option("--prefix", default="", help="Only objects whose names start with this.")
@click.option("--json", "as_json", is_flag=True, help="Print each report as one JSON line.")
@click.pass_context
def sync_bucket(ctx, bucket, prefix, as_json) -> None:
    """Ingest every release tarball in BUCKET that the catalog does not hold complete yet.

    Objects are streamed from the bucket (no local copy), with the google-cloud-storage default
    credentials.  A progress bar per tarball on a terminal.
    """
    from ..mirror.bucket import sync_bucket as run

    catalog = open_catalog(ctx)
    with ObjectBars(hidden=as_json) as bars:
        reports = run(catalog, bucket, prefix, bars)
    failed = [r for r in reports if r.status == "failed"]
    for report in reports:
        if as_json:
            click.echo(json.dumps(report.as_dict()))
        elif report.status == "failed":
            click.echo(f"{report.release}: failed: {report.errors[0][1]}")
        else:
            click.echo(str(report))
    if not reports:
        click.echo(f"no release tarballs in gs://{bucket}/{prefix}", err=True)
    if failed:
        raise click.ClickException(f"{len(failed)} of {plural(len(reports), 'tarball')} failed")
