"""Tests of the compiled whole-record reader (``AlertDecoder.full``): it must give what fastavro gives.

The reference is ``fastavro.reader`` on the original bytes.  Equal here means equal in every value
*and* type (1 is not 1.0, NaN is NaN), with dict keys in the same order: users' code sees these dicts.
"""

from __future__ import annotations

import io
import json
import math

import fastavro
import pytest

from tests.avrocraft import (
    container,
    damaged_copies,
    fastavro_header,
    record_bytes,
    rewritten,
    seeded_packet,
    with_a_map,
)
from ztfcat.errors import AlertDecodeError
from ztfcat.ingest import rowdecode
from ztfcat.ingest.avro import AlertDecoder, read_header
from ztfcat.store.fields import KNOWN_VERSIONS

compiled = pytest.mark.skipif(not rowdecode.executor_available(), reason="the C executor is not built here")


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def _reference(packet: bytes) -> dict:
    (record,) = list(fastavro.reader(io.BytesIO(packet)))
    return record


def _outcome(fn, *args):
    try:
        return fn(*args)
    except (AlertDecodeError, EOFError, ValueError, IndexError, UnicodeDecodeError) as exc:
        return type(exc)


@pytest.fixture()
def decoder() -> AlertDecoder:
    return AlertDecoder()


@pytest.mark.shared
def test_every_real_packet_of_every_version(decoder, shared_alerts):
    files = sorted((shared_alerts / "alerts").glob("*/*.avro"))
    assert len(files) >= 1013
    for path in files:
        packet = path.read_bytes()
        assert _same(decoder.full(packet), _reference(packet)), path.name
    versions = {decoder.cache.get(schema).version for schema in decoder.cache._readers}
    assert {"1.3", "2.0", "3.3", "4.02"} <= versions
    if rowdecode.executor_available():
        assert all(reader is not None for reader in decoder.cache._readers.values())


@pytest.mark.parametrize("version", KNOWN_VERSIONS)
def test_synthetic_packets_of_every_version(decoder, version):
    for seed, (n_prv, n_fp) in enumerate([(15, 10), (0, 0), (1, 3)]):
        packet = seeded_packet(version, seed, n_prv=n_prv, n_fp=n_fp, cutouts=seed != 1)
        assert _same(decoder.full(packet), _reference(packet)), (version, seed)
        assert _same(decoder.full(memoryview(packet)), _reference(packet))
    deflated = rewritten(packet, codec="deflate")
    assert read_header(deflated).codec == "deflate"
    assert _same(decoder.full(deflated), _reference(deflated))


def test_nan_and_nul_are_kept_as_fastavro_keeps_them(decoder):
    """Unlike rows (NaN as SQL NULL, NUL refused by PostgreSQL), the dict is the packet as written."""

    def change(record):
        record["candidate"]["sgscore1"] = math.nan  # a float
        record["candidate"]["jdstarthist"] = math.nan  # a double
        record["prv_candidates"][0]["magpsf"] = math.nan
        record["fp_hists"][0]["forcediffimflux"] = math.nan
        record["candidate"]["ssnamenr"] = "a\x00b"

    packet = rewritten(seeded_packet("4.02", 4), change)
    got = decoder.full(packet)
    assert _same(got, _reference(packet))
    assert math.isnan(got["candidate"]["sgscore1"]) and math.isnan(got["candidate"]["jdstarthist"])
    assert got["candidate"]["ssnamenr"] == "a\x00b"


def test_a_schema_the_plan_does_not_cover_is_read_by_fastavro(decoder):
    packet = with_a_map(seeded_packet("3.3", 6))
    assert decoder.cache.reader(read_header(packet).schema_json) is None
    got = decoder.full(packet)
    assert got["tags"] == {"k": "v"} and _same(got, _reference(packet))


def test_unknown_fields_of_a_future_schema_are_kept(decoder):
    def schema_change(schema):
        candidate = schema["fields"][[f["name"] for f in schema["fields"]].index("candidate")]["type"]
        candidate["fields"].insert(3, {"name": "newscore", "type": ["null", "float"], "default": None})
        schema["fields"].append({"name": "later", "type": ["null", "string"], "default": None})

    def change(record):
        record["candidate"]["newscore"] = 0.5
        record["later"] = "x"

    packet = rewritten(seeded_packet("4.02", 5), change, schema_change)
    got = decoder.full(packet)
    assert list(got["candidate"])[3] == "newscore" and got["later"] == "x"
    assert _same(got, _reference(packet))


def test_without_the_extension_fastavro_reads_the_record(monkeypatch):
    monkeypatch.setattr(rowdecode, "_rowdecode", None)
    decoder = AlertDecoder()
    packet = seeded_packet("4.02", 2)
    assert decoder.cache.reader(read_header(packet).schema_json) is None
    assert _same(decoder.full(packet), _reference(packet))


