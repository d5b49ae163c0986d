"""Cross-match benchmark: 100,000 positions against a million alerts, three ways, same answer.

    python benchmarks/crossmatch.py [--alerts 1000000] [--positions 100000] [--radius 2]
                                    [--loop-sample 1000] [--postgres-url URL] [--million-csv]

The catalog holds bare alert rows (position, hpx, jd, fid, magpsf: what a cross-match reads), written
straight into a fresh catalog's ``alerts`` table; ingesting a million real-shape packets would take
most of an hour on two cores and change nothing in this measurement.  Half the positions are alerts
moved by up to an arcsecond (so there are matches), half are uniform on the sky.  It times

- ``Catalog.crossmatch`` (the vectorised HEALPix range join);
- a loop of ``Catalog.cone_search``, one per position, timed on ``--loop-sample`` positions and
  extrapolated;
- astropy's ``search_around_sky`` (a k-d tree) on the same data, with and without reading the alerts'
  positions out of the database first;

checks that the three give the same pairs, prints the rows and ratios, and with ``--million-csv``
runs ``ztfcat xmatch`` on a million-row CSV in a child process to measure its peak memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_WORK, run_timed, scratch_postgres, table  # noqa: E402

JD0 = 2458849.5


def random_sky(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    return ra, dec


def build(url: str, data_dir: Path, n: int, seed: int = 0) -> None:
    """Fill a fresh catalog with ``n`` bare alerts (uniform sky), in batches straight through the driver."""
    from ztfcat import Catalog
    from ztfcat.ingest.pipeline import night_observed
    from ztfcat.store.sky import hpx_index
    from ztfcat.store.tables import releases

    catalog = Catalog(url, data_dir)
    engine = catalog.engine
    with engine.begin() as conn:
        if conn.exec_driver_sql("SELECT count(*) FROM alerts").scalar() == n:
            return
        conn.exec_driver_sql("DELETE FROM alerts")
        conn.exec_driver_sql("DELETE FROM releases")
        release_id = conn.execute(
            releases.insert()
            .values(name="ztf_public_20200101.tar.gz", status="complete")
            .returning(releases.c.id)
        ).scalar_one()
    rng = np.random.default_rng(seed)
    ra, dec = random_sky(rng, n)
    hpx = hpx_index(ra, dec)
    jd = JD0 + rng.uniform(0, 30, n)
    fid = rng.integers(1, 3, n)
    mag = rng.uniform(15, 21, n)
    mark = "?" if engine.dialect.name == "sqlite" else "%s"
    names = 'candid, "objectId", schemavsn, release_id, blob_path, blob_size, hpx, ra, dec, jd, fid, magpsf, night'
    sql = f"INSERT INTO alerts ({names}) VALUES ({', '.join([mark] * 13)})"  # noqa: S608 - placeholders only
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        step = 50_000
        for start in range(0, n, step):
            stop = min(n, start + step)
            cursor.executemany(
                sql,
                [
                    (
                        1_000_000_000_000_000_000 + i,
                        f"ZTF20{i:07d}",
                        "4.02",
                        release_id,
                        "alerts/x.avro",
                        1,
                        int(hpx[i]),
                        float(ra[i]),
                        float(dec[i]),
                        float(jd[i]),
                        int(fid[i]),
                        float(mag[i]),
                        night_observed(float(jd[i])).isoformat(),
                    )
                    for i in range(start, stop)
                ],
            )
            print(f"  {stop} alerts written", file=sys.stderr, flush=True)
        raw.commit()
        cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    catalog.close()


def alert_positions(catalog) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    raw = catalog.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT candid, ra, dec FROM alerts")
        rows = cursor.fetchall()
    finally:
        raw.close()
    data = np.array(rows, dtype=object)
    return data[:, 0].astype(np.int64), data[:, 1].astype(float), data[:, 2].astype(float)


def positions(candid_ra_dec, m: int, seed: int = 1):
    from astropy.table import Table

    _candid, ra, dec = candid_ra_dec
    rng = np.random.default_rng(seed)
    qra, qdec = random_sky(rng, m)
    pick = rng.integers(0, len(ra), m // 2)
    # moved by up to ~1 arcsec
    qra[: m // 2] = ra[pick] + rng.normal(0, 0.5 / 3600, m // 2) / np.maximum(
        np.cos(np.radians(dec[pick])), 1e-3
    )
    qdec[: m // 2] = np.clip(dec[pick] + rng.normal(0, 0.5 / 3600, m // 2), -90, 90)
    return Table({"ra": np.mod(qra, 360.0), "dec": qdec, "name": [f"t{i}" for i in range(m)]})


def run(url: str, data_dir: Path, args) -> list[tuple]:
    import astropy.units as u
    from astropy.coordinates import SkyCoord, search_around_sky

    from ztfcat import Catalog

    t = time.perf_counter()
    build(url, data_dir, args.alerts)
    print(f"catalog ready in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    catalog = Catalog(url, data_dir)
    t = time.perf_counter()
    everything = alert_positions(catalog)
    read_s = time.perf_counter() - t
    inputs = positions(everything, args.positions)
    radius = args.radius
    rows = []

    catalog.crossmatch(inputs[:100], radius)  # warm the connection and imports
    t = time.perf_counter()
    result = catalog.crossmatch(inputs, radius, columns=["candid"])
    xm_s = time.perf_counter() - t
    pairs = set(zip(result["input_row"].tolist(), result["candid"].tolist(), strict=True))
    rows.append(("Catalog.crossmatch", f"{xm_s:.2f}", "1.0", len(pairs)))

    sample = np.random.default_rng(2).choice(len(inputs), args.loop_sample, replace=False)
    t = time.perf_counter()
    loop_pairs = set()
    for i in sample:
        cone = catalog.cone_search(
            float(inputs["ra"][i]), float(inputs["dec"][i]), radius, columns=["candid"]
        )
        loop_pairs |= {(int(i), int(c)) for c in cone["candid"]}
    loop_s = (time.perf_counter() - t) * len(inputs) / len(sample)
    chosen = set(sample.tolist())
    same_loop = loop_pairs == {p for p in pairs if p[0] in chosen}
    rows.append(
        (
            f"cone_search loop (extrapolated from {len(sample)})",
            f"{loop_s:.1f}",
            f"{loop_s / xm_s:.0f}",
            "same" if same_loop else "DIFFERENT",
        )
    )

    candid, ra, dec = everything
    t = time.perf_counter()
    cat_coord = SkyCoord(ra * u.deg, dec * u.deg)
    in_coord = SkyCoord(np.asarray(inputs["ra"]) * u.deg, np.asarray(inputs["dec"]) * u.deg)
    idx_in, idx_cat, _sep, _ = search_around_sky(in_coord, cat_coord, radius * u.arcsec)
    sas_s = time.perf_counter() - t
    sas_pairs = set(zip(idx_in.tolist(), candid[idx_cat].tolist(), strict=True))
    same = "same" if sas_pairs == pairs else f"DIFFERENT ({len(sas_pairs ^ pairs)} pairs)"
    rows.append(
        ("astropy search_around_sky (positions in memory)", f"{sas_s:.2f}", f"{sas_s / xm_s:.2f}", same)
    )
    rows.append(
        (
            "  + reading 1 position per alert from the db",
            f"{sas_s + read_s:.2f}",
            f"{(sas_s + read_s) / xm_s:.2f}",
            "",
        )
    )
    catalog.close()
    rows.append(
        (
            "peak RSS of this process (MB)",
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}",
            "",
            "",
        )
    )

    if args.million_csv:
        path = args.work / "xmatch-1M.csv"
        if not path.exists():
            big = positions(everything, 1_000_000, seed=3)
            big.write(path, format="ascii.csv")
        env = dict(os.environ, ZTFCAT_DATABASE_URL=url, ZTFCAT_DATA_DIR=str(data_dir))
        timed = run_timed(
            [
                sys.executable,
                "-m",
                "ztfcat.cli.root",
                "xmatch",
                str(path),
                "--radius",
                str(radius),
                "--format",
                "csv",
                "-c",
                "candid",
            ],
            env=env,
        )
        n_out = max(0, timed.stdout.count("\n") - 1)
        rows.append(
            (
                f"ztfcat xmatch 1,000,000-row CSV ({n_out} pairs)",
                f"{timed.seconds:.1f}",
                "",
                f"peak RSS {timed.peak_rss_mb:.0f} MB",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1_000_000)
    parser.add_argument("--positions", type=int, default=100_000)
    parser.add_argument("--radius", type=float, default=2.0, help="arcsec")
    parser.add_argument("--loop-sample", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--postgres-url", default=None, help="also run on a scratch database of this server")
    parser.add_argument("--million-csv", action="store_true", help="also time a 1,000,000-row CSV by the CLI")
    parser.add_argument("--no-sqlite", action="store_true", help="only the PostgreSQL run")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    headers = ("method", "seconds", "x crossmatch", "pairs / answer")
    data_dir = args.work / f"xmatch-{args.alerts}"
    url = f"sqlite:///{data_dir / 'catalog.sqlite'}"
    if not args.no_sqlite:
        print(f"SQLite, {args.alerts} alerts, {args.positions} positions, radius {args.radius} arcsec")
        print(table(run(url, data_dir, args), headers), flush=True)
    if args.postgres_url:
        with scratch_postgres(args.postgres_url, "ztfcat_xmatch_bench") as pg_url:
            print(
                f"\nPostgreSQL, {args.alerts} alerts, {args.positions} positions, radius {args.radius} arcsec"
            )
            print(table(run(pg_url, data_dir / "pg", args), headers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
