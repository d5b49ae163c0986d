"""What runs on a worker: one whole night, streamed into the catalog by the library's own code.

A task gets a :class:`CatalogSpec` (how to open the catalog; every worker opens its own), a
:class:`Night` (which release, and where its bytes are) and sends back a :class:`NightResult`, never an
exception for a failure it understands: a bad tarball or a wrong checksum is that night's result, and
the fleet goes on.  Failures of the database connection (a server restart, a network cut) are redone
here, after a pause, with a fresh catalog; the ingest has already left the release unfinished or
``failed``, and the next attempt's own repair purges it, so the night ends as one clean ingest.  A worker
that dies is not this module's business: the scheduler gives its task to another worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ZtfcatError
from .claims import CLAIM_TIMEOUT_S, is_transient, night_claim

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..ingest.pipeline import IngestReport
    from ..mirror.archive import RemoteFile

#: Pauses (seconds) before each new attempt at a night whose database connection failed.
RETRY_PAUSES_S = (1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class CatalogSpec:
    """How a worker opens the catalog: the database URL (with its password: the worker must log in),
    the data directory (the same shared path on every machine), the archive URL, the blob layout and
    the shared blob store, if any (``gs://...`` or a directory every worker mounts)."""

    database_url: str
    data_dir: str
    archive_url: str
    layout: str
    blobs: str | None = None

    @classmethod
    def of(cls, catalog: Catalog) -> CatalogSpec:
        """The spec of an open catalog; its layout is resolved here, once, not by each worker."""
        url = catalog.engine.url.render_as_string(hide_password=False)
        return cls(url, str(catalog.data_dir), catalog.archive_url, catalog.layout, catalog.blobs)

    def open(self) -> Catalog:
        """A new catalog object on this worker (its own engine and connections)."""
        from ..catalog import Catalog

        return Catalog(
            self.database_url, self.data_dir, self.archive_url, layout=self.layout, blobs=self.blobs
        )


@dataclass(frozen=True)
class DownloadOptions:
    """How a worker fetches a release from the archive (``ztfcat download``'s options)."""

    stall_timeout: float | None = None
    min_speed: float | None = None
    redirect_hosts: tuple[str, ...] = ()
    keep_tarballs: bool = False
    require_md5: bool = True


@dataclass(frozen=True)
class Night:
    """One unit of work: the release ``name`` and where its bytes come from — ``source`` (a path on
    shared disk or a ``gs://`` URL) or ``remote`` (a file of the archive's listing, downloaded)."""

    name: str
    source: str | None = None
    remote: RemoteFile | None = None


@dataclass(frozen=True)
class NightResult:
    """What became of one night, as the worker saw it.

    ``status`` is ``complete``, ``already complete`` or ``failed`` (then ``error`` says why, in one
    line).  ``attempts`` counts tries on this worker (more than one after a database failure).
    ``peak_rss`` is the worker process's own peak resident memory so far (:func:`peak_rss`), in bytes;
    ``peak_rss_children`` the kernel's ``ru_maxrss`` of its largest finished child (inflater, history
    workers), an upper bound only: Linux starts a child's count at the resident memory of the process
    it was forked from, pages they share included.
    """

    name: str
    status: str
    n_alerts: int = 0
    size: int = 0
    seconds: float = 0.0
    attempts: int = 1
    error: str | None = None
    worker: str = ""
    peak_rss: int = 0
    peak_rss_children: int = 0

    @property
    def ok(self) -> bool:
        """Whether the night is complete in the catalog."""
        return self.status != "failed"

    def __str__(self) -> str:
        if self.status == "failed":
            return f"{self.name}: failed: {self.error}"
        if self.status == "already complete":
            return f"{self.name}: already complete ({self.n_alerts} alerts), nothing to do"
        again = f", {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.name}: complete, {self.n_alerts} alerts, {self.size} bytes in {self.seconds:.1f} s on {self.worker}{again}"


def run_night(
    spec: CatalogSpec,
    night: Night,
    *,
    force: bool = False,
    download: DownloadOptions | None = None,
    claim_timeout_s: float = CLAIM_TIMEOUT_S,
    pauses: tuple[float, ...] = RETRY_PAUSES_S,
    host_workers: Mapping[str, int] | None = None,
) -> NightResult:
    """Ingest (or download and ingest) one night under its claim; the function a worker runs.

    ``host_workers`` counts the dask workers on each host (by IP address) when the nights were
    submitted: the night's history pool gets this machine's cores divided among them
    (:func:`history_cap`).  Returns a :class:`NightResult` for every failure a night can have; raises
    only what is not the night's (an interrupt, a bug), which dask reports as the task's error.
    """
    from ..ingest.history import pool_size_at_most

    started = time.perf_counter()
    cap = history_cap(host_workers)
    attempt = 0
    while True:
        attempt += 1
        try:
            with _children_allowed(), pool_size_at_most(cap):
                report = _attempt(spec, night, force, download, claim_timeout_s)
        except Exception as exc:
            if is_transient(exc) and attempt <= len(pauses):
                time.sleep(pauses[attempt - 1])
                continue
            return _result(night.name, "failed", started, attempt, error=_one_line(night.name, exc))
        status = "already complete" if report.already_complete else "complete"
        return _result(night.name, status, started, attempt, report=report)


def history_cap(host_workers: Mapping[str, int] | None) -> int:
    """History workers one night may fork on this dask worker: the machine's cores shared out among
    the dask workers on it, at least one.

    Each ingest would otherwise fork one history worker per core, so N workers on one machine would
    run N times its cores in history processes, each with its resident memory (measured: 140 MB RSS,
    25 MB of it its own), and contend for the cores the N inflaters and decoders also need.  Cores per
    worker rather than the worker's threads: the fleet's workers run one night each, one thread.
    Outside a dask worker, or on a host not counted, the whole machine's cores (a lone ingest's pool).
    """
    cores = os.cpu_count() or 1
    if not host_workers:
        return cores
    try:
        from distributed import get_worker

        host = get_worker().ip
    except (ImportError, ValueError):  # not in a dask worker
        return cores
    return max(1, cores // max(1, host_workers.get(host, 1)))


def peak_rss() -> int:
    """This process's own peak resident memory since it started, in bytes.

    On Linux ``VmHWM`` of ``/proc/self/status``, not ``getrusage``'s ``ru_maxrss``: the kernel carries
    into a process's ``ru_maxrss`` the peak of the process that forked it, across ``exec``, so a dask
    worker spawned by a client process that once held 1 GB reports 1 GB however little it uses itself
    (measured: a worker at 61 MB reported the 858 MB of its client).  Elsewhere ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kilobytes elsewhere


def _attempt(spec, night: Night, force, download, claim_timeout_s) -> IngestReport:
    catalog = spec.open()
    try:
        with night_claim(catalog.engine, night.name, claim_timeout_s):
            if night.remote is not None:
                return _download(catalog, night.remote, force, download or DownloadOptions())
            return catalog.ingest(night.source, name=night.name, force=force)
    finally:
        catalog.close()


def _download(catalog: Catalog, file: RemoteFile, force: bool, options: DownloadOptions) -> IngestReport:
    from ..mirror.archive import download_release
    from ..sources.http import ArchiveClient

    with ArchiveClient(
        catalog.archive_url,
        timeout=(None, options.stall_timeout),
        min_speed=options.min_speed,
        allow_redirects_to=options.redirect_hosts or None,
    ) as client:
        return download_release(
            catalog,
            file,
            client=client,
            keep_tarballs=options.keep_tarballs,
            force=force,
            require_md5=options.require_md5,
        )


_children_lock = threading.Lock()
_children_users = 0
_children_saved: object = None


@contextlib.contextmanager
def _children_allowed() -> Iterator[None]:
    """Let the ingest fork its history workers in a daemonic dask worker process.

    ``multiprocessing`` forbids children to daemonic processes so none outlives its parent; the
    ingest's pools already guarantee that (their workers get ``PR_SET_PDEATHSIG``, and the pool is
    shut down before the ingest returns).  The fleet's own ``LocalCluster`` starts non-daemonic
    workers; this covers workers started by ``dask worker`` elsewhere.  Process-wide, so the first of
    a worker's concurrent nights lifts the flag and the last one puts it back.
    """
    global _children_users, _children_saved
    config = multiprocessing.current_process()._config  # no public setter for a running process
    with _children_lock:
        if _children_users == 0:
            _children_saved = config.get("daemon")
            config["daemon"] = False
        _children_users += 1
    try:
        yield
    finally:
        with _children_lock:
            _children_users -= 1
            if _children_users == 0:
                config["daemon"] = _children_saved


def _result(name, status, started, attempts, *, report=None, error=None) -> NightResult:
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    children = children if sys.platform == "darwin" else children * 1024
    return NightResult(
        name=name,
        status=status,
        n_alerts=report.n_alerts if report is not None else 0,
        size=report.size if report is not None else 0,
        seconds=time.perf_counter() - started,
        attempts=attempts,
        error=error,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        peak_rss=peak_rss(),
        peak_rss_children=children,
    )


def _one_line(name: str, exc: BaseException) -> str:
    """Why a night failed, in one line; the night is named by the caller, so a message that starts
    with its name loses the repeat."""
    if isinstance(exc, ZtfcatError):
        text = str(exc)
    else:
        orig = getattr(exc, "orig", None)
        text = f"{type(orig or exc).__name__}: {orig or exc}"
    line = (text.strip().splitlines() or [type(exc).__name__])[0]
    return line[len(name) + 2 :] if line.startswith(f"{name}: ") else line
