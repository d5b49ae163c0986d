"""The seed's module-level calls (``broker.ztf_archive``), call for call, on a default catalog.

Each function is a thin call on :func:`default_catalog`, the catalog that the settings name
(``ZTFCAT_DATA_DIR``, ``ZTFCAT_DATABASE_URL``, ``ZTFCAT_ARCHIVE_URL``), created on first use, never at
import.  Code that wants several catalogs uses :class:`ztfcat.Catalog` directly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from .catalog import Catalog

_default: Catalog | None = None
_default_key: tuple | None = None


def default_catalog() -> Catalog:
    """The catalog the environment names; made again when those settings change."""
    global _default, _default_key
    key = tuple(os.environ.get(v) for v in ("ZTFCAT_DATA_DIR", "ZTFCAT_DATABASE_URL", "ZTFCAT_ARCHIVE_URL"))
    if _default is None or key != _default_key:
        if _default is not None:
            _default.close()
        _default, _default_key = Catalog(), key
    return _default


def get_remote_md5_table(*, refresh: bool = True) -> tuple[list[str], list[int]]:
    """Names and exact sizes (bytes) of the releases the archive offers, oldest first."""
    from .archive import remote_md5_table

    return remote_md5_table(default_catalog(), refresh=refresh)


def download_data_date(year: int, month: int, day: int, **kwargs: Any):
    """Download, verify and ingest the release of one night; returns its ingest report."""
    from .archive import download_night

    return download_night(default_catalog(), year, month, day, **kwargs)


def download_recent_data(max_downloads: int = 1, stop_on_exist: bool = False, **kwargs: Any):
    """Download the newest releases not yet complete in the catalog; returns their ingest reports."""
    from .archive import download_recent

    return download_recent(
        default_catalog(), max_downloads=max_downloads, stop_on_exist=stop_on_exist, **kwargs
    )


def delete_local_data(nights: Any = None) -> int:
    """Remove every ingested release (or those of the given night or nights): rows, packets, downloads."""
    from .archive import remove_downloads

    catalog = default_catalog()
    if nights is None:
        remove_downloads(catalog)
    return catalog.delete(nights)


def get_local_alert_list(*conditions: str, **filters: Any) -> list[int]:
    """Candids of every alert in the local catalog (an index scan, not a disk scan)."""
    return default_catalog().alert_ids(*conditions, **filters)


def get_alert_data(candid: int, raw: bool = False) -> dict | bytes:
    """One alert as a dict (as fastavro parses it), or its original Avro bytes with ``raw=True``."""
    return default_catalog().get_alert(candid, raw=raw)


def iter_alerts(num_alerts: int | None = None, *conditions: str, **filters: Any) -> Iterator:
    """Every local alert in candid order: one dict at a time, or lists of up to ``num_alerts``."""
    return default_catalog().iter_alerts(num_alerts, *conditions, **filters)


def plot_stamps(alert_data: dict | int, fig=None):
    """The Science / Template / Difference cutouts of an alert (a dict, or a candid) as a Figure."""
    from .plotting import plot_stamps as _plot

    if not isinstance(alert_data, dict):
        alert_data = get_alert_data(alert_data)
    return _plot(alert_data, fig=fig)


def create_ztf_sync_table(
    bucket_name: str | None = None, out_path: str | os.PathLike[str] | None = None, **kwargs
):
    """The Storage Transfer URL list of archive files not yet in ``bucket_name`` (an astropy Table)."""
    from .transfer import create_sync_table

    return create_sync_table(default_catalog(), bucket_name, out_path, **kwargs)
