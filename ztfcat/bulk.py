"""The fastest bulk insert each driver offers, for the ingest's hot loop.

SQLAlchemy describes the tables and runs every other query; here the DBAPI connection is used directly,
because ``sqlite3.executemany`` with tuples is 2.4-2.8x faster than SQLAlchemy Core with dicts
(PERF-FACTS.md), and PostgreSQL's ``COPY`` into a temporary table followed by one ``INSERT ... SELECT``
beats any multi-row ``INSERT``.  Statements are built from the catalog's own column names only, never
from user values, and every identifier is quoted by the dialect.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, Table

#: Advisory lock key that serialises the "which alerts are new" check and insert across ingests.
ALERT_INSERT_LOCK = 0x7A7463_01


class BulkWriter:
    """Inserts rows into one catalog through one raw DBAPI connection, with commit control.

    ``on_conflict`` is ``"ignore"`` (keep the row already there) or a tuple
    ``(key_columns, newer_column)`` to update the existing row when the new one's ``newer_column`` is
    larger (used for forced photometry, where the newest alert's values win).
    """

    def __init__(self, engine: Engine) -> None:
        self.dialect = engine.dialect
        self.sqlite = engine.dialect.name == "sqlite"
        self._fairy = engine.raw_connection()
        self.connection = self._fairy.driver_connection
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
            keys, newer = on_conflict
            updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in columns if c not in keys)
            tail = (
                f" ON CONFLICT ({', '.join(q(k) for k in keys)}) DO UPDATE SET {updates}"
                f" WHERE excluded.{q(newer)} > {q(table.name)}.{q(newer)}"
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

    def existing(self, table: Table, column: str, values: Sequence[int]) -> set[int]:
        """Which of ``values`` are already in ``table.column`` (an indexed key)."""
        found: set[int] = set()
        cursor = self.connection.cursor()
        try:
            for start in range(0, len(values), 500):
                chunk = values[start : start + 500]
                marks = ", ".join(["?" if self.sqlite else "%s"] * len(chunk))
                cursor.execute(
                    f"SELECT {self._quote(column)} FROM {self._quote(table.name)} "  # noqa: S608
                    f"WHERE {self._quote(column)} IN ({marks})",
                    chunk,
                )
                found.update(row[0] for row in cursor.fetchall())
        finally:
            cursor.close()
        return found

    def commit(self) -> None:
        """Commit everything inserted since the last commit."""
        self.connection.commit()

    def rollback(self) -> None:
        """Drop everything inserted since the last commit."""
        self.connection.rollback()

    def close(self) -> None:
        """Hand the connection back to the pool."""
        self._fairy.close()
