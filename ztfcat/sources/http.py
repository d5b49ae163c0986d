"""Talking to the ZTF alert archive: its listing, its ``MD5SUMS``, and releases streamed while they download.

Parsing is kept apart from requesting, so the listing page, the release names and the manifest are read
by pure functions tested without a network; :class:`ArchiveClient` is the thin I/O around them.  The
catalog is not known here: the caller decides what to do with a release's bytes.

A release is read through :meth:`ArchiveClient.open_release`, a binary file object that hands out the
tarball's bytes as they arrive while it saves them to a ``.part`` file and hashes them, so ingest starts
on the first megabyte instead of after a multi-GB download, and an interrupted run resumes from disk
and then with HTTP ``Range``.

Nothing a server does can hang, bloat or redirect a client unnoticed: every request has connect and
stall timeouts and is retried by urllib3's ``Retry``; a download (or listing) slower than a floor over a
window fails; the index page and ``MD5SUMS`` are read streamed under a size cap; a redirect to another
origin is refused unless its host is allowed.  The limits resolve as :mod:`ztfcat.settings` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.metadata
import io
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from ztfcat import settings
from ztfcat.errors import (
    ChecksumMismatchError,
    DownloadError,
    ManifestFormatError,
    NotFoundError,
)
from ztfcat.sources.names import classify

ByteProgress = Callable[[int, "int | None"], None]
"""``progress(bytes_so_far, total_or_None)``, called from the download thread."""

MD5SUMS = "MD5SUMS"
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
# Failures worth another try.  Not OSError as a whole: a full disk is not cured by waiting.
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
)
_MAX_DELAY = 30.0


# --- pure parsing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListingEntry:
    """One file on the archive's index page, as the page shows it.

    Attributes
    ----------
    name : str
        The file name, decoded from the link's ``href`` (the link text may be truncated by the server).
    last_modified : datetime, str or None
        A naive datetime when the page shows a date the parser knows (server local time); the text as
        shown otherwise (e.g. ``"6 years ago"``); None when the page shows none.
    size_shown : str or None
        The rounded size as shown (``"8.8G"``, ``"837M"``, ``"74"``); None for ``-`` or no size.  Exact
        sizes come from :meth:`ArchiveClient.head_size`.
    """

    name: str
    last_modified: datetime | str | None
    size_shown: str | None


class _IndexParser(HTMLParser):
    """Collect each link of an index page with the text that follows it on its row or line."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, list[str], bool]] = []  # (href, texts after it, in a table)
        self._href: str | None = None
        self._texts: list[str] = []
        self._in_table = False
        self._in_link = False
        self._line_done = False
        self._tables = 0

    def _flush(self) -> None:
        if self._href is not None:
            self.links.append((self._href, self._texts, self._in_table))
        self._href, self._texts, self._line_done = None, [], False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._tables += 1
        elif tag == "a":
            href = dict(attrs).get("href")
            if href is None:
                return
            # Apache's IconsAreLinks puts the same href on the icon and the name: one entry.
            if href == self._href and not "".join(self._texts).strip():
                self._in_link = True
                return
            self._flush()
            self._href, self._in_table, self._in_link = href, self._tables > 0, True
        elif tag in ("td", "th") and self._href is not None and self._in_table and not self._in_link:
            self._texts.append("")
        elif tag == "tr":
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._in_link = False
        elif tag in ("tr", "pre", "body"):
            self._flush()
        elif tag == "table":
            self._flush()
            self._tables = max(0, self._tables - 1)

    def handle_data(self, data: str) -> None:
        if self._href is None or self._in_link or self._line_done:
            return
        if self._in_table:
            if self._texts:
                self._texts[-1] += data
            return
        # Outside a table (nginx autoindex, Apache without HTMLTable): the entry ends at the line's end.
        head, newline, _ = data.partition("\n")
        self._texts.append(head)
        self._line_done = bool(newline)


_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_ISO_WHEN = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2})(?::(\d{2}))?")
_DMY_WHEN = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2})(?::(\d{2}))?")
_LINE_TAIL = re.compile(
    r"\s*(?P<when>\d{4}-\d{2}-\d{2} \d{2}:\d{2}(?::\d{2})?|\d{1,2}-[A-Za-z]{3}-\d{4} \d{2}:\d{2}(?::\d{2})?)"
    r"\s+(?P<size>\S+)"
)


def _parse_when(text: str) -> datetime | str | None:
    text = text.strip()
    if not text or text == "-":
        return None
    try:
        if match := _ISO_WHEN.fullmatch(text):
            y, mo, d, h, mi, s = match.groups()
            return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0))
        if (match := _DMY_WHEN.fullmatch(text)) and match.group(2).lower() in _MONTHS:
            d, mon, y, h, mi, s = match.groups()
            return datetime(int(y), _MONTHS[mon.lower()], int(d), int(h), int(mi), int(s or 0))
    except ValueError:  # 2018-02-30 10:00 is shown as text rather than lost
        pass
    return text


def _size_shown(text: str) -> str | None:
    text = text.strip()
    return None if text in ("", "-") else text


