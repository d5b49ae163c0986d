"""Engines, connection settings and schema versions for SQLite and PostgreSQL.

A new catalog is created at the head revision in one transaction: the tables, the view and the Alembic
stamp commit together or not at all, serialised against other processes opening the same new catalog
(SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock).  A kill at any instant
leaves either nothing or the whole head schema.  An existing catalog is checked against
:data:`ztfcat.store.tables.HEAD_REVISION` without importing Alembic, which is loaded only when a migration
really runs or a revision is not this ztfcat's own.

A SQLite file that is not a database, is truncated or corrupt, or sits where it cannot be written, is
refused with :class:`~ztfcat.errors.CatalogUnreadableError` naming the file and the reason.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ..errors import CatalogUnreadableError, SchemaOutOfDateError, SchemaTooNewError, ZtfcatError
from .tables import HEAD_REVISION, LIGHTCURVES_VIEW, metadata

#: The table Alembic keeps its revision in, spelled as Alembic creates it, so Alembic reads our stamp.
alembic_version = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)

#: Any constant will do: every ztfcat process creating a catalog on one server takes the same lock.
_CREATE_LOCK_KEY = 0x7A7466636174  # "ztfcat"

#: How long a SQLite connection waits for another writer before "database is locked": long enough for
#: any one transaction of another ztfcat process, short enough that a catalog held open for writing by
#: another program fails the ingest in a minute rather than hanging it.
BUSY_TIMEOUT_S = 60.0


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and foreign keys (for cascades)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CatalogUnreadableError(
                    f"cannot create the folder {folder} for the catalog {parsed.database}: "
                    f"{exc.strerror or exc}"
                ) from exc
        _bind_nulls_quickly()
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _bind_nulls_quickly() -> None:
    """Give Python's ``sqlite3`` an adapter for ``None`` that returns ``None``.

    Python 3.11's ``sqlite3`` binds an int, float or str directly, but looks every other parameter up as
    something to adapt: a registry key built, a dict probed, then ``__adapt__`` asked of its
    ``PrepareProtocol`` type, whose failed attribute lookup formats an error message that is thrown
    away.  For ``None`` that costs about 0.3 µs, and a light-curve row is mostly ``None`` (an upper
    limit binds ~50 of its 70 columns as NULL): the history pass spent more time binding NULLs than
    storing rows (docs/benchmarks.md).  With an adapter registered the lookup ends at the dict probe
    and ``dict.get`` (C, one argument, returns ``None``) gives the value back: 14 -> 6 µs per such row.
    The registry is process-wide, and this entry changes no value: ``None`` still binds as NULL.
    """
    sqlite3.register_adapter(type(None), _NO_ADAPTATION.get)


#: Empty, so ``get(anything)`` is ``None`` (see :func:`_bind_nulls_quickly`).
_NO_ADAPTATION: dict = {}


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    _wal(cursor)
    for pragma in (
        "synchronous=NORMAL",
        "foreign_keys=ON",
        f"busy_timeout={int(BUSY_TIMEOUT_S * 1000)}",
        "cache_size=-32768",  # 32 MiB per connection: an ingest holds four, and RSS must stay bounded
        "temp_store=MEMORY",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _wal(cursor) -> None:
    """Switch the file to WAL, waiting for other processes doing the same (up to the busy timeout).

    Changing the journal mode of a new file needs its exclusive lock, and SQLite answers "database is
    locked" at once, without its busy handler, when another connection holds it: several processes
    opening a new catalog together would fail.  Once the file is in WAL (persistent) this is a read.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return  # the usual case: no need to ask for the mode, and the lock, again
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005 + random.random() * 0.02)


def check_sqlite_size(conn: Connection, path: str | os.PathLike[str]) -> None:
    """Refuse, in one line, a catalog file shorter than SQLite's own page count says it is.

    Costs two PRAGMAs and two ``stat`` calls, nothing on a catalog of any size.  The file is never
    opened by a second descriptor: closing one would drop every POSIX lock this process holds on it,
    and another process could then checkpoint and truncate the WAL under our connections.  Checked
    only while the WAL is empty (a WAL can hold pages the file does not have yet); the page count is
    read first, since pages leave the WAL only after they are written to the file.
    """
    page_count = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
    page_size = conn.exec_driver_sql("PRAGMA page_size").scalar() or 0
    try:
        if Path(f"{path}-wal").stat().st_size:
            return
    except FileNotFoundError:
        pass
    size = Path(path).stat().st_size
    if size < page_count * page_size:
        raise CatalogUnreadableError(
            f"the catalog {path} is truncated: {size} bytes where SQLite expects "
            f"{page_count * page_size}; restore it from a copy, or move it away to start a new catalog"
        )


