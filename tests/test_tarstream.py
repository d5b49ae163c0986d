"""The lean tar reader against ``tarfile``: ustar, GNU and pax archives, odd members, hostile headers.

Every archive is built by ``tarfile`` (or by hand, where ``tarfile`` cannot write the damage) and read by
both; names and bytes must be equal.  Hostile headers must end in a one-line :class:`IngestError` that
names the member, with memory bounded whatever the header claims.
"""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile
import tracemalloc

import pytest

from tests.avrocraft import packet
from tests.tarcraft import (
    BLOCK,
    END,
    base256,
    build,
    header,
    lean,
    member,
    octal,
    pax_block,
    pax_record,
    reference,
    rich,
    until_error,
    with_checksum,
)
from ztfcat.errors import IngestError
from ztfcat.ingest.tarstream import MAX_META, GzipStream, PlainStream, iter_members

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_names_and_bytes_equal_tarfiles(fmt, gz):
    raw = build(rich(fmt), fmt)
    ref = reference(raw)
    ours = lean(raw, gz=gz)
    assert [(name, data) for name, data, _ in ours] == ref
    assert [size for _, _, size in ours] == [len(data) for _, data in ref]
    names = {name for name, _, _ in ours}
    # links are never followed (tarfile's extractfile would hand out a hard link's target) nor listed
    assert not names & {"sym.avro", "hard.avro", "sub", "fifo", "dev"}
    assert len(ours) == len(rich(fmt)) - 5


def test_unwanted_and_oversized_members_are_not_held():
    raw = build([("a.avro", b"a" * 1000), ("b.txt", b"b" * 10), ("c.avro", b"c" * 100)])
    ours = lean(raw, max_size=500, wanted=lambda name: name.endswith(".avro"))
    assert ours == [("a.avro", None, 1000), ("b.txt", None, 10), ("c.avro", b"c" * 100, 100)]


def test_v7_directory_is_a_regular_header_ending_in_a_slash():
    raw = member(b"olddir/", b"", kind=b"\0") + member(b"olddir/f.avro", b"data", kind=b"\0") + END
    assert reference(raw) == [("olddir/f.avro", b"data")]
    assert [(n, d) for n, d, _ in lean(raw)] == reference(raw)


def test_global_pax_headers_apply_to_every_later_member():
    raw = build([("a.avro", b"a"), ("b.avro", b"b")], tarfile.PAX_FORMAT, pax_headers={"comment": "hi"})
    assert b"comment=hi" in raw
    assert [(n, d) for n, d, _ in lean(raw)] == reference(raw) == [("a.avro", b"a"), ("b.avro", b"b")]
    renamed = pax_block(pax_record("path", "global.avro"), kind=b"g") + member(b"a.avro", b"a") + END
    assert [(n, d) for n, d, _ in lean(renamed)] == reference(renamed) == [("global.avro", b"a")]


def test_pax_size_overrides_the_header():
    data = b"d" * 700
    raw = (
        pax_block(pax_record("size", "700") + pax_record("path", "big.avro"))
        + header(b"big.avro", octal(0))
        + data
        + bytes(-700 % BLOCK)
        + member(b"next.avro", b"n")
        + END
    )
    assert [(n, d) for n, d, _ in lean(raw)] == reference(raw) == [("big.avro", data), ("next.avro", b"n")]


def test_positive_base256_size_is_read():
    data = b"b" * 600
    raw = header(b"b256.avro", base256(600)) + data + bytes(-600 % BLOCK) + END
    assert [(n, d) for n, d, _ in lean(raw)] == reference(raw) == [("b256.avro", data)]


