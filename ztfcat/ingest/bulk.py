"""The fastest bulk insert each driver offers, for the ingest's hot loop.

SQLAlchemy describes the tables and runs every other query; here the DBAPI connection is used directly,
because ``sqlite3.executemany`` with tuples is 2.4-2.8x faster than SQLAlchemy Core with dicts
(PERF-FACTS.md), and PostgreSQL's ``COPY`` into a temporary table followed by one ``INSERT ... SELECT``
beats any multi-row ``INSERT``.  Statements are built from the catalog's own column names only, never
from user values, and every identifier is quoted by the dialect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Connection, Engine, Table

from ..store.partitions import conflict_keys

#: Advisory lock key that serialises the "which alerts are new" check and insert across ingests.
ALERT_INSERT_LOCK = 0x7A7463_01


class Upsert(NamedTuple):
    """A conflict rule: on a clash of ``keys``, the row of higher ``rank`` wins, whatever the order.

    ``rank`` is a SQL row value over the table's own columns, written with ``{row}`` for the row's
    table (``excluded`` for the new one); ties go to the new row, so re-deriving the same copy is a
    no-op in effect.  ``where`` is the predicate of the partial unique index that ``keys`` name.
    Because the winner depends only on the two rows, inserting any set of rows in any order, in any
    number of transactions, leaves the same table: light curves do not depend on ingest order.
    """

    keys: tuple[str, ...]
    rank: str
    where: str | None = None


class BulkWriter:
    """Inserts rows into one catalog through one raw DBAPI connection, with commit control.

    ``on_conflict`` is ``"ignore"`` (keep the row already there) or an :class:`Upsert`.
    """

    def __init__(self, engine: Engine, within: Connection | None = None) -> None:
        self.dialect = engine.dialect
        self.sqlite = engine.dialect.name == "sqlite"
        # ``within``: write on that SQLAlchemy connection's own DBAPI connection, in its transaction
        self._fairy = engine.raw_connection() if within is None else None
        self.connection = (self._fairy or within.connection).driver_connection
        self._quote = engine.dialect.identifier_preparer.quote
        self._statements: dict[tuple, str] = {}
        self._staged: set[str] = set()
        if not self.sqlite:
            # An ingest that dies is purged and redone, so losing its last commits in a server crash
            # costs nothing; not waiting for each commit's WAL flush saves a round of disk I/O per batch.
            with self.connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit TO off")

    def _sql(self, table: Table, columns: Sequence[str], on_conflict, stage: str | None = None) -> str:
        """``INSERT`` of parameter rows, or of every row of the staging table ``stage``, with the rule."""
        key = (table.name, tuple(columns), on_conflict, stage)
        sql = self._statements.get(key)
        if sql is not None:
            return sql
        q = self._quote
        cols = ", ".join(q(c) for c in columns)
        if stage is None:
            source = "VALUES (" + ", ".join(["?" if self.sqlite else "%s"] * len(columns)) + ")"
        else:
            source = f"SELECT {cols} FROM {q(stage)}"  # noqa: S608 - the catalog's own names
        if on_conflict == "ignore":
            tail = " ON CONFLICT DO NOTHING"
        else:
            keys, rank, where = on_conflict
            if not self.sqlite:  # PostgreSQL's partitioned keys hold the partition key too
                keys = conflict_keys(table.name, keys)
            updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in columns if c not in keys)
            predicate = f" WHERE {where}" if where else ""
            tail = (
                f" ON CONFLICT ({', '.join(q(k) for k in keys)}){predicate} DO UPDATE SET {updates}"
                f" WHERE {rank.format(row='excluded')} >= {rank.format(row=q(table.name))}"
            )
        sql = f"INSERT INTO {q(table.name)} ({cols}) {source}{tail}"
        self._statements[key] = sql
        return sql

    def insert(self, table: Table, columns: Sequence[str], rows: Sequence[Sequence], on_conflict="ignore"):
        """Insert ``rows`` (tuples in ``columns`` order); no commit."""
        if not rows:
            return
        if not self.sqlite:
            self._copy_insert(table, columns, rows, on_conflict)
            return
        sql = self._sql(table, columns, on_conflict)
        cursor = self.connection.cursor()
        try:
            cursor.executemany(sql, rows)
        finally:
            cursor.close()

    def _copy_insert(
        self, table: Table, columns: Sequence[str], rows: Sequence[Sequence], on_conflict
    ) -> None:
        """PostgreSQL: COPY into a temporary twin of the table, then one INSERT ... SELECT with the
        conflict rule (COPY itself cannot skip or update existing rows)."""
        q = self._quote
        stage = f"_stage_{table.name}"
        cols = ", ".join(q(c) for c in columns)
        with self.connection.cursor() as cursor:
            if stage not in self._staged:
                cursor.execute(
                    f"CREATE TEMPORARY TABLE IF NOT EXISTS {q(stage)} (LIKE {q(table.name)} INCLUDING DEFAULTS) "
                    "ON COMMIT DELETE ROWS"
                )
                self._staged.add(stage)
            else:
                cursor.execute(f"TRUNCATE {q(stage)}")
            with cursor.copy(f"COPY {q(stage)} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(self._sql(table, columns, on_conflict, stage))

    def begin_exclusive(self) -> None:
        """Start a transaction that no other writer of new alerts runs beside.

        Checking which alerts exist and inserting the new ones must be one atomic step when several
        ingests run at once (an alert can be in two tarballs); otherwise both would store it.  SQLite takes
        its write lock up front; PostgreSQL a transaction-level advisory lock.  Both are held only for
        one batch, so decoding and inflating in each ingest stay fully parallel.
        """
        cursor = self.connection.cursor()
        try:
            if self.sqlite:
                if not self.connection.in_transaction:
                    cursor.execute("BEGIN IMMEDIATE")
            else:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (ALERT_INSERT_LOCK,))
        finally:
            cursor.close()

    def existing(
        self, table: Table, column: str, values: Sequence[int], release_id: int | None = None
    ) -> set[int]:
        """Which of ``values`` are already in ``table.column`` (an indexed key), for one release if given."""
        found: set[int] = set()
        q = self._quote
        mark = "?" if self.sqlite else "%s"
        cursor = self.connection.cursor()
        try:
            for start in range(0, len(values), 500):
                chunk = list(values[start : start + 500])
                sql = f"SELECT {q(column)} FROM {q(table.name)} WHERE {q(column)} IN ({', '.join([mark] * len(chunk))})"  # noqa: S608
                if release_id is not None:
                    sql += f" AND release_id = {mark}"
                    chunk.append(release_id)
                cursor.execute(sql, chunk)
                found.update(row[0] for row in cursor.fetchall())
        finally:
            cursor.close()
        return found

    def owners(self, candids: Sequence[int]) -> dict[int, tuple[int, str]]:
        """For those of ``candids`` already in ``alerts``: the release whose copy the row reads, and its name."""
        found: dict[int, tuple[int, str]] = {}
        mark = "?" if self.sqlite else "%s"
        cursor = self.connection.cursor()
        try:
            for start in range(0, len(candids), 500):
                chunk = list(candids[start : start + 500])
                cursor.execute(
                    "SELECT a.candid, r.id, r.name FROM alerts a JOIN releases r ON r.id = a.release_id "  # noqa: S608
                    f"WHERE a.candid IN ({', '.join([mark] * len(chunk))})",
                    chunk,
                )
                found.update((c, (i, n)) for c, i, n in cursor.fetchall())
        finally:
            cursor.close()
        return found

    def execute_core(self, statement) -> None:
        """Run a SQLAlchemy Core statement on this writer's connection, inside its transaction."""
        compiled = statement.compile(dialect=self.dialect, compile_kwargs={"render_postcompile": True})
        params = compiled.params
        args = [params[k] for k in compiled.positiontup] if compiled.positional else params
        cursor = self.connection.cursor()
        try:
            cursor.execute(str(compiled), args)
        finally:
            cursor.close()

    def commit(self) -> None:
        """Commit everything inserted since the last commit."""
        self.connection.commit()

    def rollback(self) -> None:
        """Drop everything inserted since the last commit."""
        self.connection.rollback()

    def close(self) -> None:
        """Hand the connection back to the pool (one borrowed with ``within`` stays its owner's)."""
        if self._fairy is not None:
            self._fairy.close()


def lock_alert_writes(conn: Connection) -> None:
    """Begin ``conn``'s transaction as the one writer of alerts, memberships and light curves.

    The ingest's batches take the same lock (:meth:`BulkWriter.begin_exclusive`), so a purge or a
    rebuild that reads which alerts exist, then writes, cannot interleave with a batch that adds one:
    SQLite's write lock taken up front (call first, before any statement), a transaction-level
    advisory lock on PostgreSQL.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (ALERT_INSERT_LOCK,))
