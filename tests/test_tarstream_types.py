"""``ztfcat.ingest.tarstream`` on members of every type flag (all 256 bytes), against ``tarfile``.

A member of each type, with no data or with 700 bytes of it, sits between two regular members.  The
lean reader must read what ``tarfile`` reads, or stop with a one-line :class:`IngestError` naming the
tarball, having handed out only members ``tarfile`` also gives; it never hands out a member ``tarfile``
would not, nor other bytes.  With no data every type must agree with ``tarfile`` exactly.
"""

from __future__ import annotations

import io

import pytest

from tests.tarcraft import END, member, reference, until_error
from ztfcat.errors import IngestError
from ztfcat.ingest.tarstream import PlainStream

TYPES = [bytes([flag]) for flag in range(256)]


def _outcome(raw: bytes):
    found, exc = until_error(PlainStream(io.BytesIO(raw), "odd.tar"))
    return [(name, data) for name, data, _ in found], exc


@pytest.mark.parametrize("size", [0, 700])
def test_every_type_flag_reads_as_tarfile_reads_it_or_is_refused(size):
    refused = []
    for kind in TYPES:
        raw = member(b"first.avro", b"f" * 10) + member(b"odd.avro", b"o" * size, kind=kind)
        raw += member(b"next.avro", b"n" * 20) + END
        ref = reference(raw)
        found, exc = _outcome(raw)
        if exc is None:
            assert found == ref, kind
            continue
        assert isinstance(exc, IngestError), (kind, exc)
        assert "odd.tar" in str(exc) and "\n" not in str(exc)
        assert found == ref[: len(found)], kind
        assert "odd.avro" not in dict(ref), kind  # only a member tarfile reads no file from is refused
        refused.append(kind)
    if size == 0:
        assert refused == []
    # regular files (0, 7 and the old NUL flag) are read whatever their size
    for kind in (b"0", b"7", b"\0"):
        raw = member(b"odd.avro", b"o" * size, kind=kind) + END
        assert _outcome(raw) == (reference(raw), None) == ([("odd.avro", b"o" * size)], None)