def test_signed_checksum_of_old_unix_tars_is_accepted():
    block = bytearray(header("é.avro".encode(), octal(1)))
    signed = sum(block[:148]) + 256 + sum(block[156:]) - 256 * sum(1 for b in block if b > 127)
    block[148:156] = b"%06o\0 " % signed
    raw = bytes(block) + b"x" + bytes(BLOCK - 1) + END
    assert [(n, d) for n, d, _ in lean(raw)] == reference(raw) == [("é.avro", b"x")]


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar writes the sparse archives")
@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_members_are_passed_over_and_the_next_member_is_framed(tmp_path, fmt):
    sparse = tmp_path / "holes.avro"
    with open(sparse, "wb") as f:  # ten data runs between holes: old GNU needs extension blocks
        for i in range(10):
            f.seek(i * 65536)
            f.write(b"run%d" % i * 100)
        f.truncate(11 * 65536)
    (tmp_path / "after.avro").write_bytes(b"after the sparse member")
    archive = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", "-cSf", str(archive), f"--format={fmt}", "-C", str(tmp_path), "holes.avro", "after.avro"],
        check=True,
    )
    raw = archive.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        if not tf.getmember("holes.avro").issparse():
            pytest.skip("this file system keeps no holes")
    assert [(n, d) for n, d, _ in lean(raw)] == reference(raw) == [("after.avro", b"after the sparse member")]


def test_trailing_garbage_after_the_end_blocks_is_ignored():
    raw = build([("a.avro", b"a" * 10)], tarfile.GNU_FORMAT)
    assert raw.endswith(END)
    dirty = raw + b"garbage after the end of the archive" * 50
    assert [(n, d) for n, d, _ in lean(dirty)] == reference(dirty) == [("a.avro", b"a" * 10)]
    assert [(n, d) for n, d, _ in lean(dirty, gz=True)] == [("a.avro", b"a" * 10)]


def test_missing_end_blocks_are_tolerated():
    raw = member(b"a.avro", b"a")
    assert [(n, d) for n, d, _ in lean(raw)] == [("a.avro", b"a")]


