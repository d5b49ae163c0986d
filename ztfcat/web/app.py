"""The datasette instance behind ``ztfcat serve``: settings, canned queries, plugin state, the server.

datasette serves the catalog's SQLite file itself (tables, facets, filters, JSON/CSV, the SQL page),
opened read-only, and the :mod:`ztfcat.web.plugin` hooks add the ztfcat pages.  The state those pages
need (the :class:`~ztfcat.Catalog`, the image cache) is kept per datasette instance in
:data:`_STATES`, so two instances in one process (tests) never share a catalog, and a datasette that
ztfcat did not make gets none of the plugin's routes.

On a PostgreSQL catalog datasette has no file to serve: its own pages show only an empty in-memory
database, and the ztfcat pages, which read through ``Catalog``, say so where it matters.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ztfcat.errors import ZtfcatError

from .images import DEFAULT_CACHE_BYTES, ImageCache

if TYPE_CHECKING:
    from datasette.app import Datasette

    from ztfcat.catalog import Catalog

TEMPLATES = Path(__file__).with_name("templates")
DEFAULT_SQL_TIME_LIMIT_MS = 3000
DEFAULT_MAX_RETURNED_ROWS = 1000

#: What people ask a night's alerts first, as datasette canned queries (named parameters are bound).
CANNED_QUERIES: dict[str, dict[str, Any]] = {
    "brightest_new_objects": {
        "title": "Brightest new objects of a night",
        "description": "Objects first detected (jdstarthist) less than a day before an alert of the night "
        "(YYYY-MM-DD), brightest first.",
        "sql": (
            "SELECT a.objectId, min(a.magpsf) AS brightest_magpsf, count(*) AS n_alerts,\n"
            "       min(a.jd) AS first_jd, min(a.jdstarthist) AS jdstarthist\n"
            "FROM alerts a JOIN releases r ON r.id = a.release_id\n"
            "WHERE r.night = :night AND a.jd - a.jdstarthist < 1.0\n"
            "GROUP BY a.objectId ORDER BY brightest_magpsf LIMIT 100"
        ),
    },
    "many_detections": {
        "title": "Objects with many detections",
        "description": "Objects with at least :min_detections detections in their light curve.",
        "sql": (
            "SELECT objectId, count(*) AS n_detections, min(jd) AS first_jd, max(jd) AS last_jd,\n"
            "       min(magpsf) AS peak_magpsf\n"
            "FROM prv_candidates WHERE candid IS NOT NULL\n"
            "GROUP BY objectId HAVING count(*) >= CAST(:min_detections AS INTEGER)\n"
            "ORDER BY n_detections DESC LIMIT 100"
        ),
    },
    "high_drb": {
        "title": "Alerts with drb > 0.99",
        "description": "The deep-learning real-bogus score says real (schema 3.3 and later carry drb).",
        "sql": (
            "SELECT candid, objectId, jd, fid, magpsf, sigmapsf, drb, rb, ra, dec\n"
            "FROM alerts WHERE drb > 0.99 ORDER BY jd DESC LIMIT 1000"
        ),
    },
}


@dataclass
class WebState:
    """What the ztfcat pages of one datasette instance read: the catalog and the image cache."""

    catalog: Catalog
    images: ImageCache
    database_name: str | None
    backend: str = "sqlite"
    #: Release rows by id (name and night never change), filled as alert pages need them.
    releases: dict = field(default_factory=dict)
    _vars: dict = field(default_factory=dict)

    def template_vars(self) -> dict[str, Any]:
        """Variables every page's template gets as ``ztfcat``."""
        if not self._vars:
            self._vars.update(
                backend=self.backend,
                sqlite=self.database_name is not None,
                database=self.database_name,
                url=self.catalog.url_for_display,
                canned=[{"name": k, "title": v["title"]} for k, v in CANNED_QUERIES.items()],
            )
        return self._vars


_STATES: weakref.WeakKeyDictionary[Any, WebState] = weakref.WeakKeyDictionary()
_REGISTER_LOCK = threading.Lock()


def state(datasette: Datasette) -> WebState:
    """The ztfcat state of a datasette made by :func:`make_datasette`."""
    try:
        return _STATES[datasette]
    except KeyError:
        raise ZtfcatError("this datasette was not made by ztfcat.web.app.make_datasette") from None


