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
    """Guard datasette's connections to the catalog: one statement, read-only, a time limit.

    datasette opens the file read-only and runs only SELECTs on its SQL page; the guard also refuses
    ATTACH, ``VACUUM INTO``, writing PRAGMAs and anything else that would write, whatever the SQL.
    datasette's own progress handler (``sql_time_limit_ms``) replaces the guard's for each query it
    runs, so both limits hold.
    """
    if not has_state(datasette):
        return
    web = state(datasette)
    if database != web.database_name:
        return  # datasette's own _internal and _memory databases
    from ztfcat.readonly import guard_sqlite

    guard_sqlite(conn, time_limit_s=web.time_limit_s)


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
