"""The catalog as typed Parquet datasets: alerts partitioned by night, and the light-curve tables.

Column types come from the catalog's own tables (:mod:`ztfcat.store.tables`), which are built from the Avro
field types of every schema version (:mod:`ztfcat.store.fields`): an Avro ``float`` is a Parquet ``float``
(float32), an Avro ``int`` an ``int32``, nullable or not, so a value read back equals the value fastavro
reads from the packet, and the schema is one union over versions 1.x-4.02 whatever night came first.
The columns are found by reflecting the :class:`~sqlalchemy.Table` objects, never listed by hand, so a
column added to the catalog appears in the export without a change here.

Layout of an export directory::

    alerts/night=YYYY-MM-DD/part-N.parquet   every alerts column, release name, hpx (hive partitioned)
    prv_candidates/part-N.parquet            light-curve points of the alerts' prv_candidates
    fp_hists/part-N.parquet                  forced photometry
    ztfcat_export.json                       what was written, and from which catalog

Every light-curve row carries ``objectId``, ``alert_candid`` (the packet it was read from), the
``release`` name and that packet's ``blob_path`` / ``blob_offset`` / ``blob_size``.  Rows are read by
keyset pagination (``WHERE key > :last ORDER BY key LIMIT n``) and written a page at a time, so memory
stays bounded by the page size whatever the catalog's size.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Boolean, Date, DateTime, Engine, Float, Integer, String, Table, select

from ..errors import ZtfcatError
from ..store.tables import alerts, fp_hists, prv_candidates, releases
from . import require
from .target import building

if TYPE_CHECKING:
    import pyarrow as pa

#: Rows read and written at a time: the bound on memory (a page of alerts is ~1 kB a row in Arrow).
PAGE = 20_000
#: Rows per Parquet file at most; a night's alerts roll over into further files past it.
ROWS_PER_FILE = 2_000_000
#: ``progress(dataset, n_rows_so_far)`` after each page written.
ColumnarProgress = Callable[[str, int], None]
#: Julian date of 1970-01-01T00:00 UTC: ``floor(jd - UNIX_EPOCH_JD)`` is the UT date as days since then.
UNIX_EPOCH_JD = 2440587.5
MANIFEST = "ztfcat_export.json"
#: Columns of the catalog tables that are database plumbing, not data, and never exported.
_SKIP = {"id", "release_id"}


def arrow_type(sql_type: Any) -> pa.DataType:
    """The Arrow type of a catalog column: what its Avro type was (``Float(24)`` is float32)."""
    import pyarrow as pa

    if isinstance(sql_type, Float):
        return pa.float32() if (sql_type.precision or 53) <= 24 else pa.float64()
    if isinstance(sql_type, BigInteger):
        return pa.int64()
    if isinstance(sql_type, Integer):
        return pa.int32()
    if isinstance(sql_type, Boolean):
        return pa.bool_()
    if isinstance(sql_type, DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(sql_type, Date):
        return pa.date32()
    if isinstance(sql_type, String):  # Text is a String
        return pa.string()
    raise ZtfcatError(f"no Arrow type for catalog column type {sql_type!r}")


def _field(column) -> pa.Field:
    import pyarrow as pa

    metadata = {"doc": column.comment} if column.comment else None
    # Avro floats are doubles in the database (exact read-back) and float32 again here, as ZTF wrote them
    kind = pa.float32() if column.info.get("avro") == "float" else arrow_type(column.type)
    return pa.field(column.name, kind, nullable=column.nullable, metadata=metadata)


def _data_columns(table: Table) -> list:
    return [c for c in table.c if c.name not in _SKIP and not (table is alerts and c.name == "night")]


def alerts_schema(healpix_column: bool = False) -> pa.Schema:
    """Schema of the alerts dataset: every alerts column but ``release_id``, then ``release``, ``night``.

    ``healpix_column`` adds ``_healpix_29``, HATS's name for the same nested order-29 index as ``hpx``.
    """
    import pyarrow as pa

    fields = [_field(c) for c in _data_columns(alerts)]
    fields.append(pa.field("release", pa.string(), nullable=False, metadata={"doc": "release file name"}))
    fields.append(pa.field("night", pa.date32(), nullable=False, metadata={"doc": "UT date of jd"}))
    if healpix_column:
        fields.append(
            pa.field("_healpix_29", pa.int64(), nullable=False, metadata={"doc": "HATS index, = hpx"})
        )
    return pa.schema(fields, metadata={"ztfcat": "alerts"})


#: Columns of the alert a light-curve row was read from that every such row carries.
_PACKET_COLUMNS = ("blob_path", "blob_offset", "blob_size")


def history_schema(table: Table) -> pa.Schema:
    """Schema of a light-curve dataset: the table's data columns, ``release``, and where the packet is."""
    import pyarrow as pa

    fields = [_field(c) for c in _data_columns(table)]
    fields.append(pa.field("release", pa.string(), nullable=False, metadata={"doc": "release file name"}))
    fields.extend(_field(alerts.c[name]) for name in _PACKET_COLUMNS)
    return pa.schema(fields, metadata={"ztfcat": table.name})


