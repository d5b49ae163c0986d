"""Bounded fuzzing of the tar reader and the Avro framing with hypothesis (issue 10).

Inputs are mutations of real small tarballs and packets (where ../shared/data is present), of
synthetic ones from :mod:`ztfcat.testing.synthetic` and of ``tarfile``/``fastavro``-written archives, aimed at
the fields that frame the data (sizes, types, checksums, pax records, varints).  Every property says:
only ztfcat's own errors come out, nothing larger than the caps is ever asked for, and where the
reference reader (``tarfile``, fastavro) also succeeds, both read the same thing.

CI runs a bounded number of examples (derandomized, so a red run replays); set
``ZTFCAT_FUZZ_EXAMPLES=N`` to run N examples of each property locally, with fresh random inputs.
Inputs this harness found are kept as regression tests at the end of this file.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import fastavro
import pytest

from tests.avrocraft import container
from tests.fuzzcheck import MAX_SIZE, avro_seeds, check_avro, check_tar, header_offsets, tar_seeds
from tests.tarcraft import BLOCK, base256, build, until_error, with_checksum
from ztfcat.errors import AlertDecodeError, IngestError
from ztfcat.ingest.avro import AlertDecoder, encode_long, read_header
from ztfcat.ingest.tarstream import MAX_META, GzipStream, PlainStream

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the test extra")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

LONG_RUN = int(os.environ.get("ZTFCAT_FUZZ_EXAMPLES", "0"))


def examples(ci: int):
    """Settings for one property: ``ci`` examples in CI, or ``ZTFCAT_FUZZ_EXAMPLES`` locally."""
    return settings(
        max_examples=LONG_RUN or ci,
        deadline=None,
        derandomize=not LONG_RUN,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- seeds -----------------------------------------------------------------------------------------

FIELDS = (0, 99, 100, 124, 130, 135, 148, 155, 156, 257, 345, 482, 504, 512, 520)  # of a header
INTERESTING = [0, 0x20, 0x30, 0x37, 0x38, 0x0A, 0x3D, 0x7F, 0x80, 0xFF, *b"0257xgLKS"]
SIZE_FIELDS = [
    base256(-1),
    base256(-(1 << 60)),
    base256(1 << 70),
    base256(MAX_META + 1),
    b"\xff" * 12,
    b"77777777777\0",
    b"00000001000\0",
    b"-0000000001\0",
    b"           ",
]


@st.composite
def mutated_tar(draw) -> bytes:
    index = draw(st.integers(0, 1000)) % len(tar_seeds())
    raw = bytearray(tar_seeds()[index])
    headers = header_offsets(index)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["byte", "byte", "size", "pax", "insert", "delete", "truncate", "block"]))
        hot = draw(st.sampled_from(headers)) + draw(st.sampled_from(FIELDS)) + draw(st.integers(-2, 12))
        pos = min(max(hot if draw(st.booleans()) else draw(st.integers(0, len(raw))), 0), len(raw))
        if op == "byte" and pos < len(raw):
            raw[pos] = draw(st.sampled_from(INTERESTING) | st.integers(0, 255))
        elif op == "size":
            at = draw(st.sampled_from(headers)) + 124
            raw[at : at + 12] = draw(st.sampled_from(SIZE_FIELDS) | st.binary(min_size=12, max_size=12))
        elif op == "pax":  # a pax record where data was: lengths that lie, sizes that are not numbers
            record = draw(st.sampled_from([b"%d path=x\n", b"%d size=%d\n", b"%d =\n", b"%d size=1e9\n"]))
            record = record % tuple(draw(st.integers(-5, 1 << 40)) for _ in range(record.count(b"%d")))
            raw[pos : pos + len(record)] = record
        elif op == "insert":
            raw[pos:pos] = draw(st.binary(max_size=600))
        elif op == "delete":
            del raw[pos : pos + draw(st.integers(1, 1100))]
        elif op == "truncate":
            del raw[pos:]
        elif op == "block" and len(raw) >= 2 * BLOCK:  # a header repeated elsewhere
            src = draw(st.sampled_from(headers))
            raw[pos : pos + BLOCK] = raw[src : src + BLOCK]
    if draw(st.integers(0, 4)):  # most damage should get past the checksum, to reach the fields
        for at in headers:
            if at + BLOCK <= len(raw):
                raw[at : at + BLOCK] = with_checksum(raw[at : at + BLOCK])
    return bytes(raw)


@st.composite
def mutated_avro(draw) -> bytes:
    raw = bytearray(avro_seeds()[draw(st.integers(0, 1000)) % len(avro_seeds())])
    try:
        start = read_header(bytes(raw)).data_start
    except AlertDecodeError:
        start = 40
    hot = [4, 5, 6, 20, start - 17, start - 16, start - 1, start, start + 1, start + 4, len(raw) - 16]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                ["byte"] * 4 + ["body"] * 3 + ["varint", "varint", "insert", "delete", "truncate"]
            )
        )
        if op == "body" and start + 1 < len(raw) - 16:  # inside the record: decoding, not framing
            raw[draw(st.integers(start + 1, len(raw) - 17))] = draw(st.integers(0, 255))
            continue
        pos = draw(st.sampled_from(hot)) + draw(st.integers(-3, 3)) if draw(st.booleans()) else None
        pos = min(max(pos if pos is not None else draw(st.integers(4, len(raw))), 4), len(raw))
        if op == "byte" and pos < len(raw):
            raw[pos] = draw(st.sampled_from([0, 1, 2, 0x7F, 0x80, 0x81, 0xFF]) | st.integers(0, 255))
        elif op == "varint":
            raw[pos : pos + draw(st.integers(0, 3))] = encode_long(
                draw(st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(-3, 300))
            )
        elif op == "insert":
            raw[pos:pos] = draw(st.binary(max_size=40))
        elif op == "delete":
            del raw[pos : pos + draw(st.integers(1, 200))]
        elif op == "truncate":
            del raw[pos:]
    return bytes(raw)


# --- references ------------------------------------------------------------------------------------


# --- properties# --- properties ------------------------------------------------------------------------------------


@examples(ci=1000)
@given(mutated_tar())
def test_fuzz_tar_plain(raw):
    check_tar(raw, event)


@examples(ci=300)
@given(st.binary(max_size=3 * BLOCK))
def test_fuzz_tar_arbitrary_bytes(raw):
    check_tar(raw, event)


@examples(ci=60)
@given(mutated_tar(), st.booleans())
def test_fuzz_tar_through_gzip(raw, damage_gzip):
    """Through the inflater process: the same members as the plain reader, or a one-line IngestError."""
    packed = bytearray(gzip.compress(raw, compresslevel=1, mtime=0))
    if damage_gzip:
        packed[len(packed) // 2] ^= 0x55
    try:
        with GzipStream(io.BytesIO(bytes(packed)), "fuzz.tar.gz") as stream:
            found, exc = until_error(stream, max_size=MAX_SIZE)
            if exc is None:
                stream.drain()
    except IngestError as late:  # drain: a gzip error found at the end
        exc = late
    assert exc is None or isinstance(exc, IngestError), repr(exc)
    if not damage_gzip:
        plain, plain_exc = until_error(PlainStream(io.BytesIO(raw), "fuzz.tar"), max_size=MAX_SIZE)
        assert found == plain
        assert (exc is None) == (plain_exc is None)


@examples(ci=1000)
@given(mutated_avro())
def test_fuzz_avro_framing(raw):
    check_avro(raw, event)


@examples(ci=200)
@given(st.binary(max_size=200).map(lambda tail: b"Obj\x01" + tail))
def test_fuzz_avro_arbitrary_headers(raw):
    check_avro(raw, event)


PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]


def _record(name: int, types: list) -> dict:
    return {
        "type": "record",
        "name": f"r{name}",
        "fields": [{"name": f"f{i}", "type": t} for i, t in enumerate(types)],
    }


AVRO_TYPES = st.recursive(
    st.sampled_from(PRIMITIVES),
    lambda inner: st.one_of(
        st.lists(  # a union: no union directly inside, no two branches of one kind
            inner.filter(lambda t: not isinstance(t, list)),
            min_size=1,
            max_size=3,
            unique_by=lambda t: (
                t if isinstance(t, str) else t["type"] if t["type"] in ("array", "map") else repr(t)
            ),
        ),
        st.builds(lambda items: {"type": "array", "items": items}, inner),
        st.builds(lambda values: {"type": "map", "values": values}, inner),
        st.builds(_record, st.integers(0, 10**9), st.lists(inner, max_size=3)),
        st.builds(lambda n: {"type": "fixed", "name": f"x{n}", "size": n % 5}, st.integers(0, 10**9)),
    ),
    max_leaves=10,
)


@examples(ci=400)
@given(
    st.tuples(AVRO_TYPES, AVRO_TYPES, st.lists(AVRO_TYPES, max_size=4), st.lists(AVRO_TYPES, max_size=2)),
    st.integers(1, 3),
    st.binary(max_size=400) | st.integers(0, 400).map(bytes),  # zeros: the least of every type
)
def test_fuzz_avro_arbitrary_writer_schemas(types, count, body):
    """Writer schemas are the packet's own: any shape must end in a record or an AlertDecodeError."""
    object_id, candid, candidate, extra = types
    fields = [
        {"name": "objectId", "type": object_id},
        *({"name": f"before{i}", "type": t} for i, t in enumerate(extra)),
        {"name": "candid", "type": candid},
        {"name": "candidate", "type": _record(-1, candidate)},
    ]
    schema = json.dumps({"type": "record", "name": "alert", "fields": fields}).encode()
    data = container({"avro.schema": schema, "avro.codec": b"null"}, [(count, body)])
    try:
        found = AlertDecoder().members_alerts(data)
    except AlertDecodeError as exc:
        event(f"fails: {str(exc).split(':')[0][:40]}")
        return
    event("decodes")
    assert len(found) == count
    try:
        ref = list(fastavro.reader(io.BytesIO(data)))
    except Exception:  # the fields after candidate, which the ingest never reads, may not decode
        return
    assert [repr(record["candid"]) for _, _, record in found] == [repr(r["candid"]) for r in ref]


