"""ztfcat: the ZTF public alert archive on your own disk, as a SQL-indexed catalog.

Importing ztfcat does nothing but define names: no folders, no engines, no network.
"""

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
    InvalidQueryError,
    NotFoundError,
    SchemaOutOfDateError,
    StorageError,
    ZtfcatError,
)
from .ingest import IngestReport

__version__ = "0.1.0"

__all__ = [
    "AlertDecodeError",
    "Catalog",
    "ChecksumMismatchError",
    "DownloadError",
    "IngestError",
    "IngestReport",
    "InvalidQueryError",
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
