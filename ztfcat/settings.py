"""Where the catalog lives: data directory, database URL and archive URL.

Each is resolved when it is used, never at import: an explicit argument first, then the environment
(``ZTFCAT_DATA_DIR``, ``ZTFCAT_DATABASE_URL``, ``ZTFCAT_ARCHIVE_URL``), then a per-user default outside
the installed package.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ARCHIVE_URL = "https://ztf.uw.edu/alerts/public/"
CATALOG_FILE = "catalog.sqlite"


def data_dir(value: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: argument, ``ZTFCAT_DATA_DIR``, then ``$XDG_DATA_HOME/ztfcat`` (or ~/.local/share).

    Not created here; the catalog creates it when it first writes.
    """
    if value is None:
        value = os.environ.get("ZTFCAT_DATA_DIR") or None
    if value is None:
        base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        value = Path(base) / "ztfcat"
    return Path(value).expanduser().resolve()


def database_url(value: str | None = None, data: Path | None = None) -> str:
    """Any SQLAlchemy URL: argument, ``ZTFCAT_DATABASE_URL``, then a SQLite file in the data directory."""
    value = value or os.environ.get("ZTFCAT_DATABASE_URL") or None
    if value is None:
        value = f"sqlite:///{(data or data_dir()) / CATALOG_FILE}"
    return value


def archive_url(value: str | None = None) -> str:
    """The archive's base URL, always ending in ``/``: argument, ``ZTFCAT_ARCHIVE_URL``, then ZTF's own."""
    value = value or os.environ.get("ZTFCAT_ARCHIVE_URL") or DEFAULT_ARCHIVE_URL
    return value if value.endswith("/") else value + "/"
