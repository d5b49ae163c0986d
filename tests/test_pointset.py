"""``ztfcat.ingest.history.PointSet``, the light-curve merge in Python, against a brute-force merge.

Random alerts of a few objects carry overlapping copies of the same points (a detection in many alerts'
``prv_candidates``, an upper limit or forced point in many windows, jds that tie).  The model lists every
copy of every point, with the rule of ``ztfcat.ingest.history`` written by column name — an alert's own
candidate is its detection's row, otherwise the copy of the newest alert by ``(jd, candid)`` — and takes
the best; ``PointSet`` must keep exactly those rows in any order of adding, and the SQL upserts must
agree with it when the points arrive in chunks on either database (as the history pass sends them).
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select

from ztfcat.ingest.bulk import BulkWriter
from ztfcat.ingest.history import FP_INSERT, PRV_INSERT, PointSet, insert_points
from ztfcat.ingest.rowdecode import DecodedAlert
from ztfcat.store.tables import CANDIDATE_COLUMNS, FP_COLUMNS, PRV_COLUMNS, fp_hists, prv_candidates

OBJECTS = ("ZTF18aaaaaaa", "ZTF18aaaaaab", "ZTF19aaaaaac")


def _tuple(values: dict, columns) -> tuple:
    return tuple(values.get(c) for c in columns)


def _random_alerts(rng: random.Random, n: int) -> list[dict]:
    """``n`` alerts: each with its candidate, prv copies and fp copies as dicts of named values."""
    ids = iter(rng.sample(range(1_000_000_000, 1_000_000_999), n + 20))
    alert_candids = {obj: [] for obj in OBJECTS}
    spare = {obj: [next(ids) for _ in range(4)] for obj in OBJECTS}  # detections of alerts not here
    out = []
    for _ in range(n):
        obj = rng.choice(OBJECTS)
        candid = next(ids)
        alert_candids[obj].append(candid)
        jd = 2458350.5 + rng.randrange(5) / 16  # few jds: ties left to candid to break
        out.append({"candid": candid, "objectId": obj, "jd": jd})
    for a in out:
        obj = a["objectId"]
        detections = [c for c in alert_candids[obj] + spare[obj] if c != a["candid"]]
        a["candidate"] = {
            "jd": a["jd"],
            "fid": 1 + rng.randrange(2),
            "pid": rng.randrange(1 << 40),
            "magpsf": rng.uniform(15, 21),
            "diffmaglim": rng.uniform(19, 21),
            "rb": rng.random(),
        }
        history = rng.random() > 0.1  # now and then an alert decoded without its history
        prv = []
        for c in rng.sample(detections, min(len(detections), rng.randrange(6))):
            prv.append(
                {
                    "candid": c,
                    "jd": 2458340 + c % 97 / 8,
                    "fid": 1,
                    "pid": c % 5,
                    "magpsf": rng.uniform(15, 21),
                }
            )
        for pid, fid in rng.sample([(p, f) for p in range(4) for f in (1, 2)], rng.randrange(5)):
            prv.append(
                {
                    "candid": None,
                    "jd": 2458340 + pid,
                    "fid": fid,
                    "pid": pid,
                    "diffmaglim": rng.uniform(19, 21),
                }
            )
        fp = []
        for pid, fid in rng.sample([(p, f) for p in range(4) for f in (1, 2, 3)], rng.randrange(6)):
            fp.append({"pid": pid, "fid": fid, "jd": 2458330 + pid, "forcediffimflux": rng.uniform(-50, 500)})
        rng.shuffle(prv)  # windows are not always sorted
        a["prv"] = prv if history else None
        a["fp"] = fp if history else None
    return out


def _decoded(a: dict) -> DecodedAlert:
    return DecodedAlert(
        a["candid"],
        a["objectId"],
        "4.02",
        _tuple(a["candidate"], CANDIDATE_COLUMNS),
        None,
        None if a["prv"] is None else [_tuple(p, PRV_COLUMNS) for p in a["prv"]],
        None if a["fp"] is None else [_tuple(p, FP_COLUMNS) for p in a["fp"]],
        (),
    )


def _model(alerts: list[dict]) -> tuple[set, set, set]:
    """Every copy of every point, ranked, and the best copy of each key: detections, limits, forced."""
    detections: dict = {}
    limits: dict = {}
    forced: dict = {}

    def offer(kept: dict, key, rank: tuple, row: dict) -> None:
        if key not in kept or rank > kept[key][0]:
            kept[key] = (rank, row)

    for a in alerts:
        head = {"objectId": a["objectId"], "alert_candid": a["candid"], "alert_jd": a["jd"]}
        newest = (a["jd"], a["candid"])
        own = {c: a["candidate"].get(c) for c in PRV_COLUMNS if c in CANDIDATE_COLUMNS}
        offer(detections, a["candid"], (True, *newest), {**head, **own, "candid": a["candid"]})
        for point in a["prv"] or ():
            row = {**head, **point}
            if point["candid"] is not None:
                offer(detections, point["candid"], (False, *newest), row)
            else:
                offer(limits, (a["objectId"], point["pid"], point["fid"]), newest, row)
        for point in a["fp"] or ():
            offer(forced, (a["objectId"], point["pid"], point["fid"]), newest, {**head, **point})
    return tuple(
        {_tuple(row, columns) for _, row in kept.values()}
        for kept, columns in ((detections, PRV_INSERT), (limits, PRV_INSERT), (forced, FP_INSERT))
    )


def _merged(alerts: list[dict]) -> PointSet:
    points = PointSet()
    for a in alerts:
        points.add(a["candid"], a["objectId"], a["jd"], _decoded(a))
    return points


@pytest.mark.parametrize("seed", range(5))
def test_the_merge_keeps_the_best_copy_of_every_point_in_any_order(seed):
    rng = random.Random(seed)
    alerts = _random_alerts(rng, 40)
    expected = _model(alerts)
    for _ in range(4):
        rng.shuffle(alerts)
        got = _merged(alerts).points()
        for rows, want in zip((got.detections, got.limits, got.forced), expected, strict=True):
            assert len(rows) == len(set(rows))  # one row per key: a statement never touches a key twice
            assert set(rows) == want
    # the data exercised the rule: copies clashed, and both own rows and copies from others won
    n_copies = sum(len(a["prv"] or ()) for a in alerts)
    assert len(expected[0]) + len(expected[1]) < n_copies + len(alerts)
    at = PRV_INSERT.index("candid")
    assert any(r[at] == r[1] for r in expected[0]) and any(r[at] != r[1] for r in expected[0])


def test_an_alert_without_its_history_gives_its_own_detection_only():
    rng = random.Random(9)
    alert = _random_alerts(rng, 1)[0]
    alert["prv"] = alert["fp"] = None
    got = _merged([alert]).points()
    assert (set(got.detections), got.limits, got.forced) == (_model([alert])[0], [], [])
    assert len(got.detections) == 1


def _dump(engine, table, columns) -> set[tuple]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(select(*[table.c[c] for c in columns]))}


@pytest.mark.parametrize("seed", range(2))
def test_chunks_merged_in_python_then_upserted_in_sql_agree(catalog, seed):
    """The history pass merges each chunk with ``PointSet`` and upserts it; chunks may split an object
    and arrive in any order, in transactions of their own: the tables still hold the model's rows."""
    rng = random.Random(seed)
    alerts = _random_alerts(rng, 60)
    rng.shuffle(alerts)
    cuts = sorted(rng.sample(range(1, len(alerts)), 5))
    chunks = [alerts[i:j] for i, j in zip([0, *cuts], [*cuts, len(alerts)], strict=True)]
    engine = catalog.engine
    bulk = BulkWriter(engine)
    try:
        for chunk in chunks:
            insert_points(bulk, _merged(chunk).points())
            bulk.commit()
        insert_points(bulk, _merged(chunks[0]).points())  # a chunk done twice changes nothing
        bulk.commit()
    finally:
        bulk.close()
    detections, limits, forced = _model(alerts)
    assert _dump(engine, prv_candidates, PRV_INSERT) == detections | limits
    assert _dump(engine, fp_hists, FP_INSERT) == forced
