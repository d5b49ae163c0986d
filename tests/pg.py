"""PostgreSQL helpers for the test suite: find the test server, hand each test its own database.

The server is the throw-away one started by ``.ci/start-postgres`` (CI does it in ``.ci/run``); its
SQLAlchemy URL arrives in ``ZTFCAT_TEST_POSTGRES_URL``.  Without that variable the PostgreSQL tests are
skipped, so the suite still runs on a machine with no server.

Each test gets a database of its own, created on the server and dropped afterwards, so tests can run
migrations and write freely without seeing each other's tables, and a failed test leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ENV_VAR = "ZTFCAT_TEST_POSTGRES_URL"
DATABASE_PREFIX = "ztfcat_t_"
CONNECT_TIMEOUT_S = 10


def postgres_url() -> str | None:
    """The test server's SQLAlchemy URL from ``ZTFCAT_TEST_POSTGRES_URL``, or ``None`` when it is unset.

    An empty value counts as unset, so ``ZTFCAT_TEST_POSTGRES_URL=`` turns the PostgreSQL tests off.
    """
    return os.environ.get(ENV_VAR) or None


def new_database_name() -> str:
    """A database name no other test uses: a fixed prefix and 16 random hex digits.

    Generated, never taken from input, and lower-case ASCII, so it needs no quoting (it is quoted anyway).
    """
    return DATABASE_PREFIX + uuid.uuid4().hex[:16]


def _connect_kwargs(url: str) -> dict[str, Any]:
    """psycopg connection keywords for the database named in a SQLAlchemy ``url``.

    Keywords rather than a URI string, so a password with URL-special characters needs no escaping; the
    URL's query parameters (``sslmode=...``) pass through as libpq options.
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        raise ValueError(f"{ENV_VAR} must be a postgresql URL, got driver {parsed.drivername!r}")
    options: dict[str, Any] = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
        "connect_timeout": CONNECT_TIMEOUT_S,
    }
    options.update({key: value for key, value in parsed.query.items() if isinstance(value, str)})
    return {key: value for key, value in options.items() if value is not None}


