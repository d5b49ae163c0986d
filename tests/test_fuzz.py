"""Bounded fuzzing of the tar reader and the Avro framing with hypothesis (issue 10).

Inputs are mutations of real small tarballs and packets (where ../shared/data is present), of
synthetic ones from :mod:`ztfcat.synthetic` and of ``tarfile``/``fastavro``-written archives, aimed at
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
import os
import tarfile
from functools import cache

import pytest

from tests.avrocraft import alert, fastavro_blocks, fastavro_header, packet, written
from tests.conftest import ALERTS
from tests.tarcraft import BLOCK, base256, build, reference, rich, special, until_error, with_checksum
from ztfcat import synthetic
from ztfcat.avro import AlertDecoder, _blocks, read_header
from ztfcat.errors import AlertDecodeError, IngestError
from ztfcat.tarstream import MAX_META, GzipStream, PlainStream

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

MAX_SIZE = 4096  # small, so the "too large to hold" path is fuzzed too


@cache
def tar_seeds() -> list[bytes]:
    """Uncompressed tar archives to mutate: every format's variants, synthetic nights, real tarballs."""
    seeds = [build(rich(fmt), fmt) for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT)]
    seeds.append(
        build(
            [("a" * 120 + ".avro", b"x" * 5000), special("d", tarfile.DIRTYPE), ("b.avro", b"y")],
            tarfile.GNU_FORMAT,
        )
    )
    seeds.append(build([("p.avro", b"z" * 700)], tarfile.PAX_FORMAT, pax_headers={"comment": "global"}))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:  # a synthetic night's members, small packets
        for i in range(3):
            data = packet(1_000_000_000 + i)
            info = tarfile.TarInfo(f"ztf_public_20180819/{1_000_000_000 + i}.avro")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    seeds.append(buf.getvalue())
    real = ALERTS / "tarballs"
    for name in ("ZTF18abxhyqv.tar.gz", "ZTF18acruwxq.tar.gz"):
        if (real / name).is_file():
            seeds.append(gzip.decompress((real / name).read_bytes()))
    return seeds


@cache
def header_offsets(index: int) -> tuple[int, ...]:
    """Where the seed's headers are (long-name and pax headers included): the fields worth mutating."""
    raw = tar_seeds()[index]
    offsets = []
    pos = 0
    while pos + BLOCK <= len(raw) and raw[pos : pos + BLOCK] != bytes(BLOCK):
        offsets.append(pos)
        size = int(raw[pos + 124 : pos + 136].split(b"\0")[0] or b"0", 8)
        kind = raw[pos + 156 : pos + 157]
        data = 0 if kind in (b"1", b"2", b"3", b"4", b"5", b"6") else size + (-size) % BLOCK
        pos += BLOCK + data
    return tuple(offsets)


@cache
def avro_seeds() -> list[bytes]:
    """Containers to mutate: synthetic packets, fastavro-written null and deflate ones, real packets."""
    records = [alert(1_000_000_100 + i, n_prv=1) for i in range(3)]
    seeds = [
        packet(),
        packet(version="3.3"),
        written(records, "null"),
        written(records, "deflate"),
        written(records, "deflate", sync_interval=1),
    ]
    for pattern in ("alerts/v1.8/*.avro", "alerts/v4.02/*.avro", "multi-record/*.avro", "damaged/*.avro"):
        seeds += [p.read_bytes() for p in sorted(ALERTS.glob(pattern))[:1]]
    return seeds


