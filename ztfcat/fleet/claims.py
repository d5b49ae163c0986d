"""Claiming a night: one worker at a time per release, and a dead worker's claim never held.

A claim is a PostgreSQL *session* advisory lock keyed by the release name, taken with the blocking
``pg_advisory_lock`` on a connection of its own that stays open for the whole night.  The server drops
a session's locks when its connection ends, however the holder died (``kill -9``, a lost machine once
TCP notices, a server restart), so a redone night never waits on a corpse; and a live holder is waited
for, not raced: the second task of a night (dask redoing one it wrongly thought lost) starts after the
first ends and finds the release ``complete``, or unfinished and purged by the ingest's own repair.

The key differs from the ingest's own release lock (:func:`ztfcat.ingest.pipeline.release_locks`, a *try* lock
that fails at once): the claim queues a worker, the release lock still refuses a second, unrelated
``ztfcat ingest`` of the same night with a clear error.  The claim connection runs in autocommit, so it
is never "idle in transaction" while it waits or holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Iterator

from sqlalchemy import Engine, text

from ..errors import FleetError, ReleaseBusyError

#: Seconds a worker waits for another live worker's claim on the same night before giving up on it.
CLAIM_TIMEOUT_S = 3600.0


def claim_key(name: str) -> int:
    """The advisory-lock key of a night's claim: 56 bits of a hash of the release name (a positive
    ``bigint``), in a namespace apart from the ingest's release lock."""
    return int.from_bytes(hashlib.blake2b(b"ztfcat fleet\0" + name.encode(), digest_size=7).digest(), "big")


@contextlib.contextmanager
def night_claim(engine: Engine, name: str, timeout_s: float = CLAIM_TIMEOUT_S) -> Iterator[None]:
    """Hold the claim on the release ``name`` for the body; wait up to ``timeout_s`` for a live holder.

    Raises
    ------
    FleetError
        Another worker held the claim for longer than ``timeout_s``.
    """
    key = claim_key(name)
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        conn.execute(
            text("SELECT set_config('lock_timeout', :t, false)"), {"t": f"{max(1, int(timeout_s * 1000))}ms"}
        )
        try:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        except Exception as exc:
            if _lock_timed_out(exc):
                raise FleetError(
                    f"{name}: another worker has held its claim for {timeout_s:.0f} s; left for it"
                ) from exc
            raise
        try:
            yield
        finally:
            # A broken connection (server restarted) has lost the lock already; nothing to undo.
            with contextlib.suppress(Exception):
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _lock_timed_out(exc: BaseException) -> bool:
    """Whether a failed ``pg_advisory_lock`` was the ``lock_timeout`` (SQLSTATE 55P03)."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) == "55P03"


def is_transient(exc: BaseException) -> bool:
    """Whether a night failed because the database connection did (a server restart, a network cut,
    a deadlock the server broke), not because of the night's bytes: such a night is worth redoing.
    So is a release lock still held: the night's claim is this worker's, so its holder is a killed
    worker's history process, which the kernel ends moments after its parent (``PR_SET_PDEATHSIG``).

    Looks through the ``raise ... from`` chain, as the ingest wraps driver errors in
    :class:`~ztfcat.errors.IngestError`.  Drivers are looked up, not imported.
    """
    kinds: list[type] = [ReleaseBusyError]  # under the claim, only a dying worker's children hold it
    sa = sys.modules.get("sqlalchemy.exc")
    if sa is not None:
        kinds += [sa.OperationalError, sa.InterfaceError]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        kinds += [psycopg.OperationalError, psycopg.InterfaceError]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if kinds and isinstance(current, tuple(kinds)):
            return True
        if getattr(current, "connection_invalidated", False):
            return True
        current = current.__cause__ or current.__context__
    return False
