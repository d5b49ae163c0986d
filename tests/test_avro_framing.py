"""The Avro container framing of ``ztfcat.ingest.avro`` against fastavro: headers, blocks, record splitting.

fastavro reads the same bytes independently (the spec's header schema, ``block_reader``, ``reader``);
the lean framing must agree with it on real packets of every schema version, multi-record and deflate
containers, and fail on damage with :class:`AlertDecodeError` only, in bounded memory.
"""

from __future__ import annotations

import io
import json
import tracemalloc
import zlib

import fastavro
import pytest

from tests.avrocraft import (
    SYNC,
    alert,
    container,
    fastavro_blocks,
    fastavro_header,
    fastavro_records,
    packet,
    written,
)
from ztfcat.errors import AlertDecodeError
from ztfcat.ingest.avro import (
    MAX_INFLATED,
    MAX_RECORDS,
    AlertDecoder,
    _blocks,
    _read_long,
    encode_long,
    read_header,
)
from ztfcat.testing import synthetic

SCHEMA = synthetic.schema.schema_json("4.02").encode()


def _agrees_with_fastavro(data: bytes) -> None:
    header = read_header(data)
    ref, data_start = fastavro_header(data)
    assert header.schema_json == ref["meta"]["avro.schema"]
    assert header.codec == ref["meta"].get("avro.codec", b"null").decode()
    assert header.sync == ref["sync"]
    assert header.data_start == data_start
    assert [(count, bytes(block)) for count, block in _blocks(data, header)] == fastavro_blocks(data)


# --- varints ---------------------------------------------------------------------------------------

LONGS = [0, 1, -1, 63, -64, 64, -65, 127, 128, 300, -300, 1 << 31, -(1 << 31), (1 << 63) - 1, -(1 << 63)]


@pytest.mark.parametrize("value", LONGS)
def test_varints_are_fastavros(value):
    stream = io.BytesIO()
    fastavro.schemaless_writer(stream, "long", value)
    assert encode_long(value) == stream.getvalue()
    assert _read_long(stream.getvalue() + b"tail", 0) == (value, len(stream.getvalue()))


def test_synthetic_writes_with_the_one_encoder():
    assert synthetic.encode._varint is encode_long


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (b"\x80", "truncated"),
        (b"\xff" * 9, "truncated"),
        (b"\xff" * 10 + b"\x01", "malformed number"),
        (b"\xff" * 9 + b"\x02", "longer than 64 bits"),  # ten bytes, but past a long's 64 bits
        (b"\x80" * 200, "malformed number"),
    ],
)
def test_malformed_varints(data, reason):
    with pytest.raises(AlertDecodeError, match=reason):
        _read_long(data, 0)


# --- headers ---------------------------------------------------------------------------------------


def test_synthetic_packet_header_and_block_agree_with_fastavro():
    _agrees_with_fastavro(packet())


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_fastavro_written_containers(codec):
    records = [alert(1_000_000_000 + i, n_prv=i % 3) for i in range(7)]
    data = written(records, codec, sync_interval=1)  # one block per record
    _agrees_with_fastavro(data)
    assert len(_blocks(data, read_header(data))) == 7
    several = written(records, codec)  # all seven records in one block
    _agrees_with_fastavro(several)
    assert [count for count, _ in _blocks(several, read_header(several))] == [7]
    for each in (data, several):
        packets = AlertDecoder().packets(each)
        assert [fastavro_records(p) for p in packets] == [[r] for r in fastavro_records(each)]
        assert all(p.startswith(each[: read_header(each).data_start]) for p in packets)
        found = AlertDecoder().members_alerts(each)
        assert [record["candid"] for _, _, record in found] == [r["candid"] for r in records]


def test_a_header_map_in_several_blocks_with_sizes_is_read():
    """The spec allows a map block count to be negative, followed by the block's size in bytes."""
    pair = encode_long(11) + b"avro.schema" + encode_long(len(SCHEMA)) + SCHEMA
    codec = encode_long(10) + b"avro.codec" + encode_long(4) + b"null"
    head = b"Obj\x01" + encode_long(-1) + encode_long(len(pair)) + pair + encode_long(1) + codec + b"\x00"
    record = synthetic.alert_bytes(alert())
    body = record[read_header(record).data_start - 16 :]  # sync, then the one block
    data = head + body
    _agrees_with_fastavro(data)