def parse_listing(html: str, base_url: str | None = None) -> list[ListingEntry]:
    """The files listed on an archive index page, in page order.

    Reads Apache's fancy index (an HTML table of Name, Last modified, Size, as on ztf.uw.edu; or its
    ``<pre>`` form) and nginx's autoindex (``<pre>`` lines of link, date, size in bytes).  Only links
    that resolve to a file directly in the listed folder are entries; the parent-directory link, the
    sort links (``?C=N;O=D``), icons, sub-folders and links to other pages are skipped, whichever way
    they are written.

    Parameters
    ----------
    html : str
        The page.
    base_url : str, optional
        The page's own URL, needed to place links written as absolute paths
        (``/alerts/public/ztf_...``); relative links are understood without it.

    Returns
    -------
    list of ListingEntry
        One per file, each name once.
    """
    base = base_url or "http://listing.invalid/folder/"
    if not base.endswith("/"):
        base += "/"
    base_parts = urlsplit(base)
    parser = _IndexParser()
    parser.feed(html)
    parser.close()
    parser._flush()
    entries: list[ListingEntry] = []
    seen: set[str] = set()
    for href, texts, in_table in parser.links:
        parts = urlsplit(urljoin(base, href.strip()))
        if parts.query or (parts.scheme, parts.netloc) != (base_parts.scheme, base_parts.netloc):
            continue
        if not parts.path.startswith(base_parts.path):
            continue
        name = unquote(parts.path[len(base_parts.path) :])
        if not name or "/" in name or name in seen:
            continue
        seen.add(name)
        if in_table:
            cells = [*texts, "", ""]
            when, size = _parse_when(cells[0]), _size_shown(cells[1])
        else:
            tail = "".join(texts)
            if match := _LINE_TAIL.match(tail):
                when, size = _parse_when(match["when"]), _size_shown(match["size"])
            else:
                words = tail.split()
                when, size = None, _size_shown(words[-1]) if words else None
        entries.append(ListingEntry(name, when, size))
    return entries


_MD5_LINE = re.compile(r"\\?([0-9a-fA-F]{32}) [ *]?(.+)")
_HEX_MD5 = re.compile(r"[0-9a-fA-F]{32}")


def parse_md5sums(text: str, source: str = MD5SUMS) -> dict[str, str]:
    """File name to lowercase hex MD5, from ``md5sum`` output.

    Each line is ``<32 hex digits><two spaces><name>`` (``<hex> *<name>`` in binary mode).  A leading
    path on the name is dropped (the archive is one flat folder); blank lines and ``#`` comments are
    skipped.  Anything else is an error rather than a silently unverified file.

    Parameters
    ----------
    text : str
        The manifest's text.
    source : str
        Where it came from (file name or URL), for error messages.

    Raises
    ------
    ManifestFormatError
        A line that is not a digest and a name, or one name given two different digests; the message
        names the line number.
    """
    digests: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _MD5_LINE.fullmatch(line)
        name = match.group(2).strip().rsplit("/", 1)[-1] if match else ""
        if match is None or not name:
            raise ManifestFormatError(
                f"{source} line {number} is not '<32 hex digits>  <name>': {raw[:120]!r}"
            )
        digest = match.group(1).lower()
        if digests.get(name, digest) != digest:
            raise ManifestFormatError(
                f"{source} line {number} gives {name} the MD5 {digest}, an earlier line {digests[name]}"
            )
        digests[name] = digest
    return digests


