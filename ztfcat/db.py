"""Engines, connection settings and schema versions for SQLite and PostgreSQL.

A new catalog is created at the head revision in one step (``create_all`` then an Alembic stamp, as the
Alembic cookbook does); an existing one is checked against :data:`ztfcat.tables.HEAD_REVISION` without
importing Alembic, which is loaded only when a migration really runs.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.engine import make_url

from .errors import SchemaOutOfDateError, ZtfcatError
from .tables import HEAD_REVISION, metadata


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and foreign keys (for cascades)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        "busy_timeout=60000",
        "cache_size=-32768",  # 32 MiB per connection: an ingest holds four, and RSS must stay bounded
        "temp_store=MEMORY",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def is_sqlite(engine: Engine) -> bool:
    """Whether the catalog lives in SQLite (the embedded default) rather than PostgreSQL."""
    return engine.dialect.name == "sqlite"


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision a catalog is stamped with, or None for an empty database."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def ensure_schema(engine: Engine) -> None:
    """Create a new catalog at head, or refuse one whose schema is behind (or ahead of) this ztfcat."""
    revision = current_revision(engine)
    if revision == HEAD_REVISION:
        return
    if revision is None:
        with engine.connect() as conn:
            existing = set(inspect(conn).get_table_names()) & set(metadata.tables)
        if existing:
            raise SchemaOutOfDateError(
                f"{_where(engine)} holds ztfcat tables ({', '.join(sorted(existing))}) but no schema "
                "revision; run `ztfcat db upgrade` to bring it to the current schema"
            )
        with engine.begin() as conn:
            metadata.create_all(conn)
        stamp_head(engine)
        return
    raise SchemaOutOfDateError(
        f"the catalog at {_where(engine)} has schema revision {revision}, this ztfcat needs "
        f"{HEAD_REVISION}; run `ztfcat db upgrade`"
    )


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["engine"] = engine
    return cfg


def migrations_dir() -> Path:
    """The Alembic scripts: inside the installed wheel, or the checkout's top-level ``migrations/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ZtfcatError(f"no Alembic migrations found next to {here}; the installation is incomplete")


def stamp_head(engine: Engine) -> None:
    """Record that a freshly created catalog is at the head revision."""
    from alembic import command

    command.stamp(_alembic_config(engine), "head")


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Run the migrations up to ``revision`` (``ztfcat db upgrade``) and return the new revision."""
    from alembic import command

    if current_revision(engine) is None:
        with engine.connect() as conn:
            if not set(inspect(conn).get_table_names()) & set(metadata.tables):
                ensure_schema(engine)
                return current_revision(engine)
    command.upgrade(_alembic_config(engine), revision)
    return current_revision(engine)


def table_counts(engine: Engine) -> dict[str, int]:
    """Row counts of every catalog table, for ``ztfcat info``."""
    with engine.connect() as conn:
        return {
            name: conn.execute(select(text("count(*)")).select_from(table)).scalar_one()
            for name, table in metadata.tables.items()
        }