def test_truncation_at_every_offset_of_a_header():
    data = packet()
    start = read_header(data).data_start
    for cut in range(start):
        with pytest.raises(AlertDecodeError, match="truncated|bad magic"):
            read_header(data[:cut])
    assert read_header(data[:start]).data_start == start


def test_truncation_inside_the_block_is_reported():
    data = packet()
    header = read_header(data)
    for cut in list(range(header.data_start + 1, header.data_start + 8)) + list(
        range(len(data) - 20, len(data))
    ):
        with pytest.raises(AlertDecodeError, match="truncated"):
            _blocks(data[:cut], header)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"Obj\x02" + bytes(20), "bad magic"),
        (container({"avro.codec": b"null"}, []), "no schema"),
        (container({"avro.schema": SCHEMA, "avro.codec": b"\xff\xfe"}, []), "codec that is not text"),
        (b"Obj\x01" + encode_long(1) + encode_long(-5), "truncated"),
        (b"Obj\x01" + encode_long(1) + encode_long(1 << 40) + b"x", "truncated"),
        (b"Obj\x01" + encode_long(1 << 62) + encode_long(1) + b"k" + encode_long(0), "truncated"),
    ],
)
def test_damaged_headers(data, reason):
    with pytest.raises(AlertDecodeError, match=reason):
        read_header(data)


def _meta(schema: bytes) -> dict:
    return {"avro.schema": schema, "avro.codec": b"null"}


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        (b"[" * 100_000, "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"type": "record", "fields": [1]}', "not a list of typed fields"),
        (b'{"type": "record", "fields": {"name": "x"}}', "not a list of typed fields"),
        (b'{"type": "record", "fields": [{"name": "objectId"}]}', "not a list of typed fields"),
        (b'{"type": "record", "fields": [{"type": "int"}]}', "not a ZTF alert"),
        (
            b'{"type":"record","name":"a","fields":[{"name":"objectId","type":"string"},'
            b'{"name":"candid","type":"long"},{"name":"candidate","type":{"type":"record","name":"c",'
            b'"fields":[{"nmae":"jd","type":"double"}]}}]}',
            "cannot be parsed",
        ),
    ],
)
def test_malformed_embedded_schemas(schema, reason):
    data = container(_meta(schema), [(1, b"\x00")])
    with pytest.raises(AlertDecodeError, match=reason):
        AlertDecoder().members_alerts(data)


# --- blocks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blocks", "reason"),
    [
        ([(-1, b"x")], "truncated"),
        ([(1, b"")], None),
    ],
)
def test_negative_and_empty_blocks(blocks, reason):
    data = container(_meta(SCHEMA), blocks)
    if reason is None:
        with pytest.raises(AlertDecodeError, match="does not decode|no candidate"):
            AlertDecoder().members_alerts(data)
    else:
        with pytest.raises(AlertDecodeError, match=reason):
            AlertDecoder().members_alerts(data)


def test_a_block_claiming_more_bytes_than_there_are():
    head = container(_meta(SCHEMA), [])
    data = head + encode_long(1) + encode_long(1 << 60) + b"x" * 100 + SYNC
    with pytest.raises(AlertDecodeError, match="ends past the end of the file"):
        AlertDecoder().members_alerts(data)


def test_a_wrong_sync_marker():
    data = bytearray(packet())
    data[-1] ^= 1
    with pytest.raises(AlertDecodeError, match="sync marker"):
        AlertDecoder().members_alerts(bytes(data))


