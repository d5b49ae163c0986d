"""One streaming pass over a ``.tar.gz``: inflate in a background thread, frame tar members by hand.

Inflating (isal, which releases the GIL) runs on the other core while the caller decodes alerts.
Tar framing is a lean 512-byte header reader: ``tarfile`` costs five times as much per member and keeps
a ``TarInfo`` for every member it has seen, a leak on a night of 400,000 alerts.  Memory stays bounded
by the queue of inflated chunks, whatever the tarball size.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator
from typing import BinaryIO

from isal import isal_zlib

from .errors import IngestError

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
GZIP_MAGIC = b"\x1f\x8b"
_DONE = object()


class GzipStream:
    """Readable, inflated bytes of a gzip source, with the MD5 and size of the compressed bytes read.

    Parameters
    ----------
    source : binary file object
        Anything with ``read(n)``: a file, a download stream, a GCS object reader.
    name : str
        Named in every error, so a failure says which tarball it was.
    """

    def __init__(self, source: BinaryIO, name: str, chunk_size: int = 1 << 20, depth: int = 8) -> None:
        self.name = name
        self.md5 = hashlib.md5()
        self.size = 0
        self._source = source
        self._chunk_size = chunk_size
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._buffer = b""
        self._pos = 0
        self._eof = False
        self._thread = threading.Thread(target=self._inflate, name=f"inflate {name}", daemon=True)
        self._thread.start()

    # -- producer thread -------------------------------------------------------------------------
    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _inflate(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
        else:
            self._put(_DONE)

    def _run(self) -> None:
        inflater = None
        finished = False  # the last gzip member ended cleanly
        limit = 4 * self._chunk_size
        while not self._stop.is_set():
            try:
                chunk = self._source.read(self._chunk_size)
            except OSError as exc:
                raise IngestError(f"{self.name}: reading failed after {self.size} bytes: {exc}") from exc
            if not chunk:
                break
            if self.size == 0 and chunk[:2] != GZIP_MAGIC:
                raise IngestError(f"{self.name} is not a gzip file (it starts with {bytes(chunk[:4])!r})")
            self.size += len(chunk)
            self.md5.update(chunk)
            data = chunk
            while data:
                if inflater is None:
                    if finished and data.strip(b"\0") == b"":
                        break  # zero padding after the last member, as some tools write
                    if data[:2] != GZIP_MAGIC and finished:
                        break  # trailing garbage: gzip -dc ignores it too
                    inflater = isal_zlib.decompressobj(wbits=31)
                    finished = False
                try:
                    out = inflater.decompress(data, limit)
                except isal_zlib.error as exc:
                    raise IngestError(
                        f"{self.name} is corrupt: gzip data error after {self.size} bytes: {exc}"
                    ) from exc
                if out and not self._put(out):
                    return
                data = inflater.unconsumed_tail
                if inflater.eof:
                    data = inflater.unused_data
                    inflater = None
                    finished = True
        if not finished and not self._stop.is_set():
            if self.size == 0:
                raise IngestError(f"{self.name} is empty (0 bytes): not a gzip file")
            raise IngestError(
                f"{self.name} is truncated: the gzip stream ends without its end marker after {self.size} bytes"
            )

    # -- consumer --------------------------------------------------------------------------------
    def _next_chunk(self) -> bool:
        item = self._queue.get()
        if item is _DONE:
            self._eof = True
            return False
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        self._buffer, self._pos = item, 0
        return True

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer only at the end of the stream."""
        end = self._pos + n
        if end <= len(self._buffer):
            out = self._buffer[self._pos : end]
            self._pos = end
            return out
        parts = [self._buffer[self._pos :]]
        need = n - len(parts[0])
        self._buffer, self._pos = b"", 0
        while need > 0 and not self._eof and self._next_chunk():
            take = self._buffer[:need]
            parts.append(take)
            self._pos = len(take)
            need -= len(take)
        return b"".join(parts)

    def skip(self, n: int) -> int:
        """Discard ``n`` bytes without keeping them; returns how many were there."""
        skipped = 0
        while skipped < n:
            got = len(self.read(min(n - skipped, 1 << 20)))
            if not got:
                break
            skipped += got
        return skipped

    def drain(self) -> None:
        """Read to the end, so the MD5 covers every byte and a truncated tail is still reported."""
        while not self._eof and self._next_chunk():
            pass
        self._buffer, self._pos = b"", 0

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)

    def __enter__(self) -> GzipStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _octal(field: bytes, name: str, offset: int) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise IngestError(f"{name}: corrupt tar header at byte {offset} (bad number {text!r})") from None


def _checksum_ok(header: bytes) -> bool:
    stored = header[148:156].split(b"\0", 1)[0].strip()
    try:
        expected = int(stored, 8)
    except ValueError:
        return False
    actual = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return actual == expected


def _pax_records(data: bytes) -> dict[str, str]:
    records = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        length = int(data[pos:space])
        if length <= 0:
            break
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def iter_members(
    stream: GzipStream, wanted=lambda name: True, max_size: int = 64 << 20
) -> Iterator[tuple[str, bytes | None, int]]:
    """Yield ``(name, data, size)`` for every regular file member, in tarball order.

    ``data`` is None when ``wanted(name)`` is false or the member is larger than ``max_size``: its bytes
    are skipped, never held.  Directories, links and other special members are passed over.
    """
    offset = 0
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        header = stream.read(BLOCK)
        if not header:
            return  # no end-of-archive blocks: tolerated, as GNU tar does
        if len(header) < BLOCK:
            raise IngestError(f"{stream.name} is truncated inside a tar header at byte {offset}")
        if header == ZERO_BLOCK:
            return
        if not _checksum_ok(header):
            raise IngestError(f"{stream.name}: corrupt tar header at byte {offset} (checksum mismatch)")
        size = _octal(header[124:136], stream.name, offset)
        kind = header[156:157]
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if header[257:262] == b"ustar":
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if prefix:
                name = f"{prefix}/{name}"
        if "size" in pax:
            size = int(pax["size"])
        offset += BLOCK
        padded = size + (-size) % BLOCK
        if kind in (b"L", b"x", b"g"):
            meta = stream.read(padded)[:size]
            if len(meta) < size:
                raise IngestError(f"{stream.name} is truncated inside a tar member at byte {offset}")
            if kind == b"L":
                long_name = meta.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif kind == b"x":
                pax = _pax_records(meta)
            offset += padded
            continue
        name = pax.get("path", long_name or name)
        long_name, pax = None, {}
        if kind not in (b"0", b"\0", b"7"):
            if stream.skip(padded) < padded:
                raise IngestError(f"{stream.name} is truncated inside member {name!r}")
            offset += padded
            continue
        if size <= max_size and wanted(name):
            data = stream.read(size)
            if len(data) < size:
                raise IngestError(f"{stream.name} is truncated inside member {name!r}")
            stream.skip(padded - size)
        else:
            data = None
            if stream.skip(padded) < padded:
                raise IngestError(f"{stream.name} is truncated inside member {name!r}")
        offset += padded
        yield name, data, size
