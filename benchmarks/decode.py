"""Microseconds per alert to turn a packet into rows, or into fastavro's dicts: fastavro against ztfcat.ingest.rowdecode.

    python benchmarks/decode.py [--runs 5] [--synthetic 300] [--seconds 0.5]

Each way of decoding is timed over the same packets (the real 4.02 ones in ../shared/data, when present,
and synthetic 4.02 packets of real shape: 15 prv_candidates, 10 fp_hists, real-size cutouts), runs
alternating between the ways so a busy moment of the machine spreads over all of them; each row is the
median of ``--runs`` runs with its min-max.  Times are CPU time of this process (``time.process_time``),
so other work on the machine shows less than in wall time.  Every way starts from the packet bytes,
schema caches warm:

``fastavro history dicts``       ``AlertDecoder.history``: the record up to the history as dicts
``fastavro history -> rows``     the same, then candidate/prv/fp tuples as ingest and history build them
``rows() compiled``              ``AlertDecoder.rows``, the C executor
``rows() python``                ``AlertDecoder.rows(path="python")``, the plan as generated Python
``rows() fastavro``              ``AlertDecoder.rows(path="fastavro")``, fastavro then tuples
``fastavro prefix dicts``        ``AlertDecoder.prefix``: up to ``candidate`` (the alerts table alone)
``rows(history=False) compiled`` the same fields as rows
``executor on the datum``        ``RowPlan.decode`` alone, without the container framing
``fastavro full dicts``          the whole record as dicts by fastavro, cutouts included (the old ``get_alert``)
``full() compiled``              ``AlertDecoder.full``: the same dicts by the whole plan (``get_alert``, ``iter_alerts``)

Not a test: it prints numbers, and checks only that the ways agree on the rows and on the dicts.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from ztfcat.ingest import rowdecode
from ztfcat.ingest.avro import AlertDecoder, _blocks, read_header
from ztfcat.testing import synthetic

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "ztf-alerts" / "alerts" / "v4.02"


def _synthetic(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    pool = synthetic.cutout_pool(rng, n=16)
    return [
        synthetic.alert_bytes(
            synthetic.make_alert(
                rng,
                object_id=f"ZTF20aa{i:05d}",
                candid=1200000000000000000 + i,
                jd=2459000.5 + i * 1e-4,
                ra=float(rng.uniform(0, 360)),
                dec=float(rng.uniform(-30, 80)),
                n_prv=15,
                n_fp=10,
                cutout_pool=pool,
            )
        )
        for i in range(n)
    ]


def _ways(decoder: AlertDecoder) -> dict:
    prv_columns, fp_columns, cand_columns = (
        rowdecode.PRV_COLUMNS,
        rowdecode.FP_COLUMNS,
        rowdecode.CANDIDATE_COLUMNS,
    )

    def history_rows(packet):
        _parsed, record = decoder.history(packet)
        candidate = record["candidate"]
        row = [candidate.get(c) for c in cand_columns]
        prv = [tuple(p.get(c) for c in prv_columns) for p in record.get("prv_candidates") or ()]
        fp = [tuple(p.get(c) for c in fp_columns) for p in record.get("fp_hists") or ()]
        return row, prv, fp

    def datum_only(item):
        plan, datum = item
        return plan.decode(datum, path="compiled")

    return {
        "fastavro history dicts": (decoder.history, False),
        "fastavro history -> rows": (history_rows, False),
        "rows() compiled": (lambda p: decoder.rows(p, path="compiled"), False),
        "rows() python": (lambda p: decoder.rows(p, path="python"), False),
        "rows() fastavro": (lambda p: decoder.rows(p, path="fastavro"), False),
        "fastavro prefix dicts": (decoder.prefix, False),
        "rows(history=False) compiled": (lambda p: decoder.rows(p, history=False, path="compiled"), False),
        "executor on the datum": (datum_only, True),
        "fastavro full dicts": (lambda p: decoder._decode(p, "full")[1], False),
        "full() compiled": (decoder.full, False),
    }


def _time(fn, items, seconds: float) -> float:
    """CPU µs per item: whole passes over ``items`` until ``seconds`` of CPU time have gone by."""
    done = 0
    start = time.process_time()
    while True:
        for item in items:
            fn(item)
        done += len(items)
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return elapsed / done * 1e6


def measure(name: str, packets: list[bytes], runs: int, seconds: float) -> list[tuple]:
    decoder = AlertDecoder()
    datums = []
    for packet in packets:
        header = read_header(packet)
        datums.append((decoder.cache.plan(header.schema_json), _blocks(packet, header)[0][1]))
    for packet in packets:
        compiled = decoder.rows(packet, path="compiled")
        if any(decoder.rows(packet, path=path) != compiled for path in ("python", "fastavro")):
            raise SystemExit("the decoding paths disagree")
        if repr(decoder.full(packet)) != repr(decoder._decode(packet, "full")[1]):  # repr: NaN equals NaN
            raise SystemExit("the compiled reader and fastavro disagree")
    ways = _ways(decoder)
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(runs):
        for way, (fn, on_datum) in ways.items():
            times[way].append(_time(fn, datums if on_datum else packets, seconds))
    base = statistics.median(times["fastavro history -> rows"])
    rows = []
    for way, values in times.items():
        median = statistics.median(values)
        rows.append(
            (name, way, f"{median:8.1f}", f"{min(values):.1f}-{max(values):.1f}", f"{base / median:5.1f}x")
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--synthetic", type=int, default=300, help="synthetic packets to decode")
    parser.add_argument("--seconds", type=float, default=0.5, help="time per run and way")
    args = parser.parse_args(argv)
    if not rowdecode.executor_available():
        raise SystemExit("ztfcat.ingest._rowdecode is not built: pip install -e . compiles it")
    sets = []
    real = sorted(REAL.glob("*.avro"))
    if real:
        sets.append((f"real 4.02 ({len(real)})", [p.read_bytes() for p in real]))
    sets.append((f"synthetic 4.02 ({args.synthetic})", _synthetic(args.synthetic)))
    rows = []
    for name, packets in sets:
        rows += measure(name, packets, args.runs, args.seconds)
    headers = ("packets", "way", "µs/alert", "min-max", "vs fastavro->rows")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for r in [headers, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
