"""Moving a catalog's raw packets between the ``files`` and ``pack`` layouts, one release at a time.

Each release is converted so that a crash at any point leaves a working catalog: the packets are first
written in the new layout under a temporary name, then renamed into place (old and new names never
collide), then every row is repointed in one transaction, and only then is the old layout removed.
Running the conversion again finishes or cleans up whatever a killed run left.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, bindparam, select, update

from ..errors import ZtfcatError
from ..ingest.pipeline import release_key, release_lock
from .blobs import LAYOUTS, BlobWriter, pack_path, read_blob, release_dir
from .blobstore import is_shared
from .tables import alert_releases, alerts, releases

PAGE = 2000


def _place(data_dir: Path, key: str, layout: str) -> Path:
    """Where a release's packets live in ``layout``: a folder, or a pack file."""
    return data_dir / (release_dir(key) if layout == "files" else pack_path(key))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def convert_release(
    engine: Engine, data_dir: Path, release_id: int, name: str, source: str, target: str
) -> int:
    """Rewrite one release's packets in the ``target`` layout; returns how many were moved."""
    key = release_key(name)
    staging_key = f"{key}.converting"
    for layout in LAYOUTS:
        _remove(_place(data_dir, staging_key, layout))
    writer = BlobWriter(data_dir, staging_key, target)
    moved: list[tuple[int, int | None]] = []
    last = None
    try:
        while True:
            query = (
                select(
                    alert_releases.c.candid,
                    alert_releases.c.blob_path,
                    alert_releases.c.blob_offset,
                    alert_releases.c.blob_size,
                )
                .where(alert_releases.c.release_id == release_id)
                .order_by(alert_releases.c.candid)
                .limit(PAGE)
            )
            if last is not None:
                query = query.where(alert_releases.c.candid > last)
            with engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                break
            for candid, path, offset, size in rows:
                if is_shared(path):  # one object per night already; it has no files layout to go to
                    raise ZtfcatError(f"{name}: its packets are on shared storage ({path}); not converted")
                _rel, new_offset = writer.write(candid, read_blob(data_dir, path, offset, size))
                moved.append((candid, new_offset))
            last = rows[-1][0]
    finally:
        writer.close()
    final = _place(data_dir, key, target)
    _remove(final)
    os.replace(_place(data_dir, staging_key, target), final)
    # The release's own copies, and the alert rows that read them.
    statements = [
        update(table)
        .where(table.c.candid == bindparam("c"), table.c.release_id == release_id)
        .values(blob_path=bindparam("p"), blob_offset=bindparam("o"))
        for table in (alert_releases, alerts)
    ]
    with engine.begin() as conn:
        for start, statement in ((s, st) for s in range(0, len(moved), PAGE) for st in statements):
            conn.execute(
                statement,
                [
                    {
                        "c": c,
                        "p": f"{release_dir(key)}/{c}.avro" if target == "files" else pack_path(key),
                        "o": o,
                    }
                    for c, o in moved[start : start + PAGE]
                ],
            )
        conn.execute(update(releases).where(releases.c.id == release_id).values(layout=target))
    _remove(_place(data_dir, key, source))
    return len(moved)


def convert(
    engine: Engine, data_dir: Path, target: str, progress: Callable[[str, int], None] | None = None
) -> int:
    """Convert every release not yet in ``target``; returns how many releases were converted.

    Each release is converted under its release lock, so an ingest or a delete of it in another process
    waits for it or makes the conversion stop with a clear error.  A release ingested while the
    conversion runs keeps the layout it was written in; running the conversion again moves it.
    """
    if target not in LAYOUTS:
        raise ZtfcatError(f"unknown blob layout {target!r}; choose one of {', '.join(LAYOUTS)}")
    with engine.connect() as conn:
        rows = conn.execute(
            select(releases.c.id, releases.c.name, releases.c.layout, releases.c.status).order_by(
                releases.c.name
            )
        ).all()
    busy = [r.name for r in rows if r.status in ("ingesting", "history")]
    if busy:
        raise ZtfcatError(
            f"releases still being ingested ({', '.join(busy)}): finish or re-run their ingest first"
        )
    converted = 0
    for row in rows:
        # Under the release's lock, read again: an ingest, a repair or a delete of this release may have
        # begun since the listing, and moving packets under it would lose them.
        with release_lock(engine, data_dir, row.name):
            with engine.connect() as conn:
                now = conn.execute(
                    select(releases.c.layout, releases.c.status).where(releases.c.id == row.id)
                ).first()
            if now is None:  # deleted meanwhile
                continue
            if now.status in ("ingesting", "history"):  # a killed run's: its ingest repairs it
                raise ZtfcatError(f"{row.name} was left half-ingested: re-run its ingest first")
            if now.layout == target:  # a killed earlier run may have left the old layout behind
                _remove(_place(data_dir, release_key(row.name), "pack" if target == "files" else "files"))
                continue
            moved = convert_release(engine, data_dir, row.id, row.name, now.layout, target)
        converted += 1
        if progress:
            progress(row.name, moved)
    return converted
