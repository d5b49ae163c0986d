"""Where the catalog lives: data directory, database URL and archive URL.

Each is resolved when it is used, never at import: an explicit argument first, then the environment
(``ZTFCAT_DATA_DIR``, ``ZTFCAT_DATABASE_URL``, ``ZTFCAT_ARCHIVE_URL``), then a per-user default outside
the installed package.  The network limits of a download (timeouts, the slowest speed tolerated, size
caps, redirect hosts) resolve the same way, from ``ZTFCAT_CONNECT_TIMEOUT`` and its neighbours below.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
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


def blob_url(value: str | os.PathLike[str] | None = None) -> str | None:
    """Shared storage for new nights' packs (``gs://bucket/prefix`` or a directory every machine
    mounts): argument, ``ZTFCAT_BLOB_URL``, else None (the catalog's own, then the data directory)."""
    value = value or os.environ.get("ZTFCAT_BLOB_URL") or None
    return None if value is None else os.fspath(value)


# --- network limits (read by ztfcat.sources.http) ------------------------------------------------------------

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_STALL_TIMEOUT = 60.0
DEFAULT_MIN_SPEED = 10_000.0
DEFAULT_SPEED_WINDOW = 60.0
# The index page rebuilt from the 2,959 rows of the 2026-07-02 listing is 0.69 MB and its MD5SUMS 0.18 MB,
# growing by 85 kB and 22 kB a year: the caps leave a margin of 20 and still refuse a 212 MB page unread.
DEFAULT_MAX_LISTING_BYTES = 16 << 20
DEFAULT_MAX_MANIFEST_BYTES = 4 << 20


def _number(
    value: float | str | None, env: str, default: float, *, integer: bool = False, positive: bool = True
) -> float:
    """``value``, else the environment variable ``env``, else ``default``; refused unless a finite number
    > 0 (>= 0 where ``positive`` is False)."""
    given = value is not None
    if value is None:
        value = os.environ.get(env) or None
    if value is None:
        return default
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        number = -1
    if not (number > 0 or (number == 0 and not positive)) or number == float("inf"):
        from .errors import SettingError

        kind = "a whole number" if integer else "a number"
        where = "given" if given else f"in {env}"
        raise SettingError(f"{value!r} {where} is not {kind} {'>' if positive else '>='} 0 ({env})")
    return number


def connect_timeout(value: float | str | None = None) -> float:
    """Seconds to wait for a connection: argument, ``ZTFCAT_CONNECT_TIMEOUT``, then 10."""
    return _number(value, "ZTFCAT_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)


def stall_timeout(value: float | str | None = None) -> float:
    """Seconds without a byte before a read fails: argument, ``ZTFCAT_STALL_TIMEOUT``, then 60."""
    return _number(value, "ZTFCAT_STALL_TIMEOUT", DEFAULT_STALL_TIMEOUT)


def min_speed(value: float | str | None = None) -> float:
    """Slowest average bytes/s tolerated over a window: argument, ``ZTFCAT_MIN_SPEED``, then 10,000; 0 is off."""
    return _number(value, "ZTFCAT_MIN_SPEED", DEFAULT_MIN_SPEED, positive=False)


def speed_window(value: float | str | None = None) -> float:
    """Seconds over which ``min_speed`` is averaged: argument, ``ZTFCAT_SPEED_WINDOW``, then 60."""
    return _number(value, "ZTFCAT_SPEED_WINDOW", DEFAULT_SPEED_WINDOW)


def max_listing_bytes(value: int | str | None = None) -> int:
    """Largest index page read: argument, ``ZTFCAT_MAX_LISTING_BYTES``, then 16 MiB."""
    return int(_number(value, "ZTFCAT_MAX_LISTING_BYTES", DEFAULT_MAX_LISTING_BYTES, integer=True))


def max_manifest_bytes(value: int | str | None = None) -> int:
    """Largest ``MD5SUMS`` read: argument, ``ZTFCAT_MAX_MANIFEST_BYTES``, then 4 MiB."""
    return int(_number(value, "ZTFCAT_MAX_MANIFEST_BYTES", DEFAULT_MAX_MANIFEST_BYTES, integer=True))


def allow_redirect_hosts(value: str | Iterable[str] | None = None) -> frozenset[str]:
    """Hosts a download may be redirected to besides its own origin: argument, ``ZTFCAT_ALLOW_REDIRECT_HOSTS``.

    Each is ``host`` (any port) or ``host:port``, lowercase; ``*`` allows any.  Text is split at commas and
    spaces.  Empty by default: a redirect to another scheme, host or port is refused.
    """
    if value is None:
        value = os.environ.get("ZTFCAT_ALLOW_REDIRECT_HOSTS", "")
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return frozenset(host.strip().lower() for host in value if host.strip())
