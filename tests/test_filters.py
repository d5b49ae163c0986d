"""``ztfcat.store.filters`` on both databases: each filter's SQL against a brute-force Python filter.

Three synthetic releases (two schema versions, one tarball ingested under a second name so its alerts
belong to two releases) are ingested; the ``alerts`` table is dumped with plain SQL, and every filter
is evaluated again in Python over those rows, with SQL's three-valued logic written out (a comparison
with NULL is unknown; ``not`` of unknown is unknown; a row is kept only when its condition is true).
Conditions are random: atoms of every operator over columns that hold NULLs, combined with ``and``,
``or``, ``not`` and parentheses, in random letter case.  The night of an alert is computed here from
``jd`` through the MJD; the releases that hold an alert come from what was written, not the catalog.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
import shutil

import pytest

from ztfcat.errors import InvalidQueryError
from ztfcat.testing.synthetic import make_night

COLUMNS = (
    "candid",
    "objectId",
    "jd",
    "fid",
    "rb",
    "drb",
    "magpsf",
    "maggaia",
    "ssnamenr",
    "rbversion",
    "programid",
    "schemavsn",
)
NUMERIC = ("candid", "jd", "fid", "rb", "drb", "magpsf", "maggaia", "programid")
TEXT = ("objectId", "ssnamenr", "rbversion", "schemavsn")


@pytest.fixture
def world(catalog, tmp_path):
    """The catalog, its alerts as dicts, and for each alert the release names that hold it."""
    a = make_night(
        tmp_path / "ztf_public_20180819.tar.gz", night="20180819", n_alerts=40, seed=1, cutouts=False
    )
    b = make_night(
        tmp_path / "ztf_public_20180820.tar.gz",
        night="20180820",
        n_alerts=30,
        seed=2,
        version=("1.8", "3.3"),  # 1.8 lacks drb, maggaia, rbversion: NULLs
        cutouts=False,
    )
    again = tmp_path / "ztf_public_20180901.tar.gz"  # the same alerts under another release's name
    shutil.copy(a.path, again)
    for path in (a.path, b.path, again):
        catalog.ingest(path)
    holders = {c: {a.path.name, again.name} for c in a.candids} | {c: {b.path.name} for c in b.candids}
    raw = catalog.engine.raw_connection()
    try:
        cursor = raw.cursor()
        names = ", ".join(f'"{c}"' for c in COLUMNS)
        cursor.execute(f"SELECT {names} FROM alerts")  # noqa: S608 - the test's own column names
        rows = [dict(zip(COLUMNS, r, strict=True)) for r in cursor.fetchall()]
    finally:
        raw.close()
    assert sorted(r["candid"] for r in rows) == sorted(holders)
    for r in rows:
        r["releases"] = holders[r["candid"]]
    # the columns must hold NULLs for the three-valued logic to be tested at all
    assert any(r["drb"] is None for r in rows) and any(r["drb"] is not None for r in rows)
    assert any(r["rbversion"] is None for r in rows) and any(r["rbversion"] is not None for r in rows)
    return catalog, rows


# --- the model ---------------------------------------------------------------------------------------


def _and(values):
    values = list(values)
    return False if False in values else None if None in values else True


def _or(values):
    values = list(values)
    return True if True in values else None if None in values else False


def _not(value):
    return None if value is None else not value


def _like(text: str, pattern: str) -> bool:
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


def _compare(value, op: str, operand):
    if value is None:
        return None
    return {
        "=": value == operand,
        "!=": value != operand,
        "<": value < operand,
        "<=": value <= operand,
        ">": value > operand,
        ">=": value >= operand,
    }[op]


def _night(jd: float) -> dt.date:
    return dt.date(1858, 11, 17) + dt.timedelta(days=math.floor(jd - 2400000.5))


# --- random conditions -------------------------------------------------------------------------------


def _literal(column: str, value) -> str:
    if column in TEXT:
        return str(value)
    return repr(value)


def _atom(rng: random.Random, rows: list[dict]) -> tuple[str, object]:
    """A random ``COLUMN OP VALUE`` string, and its truth as a function of a row."""
    column = rng.choice(COLUMNS)
    spelled = column if rng.random() < 0.7 else column.lower() if rng.random() < 0.5 else column.upper()
    present = [r[column] for r in rows if r[column] is not None]
    kind = rng.random()
    if kind < 0.15:
        negate = rng.random() < 0.5
        text = (
            f"{spelled} {rng.choice(['is', 'IS'])} {'not ' if negate else ''}{rng.choice(['null', 'NULL'])}"
        )
        return text, lambda r: (r[column] is not None) if negate else (r[column] is None)
    if kind < 0.3 and present:
        values = rng.sample(sorted(set(present), key=str), min(len(set(present)), rng.randrange(1, 4)))
        negate = rng.random() < 0.4
        listed = ", ".join(_literal(column, v) for v in values)
        listed = f"({listed})" if rng.random() < 0.5 else listed.replace(" ", "")
        text = f"{spelled} {'not in' if negate else 'in'} {listed}"

        def within(r, values=values, negate=negate):
            found = None if r[column] is None else r[column] in values
            return _not(found) if negate else found

        return text, within
    if kind < 0.42 and column in TEXT and present:
        sample = rng.choice(present)
        cut = rng.randrange(1, len(sample) + 1)
        pattern = sample[:cut] + "%" if rng.random() < 0.6 else "_" + sample[1:cut] + "%"
        negate = rng.random() < 0.3
        text = f"{spelled} {'not like' if negate else 'like'} {pattern}"

        def matches(r, pattern=pattern, negate=negate):
            found = None if r[column] is None else _like(r[column], pattern)
            return _not(found) if negate else found

        return text, matches
    op = rng.choice(["=", "!=", "<", "<=", ">", ">="] if column in NUMERIC else ["=", "!="])
    spelled_op = {"=": rng.choice(["=", "=="]), "!=": rng.choice(["!=", "<>"])}.get(op, op)
    if present and rng.random() < 0.8:
        value = rng.choice(present)
    else:
        value = rng.uniform(-1, 30) if column in NUMERIC else "ZTF18nothere"
        if column in ("candid", "fid", "programid"):
            value = int(value)
    text = f"{spelled} {spelled_op} {_literal(column, value)}"
    return text, lambda r, value=value: _compare(r[column], op, value)


def _expression(rng: random.Random, rows: list[dict], depth: int = 0) -> tuple[str, object]:
    """A random condition of atoms under and/or/not/parentheses, and its three-valued truth."""
    roll = rng.random()
    if depth >= 3 or roll < 0.35:
        return _atom(rng, rows)
    if roll < 0.5:
        text, truth = _expression(rng, rows, depth + 1)
        word = rng.choice(["not", "NOT", "Not"])
        return f"{word} ({text})", lambda r: _not(truth(r))
    parts = [_expression(rng, rows, depth + 1) for _ in range(rng.randrange(2, 4))]
    conjunction = roll < 0.75
    word = rng.choice(["and", "AND"] if conjunction else ["or", "Or"])
    text = f" {word} ".join(f"({t})" for t, _ in parts)
    combine = _and if conjunction else _or
    return text, lambda r: combine(truth(r) for _, truth in parts)


def _unparenthesised(rng: random.Random, rows: list[dict]) -> tuple[str, object]:
    """``a or b and c`` with no parentheses: ``and`` must bind tighter than ``or``."""
    atoms = [_atom(rng, rows) for _ in range(rng.randrange(2, 6))]
    words = [rng.choice(["and", "or"]) for _ in atoms[1:]]
    text = atoms[0][0] + "".join(f" {w} {t}" for w, (t, _) in zip(words, atoms[1:], strict=True))
    groups = [[atoms[0][1]]]  # or-terms, each a list of and-ed atoms
    for w, (_, truth) in zip(words, atoms[1:], strict=True):
        if w == "and":
            groups[-1].append(truth)
        else:
            groups.append([truth])
    return text, lambda r: _or(_and(t(r) for t in g) for g in groups)


def _expected(rows: list[dict], truth) -> list[int]:
    return sorted(r["candid"] for r in rows if truth(r) is True)


# --- the tests -------------------------------------------------------------------------------------


def test_random_conditions_select_what_the_model_selects(world):
    catalog, rows = world
    rng = random.Random(2018)
    seen_sizes = set()
    for i in range(160):
        text, truth = _unparenthesised(rng, rows) if i % 4 == 3 else _expression(rng, rows)
        want = _expected(rows, truth)
        assert catalog.alert_ids(text) == want, text
        seen_sizes.add(0 if not want else len(rows) if len(want) == len(rows) else 1)
    assert seen_sizes == {0, 1, len(rows)}  # some conditions selected none, some all, some a part


def test_several_conditions_are_and_ed(world):
    catalog, rows = world
    rng = random.Random(5)
    for _ in range(30):
        atoms = [_atom(rng, rows) for _ in range(3)]
        want = _expected(rows, lambda r, atoms=atoms: _and(t(r) for _, t in atoms))
        assert catalog.alert_ids(*[t for t, _ in atoms]) == want
        assert catalog.count(*[t for t, _ in atoms]) == len(want)


def test_keyword_filters(world):
    catalog, rows = world
    rng = random.Random(8)
    nights = sorted({_night(r["jd"]) for r in rows})
    assert len(nights) >= 2
    names = sorted({n for r in rows for n in r["releases"]})
    release_night = {
        n: dt.datetime.strptime(n[len("ztf_public_") : -len(".tar.gz")], "%Y%m%d").date() for n in names
    }
    for _ in range(40):
        column = rng.choice(NUMERIC)
        values = sorted({r[column] for r in rows if r[column] is not None})
        lo, hi = sorted(rng.sample(values, 2)) if len(values) > 1 else (values[0], values[0])
        lo, hi = rng.choice([(lo, hi), (None, hi), (lo, None)])
        inside = [
            r["candid"]
            for r in rows
            if r[column] is not None and (lo is None or r[column] >= lo) and (hi is None or r[column] <= hi)
        ]
        assert catalog.alert_ids(**{column: (lo, hi)}) == sorted(inside), (column, lo, hi)
        chosen = rng.sample(values, min(3, len(values)))
        assert catalog.alert_ids(**{column: chosen}) == sorted(
            r["candid"] for r in rows if r[column] in chosen
        )
        one = rng.choice(values)
        assert catalog.alert_ids(**{column: one}) == sorted(r["candid"] for r in rows if r[column] == one)
    for column in ("drb", "rbversion"):
        assert catalog.alert_ids(**{column: None}) == sorted(r["candid"] for r in rows if r[column] is None)
    assert catalog.alert_ids(drb=(None, None)) == sorted(r["candid"] for r in rows if r["drb"] is not None)

    for night in nights:
        want = sorted(r["candid"] for r in rows if _night(r["jd"]) == night)
        assert catalog.alert_ids(night=night) == want
        assert catalog.alert_ids(night=night.isoformat()) == want
        assert catalog.alert_ids(night=night.strftime("%Y%m%d")) == want
        after = sorted(r["candid"] for r in rows if _night(r["jd"]) >= night)
        assert catalog.alert_ids(night=(night, None)) == after
    for name in names:
        assert catalog.alert_ids(release=name) == sorted(r["candid"] for r in rows if name in r["releases"])
    pair = names[1:]
    assert catalog.alert_ids(release=pair) == sorted(r["candid"] for r in rows if r["releases"] & set(pair))
    for lo, hi in [(dt.date(2018, 8, 20), None), (None, "2018-08-19"), ("20180820", "2018-09-01")]:
        held = {
            n
            for n, d in release_night.items()
            if (
                lo is None
                or d >= (lo if isinstance(lo, dt.date) else dt.datetime.strptime(lo, "%Y%m%d").date())
            )
            and (hi is None or d <= dt.date.fromisoformat(hi))
        }
        assert catalog.alert_ids(release_night=(lo, hi)) == sorted(
            r["candid"] for r in rows if r["releases"] & held
        )

    # keywords and conditions together: all of them hold
    text, truth = _expression(rng, rows)
    want = sorted(
        r["candid"] for r in rows if truth(r) is True and names[0] in r["releases"] and r["fid"] == 1
    )
    assert catalog.alert_ids(text, release=names[0], fid=1) == want


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ("nosuch > 1", "unknown column 'nosuch'"),
        ("rb > x", "takes a number"),
        ("rb", "cannot read the condition"),
        ("", "empty condition"),
        ("(rb > 0.5", "never closed"),
        ("rb > 0.5 and", "missing before"),
        ("rb > 0.5 or or fid = 1", "missing before"),
        ("rb > 0.5)", "cannot read"),
        ("drb is 3", "only 'is null'"),
        ("fid in ()", "at least one value"),
        ("magpsf >", "has no value"),
    ],
)
def test_malformed_conditions_name_the_fault(catalog, condition, reason):
    with pytest.raises(InvalidQueryError, match=re.escape(reason)):
        catalog.alert_ids(condition)


def test_a_backwards_range_is_refused(catalog):
    with pytest.raises(InvalidQueryError, match="wrong way round"):
        catalog.alert_ids(jd=(2458351.0, 2458350.0))


def test_what_only_unfinished_releases_hold_is_hidden(world):
    """An alert is seen while some complete release holds it (an ingest in progress, killed or failed
    leaves its release unfinished): the model asks the releases written, not the catalog's columns."""
    catalog, rows = world
    names = sorted({n for r in rows for n in r["releases"]})
    rng = random.Random(4)
    with catalog.engine.begin() as conn:
        statuses = {n: rng.choice(["complete", "ingesting", "failed", "history", "deleting"]) for n in names}
        statuses[names[0]] = "failed"  # at least one unfinished, and one complete
        statuses[names[-1]] = "complete"
        for name, status in statuses.items():
            conn.exec_driver_sql(
                "UPDATE releases SET status = %s WHERE name = %s"
                if conn.dialect.name != "sqlite"
                else "UPDATE releases SET status = ? WHERE name = ?",
                (status, name),
            )
    complete = {n for n, s in statuses.items() if s == "complete"}
    seen = [r for r in rows if r["releases"] & complete]
    assert 0 < len(seen) < len(rows)
    assert catalog.alert_ids() == sorted(r["candid"] for r in seen)
    assert catalog.count() == len(seen)
    text, truth = _expression(rng, rows)
    assert catalog.alert_ids(text) == _expected(seen, truth)
