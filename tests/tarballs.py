"""Small helpers to build tarballs of given members for the tests, and to read a catalog back whole."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select

from ztfcat.tables import alerts, fp_hists, ingest_errors, prv_candidates, releases


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
    """Everything a catalog holds (rows without surrogate ids and timestamps, and blob files)."""
    state = {}
    with catalog.engine.connect() as conn:
        for table in (alerts, prv_candidates, fp_hists):  # surrogate keys differ between two runs
            cols = [c for c in table.c if c.name not in ("id", "release_id")]
            state[table.name] = sorted(tuple(r) for r in conn.execute(select(*cols)))
        state["errors"] = sorted(
            tuple(r) for r in conn.execute(select(ingest_errors.c.member, ingest_errors.c.reason))
        )
        state["releases"] = sorted(
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
    root = catalog.data_dir / "alerts"
    state["files"] = (
        sorted((str(p.relative_to(root)), p.read_bytes()) for p in root.rglob("*") if p.is_file())
        if root.exists()
        else []
    )
    return state
