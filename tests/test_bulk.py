"""``ztfcat.ingest.bulk`` on both databases: the :class:`Upsert` precedence against a brute-force model of the
rule, on random rows in random batches and orders, into the real light-curve tables and their partial
unique indexes; ``"ignore"``; and the lookups the ingest makes before inserting.

The model is written from the rule as ``ztfcat.ingest.history`` states it, in plain Python over every copy of
every point: a detection keeps its own alert's row, else the copy of the newest alert by
``(alert_jd, alert_candid)``; an upper limit and a forced-photometry point keep the newest copy; a tie
goes to the row inserted last.  It shares no code with the SQL it checks.
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select

from ztfcat.ingest.bulk import BulkWriter, Upsert
from ztfcat.ingest.history import DETECTION, FORCED, FP_INSERT, LIMIT, PRV_INSERT
from ztfcat.store.tables import fp_hists, prv_candidates

#: The columns of a dumped row: who holds the point, its key, and a payload that says which copy won.
PRV_DUMP = ("objectId", "alert_candid", "alert_jd", "candid", "pid", "fid", "magpsf")
FP_DUMP = ("objectId", "alert_candid", "alert_jd", "pid", "fid", "forcediffimflux")


def _full(names: tuple[str, ...], insert: tuple[str, ...], values: tuple) -> tuple:
    """``values`` (in ``names`` order) as a full row in ``insert`` order, every other column None."""
    given = dict(zip(names, values, strict=True))
    return tuple(given.get(c) for c in insert)


def _dump(engine, table, names) -> set[tuple]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(select(*[table.c[n] for n in names]))}


def _random_copies(rng: random.Random, n: int) -> tuple[list[tuple], list[tuple]]:
    """Copies of detections and upper limits (``PRV_DUMP`` order) and of forced points (``FP_DUMP``).

    Few keys, few alerts and few distinct jds, so keys clash often and ranks tie on jd; an alert's own
    detection row (``candid == alert_candid``) appears among the copies.  As in ZTF's data, an alert
    and every detection belong to one object (here: the parity of the candid), so a detection's
    candid names it on either database (PostgreSQL keys it with its ``objectId``, the partition key).
    """
    alerts = [(1000 + i, 2458350.5 + rng.randrange(4) / 8) for i in range(12)]
    objects = ["ZTF18aaaaaaa", "ZTF18aaaaaab"]
    prv, fp = [], []
    for _ in range(n):
        alert_candid, alert_jd = rng.choice(alerts)
        obj = objects[alert_candid % 2]
        payload = rng.uniform(14, 21)
        if rng.random() < 0.5:
            same_object = [c for c in (*range(1000, 1012), *range(5000, 5006)) if c % 2 == alert_candid % 2]
            candid = alert_candid if rng.random() < 0.3 else rng.choice(same_object)
            prv.append((obj, alert_candid, alert_jd, candid, rng.randrange(3), 1 + rng.randrange(2), payload))
        else:
            prv.append((obj, alert_candid, alert_jd, None, rng.randrange(3), 1 + rng.randrange(2), payload))
        fp.append((obj, alert_candid, alert_jd, rng.randrange(3), 1 + rng.randrange(2), payload))
    return prv, fp


# --- the model --------------------------------------------------------------------------------------


def _detection_rank(row: dict) -> tuple:
    own = row["candid"] == row["alert_candid"]
    return (own, row["alert_jd"], row["alert_candid"])


def _newest_rank(row: dict) -> tuple:
    return (row["alert_jd"], row["alert_candid"])


def _model(copies: list[tuple], names: tuple[str, ...], key, rank, first_wins: bool = False) -> set[tuple]:
    """Every key's kept copy, inserting ``copies`` one by one in order: a copy replaces the kept one when
    its rank is at least as high (ties to the newcomer), or never (``first_wins``, the ``ignore`` rule)."""
    kept: dict = {}
    for values in copies:
        row = dict(zip(names, values, strict=True))
        k = key(row)
        if k is None:
            continue  # not under this rule's index: the test gives it to another rule
        if k not in kept or (not first_wins and rank(row) >= rank(kept[k])):
            kept[k] = row
    return {tuple(r[n] for n in names) for r in kept.values()}


def _detection_key(row):
    return row["candid"]


def _limit_key(row):
    return None if row["candid"] is not None else (row["objectId"], row["pid"], row["fid"])


def _point_key(row):
    return (row["objectId"], row["pid"], row["fid"])


# --- inserting -------------------------------------------------------------------------------------


def _batches(rows: list[tuple], key, rng: random.Random) -> list[list[tuple]]:
    """``rows`` in order, cut into batches of random length in which no key appears twice (one
    statement may not touch a row twice on PostgreSQL; :class:`ztfcat.ingest.history.PointSet` sees to it)."""
    batches: list[list[tuple]] = [[]]
    seen: set = set()
    for row in rows:
        k = key(row)
        if k in seen or len(batches[-1]) >= rng.randrange(1, 40):
            batches.append([])
            seen = set()
        batches[-1].append(row)
        seen.add(k)
    return [b for b in batches if b]


def _insert(engine, table, insert_columns, names, batches, rule, rng: random.Random) -> None:
    bulk = BulkWriter(engine)
    try:
        for batch in batches:
            bulk.insert(
                table, insert_columns, [_full(names, insert_columns, r) for r in batch], on_conflict=rule
            )
            if rng.random() < 0.5:
                bulk.commit()
        bulk.commit()
    finally:
        bulk.close()


def _fp_key(values: tuple) -> tuple:
    return _point_key(dict(zip(FP_DUMP, values, strict=True)))


def _split(prv: list[tuple]) -> tuple[list[tuple], list[tuple]]:
    at = PRV_DUMP.index("candid")
    return [r for r in prv if r[at] is not None], [r for r in prv if r[at] is None]


@pytest.mark.parametrize("seed", range(3))
def test_upserts_keep_what_the_rule_keeps(catalog, seed):
    rng = random.Random(seed)
    prv, fp = _random_copies(rng, 400)
    detections, limits = _split(prv)
    engine = catalog.engine

    def prv_key(values):
        row = dict(zip(PRV_DUMP, values, strict=True))
        return _detection_key(row) if row["candid"] is not None else _limit_key(row)

    _insert(engine, prv_candidates, PRV_INSERT, PRV_DUMP, _batches(detections, prv_key, rng), DETECTION, rng)
    _insert(engine, prv_candidates, PRV_INSERT, PRV_DUMP, _batches(limits, prv_key, rng), LIMIT, rng)
    _insert(engine, fp_hists, FP_INSERT, FP_DUMP, _batches(fp, _fp_key, rng), FORCED, rng)

    expected = _model(detections, PRV_DUMP, _detection_key, _detection_rank) | _model(
        limits, PRV_DUMP, _limit_key, _newest_rank
    )
    assert _dump(engine, prv_candidates, PRV_DUMP) == expected
    assert _dump(engine, fp_hists, FP_DUMP) == _model(fp, FP_DUMP, _point_key, _newest_rank)
    # the model is not trivially "everything": keys clashed, and both own and copied rows won somewhere
    assert len(expected) < len(prv)
    won = _dump(engine, prv_candidates, ("candid", "alert_candid"))
    assert any(c == a for c, a in won) and any(c is not None and c != a for c, a in won)


def _distinct_ranks(copies: list[tuple], names, key, rank) -> list[tuple]:
    """The copies with one copy per (key, rank): where ranks tie, the outcome depends on order by design."""
    seen: dict = {}
    for values in copies:
        row = dict(zip(names, values, strict=True))
        seen.setdefault((key(row), rank(row)), values)
    return list(seen.values())


def test_any_order_and_any_batches_give_one_table(catalog):
    """With no two copies of a point ranked alike, the table depends only on the set of rows."""
    rng = random.Random(7)
    prv, fp = _random_copies(rng, 300)
    detections = _distinct_ranks(_split(prv)[0], PRV_DUMP, _detection_key, _detection_rank)
    fp = _distinct_ranks(fp, FP_DUMP, _point_key, _newest_rank)
    engine = catalog.engine
    dumps = []
    for attempt in range(3):
        order = random.Random(attempt)
        d, f = detections[:], fp[:]
        order.shuffle(d)
        order.shuffle(f)
        with engine.begin() as conn:
            conn.execute(prv_candidates.delete())
            conn.execute(fp_hists.delete())
        _insert(
            engine, prv_candidates, PRV_INSERT, PRV_DUMP, _batches(d, lambda r: r[3], order), DETECTION, order
        )
        _insert(engine, fp_hists, FP_INSERT, FP_DUMP, _batches(f, _fp_key, order), FORCED, order)
        dumps.append((_dump(engine, prv_candidates, PRV_DUMP), _dump(engine, fp_hists, FP_DUMP)))
    assert dumps[0] == dumps[1] == dumps[2]
    best: dict = {}
    for values in detections:  # the max by rank, with no notion of insertion order at all
        row = dict(zip(PRV_DUMP, values, strict=True))
        if row["candid"] not in best or _detection_rank(row) > _detection_rank(best[row["candid"]]):
            best[row["candid"]] = row
    assert dumps[0][0] == {tuple(r[n] for n in PRV_DUMP) for r in best.values()}


def test_ties_go_to_the_row_inserted_last(catalog):
    engine = catalog.engine
    first = ("ZTF18aaaaaaa", 1001, 2458350.5, None, 1, 1, 17.0)
    again = ("ZTF18aaaaaaa", 1001, 2458350.5, None, 1, 1, 18.0)  # same alert, same rank, new values
    older = ("ZTF18aaaaaaa", 1000, 2458350.5, None, 1, 1, 19.0)
    rng = random.Random(0)
    _insert(engine, prv_candidates, PRV_INSERT, PRV_DUMP, [[first], [again], [older]], LIMIT, rng)
    assert _dump(engine, prv_candidates, PRV_DUMP) == _model(
        [first, again, older], PRV_DUMP, _limit_key, _newest_rank
    )
    assert _dump(engine, prv_candidates, PRV_DUMP) == {again}


def test_ignore_keeps_the_first_row(catalog):
    rng = random.Random(3)
    _, fp = _random_copies(rng, 200)
    engine = catalog.engine
    _insert(engine, fp_hists, FP_INSERT, FP_DUMP, _batches(fp, _fp_key, rng), "ignore", rng)
    assert _dump(engine, fp_hists, FP_DUMP) == _model(fp, FP_DUMP, _point_key, _newest_rank, first_wins=True)


def test_an_upsert_rank_is_sql_over_the_rows_own_columns(catalog):
    """A rule of the caller's own (not one of history's three): the lowest payload wins."""
    lowest = Upsert(("objectId", "pid", "fid"), "(-{row}.forcediffimflux)")
    rng = random.Random(11)
    _, fp = _random_copies(rng, 150)
    engine = catalog.engine
    _insert(engine, fp_hists, FP_INSERT, FP_DUMP, _batches(fp, _fp_key, rng), lowest, rng)
    kept: dict = {}
    for row in fp:
        key = row[:1] + row[3:5]
        if key not in kept or row[5] <= kept[key][5]:
            kept[key] = row
    assert _dump(engine, fp_hists, FP_DUMP) == set(kept.values())


def test_existing_and_owners_are_the_stored_keys(catalog, tmp_path):
    """The ingest's look-ups, over more values than one statement takes (500), against a dump."""
    from ztfcat.testing.synthetic import make_night

    spec = make_night(
        tmp_path / "ztf_public_20180819.tar.gz", n_alerts=40, seed=5, cutouts=False, n_prv=2, n_fp=0
    )
    catalog.ingest(spec.path)
    engine = catalog.engine
    with engine.connect() as conn:
        stored = {
            r[0]: (r[1], r[2])
            for r in conn.exec_driver_sql(
                "SELECT a.candid, r.id, r.name FROM alerts a JOIN releases r ON r.id = a.release_id"
            )
        }
        detections = {
            r[0] for r in conn.exec_driver_sql("SELECT candid FROM prv_candidates WHERE candid IS NOT NULL")
        }
    rng = random.Random(1)
    asked = rng.sample(sorted(stored), 25) + [rng.randrange(1 << 40) for _ in range(1200)]
    rng.shuffle(asked)
    bulk = BulkWriter(engine)
    try:
        assert bulk.owners(asked) == {c: stored[c] for c in asked if c in stored}
        assert bulk.existing(prv_candidates, "candid", asked) == detections & set(asked)
        release_id = next(iter(stored.values()))[0]
        from ztfcat.store.tables import alert_releases

        assert bulk.existing(alert_releases, "candid", asked, release_id=release_id) == set(asked) & set(
            stored
        )
        assert bulk.existing(alert_releases, "candid", asked, release_id=release_id + 1) == set()
    finally:
        bulk.close()