def test_unsupported_codec_and_broken_deflate():
    record = packet()
    body = record[read_header(record).data_start : -16]
    snappy = container({"avro.schema": SCHEMA, "avro.codec": b"snappy"}, [(1, b"x")])
    with pytest.raises(AlertDecodeError, match="unsupported Avro codec 'snappy'"):
        AlertDecoder().members_alerts(snappy)
    packer = zlib.compressobj(wbits=-15)
    deflated = packer.compress(body) + packer.flush()
    for damaged, reason in ((b"\xff" + deflated[1:], "does not inflate"), (deflated[:-5], "ends before")):
        data = container({"avro.schema": SCHEMA, "avro.codec": b"deflate"}, [(1, damaged)])
        with pytest.raises(AlertDecodeError, match=reason):
            AlertDecoder().members_alerts(data)


def _peak_mb(func) -> float:
    tracemalloc.start()
    try:
        func()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 1e6


def test_a_deflate_bomb_stops_at_the_cap():
    packer = zlib.compressobj(9, wbits=-15)
    bomb = b"".join(packer.compress(bytes(1 << 20)) for _ in range(128)) + packer.flush()  # 128 MiB of zeros
    assert len(bomb) < 1 << 20
    data = container({"avro.schema": SCHEMA, "avro.codec": b"deflate"}, [(1, bomb)])

    def run():
        with pytest.raises(AlertDecodeError, match=f"more than {MAX_INFLATED >> 20} MiB"):
            AlertDecoder().members_alerts(data)

    assert _peak_mb(run) < 2.3 * (MAX_INFLATED >> 20) + 10  # what it holds, and one copy


