"""Filters without SQL: conditions on any alert column, checked against the schema, values bound.

Two spellings, usable everywhere (``Catalog.query``, ``iter_alerts``, ``get_local_alert_list``, the
CLI's ``--where``):

- condition strings ``"rb > 0.9"``, ``"fid = 1"``, ``"objectId = ZTF18abcdefg"``, ``"drb is null"``,
  ``"fid in 1,2"``, ``"objectId like ZTF18%"``, combined with ``and``, ``or``, ``not`` and parentheses:
  ``"rb > 0.9 and fid = 1"``, ``"(fid = 1 or fid = 2) and not magpsf > 19"`` (``and`` binds tighter
  than ``or``; a value that is one of those words is quoted);
- keywords: ``fid=1`` (equality), ``jd=(2458349.5, 2458350.5)`` (an inclusive range, either end may be
  None), ``fid=[1, 2]`` (any of), plus ``night=`` (the night observed, i.e. the UT date of ``jd``: a date
  or a range of dates), ``release=`` (a tarball's file name) and ``release_night=`` (the night a holding
  tarball is named after).

Column names are looked up in the ``alerts`` table (an unknown one is an :class:`InvalidQueryError`
naming it); values always travel as bound parameters, never as SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, and_, not_, or_, select

from ..errors import InvalidQueryError
from ..sources.names import parse_night
from .tables import alert_releases, alerts, releases

#: Columns a query returns when none are named (``Catalog.query``, cone searches, cross-matches, sky maps).
#: Kept here, beside the column lookup, so the store's modules and :mod:`ztfcat.catalog` all import it
#: from below rather than from each other.
DEFAULT_COLUMNS = ("candid", "objectId", "jd", "fid", "ra", "dec", "magpsf", "sigmapsf", "rb", "isdiffpos")

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


#: Quoted strings, parentheses, and runs of anything else: the words of a condition string.
_TOKEN = re.compile(r"""'[^']*'|"[^"]*"|[()]|[^\s()'"]+""")
_WORDS = ("and", "or", "not")


def parse_condition(text: str, table: Table = alerts) -> ColumnElement[bool]:
    """A condition string as a SQL expression with bound values.

    ``COLUMN OP VALUE`` conditions joined by ``and``, ``or``, ``not`` and parentheses; ``and`` binds
    tighter than ``or``.  Every column is checked against ``table``; every value is a bound
    parameter.
    """
    tokens = _TOKEN.findall(text)
    if not tokens:
        raise InvalidQueryError("an empty condition; write it as COLUMN OP VALUE, e.g. 'rb > 0.9'")
    if not any(t in "()" or t.lower() in _WORDS for t in tokens):
        return _parse_atom(text, table)  # one plain condition: read as it always was
    parser = _Parser(tokens, text, table)
    expr = parser.disjunction()
    if parser.pos != len(tokens):
        raise InvalidQueryError(f"cannot read {text!r} from {' '.join(tokens[parser.pos :])!r} on")
    return expr


