"""Ad-hoc SQL that cannot change the catalog: read-only enforced by the database, bounded in rows and time.

``ztfcat sql``, :meth:`ztfcat.Catalog.sql` and any later SQL surface (a web page) go through here.  The
rules, and where each is enforced:

* **One statement.**  :func:`single_statement` finds statement ends with a tokenizer that knows string
  literals, quoted identifiers, comments and PostgreSQL dollar quotes (so ``';'`` inside a literal is no
  end); the drivers refuse a second statement too (``sqlite3`` always, psycopg through the extended
  protocol that server-side cursors use).
* **Reads only.**  SQLite: :func:`sqlite_authorizer`, installed by :func:`guard_sqlite`, lets the statement
  compile only if every action is a read (no ATTACH, VACUUM, writing or unlisted PRAGMA, temp table,
  transaction statement or loading function); the file is also opened ``mode=ro``.  PostgreSQL: a fresh
  connection whose session default is ``READ ONLY`` (so even a statement that ended the transaction would
  start another read-only one), used once and closed; only SELECT-like statements, EXPLAIN and SHOW.
  The strongest PostgreSQL set-up also names, in ``ZTFCAT_SQL_DATABASE_URL``, a role with only SELECT
  grants for these statements to connect as (see README).
* **Bounded.**  A row cap (``max_rows``; rows are fetched in batches, so an endless result never piles up
  in memory) and a wall-clock time limit (SQLite: a progress handler; PostgreSQL: ``statement_timeout``).
* **Stoppable.**  A :class:`Cancel` set from a SIGINT handler (:func:`cancel_on_sigint`) stops a running
  statement at once: SQLite's progress handler sees it and ``interrupt()`` is called, PostgreSQL gets a
  cancel request.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidQueryError, QueryInterruptedError, QueryTimeoutError, ReadOnlyViolationError

DEFAULT_MAX_ROWS = 10_000
DEFAULT_TIME_LIMIT_S = 30.0
FETCH_BATCH = 1000
MAX_VALUE_BYTES = 16 * 2**20  # the largest string or blob one SQLite value may hold here
PROGRESS_EVERY = 10_000
#: PostgreSQL: connect ad-hoc SQL as this URL (a role with only SELECT grants) instead of the catalog's.
READER_URL_VAR = "ZTFCAT_SQL_DATABASE_URL"  # SQLite VM instructions between deadline checks: ~0.1 ms of work

# PRAGMAs that only read, and may name a table or index (``PRAGMA table_info(alerts)``).
READ_PRAGMAS_WITH_ARGUMENT = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
    }
)
# PRAGMAs that only read when given no value (``PRAGMA schema_version = 5`` writes, so never with one).
READ_PRAGMAS_BARE = frozenset(
    {
        "database_list",
        "schema_version",
        "user_version",
        "application_id",
        "data_version",
        "function_list",
        "module_list",
        "pragma_list",
        "collation_list",
        "compile_options",
        "encoding",
        "page_size",
        "page_count",
        "freelist_count",
        "journal_mode",
        "foreign_keys",
        "query_only",
    }
)
# Functions that read files, write files, load code or poke at internals; denied wherever they appear.
DENIED_FUNCTIONS = frozenset(
    {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "zipfile", "sqlar_compress"}
)

# Authorizer action codes (sqlite3.h), named for messages: the module's constants share values with
# error and limit codes, so they cannot be looked up by value.
_ACTIONS = {
    1: "CREATE INDEX",
    2: "CREATE TABLE",
    3: "CREATE TEMP INDEX",
    4: "CREATE TEMP TABLE",
    5: "CREATE TEMP TRIGGER",
    6: "CREATE TEMP VIEW",
    7: "CREATE TRIGGER",
    8: "CREATE VIEW",
    9: "DELETE",
    10: "DROP INDEX",
    11: "DROP TABLE",
    12: "DROP TEMP INDEX",
    13: "DROP TEMP TABLE",
    14: "DROP TEMP TRIGGER",
    15: "DROP TEMP VIEW",
    16: "DROP TRIGGER",
    17: "DROP VIEW",
    18: "INSERT",
    19: "PRAGMA",
    20: "READ",
    21: "SELECT",
    22: "TRANSACTION",
    23: "UPDATE",
    24: "ATTACH",
    25: "DETACH",
    26: "ALTER TABLE",
    27: "REINDEX",
    28: "ANALYZE",
    29: "CREATE VIRTUAL TABLE",
    30: "DROP VIRTUAL TABLE",
    31: "FUNCTION",
    32: "SAVEPOINT",
    33: "RECURSIVE",
}
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_temp_master", "sqlite_schema", "sqlite_temp_schema"})
_DDL_WORDS = frozenset(
    {"CREATE", "DROP", "ALTER", "TEMP", "TEMPORARY", "TABLE", "INDEX", "VIEW", "TRIGGER", "VIRTUAL"}
)
_WRITES = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 23, 26, 27, 28, 29, 30}

# Statements PostgreSQL may run here: their first keyword.  SELECT-like ones stream through a cursor.
_PG_STREAMED = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "("})
_PG_OTHERS = frozenset({"EXPLAIN", "SHOW"})
_PG_WRITES = frozenset(
    [
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "UPSERT",
        "CREATE",
        "DROP",
        "ALTER",
        "TRUNCATE",
        "COPY",
        "GRANT",
        "REVOKE",
        "VACUUM",
        "REINDEX",
        "CLUSTER",
        "REFRESH",
        "COMMENT",
        "SECURITY",
        "IMPORT",
        "LOCK",
        "CALL",
        "DO",
    ]
)


def sqlite_authorizer(action: int, arg1: str | None, arg2: str | None, db_name: str | None, trigger) -> int:
    """Allow an action of a statement being compiled only if it reads (``sqlite3`` authorizer callback).

    Allowed: SELECT, READ, RECURSIVE, functions not in :data:`DENIED_FUNCTIONS`, and the PRAGMAs of
    :data:`READ_PRAGMAS_WITH_ARGUMENT` (with or without an argument) and :data:`READ_PRAGMAS_BARE` (only
    without one).  Everything else, including ATTACH (which VACUUM INTO also asks for), DETACH,
    transaction statements and every write, is denied, so the statement does not compile.
    """
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name in READ_PRAGMAS_WITH_ARGUMENT or (name in READ_PRAGMAS_BARE and arg2 is None):
            return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master" and db_name == "main" and trigger is None:
        # Asked when a table-valued PRAGMA function (``pragma_table_info('alerts')``) declares its
        # columns; nothing is written.  A real UPDATE of the schema table needs writable_schema, a
        # PRAGMA refused above, and the file is open read-only besides.
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def describe_denial(action: int, arg1: str | None, arg2: str | None, statement: str = "") -> str:
    """What a denied action was, in words, for a one-line error."""
    if action == sqlite3.SQLITE_PRAGMA:
        what = f"PRAGMA {arg1}" + (f" = {arg2}" if arg2 is not None else "")
        return f"not allowed in read-only SQL: {what}"
    if action == sqlite3.SQLITE_FUNCTION:
        return f"not allowed in read-only SQL: function {arg2}()"
    if action == sqlite3.SQLITE_ATTACH and first_keyword(statement) == "VACUUM":
        return "not allowed in read-only SQL: VACUUM"
    if action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT):
        return f"not allowed in read-only SQL: {first_keyword(statement) or arg1}"
    name = _ACTIONS.get(action, f"action {action}")
    if (
        action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)
        and arg1 in _SCHEMA_TABLES
    ):
        # CREATE/DROP first ask to write the schema table: name the statement, not that write
        name = _ddl_words(statement) or name
    if action in _WRITES:
        return f"writes are not allowed (read-only catalog): {name}"
    return f"not allowed in read-only SQL: {name}"


def _ddl_words(statement: str) -> str:
    """'CREATE TEMP TABLE' from 'create temp table t (x)': the words that say what DDL a statement is."""
    words = [w.upper() for w in re.findall(r"[A-Za-z_]+", statement)[:3]]
    return " ".join(w for w in words if w in _DDL_WORDS)


class Cancel:
    """A flag that stops running statements: set it from a signal handler or another thread.

    Statements register a hook (``conn.interrupt`` for SQLite, a cancel request for PostgreSQL) that
    :meth:`set` calls, so a statement busy inside the database stops without waiting for it.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._hooks: list[Callable[[], Any]] = []

    def set(self) -> None:
        self._event.set()
        for hook in list(self._hooks):
            with contextlib.suppress(Exception):  # a connection that has just closed
                hook()

    def is_set(self) -> bool:
        return self._event.is_set()

    @contextlib.contextmanager
    def hooked(self, hook: Callable[[], Any]) -> Iterator[None]:
        self._hooks.append(hook)
        try:
            if self.is_set():
                hook()
            yield
        finally:
            self._hooks.remove(hook)