def test_many_small_deflate_blocks_share_one_cap():
    packer = zlib.compressobj(9, wbits=-15)
    block = packer.compress(bytes(MAX_INFLATED // 3)) + packer.flush()
    data = container({"avro.schema": SCHEMA, "avro.codec": b"deflate"}, [(1, block)] * 4)
    with pytest.raises(AlertDecodeError, match=f"more than {MAX_INFLATED >> 20} MiB"):
        AlertDecoder().members_alerts(data)


EMPTY_RECORDS = json.dumps(
    {
        "type": "record",
        "name": "bomb",
        "fields": [
            {"name": "objectId", "type": "null"},
            {"name": "candid", "type": "null"},
            {"name": "candidate", "type": {"type": "record", "name": "c", "fields": []}},
        ],
    }
).encode()


@pytest.mark.parametrize("count", [MAX_RECORDS + 1, 1 << 62])
def test_records_of_no_bytes_cannot_multiply_without_end(count):
    """A schema whose records take zero bytes would let one block claim endless records, each split
    into a packet of its own carrying a copy of the header."""
    data = container(_meta(EMPTY_RECORDS), [(count, b"")])

    def run():
        with pytest.raises(AlertDecodeError, match=f"claims {count} records"):
            AlertDecoder().members_alerts(data)

    assert _peak_mb(run) < 5


def test_records_of_no_bytes_within_the_caps_split():
    data = container(_meta(EMPTY_RECORDS), [(3, b"")])
    assert len(AlertDecoder().packets(data)) == 3


def test_a_large_header_copied_into_every_packet_is_capped():
    schema = json.loads(EMPTY_RECORDS)
    schema["doc"] = "x" * (2 << 20)  # a 2 MiB header: 65 records would make 130 MiB of packets
    data = container(_meta(json.dumps(schema).encode()), [(65, b"")])
    with pytest.raises(AlertDecodeError, match="claims 65 records"):
        AlertDecoder().packets(data)


# --- real packets ----------------------------------------------------------------------------------


def _sample(shared_alerts, per_version: int = 12) -> list:
    paths = []
    for folder in sorted((shared_alerts / "alerts").iterdir()):
        paths += sorted(folder.glob("*.avro"))[:per_version]
    return paths


@pytest.mark.shared
def test_real_packets_of_every_version_agree_with_fastavro(shared_alerts):
    paths = _sample(shared_alerts)
    assert len({p.parent.name for p in paths}) >= 10
    decoder = AlertDecoder()
    for path in paths:
        data = path.read_bytes()
        _agrees_with_fastavro(data)
        (ref,) = fastavro_records(data)
        ((alert_packet, parsed, record),) = decoder.members_alerts(data)
        assert alert_packet is data
        assert record["candid"] == ref["candid"]
        assert repr(record["candidate"]) == repr(ref["candidate"])  # repr: NaN fields equal
        assert repr(decoder.full(data)) == repr(ref)


@pytest.mark.shared
def test_the_multi_record_file_splits_into_fastavros_records(shared_alerts):
    data = (shared_alerts / "multi-record" / "avro_multi_alerts_other.avro").read_bytes()
    _agrees_with_fastavro(data)
    ref = fastavro_records(data)
    assert len(ref) > 1
    packets = AlertDecoder().packets(data)
    assert repr([fastavro_records(p) for p in packets]) == repr([[r] for r in ref])
    found = AlertDecoder().members_alerts(data)
    assert [record["candid"] for _, _, record in found] == [r["candid"] for r in ref]


@pytest.mark.shared
def test_damaged_packets_fail_cleanly_or_agree_with_fastavro(shared_alerts):
    damaged = sorted((shared_alerts / "damaged").glob("*.avro"))
    assert damaged
    failed = 0
    for path in damaged:
        data = path.read_bytes()
        try:
            found = AlertDecoder().members_alerts(data)
        except AlertDecodeError as exc:
            failed += 1
            assert "\n" not in str(exc)
            continue
        ref = fastavro_records(data)
        assert [record["candid"] for _, _, record in found] == [r["candid"] for r in ref]
    assert failed


def _with_array(items) -> bytes:
    fields = [
        {"name": "objectId", "type": "string"},
        {"name": "x", "type": {"type": "array", "items": items}},
        {"name": "candid", "type": "long"},
        {
            "name": "candidate",
            "type": {"type": "record", "name": "c", "fields": [{"name": "jd", "type": "double"}]},
        },
    ]
    return json.dumps({"type": "record", "name": "a", "fields": fields}).encode()


@pytest.mark.parametrize(
    "items",
    [
        "null",
        {"type": "null"},
        {"type": "record", "name": "e", "fields": []},
        {"type": "record", "name": "n", "fields": [{"name": "a", "type": "null"}]},
        {"type": "fixed", "name": "f", "size": 0},
        {
            "type": "record",
            "name": "o",
            "fields": [{"name": "i", "type": {"type": "record", "name": "z", "fields": []}}],
        },
    ],
)
def test_arrays_of_items_that_take_no_bytes_are_refused(items):
    """Found next to the fuzzer: a 335-byte packet whose array of nulls claimed 10**12 items took memory
    until it ran out (fastavro reads no byte per item)."""
    body = encode_long(0) + encode_long(10**12) + encode_long(0) + encode_long(0) + bytes(8)
    data = container(_meta(_with_array(items)), [(1, body)])

    def run():
        with pytest.raises(AlertDecodeError, match="array 'x' holds items of no bytes"):
            AlertDecoder().members_alerts(data)

    assert _peak_mb(run) < 5


def test_a_named_reference_to_an_empty_record_is_refused():
    fields = [
        {"name": "objectId", "type": "string"},
        {"name": "e", "type": {"type": "record", "name": "empty", "fields": []}},
        {"name": "x", "type": {"type": "array", "items": "empty"}},
        {"name": "candid", "type": "long"},
        {"name": "candidate", "type": {"type": "record", "name": "c", "fields": []}},
    ]
    schema = json.dumps({"type": "record", "name": "a", "namespace": "ns", "fields": fields}).encode()
    with pytest.raises(AlertDecodeError, match="array 'x' holds items of no bytes"):
        AlertDecoder().members_alerts(container(_meta(schema), [(1, b"\x00" * 8)]))


@pytest.mark.parametrize("items", ["int", ["null", "int"], {"type": "enum", "name": "one", "symbols": ["a"]}])
def test_arrays_of_items_of_a_byte_or_more_are_read(items):
    body = encode_long(0) + encode_long(3) + b"\x00" * 3 + encode_long(0) + encode_long(7) + bytes(8)
    data = container(_meta(_with_array(items)), [(1, body)])
    ((_, _, record),) = AlertDecoder().members_alerts(data)
    assert record["candid"] == 7 and len(record["x"]) == 3
    assert record == next(iter(fastavro.reader(io.BytesIO(data))))
