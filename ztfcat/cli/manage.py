"""Commands that fill the catalog and look after it: ``ingest``, ``releases``, ``errors``, ``repair``,
``info``, ``layout`` and ``db upgrade``.

They are the commands about the catalog itself (what is in it, how it is stored, its schema) rather than
about the alerts in it (:mod:`ztfcat.cli.query`) or the archive it mirrors (:mod:`ztfcat.cli.archive`).
Each opens the catalog, calls one :class:`~ztfcat.Catalog` method and prints; :mod:`ztfcat.cli.root`
adds them to the ``ztfcat`` group.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..errors import ZtfcatError
from .common import FORMAT, echo_error, open_catalog
from .fleet import fleet_options, report_fleet, wants_fleet
from .output import emit_table, plural
from .progress import Bar


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Ingest again even if the release is complete.")
@click.option("--json", "as_json", is_flag=True, help="Print each report as one JSON line.")
@click.option(
    "--blobs",
    metavar="URL",
    help="Put each night's pack on shared storage: gs://bucket/prefix or a directory all machines mount"
    " (default: ZTFCAT_BLOB_URL, then the catalog's recorded store, then the data dir).",
)
@fleet_options
@click.pass_context
def ingest(ctx, sources, force, as_json, blobs, workers, dask_scheduler) -> None:
    """Ingest nightly tarballs (paths or gs://bucket/object URLs) into the catalog.

    A progress bar (bytes, rate, ETA, alerts so far) is drawn on a terminal; pipes stay quiet.
    With --workers N (or --dask-scheduler) the tarballs are ingested in parallel, one night per
    worker, into a PostgreSQL catalog; the paths must be readable by every worker.
    """
    catalog = open_catalog(ctx, blobs=blobs)
    if wants_fleet(workers, dask_scheduler):
        from ..fleet import ingest_sources

        options = dict(workers=workers, scheduler=dask_scheduler, force=force)
        report_fleet(lambda on_result: ingest_sources(catalog, sources, on_result=on_result, **options))
        return
    failed = 0
    for source in sources:
        size = Path(source).stat().st_size if Path(source).is_file() else None
        with Bar(Path(source).name, size, "B", hidden=as_json) as bar:
            try:
                report = catalog.ingest(source, progress=bar.ingested, force=force)
            except ZtfcatError as exc:
                failed += 1
                echo_error(exc)
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


@click.command()
@FORMAT
@click.pass_context
def releases(ctx, fmt) -> None:
    """List ingested releases with their status and counts."""
    table = open_catalog(ctx).releases()
    emit_table(table[["name", "night", "status", "n_alerts", "n_errors", "n_duplicates", "size", "md5"]], fmt)


@click.command()
@click.option("--release", help="Only this release.")
@FORMAT
@click.pass_context
def errors(ctx, release, fmt) -> None:
    """List tar members that failed to decode, with the reason."""
    emit_table(open_catalog(ctx).ingest_errors(release), fmt)


@click.group()
def db() -> None:
    """Manage the catalog's database schema."""


@db.command()
@click.pass_context
def upgrade(ctx) -> None:
    """Bring the catalog's schema to the version this ztfcat needs."""
    catalog = open_catalog(ctx)
    revision = catalog.upgrade()
    click.echo(f"catalog at {catalog.url_for_display} is at revision {revision}")
    pending = catalog.pending_rebuilds()
    if pending:
        click.echo(f"deriving the light curves of {plural(pending, 'object')} again from their packets ...")
        catalog.repair()
        click.echo("done")


@click.command()
@click.pass_context
def repair(ctx) -> None:
    """Finish what killed runs left: half-deleted releases, interrupted ingests, light curves to rebuild.

    Every ingest and delete does this first; run it by hand after `ztfcat db upgrade` or a crash.
    """
    catalog = open_catalog(ctx)
    if not catalog.exists():
        raise click.ClickException(f"no catalog at {catalog.database_url}; nothing to repair")
    before = catalog.pending_rebuilds()
    catalog.repair()
    click.echo(
        f"repaired: {plural(before, 'light curve')} derived again; every release is complete or failed"
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def info(ctx, as_json) -> None:
    """Where the catalog is and what it holds; never creates one (exit 1 where there is none)."""
    catalog = open_catalog(ctx)
    if not catalog.exists():
        where = f"no catalog at {catalog.database_url} (data dir {catalog.data_dir})"
        if catalog.data_dir.is_dir() and not os.access(catalog.data_dir, os.W_OK):
            raise click.ClickException(f"{where}, and the data dir is not writable: none can be made there")
        raise click.ClickException(
            f"{where}; make one with `ztfcat download`, `ztfcat ingest` or `ztfcat demo`"
        )
    facts = catalog.info()
    if as_json:
        click.echo(json.dumps(facts, default=str, indent=2))
        return
    click.echo(f"database:  {facts['database']}")
    click.echo(f"data dir:  {facts['data_dir']}  (layout: {facts['layout']})")
    if facts.get("blobs"):
        click.echo(f"blobs:     {facts['blobs']}  (new nights' packs; rows name their objects)")
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


@click.command()
@click.argument("target", type=click.Choice(["files", "pack"]), required=False)
@click.pass_context
def layout(ctx, target) -> None:
    """Show the blob layout, or convert every release to TARGET (files: one .avro per alert; pack: one
    uncompressed tar per night).  Safe to interrupt and run again; a progress bar on a terminal."""
    catalog = open_catalog(ctx)
    if target is None:
        click.echo(catalog.layout)
        return
    todo = sum(1 for layout_now in catalog.releases()["layout"] if layout_now != target)
    with Bar(f"to {target}", todo, "release") as bar:
        converted = catalog.convert_layout(target, progress=bar.converted)
    click.echo(f"{plural(converted, 'release')} converted; the catalog's layout is now {target}")