def _unreadable(engine: Engine, exc: DBAPIError) -> CatalogUnreadableError:
    """One line for a database that failed on open: which file, and why in words."""
    reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
    lowered = reason.lower()
    if "not a database" in lowered:
        reason = "it is not a SQLite database (corrupt, or another kind of file); move it away to start a new catalog"
    elif "malformed" in lowered or "corrupt" in lowered:
        reason = "the database file is corrupt (database disk image is malformed)"
    elif "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        reason = "the file or its folder is not writable (SQLite writes a -wal and -shm file beside it)"
    return CatalogUnreadableError(f"cannot open the catalog {engine.url.database}: {reason}")


def is_sqlite(engine: Engine) -> bool:
    """Whether the catalog lives in SQLite (the embedded default) rather than PostgreSQL."""
    return engine.dialect.name == "sqlite"


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision a catalog is stamped with, or None for an empty database."""
    with _opened(engine) as conn:
        return _revision(conn)


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(select(alembic_version.c.version_num)).scalar()


@contextlib.contextmanager
def _opened(engine: Engine) -> Iterator[Connection]:
    """A connection to the catalog, with a file that cannot be a catalog refused in one line."""
    path = engine.url.database if is_sqlite(engine) and engine.url.database != ":memory:" else None
    try:
        with engine.connect() as conn:
            if path:
                check_sqlite_size(conn, path)
            yield conn
    except DBAPIError as exc:
        if not is_sqlite(engine):
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise CatalogUnreadableError(
                f"cannot use the catalog database {_where(engine)}: {reason}"
            ) from exc
        raise _unreadable(engine, exc) from exc


def ensure_schema(engine: Engine) -> None:
    """Create a new catalog at head, or refuse one whose schema is behind (or ahead of) this ztfcat."""
    revision = current_revision(engine)
    if revision == HEAD_REVISION:
        return
    if revision is None:
        with _creating(engine) as conn:
            revision = _revision(conn)
            if revision is None:
                existing = set(inspect(conn).get_table_names()) & set(metadata.tables)
                if existing:
                    raise SchemaOutOfDateError(
                        f"{_where(engine)} holds ztfcat tables ({', '.join(sorted(existing))}) but no "
                        "schema revision (an older ztfcat was interrupted creating it); run "
                        "`ztfcat db upgrade` to check and stamp it"
                    )
                _create_all(conn)
                _stamp(conn, HEAD_REVISION)
                return
        if revision == HEAD_REVISION:  # another process created it while we waited for the lock
            return
    _refuse_revision(engine, revision)


def _create_all(conn: Connection) -> None:
    """Every table at head: PostgreSQL partitions the big ones (:mod:`ztfcat.store.partitions`)."""
    if conn.dialect.name == "sqlite":
        metadata.create_all(conn)
        return
    from .partitions import create_schema

    create_schema(conn, metadata)


def _refuse_revision(engine: Engine, revision: str) -> None:
    if revision not in known_revisions():
        raise SchemaTooNewError(
            f"the catalog at {_where(engine)} was made by a newer ztfcat (schema revision {revision}, "
            f"this ztfcat knows up to {HEAD_REVISION}); upgrade ztfcat (pip install -U ztfcat) to use it"
        )
    raise SchemaOutOfDateError(
        f"the catalog at {_where(engine)} has schema revision {revision}, this ztfcat needs "
        f"{HEAD_REVISION}; run `ztfcat db upgrade`"
    )


def known_revisions() -> set[str]:
    """Every revision this ztfcat's migrations know (Alembic is loaded: only for an unexpected one)."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory(str(migrations_dir())).walk_revisions()}


