"""PostgreSQL partitions: the candid clock they rest on, the schema, the upgrade, and pruning by jd/night."""

from __future__ import annotations

import io
import re
import tarfile
from datetime import date

import fastavro
import pytest
from sqlalchemy import MetaData, insert, select, text

from tests.pg import fresh_database, postgres_url
from tests.tarballs import differences, snapshot
from ztfcat import Catalog
from ztfcat.store import partitions as parts
from ztfcat.store.db import make_engine, upgrade
from ztfcat.store.filters import where_clauses
from ztfcat.store.tables import HEAD_REVISION, alerts, releases
from ztfcat.testing.synthetic import make_night

# -- the relation, on real packets (no database) ----------------------------------------------------


def _real_detections(root) -> list[tuple[int, float]]:
    """(candid, jd) of every detection in the real packets: alerts' own and their prv_candidates."""
    out = []

    def take(record):
        out.append((record["candidate"]["candid"], record["candidate"]["jd"]))
        out.extend((p["candid"], p["jd"]) for p in record.get("prv_candidates") or () if p.get("candid"))

    for path in sorted((root / "alerts").rglob("*.avro")):
        with path.open("rb") as fh:
            for record in fastavro.reader(fh):
                take(record)
    for path in sorted((root / "tarballs").glob("*.tar.gz")):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".avro"):
                    for record in fastavro.reader(io.BytesIO(tar.extractfile(member).read())):
                        take(record)
    return out


def test_real_candids_follow_their_jd(shared_alerts):
    """The premise: candid / 1e15 is the days since 2017-01-01 of its jd, far inside the tolerance."""
    points = _real_detections(shared_alerts)
    assert len(points) > 5000
    worst = max(abs(c / parts.CANDID_PER_DAY - (jd - parts.EPOCH_JD)) for c, jd in points)
    assert worst < parts.CLOCK_TOLERANCE_DAYS / 100  # 1e-5 day measured; 1e-2 trusted
    for candid, jd in points:
        lo, hi = parts.candid_bounds(jd, jd)
        assert lo <= candid <= hi


def test_months_cover_2018_03_to_2035_12_without_gaps():
    months = parts.months()
    assert (months[0], months[-1], len(months)) == (date(2018, 3, 1), date(2035, 12, 1), 214)
    ddl = parts.partition_ddl()
    bounds = [tuple(map(int, re.findall(r"\((\d+)\)", s))) for s in ddl if "FROM" in s]
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))  # contiguous
    assert (
        bounds[0][0] == parts.candid_at(date(2018, 3, 1)) == (2458178.5 - 2457754.5) * 10**15
    )  # JD of 2018-03-01 0h
    assert sum("DEFAULT" in s for s in ddl) == 1


def test_jd_and_night_ranges_give_candid_bounds():
    assert parts.jd_range({"jd": [2458670.2, 2458669.9]}) == (2458669.9, 2458670.2)
    assert parts.jd_range({"jd": (2458670.0, None)}) == (2458670.0, None)
    assert parts.night_range({"night": ("2019-07-01", "20190731")}) == (date(2019, 7, 1), date(2019, 7, 31))
    # night 2019-07-05 is day 915 since 2017-01-01: its candids are 915e15 ... 916e15 - 1
    assert parts.night_bounds(date(2019, 7, 5), date(2019, 7, 5)) == (915 * 10**15, 916 * 10**15 - 1)
    # a jd range inside one night: the margin, but never past that night's day
    lo, hi = parts.candid_bounds(2458669.5 + 0.3, 2458669.5 + 0.999)
    assert abs(lo - (915.3 - parts.HINT_MARGIN_DAYS) * 10**15) < 1e6  # float rounding of 9e17
    assert hi == 916 * 10**15 - 1
    assert parts.candid_bounds(None, None) == (None, None)
    assert parts.candid_bounds(1e300, None)[0] == 2**63 - 1


