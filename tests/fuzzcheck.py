"""What the fuzzers check, and the inputs they mutate: shared by the hypothesis properties
(``tests/test_fuzz.py``) and the optional coverage-guided atheris harness (``tests/fuzz_atheris.py``)."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from functools import cache

from tests.avrocraft import alert, fastavro_blocks, fastavro_header, packet, written
from tests.conftest import ALERTS
from tests.tarcraft import BLOCK, build, reference, rich, special, until_error
from ztfcat.errors import AlertDecodeError, IngestError
from ztfcat.ingest.avro import AlertDecoder, _blocks, read_header
from ztfcat.ingest.tarstream import MAX_META, PlainStream


def _quiet(note: str) -> None:
    """Where hypothesis is not running, the notes about each input go nowhere."""


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


def check_tar(raw: bytes, event: Callable[[str], None] = _quiet) -> list:
    """The properties of one input; returns what the lean reader read."""
    stream = _Recording(raw)
    found, exc = until_error(stream, max_size=MAX_SIZE)
    assert exc is None or isinstance(exc, IngestError), repr(exc)
    assert exc is None or ("fuzz.tar" in str(exc) and "\n" not in str(exc))
    assert stream.largest <= max(MAX_SIZE, MAX_META + BLOCK, 1 << 20)
    for _, data, size in found:
        assert data is None or len(data) == size <= MAX_SIZE
    ref = tarfile_members(raw)
    event(f"lean {'fails: ' + _reason(exc) if exc else 'reads'}")
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


_REASONS = ("checksum", "truncated", "negative", "impossible", "bad number", "pax", "at most", "lacks")


def _reason(exc: Exception) -> str:
    return next((reason for reason in _REASONS if reason in str(exc)), type(exc).__name__)


def check_avro(raw: bytes, event: Callable[[str], None] = _quiet) -> None:
    try:
        found = AlertDecoder().members_alerts(raw)
    except AlertDecodeError as exc:
        assert "\n" not in str(exc)
        found = None
    try:
        header = read_header(raw)
        blocks = [(count, bytes(block)) for count, block in _blocks(raw, header)]
    except AlertDecodeError as exc:
        event(f"framing fails: {str(exc).split(':')[0][:32]}")
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
