"""Raw Avro of a selection of alerts, out of the catalog: to a folder or to a new tarball.

The packets leave byte for byte as they came in (``Catalog.get_alert(candid, raw=True)``), one
``<candid>.avro`` each, so any ZTF tool reads them, and a ``.tar.gz`` written here is a nightly tarball
in all but name: ``Catalog.ingest`` takes it into another catalog.  Alerts are read page by page through
the primary key and the tarball is written with ``tarfile`` in stream mode, so memory stays bounded
whatever the selection's size; a tarball appears under its name only once it is complete.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, and_, select

from ..errors import InvalidQueryError, ZtfcatError
from ..store.blobs import read_blob
from ..store.filters import unfinished_hidden, where_clauses
from ..store.tables import alerts

#: ``progress(n_alerts, n_bytes)`` after each packet written.
ExportProgress = Callable[[int, int], None]
PAGE = 1000
#: Tarball suffixes and whether they are gzip'd.
TAR_SUFFIXES: dict[str, bool] = {".tar.gz": True, ".tgz": True, ".tar": False}


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: how many packets, how many packet bytes, and where."""

    n_alerts: int
    n_bytes: int
    destination: Path

    def __str__(self) -> str:
        alerts = "1 alert" if self.n_alerts == 1 else f"{self.n_alerts} alerts"
        return f"exported {alerts} ({self.n_bytes} bytes of Avro) to {self.destination}"


def iter_packets(
    engine: Engine, data_dir: Path, *conditions: str, **filters: Any
) -> Iterator[tuple[int, bytes]]:
    """``(candid, raw Avro bytes)`` of every alert matching the filters, in candid order.

    Pages by key (``WHERE candid > :last ORDER BY candid LIMIT n``) so each page costs the same.
    """
    clauses = where_clauses(conditions, filters, engine) + unfinished_hidden(engine)
    cols = (alerts.c.candid, alerts.c.blob_path, alerts.c.blob_offset, alerts.c.blob_size)
    last = None
    while True:
        keyed = [*clauses, alerts.c.candid > last] if last is not None else clauses
        query = select(*cols).order_by(alerts.c.candid).limit(PAGE)
        if keyed:
            query = query.where(and_(*keyed))
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        for candid, path, offset, size in rows:
            try:
                data = read_blob(Path(data_dir), path, offset, size)
            except ZtfcatError as exc:
                raise ZtfcatError(f"cannot export alert {candid}: {exc}") from exc
            yield candid, data
        if len(rows) < PAGE:
            return
        last = rows[-1][0]


def export_raw(
    engine: Engine,
    data_dir: str | os.PathLike[str],
    *conditions: str,
    to_dir: str | os.PathLike[str] | None = None,
    to_tar: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: ExportProgress | None = None,
    **filters: Any,
) -> ExportReport:
    """Write the raw Avro packets of the alerts matching the filters to a folder or a new tarball.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The catalog's engine (``Catalog.engine``).
    data_dir : path
        The catalog's data directory (``Catalog.data_dir``), where the packets are.
    *conditions, **filters
        Which alerts, as for ``Catalog.query`` (``"rb > 0.9"``, ``night="2018-08-19"``, ``fid=1``).
    to_dir : path, optional
        Folder to write ``<candid>.avro`` files into (made if absent).  A file already there with the
        same bytes is left alone; one with other bytes is an error unless ``overwrite``.
    to_tar : path, optional
        New ``.tar.gz`` / ``.tgz`` (gzip'd, re-ingestable with ``Catalog.ingest``) or ``.tar`` file
        with members ``<candid>.avro``.  An existing file is an error unless ``overwrite``.
    overwrite : bool
        Replace existing files.
    progress : callable, optional
        ``progress(n_alerts, n_bytes)`` after each packet.

    Returns
    -------
    ExportReport

    Raises
    ------
    InvalidQueryError
        Not exactly one of ``to_dir`` and ``to_tar``, an unknown tarball suffix, or a bad filter.
    ZtfcatError
        The destination exists, cannot be written, or a packet is missing from the data directory.
    """
    if (to_dir is None) == (to_tar is None):
        raise InvalidQueryError("export to exactly one of a folder (to_dir) or a tarball (to_tar)")
    packets = iter_packets(engine, Path(data_dir), *conditions, **filters)
    if to_dir is not None:
        return _to_dir(packets, Path(to_dir), overwrite, progress)
    return _to_tar(packets, Path(to_tar), overwrite, progress)


def _to_dir(packets, folder: Path, overwrite: bool, progress: ExportProgress | None) -> ExportReport:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZtfcatError(f"cannot make the export folder {folder}: {exc.strerror}") from exc
    n_alerts = n_bytes = 0
    for candid, data in packets:
        path = folder / f"{candid}.avro"
        try:
            if path.exists() and not overwrite:
                if path.read_bytes() != data:
                    raise ZtfcatError(f"{path} exists with other content; pass overwrite to replace it")
            else:
                part = path.with_name(path.name + ".part")
                part.write_bytes(data)
                os.replace(part, path)
        except OSError as exc:
            raise ZtfcatError(f"cannot write {path}: {exc.strerror}") from exc
        n_alerts += 1
        n_bytes += len(data)
        if progress is not None:
            progress(n_alerts, n_bytes)
    return ExportReport(n_alerts, n_bytes, folder)


def _tar_kind(path: Path) -> bool:
    """Whether ``path`` names a gzip'd tarball; an error for a name that is no tarball."""
    for suffix, gzipped in TAR_SUFFIXES.items():
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return gzipped
    raise InvalidQueryError(f"{path} is not a tarball name: end it with {', '.join(TAR_SUFFIXES)}")


def _open_output(part: Path, gzipped: bool) -> IO[bytes]:
    if not gzipped:
        return open(part, "wb")  # noqa: SIM115 - closed by the caller
    # isal's gzip at its default level: several times faster than zlib's level 9 that tarfile's own
    # "w|gz" uses, for packets that hold gzip'd FITS cutouts and barely shrink further.
    from isal import igzip

    return igzip.open(part, "wb")


def _to_tar(packets, path: Path, overwrite: bool, progress: ExportProgress | None) -> ExportReport:
    gzipped = _tar_kind(path)
    if path.exists() and not overwrite:
        raise ZtfcatError(f"{path} already exists; pass overwrite to replace it")
    part = path.with_name(path.name + ".part")
    n_alerts = n_bytes = 0
    mtime = int(time.time())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _open_output(part, gzipped) as out, tarfile.open(fileobj=out, mode="w|") as tar:
            for candid, data in packets:
                info = tarfile.TarInfo(f"{candid}.avro")
                info.size = len(data)
                info.mode = 0o644
                info.mtime = mtime
                tar.addfile(info, io.BytesIO(data))
                n_alerts += 1
                n_bytes += len(data)
                if progress is not None:
                    progress(n_alerts, n_bytes)
        os.replace(part, path)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise ZtfcatError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return ExportReport(n_alerts, n_bytes, path)
