"""``ztfcat.ingest.tarstream`` against ``tarfile`` on random member names: long, non-ASCII, at the field edges.

``tarfile`` writes each archive (ustar splits a long path into prefix and name, GNU adds ``././@LongLink``
members, pax ``path`` records) and reads it back as the reference; the lean reader must give the same
names and bytes, plain and gzip'd.  Names are drawn from ASCII, Latin, Greek, CJK and astral-plane
characters, with lengths in UTF-8 bytes around the 100-byte name field and the 155-byte ustar prefix.
"""

from __future__ import annotations

import random
import tarfile

import pytest

from tests.tarcraft import BLOCK, build, lean, reference

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_-. " + "éüßÅ" + "ΩΣλ" + "中文字" + "\U0001f30c"
EDGES = (98, 99, 100, 101, 102, 154, 155, 156, 255, 256, 257)  # bytes: the name and prefix fields


def _name(rng: random.Random, target: int) -> str:
    """A relative path of about ``target`` UTF-8 bytes ending in ``.avro``, with directories."""
    parts: list[str] = []
    size = len(".avro")
    while size < target:
        part = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 40))).strip(" ./") or "d"
        parts.append(part)
        size += len(part.encode()) + 1
    name = "/".join(parts)
    while len(name.encode()) + len(".avro") > target and len(name) > 1:
        name = name[:-1].rstrip("/ ")
    return name + ".avro"


def _writable(name: str, fmt: int) -> bool:
    try:
        build([(name, b"")], fmt)
    except ValueError:  # ustar cannot hold it: no split into a 155-byte prefix and a 100-byte name
        return False
    return True


def _members(rng: random.Random, fmt: int, n: int) -> list[tuple[str, bytes]]:
    members: dict[str, bytes] = {}
    while len(members) < n:
        target = rng.choice(EDGES) if rng.random() < 0.5 else rng.randrange(6, 320)
        name = _name(rng, target)
        if name in members or not _writable(name, fmt):
            continue
        size = rng.choice([0, 1, BLOCK - 1, BLOCK, BLOCK + 1, rng.randrange(3 * BLOCK)])
        members[name] = rng.randbytes(size)
    return list(members.items())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_random_names_read_as_tarfile_reads_them(fmt, seed):
    rng = random.Random(seed * 10 + fmt)
    members = _members(rng, fmt, 40)
    raw = build(members, fmt)
    ref = reference(raw)
    assert ref == members  # tarfile itself round-trips them: the reference is sound
    for gz in (False, True):
        ours = lean(raw, gz=gz)
        assert [(name, data) for name, data, _ in ours] == ref
        assert [size for _, _, size in ours] == [len(d) for _, d in ref]
    lengths = {len(n.encode()) for n, _ in members}
    if fmt == tarfile.USTAR_FORMAT:
        assert max(lengths) > 100  # some names needed the prefix field
    else:
        assert max(lengths) > 255 and any(not n.isascii() for n, _ in members)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_every_name_length_up_to_300_bytes(fmt):
    """One member per length, so each byte position of a long name's end meets the block edge once."""
    rng = random.Random(fmt)
    members = []
    for length in range(6, 301):
        stem = "".join(rng.choice("abcé中") for _ in range(length))
        while len(stem.encode()) > length - 5 and stem:
            stem = stem[:-1]
        members.append((f"{stem}{'x' * (length - 5 - len(stem.encode()))}.avro", bytes([length % 256])))
    assert [len(n.encode()) for n, _ in members] == list(range(6, 301))
    raw = build(members, fmt)
    assert [(n, d) for n, d, _ in lean(raw)] == reference(raw) == members
