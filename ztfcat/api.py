"""The seed's module-level calls (``broker.ztf_archive``), call for call, on a default catalog.

Each function is a thin call on :func:`default_catalog`, the catalog that the settings name
(``ZTFCAT_DATA_DIR``, ``ZTFCAT_DATABASE_URL``, ``ZTFCAT_ARCHIVE_URL``), created on first use, never at
import.  Code that wants several catalogs uses :class:`ztfcat.Catalog` directly.

Every name any version of the seed's module exported is here, with the keywords each version took
(``candid``/``alertid``/``alert_id``, ``block_size``, ``verbose``, ``return_iter``, ``out_file``), so
code written against any of them runs with only its import changed.  Where versions disagree,
``SEED.md`` (the version whose documentation users have) decides: ``get_remote_md5_table()`` returns
``(file_names, file_sizes)`` and ``create_ztf_sync_table(bucket_name, out_path)`` keeps that order.
Names a later seed renamed or dropped still work and warn (``DeprecationWarning``) naming the call to
use.  The seed's module constants (``ZTF_URL``, ``ZTF_DATA_DIR``, ...) are computed when read, from
the same settings, so importing still does nothing.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
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


#: The seed's module constants, read lazily (module ``__getattr__``): the settings decide them.
CONSTANTS = ("ZTF_URL", "ZTF_DATA_DIR", "DATA_DIR", "FILE_DIR", "ALERT_LOG")


def __getattr__(name: str) -> Any:
    if name == "ZTF_URL":  # the archive, with the trailing slash the seed's urljoin needed
        return default_catalog().archive_url.rstrip("/") + "/"
    if name in ("ZTF_DATA_DIR", "DATA_DIR"):
        return default_catalog().data_dir
    if name == "FILE_DIR":  # the seed's own folder; here the installed package's
        return Path(__file__).resolve().parent
    if name == "ALERT_LOG":  # the seed's list of downloaded releases; ztfcat keeps them in the catalog
        return default_catalog().data_dir / "alert_log.txt"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)


# -- the archive -------------------------------------------------------------------------------------


def get_remote_md5_table(*, refresh: bool = True) -> tuple[list[str], list[int]]:
    """Names and exact sizes (bytes) of the releases the archive offers, oldest first.

    Returns ``(file_names, file_sizes)``, as ``SEED.md`` unpacks it.  ``refresh=False`` reads the
    listing cached in the catalog instead of asking the archive.
    """
    from .mirror.archive import remote_md5_table

    return remote_md5_table(default_catalog(), refresh=refresh)


def get_remote_release_list() -> tuple[list[str], list[int]]:
    """Deprecated (the seed renamed it): :func:`get_remote_md5_table`; same ``(names, sizes)``."""
    _deprecated("get_remote_release_list()", "get_remote_md5_table()")
    return get_remote_md5_table()


def get_remote_release_md5():
    """Deprecated (the seed renamed it): the archive's ``MD5SUMS`` as an astropy Table.

    Columns ``file`` and ``md5``, one row per listed release, oldest first, as the seed's table had.
    """
    _deprecated("get_remote_release_md5()", "get_remote_md5_table()")
    from astropy.table import Table

    from .mirror.archive import cached_listing

    files = [f for f in cached_listing(default_catalog(), True) if f.md5]
    return Table([[f.name for f in files], [f.md5 for f in files]], names=("file", "md5"), dtype=(str, str))


def _bars(verbose: bool, kwargs: dict) -> Any:
    """The seed's ``verbose``: tqdm bars on stderr (on a terminal only) unless a callback is given."""
    if "progress" in kwargs or not verbose:
        return None
    from .cli.progress import DownloadBars

    kwargs["progress"] = bars = DownloadBars()
    return bars


def download_data_date(
    year: int, month: int, day: int, block_size: int = 1024, verbose: bool = True, **kwargs: Any
):
    """Download, verify and ingest the release of one night; returns its ingest report.

    ``block_size`` is accepted for the seed's sake and not used: ztfcat reads in 1 MiB chunks and
    streams them into the catalog.  ``verbose`` draws a progress bar on a terminal.  Other keywords are
    those of :func:`ztfcat.mirror.archive.download_release` (``force``, ``keep_tarballs``, ``progress``).
    """
    bars = _bars(verbose, kwargs)
    try:
        return default_catalog().download_night(year, month, day, **kwargs)
    finally:
        if bars is not None:
            bars.close()