@compiled
def test_a_truncated_datum_at_every_offset_fails_cleanly_naming_the_field(decoder):
    packet = seeded_packet("4.02", 8, n_prv=3, n_fp=2, cutouts=True)
    reader = decoder.cache.reader(read_header(packet).schema_json)
    datum = record_bytes(packet)
    record, end = reader.run(datum, -1)
    assert end == len(datum) and _same(record, _reference(packet))
    schema = fastavro.parse_schema(json.loads(read_header(packet).schema_json))
    for cut in range(0, end, 3):
        with pytest.raises(AlertDecodeError, match="truncated|longer than|negative length|out of range"):
            reader.run(datum[:cut], -1)
        if cut % 61 == 0:  # fastavro agrees the datum is short
            assert _outcome(fastavro.schemaless_reader, io.BytesIO(datum[:cut]), schema) in (
                EOFError,
                ValueError,
            )
    with pytest.raises(AlertDecodeError, match=r"prv_candidates\[1\]\.\w+ is truncated"):
        reader.run(datum[: _offset_inside(datum, reader, "prv_candidates", 1)], -1)
    for cut in range(0, len(packet), 97):  # and the packet, framing included
        with pytest.raises(AlertDecodeError):
            decoder.full(packet[:cut])


def test_a_packet_fastavro_reads_but_the_reader_refuses_is_read_by_fastavro(decoder):
    """The reader is stricter than fastavro on one kind of damage: a negative union index, which
    fastavro takes as a Python list index (-1: the last branch).  The row plan may never read that
    field, so such a packet can be in the catalog: reading it back gives what fastavro gives."""
    packet = seeded_packet("4.02", 11, cutouts=False)
    header, _start = fastavro_header(packet)
    datum, original = record_bytes(packet), _reference(packet)
    for i in (i for i, byte in enumerate(datum) if byte == 2):  # index 1 of a two-branch union, maybe
        damaged = container(header["meta"], [(1, datum[:i] + b"\x01" + datum[i + 1 :])], header["sync"])
        try:
            if _same(_reference(damaged), original):
                break
        except (EOFError, ValueError, IndexError, UnicodeDecodeError):
            continue
    else:
        pytest.fail("no union index to damage")
    if rowdecode.executor_available():
        with pytest.raises(AlertDecodeError, match="union branch out of range"):
            decoder.cache.reader(read_header(damaged).schema_json).run(record_bytes(damaged), -1)
    assert _same(decoder.full(damaged), original)


def _offset_inside(datum: bytes, reader, field: str, index: int) -> int:
    """A cut that falls inside item ``index`` of ``field``: the shortest prefix whose error names it."""
    for cut in range(len(datum)):
        try:
            reader.run(datum[:cut], -1)
        except AlertDecodeError as exc:
            if f"{field}[{index}]." in str(exc):
                return cut
    raise AssertionError(f"no cut falls inside {field}[{index}]")


@compiled
def test_random_damage_gives_fastavros_record_or_an_error(decoder):
    """A bounded fuzzing run: where fastavro decodes damaged bytes, the reader gives the same record
    (or, for a negative union index, which fastavro takes as a list index, refuses it); where fastavro
    fails, the reader raises AlertDecodeError."""
    packet = seeded_packet("4.02", 9, n_prv=5, n_fp=3, cutouts=False)
    reader = decoder.cache.reader(read_header(packet).schema_json)
    schema = fastavro.parse_schema(json.loads(read_header(packet).schema_json))
    datum = record_bytes(packet)
    decoded = stricter = 0
    for damaged in damaged_copies(datum, 1000, seed=12):
        ours = _outcome(reader.run, damaged, -1)
        theirs = _outcome(fastavro.schemaless_reader, io.BytesIO(damaged), schema)
        if isinstance(theirs, type):
            assert ours is AlertDecodeError
        elif ours is AlertDecodeError:
            stricter += 1
            with pytest.raises(AlertDecodeError, match="union branch out of range"):
                reader.run(damaged, -1)
        else:
            assert _same(ours[0], theirs)
            decoded += 1
    assert 0 < decoded < 1000 and stricter < 100


@compiled
def test_a_whole_plan_is_checked_like_a_row_plan():
    from ztfcat.ingest import _rowdecode

    string = (rowdecode.STRING, 0, 0, 1)
    plan = _rowdecode.Plan((string,), (), ((1, 0, ((0, 0, "objectId"),)),), AlertDecodeError, whole=True)
    assert plan.run(b"\x02a", -1) == ({"objectId": "a"}, 2)
    with pytest.raises(ValueError):
        _rowdecode.Plan((string,), (), ((1, 0, ((5, 0, "x"),)),), AlertDecodeError, whole=True)