# --- mutations -------------------------------------------------------------------------------------

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
            raw[pos : pos + draw(st.integers(0, 3))] = synthetic._varint(
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


class _Budget(io.BytesIO):
    """A file for ``tarfile`` that stops it after a bounded amount of reading: on a negative size
    Python 3.11's ``tarfile`` seeks backwards and reads the same headers for ever."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.left = 20 * len(data) + (1 << 20)

    def read(self, n: int = -1) -> bytes:
        data = super().read(n)
        self.left -= len(data) + 1
        if self.left < 0:
            raise _GaveUp
        return data


class _GaveUp(Exception):
    pass


def tarfile_members(raw: bytes) -> list[tuple[str, bytes]] | None:
    """``tarfile``'s regular members, or None when it fails (or loops) on these bytes."""
    try:
        return reference(raw, _Budget(raw))
    except Exception:  # tarfile raises many types on damage; only its success is compared
        return None


class _Recording:
    """A plain tar stream that remembers the largest read it was asked for."""

    def __init__(self, raw: bytes) -> None:
        self.inner = PlainStream(io.BytesIO(raw), "fuzz.tar")
        self.name = "fuzz.tar"
        self.largest = 0

    def read(self, n: int) -> bytes:
        self.largest = max(self.largest, n)
        return self.inner.read(n)

    def skip(self, n: int) -> int:
        self.largest = max(self.largest, min(n, 1 << 20))  # PlainStream.skip reads 1 MiB at a time
        return self.inner.skip(n)


def check_tar(raw: bytes) -> list:
    """The properties of one input; returns what the lean reader read."""
    stream = _Recording(raw)
    found, exc = until_error(stream, max_size=MAX_SIZE)
    assert exc is None or isinstance(exc, IngestError), repr(exc)
    assert exc is None or ("fuzz.tar" in str(exc) and "\n" not in str(exc))
    assert stream.largest <= max(MAX_SIZE, MAX_META + BLOCK, 1 << 20)
    for _, data, size in found:
        assert data is None or len(data) == size <= MAX_SIZE
    ref = tarfile_members(raw)
    event(f"lean {'fails: ' + str(exc).split('(')[-1][:22] if exc else 'reads'}")
    event(f"tarfile {'fails' if ref is None else 'reads'}")
    if ref is not None:  # tarfile stops silently at damage the lean reader reports: compare the prefix
        common = min(len(found), len(ref))
        event(
            "compared: " + ("none" if not common else "some" if common < max(len(ref), len(found)) else "all")
        )
        ours = [(name, data if data is not None else size) for name, data, size in found[:common]]
        theirs = [(name, data if len(data) <= MAX_SIZE else len(data)) for name, data in ref[:common]]
        assert ours == theirs
    return found


def check_avro(raw: bytes) -> None:
    try:
        found = AlertDecoder().members_alerts(raw)
    except AlertDecodeError as exc:
        assert "\n" not in str(exc)
        found = None
    try:
        header = read_header(raw)
        blocks = [(count, bytes(block)) for count, block in _blocks(raw, header)]
    except AlertDecodeError as exc:
        event(f"framing fails: {str(exc)[:30]}")
        header = blocks = None
    try:
        ref_header, ref_start = fastavro_header(raw)
    except Exception:  # fastavro raises many types on damage; only its success is compared
        ref_header = None
    if header is not None and ref_header is not None:
        assert header.schema_json == ref_header["meta"].get("avro.schema")
        assert header.sync == ref_header["sync"] and header.data_start == ref_start
        try:
            ref_blocks = fastavro_blocks(raw)
        except Exception:
            ref_blocks = None
        if ref_blocks is not None:
            assert blocks == ref_blocks
    if found is not None:
        assert blocks is not None and sum(count for count, _ in blocks) == len(found)
    event(f"alerts {'decode' if found else 'fail'}; framing {'ok' if blocks is not None else 'fails'}")
    event(f"fastavro header {'ok' if ref_header is not None else 'fails'}")


# --- properties ------------------------------------------------------------------------------------


@examples(ci=400)
@given(mutated_tar())
def test_fuzz_tar_plain(raw):
    check_tar(raw)


@examples(ci=150)
@given(st.binary(max_size=3 * BLOCK))
def test_fuzz_tar_arbitrary_bytes(raw):
    check_tar(raw)


@examples(ci=25)
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


@examples(ci=400)
@given(mutated_avro())
def test_fuzz_avro_framing(raw):
    check_avro(raw)


@examples(ci=100)
@given(st.binary(max_size=200).map(lambda tail: b"Obj\x01" + tail))
def test_fuzz_avro_arbitrary_headers(raw):
    check_avro(raw)


# --- what the fuzzer found -------------------------------------------------------------------------
