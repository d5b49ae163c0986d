"""ztfcat: the ZTF public alert archive on your own disk, as a SQL-indexed catalog.

Importing ztfcat does nothing but define names: no folders, no engines, no network, and not even the
heavy libraries until a name that needs them is first used (the inflate child process of every ingest
imports a module of this package, and should not pay for SQLAlchemy).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Catalog": "catalog",
    "IngestReport": "ingest",
    "create_ztf_sync_table": "api",
    "default_catalog": "api",
    "delete_local_data": "api",
    "download_data_date": "api",
    "download_recent_data": "api",
    "get_alert_data": "api",
    "get_local_alert_list": "api",
    "get_remote_md5_table": "api",
    "iter_alerts": "api",
    "plot_stamps": "api",
    "AlertDecodeError": "errors",
    "ChecksumMismatchError": "errors",
    "DownloadError": "errors",
    "IngestError": "errors",
    "InvalidNightError": "errors",
    "InvalidQueryError": "errors",
    "ManifestFormatError": "errors",
    "NotFoundError": "errors",
    "SchemaOutOfDateError": "errors",
    "StorageError": "errors",
    "ZtfcatError": "errors",
}

__all__ = [
    "AlertDecodeError",
    "Catalog",
    "ChecksumMismatchError",
    "DownloadError",
    "IngestError",
    "IngestReport",
    "InvalidNightError",
    "InvalidQueryError",
    "ManifestFormatError",
    "NotFoundError",
    "SchemaOutOfDateError",
    "StorageError",
    "ZtfcatError",
    "create_ztf_sync_table",
    "default_catalog",
    "delete_local_data",
    "download_data_date",
    "download_recent_data",
    "get_alert_data",
    "get_local_alert_list",
    "get_remote_md5_table",
    "iter_alerts",
    "plot_stamps",
]

if TYPE_CHECKING:
    from .api import (
        create_ztf_sync_table,
        default_catalog,
        delete_local_data,
        download_data_date,
        download_recent_data,
        get_alert_data,
        get_local_alert_list,
        get_remote_md5_table,
        iter_alerts,
        plot_stamps,
    )
    from .catalog import Catalog
    from .errors import (
        AlertDecodeError,
        ChecksumMismatchError,
        DownloadError,
        IngestError,
        InvalidNightError,
        InvalidQueryError,
        ManifestFormatError,
        NotFoundError,
        SchemaOutOfDateError,
        StorageError,
        ZtfcatError,
    )
    from .ingest import IngestReport


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ztfcat' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
