"""Many ingest workers into one PostgreSQL catalog, on ``dask.distributed`` (issue 16).

Whole nights are the unit of work: each task streams its one night (from the archive, a ``gs://``
bucket or a path on shared disk) into the catalog with the library's own single-night code
(:meth:`ztfcat.Catalog.ingest`, :func:`ztfcat.mirror.archive.download_release`), so every data rule holds
unchanged and a fleet's catalog equals a single-process ingest of the same nights.

Rooms: :mod:`.claims` (one worker per night, never a dead worker's claim held), :mod:`.tasks` (what runs
on a worker, and what it sends back), :mod:`.cluster` (a ``LocalCluster`` or a scheduler's address),
:mod:`.run` (submit the nights, gather the results).  Nothing here imports dask until nights are run.
"""

from __future__ import annotations

from .run import FleetReport, download_releases, ingest_sources, require_postgresql, run_nights
from .tasks import CatalogSpec, DownloadOptions, Night, NightResult

__all__ = [
    "CatalogSpec",
    "DownloadOptions",
    "FleetReport",
    "Night",
    "NightResult",
    "download_releases",
    "ingest_sources",
    "require_postgresql",
    "run_nights",
]