# --- what the fuzzer found -------------------------------------------------------------------------
# Each input below is held to the same properties as the fuzzed ones, so a regression fails here
# whatever the random draw.  Fuller checks of each live in test_tarstream.py and test_avro_framing.py.


def test_found_a_size_field_of_all_ff_bytes():
    """What test_fuzz_tar_plain shrank to when the negative-size check was taken out (-1 in base-256:
    the member's read(-1) took the rest of the stream)."""
    raw = bytearray(build([("a.avro", b"alpha" * 100)], tarfile.USTAR_FORMAT))
    raw[124:136] = b"\xff" * 12
    raw[:BLOCK] = with_checksum(raw[:BLOCK])
    found, exc = until_error(PlainStream(io.BytesIO(bytes(raw)), "fuzz.tar"))
    assert found == [] and "negative size -1" in str(exc)
    check_tar(bytes(raw))


def test_found_a_name_that_is_not_utf8():
    raw = build([("caf\udce9.avro", b"x")], tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape")
    assert check_tar(raw) == [("caf\\xe9.avro", b"x", 1)]


def test_found_an_array_of_nulls_claiming_endless_items():
    fields = [
        {"name": "objectId", "type": {"type": "array", "items": "null"}},
        {"name": "candid", "type": "long"},
        {"name": "candidate", "type": {"type": "record", "name": "c", "fields": []}},
    ]
    schema = json.dumps({"type": "record", "name": "a", "fields": fields}).encode()
    data = container({"avro.schema": schema, "avro.codec": b"null"}, [(1, encode_long(10**15) + b"\x00\x00")])
    check_avro(data)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["tar", "avro"])
def test_the_atheris_harness_runs_where_atheris_is_installed(target):
    """The optional coverage-guided harness: a short run must end clean (skipped without atheris)."""
    pytest.importorskip("atheris", reason="atheris is optional (pip install atheris)")
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "tests.fuzz_atheris", target, "-runs=300", "-max_len=200000"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 300 runs" in done.stderr
