"""How the CLI writes results: aligned tables for people, CSV and JSON lines for programs.

Tables are for reading, so floats are rounded (six decimals: a milliarcsecond in ra/dec, a tenth of a
second in jd) and headers are red on a terminal; CSV and JSON carry every digit the catalog holds.
Nothing here imports astropy or numpy at import: a query command that prints a few rows should not pay for
them (an astropy Table handed in is read through its own attributes; only :func:`emit_tables`, which stacks
tables, loads astropy when it runs).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click

#: Decimals of a float in an aligned table.
DECIMALS = 6


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 release``, ``2 releases``: the count and the noun that fits it."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def human_bytes(n: float) -> str:
    """``532 B``, ``1.5 MB``: a size in decimal units, as the archive's listing gives them."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def plain(value: Any) -> Any:
    """A cell as JSON carries it: numpy scalars as Python, masked and NaN as None, bytes decoded."""
    if value is None:
        return None
    if getattr(value, "mask", False) is True or (hasattr(value, "mask") and bool(value.mask)):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value != value:
        return None
    return value


def display(value: Any, spec: str | None = None) -> str:
    """A cell as an aligned table shows it: floats rounded, nulls blank."""
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if spec:
            return format(value, spec)
        if math.isinf(value):
            return str(value)
        if value != 0 and abs(value) < 10**-3:
            return f"{value:.3e}"
        return f"{value:.{DECIMALS}f}"
    if spec and isinstance(value, int):
        return format(value, spec)
    return str(value)


def table_columns(table) -> tuple[list[str], list[tuple], dict[str, str]]:
    """Names, rows and display formats of an astropy Table, without importing astropy."""
    names = list(table.colnames)
    formats = {n: table[n].format for n in names if isinstance(getattr(table[n], "format", None), str)}
    rows = [tuple(row[n] for n in names) for row in table]
    return names, rows, formats


def emit_rows(
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str = "table",
    formats: dict[str, str] | None = None,
) -> None:
    """Write rows to stdout as an aligned table, CSV or JSON lines (one object per row)."""
    if fmt == "csv":
        out = sys.stdout
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        for row in rows:
            writer.writerow(["" if plain(v) is None else _full(plain(v)) for v in row])
        return
    if fmt == "json":
        for row in rows:
            click.echo(json.dumps({n: plain(v) for n, v in zip(names, row, strict=True)}))
        return
    if not rows:
        click.echo("(no rows)")
        return
    formats = formats or {}
    cells = [[display(v, formats.get(n)) for n, v in zip(names, row, strict=True)] for row in rows]
    numeric = [
        all(isinstance(plain(r[i]), int | float) or plain(r[i]) is None for r in rows)
        for i in range(len(names))
    ]
    widths = [max(len(names[i]), *(len(c[i]) for c in cells)) for i in range(len(names))]
    click.echo(_line(names, widths, numeric, style=True), color=_colour())
    click.echo(" ".join("-" * w for w in widths))
    for c in cells:
        click.echo(_line(c, widths, numeric))


def _line(values: Sequence[str], widths: list[int], numeric: list[bool], style: bool = False) -> str:
    """One line of an aligned table: numbers right-aligned, text left-aligned, no trailing blanks."""
    parts = []
    last = len(values) - 1
    for i, value in enumerate(values):
        width = 0 if i == last and not numeric[i] else widths[i]  # no trailing blanks
        padded = value.rjust(width) if numeric[i] else value.ljust(width)
        parts.append(click.style(padded, fg="red", bold=True) if style else padded)
    return " ".join(parts).rstrip()


def emit_table(table, fmt: str) -> None:
    """Write an astropy Table to stdout as an aligned table, CSV or JSON lines."""
    names, rows, formats = table_columns(table)
    emit_rows(names, rows, fmt, formats)


def emit_tables(tables: Iterable, fmt: str) -> None:
    """Write astropy Tables one after the other as one CSV (one header), JSON lines, or one aligned table.

    CSV and JSON are written table by table as they arrive (``ztfcat xmatch`` streams a million-row
    match this way, in bounded memory); an aligned table needs every width, so it is stacked first.
    """
    if fmt == "table":
        from astropy.table import Table, vstack

        parts = [t for t in tables if len(t)]
        emit_table(vstack(parts, metadata_conflicts="silent") if parts else Table(), fmt)
        return
    first = True
    for table in tables:
        if fmt == "json":
            emit_table(table, fmt)
            continue
        if not len(table) and not first:
            continue
        buffer = io.StringIO()
        table.write(buffer, format="ascii.csv")
        text = buffer.getvalue()
        sys.stdout.write(text if first else text.split("\n", 1)[1] if "\n" in text else "")
        first = False


def _full(value: Any) -> Any:
    return repr(value) if isinstance(value, float) else value


def _colour() -> bool | None:
    """Colour only onto a terminal (click strips it from pipes and files); ``NO_COLOR`` turns it off."""
    import os

    return False if os.environ.get("NO_COLOR") else None
