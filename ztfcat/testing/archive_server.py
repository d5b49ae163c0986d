"""A local stand-in for the ZTF alert archive, served over real HTTP/1.1 on 127.0.0.1.

The tests and ``ztfcat demo`` need an archive that behaves like https://ztf.uw.edu/alerts/public/ without
the internet: an Apache "fancy index" page, an ``MD5SUMS`` manifest, exact ``Content-Length`` on HEAD and
``Range`` requests answered with 206 or 416.  Real downloads fail in ways a test must reproduce on demand,
so :class:`Faults` can drop or reset a connection part-way, stall or trickle a body, answer 503 or 429,
redirect, pad the index page or ``MD5SUMS`` to any size (streamed, never held), pretend a file is missing,
list a wrong MD5 or throttle the body, switched at runtime while the server runs.

This module deliberately shares no code with :mod:`ztfcat.sources.http`: a server built from the client's own
parsing rules would agree with every bug in them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import html
import io
import re
import socket
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit

PREFIX = "/alerts/public/"
MD5SUMS = "MD5SUMS"
INDEX = ""
"""The name under which :class:`Faults` address the index page."""
_SEND_CHUNK = 256 * 1024
_HOLD_LIMIT = 60.0  # the longest a stalled body holds its connection (or until the server stops)


@dataclass
class Faults:
    """Failures the server injects, per file name; mutable while the server runs.

    Names are file names, ``MD5SUMS``, or :data:`INDEX` (``""``) for the index page.  Change fields with
    plain assignment or inside ``with faults.lock:``; the server reads them under the lock and consumes
    the counted faults (``fail_first``, drops, stalls) one request at a time.

    Attributes
    ----------
    drop_after : dict of str to int
        Close the connection after this many bytes of the body (counted from the start of the body, so
        from the range start on a 206), for the first ``drop_times`` GET requests of that file.
    drop_times : int
        How many GET requests of each ``drop_after`` file are cut short.
    drop_reset : bool
        End drops with a TCP reset (RST, as a crashed proxy does) instead of an orderly close, once the
        bytes before it have reached the client's kernel.
    stall_after : dict of str to int
        Send the file up to this byte offset (of the file, not of the body: a resume from there gets
        nothing), then nothing more while holding the connection open (until the client leaves or the
        server stops, at most 60 s), for the first ``stall_times`` GET requests.
    stall_times : int
        How many GET requests of each ``stall_after`` file stall.
    trickle : dict of str to (int, float)
        Send these bodies ``n`` bytes at a time, ``seconds`` apart, as a server trickling a download.
    redirect : dict of str to str
        Answer requests of these names with ``302 Found`` to this URL (absolute, or relative to the
        request), e.g. to a second server on another port: another origin.
    pad_listing, pad_md5sums : int
        Make the index page (with an HTML comment) or ``MD5SUMS`` (with ``#`` lines) this many bytes
        longer, generated while sent, so a 200 MB page costs the server no memory.
    no_length : set of str
        Send these bodies without ``Content-Length``, ended by closing the connection.
    wrong_md5 : set of str
        ``MD5SUMS`` lists a wrong digest for these names.
    missing : set of str
        Listed on the index page but answered with 404, like a file removed after the page was made.
    fail_first : dict of str to int
        Answer ``fail_status`` (503) to this many requests (GET or HEAD) of the file, then serve it.
    fail_status : int
        The status of ``fail_first`` answers, e.g. 429 with ``retry_after``.
    retry_after : str or None
        A ``Retry-After`` header sent with ``fail_first`` answers.
    no_range : set of str
        Ignore ``Range`` for these names and answer 200 with the whole body, as a server without range
        support does.
    rate_limit_bps : float or None
        Throttle every body to about this many bytes per second (sleeping, not spinning).
    slow_first_byte : float
        Seconds to wait before answering any request.
    """

    drop_after: dict[str, int] = field(default_factory=dict)
    drop_times: int = 1
    drop_reset: bool = False
    stall_after: dict[str, int] = field(default_factory=dict)
    stall_times: int = 1
    trickle: dict[str, tuple[int, float]] = field(default_factory=dict)
    redirect: dict[str, str] = field(default_factory=dict)
    pad_listing: int = 0
    pad_md5sums: int = 0
    no_length: set[str] = field(default_factory=set)
    wrong_md5: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    fail_first: dict[str, int] = field(default_factory=dict)
    fail_status: int = 503
    retry_after: str | None = None
    no_range: set[str] = field(default_factory=set)
    rate_limit_bps: float | None = None
    slow_first_byte: float = 0.0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _drops_done: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _stalls_done: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def take_failure(self, name: str) -> bool:
        """Consume one ``fail_first`` answer for ``name``; True if this request must get a 503."""
        with self.lock:
            left = self.fail_first.get(name, 0)
            if left <= 0:
                return False
            self.fail_first[name] = left - 1
            return True

    def take_drop(self, name: str) -> int | None:
        """Consume one drop for ``name``; the body byte count to cut at, or None to send it whole."""
        return self._take(name, self.drop_after, self._drops_done, self.drop_times)

    def take_stall(self, name: str) -> int | None:
        """Consume one stall for ``name``; the body byte count to stop at, or None not to stall."""
        return self._take(name, self.stall_after, self._stalls_done, self.stall_times)

    def _take(self, name: str, limits: dict[str, int], done: dict[str, int], times: int) -> int | None:
        with self.lock:
            limit = limits.get(name)
            count = done.get(name, 0)
            if limit is None or count >= times:
                return None
            done[name] = count + 1
            return limit


class _Padded:
    """``head``, then ``size`` filler bytes made as they are read, then ``tail``: a file-like ``read``."""

    def __init__(self, head: bytes, size: int, filler: bytes, tail: bytes = b"") -> None:
        self.length = len(head) + size + len(tail)
        self._parts = [head, tail]
        self._pad = size
        self._filler = filler * max(1, _SEND_CHUNK // len(filler))

    def read(self, n: int) -> bytes:
        if self._parts[0]:
            out, self._parts[0] = self._parts[0][:n], self._parts[0][n:]
            return out
        if self._pad:
            out = self._filler[: min(n, self._pad)]
            self._pad -= len(out)
            return out
        out, self._parts[1] = self._parts[1][:n], self._parts[1][n:]
        return out


def human_size(size: int) -> str:
    """A byte count rounded as Apache's index page shows it (``apr_strfsize``): ``74``, ``8.8G``, ``837M``.

    Reproduced digit for digit (it matches all 691 nights for which both the exact size and the page's
    rounding are known), so a listing rendered here looks like the real one; negative means "no size"
    and gives ``-``, as Apache shows for directories.
    """
    if size < 0:
        return "-"
    if size < 973:
        return str(size)
    units = "KMGTPE"
    unit = 0
    while True:
        remain = size & 1023
        size >>= 10
        if size >= 973:
            unit += 1
            continue
        if size < 9 or (size == 9 and remain < 973):
            tenths = (remain * 5 + 256) // 512
            if tenths >= 10:
                size, tenths = size + 1, 0
            return f"{size}.{tenths}{units[unit]}"
        if remain >= 512:
            size += 1
        return f"{size}{units[unit]}"


@dataclass(frozen=True)
class IndexRow:
    """One line of an index page: a name, its modification time and its size as the page shows them.

    ``modified`` and ``size`` may be given already formatted (strings), so a page can be rebuilt from a
    saved listing such as ``listing-2026-07-02.tsv``; an int size is rounded with :func:`human_size`.
    """

    name: str
    modified: datetime | str | None
    size: int | str | None
    is_dir: bool = False


def render_index(rows: Iterable[IndexRow], path: str = PREFIX) -> str:
    """HTML of an Apache 2.4 fancy index (``IndexOptions FancyIndexing HTMLTable``) listing ``rows``.

    Includes what the real page has around the entries (sort links, icon images, a parent-directory link
    unless ``path`` is ``/``, rules and the server signature) so a parser is tested against all of it.
    """
    title = html.escape(f"Index of {path.rstrip('/') or '/'}")
    out = [
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">',
        "<html>",
        " <head>",
        f"  <title>{title}</title>",
        " </head>",
        " <body>",
        f"<h1>{title}</h1>",
        "  <table>",
        '   <tr><th valign="top"><img src="/icons/blank.gif" alt="[ICO]"></th>'
        '<th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th>'
        '<th><a href="?C=S;O=A">Size</a></th><th><a href="?C=D;O=A">Description</a></th></tr>',
        '   <tr><th colspan="5"><hr></th></tr>',
    ]
    if path.strip("/"):
        parent = path.rstrip("/").rsplit("/", 1)[0] + "/"
        out.append(
            '<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td>'
            f'<td><a href="{html.escape(quote(parent))}">Parent Directory</a></td>'
            '<td>&nbsp;</td><td align="right">  - </td><td>&nbsp;</td></tr>'
        )
    for row in rows:
        name = row.name + ("/" if row.is_dir else "")
        icon, alt = _icon(name)
        if isinstance(row.modified, datetime):
            modified = row.modified.strftime("%Y-%m-%d %H:%M")
        else:
            modified = row.modified or ""
        if isinstance(row.size, int):
            size = human_size(row.size)
        else:
            size = row.size if row.size is not None else "-"
        out.append(
            f'<tr><td valign="top"><img src="/icons/{icon}" alt="{alt}"></td>'
            f'<td><a href="{html.escape(quote(name))}">{html.escape(name)}</a></td>'
            f'<td align="right">{html.escape(modified)}  </td>'
            f'<td align="right">{html.escape(size.rjust(3))} </td><td>&nbsp;</td></tr>'
        )
    out += [
        '   <tr><th colspan="5"><hr></th></tr>',
        "</table>",
        "<address>Apache/2.4.6 (CentOS) Server at 127.0.0.1 Port 80</address>",
        "</body></html>",
        "",
    ]
    return "\n".join(out)


def _icon(name: str) -> tuple[str, str]:
    if name.endswith("/"):
        return "folder.gif", "[DIR]"
    if name.endswith((".gz", ".tar")):
        return "compressed.gif", "[   ]"
    return "unknown.gif", "[   ]"


def render_md5sums(digests: Mapping[str, str]) -> str:
    """``md5sum`` output for ``digests`` (name to hex digest), sorted by name, two spaces between."""
    return "".join(f"{digests[name]}  {name}\n" for name in sorted(digests))


def _content_type(name: str) -> str:
    if name.endswith(".gz"):
        return "application/x-gzip"
    if name.endswith(".tar"):
        return "application/x-tar"
    return "text/plain; charset=utf-8"


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """The inclusive byte span a ``Range`` header asks of a ``size``-byte body.

    Returns ``None`` when the whole body should be sent (no header, multiple ranges, or a header that
    does not parse, which RFC 9110 says to ignore), ``"unsatisfiable"`` for a 416, else ``(first, last)``.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first_text, last_text = match.groups()
    if first_text == "":  # suffix range: the last N bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        return "unsatisfiable"
    return first, min(last, size - 1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Apache/2.4.6"
    timeout = 30
    server: _HTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def version_string(self) -> str:
        return self.server_version

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, *, head: bool) -> None:
        archive = self.server.archive
        faults = archive.faults
        range_header = self.headers.get("Range")
        archive._record(self.command, self.path, range_header)
        if faults.slow_first_byte > 0:
            time.sleep(faults.slow_first_byte)
        path = unquote(urlsplit(self.path).path)
        if path == PREFIX.rstrip("/"):
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", PREFIX)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        index = path in ("/", PREFIX)
        name = INDEX if index else path[len(PREFIX) :] if path.startswith(PREFIX) else path[1:]
        with faults.lock:
            redirect = faults.redirect.get(name)
            missing = name in faults.missing
            ignore_range = name in faults.no_range
            no_length = name in faults.no_length
            pad = faults.pad_listing if index else faults.pad_md5sums if name == MD5SUMS else 0
        if redirect is not None:
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if faults.take_failure(name):
            self._send_failure(name)
            return
        if index:
            page = archive._index_html(path).encode()
            tail = b"</body></html>\n"
            body = (
                _Padded(page.removesuffix(tail) + b"<!-- ", pad, b"padding ", b" -->\n" + tail)
                if pad
                else _Padded(page, 0, b" ")
            )
            self._send_stream(body, "text/html;charset=UTF-8", head, name, length=not no_length)
            return
        if missing or not name or "/" in name or name.startswith("."):
            self.send_error(HTTPStatus.NOT_FOUND, f"no {path} here")
            return
        if name == MD5SUMS:
            text = archive._md5sums_text().encode()
            if pad or no_length:
                body = _Padded(text, pad, b"# padding" + b"." * 54 + b"\n")
                self._send_stream(body, "text/plain; charset=utf-8", head, name, length=not no_length)
            else:
                self._send_bytes(text, "text/plain; charset=utf-8", head, range_header, name)
            return
        file = archive.root / name
        if not file.is_file():
            self.send_error(HTTPStatus.NOT_FOUND, f"no {path} here")
            return
        self._send_file(file, name, head, None if ignore_range else range_header, not no_length)

    def _send_failure(self, name: str) -> None:
        faults = self.server.archive.faults
        status = HTTPStatus(faults.fail_status)
        body = f"{name or 'the index'} is busy\n".encode()
        self.send_response(status)
        if faults.retry_after is not None:
            self.send_header("Retry-After", faults.retry_after)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_stream(self, body: _Padded, content_type: str, head: bool, name: str, *, length: bool) -> None:
        """A generated body, whole (no ``Range``), with or without ``Content-Length``."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(body.length))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head:
            self._send_body(body, body.length, name)

    def _send_bytes(
        self, body: bytes, content_type: str, head: bool, range_header: str | None, name: str
    ) -> None:
        span = parse_range(range_header, len(body))
        if span == "unsatisfiable":
            self._send_416(len(body))
            return
        first, last = span if isinstance(span, tuple) else (0, len(body) - 1)
        self._send_head(
            HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK, content_type, first, last, len(body)
        )
        if not head:
            self._send_body(io.BytesIO(body[first : last + 1]), last - first + 1, name, first)

    def _send_file(
        self, file: Path, name: str, head: bool, range_header: str | None, length: bool = True
    ) -> None:
        stat = file.stat()
        size = stat.st_size
        span = parse_range(range_header, size)
        if span == "unsatisfiable":
            self._send_416(size)
            return
        first, last = span if isinstance(span, tuple) else (0, size - 1)
        validators = {
            "Last-Modified": formatdate(stat.st_mtime, usegmt=True),
            "ETag": f'"{size:x}-{stat.st_mtime_ns // 1000:x}"',
        }
        status = HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK
        self._send_head(status, _content_type(name), first, last, size, validators, length=length)
        if head:
            return
        with open(file, "rb") as fh:
            fh.seek(first)
            self._send_body(fh, last - first + 1, name, first)

    def _send_head(
        self,
        status: HTTPStatus,
        content_type: str,
        first: int,
        last: int,
        size: int,
        extra: Mapping[str, str] | None = None,
        *,
        length: bool = True,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Accept-Ranges", "bytes")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        if length:
            self.send_header("Content-Length", str(max(0, last - first + 1)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def _send_416(self, size: int) -> None:
        self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
        self.send_header("Content-Range", f"bytes */{size}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_body(self, fh: BinaryIO | _Padded, length: int, name: str, first: int = 0) -> None:
        """Write ``length`` bytes of ``fh`` (from byte ``first`` of the file), throttled, trickled, stalled
        and cut short as the faults say."""
        faults = self.server.archive.faults
        stopping = self.server.archive._stopping
        drop = faults.take_drop(name) if self.command == "GET" else None
        stall = faults.take_stall(name) if self.command == "GET" else None
        if stall is not None:
            stall = max(0, stall - first)
        with faults.lock:
            trickle = faults.trickle.get(name)
        budget = length if drop is None else min(length, drop)
        start = time.monotonic()
        sent = 0
        while sent < budget:
            if stall is not None and sent >= stall:
                self._hold(stopping)
                return
            rate = faults.rate_limit_bps
            # About 10 ms of data per write when throttled, so sleeps are few and long enough to be cheap.
            chunk = _SEND_CHUNK if not rate else int(min(_SEND_CHUNK, max(4096, rate / 100)))
            if trickle is not None:
                chunk = max(1, trickle[0])
            if stall is not None:
                chunk = min(chunk, stall - sent)
            data = fh.read(min(chunk, budget - sent))
            if not data:
                break
            try:
                self.wfile.write(data)
            except OSError:  # the client went away; nothing more to do for it
                self.close_connection = True
                return
            sent += len(data)
            if trickle is not None and sent < budget and stopping.wait(trickle[1]):
                break
            if rate:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        if stall is not None and sent >= stall and sent < length:
            self._hold(stopping)
        elif sent < length:  # a drop: cut the connection with the body incomplete
            self._cut(reset=faults.drop_reset)

    def _hold(self, stopping: threading.Event) -> None:
        """Send nothing more, but keep the connection open until the client leaves (or a limit)."""
        self.close_connection = True
        deadline = time.monotonic() + _HOLD_LIMIT
        self.connection.settimeout(0.05)
        while time.monotonic() < deadline and not stopping.is_set():
            try:
                if self.connection.recv(4096) == b"":
                    break  # the client closed its end
            except TimeoutError:
                continue
            except OSError:
                break
        self._cut(reset=False)

    def _cut(self, *, reset: bool) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            if reset:
                self._drain_send_queue()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)

    def _drain_send_queue(self, limit: float = 5.0) -> None:
        """Wait until the client's kernel has every byte sent (at most ``limit`` s), so a reset loses none.

        A reset discards what the sender's kernel still holds, but not what the receiver's has received:
        once the send queue is empty (Linux ``SIOCOUTQ``), the bytes sent are the bytes the client gets.
        Elsewhere, half a second is given instead.
        """
        stopping = self.server.archive._stopping
        try:
            import fcntl
            import termios

            def queued() -> int:
                return struct.unpack("i", fcntl.ioctl(self.connection.fileno(), termios.TIOCOUTQ, b"\0" * 4))[
                    0
                ]

            queued()
        except (ImportError, AttributeError, OSError):
            stopping.wait(0.5)
            return
        deadline = time.monotonic() + limit
        while queued() > 0 and time.monotonic() < deadline and not stopping.wait(0.005):
            pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    archive: ArchiveServer


class ArchiveServer:
    """Serve the files of ``root`` as the ZTF archive does, at ``/alerts/public/`` (and at ``/``).

    A real ``ThreadingHTTPServer`` in a daemon thread, so clients see real sockets, keep-alive, dropped
    connections and timeouts.  Use as a context manager or with :meth:`start` / :meth:`stop`.

    Parameters
    ----------
    root : Path
        Folder whose regular files are the archive.  Subfolders and dotfiles are not served.
    host, port : str, int
        Where to listen; port 0 picks a free port (see :attr:`url` once started).
    faults : Faults, optional
        Failures to inject; also reachable and mutable as ``server.faults``.
    md5sums : mapping of str to str, optional
        Exact ``MD5SUMS`` content (name to hex digest).  Otherwise a ``root/MD5SUMS`` file is served as
        is if present, else the manifest is computed from the files (and cached by size and mtime).

    Attributes
    ----------
    requests : list of (method, path, range header or None)
        Every request received, in order, so a test can assert that a resume really sent ``Range``.
    """

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        md5sums: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.host = host
        self.port = port
        self.faults = faults if faults is not None else Faults()
        self.md5sums = dict(md5sums) if md5sums is not None else None
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._digest_cache: dict[str, tuple[int, int, str]] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()  # ends stalls and trickles when the server stops

    @property
    def url(self) -> str:
        """The archive's base URL, ``http://HOST:PORT/alerts/public/``."""
        if self._httpd is None:
            raise RuntimeError("ArchiveServer is not running; call start() or use it as a context manager")
        return f"http://{self.host}:{self.port}{PREFIX}"

    def start(self) -> ArchiveServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.archive = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="ztfcat-archive", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; open keep-alive connections die with their daemon threads."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ArchiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_for(self, name: str, method: str | None = None) -> list[tuple[str, str, str | None]]:
        """The recorded requests whose path ends with ``/name`` (optionally only of one method)."""
        with self._lock:
            rows = list(self.requests)
        return [r for r in rows if r[1].split("?")[0].endswith("/" + name) and method in (None, r[0])]

    def _record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, range_header))

    def _files(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.is_file() and not p.name.startswith("."))

    def _index_html(self, path: str) -> str:
        rows = [
            IndexRow(p.name, datetime.fromtimestamp(p.stat().st_mtime, UTC), p.stat().st_size)
            for p in self._files()
        ]
        if self.md5sums is not None or not (self.root / MD5SUMS).is_file():
            body = self._md5sums_text()
            rows.append(IndexRow(MD5SUMS, datetime.now(UTC), len(body.encode())))
            rows.sort(key=lambda r: r.name)
        else:
            rows = [
                r if r.name != MD5SUMS else IndexRow(MD5SUMS, r.modified, len(self._md5sums_text().encode()))
                for r in rows
            ]
        return render_index(rows, path)

    def _md5sums_text(self) -> str:
        with self.faults.lock:
            wrong = set(self.faults.wrong_md5)
        if self.md5sums is None and (self.root / MD5SUMS).is_file():
            # A manifest on disk is served as written (comments, odd lines and all), with the
            # wrong_md5 fault still applied to the lines that name those files.
            lines = (self.root / MD5SUMS).read_text().splitlines(keepends=True)
            for i, line in enumerate(lines):
                fields = line.split()
                if len(fields) == 2 and fields[1].lstrip("*").rsplit("/", 1)[-1] in wrong:
                    lines[i] = line.replace(fields[0], hashlib.md5(fields[0].encode()).hexdigest(), 1)
            return "".join(lines)
        if self.md5sums is not None:
            digests = dict(self.md5sums)
        else:
            digests = {p.name: self._md5_of(p) for p in self._files() if p.name != MD5SUMS}
        for name in wrong & digests.keys():
            # Still 32 hex digits, so only a check against the downloaded bytes can tell.
            digests[name] = hashlib.md5(digests[name].encode()).hexdigest()
        return render_md5sums(digests)

    def _md5_of(self, path: Path) -> str:
        stat = path.stat()
        with self._lock:
            cached = self._digest_cache.get(path.name)
        if cached and cached[:2] == (stat.st_size, stat.st_mtime_ns):
            return cached[2]
        digest = hashlib.md5()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        with self._lock:
            self._digest_cache[path.name] = (stat.st_size, stat.st_mtime_ns, digest.hexdigest())
        return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    """``python -m ztfcat.testing.archive_server ROOT --port 8000``: serve a folder as the archive until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m ztfcat.testing.archive_server", description=main.__doc__)
    parser.add_argument("root", type=Path, help="folder of ztf_public_YYYYMMDD.tar.gz files")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--rate-limit", type=float, default=None, help="throttle bodies to this many bytes/s")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder")
    server = ArchiveServer(
        args.root, host=args.host, port=args.port, faults=Faults(rate_limit_bps=args.rate_limit)
    )
    with server:
        print(f"serving {args.root} at {server.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
