"""One streaming pass over a ``.tar.gz``: inflate in a child process, frame tar members by hand.

Inflating (isal) runs in a child process on the other core while the caller decodes alerts.
Tar framing is a lean 512-byte header reader: ``tarfile`` costs five times as much per member and keeps
a ``TarInfo`` for every member it has seen, a leak on a night of 400,000 alerts.  Memory stays bounded
by the pipe of inflated bytes and the member size limit, whatever the tarball size and whatever its
headers claim: sizes are validated (a negative or impossible size is a corrupt header, not a read of
everything) and long-name and pax headers are capped (``MAX_META``).  ``tests/test_tarstream.py`` holds
the reader to ``tarfile`` on ustar, GNU and pax archives; ``tests/test_fuzz.py`` fuzzes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import BinaryIO

from isal import isal_zlib

from ..errors import IngestError

BLOCK = 512
PIPE_SIZE = 1 << 20
ZERO_BLOCK = bytes(BLOCK)
GZIP_MAGIC = b"\x1f\x8b"

#: Every open :class:`GzipStream` of this process, so a forked child can let go of their pipes.
_open_streams: weakref.WeakSet = weakref.WeakSet()
_fork_hook = threading.Lock()
_fork_hook_set = False


def _release_pipes_in_child() -> None:
    """After a fork, point the child's copies of every inflate pipe at ``/dev/null``.

    A forked process (a history worker of :func:`ztfcat.ingest.history.worker_pool`, or anything a
    user's code forks) inherits the parent's file descriptors.  Were it to keep a copy of an inflate
    child's stdin, that child would never see the end of its input and the ingest would hang for as
    long as the fork lives.  ``dup2`` rather than ``close``: the child's file objects still own those
    descriptor numbers, and closing them twice could close an unrelated file that reused the number.
    """
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for stream in list(_open_streams):
            for pipe in (stream._child.stdin, stream._child.stdout, stream._child.stderr):
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(null, pipe.fileno())
    finally:
        os.close(null)


def _track(stream: GzipStream) -> None:
    global _fork_hook_set
    with _fork_hook:
        if not _fork_hook_set:  # once per process, at the first stream: nothing happens at import
            os.register_at_fork(after_in_child=_release_pipes_in_child)
            _fork_hook_set = True
        _open_streams.add(stream)


class GzipStream:
    """Readable, inflated bytes of a gzip source, with the MD5 and size of the compressed bytes read.

    Inflating runs in a child process (:func:`inflate_stdio`): zlib and isal hold the GIL often enough
    that an inflate *thread* halves both its own speed and the decoder's (measured), while a process
    runs truly beside the decoder on the other core.  A feeder thread hands the source's bytes to the
    child, hashing them on the way (hashlib releases the GIL), so the source can be any stream (file,
    download, bucket object).

    Parameters
    ----------
    source : binary file object
        Anything with ``read(n)``.
    name : str
        Named in every error, so a failure says which tarball it was.
    """

    def __init__(self, source: BinaryIO, name: str, chunk_size: int = 1 << 20) -> None:
        self.name = name
        self.md5: str | None = None  # hex digest of the gzip bytes, known once the stream has ended
        self._digest = hashlib.md5()
        self.size = 0
        self._source = source
        self._chunk_size = chunk_size
        self._feed_error: BaseException | None = None
        self._closed = False
        self._child = subprocess.Popen(
            [sys.executable, "-c", "from ztfcat.ingest.tarstream import inflate_stdio; inflate_stdio()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=chunk_size,
        )
        for pipe in (self._child.stdin, self._child.stdout):
            _widen(pipe)
        self._out = self._child.stdout
        _track(self)
        self._feeder = threading.Thread(target=self._feed, name=f"feed {name}", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        stdin = self._child.stdin
        try:
            while not self._closed:
                try:
                    chunk = self._source.read(self._chunk_size)
                except OSError as exc:
                    raise IngestError(f"{self.name}: reading failed after {self.size} bytes: {exc}") from exc
                if not chunk:
                    break
                if self.size == 0 and chunk[:2] != GZIP_MAGIC:
                    raise IngestError(f"{self.name} is not a gzip file (it starts with {bytes(chunk[:4])!r})")
                self.size += len(chunk)
                self._digest.update(chunk)  # releases the GIL; here it balances the two processes
                stdin.write(chunk)
        except BrokenPipeError:
            pass  # the child stopped (an error it reports, or close()): nothing more to hand over
        except BaseException as exc:  # raised again in the consumer's thread
            self._feed_error = exc
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _check(self) -> None:
        """Raise what went wrong in the feeder or the child, once the stream has ended."""
        if self.md5 is not None:
            return
        self._feeder.join()
        if self._feed_error is not None:
            raise self._feed_error
        code = self._child.wait()
        message = self._child.stderr.read().decode("utf-8", "replace").strip().splitlines()
        if code == 0 and message and message[-1] == "ok":
            self.md5 = self._digest.hexdigest()
        else:
            reason = message[-1] if message else f"inflate process exited with status {code}"
            raise IngestError(f"{self.name} {reason}")

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer only at the end of the stream."""
        data = self._out.read(n)
        if len(data) < n:
            self._check()
        return data

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
        while self._out.read(1 << 20):
            pass
        self._check()

    def close(self) -> None:
        """Stop the child and the feeder; safe to call early (an error) or twice."""
        if self._closed:
            return
        self._closed = True
        _open_streams.discard(self)
        if self._child.poll() is None:
            self._child.kill()
        self._child.wait()
        self._feeder.join(timeout=10)
        for pipe in (self._child.stdout, self._child.stderr):
            pipe.close()

    def __enter__(self) -> GzipStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _widen(pipe) -> None:
    """Grow a pipe from Linux's 64 KiB to 1 MiB: at 64 KiB the inflater stalls on every alert until the
    reader has taken it, and the two processes take turns instead of running side by side (measured:
    535 µs of wall per alert for 150 µs of reading and 320 µs of inflating)."""
    size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if size is not None:
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
            fcntl.fcntl(pipe.fileno(), size, PIPE_SIZE)


def inflate_stdio(chunk_size: int = 1 << 20) -> None:
    """The child process of :class:`GzipStream`: gzip on stdin, inflated bytes on stdout.

    Accepts several concatenated gzip members, and zero padding or trailing garbage after the last one
    (``gzip -dc`` does too).  Success ends with ``ok`` on stderr; a corrupt or truncated stream ends with
    a one-line reason there and exit status 3, and the parent names the file.
    """
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    inflater = None
    finished = False  # the last gzip member ended cleanly
    total = 0
    # Inflated bytes a call may return.  Not more than a chunk: glibc hands larger blocks back to the
    # kernel when they are freed and faults them in again on the next call; with 4 MiB the child spent
    # 0.5 s of system time per 8,000 alerts on page faults, with 1 MiB 0.07 s, and inflated 35 % faster
    # (docs/benchmarks.md).
    limit = chunk_size
    try:
        while chunk := stdin.read(chunk_size):
            total += len(chunk)
            data = chunk
            while data:
                if inflater is None:
                    if finished and (data[:2] != GZIP_MAGIC or not data.strip(b"\0")):
                        break  # padding or trailing garbage after the last member
                    inflater = isal_zlib.decompressobj(wbits=31)
                    finished = False
                try:
                    out = inflater.decompress(data, limit)
                except isal_zlib.error as exc:
                    raise IngestError(f"is corrupt: gzip data error after {total} bytes ({exc})") from exc
                if out:
                    stdout.write(out)
                data = inflater.unconsumed_tail
                if inflater.eof:
                    data = inflater.unused_data
                    inflater = None
                    finished = True
        if not finished and total > 0:  # 0 bytes: a real empty night of the archive, not an error
            raise IngestError(
                f"is truncated: the gzip stream ends without its end marker after {total} bytes"
            )
        stdout.flush()
        print("ok", file=sys.stderr, flush=True)
    except BrokenPipeError:
        os._exit(0)  # the parent stopped reading; nothing to report
    except IngestError as exc:
        print(exc, file=sys.stderr)
        sys.stderr.flush()
        os._exit(3)


#: Header types after which ``tarfile`` expects no data blocks, whatever the size field says.
_NO_DATA = frozenset((b"1", b"2", b"3", b"4", b"5", b"6"))
#: Regular files: the only members whose bytes are ever handed out.
_REGULAR = frozenset((b"0", b"\0", b"7"))
#: GNU long names and pax headers are read whole to learn the next member's name; a path is at most a
#: few KiB, so 1 MiB is generous and keeps a header claiming gigabytes from being held.
MAX_META = 1 << 20
#: No tar member is 8 EiB: a larger size (base-256 allows 2**88) is a corrupt or hostile header.
MAX_SIZE = (1 << 63) - 1


class _Corrupt(Exception):
    """A header field that does not parse; turned into an :class:`IngestError` naming the member."""


def _number(field: bytes) -> int:
    """A numeric header field: octal digits, or GNU base-256 (``0x80`` positive, ``0xff`` negative).

    Mirrors ``tarfile.nti`` but refuses what it only tolerates: signs, ``0o`` and ``_`` in the octal text
    (``int(text, 8)`` takes them).
    """
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":  # two's complement: always negative
        return int.from_bytes(field[1:], "big") - (1 << (8 * (len(field) - 1)))
    text = field.split(b"\0", 1)[0].strip(b" ")
    if text.strip(b"01234567"):
        raise _Corrupt(f"bad number {text!r}")
    return int(text, 8) if text else 0


def _size(value: int) -> int:
    if value < 0:
        raise _Corrupt(f"negative size {value}")
    if value > MAX_SIZE:
        raise _Corrupt(f"impossible size {value}")
    return value


def _checksum_ok(header: bytes) -> bool:
    """Both the unsigned sum POSIX asks for and the signed one old Unix tars wrote, as ``tarfile``."""
    try:
        expected = _number(header[148:156])
    except _Corrupt:
        return False
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    if expected == unsigned:
        return True
    high = sum(1 for byte in header[:148] + header[156:] if byte > 127)  # rare: only on a mismatch
    return expected == unsigned - 256 * high


def _pax_records(data: bytes) -> dict[str, str]:
    """``"%d %s=%s\n"`` records (length, keyword, value), strictly: ``tarfile`` stops silently at the
    first record it cannot read and keeps the member, which would let a damaged header rename it."""
    records = {}
    pos = 0
    while pos < len(data):
        if not data[pos:].strip(b"\0"):
            break  # NUL padding some writers leave after the last record
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > pos else b""
        if not digits or digits.strip(b"0123456789"):
            raise _Corrupt(f"pax record at byte {pos} has no length")
        length = int(digits)
        end = pos + length
        if end > len(data) or length <= len(digits) + 1:
            raise _Corrupt(f"pax record at byte {pos} claims {length} bytes")
        if data[end - 1 : end] != b"\n":
            raise _Corrupt(f"pax record at byte {pos} does not end with a newline")
        key, equals, value = data[space + 1 : end - 1].partition(b"=")
        if not equals or not key:
            raise _Corrupt(f"pax record at byte {pos} has no keyword=value")
        records[_decode(key)] = _decode(value)
        pos = end
    size = records.get("size")
    if size is not None and (not size.isascii() or not size.isdigit()):
        raise _Corrupt(f"pax size {size!r} is not a number")
    return records


def _text(field: bytes) -> str:
    return _decode(field.split(b"\0", 1)[0])


def _decode(raw: bytes) -> str:
    """UTF-8, any byte that is not UTF-8 shown as ``\\xNN``: ``tarfile`` keeps them as lone surrogates,
    which no database, JSON encoder or terminal accepts (an error naming such a member failed its whole
    ingest with a raw ``UnicodeEncodeError``)."""
    return raw.decode("utf-8", "backslashreplace")


class PlainStream:
    """An uncompressed tar stream, with the ``name``/``read``/``skip`` that :func:`iter_members` uses.

    Parameters
    ----------
    source : binary file object
        Anything with ``read(n)``; a short read (a socket) is read again until ``n`` bytes or the end.
    name : str
        Named in every error.
    """

    def __init__(self, source: BinaryIO, name: str) -> None:
        self.name = name
        self._source = source

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer only at the end of the stream."""
        parts = []
        while n > 0:
            chunk = self._source.read(n)
            if not chunk:
                break
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def skip(self, n: int) -> int:
        """Discard ``n`` bytes, 1 MiB at a time; returns how many were there."""
        skipped = 0
        while skipped < n:
            got = len(self.read(min(n - skipped, 1 << 20)))
            if not got:
                break
            skipped += got
        return skipped


def iter_members(
    stream: GzipStream | PlainStream, wanted=lambda name: True, max_size: int = 64 << 20
) -> Iterator[tuple[str, bytes | None, int]]:
    """Yield ``(name, data, size)`` for every regular file member, in tarball order.

    ``data`` is None when ``wanted(name)`` is false or the member is larger than ``max_size``: its bytes
    are skipped, never held.  Directories, links, sparse files and other special members are passed
    over (links are never followed).  Names, sizes and bytes are those ``tarfile`` gives for ustar, GNU
    (``L`` long names, base-256 sizes) and pax (``x`` and global ``g`` headers) archives, except that
    bytes of a name that are not UTF-8 come as ``\\xNN`` escapes, not lone surrogates.

    Raises
    ------
    IngestError
        The archive cannot be framed past some header: truncated, a bad checksum, a negative or
        impossible size, a malformed pax record, a long-name or pax header over ``MAX_META``.  The
        message names the tarball, the member and the byte offset of its header.
    """
    offset = 0
    long_name: str | None = None
    pax: dict[str, str] = {}
    global_pax: dict[str, str] = {}
    while True:
        header = stream.read(BLOCK)
        if len(header) < BLOCK and header:
            raise IngestError(f"{stream.name} is truncated inside a tar header at byte {offset}")
        if not header or header == ZERO_BLOCK:  # no end-of-archive blocks is tolerated, as by GNU tar
            if long_name is not None or pax:
                raise IngestError(f"{stream.name} ends at byte {offset} after a header of a member it lacks")
            return
        name = _text(header[:100])
        if not _checksum_ok(header):
            raise IngestError(
                f"{stream.name}: corrupt tar header of {name!r} at byte {offset} (checksum mismatch)"
            )
        kind = header[156:157]
        try:
            size = _size(_number(header[124:136]))
            if "size" in pax:  # a global header's size is not applied: tarfile frames by the header's
                size = _size(int(pax["size"]))
            if kind in (b"L", b"K", b"x", b"g", b"X") and size > MAX_META:
                raise _Corrupt(f"a {kind.decode('latin-1')!r} header of {size} bytes (at most {MAX_META})")
        except _Corrupt as exc:
            raise IngestError(
                f"{stream.name}: corrupt tar header of {name!r} at byte {offset} ({exc})"
            ) from None
        at = offset
        offset += BLOCK
        padded = size + (-size) % BLOCK
        if kind in (b"L", b"K", b"x", b"g", b"X"):
            block = stream.read(padded)
            if len(block) < padded:
                raise IngestError(f"{stream.name} is truncated inside the tar header {name!r} at byte {at}")
            meta = block[:size]
            offset += padded
            if kind == b"L":
                long_name = _text(block)  # up to the first NUL, padding included, as tarfile reads it
            elif kind != b"K":
                try:
                    records = _pax_records(meta)
                except _Corrupt as exc:
                    raise IngestError(
                        f"{stream.name}: corrupt pax header {name!r} at byte {at} ({exc})"
                    ) from None
                if kind == b"g":
                    global_pax.update(records)
                else:
                    pax = {**global_pax, **records}
            continue
        if kind == b"\0" and name.endswith("/"):
            kind = b"5"  # old V7 tar: a directory is a regular file whose name ends with a slash
        prefix = _text(header[345:500])  # ustar; zero in GNU headers, as tarfile assumes
        if prefix and kind != b"S":
            name = f"{prefix}/{name}"
        info = pax or global_pax
        if "path" in info:
            name = info["path"].rstrip("/")
        elif long_name is not None:
            name = long_name
        sparse = kind == b"S" or any(key.startswith("GNU.sparse.") for key in info)
        long_name, pax = None, {}
        if kind == b"S" and header[482]:
            offset += _skip_sparse_extensions(stream, name, at)
        if kind in _NO_DATA:
            continue
        if kind not in _REGULAR or sparse:
            if stream.skip(padded) < padded:
                raise IngestError(f"{stream.name} is truncated inside member {name!r}")
            offset += padded
            continue
        if size <= max_size and wanted(name):
            data = stream.read(size)
            if len(data) < size or stream.skip(padded - size) < padded - size:
                raise IngestError(f"{stream.name} is truncated inside member {name!r}")
        else:
            data = None
            if stream.skip(padded) < padded:
                raise IngestError(f"{stream.name} is truncated inside member {name!r}")
        offset += padded
        yield name, data, size


def _skip_sparse_extensions(stream, name: str, at: int) -> int:
    """Pass the extension blocks of an old GNU sparse header (each says whether another follows)."""
    skipped = 0
    while True:
        block = stream.read(BLOCK)
        skipped += len(block)
        if len(block) < BLOCK:
            raise IngestError(f"{stream.name} is truncated inside the sparse map of {name!r} at byte {at}")
        if not block[504]:
            return skipped