def download_recent_data(
    max_downloads: int = 1,
    *args: Any,
    block_size: int = 1024,
    verbose: bool = True,
    stop_on_exist: bool = False,
    max_workers: int | None = None,
    **kwargs: Any,
):
    """Download the newest releases not yet complete in the catalog; returns their ingest reports.

    The seed's versions put different parameters second: ``(max_downloads, stop_on_exist)`` and
    later ``(max_downloads, block_size, verbose, stop_on_exist)``; both positional forms work (a
    bool second is ``stop_on_exist``).  ``block_size`` and ``max_workers`` are accepted and not used;
    ``verbose`` draws a progress bar per release on a terminal.
    """
    if args and isinstance(args[0], bool):
        stop_on_exist, *rest = args
        if rest:
            raise TypeError(
                "download_recent_data(max_downloads, stop_on_exist) takes two positional arguments"
            )
    elif args:
        if len(args) > 3:
            raise TypeError("download_recent_data takes at most 4 positional arguments")
        block_size, *rest = args
        if rest:
            verbose = rest[0]
        if len(rest) > 1:
            stop_on_exist = rest[1]
    del block_size, max_workers  # the seed's tuning knobs; ztfcat streams in 1 MiB chunks
    bars = _bars(verbose, kwargs)
    try:
        return default_catalog().download_recent(max_downloads, stop_on_exist, **kwargs)
    finally:
        if bars is not None:
            bars.close()


def download_data(max_downloads: int = 1):
    """Deprecated (the seed's first name): :func:`download_recent_data`."""
    _deprecated("download_data()", "download_recent_data()")
    return download_recent_data(max_downloads)


def delete_local_data(nights: Any = None) -> int:
    """Remove every ingested release (or those of the given night or nights): rows, packets, downloads."""
    catalog = default_catalog()
    if nights is None:
        catalog.remove_downloads()
    return catalog.delete(nights)


def get_ztf_data_dir() -> Path:
    """The folder of the local data (``ZTFCAT_DATA_DIR`` or the per-user default), made if absent.

    The seed's ``$PGB_DATA_DIR/ztf_archive``; here packets live under it and the catalog beside them.
    """
    folder = default_catalog().data_dir
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- local data --------------------------------------------------------------------------------------


def _release_dates() -> Iterator[str]:
    from .mirror.archive import local_statuses

    for name, status in sorted(local_statuses(default_catalog()).items()):
        if status == "complete":
            yield name.removeprefix("ztf_public_").split(".", 1)[0]


def get_local_releases() -> Iterator[str]:
    """The releases complete in the catalog, as the seed named them: ``"20180626"``, oldest first.

    An iterator, as the seed returned (a generator).
    """
    return _release_dates()


def get_local_release_list(return_iter: bool = False) -> list[str] | Iterator[str]:
    """Deprecated (the seed renamed it): :func:`get_local_releases`; a list unless ``return_iter``."""
    _deprecated("get_local_release_list()", "get_local_releases()")
    releases = get_local_releases()
    return releases if return_iter else list(releases)


def get_number_local_releases() -> int:
    """Deprecated (the seed dropped it): how many releases are complete; use get_local_releases()."""
    _deprecated("get_number_local_releases()", "len(list(get_local_releases()))")
    return sum(1 for _ in _release_dates())


def number_local_releases() -> int:
    """Deprecated (the seed's first name of :func:`get_number_local_releases`)."""
    _deprecated("number_local_releases()", "len(list(get_local_releases()))")
    return sum(1 for _ in _release_dates())


def get_local_alert_list(
    *conditions: str, return_iter: bool = False, **filters: Any
) -> list[int] | Iterator[int]:
    """Candids of every alert in the local catalog (an index scan, not a disk scan), in candid order.

    A list, as ``SEED.md`` uses it; ``return_iter=True`` gives an iterator, as one seed version did.
    Conditions and keyword filters as in :meth:`ztfcat.Catalog.query`.
    """
    ids = default_catalog().alert_ids(*conditions, **filters)
    return iter(ids) if return_iter else ids


