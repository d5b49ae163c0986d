"""Benchmark: a 10 arcsec cone search on the ``hpx`` index against the naive full scan, same catalog, same run.

    python benchmarks/cone_search.py [--alerts 1000000] [--database-url URL] [--workdir DIR]

Builds a catalog of synthetic ``alerts`` rows (no packets: a cone search never reads one), or reuses the
one left in ``--workdir`` / at ``--database-url`` by an earlier run with the same ``--alerts``.
Positions mimic ZTF: most objects fall in a few hundred 7-degree fields of the survey's footprint, the
rest anywhere north of -31 degrees, and each object has several alerts within a fraction of an
arcsecond.  Then it times:

- ``cone_search`` (the library call, astropy Table included) at ``--cones`` centres, half on alert
  positions (looking up a known transient) and half anywhere in the footprint;
- the naive way, ``SELECT candid, ra, dec FROM alerts`` and a numpy separation, on ``--scans`` of them,

checks that every cone gives exactly the brute-force answer, and prints the medians and their ratio.
Targets: under 20 ms median, at least 100 times faster than the full scan.  Times are printed, never
asserted.  A PostgreSQL database given with ``--database-url`` must be empty or hold only this
benchmark's rows, which it keeps for the next run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, insert, select, text

from ztfcat import Catalog
from ztfcat.ingest.pipeline import night_observed
from ztfcat.store.conesearch import cone_search
from ztfcat.store.sky import hpx_index, separation_deg
from ztfcat.store.tables import alert_releases, alerts, releases

RELEASE = "benchmark_cone_search"
COLUMNS = ("candid", "objectId", "schemavsn", "release_id", "blob_path", "blob_size", "hpx", "ra", "dec")
COLUMNS += ("jd", "fid", "magpsf", "night")
CHUNK = 100_000
FIELD_SIZE = 7.0  # degrees on a side, about a ZTF field


def ztf_like_positions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` alert positions and the index of the object each belongs to.

    70 % of objects lie in 300 fields of the northern footprint (dec > -31) weighted towards a band
    standing in for the Galactic plane, 30 % uniformly over the footprint; objects have 1 to 8 alerts
    scattered by 0.1 arcsec, as repeated detections of one source are.
    """
    n_objects = max(1, n // 3)
    sin_lo = np.sin(np.radians(-31.0))
    n_fields = 300
    field_ra = rng.uniform(0.0, 360.0, n_fields)
    field_dec = np.degrees(np.arcsin(rng.uniform(sin_lo, 1.0, n_fields)))
    weight = 1.0 + 4.0 * np.exp(-0.5 * ((field_dec - 20.0 * np.sin(np.radians(field_ra))) / 15.0) ** 2)
    clustered = rng.random(n_objects) < 0.7
    field = rng.choice(n_fields, n_objects, p=weight / weight.sum())
    dec0 = np.clip(field_dec[field] + rng.uniform(-0.5, 0.5, n_objects) * FIELD_SIZE, -90.0, 90.0)
    cos_dec = np.maximum(np.cos(np.radians(dec0)), 0.05)
    ra0 = field_ra[field] + rng.uniform(-0.5, 0.5, n_objects) * FIELD_SIZE / cos_dec
    uniform = ~clustered
    ra0[uniform] = rng.uniform(0.0, 360.0, uniform.sum())
    dec0[uniform] = np.degrees(np.arcsin(rng.uniform(sin_lo, 1.0, uniform.sum())))

    per_object = np.minimum(rng.geometric(0.35, n_objects), 8)
    owner = np.repeat(np.arange(n_objects), per_object)[:n]
    if len(owner) < n:  # top up with one more alert for random objects
        owner = np.concatenate([owner, rng.integers(0, n_objects, n - len(owner))])
    jitter = 0.1 / 3600.0
    dec = np.clip(dec0[owner] + rng.normal(0.0, jitter, n), -90.0, 90.0)
    ra = np.mod(ra0[owner] + rng.normal(0.0, jitter, n) / np.maximum(np.cos(np.radians(dec)), 1e-3), 360.0)
    return ra, dec, owner


def existing(catalog: Catalog) -> tuple[int | None, int]:
    """(this benchmark's release id or None, number of alerts rows of other releases)."""
    with catalog.engine.connect() as conn:
        release_id = conn.execute(select(releases.c.id).where(releases.c.name == RELEASE)).scalar()
        others = conn.execute(
            select(func.count()).select_from(alerts).where(alerts.c.release_id != (release_id or -1))
        ).scalar_one()
    return release_id, others


def build(catalog: Catalog, n: int, seed: int) -> None:
    """Replace this benchmark's rows by ``n`` fresh ones, in bulk through the driver."""
    engine = catalog.engine
    with engine.begin() as conn:
        old = conn.execute(select(releases.c.id).where(releases.c.name == RELEASE)).scalar()
        if old is not None:
            conn.execute(delete(alert_releases).where(alert_releases.c.release_id == old))
            conn.execute(delete(alerts).where(alerts.c.release_id == old))
            conn.execute(delete(releases).where(releases.c.id == old))
        release_id = conn.execute(
            insert(releases).values(name=RELEASE, status="complete", n_alerts=n).returning(releases.c.id)
        ).scalar_one()
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    ra, dec, owner = ztf_like_positions(rng, n)
    hpx = hpx_index(ra, dec)
    candid = 1_000_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 1009
    jd = 2458300.0 + rng.uniform(0.0, 2000.0, n)
    fid = rng.integers(1, 3, n)
    mag = rng.uniform(15.0, 21.0, n)
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        for lo in range(0, n, CHUNK):
            rows = [
                (int(c), f"ZTF{int(o):09d}", "4.02", release_id, "-", 0, int(h), float(r), float(d),
                 float(j), int(f), float(m), night_observed(float(j)).isoformat())
                for c, o, h, r, d, j, f, m in zip(
                    candid[lo : lo + CHUNK], owner[lo : lo + CHUNK], hpx[lo : lo + CHUNK], ra[lo : lo + CHUNK],
                    dec[lo : lo + CHUNK], jd[lo : lo + CHUNK], fid[lo : lo + CHUNK], mag[lo : lo + CHUNK],
                    strict=True,
                )
            ]  # fmt: skip
            if engine.dialect.name == "sqlite":
                marks = ", ".join("?" * len(COLUMNS))
                names = ", ".join(f'"{c}"' for c in COLUMNS)
                driver.executemany(f"INSERT INTO alerts ({names}) VALUES ({marks})", rows)  # noqa: S608
            else:
                names = ", ".join(f'"{c}"' for c in COLUMNS)
                with driver.cursor() as cursor, cursor.copy(f"COPY alerts ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            driver.commit()
            print(f"  inserted {min(lo + CHUNK, n):>9,} rows", file=sys.stderr, end="\r")
    finally:
        raw.close()
    with engine.begin() as conn:
        conn.execute(text("ANALYZE" if engine.dialect.name == "sqlite" else "ANALYZE alerts"))
    print(f"  built {n:,} alerts rows in {time.perf_counter() - start:.1f} s", file=sys.stderr)


def full_scan(engine, ra0: float, dec0: float, radius_deg: float) -> list[int]:
    """The naive cone search: every row through the driver, distances in numpy."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT candid, ra, dec FROM alerts")).all()
    candid = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    ra = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
    dec = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
    return _nearest(candid, np.asarray(separation_deg(ra0, dec0, ra, dec)), radius_deg)


def _nearest(candid: np.ndarray, distance: np.ndarray, radius_deg: float) -> list[int]:
    index = np.flatnonzero(distance <= radius_deg)
    return candid[index[np.lexsort((candid[index], distance[index]))]].tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=1_000_000, help="alerts rows (default 1,000,000)")
    parser.add_argument("--database-url", help="catalog database (default: SQLite in the work dir)")
    parser.add_argument("--workdir", type=Path, help="keep the catalog here and reuse it next time")
    parser.add_argument("--cones", type=int, default=200, help="cones to time (default 200)")
    parser.add_argument("--scans", type=int, default=5, help="full scans to time (default 5)")
    parser.add_argument("--radius", type=float, default=10.0, help="cone radius, arcsec (default 10)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ztfcat-cone-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    url = args.database_url or f"sqlite:///{workdir / 'catalog.sqlite'}"
    catalog = Catalog(url, workdir / "data")
    try:
        release_id, others = existing(catalog)
        if others:
            print(
                f"refusing: {catalog.url_for_display} holds {others:,} alerts of other releases",
                file=sys.stderr,
            )
            return 2
        with catalog.engine.connect() as conn:
            have = conn.execute(select(func.count()).select_from(alerts)).scalar_one()
        if release_id is None or have != args.alerts:
            print(f"building {args.alerts:,} alerts rows in {catalog.url_for_display}", file=sys.stderr)
            build(catalog, args.alerts, args.seed)
        else:
            print(f"reusing {have:,} alerts rows in {catalog.url_for_display}", file=sys.stderr)
        return run(catalog, args)
    finally:
        catalog.close()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def run(catalog: Catalog, args) -> int:
    engine = catalog.engine
    radius_deg = args.radius / 3600.0
    rng = np.random.default_rng(args.seed + 1)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT candid, ra, dec FROM alerts")).all()
    candid = np.array([r[0] for r in rows], dtype=np.int64)
    ra = np.array([r[1] for r in rows], dtype=np.float64)
    dec = np.array([r[2] for r in rows], dtype=np.float64)
    half = args.cones // 2
    picks = rng.integers(0, len(candid), half)
    centres = [(float(ra[i]), float(dec[i]), "on an alert") for i in picks]
    sin_lo = np.sin(np.radians(-31.0))
    for r, d in zip(
        rng.uniform(0, 360, args.cones - half),
        np.degrees(np.arcsin(rng.uniform(sin_lo, 1, args.cones - half))),
        strict=True,
    ):
        centres.append((float(r), float(d), "anywhere"))

    cone_search(engine, centres[0][0], centres[0][1], args.radius)  # warm the connection pool and caches
    times: dict[str, list[float]] = {"on an alert": [], "anywhere": []}
    found = wrong = 0
    for r, d, kind in centres:
        start = time.perf_counter()
        table = cone_search(engine, r, d, args.radius)
        times[kind].append(time.perf_counter() - start)
        expected = _nearest(candid, np.asarray(separation_deg(r, d, ra, dec)), radius_deg)
        wrong += list(table["candid"]) != expected
        found += len(table)

    scans = []
    for r, d, _kind in centres[: args.scans]:
        start = time.perf_counter()
        answer = full_scan(engine, r, d, radius_deg)
        scans.append(time.perf_counter() - start)
        wrong += answer != list(cone_search(engine, r, d, args.radius)["candid"])

    every = times["on an alert"] + times["anywhere"]
    cone_ms = 1000 * float(np.median(every))
    scan_ms = 1000 * float(np.median(scans))
    backend = engine.dialect.name
    print(f"\ncone search, r = {args.radius:g} arcsec, {len(candid):,} alerts rows, {backend}")
    print(f"{'method':34s} {'runs':>5s} {'median ms':>10s} {'p90 ms':>8s}")
    for label, values in (
        ("hpx index, centre on an alert", times["on an alert"]),
        ("hpx index, centre anywhere", times["anywhere"]),
        ("hpx index, all", every),
        ("full scan + numpy", scans),
    ):
        ms = 1000 * np.asarray(values)
        print(f"{label:34s} {len(ms):5d} {np.median(ms):10.2f} {np.percentile(ms, 90):8.2f}")
    print(f"speed-up (median full scan / median cone): {scan_ms / cone_ms:,.0f}x")
    print(f"alerts found in {len(centres)} cones: {found}; answers differing from brute force: {wrong}")
    print(f"targets: median < 20 ms ({'met' if cone_ms < 20 else 'MISSED'}), "
          f">= 100x ({'met' if scan_ms / cone_ms >= 100 else 'MISSED'})")  # fmt: skip
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
