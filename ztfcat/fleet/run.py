"""Spread nights over dask workers and gather what became of each: the library calls behind
``ztfcat ingest --workers`` / ``ztfcat download --workers`` (and ``--dask-scheduler``).

The catalog is opened here first, so its schema is created or checked once, before any worker
starts (workers never migrate).  Each night is one task; results arrive as nights finish, and a
night whose task ended badly (its worker died :data:`~.cluster.ALLOWED_FAILURES` times, or a bug) is
a failed night with its reason, like any other.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from ..errors import FleetError
from .claims import CLAIM_TIMEOUT_S
from .tasks import CatalogSpec, DownloadOptions, Night, NightResult, run_night

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..mirror.archive import RemoteFile


@dataclass
class FleetReport:
    """Every night's :class:`NightResult`, in the order they finished, and the wall time."""

    results: list[NightResult] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0

    @property
    def failed(self) -> list[NightResult]:
        """The nights that did not end complete."""
        return [r for r in self.results if not r.ok]

    @property
    def n_done(self) -> int:
        """Nights ingested by this run."""
        return sum(r.status == "complete" for r in self.results)

    @property
    def n_alerts(self) -> int:
        """Alerts of the nights ingested by this run."""
        return sum(r.n_alerts for r in self.results if r.status == "complete")

    @property
    def peak_rss(self) -> int:
        """The largest peak resident memory of a worker process (its own, children apart) that
        reported, in bytes."""
        return max((r.peak_rss for r in self.results), default=0)

    def __str__(self) -> str:
        skipped = sum(r.status == "already complete" for r in self.results)
        text = (
            f"{self.n_done} nights done ({self.n_alerts} alerts) in {self.seconds:.1f} s on "
            f"{self.workers} workers"
        )
        if skipped:
            text += f"; {skipped} already complete"
        text += f"; {len(self.failed)} failed"
        if self.failed:
            text += ": " + ", ".join(r.name for r in self.failed)
        if self.peak_rss:
            text += f"; peak worker RSS {self.peak_rss / 1e6:.0f} MB"
        return text


def require_postgresql(catalog: Catalog) -> None:
    """Refuse a SQLite catalog, in one line saying why (looked up from the URL: nothing is opened)."""
    if make_url(catalog.database_url).get_backend_name() == "sqlite":
        raise FleetError(
            "--workers and --dask-scheduler need a PostgreSQL catalog (--database-url postgresql+psycopg://...):"
            " a SQLite file takes one writer at a time, so parallel workers would only queue on its lock"
        )


def run_nights(
    catalog: Catalog,
    nights: Sequence[Night],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    force: bool = False,
    download: DownloadOptions | None = None,
    claim_timeout_s: float = CLAIM_TIMEOUT_S,
    on_result: Callable[[NightResult], None] | None = None,
) -> FleetReport:
    """Run each night as one task on dask workers; returns when every night has a result.

    Parameters
    ----------
    nights : sequence of Night
        Each release once (a name given twice is refused: two sources for one release are ambiguous).
    workers, scheduler, client
        Where to run: an open ``distributed.Client``; else the scheduler at ``scheduler``; else a new
        ``LocalCluster`` of ``workers`` one-thread processes on 127.0.0.1.
    on_result : callable, optional
        Called with each night's result as it arrives (the CLI prints it).
    """
    require_postgresql(catalog)
    names = [n.name for n in nights]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise FleetError(f"{twice[0]} is given twice; each release once")
    spec = CatalogSpec.of(catalog)  # opens the catalog: the schema is made or checked here, once
    catalog.data_dir.mkdir(parents=True, exist_ok=True)
    report = FleetReport()
    if not nights:
        return report
    started = time.perf_counter()
    if client is not None:
        _gather(client, spec, nights, force, download, claim_timeout_s, on_result, report)
    else:
        from .cluster import dask_client

        with dask_client(workers, scheduler) as made:
            _gather(made, spec, nights, force, download, claim_timeout_s, on_result, report)
    report.seconds = time.perf_counter() - started
    return report


def task_key(name: str) -> str:
    """The dask key of a night's task (one per release, so the dashboard names the night)."""
    return f"ztfcat-night-{name}"


def _gather(client, spec, nights, force, download, claim_timeout_s, on_result, report) -> None:
    from distributed import as_completed

    try:  # some distributed releases list only the first 5 workers unless asked for all
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # a release without the parameter lists them all
        info = client.scheduler_info()
    workers = info.get("workers", {})
    report.workers = len(workers)
    # how many workers share each host: a night's history pool gets its share of the host's cores
    host_workers = Counter(w.get("host") for w in workers.values())
    futures = {
        client.submit(
            run_night,
            spec,
            night,
            force=force,
            download=download,
            claim_timeout_s=claim_timeout_s,
            host_workers=dict(host_workers),
            key=task_key(night.name),
            pure=False,
            retries=0,  # a night's own failures are its result; a lost worker is the scheduler's to redo
        ): night
        for night in nights
    }
    for future in as_completed(futures):
        night = futures[future]
        try:
            result = future.result()
        except Exception as exc:  # KilledWorker after too many lost workers, or a bug in a task
            result = NightResult(night.name, "failed", error=_task_error(exc))
        report.results.append(result)
        if on_result is not None:
            on_result(result)
        future.release()


def _task_error(exc: BaseException) -> str:
    if type(exc).__name__ == "KilledWorker":
        return "its worker died every time it ran it (killed, or out of memory); see the workers' logs"
    line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {line}".rstrip(": ")


def ingest_sources(catalog: Catalog, sources: Sequence[str], **options) -> FleetReport:
    """``ztfcat ingest --workers``: each tarball (a path, resolved here so every worker reads the same
    file, or a ``gs://bucket/object`` URL) is one night; ``options`` as for :func:`run_nights`."""
    nights = []
    for source in sources:
        if source.startswith("gs://"):
            nights.append(Night(source.rsplit("/", 1)[-1], source=source))
        else:
            path = Path(source).resolve()
            nights.append(Night(path.name, source=str(path)))
    return run_nights(catalog, nights, **options)


def download_releases(
    catalog: Catalog, files: Sequence[RemoteFile], download: DownloadOptions | None = None, **options
) -> FleetReport:
    """``ztfcat download --workers``: each release of the archive's listing is one night, fetched and
    verified by its worker as :func:`ztfcat.mirror.archive.download_release` does alone."""
    nights = [Night(f.name, remote=f) for f in files]
    return run_nights(catalog, nights, download=download or DownloadOptions(), **options)
