"""ztfcat: the ZTF public alert archive on your own disk, as a SQL-indexed catalog.

The seed's module (``broker.ztf_archive``) is here name for name: ``import ztfcat as ztfa``.
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
    "IngestReport": "ingest.pipeline",
    "create_ztf_sync_table": "api",
    "default_catalog": "api",
    "delete_local_data": "api",
    "download_data": "api",
    "download_data_date": "api",
    "download_recent_data": "api",
    "get_alert_data": "api",
    "get_local_alert_list": "api",
    "get_local_alerts": "api",
    "get_local_release_list": "api",
    "get_local_releases": "api",
    "get_number_local_alerts": "api",
    "get_number_local_releases": "api",
    "get_remote_md5_table": "api",
    "get_remote_release_list": "api",
    "get_remote_release_md5": "api",
    "get_ztf_data_dir": "api",
    "iter_alerts": "api",
    "number_local_releases": "api",
    "plot_cutout": "api",
    "plot_stamps": "api",
    "ALERT_LOG": "api",
    "DATA_DIR": "api",
    "FILE_DIR": "api",
    "ZTF_DATA_DIR": "api",
    "ZTF_URL": "api",
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
    "ALERT_LOG",
    "DATA_DIR",
    "FILE_DIR",
    "ZTF_DATA_DIR",
    "ZTF_URL",
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
    "download_data",
    "download_data_date",
    "download_recent_data",
    "get_alert_data",
    "get_local_alert_list",
    "get_local_alerts",
    "get_local_release_list",
    "get_local_releases",
    "get_number_local_alerts",
    "get_number_local_releases",
    "get_remote_md5_table",
    "get_remote_release_list",
    "get_remote_release_md5",
    "get_ztf_data_dir",
    "iter_alerts",
    "number_local_releases",
    "plot_cutout",
    "plot_stamps",
]

if TYPE_CHECKING:
    from .api import (
        create_ztf_sync_table,
        default_catalog,
        delete_local_data,
        download_data,
        download_data_date,
        download_recent_data,
        get_alert_data,
        get_local_alert_list,
        get_local_alerts,
        get_local_release_list,
        get_local_releases,
        get_number_local_alerts,
        get_number_local_releases,
        get_remote_md5_table,
        get_remote_release_list,
        get_remote_release_md5,
        get_ztf_data_dir,
        iter_alerts,
        number_local_releases,
        plot_cutout,
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
    from .ingest.pipeline import IngestReport


#: The seed's module constants: computed from the settings each time they are read, never cached.
_CONSTANTS = frozenset({"ALERT_LOG", "DATA_DIR", "FILE_DIR", "ZTF_DATA_DIR", "ZTF_URL"})


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ztfcat' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    if name not in _CONSTANTS:
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