def _boundaries(raw: bytes) -> tuple[set[int], int]:
    """Offsets where a member (with its long-name or pax headers) starts, and where the last one ends."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        infos = tf.getmembers()
    starts = {info.offset for info in infos}
    last = infos[-1]
    data = last.size + (-last.size) % BLOCK if last.isreg() else 0
    return starts, last.offset_data + data


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_truncation_at_any_offset_is_an_error_or_a_clean_prefix(fmt):
    raw = build(rich(fmt), fmt)
    full = lean(raw)
    starts, end = _boundaries(raw)
    cuts = sorted(set(range(0, len(raw), 97)) | {s + d for s in starts for d in (-1, 0, 1, 511, 512, 513)})
    for cut in (c for c in cuts if 0 <= c < len(raw)):
        found, exc = until_error(PlainStream(io.BytesIO(raw[:cut]), "cut.tar"))
        assert found == full[: len(found)], cut
        if cut in starts or cut == end or cut >= end + BLOCK:  # a cut inside the end blocks is one too
            assert exc is None, (cut, exc)
            assert len(found) == len(full) or cut < end
        else:
            assert isinstance(exc, IngestError), (cut, exc)
            assert "cut.tar" in str(exc) and "\n" not in str(exc)


def test_truncated_gzip_stream_is_reported():
    packed = gzip.compress(build([("a.avro", b"a" * 5000)]))
    stream = GzipStream(io.BytesIO(packed[: len(packed) // 2]), "half.tar.gz")
    with stream, pytest.raises(IngestError, match="half.tar.gz"):
        list(iter_members(stream))
        stream.drain()


def test_not_gzip_is_reported():
    stream = GzipStream(io.BytesIO(build([("a.avro", b"a")])), "plain.tar.gz")
    with stream, pytest.raises(IngestError, match="plain.tar.gz is not a gzip file"):
        list(iter_members(stream))


@pytest.mark.parametrize(
    "prefix, how, n",
    [
        (b"", "seek", 0),  # the usual case
        (b"HEAD!", "seek", 5),  # from the file's offset on
        (b"HEAD!", "seek", 0),  # not gzip from there
        (b"HEAD!", "read", 5),  # bytes already in the file object's buffer are not read twice
        (b"HEAD!", "read", 2),  # ... and not gzip from there ("AD!")
    ],
)
def test_a_file_is_inflated_with_the_bytes_md5_and_size_of_what_follows_its_position(
    tmp_path, prefix, how, n
):
    """The stream is the file's bytes from its position on, with their MD5 and size, and a file that is
    not gzip from there is named in one line."""
    import hashlib
    import os

    packed = gzip.compress(build([("a.avro", os.urandom(300_000)), ("b.avro", b"b" * 70_000)]), mtime=0)
    path = tmp_path / "f.tar.gz"
    path.write_bytes(prefix + packed)
    rest = (prefix + packed)[n:]
    with open(path, "rb") as source:
        source.seek(n) if how == "seek" else source.read(n)
        with GzipStream(source, path.name) as stream:
            if rest[:2] != b"\x1f\x8b":
                with pytest.raises(IngestError, match=r"^f\.tar\.gz is not a gzip file \(it starts with b'"):
                    stream.drain()
                return
            got = bytearray()
            while chunk := stream.read(1 << 16):
                got.extend(chunk)
                assert 0 <= stream.size <= len(rest)  # progress
            assert bytes(got) == gzip.decompress(rest)
            assert stream.md5 == hashlib.md5(rest).hexdigest() and stream.size == len(rest)


# --- hostile headers -------------------------------------------------------------------------------


def _peak_mb(func) -> float:
    tracemalloc.start()
    try:
        func()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 1e6


@pytest.mark.parametrize("field", [base256(-(1 << 60)), b"\xc0" + (1).to_bytes(11, "big")], ids=["ff", "c0"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_negative_base256_size_is_an_error_not_a_memory_bomb(gz, field):
    """Issue 10, item 4: read(negative) read the whole rest of the stream; a 1 MB tarball took 2.2 GB."""
    filler = member(b"filler.avro", bytes(16 << 20))  # what the bomb used to swallow whole
    raw = member(b"ok.avro", b"ok") + header(b"bomb.avro", field) + filler + END
    packed = gzip.compress(raw)
    found = []

    def run():
        with pytest.raises(IngestError, match=r"'bomb\.avro' at byte 1024 \((negative size -\d+|bad number)"):
            if gz:
                with GzipStream(io.BytesIO(packed), "bomb.tar.gz") as stream:
                    found.extend(iter_members(stream))
            else:
                found.extend(iter_members(PlainStream(io.BytesIO(raw), "bomb.tar")))

    assert _peak_mb(run) < 4
    assert found == [("ok.avro", b"ok", 2)]


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        (base256(-1), "negative size -1"),
        (b"\xff" * 12, "negative size -1"),
        (base256(1 << 80), "impossible size"),
        (b"-00000000001", "bad number"),
        (b"0o0000000017", "bad number"),
        (b"000_0000017\0", "bad number"),
        (b"0000000001x\0", "bad number"),
        (b"\x81" + bytes(11), "bad number"),
        (b"\xc0" + (1).to_bytes(11, "big"), "bad number"),  # the old reader's -1: read(-1) took it all
    ],
)
def test_bad_size_fields_name_the_member(field, reason):
    raw = header(b"bad.avro", field) + bytes(BLOCK) + END
    with pytest.raises(
        IngestError, match=rf"test\.tar: corrupt tar header of 'bad\.avro' at byte 0 \({reason}"
    ):
        lean(raw)


def test_a_huge_positive_size_is_skipped_and_then_truncated_in_bounded_memory():
    raw = header(b"huge.avro", base256(1 << 62)) + bytes(8 << 20)

    def run():
        with pytest.raises(IngestError, match=r"test\.tar is truncated inside member 'huge\.avro'"):
            lean(raw)

    assert _peak_mb(run) < 4


@pytest.mark.parametrize("kind", [b"L", b"K", b"x", b"g"])
@pytest.mark.parametrize("size", [MAX_META + 1, 1 << 40, 1 << 62])
def test_long_name_and_pax_headers_are_capped(kind, size):
    raw = header(b"././@LongLink", base256(size), kind) + bytes(2 << 20)

    def run():
        with pytest.raises(
            IngestError, match=rf"'\./\./@LongLink' at byte 0 \(a '{kind.decode()}' header of"
        ):
            lean(raw)

    assert _peak_mb(run) < 2


def test_a_long_name_at_the_cap_is_read():
    name = ("n" * (MAX_META - 100) + ".avro").encode()
    raw = header(b"././@LongLink", octal(len(name) + 1), b"L") + name + b"\0"
    raw += bytes(-len(raw) % BLOCK) + member(b"short", b"data") + END
    assert [(n, d) for n, d, _ in lean(raw)] == reference(raw) == [(name.decode(), b"data")]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"abc", "has no length"),
        (b"path=x\n", "has no length"),
        (b" 9 path=x\n", "has no length"),
        (b"-9 path=x\n", "has no length"),
        (b"99 path=x\n", "claims 99 bytes"),
        (b"0 path=x\n", "claims 0 bytes"),
        (b"2 \n", "claims 2 bytes"),
        (b"8 path=x\n", "does not end with a newline"),
        (b"11 path=x\nx", "does not end with a newline"),
        (b"9 pathxx\n", "has no keyword=value"),
        (b"6 =xy\n", "has no keyword=value"),
        (b"12 size=12x\n", "pax size '12x' is not a number"),
        (b"11 size=-1\n", "pax size '-1' is not a number"),
        (b"13 size=\xd9\xa3\xd9\xa3\n", "is not a number"),  # Arabic-Indic digits: isdigit() but not tar
        (b"10 size=1" + b"0" * 30 + b"\n", "does not end with a newline"),
        (pax_record("size", "9" * 30), "impossible size"),
        (pax_record("size", str(1 << 63)), "impossible size"),
        (b"\xff\xfe\xfd 1=2\n", "has no length"),
    ],
)
def test_malformed_pax_records_name_the_member(body, reason):
    raw = pax_block(body, name=b"PaxHeader/alert.avro") + member(b"alert.avro", b"data") + END
    with pytest.raises(
        IngestError,
        match=r"test\.tar: corrupt (pax|tar) header (of )?'PaxHeader/alert\.avro'|test\.tar: corrupt tar header of 'alert\.avro'",
    ) as info:
        lean(raw)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


def test_names_that_are_not_utf8_are_escaped():
    raw = pax_block(b"16 path=\xff\xfe.avro\n") + member(b"x.avro", b"data") + END
    assert [(n, d) for n, d, _ in lean(raw)] == reference(raw)
    assert lean(raw)[0][0] == "\\xff\\xfe.avro"
    header_name = member(b"caf\xe9-latin1.avro", b"data") + END
    assert (
        [(n, d) for n, d, _ in lean(header_name)]
        == reference(header_name)
        == [("caf\\xe9-latin1.avro", b"data")]
    )


def test_bad_checksum_names_the_member():
    block = bytearray(header(b"flipped.avro", octal(4)))
    block[0] ^= 0x20
    with pytest.raises(
        IngestError, match=r"corrupt tar header of 'Flipped\.avro' at byte 0 \(checksum mismatch\)"
    ):
        lean(bytes(block) + b"data" + bytes(508) + END)


def test_a_long_name_with_no_member_after_it_is_an_error():
    raw = header(b"././@LongLink", octal(6), b"L") + b"x.avro" + bytes(506) + END
    with pytest.raises(IngestError, match="after a header of a member it lacks"):
        lean(raw)


def test_header_with_unchanged_checksum_after_damage_is_caught():
    raw = bytearray(member(b"a.avro", b"a" * 10) + END)
    raw[124:136] = base256(-5)
    with pytest.raises(IngestError, match="checksum mismatch"):
        lean(bytes(raw))
    with pytest.raises(IngestError, match="negative size -5"):
        lean(with_checksum(raw[:BLOCK]) + bytes(raw[BLOCK:]))


# --- real tarballs ---------------------------------------------------------------------------------


def _tarballs(shared_alerts):
    found = sorted((shared_alerts / "tarballs").glob("*.tar.gz"))
    if not found:
        pytest.skip("no sample tarballs")
    return found


@pytest.mark.shared
def test_real_tarballs_read_as_tarfile_reads_them(shared_alerts):
    for path in _tarballs(shared_alerts):
        with tarfile.open(path, "r:gz") as tf:
            ref = [(m.name, tf.extractfile(m).read()) for m in tf if m.isreg()]
        with open(path, "rb") as source, GzipStream(source, path.name) as stream:
            ours = [(name, data) for name, data, _ in iter_members(stream)]
            stream.drain()
        assert ours == ref, path.name
        assert ours, path.name


# --- through an ingest -----------------------------------------------------------------------------


def test_an_ingest_of_the_bomb_fails_its_tarball_with_one_line(tmp_path):
    """What ``ingest`` makes of it: the release fails with the reader's one-line reason; nothing of it
    stays visible; a member merely too large to hold is a per-member error instead."""
    from ztfcat import Catalog

    alert = packet()
    ok = member(b"1.avro", alert)
    bomb = tmp_path / "ztf_public_20180903.tar.gz"
    bomb.write_bytes(gzip.compress(ok + header(b"2.avro", base256(-(1 << 60))) + bytes(1 << 20) + END))
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}", tmp_path / "data")
    try:
        with pytest.raises(IngestError) as info:
            catalog.ingest(bomb)
        assert str(info.value) == (
            "ztf_public_20180903.tar.gz: corrupt tar header of '2.avro' at byte "
            f"{len(ok)} (negative size -{1 << 60})"
        )
        release = catalog.release(bomb.name)
        assert release.status == "failed" and release.error == str(info.value)
        assert release.n_alerts == 0
        big = tmp_path / "ztf_public_20180904.tar.gz"
        big.write_bytes(gzip.compress(ok + header(b"3.avro", octal(65 << 20)) + bytes(65 << 20) + END, 1))
        report = catalog.ingest(big)
        assert report.status == "complete" and report.n_alerts == 1
        assert report.errors == [("3.avro", f"{65 << 20} bytes: too large for an alert packet")]
    finally:
        catalog.close()


def test_an_ingest_records_a_member_whose_name_is_not_utf8(tmp_path):
    """Found by hand next to the fuzzer: a lone surrogate in a member's name reached the database in
    its error row, and the whole tarball failed with a raw ``UnicodeEncodeError``."""
    from ztfcat import Catalog

    night = tmp_path / "ztf_public_20180907.tar.gz"
    night.write_bytes(
        gzip.compress(member(b"bad\xff.avro", b"junk") + member(b"ok\xfe.avro", packet()) + END)
    )
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}", tmp_path / "data")
    try:
        report = catalog.ingest(night)
        assert report.status == "complete" and report.n_alerts == 1
        assert report.errors == [("bad\\xff.avro", "not an Avro object container file (bad magic bytes)")]
    finally:
        catalog.close()


def test_a_fork_made_while_a_stream_is_open_does_not_keep_its_inflater_waiting():
    """A process forked mid-stream (a history worker) must not hold the inflate child's stdin open:
    the stream still ends when its source does, while the fork is alive."""
    import os
    import queue
    import threading

    from ztfcat.ingest.history import worker_pool

    class Source:  # bytes handed over by the test, no file descriptor a fork could inherit
        def __init__(self):
            self.chunks = queue.Queue()

        def read(self, _n):
            return self.chunks.get()

    payload = os.urandom(3 << 20)
    source = Source()
    source.chunks.put(gzip.compress(payload[:1000]) + b"")  # a first gzip member: the stream is live
    with GzipStream(source, "forked.tar.gz") as stream, worker_pool(1) as pool:
        assert pool.submit(os.getpid).result() != os.getpid()  # the fork exists now
        source.chunks.put(gzip.compress(payload[1000:]))
        source.chunks.put(b"")  # the end of the source
        got = bytearray()
        done = threading.Event()

        def read_all():
            while chunk := stream.read(1 << 16):
                got.extend(chunk)
            done.set()

        threading.Thread(target=read_all, daemon=True).start()
        assert done.wait(30), "the inflater never saw the end of its input: a fork holds its pipe"
    assert bytes(got) == payload
