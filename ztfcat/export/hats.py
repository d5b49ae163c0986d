"""The alerts as a HATS catalog, built with ``hats-import`` on a ``dask.distributed`` cluster, for LSDB.

HATS (Hierarchical Adaptive Tiling Scheme) is HEALPix-partitioned Parquet: LSDB cone-searches and
cross-matches such catalogs on Dask, and ZTF's data releases, Gaia DR3 and other brokers' alert
catalogs are served that way.  Its spatial index column ``_healpix_29`` is the nested HEALPix index at
order 29 of (ra, dec) -- exactly ztfcat's ``hpx`` (:mod:`ztfcat.store.sky`).  So the export hands ``hpx`` to
``hats-import`` as ``_healpix_29`` (``use_healpix_29=True``) instead of letting it recompute positions,
after checking each page against hats' own :func:`~hats.pixel_math.spatial_index.compute_spatial_index`
(an alert whose index disagrees would be invisible to LSDB's cone search; the export stops and names it).

The pipeline is the one hats-import documents: typed Parquet staging files (those of
:mod:`ztfcat.export.parquet`), ``ImportArguments`` with the ``parquet`` reader, and
``pipeline_with_client`` on a client: a small ``LocalCluster`` by default (2 single-threaded worker
processes with bounded memory), or any running scheduler by address.

:func:`write_hats_objects` builds the companion catalog of objects: one row per objectId at the mean
position of its alerts, its light curve and forced photometry nested (structs of lists, the layout
nested-pandas and lsdb use for nested data), positions indexed by hats itself.

HATS partitions depend on every row (a pixel splits once it holds ``pixel_threshold`` rows), so new
nights are not appended: re-running the export rebuilds the catalog from the database, beside the old
one, which stays readable until the new one replaces it.  The report gives the time that took, which
is what the next re-export will cost (it grows linearly with the number of alerts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from ..errors import ZtfcatError
from . import require
from .parquet import (
    OBJECT_PAGE,
    PAGE,
    ColumnarProgress,
    alerts_schema,
    dir_bytes,
    iter_alert_batches,
    iter_object_batches,
    objects_schema,
    write_dataset,
)
from .target import building, check_target

#: Rows per HATS partition at most (hats-import's ``pixel_threshold``); pixels split past it.
PIXEL_THRESHOLD = 1_000_000
#: Finest order a partition can have.
HIGHEST_ORDER = 10
#: Memory each worker of the default LocalCluster may use before Dask pauses and spills it.
WORKER_MEMORY = "1GiB"
#: Seconds to wait for a scheduler given by address.
CONNECT_TIMEOUT = 10
#: Rows per staging file, and per chunk that hats-import reads of one: each file is one mapping and one
#: splitting task, so the files bound a worker's memory (hats-import's default of one 500,000-row pandas
#: chunk per read, from a file of every alert, killed 1 GiB workers on a million alerts) and spread the
#: work over the workers whatever the catalog's size.
STAGING_ROWS = 100_000
STAGING_CHUNK = 50_000
_STAGING = ".ztfcat-input"
_TMP = ".ztfcat-tmp"


class SchedulerError(ZtfcatError):
    """A Dask scheduler address that cannot be reached."""


@contextlib.contextmanager
def dask_client(address: str | None = None, *, n_workers: int = 2, memory_limit: str = WORKER_MEMORY):
    """A ``dask.distributed`` client: on the scheduler at ``address``, or on a small new ``LocalCluster``.

    The local cluster binds 127.0.0.1, has no dashboard and ``n_workers`` single-threaded worker
    processes of ``memory_limit`` each, so an export on a laptop stays within a known budget.

    Raises
    ------
    SchedulerError
        No scheduler answers at ``address`` within :data:`CONNECT_TIMEOUT` seconds.
    """
    require("dask.distributed")
    from dask.distributed import Client, LocalCluster

    if address:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SchedulerError(f"cannot reach the Dask scheduler at {address}: {reason}") from exc
        with client:
            yield client
        return
    try:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            memory_limit=memory_limit,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    except (OSError, RuntimeError) as exc:  # e.g. worker processes that cannot re-import __main__
        raise ZtfcatError(f"could not start a local Dask cluster of {n_workers} workers: {exc}") from exc
    with cluster, Client(cluster) as client:
        yield client


#: How far (degrees) a position may be from the centre of its ``hpx`` pixel when hats' index of it is
#: another pixel: two order-29 pixels (0.39 mas wide), so a point on a pixel edge, which astropy-healpix
#: (ztfcat's ``hpx``) and cdshealpix (hats') may round to either neighbour, passes, and a stale or wrong
#: ``hpx`` (off by anything a user could see) does not.
EDGE_TOLERANCE_DEG = 2 * 0.393e-3 / 3600


def _checked(batches: Iterator[Any]) -> Iterator[Any]:
    """Pass batches through after checking ``_healpix_29`` against hats' own index of (ra, dec).

    The two agree but for points within rounding of a pixel edge (1 alert in a million of the scale
    catalog: the two HEALPix libraries round differently there): such a point keeps its ``hpx`` when the
    centre of that pixel is within :data:`EDGE_TOLERANCE_DEG` of it, since its partition, and so LSDB's
    cone search, cannot differ by then.  Any other disagreement stops the export, naming the alert.
    """
    import numpy as np
    from hats.pixel_math.spatial_index import compute_spatial_index

    from ..store.sky import HPX_ORDER, separation_deg

    for batch in batches:
        ra = batch.column("ra").to_numpy(zero_copy_only=False).astype(np.float64)
        dec = batch.column("dec").to_numpy(zero_copy_only=False).astype(np.float64)
        ours = batch.column("_healpix_29").to_numpy(zero_copy_only=False)
        theirs = compute_spatial_index(ra, dec)
        wrong = np.flatnonzero(ours != theirs)
        if wrong.size:
            import astropy.units as u
            from astropy_healpix import healpix_to_lonlat

            lon, lat = healpix_to_lonlat(ours[wrong], 1 << HPX_ORDER, order="nested")
            off = separation_deg(ra[wrong], dec[wrong], lon.to_value(u.deg), lat.to_value(u.deg))
            wrong = wrong[np.asarray(off) > EDGE_TOLERANCE_DEG]
        if wrong.size:
            i = int(wrong[0])
            candid = batch.column("candid")[i].as_py()
            raise ZtfcatError(
                f"alert {candid}: hpx {int(ours[i])} is not hats' _healpix_29 {int(theirs[i])} of "
                f"(ra, dec) = ({ra[i]}, {dec[i]}); rebuild its index before exporting"
            )
        yield batch


@dataclass(frozen=True)
class HatsReport:
    """What a HATS export built: rows, partitions, bytes, time, and where."""

    n_alerts: int  # rows: alerts, or objects for the objects catalog
    n_partitions: int
    n_bytes: int
    seconds: float
    destination: Path
    replaced: bool
    kind: str = "alerts"

    def __str__(self) -> str:
        rate = self.n_alerts / self.seconds if self.seconds > 0 else 0.0
        verb = "rebuilt" if self.replaced else "built"
        return (
            f"{verb} HATS catalog {self.destination}: {self.n_alerts} {self.kind} in {self.n_partitions} "
            f"partitions ({self.n_bytes} bytes) in {self.seconds:.1f} s ({rate:.0f} {self.kind}/s); "
            "new nights need a re-export with --overwrite, which rebuilds it whole"
        )


def _build(
    engine: Engine,
    target: str | os.PathLike[str],
    batches: Iterator[Any],
    schema: Any,
    *,
    kind: str,
    overwrite: bool,
    client: Any,
    scheduler: str | None,
    pixel_threshold: int,
    highest_order: int,
    progress: ColumnarProgress | None,
) -> HatsReport:
    """Stage ``batches`` as Parquet beside ``target``, run hats-import on them, rename the result into place."""
    require()
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.catalog.file_readers import get_file_reader
    from hats_import.pipeline import pipeline_with_client

    target = Path(target).absolute()
    replaced = target.is_dir() and any(target.iterdir())
    start = time.perf_counter()
    counts: dict[str, int] = {}
    with building(target, overwrite) as partial:
        staging = partial / _STAGING

        def counted():
            for batch in batches:
                counts[kind] = counts.get(kind, 0) + batch.num_rows
                yield batch
                if progress is not None:
                    progress(kind, counts[kind])

        write_dataset(counted(), schema, staging, rows_per_file=STAGING_ROWS)
        n_rows = counts.get(kind, 0)
        if n_rows == 0:
            raise ZtfcatError(
                f"the catalog at {engine.url.render_as_string(hide_password=True)} has no {kind}"
            )
        # Alerts bring their own index (hpx, checked against hats'); objects' mean positions get hats'.
        own_index = "_healpix_29" in schema.names
        args = ImportArguments(
            output_artifact_name=target.name,
            output_path=partial,
            input_path=staging,
            file_reader=get_file_reader("parquet", chunksize=STAGING_CHUNK),
            catalog_type="source" if kind == "alerts" else "object",
            ra_column="ra",
            dec_column="dec",
            use_healpix_29=own_index,
            expected_total_rows=n_rows,
            pixel_threshold=pixel_threshold,
            highest_healpix_order=highest_order,
            addl_hats_properties=(
                {"hats_col_healpix": "_healpix_29", "hats_col_healpix_order": 29} if own_index else None
            ),
            tmp_dir=partial / _TMP,
            dask_tmp=partial / _TMP,
            resume=False,
            progress_bar=False,
        )
        with contextlib.ExitStack() as stack:
            if client is None:
                client = stack.enter_context(dask_client(scheduler))
            try:
                pipeline_with_client(args, client)
            except ZtfcatError:
                raise
            except Exception as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ZtfcatError(f"hats-import failed building {target}: {reason}") from exc
        built = partial / target.name
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(partial / _TMP, ignore_errors=True)
        for entry in list(built.iterdir()):  # the catalog's own files become the target's root
            entry.rename(partial / entry.name)
        built.rmdir()
        n_partitions = sum(1 for _ in (partial / "dataset").rglob("Npix=*"))
        n_bytes = dir_bytes(partial)
    return HatsReport(
        n_alerts=n_rows,
        n_partitions=n_partitions,
        n_bytes=n_bytes,
        seconds=time.perf_counter() - start,
        destination=target,
        replaced=replaced,
        kind=kind,
    )


def write_hats(
    engine: Engine,
    target: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    client: Any = None,
    scheduler: str | None = None,
    page: int = PAGE,
    pixel_threshold: int = PIXEL_THRESHOLD,
    highest_order: int = HIGHEST_ORDER,
    progress: ColumnarProgress | None = None,
) -> HatsReport:
    """Build a HATS catalog of every alert at ``target`` with hats-import on Dask.

    Parameters
    ----------
    engine : Engine
        The catalog's database.
    target : path
        Directory the catalog is to be; ``lsdb.read_hats(target)`` opens it.
    overwrite : bool
        Replace a non-empty ``target`` (only once the new catalog is complete).
    client : dask.distributed.Client, optional
        Run on this client; else on ``scheduler``, else on a new small ``LocalCluster``.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``).
    page : int
        Rows read from the database at a time (the memory bound of the staging step).
    pixel_threshold, highest_order : int
        hats-import's partitioning: at most this many rows per partition, partitions no finer than this.
    progress : callable, optional
        ``progress("alerts", n_rows_so_far)`` while the staging files are written.

    Raises
    ------
    ZtfcatError
        ``target`` is not empty and ``overwrite`` is false; the catalog has no alerts; an alert's
        ``hpx`` disagrees with hats' index; hats-import failed (its reason in the message).
    SchedulerError
        ``scheduler`` cannot be reached.
    MissingExtraError
        The ``ztfcat[hats]`` extra is not installed.
    """
    require()
    return _build(
        engine,
        target,
        _checked(iter_alert_batches(engine, page=page, healpix_column=True)),
        alerts_schema(healpix_column=True),
        kind="alerts",
        overwrite=overwrite,
        client=client,
        scheduler=scheduler,
        pixel_threshold=pixel_threshold,
        highest_order=highest_order,
        progress=progress,
    )


def write_hats_objects(
    engine: Engine,
    target: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    client: Any = None,
    scheduler: str | None = None,
    page: int = OBJECT_PAGE,
    pixel_threshold: int = PIXEL_THRESHOLD,
    highest_order: int = HIGHEST_ORDER,
    progress: ColumnarProgress | None = None,
) -> HatsReport:
    """Build a HATS catalog of objects with nested light curves at ``target`` (see :func:`objects_schema`).

    One row per objectId at the mean position of its alerts, with ``lightcurve`` (its prv_candidates
    rows) and ``forced`` (its fp_hists rows) as nested columns, which lsdb reads as nested-pandas
    columns.  Arguments and errors as :func:`write_hats`.
    """
    require()
    return _build(
        engine,
        target,
        iter_object_batches(engine, page=page),
        objects_schema(),
        kind="objects",
        overwrite=overwrite,
        client=client,
        scheduler=scheduler,
        pixel_threshold=pixel_threshold,
        highest_order=highest_order,
        progress=progress,
    )


def write_hats_catalogs(
    engine: Engine,
    *,
    alerts: str | os.PathLike[str] | None = None,
    objects: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
) -> Iterator[HatsReport]:
    """Build the HATS catalog of alerts at ``alerts`` and of objects at ``objects`` on one Dask cluster.

    ``ztfcat export --hats A --hats-objects B``: the extra is imported and both targets are checked
    before any cluster starts (a mistake costs no start-up), then both catalogs are built on the one
    client of :func:`dask_client`; the report of each is yielded as soon as it is built.  Either target
    may be None.
    """
    require()
    targets = [(path, of_objects) for path, of_objects in ((alerts, False), (objects, True)) if path]
    for path, _ in targets:
        check_target(Path(path).absolute(), overwrite)
    with dask_client(scheduler) as client:
        for path, of_objects in targets:
            build = write_hats_objects if of_objects else write_hats
            yield build(engine, path, overwrite=overwrite, client=client)