def _batch(rows: list, schema: pa.Schema) -> pa.RecordBatch:
    import pyarrow as pa

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pa.RecordBatch.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)],
        schema=schema,
    )


def iter_alert_batches(
    engine: Engine, *, page: int = PAGE, healpix_column: bool = False
) -> Iterator[pa.RecordBatch]:
    """Every alert as Arrow record batches of up to ``page`` rows, in candid order (keyset pagination).

    ``night`` is the table's own column where the catalog has one, else the UT date of ``jd``.
    """
    import numpy as np
    import pyarrow as pa

    schema = alerts_schema(healpix_column)
    data = _data_columns(alerts)
    has_night = "night" in alerts.c
    night = alerts.c.night if has_night else alerts.c.jd
    query = select(*data, releases.c.name, night).select_from(
        alerts.join(releases, releases.c.id == alerts.c.release_id)
    )
    n_data = len(data)
    hpx_at = [c.name for c in data].index("hpx")
    last = None
    while True:
        q = query.order_by(alerts.c.candid).limit(page)
        if last is not None:
            q = q.where(alerts.c.candid > last)
        with engine.connect() as conn:
            rows = conn.execute(q).all()
        if not rows:
            return
        last = rows[-1][0]
        columns = list(zip(*rows, strict=True))
        arrays = [
            pa.array(values, type=field.type) for values, field in zip(columns[:n_data], schema, strict=False)
        ]
        arrays.append(pa.array(columns[n_data], type=pa.string()))
        if has_night:
            arrays.append(pa.array(columns[n_data + 1], type=pa.date32()))
        else:
            jd = np.array(columns[n_data + 1], dtype=object)
            if any(v is None for v in jd):
                bad = next(r[0] for r in rows if r[n_data + 1] is None)
                raise ZtfcatError(f"alert {bad} has no jd, so no night to file it under")
            days = np.floor(jd.astype(float) - UNIX_EPOCH_JD).astype(np.int32)
            arrays.append(pa.array(days, type=pa.date32()))
        if healpix_column:
            arrays.append(arrays[hpx_at])
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        if len(rows) < page:
            return


def iter_history_batches(engine: Engine, table: Table, *, page: int = PAGE) -> Iterator[pa.RecordBatch]:
    """Every row of ``prv_candidates`` or ``fp_hists`` with its release and packet, in id order."""
    schema = history_schema(table)
    data = _data_columns(table)
    packet = [alerts.c[name] for name in _PACKET_COLUMNS]
    query = (
        select(table.c.id, *data, releases.c.name, *packet)
        .select_from(
            # a point's release is that of the alert whose copy it is (every alert_candid is an alert)
            table.join(alerts, alerts.c.candid == table.c.alert_candid).join(
                releases, releases.c.id == alerts.c.release_id
            )
        )
        .order_by(table.c.id)
    )
    last = None
    while True:
        q = query.limit(page) if last is None else query.where(table.c.id > last).limit(page)
        with engine.connect() as conn:
            rows = conn.execute(q).all()
        if not rows:
            return
        last = rows[-1][0]
        yield _batch([r[1:] for r in rows], schema)
        if len(rows) < page:
            return


def _counted(batches: Iterator[pa.RecordBatch], name: str, counts: dict, progress: ColumnarProgress | None):
    for batch in batches:
        counts[name] = counts.get(name, 0) + batch.num_rows
        yield batch
        if progress is not None:
            progress(name, counts[name])


