"""Small helpers to build tarballs of given members for the tests, and to read a catalog back whole."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select

from ztfcat.store.tables import (
    alert_releases,
    alerts,
    fp_hists,
    history_rebuilds,
    ingest_errors,
    objects,
    prv_candidates,
    releases,
)


def write_tarball(path: Path, members: Iterable[tuple[str, bytes]], mode: str = "w:gz") -> Path:
    """A tarball holding ``members`` (name, bytes) in order."""
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def tar_members(path: Path) -> dict[str, bytes]:
    """Every regular member of a tarball, by name."""
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def snapshot(catalog) -> dict:
    """Everything a catalog holds, independent of surrogate ids and timestamps: rows (releases named,
    not numbered) and blob files.  Two catalogs with equal snapshots are the same catalog."""
    state = {}
    with catalog.engine.connect() as conn:
        names = dict(conn.execute(select(releases.c.id, releases.c.name)).all())
        cols = [c for c in alerts.c if c.name != "release_id"]
        state["alerts"] = _sorted(
            (*r[:-1], names[r[-1]]) for r in conn.execute(select(*cols, alerts.c.release_id))
        )
        state["alert_releases"] = _sorted(
            (r.candid, names[r.release_id], r.blob_path, r.blob_offset, r.blob_size)
            for r in conn.execute(select(alert_releases))
        )
        state["objects"] = _sorted(tuple(r) for r in conn.execute(select(objects)))
        for table in (prv_candidates, fp_hists):  # surrogate keys differ between two runs
            cols = [c for c in table.c if c.name != "id"]
            state[table.name] = _sorted(tuple(r) for r in conn.execute(select(*cols)))
        state["errors"] = _sorted(
            (names[r.release_id], r.member, r.reason)
            for r in conn.execute(select(ingest_errors.c.release_id, ingest_errors.c.member, ingest_errors.c.reason))
        )
        state["releases"] = _sorted(
            tuple(r)
            for r in conn.execute(
                select(
                    releases.c.name,
                    releases.c.status,
                    releases.c.n_alerts,
                    releases.c.n_errors,
                    releases.c.md5,
                )
            )
        )
        state["rebuilds"] = list(conn.execute(select(history_rebuilds.c.objectId)).scalars())
    root = catalog.data_dir / "alerts"
    state["files"] = (
        sorted((str(p.relative_to(root)), p.read_bytes()) for p in root.rglob("*") if p.is_file())
        if root.exists()
        else []
    )
    return state


def _sorted(rows) -> list[tuple]:
    return sorted(rows, key=repr)


def differences(a: dict, b: dict) -> dict[str, int]:
    """How many rows differ, per part of two snapshots (empty when they are equal)."""
    out = {}
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key, []), b.get(key, [])
        if left != right:
            out[key] = len(set(map(repr, left)) ^ set(map(repr, right)))
    return out