def test_sqlite_gets_no_hints(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    assert parts.candid_hints(engine, {"jd": (2458670.0, 2458671.0)}) == []
    assert len(where_clauses((), {"jd": (2458670.0, 2458671.0)}, engine)) == 1


# -- PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture
def pg_server():
    server = postgres_url()
    if server is None:
        pytest.skip("no PostgreSQL server: set ZTFCAT_TEST_POSTGRES_URL (see .ci/start-postgres)")
    return server


_SCHEMA_SQL = {
    "relations": """
        SELECT c.relname, c.relkind, c.relispartition, pg_get_expr(c.relpartbound, c.oid),
               CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END, obj_description(c.oid, 'pg_class')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'S')""",
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default,
               col_description((quote_ident(table_schema) || '.' || quote_ident(table_name))::regclass,
                               ordinal_position)
        FROM information_schema.columns WHERE table_schema = 'public'""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE connamespace = 'public'::regnamespace""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger
        WHERE NOT tgisinternal""",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'",
    "functions": """
        SELECT proname, prosrc FROM pg_proc WHERE pronamespace = 'public'::regnamespace""",
}


def pg_schema(url: str) -> dict:
    """The whole public schema from pg_catalog / information_schema, sorted: what 'same schema' means."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                key: sorted(map(tuple, conn.execute(text(sql)).all()), key=repr)
                for key, sql in _SCHEMA_SQL.items()
            }
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_new_catalog_is_the_upgraded_one(pg_server):
    """metadata + partitions (a new catalog) and 0001 → 0004 (the migrations) leave the same schema."""
    from alembic import command

    from ztfcat.store.db import _alembic_config

    with fresh_database(pg_server) as new_url, fresh_database(pg_server) as old_url:
        with Catalog(new_url, "/nonexistent-unused") as cat:
            assert cat.count() == 0
        old = make_engine(old_url)
        command.upgrade(_alembic_config(old), "0001")
        assert upgrade(old) == HEAD_REVISION
        old.dispose()
        fresh, upgraded = pg_schema(new_url), pg_schema(old_url)
        for schema in (fresh, upgraded):  # 0002 appended releases.unknown_fields, without its comment
            schema["columns"] = sorted(
                ((*r[:2], None, *r[3:6], None) if r[0] == "releases" else r for r in schema["columns"]),
                key=repr,
            )
        assert fresh == upgraded
        kinds = {r[0]: r[1] for r in fresh["relations"]}
        assert kinds["alerts"] == kinds["prv_candidates"] == kinds["fp_hists"] == "p"
        assert kinds["alert_releases"] == kinds["objects"] == kinds["history_rebuilds"] == "r"
        assert sum(r[0].startswith("alerts_m") for r in fresh["relations"] if r[1] == "r") == 214
        assert sum(r[0].startswith("prv_candidates_h") for r in fresh["relations"]) == parts.HASH_PARTITIONS


def _nights(tmp_path) -> list:
    """Three synthetic nights in three months, objects recurring between the first two."""
    return [
        make_night(
            tmp_path / "ztf_public_20190731.tar.gz", night="20190731", n_alerts=60, seed=1, cutouts=False
        ),
        make_night(
            tmp_path / "ztf_public_20190801.tar.gz", night="20190801", n_alerts=60, seed=1, cutouts=False
        ),
        make_night(
            tmp_path / "ztf_public_20200115.tar.gz", night="20200115", n_alerts=40, seed=3, cutouts=False
        ),
    ]


@pytest.mark.postgres
def test_a_0003_catalog_with_data_upgrades_to_the_same_catalog(pg_server, tmp_path):
    """Rows copied into a revision-0003 (unpartitioned) catalog and upgraded: the whole-catalog
    snapshot of a fresh ingest, and the sequences go on past the copied ids."""
    from alembic import command

    from ztfcat.store.db import _alembic_config

    nights = _nights(tmp_path)
    data = tmp_path / "data"
    with fresh_database(pg_server) as new_url, fresh_database(pg_server) as old_url:
        with Catalog(new_url, data) as fresh:
            for night in nights[:2]:
                fresh.ingest(night.path)
            reference = snapshot(fresh)
            old = make_engine(old_url)
            command.upgrade(_alembic_config(old), "0003")
            source, target = MetaData(), MetaData()
            source.reflect(fresh.engine, only=list(_COPIED))
            target.reflect(old, only=list(_COPIED))
            with fresh.engine.connect() as src, old.begin() as dst:
                for name in _COPIED:
                    rows = [dict(r._mapping) for r in src.execute(select(source.tables[name]))]
                    if rows:
                        dst.execute(insert(target.tables[name]), rows)
                for name in ("releases", "prv_candidates", "fp_hists", "ingest_errors"):
                    sql = f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), max(id)) FROM {name}"  # noqa: S608
                    dst.execute(text(sql))
                assert not parts.is_partitioned(dst, "alerts")
            assert upgrade(old) == HEAD_REVISION
            old.dispose()
        with Catalog(old_url, data) as upgraded:
            with upgraded.engine.connect() as conn:
                assert parts.is_partitioned(conn, "alerts")
                assert parts.is_partitioned(conn, "prv_candidates")
            assert differences(snapshot(upgraded), reference) == {}
            upgraded.ingest(nights[2].path)  # ids continue past the copied rows: no clash
        with Catalog(new_url, data) as fresh:
            fresh.ingest(nights[2].path)
            reference = snapshot(fresh)
        with Catalog(old_url, data) as upgraded:
            assert differences(snapshot(upgraded), reference) == {}


_COPIED = (
    "releases",
    "alerts",
    "alert_releases",
    "prv_candidates",
    "fp_hists",
    "ingest_errors",
    "catalog_settings",
    "objects",
    "history_rebuilds",
)


def _explain(engine, keywords) -> tuple[set[str], list[int]]:
    """Partitions a filtered query reads (EXPLAIN, no ANALYZE) and the candids it returns."""
    query = select(alerts.c.candid).where(*where_clauses((), keywords, engine)).order_by(alerts.c.candid)
    compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}"))
        found = list(conn.execute(query).scalars())
    return set(re.findall(r"\b(alerts_(?:m\d{4}_\d\d|default))\b", plan)), found


