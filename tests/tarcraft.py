"""Tar archives for the tests of ``ztfcat.ingest.tarstream``: built with ``tarfile``, hand-crafted headers, and
``tarfile`` itself as the reference reader the lean one must agree with.
"""

from __future__ import annotations

import gzip
import io
import tarfile

from ztfcat.ingest.tarstream import GzipStream, PlainStream, iter_members

BLOCK = 512


def build(members, fmt=tarfile.PAX_FORMAT, **options) -> bytes:
    """An uncompressed tar of ``members``: ``(name, bytes)`` for files, or ready ``TarInfo`` objects."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **options) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
                continue
            name, data = member
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    """A directory, link, fifo or device member."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def header(name: bytes, size_field: bytes, kind: bytes = b"0", prefix: bytes = b"") -> bytes:
    """One ustar header block with a raw 12-byte size field, and a valid checksum."""
    block = bytearray(BLOCK)
    block[: len(name)] = name
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = size_field
    block[136:148] = b"14533615400\0"
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[345 : 345 + len(prefix)] = prefix
    return with_checksum(block)


def with_checksum(block: bytes | bytearray) -> bytes:
    """The block with its checksum field recomputed (as a writer would)."""
    block = bytearray(block)
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def octal(n: int) -> bytes:
    return b"%011o\0" % n


def base256(n: int) -> bytes:
    """GNU base-256 in 12 bytes: ``0x80`` then big-endian, or ``0xff`` then two's complement."""
    if n >= 0:
        return b"\x80" + n.to_bytes(11, "big")
    return b"\xff" + (n + (1 << 88)).to_bytes(11, "big")


def pax_block(body: bytes, name: bytes = b"PaxHeader/x", kind: bytes = b"x") -> bytes:
    """A pax header (``x`` or ``g``) whose data is ``body`` exactly, padded to whole blocks."""
    return header(name, octal(len(body)), kind) + body + bytes(-len(body) % BLOCK)


def pax_record(key: str, value: str) -> bytes:
    """One well-formed ``"%d %s=%s\\n"`` record."""
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def member(name: bytes, data: bytes, kind: bytes = b"0") -> bytes:
    """A header and its padded data."""
    return header(name, octal(len(data)), kind) + data + bytes(-len(data) % BLOCK)


END = bytes(2 * BLOCK)
LONG = "ztf_public_20180819/" + "sub-directory/" * 8 + "1234567890123456789.avro"  # 150 characters


def rich(fmt: int) -> list:
    """Members of every kind a tarball may hold; the names suit every format ``fmt`` can write."""
    members = [
        ("a.avro", b"alpha" * 100),
        ("sub/dir/b.avro", bytes(range(256)) * 3),
        ("zero.avro", b""),
        ("exactly-one-block.avro", b"x" * BLOCK),
        special("sub", tarfile.DIRTYPE),
        special("sym.avro", tarfile.SYMTYPE, "a.avro"),
        special("hard.avro", tarfile.LNKTYPE, "a.avro"),
        special("fifo", tarfile.FIFOTYPE),
        special("dev", tarfile.CHRTYPE),
        ("c.avro", b"gamma"),
    ]
    if fmt == tarfile.USTAR_FORMAT:
        members.append((LONG, b"ustar splits a long path into prefix and name"))
    else:
        members += [
            ("d/" + "é" * 60 + "/" + "long-name-" * 12 + ".avro", b"non-ascii and long"),
            ("Ω/ünïcødé.avro", b"short non-ascii"),
            (LONG + "/" + "x" * 120, b"longer than ustar can hold"),
        ]
    return members


def reference(raw: bytes, fileobj=None) -> list[tuple[str, bytes]]:
    """What ``tarfile`` reads: every regular, non-sparse member's name and bytes, in order (names with
    bytes that are not UTF-8 escaped as :func:`iter_members` gives them)."""
    with tarfile.open(fileobj=fileobj or io.BytesIO(raw), mode="r:") as tf:
        return [(escaped(m.name), tf.extractfile(m).read()) for m in tf if m.isreg() and not m.issparse()]


def escaped(name: str) -> str:
    """``tarfile``'s name (lone surrogates for bytes that are not UTF-8) as ``iter_members`` spells it."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def lean(raw: bytes, gz: bool = False, max_size: int = 64 << 20, wanted=lambda name: True) -> list:
    """What :func:`iter_members` reads: ``(name, data, size)`` for each member, plain or gzip'd."""
    if not gz:
        return list(iter_members(PlainStream(io.BytesIO(raw), "test.tar"), wanted, max_size))
    with GzipStream(io.BytesIO(gzip.compress(raw, mtime=0)), "test.tar.gz") as stream:
        found = list(iter_members(stream, wanted, max_size))
        stream.drain()
        return found


def until_error(stream, max_size: int = 64 << 20) -> tuple[list, Exception | None]:
    """The members read before :func:`iter_members` stopped, and the exception it stopped with."""
    found = []
    try:
        for item in iter_members(stream, max_size=max_size):
            found.append(item)
    except Exception as exc:  # the caller asserts its type
        return found, exc
    return found, None
