"""One nightly tarball to read: a local file or a Google Cloud Storage object, behind one protocol.

:func:`source_for` is the one place that reads a location's form (``gs://bucket/object`` or a path), so
the catalog, the CLI and the distributed ingest never test for ``gs://`` themselves; a new kind of
storage is a new class here and a new branch in :func:`source_for`.  The HTTP archive is a source of
many tarballs with a manifest to check them against, so it is read through
:class:`ztfcat.sources.http.ArchiveClient` by :mod:`ztfcat.mirror.archive`, not through this protocol.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from ..errors import ZtfcatError

GS = "gs://"


class Source(Protocol):
    """Where one release's tarball is read from."""

    @property
    def name(self) -> str:
        """The tarball's file name, which names the release (``ztf_public_20180819.tar.gz``)."""

    @property
    def origin(self) -> str:
        """Where it came from, as the ``releases`` table records it."""

    def open(self) -> BinaryIO:
        """A binary stream of the tarball's bytes, to be closed by the caller (``with``)."""


@dataclass(frozen=True)
class LocalTarball:
    """A tarball on a local or mounted file system."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def origin(self) -> str:
        return str(self.path.resolve())

    def open(self) -> BinaryIO:
        try:
            return open(self.path, "rb")  # noqa: SIM115 - the caller closes it
        except OSError as exc:
            raise ZtfcatError(f"cannot read {self.path}: {exc.strerror}") from exc


@dataclass(frozen=True)
class BucketTarball:
    """A tarball stored as a Google Cloud Storage object, streamed with ranged reads."""

    url: str

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def origin(self) -> str:
        return self.url

    def open(self) -> BinaryIO:
        from .gcs import open_object

        return open_object(self.url)


def is_bucket_url(location: object) -> bool:
    """Whether a location names a Google Cloud Storage object or prefix (``gs://...``)."""
    return isinstance(location, str) and location.startswith(GS)


def source_for(location: str | os.PathLike[str]) -> Source:
    """The source a location names: ``gs://bucket/object`` or a file path."""
    if is_bucket_url(location):
        return BucketTarball(str(location))
    return LocalTarball(Path(location))
