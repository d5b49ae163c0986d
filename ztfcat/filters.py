"""Filters without SQL: conditions on any alert column, checked against the schema, values bound.

Two spellings, usable everywhere (``Catalog.query``, ``iter_alerts``, ``get_local_alert_list``, the
CLI's ``--where``):

- condition strings ``"rb > 0.9"``, ``"fid = 1"``, ``"objectId = ZTF18abcdefg"``, ``"ssnamenr is null"``,
  ``"fid in 1,2"``, ``"objectId like ZTF18%"``;
- keywords: ``fid=1`` (equality), ``jd=(2458349.5, 2458350.5)`` (an inclusive range, either end may be
  None), ``fid=[1, 2]`` (any of), plus ``night=`` (a date or a range of dates), ``release=`` (file name).

Column names are looked up in the ``alerts`` table (an unknown one is an :class:`InvalidQueryError`
naming it); values always travel as bound parameters, never as SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, select

from .errors import InvalidQueryError
from .tables import alerts, releases

_CONDITION = re.compile(
    r"^\s*(?P<col>[A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?P<op><=|>=|!=|<>|==|=|<|>|\bnot\s+like\b|\blike\b|\bnot\s+in\b|\bin\b|\bis\s+not\b|\bis\b)\s*"
    r"(?P<value>.*?)\s*$",
    re.IGNORECASE,
)
_OPS = {
    "=": "__eq__",
    "==": "__eq__",
    "!=": "__ne__",
    "<>": "__ne__",
    "<": "__lt__",
    "<=": "__le__",
    ">": "__gt__",
    ">=": "__ge__",
}


def column(name: str, table: Table = alerts):
    """The column called ``name`` (ZTF spelling; case-insensitive fallback), or a clear error."""
    if name in table.c:
        return table.c[name]
    folded = {c.name.lower(): c for c in table.c}
    if name.lower() in folded:
        return folded[name.lower()]
    raise InvalidQueryError(
        f"unknown column {name!r} in {table.name}; columns are ZTF candidate fields such as "
        "jd, fid, ra, dec, magpsf, rb, drb, programid, plus candid, objectId, schemavsn, release_id"
    )


def _value(text: str, col) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    python_type = _python_type(col)
    if python_type is str:
        return text
    try:
        if python_type is int:
            return int(text)
        return float(text)
    except ValueError:
        if text.lower() in ("true", "false") and python_type is bool:
            return text.lower() == "true"
        raise InvalidQueryError(f"{col.name} takes a number, not {text!r}") from None


def _python_type(col) -> type:
    try:
        return col.type.python_type
    except NotImplementedError:
        return str


def parse_condition(text: str, table: Table = alerts) -> ColumnElement[bool]:
    """One condition string as a SQL expression with bound values."""
    match = _CONDITION.match(text)
    if not match:
        raise InvalidQueryError(
            f"cannot read the condition {text!r}; write it as COLUMN OP VALUE, e.g. 'rb > 0.9'"
        )
    col = column(match["col"], table)
    op = " ".join(match["op"].lower().split())
    raw = match["value"]
    if op in ("is", "is not"):
        if raw.lower() != "null":
            raise InvalidQueryError(f"{text!r}: only 'is null' and 'is not null' are allowed")
        return col.is_(None) if op == "is" else col.is_not(None)
    if op in ("in", "not in"):
        values = [_value(v, col) for v in raw.strip("()").split(",") if v.strip()]
        if not values:
            raise InvalidQueryError(f"{text!r}: 'in' needs at least one value")
        return col.in_(values) if op == "in" else col.not_in(values)
    if op in ("like", "not like"):
        value = _value(raw, col)
        return col.like(str(value)) if op == "like" else col.not_like(str(value))
    if not raw:
        raise InvalidQueryError(f"{text!r} has no value")
    return getattr(col, _OPS[op])(_value(raw, col))


def as_date(value: Any) -> date:
    """A night from a date, a datetime or text (``2018-08-19`` or ``20180819``)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise InvalidQueryError(f"cannot read a night from {value!r}; use YYYY-MM-DD")


def _keyword(name: str, value: Any) -> ColumnElement[bool]:
    if name == "night":
        lo, hi = value if isinstance(value, tuple | list) else (value, value)
        night = releases.c.night
        conds = []
        if lo is not None:
            conds.append(night >= as_date(lo))
        if hi is not None:
            conds.append(night <= as_date(hi))
        return alerts.c.release_id.in_(select(releases.c.id).where(and_(*conds)))
    if name == "release":
        names = [value] if isinstance(value, str) else list(value)
        return alerts.c.release_id.in_(select(releases.c.id).where(releases.c.name.in_(names)))
    col = column(name)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise InvalidQueryError(f"{name}=(low, high) takes two values, got {value!r}")
        lo, hi = value
        if lo is not None and hi is not None and lo > hi:
            raise InvalidQueryError(f"{name}=({lo}, {hi}) is the wrong way round: the start is after the end")
        conds = [c for c in (lo is not None and col >= lo, hi is not None and col <= hi) if c is not False]
        return and_(*conds) if conds else col.is_not(None)
    if isinstance(value, list | set | frozenset):
        return col.in_(list(value))
    if value is None:
        return col.is_(None)
    return col == value


def where_clauses(conditions: Iterable[str] = (), keywords: Mapping[str, Any] | None = None) -> list:
    """Every condition and keyword filter as a list of SQL expressions to AND together."""
    clauses = [parse_condition(c) for c in conditions]
    clauses += [_keyword(k, v) for k, v in (keywords or {}).items()]
    return clauses
