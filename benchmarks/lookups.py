"""Reading a catalog against what a user of the seed's layout does on the same files.

    python benchmarks/lookups.py setup {alerts,listing} --size N [--work DIR]
    python benchmarks/lookups.py measure BENCH SIDE --size N [--work DIR]

The seed kept one folder per night of ``<candid>.avro`` files and answered every question from the disk:
a lookup globs ``*/<candid>.avro`` over the night folders, listing globs every file, iteration and any
filter decode every file.  Each benchmark here has two sides, ``ztfcat`` and ``seed``, on the same alerts;
``measure`` runs one side and prints one JSON line (seconds, work done, peak RSS of this process), so
:mod:`run` can start each side in a fresh interpreter and memory is never shared between them.

Data sets (made by ``setup``, kept in ``--work`` and reused):

``alerts`` (lookup, iteration, filter)
    One synthetic night of ``N`` small packets (real schema and ``prv_candidates``, null cutouts) ingested
    into a ztfcat catalog, and the same packets laid out the seed's way in ``N / 20`` night folders of 20
    files each (1,000 folders for 20,000 alerts).  The catalog holds them as one release: ztfcat's lookup
    goes through the primary key and the stored path, whatever the number of releases.
``listing`` (listing, cone search)
    ``N`` ``alerts`` rows inserted directly (``cone_search.build``: ZTF-like positions, no packets) and, for
    the seed's side, ``N`` empty ``<candid>.avro`` files in folders of 1,000: listing never opens a file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_WORK  # noqa: E402

PER_NIGHT = 20
PER_FOLDER = 1000
LOOKUPS = 200
RB_MIN = 0.9


# -- data sets ------------------------------------------------------------------------------------


def alerts_dir(work: Path, size: int) -> Path:
    return work / f"alerts-{size}"


def listing_dir(work: Path, size: int) -> Path:
    return work / f"listing-{size}"


def setup_alerts(work: Path, size: int) -> Path:
    """Make (once) the ``alerts`` data set: a catalog and the seed's night folders of the same packets."""
    from ztfcat import Catalog
    from ztfcat.testing.synthetic import make_night

    root = alerts_dir(work, size)
    if (root / "done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    tarball = root / "ztf_public_20190819.tar.gz"
    make_night(tarball, night="20190819", n_alerts=size, cutouts=False, keep_records=False, seed=3)
    catalog = Catalog(f"sqlite:///{root / 'catalog.sqlite'}", root / "data", layout="files")
    try:
        catalog.ingest(tarball)
    finally:
        catalog.close()
    seed = root / "seed"
    with tarfile.open(tarball, "r|gz") as tar:
        for i, member in enumerate(tar):
            folder = seed / f"night{i // PER_NIGHT:05d}"
            if i % PER_NIGHT == 0:
                folder.mkdir(parents=True)
            (folder / Path(member.name).name).write_bytes(tar.extractfile(member).read())
            tar.members = []  # tarfile keeps every TarInfo otherwise
    tarball.unlink()
    (root / "done").write_text("ok")
    return root


def setup_listing(work: Path, size: int) -> Path:
    """Make (once) the ``listing`` data set: ``size`` catalog rows and ``size`` empty seed files."""
    import cone_search

    from ztfcat import Catalog

    root = listing_dir(work, size)
    if (root / "done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    catalog = Catalog(f"sqlite:///{root / 'catalog.sqlite'}", root / "data")
    try:
        cone_search.build(catalog, size, seed=1)
        ids = catalog.alert_ids()
    finally:
        catalog.close()
    seed = root / "seed"
    for lo in range(0, len(ids), PER_FOLDER):
        folder = seed / f"night{lo // PER_FOLDER:05d}"
        folder.mkdir(parents=True)
        for candid in ids[lo : lo + PER_FOLDER]:
            os.close(os.open(folder / f"{candid}.avro", os.O_WRONLY | os.O_CREAT, 0o644))
    (root / "done").write_text("ok")
    return root


# -- the seed's ways ------------------------------------------------------------------------------


def seed_lookup(seed: Path, candid: int) -> bytes:
    """The seed's ``get_alert_data(id, raw=True)``: find the file by globbing every night folder."""
    for path in seed.glob(f"*/{candid}.avro"):
        return path.read_bytes()
    raise KeyError(candid)


def seed_list(seed: Path) -> list[int]:
    """The seed's ``get_local_alert_list``: every file's name."""
    return sorted(int(p.stem) for p in seed.glob("*/*.avro"))


def seed_records(seed: Path):
    """Every alert as fastavro parses it, one file at a time: the seed's iteration and its only filter."""
    import fastavro

    for path in sorted(seed.glob("*/*.avro")):
        with open(path, "rb") as fh:
            yield from fastavro.reader(fh)


def jd_window(catalog) -> tuple[float, float]:
    """The middle half of the data set's time span: the filter's jd range."""
    with catalog.engine.connect() as conn:
        lo, hi = conn.exec_driver_sql("SELECT MIN(jd), MAX(jd) FROM alerts").one()
    return lo + (hi - lo) / 4, hi - (hi - lo) / 4


# -- measurements ---------------------------------------------------------------------------------


def measure(bench: str, side: str, work: Path, size: int) -> dict:
    """Run one side of one benchmark; what it did and how long it took (setup excluded)."""
    from ztfcat import Catalog

    root = listing_dir(work, size) if bench in ("listing", "cone") else alerts_dir(work, size)
    catalog = Catalog(f"sqlite:///{root / 'catalog.sqlite'}", root / "data")
    seed = root / "seed"
    try:
        ids = catalog.alert_ids()
        if bench == "lookup":
            picks = random.Random(5).sample(ids, min(LOOKUPS, len(ids)))
            if side == "ztfcat":
                catalog.get_alert(picks[0], raw=True)  # open the engine outside the timing
                fn = lambda c: catalog.get_alert(c, raw=True)  # noqa: E731
            else:
                fn = lambda c: seed_lookup(seed, c)  # noqa: E731
            start = time.perf_counter()
            digest = sum(len(fn(c)) for c in picks)
            seconds = time.perf_counter() - start
            return _result(seconds, len(picks), check=digest)
        if bench == "listing":
            start = time.perf_counter()
            found = catalog.alert_ids() if side == "ztfcat" else seed_list(seed)
            seconds = time.perf_counter() - start
            return _result(seconds, len(found), check=hash(tuple(found)))
        if bench == "iterate":
            n = 0
            start = time.perf_counter()
            if side == "ztfcat":
                for batch in catalog.iter_alerts(1000):
                    n += len(batch)
            else:
                for _record in seed_records(seed):
                    n += 1
            return _result(time.perf_counter() - start, n)
        if bench == "filter":
            lo, hi = jd_window(catalog)
            start = time.perf_counter()
            if side == "ztfcat":
                found = catalog.alert_ids(f"rb > {RB_MIN}", jd=(lo, hi))
            else:
                found = sorted(
                    r["candid"]
                    for r in seed_records(seed)
                    if (r["candidate"]["rb"] or 0) > RB_MIN and lo <= r["candidate"]["jd"] <= hi
                )
            seconds = time.perf_counter() - start
            return _result(seconds, len(found), check=hash(tuple(found)))
        if bench == "cone":
            return _cone(catalog, side)
        raise SystemExit(f"unknown benchmark {bench!r}")
    finally:
        catalog.close()


def _cone(catalog, side: str) -> dict:
    import numpy as np
    from cone_search import full_scan
    from sqlalchemy import text

    from ztfcat.store.conesearch import cone_search

    radius = 10.0
    rng = np.random.default_rng(3)
    # Centres on alerts picked through the key, not by loading every position: this process's peak RSS
    # is the cone search's own.
    with catalog.engine.connect() as conn:
        lo, hi = conn.execute(text("SELECT MIN(candid), MAX(candid) FROM alerts")).one()
        centres = [
            conn.execute(
                text("SELECT ra, dec FROM alerts WHERE candid >= :c ORDER BY candid LIMIT 1"), {"c": int(c)}
            ).one()
            for c in rng.integers(lo, hi, 50 if side == "ztfcat" else 3)
        ]
    cone_search(catalog.engine, centres[0][0], centres[0][1], radius)  # warm the pool and the caches
    times, found = [], 0
    for ra, dec in centres:
        start = time.perf_counter()
        if side == "ztfcat":
            found += len(cone_search(catalog.engine, ra, dec, radius))
        else:
            found += len(full_scan(catalog.engine, ra, dec, radius / 3600))
        times.append(time.perf_counter() - start)
    return _result(float(np.median(times)), len(centres), found=found)


def _result(seconds: float, n: int, **extra) -> dict:
    return {
        "seconds": seconds,
        "n": n,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup")
    setup.add_argument("dataset", choices=["alerts", "listing"])
    run = sub.add_parser("measure")
    run.add_argument("bench", choices=["lookup", "listing", "iterate", "filter", "cone"])
    run.add_argument("side", choices=["ztfcat", "seed"])
    for p in (setup, run):
        p.add_argument("--size", type=int, required=True)
        p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args(argv)
    if args.command == "setup":
        (setup_alerts if args.dataset == "alerts" else setup_listing)(args.work, args.size)
        return 0
    print(json.dumps(measure(args.bench, args.side, args.work, args.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
