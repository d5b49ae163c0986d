"""ztfcat in a web browser: datasette over the catalog, extended by the ztfcat plugin.

``ztfcat serve`` (:mod:`ztfcat.cli.web`) builds a :class:`datasette.app.Datasette` with
:func:`ztfcat.web.app.make_datasette` and registers :mod:`ztfcat.web.plugin` with datasette's pluggy
plugin manager.  The plugin adds the alert, object and cone-search pages (:mod:`ztfcat.web.pages`), which
read everything through :class:`ztfcat.Catalog`, so they work on a PostgreSQL catalog too, and it guards
every SQLite connection datasette opens (:mod:`ztfcat.store.readonly`).  Images are drawn by
:mod:`ztfcat.plotting` on request and kept in a bounded cache (:mod:`ztfcat.web.images`).

datasette is the optional extra ``ztfcat[web]``; nothing here is imported by the rest of ztfcat, and
importing this package imports nothing.
"""