class _Parser:
    """Recursive descent over the tokens: or-terms of and-terms of (negated) atoms or groups."""

    def __init__(self, tokens: list[str], text: str, table: Table) -> None:
        self.tokens, self.text, self.table, self.pos = tokens, text, table, 0

    def _peek(self) -> str | None:
        return self.tokens[self.pos].lower() if self.pos < len(self.tokens) else None

    def disjunction(self) -> ColumnElement[bool]:
        terms = [self.conjunction()]
        while self._peek() == "or":
            self.pos += 1
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else or_(*terms)

    def conjunction(self) -> ColumnElement[bool]:
        factors = [self.factor()]
        while self._peek() == "and":
            self.pos += 1
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else and_(*factors)

    def factor(self) -> ColumnElement[bool]:
        word = self._peek()
        if word == "not":
            self.pos += 1
            return not_(self.factor())
        if word == "(":
            self.pos += 1
            expr = self.disjunction()
            if self._peek() != ")":
                raise InvalidQueryError(f"{self.text!r}: a '(' is never closed")
            self.pos += 1
            return expr
        if word is None or word in (")", "and", "or"):
            raise InvalidQueryError(f"{self.text!r}: a condition is missing before {word or 'the end'!r}")
        return self.atom()

    def atom(self) -> ColumnElement[bool]:
        """One ``COLUMN OP VALUE``: the tokens up to the next and, or or closing parenthesis."""
        words: list[str] = []
        while (word := self._peek()) is not None and word not in ("and", "or", ")"):
            if word == "(":
                if not words or words[-1].lower() != "in":
                    raise InvalidQueryError(f"{self.text!r}: '(' inside a condition (only 'in (a, b)')")
                end = self.tokens.index(")", self.pos) if ")" in self.tokens[self.pos :] else -1
                if end < 0:
                    raise InvalidQueryError(f"{self.text!r}: a '(' is never closed")
                words.append("(" + " ".join(self.tokens[self.pos + 1 : end]) + ")")
                self.pos = end + 1
                continue
            words.append(self.tokens[self.pos])
            self.pos += 1
        return _parse_atom(" ".join(words), self.table)


def _parse_atom(text: str, table: Table = alerts) -> ColumnElement[bool]:
    """One ``COLUMN OP VALUE`` condition as a SQL expression with bound values."""
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
    return parse_night(value, InvalidQueryError)


def _night_range(column, value: Any) -> list:
    lo, hi = value if isinstance(value, tuple | list) else (value, value)
    conds = []
    if lo is not None:
        conds.append(column >= as_date(lo))
    if hi is not None:
        conds.append(column <= as_date(hi))
    return conds


def _keyword(name: str, value: Any) -> ColumnElement[bool]:
    if name == "night":  # the night observed: the UT date of jd, an indexed column
        return and_(*_night_range(alerts.c.night, value))
    if name in ("release", "release_night"):  # every release that holds the alert counts
        if name == "release":
            names = [value] if isinstance(value, str) else list(value)
            chosen = select(releases.c.id).where(releases.c.name.in_(names))
        else:
            chosen = select(releases.c.id).where(*_night_range(releases.c.night, value))
        return alerts.c.candid.in_(
            select(alert_releases.c.candid).where(alert_releases.c.release_id.in_(chosen))
        )
    return keyword_match(column(name), name, value)


def keyword_match(col, name: str, value: Any) -> ColumnElement[bool]:
    """A keyword filter's value against a column: ``(lo, hi)`` an inclusive range (either end None),
    a list any of, None is null, anything else equality; used for alerts and objects alike."""
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


def where_clauses(
    conditions: Iterable[str] = (), keywords: Mapping[str, Any] | None = None, engine: Engine | None = None
) -> list:
    """Every condition and keyword filter as a list of SQL expressions to AND together.

    Given the catalog's ``engine``, a ``jd``/``night`` range also yields the candid bounds it implies on
    PostgreSQL, so the planner reads only the partitions of those months
    (:func:`ztfcat.store.partitions.candid_hints`); they never change which rows match.
    """
    from .partitions import candid_hints

    clauses = [parse_condition(c) for c in conditions]
    clauses += [_keyword(k, v) for k, v in (keywords or {}).items()]
    return clauses + candid_hints(engine, keywords)


def unfinished_hidden(engine: Engine) -> list:
    """The clause that hides what only unfinished releases hold, or nothing when every release is
    complete (the usual case, then it costs one tiny query and no per-row work).

    An ingest in progress, killed or failed leaves its release ``ingesting``, ``history``, ``failed``
    or ``deleting``; queries see an alert only while some complete release holds it.
    """
    unfinished = select(releases.c.id).where(releases.c.status != "complete")
    with engine.connect() as conn:
        if conn.execute(unfinished.limit(1)).first() is None:
            return []
    held = (
        select(alert_releases.c.candid)
        .join(releases, releases.c.id == alert_releases.c.release_id)
        .where(alert_releases.c.candid == alerts.c.candid, releases.c.status == "complete")
    )
    return [or_(alerts.c.release_id.not_in(unfinished), held.exists())]
