"""Where the nights run: a ``LocalCluster`` of worker processes here, or any dask scheduler's address.

dask is imported here, when nights are about to run, never when ztfcat is imported.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from ..errors import FleetError

#: Times a night may lose its worker (killed, out of memory, machine gone) before it counts as failed.
ALLOWED_FAILURES = 3


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: on ``scheduler`` (an address such as ``tcp://host:8786``) or on a new
    ``LocalCluster`` of ``workers`` processes of one thread each, bound to 127.0.0.1.

    A night is one thread's work (the ingest runs its own inflater and history processes), hence one
    thread per worker.  The local workers are not daemonic, so an ingest may fork its history pool;
    a task whose worker dies is given to another worker up to :data:`ALLOWED_FAILURES` times.
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise FleetError(
            "--workers and --dask-scheduler need dask.distributed: pip install 'ztfcat[fleet]'"
        ) from exc
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise FleetError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from exc
        with client:
            yield client
        return
    if not workers or workers < 1:
        raise FleetError("--workers needs a number of workers, 1 or more")
    config = {
        "distributed.worker.daemon": False,
        "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
    }
    with (
        dask.config.set(config),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