@contextlib.contextmanager
def _creating(engine: Engine) -> Iterator[Connection]:
    """One transaction that holds the catalog's creation lock; committed if the block succeeds.

    SQLite: ``BEGIN IMMEDIATE`` takes the write lock before anything is read, so concurrent first
    opens queue (the busy timeout) and the later ones find the schema made.  The driver's own
    transaction handling is switched off for the block so the DDL really is inside that transaction.
    PostgreSQL: ``pg_advisory_xact_lock``, released by the commit or rollback.
    """
    if not is_sqlite(engine):
        with _opened(engine) as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK_KEY})
            yield conn
        return
    with _opened(engine) as conn:
        dbapi = conn.connection.dbapi_connection
        saved = dbapi.isolation_level
        dbapi.isolation_level = None  # autocommit at the driver: our BEGIN and COMMIT are the only ones
        try:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except DBAPIError as exc:
                raise _unreadable(engine, exc) from exc
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(Exception):
                    if dbapi.in_transaction:
                        dbapi.rollback()
                raise
            conn.exec_driver_sql("COMMIT")
        finally:
            dbapi.isolation_level = saved
            conn.rollback()  # SQLAlchemy's own (empty) transaction


def _stamp(conn: Connection, revision: str) -> None:
    """Record ``revision`` as Alembic does, in the caller's transaction."""
    alembic_version.create(conn, checkfirst=True)
    conn.execute(alembic_version.delete())
    conn.execute(alembic_version.insert().values(version_num=revision))


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
    package = Path(__file__).resolve().parent.parent  # ztfcat/, where the wheel puts them
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ZtfcatError(f"no Alembic migrations found next to {package}; the installation is incomplete")


def stamp_head(engine: Engine) -> None:
    """Record that a catalog is at the head revision (its tables must already be there)."""
    with _creating(engine) as conn:
        _stamp(conn, HEAD_REVISION)


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Run the migrations up to ``revision`` (``ztfcat db upgrade``) and return the new revision.

    A new database is created at head.  Tables with no revision (an older ztfcat killed between
    creating them and stamping) are checked against this ztfcat's schema, completed if some are
    missing, and stamped.  A revision this ztfcat does not know is refused: a newer ztfcat made it.
    """
    current = current_revision(engine)
    if current is None:
        repair_unstamped(engine)
        current = current_revision(engine)
        if current == HEAD_REVISION:
            return current
    if current != HEAD_REVISION and current not in known_revisions():
        _refuse_revision(engine, current)
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)
    return current_revision(engine)


def repair_unstamped(engine: Engine) -> None:
    """Create or complete and stamp a catalog that has no revision, if its tables are ztfcat's own."""
    with _creating(engine) as conn:
        if _revision(conn) is not None:
            return
        inspector = inspect(conn)
        present = set(inspector.get_table_names())
        mismatched = []
        for name in sorted(present & set(metadata.tables)):
            have = {c["name"] for c in inspector.get_columns(name)}
            want = set(metadata.tables[name].columns.keys())
            if have != want:
                mismatched.append(f"{name} (missing {sorted(want - have)}, unknown {sorted(have - want)})")
        if mismatched:
            raise SchemaOutOfDateError(
                f"{_where(engine)} has no schema revision and tables that are not this ztfcat's: "
                f"{'; '.join(mismatched)}; it cannot be stamped"
            )
        revision = HEAD_REVISION
        if not present & set(metadata.tables):
            _create_all(conn)
        else:
            if not is_sqlite(engine):  # completed unpartitioned; revision 0004 partitions what is not
                revision = "0003"
            for table in metadata.sorted_tables:
                if table.name not in present:
                    table.create(conn)
                    continue
                indexes = {ix["name"] for ix in inspector.get_indexes(table.name)}
                for index in _indexes(conn, table):
                    if index.name not in indexes:
                        index.create(conn)
            if "lightcurves" not in set(inspector.get_view_names()):
                conn.execute(text(LIGHTCURVES_VIEW))
        _stamp(conn, revision)


def _indexes(conn: Connection, table: Table) -> set:
    """The indexes ``table`` has in this catalog: a partitioned table's keys hold its partition key."""
    from .partitions import PARTITION_BY, is_partitioned, pg_table

    if conn.dialect.name != "sqlite" and table.name in PARTITION_BY and is_partitioned(conn, table.name):
        return set(pg_table(table).indexes)
    return set(table.indexes)
