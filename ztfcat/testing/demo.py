"""``ztfcat demo``: the whole path from archive to catalog, in under a minute and without the internet.

A few synthetic nights (one of them empty, as real archives have) are written with
:func:`ztfcat.testing.synthetic.make_archive` and served by :class:`ztfcat.testing.archive_server.ArchiveServer` on
127.0.0.1, and the *real* download path runs against them: the listing and ``MD5SUMS``, the streaming
download into the ingest, the MD5 check, the light curves.  Nothing is faked past the network, so what
the demo shows is what ``ztfcat download`` does against https://ztf.uw.edu/alerts/public/.

The catalog is always a SQLite file in the demo's own folder, whatever ``ZTFCAT_DATABASE_URL`` says, so
the demo never writes into a real catalog and can be opened with the ``sqlite3`` shell afterwards.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from ..errors import ZtfcatError

FIRST_NIGHT = date(2018, 6, 1)


@dataclass
class DemoResult:
    """What the demo made: where, and how much.

    Attributes
    ----------
    data_dir : Path
        The demo catalog's data dir.
    database : Path
        Its SQLite file.
    stamps : Path or None
        The PNG of one alert's cutouts (None if no night had alerts).
    n_releases, n_alerts : int
        Releases and alerts ingested.
    """

    data_dir: Path
    database: Path
    stamps: Path | None
    n_releases: int
    n_alerts: int


def demo_nights(n_nights: int = 3, n_alerts: int = 40) -> list[tuple[str, int]]:
    """The nights to serve: ``n_nights`` consecutive nights from 2018-06-01, the middle one empty."""
    if n_nights < 1 or n_alerts < 1:
        raise ZtfcatError("the demo needs at least one night and one alert per night")
    empty = n_nights // 2 if n_nights > 1 else None
    return [
        ((FIRST_NIGHT + timedelta(days=i)).strftime("%Y%m%d"), 0 if i == empty else n_alerts)
        for i in range(n_nights)
    ]


def _fresh_dir(data_dir: str | Path | None) -> Path:
    if data_dir is None:
        return Path(tempfile.mkdtemp(prefix="ztfcat-demo-"))
    path = Path(data_dir).expanduser().resolve()
    if path.exists() and any(path.iterdir()):
        raise ZtfcatError(f"{path} is not empty: the demo needs an empty or new folder (or none at all)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_demo(
    data_dir: str | Path | None = None,
    *,
    n_nights: int = 3,
    n_alerts: int = 40,
    echo: Callable[[str], None] = print,
    quiet: bool = True,
    progress: Callable[[Any], None] | None = None,
) -> DemoResult:
    """Serve synthetic nights on 127.0.0.1, download and ingest them for real, and show the result.

    Parameters
    ----------
    data_dir : path, optional
        An empty or new folder for the catalog; by default a new temporary folder (reported).
    n_nights, n_alerts : int
        Nights to serve (the middle one empty) and alerts per other night.
    echo : callable
        Where the report's lines go.
    quiet : bool
        False draws a tqdm progress bar per release on stderr (on a terminal only).
    progress : callable, optional
        Called with each :class:`~ztfcat.mirror.archive.DownloadState` instead (the CLI passes its bars).

    Returns
    -------
    DemoResult
    """
    from ..catalog import Catalog
    from ..mirror.archive import download_recent
    from ..plotting import plot_stamps
    from .archive_server import ArchiveServer
    from .synthetic import make_archive

    folder = _fresh_dir(data_dir)
    database = folder / "catalog.sqlite"
    echo(f"demo catalog: {folder}")
    with tempfile.TemporaryDirectory(prefix="ztfcat-demo-archive-") as archive_dir:
        nights = demo_nights(n_nights, n_alerts)
        make_archive(archive_dir, nights, seed=1)
        with ArchiveServer(Path(archive_dir)) as server:
            echo(f"synthetic archive of {len(nights)} nights (one empty) served at {server.url}")
            catalog = Catalog(f"sqlite:///{database}", folder, server.url)
            if progress is None and not quiet:
                from ..cli.progress import DownloadBars

                progress = DownloadBars()
            try:
                reports = download_recent(catalog, max_downloads=None, progress=progress)
            finally:
                if hasattr(progress, "close"):
                    progress.close()
                server.stop()
    try:
        for report in reports:
            echo(f"  {report}")
        n_alerts_total = catalog.count()
        echo("")
        releases = "1 release" if len(reports) == 1 else f"{len(reports)} releases"
        echo(f"{releases}, {n_alerts_total} alerts; a few of them:")
        table = catalog.query(
            columns=["candid", "objectId", "jd", "fid", "magpsf", "sigmapsf", "rb"], limit=5, order_by="jd"
        )
        for name, fmt in (("jd", ".5f"), ("magpsf", ".3f"), ("sigmapsf", ".3f"), ("rb", ".3f")):
            table[name].format = fmt
        for line in table.pformat(max_lines=-1, max_width=-1):
            echo(f"  {line}")
        stamps = None
        if len(table):
            candid = int(table["candid"][0])
            stamps = folder / f"stamps_{candid}.png"
            plot_stamps(catalog.get_alert(candid)).savefig(stamps, dpi=100)
            echo(f"\ncutouts of alert {candid}: {stamps}")
        echo("")
        echo("open the catalog:")
        echo(f"  sqlite3 {database} \\")
        echo('    \'SELECT "objectId", COUNT(*) AS n, MIN(magpsf) FROM alerts GROUP BY "objectId" LIMIT 5\'')
        echo(f"  ztfcat --data-dir {folder} --database-url sqlite:///{database} alerts -n 5")
        echo(
            f"  python -c \"import ztfcat; print(ztfcat.Catalog('sqlite:///{database}', '{folder}').count())\""
        )
        return DemoResult(folder, database, stamps, len(reports), n_alerts_total)
    finally:
        catalog.close()
