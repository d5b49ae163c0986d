"""Avro containers for the tests of the framing in ``ztfcat.ingest.avro``: synthetic alerts, hand-built
containers, and fastavro as the reference reader of headers and blocks."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator

import fastavro
import numpy as np
from fastavro.read import HEADER_SCHEMA

from ztfcat.ingest.avro import MAGIC, encode_long, read_header
from ztfcat.testing import synthetic

SYNC = bytes(range(16))


def alert(candid: int = 1_000_000_001, version: str = "4.02", n_prv: int = 2, cutouts: bool = False) -> dict:
    """One synthetic alert record of ``version``."""
    rng = np.random.default_rng(candid)
    return synthetic.make_alert(
        rng,
        version=version,
        object_id="ZTF18aaaaaaa",
        candid=candid,
        jd=2458350.5 + candid % 100 / 1000,
        ra=10.0,
        dec=20.0,
        n_prv=n_prv,
        n_fp=1,
        cutouts=cutouts,
    )


def packet(candid: int = 1_000_000_001, version: str = "4.02", **options) -> bytes:
    """One alert as ZTF ships it (codec null, schema embedded), written by :mod:`ztfcat.testing.synthetic`."""
    return synthetic.alert_bytes(alert(candid, version, **options), version)


def written(records: list[dict], codec: str = "null", version: str = "4.02", **options) -> bytes:
    """A container of ``records`` written by ``fastavro.writer`` (the reference writer)."""
    buf = io.BytesIO()
    fastavro.writer(buf, synthetic.writer_schema(version), records, codec=codec, **options)
    return buf.getvalue()


def container(meta: dict[str, bytes], blocks: list[tuple[int, bytes]], sync: bytes = SYNC) -> bytes:
    """A container assembled by hand, so its counts, sizes and markers can say anything."""
    parts = [MAGIC, encode_long(len(meta))] if meta else [MAGIC]
    for key, value in meta.items():
        parts += [encode_long(len(key)), key.encode(), encode_long(len(value)), value]
    parts += [b"\x00", sync]
    for count, data in blocks:
        parts += [encode_long(count), encode_long(len(data)), data, sync]
    return b"".join(parts)


def fastavro_header(data: bytes) -> tuple[dict, int]:
    """The header as fastavro decodes it (the Avro spec's own header schema) and where blocks start."""
    stream = io.BytesIO(data)
    header = fastavro.schemaless_reader(stream, HEADER_SCHEMA)
    return header, stream.tell()


def fastavro_blocks(data: bytes) -> list[tuple[int, bytes]]:
    """Every block as fastavro's ``block_reader`` frames it: (record count, decompressed bytes)."""
    return [(b.num_records, b.bytes_.getvalue()) for b in fastavro.block_reader(io.BytesIO(data))]


def fastavro_records(data: bytes) -> list[dict]:
    return list(fastavro.reader(io.BytesIO(data)))


def record_bytes(packet: bytes) -> bytes:
    """The record bytes of a one-record, codec-null packet: past the header, the count and the size."""
    pos = read_header(packet).data_start
    for _ in range(2):
        while packet[pos] & 0x80:
            pos += 1
        pos += 1
    return packet[pos:-16]


def seeded_packet(version: str = "4.02", seed: int = 1, **kw) -> bytes:
    """A synthetic alert of ``version`` drawn from ``seed`` (options as :func:`ztfcat.testing.synthetic.make_alert`)."""
    args = dict(object_id="ZTF18abcdefg", candid=595147624915010001, jd=2458349.6476, ra=10.5, dec=-20.25)
    args.update(kw)
    record = synthetic.make_alert(np.random.default_rng(seed), version=version, **args)
    return synthetic.alert_bytes(record, version)


def rewritten(packet: bytes, change=None, schema_change=None, codec: str = "null") -> bytes:
    """The packet's record written again by fastavro, after editing the record and/or the schema."""
    reader = fastavro.reader(io.BytesIO(packet))
    (record,) = list(reader)
    schema = json.loads(reader.metadata["avro.schema"])
    if schema_change:
        schema_change(schema)
    if change:
        change(record)
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), [record], codec=codec)
    return out.getvalue()


def with_a_map(packet: bytes) -> bytes:
    """The packet with a top-level map field ``tags`` = ``{"k": "v"}`` before ``candidate``: a type no
    plan covers, read before the history."""

    def schema_change(schema):
        schema["fields"].insert(
            2, {"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}}
        )

    def change(record):
        record["tags"] = {"k": "v"}

    return rewritten(packet, change, schema_change)


def damaged_copies(datum: bytes, n: int, seed: int) -> Iterator[bytes]:
    """``n`` copies of ``datum``, each with 1, 2 or 4 bytes overwritten at random (values chosen to
    break varints, lengths and union indexes more often than chance would)."""
    rng = random.Random(seed)
    for _ in range(n):
        damaged = bytearray(datum)
        for _ in range(rng.choice((1, 1, 2, 4))):
            damaged[rng.randrange(len(damaged))] = rng.choice((0, 1, 2, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        yield bytes(damaged)