def user_agent() -> str:
    """``ztfcat/<version>``, so the archive's operators can tell who is downloading."""
    try:
        version = importlib.metadata.version("ztfcat")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    return f"ztfcat/{version}"


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` of a ``Content-Range``; the total is None when shown as ``*``."""
    if header:
        if match := _CONTENT_RANGE.fullmatch(header.strip()):
            total = match.group(3)
            return int(match.group(1)), None if total == "*" else int(total)
        if (star := re.fullmatch(r"bytes \*/(\d+)", header.strip())) is not None:
            return None, int(star.group(1))
    return None, None


# --- I/O ----------------------------------------------------------------------------------------------


class _BoundedRetry(Retry):
    """urllib3's :class:`~urllib3.util.Retry` with ``Retry-After`` capped, so a server cannot park us for a day."""

    MAX_RETRY_AFTER = 60.0

    def get_retry_after(self, response: urllib3.BaseHTTPResponse) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, self.MAX_RETRY_AFTER)


class _HeaderDeadline:
    """A connection whose answer's status line and headers must all arrive within its read timeout.

    The read timeout alone bounds each ``recv``, so a server sending its headers a byte at a time could
    hold a request for as long as it liked before any body (and so before :class:`_Pace`) begins.  A
    timer shuts the socket down when the headers are late, and the failure is a timeout like any other
    (retried by the :class:`~urllib3.util.Retry` policy as a read error).
    """

    def getresponse(self):  # type: ignore[no-untyped-def]
        limit = self.timeout  # type: ignore[attr-defined]  # urllib3 sets it to the read timeout first
        if not isinstance(limit, int | float) or limit <= 0:
            return super().getresponse()  # type: ignore[misc]
        lock = threading.Lock()
        state = {"done": False, "fired": False}

        def cut() -> None:
            with lock:
                if state["done"]:
                    return
                state["fired"] = True
            sock = self.sock  # type: ignore[attr-defined]
            if sock is not None:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # not SSLSocket's: it drops its state

        timer = threading.Timer(limit, cut)
        timer.daemon = True
        timer.start()
        failure: Exception | None = None
        try:
            response = super().getresponse()  # type: ignore[misc]
        except Exception as exc:
            failure = exc
        with lock:
            state["done"] = True
        timer.cancel()
        if state["fired"]:  # even a "success": headers cut short by the shutdown parse as complete
            raise TimeoutError(f"the answer's headers took more than {limit:g} s") from failure
        if failure is not None:
            raise failure
        return response


class _Connection(_HeaderDeadline, urllib3.connection.HTTPConnection):
    pass


class _TLSConnection(_HeaderDeadline, urllib3.connection.HTTPSConnection):
    pass


class _Pool(urllib3.HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


class _Adapter(HTTPAdapter):
    """requests' adapter with connections that bound the wait for a whole answer's headers."""

    def init_poolmanager(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}


class _Pace:
    """The floor on a transfer's average speed, checked over consecutive windows of ``window`` seconds.

    A socket timeout alone bounds the wait for one byte, so a server trickling 100 bytes every 5 s would
    keep a 10 GB download alive for years; this bounds the whole to ``window`` plus one stall timeout
    once the speed is below the floor.  Time the reader held the transfer up (a full queue) is not
    counted against the network.
    """

    def __init__(self, min_speed: float, window: float) -> None:
        self.min_speed = min_speed
        self.window = window
        self._start = time.monotonic()
        self._bytes = 0

    def add(self, n: int) -> None:
        self._bytes += n

    def pause(self, seconds: float) -> None:
        """Forget ``seconds`` of the window: the transfer was waiting for its reader, not the network."""
        self._start += seconds

    def too_slow(self) -> str | None:
        """Why the transfer is too slow (a clause for an error message), or None."""
        if not self.min_speed:
            return None
        now = time.monotonic()
        elapsed = now - self._start
        if elapsed < self.window:
            return None
        rate = self._bytes / elapsed
        if rate < self.min_speed:
            return (
                f"{self._bytes} bytes in the last {elapsed:.1f} s ({rate:.0f} B/s), slower than the "
                f"minimum {self.min_speed:.0f} B/s (ZTFCAT_MIN_SPEED) over {self.window:g} s"
            )
        self._start, self._bytes = now, 0
        return None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _reason(exc: BaseException) -> str:
    """The innermost useful words of a requests/urllib3 error, on one line."""
    inner: BaseException = exc
    for _depth in range(8):  # requests wraps urllib3's MaxRetryError, which wraps the socket's error
        nested = getattr(inner, "reason", None)
        if isinstance(nested, BaseException) and nested is not inner:
            inner = nested
        elif inner.args and isinstance(inner.args[0], urllib3.exceptions.MaxRetryError):
            inner = inner.args[0]
        else:
            break
    # ProtocolError("Connection broken: IncompleteRead(...)", IncompleteRead(...)): the words only
    words = inner.args[0] if len(inner.args) > 1 and isinstance(inner.args[0], str) else str(inner)
    text = " ".join(words.split()) or type(inner).__name__
    return text if len(text) <= 200 else text[:200] + "..."


class ArchiveClient:
    """One connection pool to the archive, with a User-Agent, timeouts, bounded retries and speed limits.

    Each limit is an argument, else its ``ZTFCAT_*`` environment variable, else a default (see
    :mod:`ztfcat.settings`).

    Parameters
    ----------
    base_url : str, optional
        The archive folder; else ``ZTFCAT_ARCHIVE_URL``, else https://ztf.uw.edu/alerts/public/.
    timeout : (float, float), optional
        ``(connect timeout, stall timeout)`` in seconds, applied to every request; the stall timeout is
        how long any one read may wait for a byte, and how long an answer's headers may take in all.
        Either may be None for its default,
        ``ZTFCAT_CONNECT_TIMEOUT`` (10) and ``ZTFCAT_STALL_TIMEOUT`` (60).
    retries : int
        How many times a request is retried after a connection error, a timeout, 429 or 5xx (by urllib3's
        ``Retry``, honouring ``Retry-After`` up to 60 s); during a download, how many consecutive drops
        or stalls without a byte of progress are tolerated, each resumed with ``Range``.
    backoff : float
        Backoff factor in seconds: retries wait 0, 2×, 4×, ... this (capped at 30 s).
    min_speed, speed_window : float, optional
        A download (or listing) whose average speed over any ``speed_window`` seconds is below
        ``min_speed`` bytes/s fails (``ZTFCAT_MIN_SPEED``, 10,000; ``ZTFCAT_SPEED_WINDOW``, 60; 0 turns
        the floor off), so no server can keep one alive for ever.
    allow_redirects_to : str or iterable of str, optional
        Hosts (``host`` or ``host:port``; ``*`` for any) a request may be redirected to besides its own
        origin (``ZTFCAT_ALLOW_REDIRECT_HOSTS``).  A redirect elsewhere is refused with a
        :class:`DownloadError`; same-origin redirects are followed, at most ``max_redirects``.
    max_listing_bytes, max_manifest_bytes : int, optional
        The largest index page and ``MD5SUMS`` read (``ZTFCAT_MAX_LISTING_BYTES``, 16 MiB;
        ``ZTFCAT_MAX_MANIFEST_BYTES``, 4 MiB); a larger one is refused before it fills memory.
    session : requests.Session, optional
        Use this session instead of a new one (its headers and adapters are left alone).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: tuple[float | None, float | None] | None = None,
        retries: int = 5,
        backoff: float = 0.5,
        min_speed: float | None = None,
        speed_window: float | None = None,
        allow_redirects_to: str | Iterable[str] | None = None,
        max_redirects: int = 5,
        max_listing_bytes: int | None = None,
        max_manifest_bytes: int | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = settings.archive_url(base_url)
        connect, stall = timeout if timeout is not None else (None, None)
        self.timeout = (settings.connect_timeout(connect), settings.stall_timeout(stall))
        self.retries = retries
        self.backoff = backoff
        self.min_speed = settings.min_speed(min_speed)
        self.speed_window = settings.speed_window(speed_window)
        self.allow_redirects_to = settings.allow_redirect_hosts(allow_redirects_to)
        self.max_redirects = max_redirects
        self.max_listing_bytes = settings.max_listing_bytes(max_listing_bytes)
        self.max_manifest_bytes = settings.max_manifest_bytes(max_manifest_bytes)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = user_agent()
            adapter = _Adapter(pool_maxsize=32, max_retries=self.retry_policy())  # room for HEAD threads
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session

    def __enter__(self) -> ArchiveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.session.close()

    def url(self, name: str) -> str:
        """The URL of a file of the archive folder."""
        return urljoin(self.base_url, quote(name, safe=""))

    def retry_policy(self) -> Retry:
        """The one retry policy: requests retried on connection errors, read timeouts, 429 and 5xx.

        Used by the session's adapter for every request, and by a download to pace its resumes after
        a dropped or stalled body.
        """
        return _BoundedRetry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            other=0,
            allowed_methods=frozenset({"GET", "HEAD"}),
            status_forcelist=_TRANSIENT_STATUS,
            backoff_factor=self.backoff,
            backoff_max=_MAX_DELAY,
            respect_retry_after_header=True,
            raise_on_status=False,  # the last answer is returned, and named in the error
            raise_on_redirect=False,
        )

    def listing(self) -> list[ListingEntry]:
        """The files on the archive's index page (see :func:`parse_listing`).

        Raises
        ------
        DownloadError
            The page is larger than ``max_listing_bytes``, too slow, or could not be fetched.
        """
        text, final_url = self._get_text(
            self.base_url,
            cap=self.max_listing_bytes,
            setting="ZTFCAT_MAX_LISTING_BYTES",
            missing=f"no archive index at {self.base_url}",
        )
        return parse_listing(text, base_url=final_url)

    def md5sums_text(self) -> str:
        """The text of the archive's ``MD5SUMS``, read with the size cap ``max_manifest_bytes``."""
        url = self.url(MD5SUMS)
        text, _ = self._get_text(
            url,
            cap=self.max_manifest_bytes,
            setting="ZTFCAT_MAX_MANIFEST_BYTES",
            missing=f"no {MD5SUMS} at {url}",
        )
        return text

    def md5sums(self) -> dict[str, str]:
        """The archive's ``MD5SUMS``, name to lowercase hex digest (see :func:`parse_md5sums`)."""
        return parse_md5sums(self.md5sums_text(), source=self.url(MD5SUMS))

    def head_size(self, name: str) -> int:
        """The exact size in bytes of an archive file, from a HEAD request's ``Content-Length``.

        Raises
        ------
        NotFoundError
            If the archive answers 404.
        DownloadError
            Other HTTP errors past the retries, or no ``Content-Length``.
        """
        url = self.url(name)
        response = self._checked("HEAD", url, missing=_describe(name, url))
        response.content  # noqa: B018  (a HEAD answer has no body: this hands the connection back to the pool)
        length = response.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise DownloadError(f"{url} gave no Content-Length to HEAD (got {length!r})")
        return int(length)

    def open_release(
        self,
        name: str,
        part_path: Path,
        *,
        expected_md5: str | None,
        expected_size: int | None = None,
        chunk_size: int = 1 << 20,
        progress: ByteProgress | None = None,
        keep_path: Path | None = None,
        prefetch: int = 8,
    ) -> ReleaseStream:
        """Open a release for reading while it downloads; see :class:`ReleaseStream`.

        Bytes already in ``part_path`` (from an interrupted run) are handed out first, from disk, and
        the download continues with ``Range: bytes=<len>-``.  If the server answers 200 to that, the
        ``.part`` file is discarded and the release read from its first byte; if it answers 416 and
        the ``.part`` file is already whole, nothing more is downloaded.

        Parameters
        ----------
        name : str
            File name in the archive folder.
        part_path : Path
            Where the bytes are saved as they arrive (conventionally ``<name>.part``).
        expected_md5 : str or None
            The hex MD5 from ``MD5SUMS``; pass None explicitly to skip the check.
        expected_size : int, optional
            The exact size, e.g. from :meth:`head_size`; checked at once against the server's and at EOF.
        chunk_size : int
            Bytes per queued chunk (the most asked of one network read).
        progress : callable, optional
            ``progress(bytes_so_far, total_or_None)``, called from the download thread.
        keep_path : Path, optional
            Rename the verified ``.part`` file to this path; by default it is deleted once verified.
        prefetch : int
            How many chunks may wait for the reader; bounds memory to about ``prefetch * chunk_size``.

        Raises
        ------
        NotFoundError
            If the archive answers 404.
        DownloadError
            Other HTTP errors past the retries, or a redirect to another origin.
        ChecksumMismatchError
            If the server's size differs from ``expected_size``.
        """
        part_path = Path(part_path)
        part_path.parent.mkdir(parents=True, exist_ok=True)
        have = part_path.stat().st_size if part_path.exists() else 0
        if expected_size is not None and have > expected_size:
            have = 0
        url = self.url(name)
        response, offset, total = self._open_at(name, url, have)
        if expected_size is not None and total is not None and total != expected_size:
            if response is not None:
                response.close()
            raise ChecksumMismatchError(
                f"{name}: the archive has {total} bytes at {url}, expected {expected_size} bytes"
            )
        if offset < have:  # the server ignored Range: the .part file's bytes are not used
            have = 0
        if have == 0:
            part_path.write_bytes(b"")  # start a fresh .part, truncating any stale one
        return ReleaseStream(
            client=self,
            name=name,
            url=url,
            part_path=part_path,
            response=response,
            replay=have,
            total=total,
            expected_md5=expected_md5,
            expected_size=expected_size,
            chunk_size=chunk_size,
            progress=progress,
            keep_path=Path(keep_path) if keep_path is not None else None,
            prefetch=prefetch,
        )

    # -- internals --

    def _may_redirect(self, source: str, target: str) -> bool:
        """Same origin, or a host allowed by ``allow_redirects_to`` (never from https down to http)."""
        scheme, host, port = _origin(target)
        if (scheme, host, port) == _origin(source):
            return True
        if scheme not in ("http", "https") or (scheme == "http" and urlsplit(source).scheme == "https"):
            return False
        allowed = self.allow_redirects_to
        return "*" in allowed or host in allowed or f"{host}:{port}" in allowed

    def _request(self, method: str, url: str, *, headers: dict[str, str] | None = None) -> requests.Response:
        """One request, its body not yet read: retried by the adapter's :meth:`retry_policy`, redirects
        checked here.

        Redirects are followed one hop at a time so each target is checked before any request is sent to
        it: another origin is refused unless allowed, and the same headers (``Range``) go to each hop.
        No body is read here (not even a redirect's or an error's), so none can be large enough to hurt.
        """
        current = url
        for _hop in range(self.max_redirects + 1):
            try:
                response = self.session.request(
                    method,
                    current,
                    headers=headers,
                    stream=True,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except (
                requests.RequestException,
                urllib3.exceptions.HTTPError,
                http.client.HTTPException,
            ) as exc:
                tries = f"{self.retries + 1} tries" if self.retries else "1 try"
                raise DownloadError(f"{method} {current} failed after {tries}: {_reason(exc)}") from exc
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECT_STATUS or not location:
                return response
            response.close()
            target = urljoin(current, location)
            if not self._may_redirect(current, target):
                host = _origin(target)[1]
                raise DownloadError(
                    f"{current} redirects to {target}, another origin: refused; allow it with "
                    f"allow_redirects_to / ZTFCAT_ALLOW_REDIRECT_HOSTS={host} if that host is trusted"
                )
            current = target
        raise DownloadError(f"{url}: more than {self.max_redirects} redirects, last to {current}")

    def _checked(
        self, method: str, url: str, *, missing: str, headers: dict[str, str] | None = None
    ) -> requests.Response:
        response = self._request(method, url, headers=headers)
        _raise_for_status(response, url, missing)
        return response

    def _get_text(self, url: str, *, cap: int, setting: str, missing: str) -> tuple[str, str]:
        """The body of ``url`` as text and the URL it came from after redirects, read streamed.

        At most ``cap`` bytes (after any ``Content-Encoding``) are ever held: a ``Content-Length`` above it
        is refused before the body is read, a body without one as soon as it passes the cap.  The speed
        floor applies as to a download.
        """
        # identity: the cap then counts the bytes on the wire too, and no gzip bomb can be decoded
        response = self._checked("GET", url, missing=missing, headers={"Accept-Encoding": "identity"})
        try:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > cap:
                raise DownloadError(
                    f"{url} is {int(length)} bytes, more than the {cap}-byte cap ({setting}): refused unread"
                )
            body = bytearray()
            pace = _Pace(self.min_speed, self.speed_window)
            while True:
                try:
                    data = response.raw.read1(min(1 << 16, cap + 1 - len(body)), decode_content=True)
                except _NETWORK_ERRORS as exc:
                    raise DownloadError(f"{url}: failed after {len(body)} bytes: {_reason(exc)}") from exc
                if not data:
                    break
                body += data
                pace.add(len(data))
                if len(body) > cap:
                    raise DownloadError(
                        f"{url} is more than the {cap}-byte cap ({setting}): refused after {len(body)} bytes"
                    )
                if (slow := pace.too_slow()) is not None:
                    raise DownloadError(f"{url}: too slow after {len(body)} bytes: {slow}")
        finally:
            response.close()
        return bytes(body).decode(response.encoding or "utf-8", errors="replace"), response.url

    def _open_at(self, name: str, url: str, start: int) -> tuple[requests.Response | None, int, int | None]:
        """GET ``url`` from byte ``start``: ``(response, offset of its first byte, total size)``.

        The offset is 0 when the server ignored ``Range``; the response is None when ``start`` is
        already the whole file (416 with that total).
        """
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        response = self._request("GET", url, headers=headers)
        if start and response.status_code == 416:
            _, total = _content_range(response.headers.get("Content-Range"))
            response.close()
            if total == start:
                return None, start, total
            return self._open_at(name, url, 0)  # the .part is longer than the file: start over
        _raise_for_status(response, url, _describe(name, url))
        length = response.headers.get("Content-Length")
        if response.status_code == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != start:
                response.close()
                raise DownloadError(f"{url} answered a request for bytes {start}- with bytes {first}-")
            return response, start, total
        return response, 0, int(length) if length and length.isdigit() else None


def _describe(name: str, url: str) -> str:
    return f"no {'release' if classify(name) else 'file'} {name} at {url}"


def _raise_for_status(response: requests.Response, url: str, missing: str) -> None:
    """404 becomes NotFoundError(``missing``), any other error status DownloadError naming URL and status."""
    if response.status_code < 400:
        return
    response.close()
    if response.status_code == 404:
        raise NotFoundError(missing)
    raise DownloadError(f"{url} answered HTTP {response.status_code} {response.reason}")


_EOF = object()


class ReleaseStream(io.BufferedIOBase):
    """A release's bytes as a readable binary file, fed by a download thread (see ``open_release``).

    A background thread replays the ``.part`` file's bytes, then reads the HTTP body, appends what each
    read brings to the ``.part`` file, hashes it and queues it in chunks (at most ``prefetch`` ahead), so
    the network and the reader's work overlap and memory stays bounded.  A connection dropped or
    stalled mid-body is resumed with ``Range`` from the last byte received (none is lost, whatever the
    offset), paced by the client's :meth:`~ArchiveClient.retry_policy`; ``retries`` consecutive failures
    without progress, or an average speed below the client's floor, end it with :class:`DownloadError`
    naming the file, the bytes received and why.

    ``read(n)`` returns exactly ``n`` bytes except at the end.  The end is only signalled (``b""``)
    after the size and the MD5 have been checked; a mismatch raises :class:`ChecksumMismatchError` from
    that last ``read`` instead, and deletes the ``.part`` file, whose bytes are bad.  A reader that
    stops before the end (``tarfile`` stops at the end-of-archive blocks, before the tar padding and
    the gzip trailer) must call :meth:`finish` to read the rest and verify before trusting what it read.

    :meth:`close` (or leaving the ``with`` block) before the end stops the download and keeps the
    ``.part`` file for a later resume; nothing is written to it once ``close`` returns.

    Attributes
    ----------
    name, url : str
        The release and where it comes from.
    part_path : Path
        The ``.part`` file.
    total : int or None
        The size the server announced.
    replayed : int
        Bytes handed out from an earlier run's ``.part`` file rather than downloaded.
    md5_hex : str or None
        The MD5 of all bytes, once they have all been read.
    final_path : Path or None
        Where the verified file was kept (``keep_path``), once done.
    """

    def __init__(
        self,
        *,
        client: ArchiveClient,
        name: str,
        url: str,
        part_path: Path,
        response: requests.Response | None,
        replay: int,
        total: int | None,
        expected_md5: str | None,
        expected_size: int | None,
        chunk_size: int,
        progress: ByteProgress | None,
        keep_path: Path | None,
        prefetch: int,
    ) -> None:
        super().__init__()
        self.name = name
        self.url = url
        self.part_path = part_path
        self.total = total
        self.replayed = replay
        self.md5_hex: str | None = None
        self.final_path: Path | None = None
        self._client = client
        self._response = response
        self._expected_md5 = expected_md5.strip().lower() if expected_md5 else None
        self._expected_size = expected_size
        self._chunk_size = chunk_size
        self._progress = progress
        self._keep_path = keep_path
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, prefetch))
        self._stopped = threading.Event()
        self._write_lock = threading.Lock()
        self._buffer = b""
        self._offset = 0
        self._position = 0
        self._done = False
        self._error: BaseException | None = None
        self._pace: _Pace | None = None  # set by the download thread
        self._thread = threading.Thread(target=self._produce, name=f"ztfcat-download-{name}", daemon=True)
        self._thread.start()

    # -- reader side --

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes handed to the reader so far."""
        return self._position

    def _fill(self) -> bool:
        """Wait for the next chunk; False at the verified end, the download's error raised if it failed."""
        if self._error is not None:
            raise self._error
        if self._done:
            return False
        item = self._queue.get()
        if item is _EOF:
            self._done = True
            self._settle()
            return False
        if isinstance(item, BaseException):
            self._error = item
            raise item
        self._buffer, self._offset = item, 0  # type: ignore[assignment]
        return True

    def _settle(self) -> None:
        """Every verified byte is read: keep the file (``keep_path``) or drop the ``.part``.

        Done by the reader when it reaches the end, not by the download thread when the last byte
        arrives: a reader stopped before its end (Ctrl-C, a failed night) while the download finished
        keeps the whole, verified ``.part``, which the next run replays without downloading again.
        """
        with self._write_lock:
            try:
                if self._keep_path is not None:
                    os.replace(self.part_path, self._keep_path)
                    self.final_path = self._keep_path
                else:
                    self.part_path.unlink(missing_ok=True)
            except OSError as exc:
                raise DownloadError(
                    f"{self.name}: cannot settle the verified file {self.part_path}: {exc.strerror or exc}"
                ) from None

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all the rest if negative), fewer only at the end."""
        self._checkClosed()
        want = None if size is None or size < 0 else size
        pieces: list[bytes] = []
        got = 0
        while want is None or got < want:
            if self._offset >= len(self._buffer) and not self._fill():
                break
            end = len(self._buffer) if want is None else min(len(self._buffer), self._offset + want - got)
            piece = self._buffer[self._offset : end]
            self._offset = end
            pieces.append(piece)
            got += len(piece)
        self._position += got
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def read1(self, size: int = -1) -> bytes:
        """What is at hand (at most one chunk), waiting only if nothing is."""
        self._checkClosed()
        if self._offset >= len(self._buffer) and not self._fill():
            return b""
        end = len(self._buffer) if size < 0 else min(len(self._buffer), self._offset + size)
        piece = self._buffer[self._offset : end]
        self._offset = end
        self._position += len(piece)
        return piece

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def finish(self) -> str:
        """Read and discard whatever the reader left, wait for verification, and return the hex MD5.

        Raises
        ------
        ChecksumMismatchError
            If the size or the MD5 is wrong.
        DownloadError, NotFoundError
            If the download failed.
        """
        self._checkClosed()
        self._position += len(self._buffer) - self._offset
        self._buffer, self._offset = b"", 0
        while self._fill():
            self._position += len(self._buffer)
            self._buffer = b""
        assert self.md5_hex is not None
        return self.md5_hex

    def close(self) -> None:
        """Stop the download (if not finished) and keep the ``.part`` file for a later resume."""
        if self.closed:
            return
        with self._write_lock:
            self._stopped.set()
        response = self._response
        if response is not None:
            # Only wake the download thread out of a blocking read (urllib3 >= 2.3); it closes the response
            # itself, since a close from here can race urllib3 into pooling a half-read connection.
            with contextlib.suppress(Exception):
                response.raw.shutdown()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=2)
        super().close()

    # -- download thread --

    def _put(self, item: object) -> bool:
        """Queue ``item`` for the reader, waiting while the queue is full; False once closed.

        The time spent waiting is taken off the speed window: a slow reader is not a slow network.
        """
        started = time.monotonic()
        try:
            while not self._stopped.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False
        finally:
            if self._pace is not None:
                self._pace.pause(time.monotonic() - started)

    def _produce(self) -> None:
        try:
            self._download()
        except BaseException as exc:  # handed to the reader, raised by its next read
            self._put(exc)
        finally:
            if self._response is not None:
                with contextlib.suppress(Exception):
                    self._response.close()

    def _report(self, done: int) -> None:
        if self._progress is not None:
            self._progress(done, self.total)

    def _download(self) -> None:
        digest = hashlib.md5()
        position = 0
        if self.replayed:
            with open(self.part_path, "rb") as part:
                while position < self.replayed:
                    data = part.read(min(self._chunk_size, self.replayed - position))
                    if not data:
                        raise DownloadError(
                            f"{self.part_path} shrank while {self.name} was read back from it"
                        )
                    digest.update(data)
                    position += len(data)
                    if not self._put(data):
                        return
            self._report(position)
        with open(self.part_path, "ab", buffering=0) as part:
            position = self._receive(part, digest, position)
            if position is None:
                return
        self._verify(digest.hexdigest(), position)
        self._put(_EOF)

    def _where(self, position: int) -> str:
        of = f" of {self.total}" if self.total is not None else ""
        return f"{self.name}: {position}{of} bytes received from {self.url}"

    def _receive(self, part: io.RawIOBase, digest: hashlib._Hash, position: int) -> int | None:
        """Append the HTTP body to ``part`` from ``position``, resuming after drops; None if closed.

        Each network read returns what has arrived (``read1``, at most one ``recv``), and every byte is
        written to ``part`` and hashed before the next read, so a drop, a stall or a kill loses nothing
        already received: the ``.part`` file, the hash and the ``Range`` of the resume all stand at the
        last byte received.  Bytes are handed to the reader in chunks of ``chunk_size``.

        Drops and stalls (no byte for the stall timeout) are resumed with ``Range`` as the client's
        :meth:`~ArchiveClient.retry_policy` allows (its count starts again after any progress); a speed
        below the floor ends the download at once.
        """
        client = self._client
        resumes = client.retry_policy()
        pace = self._pace = _Pace(client.min_speed, client.speed_window)
        pending = bytearray()
        skip = 0
        response = self._response
        while self.total is None or position < self.total:
            if self._stopped.is_set():
                return None
            if (slow := pace.too_slow()) is not None:
                raise DownloadError(f"{self._where(position)}; too slow: {slow}")
            if response is None:
                try:
                    response, offset, total = client._open_at(self.name, self.url, position)
                except DownloadError as exc:  # the resume itself failed, past its own retries
                    raise DownloadError(f"{self._where(position)}; resuming: {exc}") from exc
                self._response = response
                if response is None:  # 416: the file is no longer than what we have
                    break
                if self.total is not None and total is not None and total != self.total:
                    raise ChecksumMismatchError(
                        f"{self.name} changed size during the download: {self.total} bytes, "
                        f"now {total} at {self.url}"
                    )
                skip = position - offset  # a 200 to a Range: skip what the reader already has
            want = self._chunk_size - len(pending)
            if skip:
                want = min(want, skip)
            try:
                data = response.raw.read1(want, decode_content=False)
                lost: Exception | None = (
                    None
                    if data or self.total is None
                    else urllib3.exceptions.ProtocolError("body ended early")
                )
            except _NETWORK_ERRORS as exc:
                data, lost = b"", exc
            if lost is not None or not data:
                response.close()
                response = self._response = None
                if lost is None:
                    break  # the end of a body of unannounced length
                try:
                    resumes = resumes.increment("GET", self.url, error=_as_urllib3(lost))
                except urllib3.exceptions.MaxRetryError:
                    raise DownloadError(
                        f"{self._where(position)}; gave up after {client.retries + 1} tries without a "
                        f"byte of progress: {_why_lost(lost, client.timeout[1])}"
                    ) from lost
                self._stopped.wait(resumes.get_backoff_time())
                continue
            pace.add(len(data))
            if skip:
                cut = min(skip, len(data))
                skip -= cut
                data = data[cut:]
                if not data:
                    continue
            with self._write_lock:
                if self._stopped.is_set():
                    return None
                _write_all(part, data)
            digest.update(data)
            position += len(data)
            resumes = client.retry_policy()
            pending += data
            if len(pending) >= self._chunk_size:
                self._report(position)
                if not self._put(bytes(pending)):
                    return None
                pending.clear()
        if pending:
            self._report(position)
            if not self._put(bytes(pending)):
                return None
        return position

    def _verify(self, md5_hex: str, size: int) -> None:
        self.md5_hex = md5_hex
        problem = None
        if self.total is not None and size != self.total:
            problem = f"{size} bytes received, the archive announced {self.total} bytes"
        elif self._expected_size is not None and size != self._expected_size:
            problem = f"{size} bytes received, expected {self._expected_size} bytes"
        elif self._expected_md5 is not None and md5_hex != self._expected_md5:
            problem = f"MD5 of the bytes received is {md5_hex}, expected {self._expected_md5}"
        with self._write_lock:
            if self._stopped.is_set():
                return
            if problem is not None:
                self.part_path.unlink(missing_ok=True)
                raise ChecksumMismatchError(
                    f"{self.name} from {self.url}: {problem}; "
                    f"the bad partial file {self.part_path} was removed"
                )
            # Verified: the .part file is settled by the reader, at the end (see _settle).


def _as_urllib3(exc: Exception) -> Exception:
    """``exc`` as the urllib3 error :class:`~urllib3.util.Retry` counts it as (read, connect or other)."""
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return exc
    if isinstance(exc, requests.ConnectionError | http.client.HTTPException):
        return urllib3.exceptions.ProtocolError(str(exc))
    if isinstance(exc, requests.Timeout):
        return urllib3.exceptions.ReadTimeoutError(None, None, str(exc))  # type: ignore[arg-type]
    return urllib3.exceptions.ProtocolError(str(exc))


def _why_lost(exc: BaseException, stall: float) -> str:
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError | requests.Timeout | TimeoutError):
        return f"no byte for {stall:g} s (ZTFCAT_STALL_TIMEOUT)"
    return f"connection lost: {_reason(exc)}"


def _write_all(file: io.RawIOBase, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = file.write(view)
        view = view[written or 0 :]