def _with_database(url: str, name: str) -> str:
    """``url`` with its database replaced by ``name``, password kept (the result is used to connect)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str, name: str) -> None:
    """Drop database ``name`` on the server of ``url``, even while sessions are still connected to it.

    Tests often leave a pooled engine behind; ``WITH (FORCE)`` (PostgreSQL 13+) ends those sessions
    instead of failing with "database is being accessed by other users".  Dropping a database that is
    already gone is not an error.
    """
    import psycopg
    from psycopg import sql

    with psycopg.connect(**_connect_kwargs(url), autocommit=True) as conn:
        conn.execute(
            # Our own sessions only: an autovacuum worker is a superuser's, which this role may not
            # signal ("must be a superuser to terminate superuser process"); DROP DATABASE stops it.
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
            " AND pid <> pg_backend_pid() AND usename = current_user",
            (name,),
        )
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        for attempt in range(20):
            try:
                conn.execute(drop)
                return
            except psycopg.errors.InsufficientPrivilege:
                # FORCE may not signal an autovacuum worker (a superuser's), which a catalog's ~1,700
                # new relations keep busy: it ends on its own, or plain DROP DATABASE cancels it.
                if attempt == 19:
                    raise
                time.sleep(0.25)
                with contextlib.suppress(psycopg.errors.ObjectInUse):
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                    return


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """Create an empty database on the server of ``url``, yield its SQLAlchemy URL, then drop it.

    Parameters
    ----------
    url
        SQLAlchemy URL of the test server (normally :func:`postgres_url`).  Its database is only used to
        issue ``CREATE DATABASE``/``DROP DATABASE``; its role needs the ``CREATEDB`` right.

    Yields
    ------
    str
        The URL of the new database: same driver, role, host and port as ``url``.

    Notes
    -----
    ``CREATE DATABASE`` cannot run inside a transaction, hence the autocommit psycopg connection.  The
    database is dropped even when the body raises.
    """
    import psycopg
    from psycopg import sql

    name = new_database_name()
    with psycopg.connect(**_connect_kwargs(url), autocommit=True) as conn:
        # template0: nobody connects to it, so two test runs creating databases at once never collide
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield _with_database(url, name)
    finally:
        drop_database(url, name)


_HEAD_TEMPLATES: dict[str, str] = {}


def head_template(url: str) -> str:
    """The name of a database holding a new, empty catalog at head, made once per test session.

    A new PostgreSQL catalog creates ~250 partitions (ztfcat.store.partitions), seconds of DDL; copying a
    template's files (``STRATEGY FILE_COPY``) takes a fraction of that.  Nobody stays connected to the
    template, so copies of it never fail with "being accessed by other users".
    """
    name = _HEAD_TEMPLATES.get(url)
    if name is None:
        import atexit

        from sqlalchemy import create_engine

        from ztfcat.store.db import ensure_schema

        name = new_database_name()
        import psycopg
        from psycopg import sql

        with psycopg.connect(**_connect_kwargs(url), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        engine = create_engine(_with_database(url, name))
        try:
            ensure_schema(engine)
        finally:
            engine.dispose()
        atexit.register(drop_database, url, name)
        _HEAD_TEMPLATES[url] = name
    return name


class _CopiesAhead:
    """Copies of :func:`head_template`, each made by the server while the test before it runs.

    A copy takes the server about two seconds (~1,700 relations), and some 280 tests want one; a copy
    is asked for with libpq's asynchronous ``send_query`` as the last one is handed out, so the server
    makes it on the core the test leaves idle, and the next test only collects the result.  No thread:
    the one connection is used from the test's own thread.  A process a test forks inherits its socket
    but never uses it (:meth:`close` does nothing outside the process that opened it).
    """

    def __init__(self, url: str) -> None:
        import atexit

        import psycopg

        self.url = url
        self.template = head_template(url)
        self.conn = psycopg.connect(**_connect_kwargs(url), autocommit=True)
        self.pending: str | None = None
        self.pid = os.getpid()
        atexit.register(self.close)

    def _ask(self) -> None:
        from psycopg import sql

        name = new_database_name()
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(self.template)
        )
        self.conn.pgconn.send_query(query.as_bytes(self.conn))
        self.pending = name

    def _collect(self) -> str:
        from psycopg import pq

        name, self.pending = self.pending, None
        error = None
        while (result := self.conn.pgconn.get_result()) is not None:
            if result.status != pq.ExecStatus.COMMAND_OK:
                error = (result.error_message or b"").decode("utf-8", "replace").strip()
        if error or name is None:
            raise RuntimeError(f"copying the head catalog {self.template} failed: {error}")
        return name

    def take(self) -> str:
        """The name of a new database holding an empty catalog at head; the caller drops it.

        Should the connection have been lost (a server restarted under it), a new one makes the copy
        again, once, rather than failing every later test."""
        try:
            if self.pending is None:
                self._ask()
            name = self._collect()
        except Exception:  # noqa: BLE001 - anything but a good copy: start over on a new connection
            import psycopg

            with contextlib.suppress(Exception):
                self.conn.close()
            self.pending = None
            self.conn = psycopg.connect(**_connect_kwargs(self.url), autocommit=True)
            self._ask()
            name = self._collect()
        self._ask()
        return name

    def close(self) -> None:
        if os.getpid() != self.pid:
            return  # a forked child's exit: the connection is the parent's
        with contextlib.suppress(Exception):
            if self.pending is not None:
                drop_database(self.url, self._collect())
        with contextlib.suppress(Exception):
            self.conn.close()


_COPIES: dict[str, _CopiesAhead] = {}


@contextmanager
def head_database(url: str) -> Iterator[str]:
    """Like :func:`fresh_database`, but the database already holds an empty catalog at head, as
    :meth:`ztfcat.Catalog` would create it (``tests/test_partitions.py`` holds the two to be equal)."""
    copies = _COPIES.get(url)
    if copies is None:
        copies = _COPIES[url] = _CopiesAhead(url)
    name = copies.take()
    try:
        yield _with_database(url, name)
    finally:
        drop_database(url, name)