def get_local_alerts() -> Iterator[int]:
    """Candids of every local alert as an iterator (the seed's later name of get_local_alert_list)."""
    return iter(default_catalog().alert_ids())


def get_number_local_alerts() -> int:
    """Deprecated (the seed dropped it): how many alerts the catalog holds."""
    _deprecated("get_number_local_alerts()", "len(get_local_alert_list())")
    return default_catalog().count()


def get_alert_data(
    candid: int | None = None,
    raw: bool = False,
    *,
    alert_id: int | None = None,
    alertid: int | None = None,
) -> dict | bytes:
    """One alert as a dict (as fastavro parses it), or its original Avro bytes with ``raw=True``.

    The id may be given by position or by any name the seed used for it: ``candid``, ``alertid`` or
    ``alert_id``.  NotFoundError (a LookupError) when the catalog has no such alert.
    """
    given = [v for v in (candid, alert_id, alertid) if v is not None]
    if len(given) != 1:
        raise TypeError("get_alert_data() takes one alert id (candid, alert_id or alertid)")
    return default_catalog().get_alert(given[0], raw=raw)


def iter_alerts(
    num_alerts: int | None = None, *conditions: Any, raw: bool = False, **filters: Any
) -> Iterator:
    """Every local alert in candid order: one dict at a time, or lists of up to ``num_alerts``.

    ``num_alerts`` None or 0 means no batching (the seed treated 0 so); a negative one is a
    ValueError.  ``raw`` may be given second, by position, as the seed's signature
    ``iter_alerts(num_alerts, raw)`` had it (or first, as its very first version did).
    """
    if isinstance(num_alerts, bool):  # the first seed: iter_alerts(raw=False)
        num_alerts, raw = None, num_alerts
    if conditions and isinstance(conditions[0], bool):
        raw, conditions = conditions[0], conditions[1:]
    if num_alerts == 0:
        num_alerts = None
    return default_catalog().iter_alerts(num_alerts, *conditions, raw=raw, **filters)


# -- plots -------------------------------------------------------------------------------------------


def _as_alert(alert_data: dict | int) -> dict:
    return alert_data if isinstance(alert_data, dict) else get_alert_data(alert_data)


def plot_stamps(alert_data: dict | int, fig=None):
    """The Science / Template / Difference cutouts of an alert (a dict, or a candid) as a Figure."""
    from .plotting import plot_stamps as _plot

    return _plot(_as_alert(alert_data), fig=fig)


def plot_cutout(packet: dict | int, fig=None, subplot: tuple = (1, 1, 1), which: str = "Science"):
    """One cutout (the Science image, as the seed drew) of an alert on ``fig`` at ``subplot``.

    ``subplot`` is ``(rows, columns, index)`` as for ``Figure.add_subplot``; without ``fig`` a new
    4x4-inch figure is made.  Returns the figure.
    """
    from .plotting import _figure
    from .plotting import plot_cutout as _plot

    if fig is None:
        fig = _figure((4, 4))
    ax = fig.add_subplot(*subplot)
    _plot(_as_alert(packet), which, ax=ax)
    return fig


# -- Google Cloud ------------------------------------------------------------------------------------


def create_ztf_sync_table(
    bucket_name: str | None = None,
    out_path: str | os.PathLike[str] | None = None,
    verbose: bool = True,
    *,
    out_file: str | os.PathLike[str] | None = None,
    block_size: int | None = None,
    **kwargs,
):
    """The Storage Transfer URL list of archive files not yet in ``bucket_name`` (an astropy Table).

    ``out_file`` is the first seed's name of ``out_path``.  ``verbose`` (and ``block_size``, as on the
    download calls) are accepted for the seed's sake: the sizes come from the catalog's listing (a HEAD
    only for new files), so there is nothing long to show.  Other keywords as in :func:`ztfcat.mirror.bucket.create_sync_table`.
    """
    if out_file is not None:
        if out_path is not None:
            raise TypeError("give out_path or out_file, not both")
        out_path = out_file
    del verbose, block_size
    return default_catalog().create_sync_table(bucket_name, out_path, **kwargs)