def write_dataset(
    batches: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    directory: Path,
    partition_by: str | None = None,
    rows_per_file: int = ROWS_PER_FILE,
) -> None:
    """Stream ``batches`` into a Parquet dataset at ``directory`` (hive-partitioned by one column).

    ``rows_per_file`` caps each file (the HATS staging files are small, as each is one hats-import task).
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    partitioning = None
    if partition_by is not None:
        partitioning = ds.partitioning(pa.schema([schema.field(partition_by)]), flavor="hive")
    ds.write_dataset(
        batches,
        directory,
        schema=schema,
        format="parquet",
        partitioning=partitioning,
        basename_template="part-{i}.parquet",
        max_rows_per_file=rows_per_file,
        max_rows_per_group=min(rows_per_file, 1 << 16),
        min_rows_per_group=min(PAGE, rows_per_file, 1 << 16),
        # Rows wait in memory per open file until a row group is full; candid order is about night
        # order, so keeping few files open (closing one flushes it) bounds memory over many nights.
        max_open_files=16,
        existing_data_behavior="error",
        create_dir=True,
        use_threads=False,  # files then hold rows in candid / id order
    )
    directory.mkdir(parents=True, exist_ok=True)  # an empty dataset is still a dataset


@dataclass(frozen=True)
class ParquetReport:
    """What a Parquet export wrote: rows per dataset, bytes on disk, time taken, and where."""

    n_alerts: int
    n_prv_candidates: int
    n_fp_hists: int
    n_bytes: int
    seconds: float
    destination: Path

    def __str__(self) -> str:
        rate = self.n_alerts / self.seconds if self.seconds > 0 else 0.0
        return (
            f"exported {self.n_alerts} alerts, {self.n_prv_candidates} prv_candidates and "
            f"{self.n_fp_hists} fp_hists ({self.n_bytes} bytes of Parquet) to {self.destination} "
            f"in {self.seconds:.1f} s ({rate:.0f} alerts/s)"
        )


def dir_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def write_parquet(
    engine: Engine,
    target: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    page: int = PAGE,
    progress: ColumnarProgress | None = None,
) -> ParquetReport:
    """Export the whole catalog as Parquet datasets at ``target`` (see the module docstring for the layout).

    Built beside ``target`` and renamed into place when complete, so an interrupted export leaves no
    dataset under the name (and a replaced one stays whole until the new one is).

    Raises
    ------
    ZtfcatError
        ``target`` is not empty and ``overwrite`` is false, or a row cannot be exported.
    MissingExtraError
        pyarrow is not installed (``pip install 'ztfcat[hats]'``).
    """
    require("pyarrow")
    start = time.perf_counter()
    counts: dict[str, int] = {}
    with building(target, overwrite) as partial:
        write_dataset(
            _counted(iter_alert_batches(engine, page=page), "alerts", counts, progress),
            alerts_schema(),
            partial / "alerts",
            partition_by="night",
        )
        for table in (prv_candidates, fp_hists):
            write_dataset(
                _counted(iter_history_batches(engine, table, page=page), table.name, counts, progress),
                history_schema(table),
                partial / table.name,
            )
        seconds = time.perf_counter() - start
        manifest = {
            "format": "ztfcat parquet export",
            "datasets": {"alerts": "alerts", "prv_candidates": "prv_candidates", "fp_hists": "fp_hists"},
            "partitioning": {"alerts": "hive: night=YYYY-MM-DD (UT date of jd)"},
            "rows": {name: counts.get(name, 0) for name in ("alerts", "prv_candidates", "fp_hists")},
            "source": engine.url.render_as_string(hide_password=True),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        n_bytes = dir_bytes(partial)
    return ParquetReport(
        n_alerts=counts.get("alerts", 0),
        n_prv_candidates=counts.get("prv_candidates", 0),
        n_fp_hists=counts.get("fp_hists", 0),
        n_bytes=n_bytes,
        seconds=seconds,
        destination=Path(target).absolute(),
    )


# -- objects with nested light curves ------------------------------------------------------------

#: Objects per page of :func:`iter_object_batches` (their light curves come in the same page).
OBJECT_PAGE = 2_000


def objects_schema() -> pa.Schema:
    """One row per object: its mean position, alert count and span, and two nested light curves.

    ``lightcurve`` is the object's ``prv_candidates`` rows (detections and upper limits, oldest first)
    and ``forced`` its ``fp_hists`` rows, each a struct of equal-length lists (one per column, typed as
    :func:`history_schema`): the nested layout of nested-pandas, which lsdb loads column by column.
    """
    import pyarrow as pa

    def nested(table: Table) -> pa.DataType:
        # A struct of equal-length lists, the layout nested-pandas and lsdb read (and load in part).
        fields = [f for f in history_schema(table) if f.name != "objectId"]
        return pa.struct([pa.field(f.name, pa.list_(f.type), metadata=f.metadata) for f in fields])

    return pa.schema(
        [
            pa.field("objectId", pa.string(), nullable=False),
            pa.field("ra", pa.float64(), nullable=False, metadata={"doc": "mean of the alerts' ra [deg]"}),
            pa.field("dec", pa.float64(), nullable=False, metadata={"doc": "mean of the alerts' dec [deg]"}),
            pa.field("n_alerts", pa.int32(), nullable=False),
            pa.field("first_jd", pa.float64(), nullable=False),
            pa.field("last_jd", pa.float64(), nullable=False),
            pa.field("lightcurve", nested(prv_candidates)),
            pa.field("forced", nested(fp_hists)),
        ],
        metadata={"ztfcat": "objects"},
    )


def _mean_position(ra: Any, dec: Any) -> tuple[float, float]:
    """Mean direction of positions in degrees, by unit vectors: right across RA 0/360 and at the poles."""
    import numpy as np

    r, d = np.radians(np.asarray(ra, dtype=float)), np.radians(np.asarray(dec, dtype=float))
    x, y, z = (np.cos(d) * np.cos(r)).sum(), (np.cos(d) * np.sin(r)).sum(), np.sin(d).sum()
    mean_ra = float(np.degrees(np.arctan2(y, x))) % 360.0
    mean_dec = float(np.degrees(np.arctan2(z, np.hypot(x, y))))
    return (0.0 if mean_ra == 360.0 else mean_ra), mean_dec


def _nested_column(engine: Engine, table: Table, object_ids: list[str], struct_type: pa.DataType):
    """The rows of ``table`` of ``object_ids``, oldest first, as one struct of lists per object."""
    import numpy as np
    import pyarrow as pa

    schema = history_schema(table)
    data = _data_columns(table)
    packet = [alerts.c[name] for name in _PACKET_COLUMNS]
    query = (
        select(*data, releases.c.name, *packet)
        .select_from(
            # a point's release is that of the alert whose copy it is (every alert_candid is an alert)
            table.join(alerts, alerts.c.candid == table.c.alert_candid).join(
                releases, releases.c.id == alerts.c.release_id
            )
        )
        .where(table.c.objectId.in_(object_ids))
        .order_by(table.c.jd, table.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    flat = pa.Table.from_batches([_batch(rows, schema)], schema=schema)
    position = {oid: i for i, oid in enumerate(object_ids)}
    owner = np.array([position[r[0]] for r in rows], dtype=np.int64)
    order = np.argsort(owner, kind="stable")  # by object, oldest first within each
    counts = np.bincount(owner, minlength=len(object_ids))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    taken = flat.take(pa.array(order)).drop_columns(["objectId"])
    offsets_array = pa.array(offsets, pa.int32())
    lists = [
        pa.ListArray.from_arrays(offsets_array, taken.column(f.name).combine_chunks(), type=f.type)
        for f in struct_type
    ]
    return pa.StructArray.from_arrays(lists, fields=list(struct_type))


def iter_object_batches(engine: Engine, *, page: int = OBJECT_PAGE) -> Iterator[pa.RecordBatch]:
    """Every object, in objectId order, with its nested light curves (keyset pagination by objectId)."""
    import pyarrow as pa
    from sqlalchemy import func

    schema = objects_schema()
    last = None
    while True:
        ids = select(alerts.c.objectId).distinct().order_by(alerts.c.objectId).limit(page)
        if last is not None:
            ids = ids.where(alerts.c.objectId > last)
        with engine.connect() as conn:
            object_ids = list(conn.execute(ids).scalars())
            if not object_ids:
                return
            spans = {
                r[0]: r[1:]
                for r in conn.execute(
                    select(alerts.c.objectId, func.count(), func.min(alerts.c.jd), func.max(alerts.c.jd))
                    .where(alerts.c.objectId.in_(object_ids))
                    .group_by(alerts.c.objectId)
                )
            }
            positions: dict[str, list] = {}
            for oid, ra, dec in conn.execute(
                select(alerts.c.objectId, alerts.c.ra, alerts.c.dec).where(alerts.c.objectId.in_(object_ids))
            ):
                positions.setdefault(oid, []).append((ra, dec))
        last = object_ids[-1]
        means = [_mean_position(*zip(*positions[oid], strict=True)) for oid in object_ids]
        arrays = [
            pa.array(object_ids, pa.string()),
            pa.array([m[0] for m in means], pa.float64()),
            pa.array([m[1] for m in means], pa.float64()),
            pa.array([spans[oid][0] for oid in object_ids], pa.int32()),
            pa.array([spans[oid][1] for oid in object_ids], pa.float64()),
            pa.array([spans[oid][2] for oid in object_ids], pa.float64()),
            _nested_column(engine, prv_candidates, object_ids, schema.field("lightcurve").type),
            _nested_column(engine, fp_hists, object_ids, schema.field("forced").type),
        ]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        if len(object_ids) < page:
            return
