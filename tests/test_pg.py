"""Tests of tests/pg.py: the per-test PostgreSQL databases the suite relies on.

The server tests need ``ZTFCAT_TEST_POSTGRES_URL`` (``eval "$(.ci/start-postgres)"``) and are skipped
without it; the pure helpers are tested everywhere.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from tests.pg import (
    DATABASE_PREFIX,
    ENV_VAR,
    _connect_kwargs,
    drop_database,
    fresh_database,
    head_database,
    new_database_name,
    postgres_url,
)

BASE_URL = postgres_url()
needs_server = pytest.mark.skipif(BASE_URL is None, reason=f"{ENV_VAR} not set (run .ci/start-postgres)")


def test_postgres_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "postgresql+psycopg://u:p@127.0.0.1:5/db")
    assert postgres_url() == "postgresql+psycopg://u:p@127.0.0.1:5/db"
    monkeypatch.setenv(ENV_VAR, "")
    assert postgres_url() is None
    monkeypatch.delenv(ENV_VAR)
    assert postgres_url() is None


def test_database_names_are_unique_and_need_no_quoting() -> None:
    names = {new_database_name() for _ in range(200)}
    assert len(names) == 200
    assert all(re.fullmatch(re.escape(DATABASE_PREFIX) + r"[0-9a-f]{16}", name) for name in names)
    assert all(len(name) <= 63 for name in names)  # PostgreSQL truncates identifiers past 63 bytes


def test_connect_kwargs_keep_a_password_with_url_special_characters() -> None:
    url = URL.create(
        "postgresql+psycopg",
        username="me",
        password="p@ss:w/rd%?",
        host="127.0.0.1",
        port=5433,
        database="base",
        query={"sslmode": "disable"},
    ).render_as_string(hide_password=False)
    assert _connect_kwargs(url) == {
        "host": "127.0.0.1",
        "port": 5433,
        "user": "me",
        "password": "p@ss:w/rd%?",
        "dbname": "base",
        "connect_timeout": 10,
        "sslmode": "disable",
    }


def test_connect_kwargs_refuse_a_non_postgres_url() -> None:
    with pytest.raises(ValueError, match="sqlite"):
        _connect_kwargs("sqlite:///x.db")


def _database_exists(name: str) -> bool:
    engine = sa.create_engine(BASE_URL)
    try:
        with engine.connect() as conn:
            found = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            return found.scalar() is not None
    finally:
        engine.dispose()


@needs_server
@pytest.mark.postgres
def test_fresh_database_is_empty_usable_and_dropped_afterwards() -> None:
    metadata = sa.MetaData()
    table = sa.Table("alert", metadata, sa.Column("candid", sa.BigInteger, primary_key=True))
    with fresh_database(BASE_URL) as url:
        parsed, base = make_url(url), make_url(BASE_URL)
        name = parsed.database
        assert name != base.database and name.startswith(DATABASE_PREFIX)
        assert (parsed.drivername, parsed.host, parsed.port, parsed.username, parsed.password) == (
            base.drivername,
            base.host,
            base.port,
            base.username,
            base.password,
        )
        engine = sa.create_engine(url)
        try:
            assert sa.inspect(engine).get_table_names() == []
            metadata.create_all(engine)
            with engine.begin() as conn:
                conn.execute(table.insert(), [{"candid": 2}, {"candid": 1}])
            with engine.connect() as conn:
                assert conn.execute(sa.select(table.c.candid).order_by("candid")).scalars().all() == [1, 2]
                assert conn.execute(sa.text("SELECT current_database()")).scalar() == name
        finally:
            engine.dispose()
        assert _database_exists(name)
    assert not _database_exists(name)


@needs_server
@pytest.mark.postgres
def test_fresh_database_is_dropped_while_a_session_is_still_connected() -> None:
    with fresh_database(BASE_URL) as url:
        name = make_url(url).database
        engine = sa.create_engine(url)
        leftover = engine.connect()
        leftover.execute(sa.text("CREATE TABLE t (x int)"))
    try:
        assert not _database_exists(name)
        with pytest.raises(sa.exc.OperationalError):
            leftover.execute(sa.text("SELECT 1"))
    finally:
        leftover.invalidate()
        engine.dispose()


@needs_server
@pytest.mark.postgres
def test_fresh_database_is_dropped_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), fresh_database(BASE_URL) as url:
        name = make_url(url).database
        raise RuntimeError("boom")
    assert not _database_exists(name)


@needs_server
@pytest.mark.postgres
def test_two_fresh_databases_do_not_see_each_others_tables() -> None:
    with fresh_database(BASE_URL) as first, fresh_database(BASE_URL) as second:
        assert first != second
        one = sa.create_engine(first)
        two = sa.create_engine(second)
        try:
            with one.begin() as conn:
                conn.execute(sa.text("CREATE TABLE only_here (x int)"))
            assert sa.inspect(one).get_table_names() == ["only_here"]
            assert sa.inspect(two).get_table_names() == []
        finally:
            one.dispose()
            two.dispose()


@needs_server
@pytest.mark.postgres
def test_dropping_a_missing_database_is_not_an_error() -> None:
    name = new_database_name()
    drop_database(BASE_URL, name)
    assert not _database_exists(name)


@needs_server
@pytest.mark.postgres
def test_head_databases_are_new_catalogs_of_their_own_and_dropped_afterwards(tmp_path) -> None:
    """Each copy holds what a first open creates on an empty database, and writing to one copy is
    not seen in the next."""
    from ztfcat import Catalog
    from ztfcat.store.db import current_revision
    from ztfcat.store.tables import HEAD_REVISION

    def tables(url: str) -> set[str]:
        engine = sa.create_engine(url)
        try:
            return set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()

    with fresh_database(BASE_URL) as url:
        with Catalog(url, tmp_path / "made") as made:
            made.count()
        expected = tables(url)
    names = []
    for _ in range(2):
        with head_database(BASE_URL) as url:
            names.append(make_url(url).database)
            assert tables(url) == expected
            engine = sa.create_engine(url)
            try:
                assert current_revision(engine) == HEAD_REVISION
                with engine.begin() as conn:
                    assert conn.execute(sa.text("SELECT count(*) FROM releases")).scalar() == 0
                    conn.execute(sa.text("INSERT INTO releases (name, status) VALUES ('x.tar.gz', 'failed')"))
            finally:
                engine.dispose()
    assert names[0] != names[1]
    assert not any(_database_exists(name) for name in names)


@needs_server
@pytest.mark.postgres
def test_head_databases_survive_a_lost_copy_connection() -> None:
    """The connection asking for copies ends (the server may restart under a long suite): the next
    copy is made on a new one."""
    from tests.pg import _COPIES

    with head_database(BASE_URL):
        pass
    copies = _COPIES[BASE_URL]
    engine = sa.create_engine(BASE_URL)
    try:
        with engine.connect() as conn:  # the server ends the session that is making the next copy
            conn.execute(
                sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": copies.conn.pgconn.backend_pid}
            )
    finally:
        engine.dispose()
    lost = copies.conn
    for _ in range(3):  # the copy asked on the lost connection may still have been made: any order
        with head_database(BASE_URL) as url:
            engine = sa.create_engine(url)
            try:
                assert "alerts" in sa.inspect(engine).get_table_names()
            finally:
                engine.dispose()
    assert copies.conn is not lost