@contextlib.contextmanager
def cancel_on_sigint(cancel: Cancel) -> Iterator[Cancel]:
    """Within the block, Ctrl-C sets ``cancel`` instead of raising KeyboardInterrupt (main thread only).

    A second Ctrl-C raises KeyboardInterrupt as usual, should a statement somehow not stop.
    """
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def handler(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _Guard:
    deadline: float | None
    cancel: Cancel | None
    denial: str | None = None
    statement: str = ""
    timed_out: bool = field(default=False)

    def progress(self) -> int:
        if self.cancel is not None and self.cancel.is_set():
            return 1
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out = True
            return 1
        return 0


def guard_sqlite(conn: sqlite3.Connection, *, time_limit_s: float | None, cancel: Cancel | None = None):
    """Make ``conn`` read-only and bounded: the authorizer, and a progress handler for time and Ctrl-C.

    Returns the guard, whose ``denial`` says what the authorizer refused last (for messages).  The time
    limit counts from this call.
    """
    guard = _Guard(deadline=time.monotonic() + time_limit_s if time_limit_s else None, cancel=cancel)

    def authorize(action, arg1, arg2, db_name, trigger):
        verdict = sqlite_authorizer(action, arg1, arg2, db_name, trigger)
        if verdict != sqlite3.SQLITE_OK:
            guard.denial = describe_denial(action, arg1, arg2, guard.statement)
        return verdict

    conn.set_authorizer(authorize)
    conn.set_progress_handler(guard.progress, PROGRESS_EVERY)
    # No single value (randomblob(1e9), a group_concat of everything) may take more than this: the
    # default, 1 GB, would let one row exhaust memory.
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    return guard


def connect_sqlite_readonly(path: str | Path) -> sqlite3.Connection:
    """A connection to a SQLite file opened ``mode=ro`` (no file is created), in autocommit mode."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise InvalidQueryError(f"cannot open {path} read-only: {exc}") from exc


# -- statements ------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<line>--[^\n]*)
    | (?P<block>/\*)
    | (?P<dollar>\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$)
    | (?P<string>[eE]?'(?:[^']|'')*')
    | (?P<ident>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])
    | (?P<semi>;)
    | (?P<word>[A-Za-z_][A-Za-z_0-9]*)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPED_STRING = re.compile(r"[eE]'(?:[^'\\]|\\.|'')*'", re.DOTALL)


def _tokens(sql: str, dialect: str) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) of each token; raises on an unterminated literal or comment."""
    pos = 0
    while pos < len(sql):
        if sql[pos] in "eE" and sql[pos + 1 : pos + 2] == "'" and dialect == "postgresql":
            found = _ESCAPED_STRING.match(sql, pos)
            if found is None:
                raise InvalidQueryError("SQL failed: unterminated string literal")
            yield "string", pos, found.end()
            pos = found.end()
            continue
        found = _TOKEN.match(sql, pos)
        assert found is not None  # "other" matches any character
        kind = found.lastgroup or "other"
        end = found.end()
        if kind == "block":
            end = _block_comment_end(sql, pos, nested=dialect == "postgresql")
            kind = "comment"
        elif kind == "line":
            kind = "comment"
        elif kind == "dollar":
            if dialect == "postgresql":
                close = sql.find(found.group(), end)
                if close < 0:
                    raise InvalidQueryError("SQL failed: unterminated dollar-quoted string")
                end = close + len(found.group())
                kind = "string"
            else:
                kind, end = "other", pos + 1
        elif kind == "ident" and dialect == "postgresql" and sql[pos] in "[`":
            kind, end = "other", pos + 1  # brackets are array subscripts there, backticks operators
        elif kind == "string" and not found.group().endswith("'"):
            raise InvalidQueryError("SQL failed: unterminated string literal")
        elif kind == "other" and sql[pos] in ("'\"" if dialect == "postgresql" else "'\"`["):
            raise InvalidQueryError("SQL failed: unterminated quoted string or identifier")
        yield kind, pos, end
        pos = end


def _block_comment_end(sql: str, start: int, *, nested: bool) -> int:
    depth, pos = 0, start
    while pos < len(sql):
        if sql.startswith("/*", pos):
            depth = depth + 1 if (nested or depth == 0) else depth
            pos += 2
        elif sql.startswith("*/", pos):
            depth -= 1
            pos += 2
            if depth == 0:
                return pos
        else:
            pos += 1
    return len(sql)  # SQLite and PostgreSQL both end an open comment at the end of input


def single_statement(sql: str, dialect: str = "sqlite") -> str:
    """``sql`` without its trailing semicolon and comments; InvalidQueryError if it holds two statements."""
    end = last = 0
    seen_semicolon = False
    for kind, start, stop in _tokens(sql, dialect):
        if kind in ("space", "comment"):
            continue
        if kind == "semi":
            if not seen_semicolon:
                end, seen_semicolon = start, True
            continue
        if seen_semicolon:
            raise InvalidQueryError(
                "only one statement at a time is allowed; found another after the first ';'"
            )
        last = stop
    if not seen_semicolon:
        end = last
    body = sql[:end].strip()
    if not body:
        raise InvalidQueryError("empty SQL statement")
    return body


def first_keyword(sql: str, dialect: str = "sqlite") -> str:
    """The statement's first word, upper-cased ('(' for a parenthesised query), or '' if none."""
    try:
        for kind, start, stop in _tokens(sql, dialect):
            if kind in ("space", "comment"):
                continue
            return sql[start:stop].upper() if kind in ("word", "other") else ""
    except InvalidQueryError:
        return ""
    return ""


# -- running ---------------------------------------------------------------------------------------
@dataclass
class SqlResult:
    """The columns of a running read-only statement and its rows, fetched in batches as they are read.

    ``truncated`` becomes True once iteration stops at ``max_rows`` with rows left over.
    """

    columns: list[str]
    max_rows: int
    _batches: Callable[[], list[tuple]]
    _cancel: Cancel | None = None
    truncated: bool = False
    n_rows: int = 0

    def __iter__(self) -> Iterator[tuple]:
        while True:
            if self._cancel is not None and self._cancel.is_set():
                raise QueryInterruptedError("interrupted (Ctrl-C); nothing was changed")
            batch = self._batches()
            if not batch:
                return
            for row in batch:
                if self.max_rows and self.n_rows >= self.max_rows:
                    self.truncated = True
                    return
                self.n_rows += 1
                yield tuple(row)


@contextlib.contextmanager
def run_readonly(
    engine,
    statement: str,
    params: dict | None = None,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    time_limit_s: float | None = DEFAULT_TIME_LIMIT_S,
    cancel: Cancel | None = None,
) -> Iterator[SqlResult]:
    """Run one read-only statement on the catalog of ``engine``; yields a :class:`SqlResult` to iterate.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The catalog's engine; only its URL is used: the statement gets a connection of its own.
    statement : str
        One SQL statement; ``:name`` placeholders take ``params``.
    max_rows : int
        Stop after this many rows (0: no cap; the caller must then consume rows as they come).
    time_limit_s : float or None
        Stop the statement after this many seconds of wall-clock time (None or 0: no limit).
    cancel : Cancel, optional
        Setting it (e.g. from :func:`cancel_on_sigint`) stops the statement at once.

    Raises
    ------
    ReadOnlyViolationError, QueryTimeoutError, QueryInterruptedError, InvalidQueryError
    """
    if max_rows < 0:
        raise InvalidQueryError(f"max_rows must be 0 (no cap) or positive, not {max_rows}")
    time_limit_s = time_limit_s or None
    if engine.dialect.name == "sqlite":
        runner = _run_sqlite
    elif engine.dialect.name == "postgresql":
        runner = _run_postgres
    else:
        raise InvalidQueryError(f"read-only SQL is not supported on {engine.dialect.name}")
    with runner(engine, statement, params or {}, max_rows, time_limit_s, cancel) as result:
        yield result


@contextlib.contextmanager
def _run_sqlite(engine, statement, params, max_rows, time_limit_s, cancel):
    body = single_statement(statement, "sqlite")
    path = engine.url.database
    if not path or path == ":memory:":
        raise InvalidQueryError("read-only SQL needs a SQLite file, not an in-memory database")
    conn = connect_sqlite_readonly(path)
    guard = guard_sqlite(conn, time_limit_s=time_limit_s, cancel=cancel)
    guard.statement = body

    def translate(exc: sqlite3.Error) -> Exception:
        if cancel is not None and cancel.is_set():
            return QueryInterruptedError("interrupted (Ctrl-C); nothing was changed")
        if guard.timed_out:
            return QueryTimeoutError(f"stopped at the time limit of {time_limit_s:g} s (--timeout)")
        if guard.denial and ("not authorized" in str(exc) or "authorization denied" in str(exc)):
            return ReadOnlyViolationError(guard.denial)
        if "readonly database" in str(exc):
            return ReadOnlyViolationError(
                f"writes are not allowed (read-only catalog): {first_keyword(body)}"
            )
        return InvalidQueryError(f"SQL failed: {exc}")

    try:
        with contextlib.ExitStack() as stack:
            stack.callback(conn.close)
            if cancel is not None:
                stack.enter_context(cancel.hooked(conn.interrupt))
            try:
                cursor = conn.execute(body, params)
            except sqlite3.Error as exc:
                raise translate(exc) from exc
            except (ValueError, sqlite3.Warning) as exc:  # e.g. a second statement the tokenizer missed
                raise InvalidQueryError(f"SQL failed: {exc}") from exc

            def batches() -> list[tuple]:
                try:
                    return cursor.fetchmany(FETCH_BATCH)
                except sqlite3.Error as exc:
                    raise translate(exc) from exc

            names = [d[0] for d in cursor.description or ()]
            yield SqlResult(names, max_rows, batches if names else list, cancel)
    except sqlite3.Error as exc:  # closing, or a late error
        raise translate(exc) from exc


def _reader_url(engine) -> str:
    """Where PostgreSQL ad-hoc SQL connects: ``ZTFCAT_SQL_DATABASE_URL`` (a role with SELECT grants
    only, the strongest set-up), else the catalog's own URL; as a libpq URI."""
    from sqlalchemy.engine import make_url

    configured = os.environ.get(READER_URL_VAR) or None
    url = make_url(configured) if configured else engine.url
    if not url.drivername.startswith("postgresql"):
        raise InvalidQueryError(f"{READER_URL_VAR} must be a postgresql URL, not {url.drivername}")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def _run_postgres(engine, statement, params, max_rows, time_limit_s, cancel):
    import psycopg
    from psycopg import errors as pgerrors
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    body = single_statement(statement, "postgresql")
    keyword = first_keyword(body, "postgresql")
    if keyword in _PG_WRITES:
        what = _ddl_words(body) if keyword in ("CREATE", "DROP", "ALTER") else keyword
        raise ReadOnlyViolationError(f"writes are not allowed (read-only catalog): {what or keyword}")
    if keyword not in _PG_STREAMED | _PG_OTHERS:
        raise ReadOnlyViolationError(
            f"not allowed in read-only SQL: {keyword or 'that statement'} (only SELECT, WITH, VALUES, "
            "TABLE, EXPLAIN and SHOW)"
        )
    if params:
        compiled = text(body).compile(dialect=engine.dialect)
        query, args = str(compiled), {**compiled.params, **params}
    else:
        query, args = body, None
    url = _reader_url(engine)
    deadline = time.monotonic() + time_limit_s if time_limit_s else None

    def translate(exc: Exception) -> Exception:
        if cancel is not None and cancel.is_set():
            return QueryInterruptedError("interrupted (Ctrl-C); nothing was changed")
        if isinstance(exc, pgerrors.QueryCanceled):
            return QueryTimeoutError(f"stopped at the time limit of {time_limit_s:g} s (--timeout)")
        if isinstance(exc, pgerrors.ReadOnlySqlTransaction):
            return ReadOnlyViolationError(f"writes are not allowed (read-only catalog): {exc}".strip())
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return InvalidQueryError(f"SQL failed: {message}")

    def set_timeout(cur) -> None:
        if deadline is not None:
            remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
            cur.execute(f"SET LOCAL statement_timeout = {remaining_ms}")  # an int we computed

    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        where = make_url(url).render_as_string(hide_password=True)
        raise InvalidQueryError(f"cannot connect to {where} for read-only SQL: {reason}") from exc
    with contextlib.ExitStack() as stack:
        stack.callback(conn.close)  # the session's settings die with it; it never returns to a pool
        if cancel is not None:
            stack.enter_context(cancel.hooked(conn.cancel))
        try:
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            conn.execute("SET default_transaction_read_only = on")
            conn.autocommit = False
            conn.execute("BEGIN READ ONLY")  # psycopg would BEGIN anyway; say what we mean
            control = conn.cursor()
            set_timeout(control)
            if keyword in _PG_STREAMED:
                cursor = conn.cursor(name="ztfcat_sql")  # DECLARE ... CURSOR: one SELECT, streamed
                cursor.execute(query, args)
            else:
                cursor = conn.cursor()
                cursor.execute(query, args, prepare=True)  # the extended protocol: one statement only
            names = [d.name for d in cursor.description or ()]
        except psycopg.Error as exc:
            raise translate(exc) from exc

        def batches() -> list[tuple]:
            try:
                set_timeout(control)
                return cursor.fetchmany(FETCH_BATCH)
            except psycopg.Error as exc:
                raise translate(exc) from exc

        try:
            yield SqlResult(names, max_rows, batches if names else list, cancel)
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
