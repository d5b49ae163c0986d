"""The ztfcat datasette plugin: pluggy hook implementations, registered by :func:`ztfcat.web.app.register_plugin`.

Every hook does nothing for a datasette that :func:`ztfcat.web.app.make_datasette` did not make, so the
plugin is harmless if another datasette runs in the same process.
"""

from __future__ import annotations

from urllib.parse import quote

from datasette import hookimpl
from markupsafe import Markup, escape

from .app import has_state, state

#: Columns whose values are candids (linked to the alert page) or objectIds (to the object page).
CANDID_COLUMNS = frozenset({"candid", "alert_candid"})
OBJECT_COLUMNS = frozenset({"objectId", "objectid"})


@hookimpl
def register_routes(datasette):
    from .pages import routes

    return routes() if has_state(datasette) else []


@hookimpl
def prepare_connection(conn, database, datasette):
    """Guard datasette's connections to the catalog with :func:`ztfcat.store.readonly.guard_sqlite`.

    datasette opens the file read-only and runs only single SELECTs on its SQL page; the guard's
    authorizer also refuses ATTACH, ``VACUUM INTO``, writing PRAGMAs and every other write, whatever
    path the SQL takes.  The time limit is datasette's own ``sql_time_limit_ms``, which it sets on the
    connection for each query: the guard's deadline counts from the moment it is installed, and these
    connections live as long as the server, so it gets none.
    """
    if not has_state(datasette):
        return
    web = state(datasette)
    if database != web.database_name:
        return  # datasette's own _internal and _memory databases
    from ztfcat.store.readonly import guard_sqlite

    guard_sqlite(conn, time_limit_s=None)


@hookimpl
def extra_template_vars(datasette):
    if not has_state(datasette):
        return {}
    return {"ztfcat": state(datasette).template_vars()}


@hookimpl
def render_cell(value, column, database, datasette):
    """candids link to their alert page, objectIds to their object page, in every table and query."""
    if value is None or not has_state(datasette) or database != state(datasette).database_name:
        return None
    if column in CANDID_COLUMNS and isinstance(value, int):
        href = datasette.urls.path(f"/alert/{value}")
    elif column in OBJECT_COLUMNS and isinstance(value, str):
        href = datasette.urls.path(f"/object/{quote(value, safe='')}")
    else:
        return None
    return Markup(f'<a href="{href}">{escape(value)}</a>')


@hookimpl
def menu_links(datasette):
    if not has_state(datasette):
        return []
    return [
        {"href": datasette.urls.path("/"), "label": "ztfcat home"},
        {"href": datasette.urls.path("/cone"), "label": "Cone search"},
    ]