def has_state(datasette: Datasette) -> bool:
    return datasette in _STATES


def register_plugin() -> None:
    """Register :mod:`ztfcat.web.plugin` with datasette's plugin manager (once per process)."""
    from datasette.plugins import pm

    from . import plugin

    with _REGISTER_LOCK:
        if not pm.is_registered(plugin):
            pm.register(plugin, name="ztfcat")


def make_datasette(
    catalog: Catalog,
    *,
    sql_time_limit_ms: int = DEFAULT_SQL_TIME_LIMIT_MS,
    max_returned_rows: int = DEFAULT_MAX_RETURNED_ROWS,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    immutable: bool = False,
) -> Datasette:
    """A datasette over ``catalog`` with the ztfcat plugin.

    Parameters
    ----------
    catalog : ztfcat.Catalog
        The catalog to show; a SQLite catalog's file is also served by datasette's own pages.
    sql_time_limit_ms, max_returned_rows : int
        datasette's limits for every query its pages run (the SQL page included).
    cache_bytes : int
        Bound of the image cache.
    immutable : bool
        Open the SQLite file with ``immutable=1`` (no locking, datasette counts rows once): only when
        nothing ingests into the catalog while it is served.  Default: ``mode=ro``.

    Returns
    -------
    datasette.app.Datasette
    """
    from datasette.app import Datasette

    from ztfcat.store.db import is_sqlite

    register_plugin()
    engine = catalog.engine  # checks (or creates) the schema before datasette opens the file
    path = None
    if is_sqlite(engine):
        database = engine.url.database
        if database and database != ":memory:":
            path = str(Path(database).resolve())
    name = Path(path).stem if path else None
    if path and immutable:
        _checkpoint(path)
    settings = {
        "sql_time_limit_ms": int(sql_time_limit_ms),
        "max_returned_rows": int(max_returned_rows),
        "allow_download": False,
        "suggest_facets": True,
    }
    metadata: dict[str, Any] = {"title": "ztfcat", "databases": {}}
    if name:
        metadata["databases"][name] = {"queries": CANNED_QUERIES}
    datasette = Datasette(
        files=[path] if path and not immutable else [],
        immutables=[path] if path and immutable else [],
        settings=settings,
        metadata=metadata,
        template_dir=str(TEMPLATES),
    )
    _STATES[datasette] = WebState(
        catalog=catalog,
        images=ImageCache(cache_bytes),
        database_name=name,
        backend=engine.dialect.name,
    )
    return datasette


def _checkpoint(path: str) -> None:
    """Fold the catalog's write-ahead log into the file: ``immutable=1`` reads the file alone, so rows
    still in ``-wal`` would be invisible (tables missing altogether on a new catalog)."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        busy, log, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    if busy or (log != -1 and done != log):
        raise ZtfcatError(
            f"cannot serve {path} immutable: its write-ahead log is in use (an ingest running?); "
            "serve without --immutable"
        )


def serve(
    datasette: Datasette,
    *,
    host: str = "127.0.0.1",
    port: int = 8001,
    open_browser: bool = False,
    announce=print,
    on_started=None,
) -> None:
    """Run ``datasette`` under uvicorn until Ctrl-C (or SIGTERM); returns when the server has stopped.

    ``port=0`` takes a free port.  The URL is announced once the socket listens (and opened in the
    default browser with ``open_browser``).  Shutdown waits at most one second for open connections,
    so Ctrl-C stops the server at once even with a browser's keep-alive connections open.
    ``on_started(url, server)`` is called then too (tests use it to stop the server).
    """
    import uvicorn

    config = uvicorn.Config(
        datasette.app(), host=host, port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)

    def when_started() -> None:
        while not server.started:
            if server.should_exit:
                return
            threading.Event().wait(0.05)
        bound = server.servers[0].sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        url = f"http://{shown}:{bound[1]}/"
        announce(f"serving {datasette.metadata('title') or 'ztfcat'} at {url} (Ctrl-C stops)")
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        if on_started is not None:
            on_started(url, server)

    threading.Thread(target=when_started, name="ztfcat-serve-announce", daemon=True).start()
    server.run()