@pytest.mark.postgres
def test_jd_and_night_ranges_read_only_their_months(pg_server, tmp_path):
    nights = _nights(tmp_path)
    with fresh_database(pg_server) as url, Catalog(url, tmp_path / "data") as cat:
        for night in nights:
            cat.ingest(night.path)
        with cat.engine.connect() as conn:
            every = conn.execute(select(alerts.c.candid, alerts.c.jd, alerts.c.night, alerts.c.fid)).all()
        assert len(every) == sum(n.n_alerts for n in nights)
        cases = {
            (("night", "2019-07-31"),): {"alerts_m2019_07"},
            (("night", ("2019-07-31", "2019-08-01")),): {"alerts_m2019_07", "alerts_m2019_08"},
            (("jd", (2458695.6, 2458695.99)),): {"alerts_m2019_07"},  # within 2019-07-31 UT
            (("jd", (2458697.0, None)),): None,  # open above: every later month, and the default
            (("night", "2020-01-15"), ("fid", 1)): {"alerts_m2020_01"},
        }
        for items, expected in cases.items():
            keywords = dict(items)
            touched, found = _explain(cat.engine, keywords)
            lo, hi = keywords.get("jd", (None, None))
            night = keywords.get("night", (date.min.isoformat(), date.max.isoformat()))
            first, last = map(date.fromisoformat, night if isinstance(night, tuple) else (night, night))
            want = sorted(
                c
                for c, jd, night, fid in every
                if (lo is None or jd >= lo)
                and (hi is None or jd <= hi)
                and first <= night <= last
                and keywords.get("fid", fid) == fid
            )
            assert found == want and found, keywords  # brute force over every row
            if expected is None:
                assert "alerts_m2019_07" not in touched and "alerts_default" in touched
            else:
                assert touched == expected, keywords
            # the hint-free (unpartitioned) question gives the same rows, and so does the catalog
            with cat.engine.connect() as conn:
                plain = select(alerts.c.candid).where(*where_clauses((), keywords)).order_by(alerts.c.candid)
                assert list(conn.execute(plain).scalars()) == found
            assert cat.alert_ids(**keywords) == found
        # without the hints the planner cannot prune: every partition is in the plan
        plain = select(alerts.c.candid).where(*where_clauses((), {"night": "2019-07-31"}))
        with cat.engine.connect() as conn:
            plan = conn.exec_driver_sql(
                f"EXPLAIN {plain.compile(cat.engine, compile_kwargs={'literal_binds': True})}"
            )
            touched = set(re.findall(r"\b(alerts_(?:m\d{4}_\d\d|default))\b", "\n".join(r[0] for r in plan)))
        assert len(touched) == 215


@pytest.mark.postgres
def test_a_releases_own_queries_read_only_its_months(pg_server, tmp_path):
    """The ingest's queries of one release's alerts name the candid range it holds, so they plan its
    night's month, not all 215 partitions, and return exactly the rows the hint-free query returns."""
    nights = _nights(tmp_path)
    with fresh_database(pg_server) as url, Catalog(url, tmp_path / "data") as cat:
        for night in nights:
            cat.ingest(night.path)
        with cat.engine.connect() as conn:
            ids = dict(conn.execute(select(releases.c.name, releases.c.id)).all())
            assert parts.release_hints(conn, max(ids.values()) + 1) == []  # a release holding nothing
            for night, month in zip(
                nights, ("alerts_m2019_07", "alerts_m2019_08", "alerts_m2020_01"), strict=True
            ):
                owned = alerts.c.release_id == ids[night.path.name]
                hinted = select(alerts.c.candid).where(
                    owned, *parts.release_hints(conn, ids[night.path.name])
                )
                compiled = hinted.order_by(alerts.c.candid).compile(
                    cat.engine, compile_kwargs={"literal_binds": True}
                )
                plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}"))
                assert set(re.findall(r"\b(alerts_(?:m\d{4}_\d\d|default))\b", plan)) == {month}
                found = sorted(conn.execute(hinted).scalars())
                assert found == sorted(conn.execute(select(alerts.c.candid).where(owned)).scalars())
                assert found == sorted(night.candids)


@pytest.mark.postgres
def test_a_candid_off_the_clock_turns_the_hints_off(pg_server, tmp_path):
    """An alert whose candid does not follow its jd is found by jd all the same: the trigger records
    it and the hints stop."""
    night = make_night(tmp_path / "ztf_public_20190731.tar.gz", night="20190731", n_alerts=10, cutouts=False)
    with fresh_database(pg_server) as url, Catalog(url, tmp_path / "data") as cat:
        cat.ingest(night.path)
        keywords = {"night": "2019-07-31"}
        assert parts.candid_hints(cat.engine, keywords)
        with cat.engine.begin() as conn:
            row = dict(conn.execute(select(alerts).limit(1)).first()._mapping)
            row["candid"] = 1200000000015000000  # 2020-04: a month other than its jd's
            conn.execute(insert(alerts), [row])
            assert conn.execute(
                text("SELECT value FROM catalog_settings WHERE key = 'candid_clock'")
            ).scalar()
        assert parts.candid_hints(cat.engine, keywords) == []
        assert 1200000000015000000 in cat.alert_ids(**keywords)
