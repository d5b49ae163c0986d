"""Downloads and listings that cannot hang, bloat or wander: each limit against the real local server.

Every fault is the server's own (:class:`~ztfcat.testing.archive_server.Faults`: stall, trickle, reset, padding,
redirects, 429), on 127.0.0.1; a second server on another port is the "other origin".  Limits are set
small (fractions of a second, a few MB) so each test ends in seconds, and a test whose download would
otherwise never end runs it in a thread and fails if it is still running after a bound.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from ztfcat import settings
from ztfcat.errors import DownloadError, NotFoundError, SettingError, ZtfcatError
from ztfcat.sources import http as remote
from ztfcat.sources.http import ArchiveClient
from ztfcat.testing.archive_server import INDEX, MD5SUMS, ArchiveServer

NIGHT = "ztf_public_20180601.tar.gz"
SMALL = "ztf_public_20180602.tar.gz"
MiB = 1 << 20


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("archive")
    data = {NIGHT: os.urandom(2 * MiB + 345_678), SMALL: os.urandom(150_001)}
    for name, body in data.items():
        (root / name).write_bytes(body)
    data["root"] = str(root).encode()
    return data


@pytest.fixture
def root(files: dict[str, bytes]) -> Path:
    return Path(files["root"].decode())


@pytest.fixture
def server(root: Path):
    with ArchiveServer(root) as srv:
        yield srv


@pytest.fixture
def other(root: Path):
    """A second archive on another port of 127.0.0.1: another origin."""
    with ArchiveServer(root) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_network_settings(monkeypatch: pytest.MonkeyPatch):
    for name in (
        "ZTFCAT_CONNECT_TIMEOUT",
        "ZTFCAT_STALL_TIMEOUT",
        "ZTFCAT_MIN_SPEED",
        "ZTFCAT_SPEED_WINDOW",
        "ZTFCAT_ALLOW_REDIRECT_HOSTS",
        "ZTFCAT_MAX_LISTING_BYTES",
        "ZTFCAT_MAX_MANIFEST_BYTES",
    ):
        monkeypatch.delenv(name, raising=False)


def make_client(url: str, **kwargs) -> ArchiveClient:
    kwargs.setdefault("retries", 2)
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("timeout", (2, 2))
    return ArchiveClient(url, **kwargs)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def gets(server: ArchiveServer, name: str) -> list[str | None]:
    return [rng for _m, _p, rng in server.requests_for(name, "GET")]


def bounded(work: Callable[[], object], seconds: float, on_timeout: Callable[[], None] | None = None):
    """``(result or exception, elapsed)`` of ``work`` run in a thread; the test fails past ``seconds``."""
    out: list[object] = []

    def target() -> None:
        try:
            out.append(work())
        except BaseException as exc:  # handed to the test
            out.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        if on_timeout is not None:
            on_timeout()
        pytest.fail(f"still running after {seconds} s: nothing bounds it")
    return out[0], elapsed


def read_all(client: ArchiveClient, name: str, part: Path, expected: bytes | None, holder: list):
    def work() -> bytes:
        with client.open_release(name, part, expected_md5=md5(expected) if expected else None) as stream:
            holder.append(stream)
            return stream.read()

    return work


# --- resume from the last byte received ---------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 65_537, 1_234_567, MiB + 1])
def test_a_reset_mid_chunk_loses_no_byte_received(
    server: ArchiveServer, files: dict[str, bytes], tmp_path: Path, cut: int
):
    """A TCP reset (not a clean close) at an odd offset: the resume asks for exactly the next byte."""
    data = files[NIGHT]
    server.faults.drop_after[NIGHT] = cut
    server.faults.drop_reset = True
    with (
        make_client(server.url) as client,
        client.open_release(NIGHT, tmp_path / "r.part", expected_md5=md5(data)) as stream,
    ):
        assert stream.read() == data
    assert gets(server, NIGHT) == [None, f"bytes={cut}-"]


def test_a_stall_resumes_from_the_last_byte_received(
    server: ArchiveServer, files: dict[str, bytes], tmp_path: Path
):
    data = files[NIGHT]
    server.faults.stall_after[NIGHT] = 777_777
    with make_client(server.url, timeout=(2, 0.4)) as client:
        got, elapsed = bounded(read_all(client, NIGHT, tmp_path / "s.part", data, []), 10)
    assert got == data
    assert gets(server, NIGHT) == [None, "bytes=777777-"]
    assert 0.4 <= elapsed < 5


def test_an_endless_stall_fails_in_bounded_time_and_keeps_every_byte(
    server: ArchiveServer, files: dict[str, bytes], tmp_path: Path
):
    data = files[NIGHT]
    part = tmp_path / "e.part"
    server.faults.stall_after[NIGHT] = 777_777
    server.faults.stall_times = 100
    holder: list = []
    with make_client(server.url, retries=2, timeout=(2, 0.3)) as client:
        error, elapsed = bounded(
            read_all(client, NIGHT, part, data, holder), 10, lambda: holder and holder[0].close()
        )
    assert isinstance(error, DownloadError), error
    message = str(error)
    assert message.startswith(f"{NIGHT}: 777777 of {len(data)} bytes received from {server.url}{NIGHT}")
    assert "no byte for 0.3 s (ZTFCAT_STALL_TIMEOUT)" in message and "3 tries" in message
    assert "\n" not in message
    assert elapsed < 5  # three stalls of 0.3 s and their backoff
    assert part.read_bytes() == data[:777_777]  # every byte received is on disk, ready to resume

    server.faults.stall_after.clear()
    with make_client(server.url) as client, client.open_release(NIGHT, part, expected_md5=md5(data)) as again:
        assert again.replayed == 777_777
        assert again.read() == data
    assert gets(server, NIGHT)[-1] == "bytes=777777-"
    assert not part.exists()


def test_a_resume_that_fails_names_the_bytes_received(
    server: ArchiveServer, files: dict[str, bytes], tmp_path: Path
):
    data = files[NIGHT]
    part = tmp_path / "f.part"
    server.faults.drop_after[NIGHT] = 500_001
    server.faults.rate_limit_bps = 1_000_000  # the drop comes after about half a second
    with (
        make_client(server.url, retries=1) as client,
        client.open_release(NIGHT, part, expected_md5=md5(data), chunk_size=65536) as stream,
    ):
        assert stream.read(1000) == data[:1000]
        server.faults.fail_first[NIGHT] = 100  # from now on the archive is "busy"
        with pytest.raises(DownloadError) as info:
            stream.read()
    assert str(info.value) == (
        f"{NIGHT}: 500001 of {len(data)} bytes received from {server.url}{NIGHT}; resuming: "
        f"{server.url}{NIGHT} answered HTTP 503 Service Unavailable"
    )
    assert part.read_bytes() == data[:500_001]


# --- a floor on the speed -----------------------------------------------------------------------------


def test_a_trickle_fails_within_the_window(server: ArchiveServer, files: dict[str, bytes], tmp_path: Path):
    """100 bytes every 0.1 s never trips the stall timeout, but is far below the floor: it must end."""
    data = files[NIGHT]
    part = tmp_path / "t.part"
    server.faults.trickle[NIGHT] = (100, 0.1)
    holder: list = []
    with make_client(server.url, timeout=(2, 2), min_speed=5000, speed_window=1.0) as client:
        error, elapsed = bounded(
            read_all(client, NIGHT, part, data, holder), 10, lambda: holder and holder[0].close()
        )
    assert isinstance(error, DownloadError), error
    message = str(error)
    assert message.startswith(f"{NIGHT}: ")
    assert "too slow" in message and "slower than the minimum 5000 B/s (ZTFCAT_MIN_SPEED) over 1 s" in message
    assert 1.0 <= elapsed < 4
    have = part.read_bytes()
    assert 0 < len(have) < 2000 and data.startswith(have)  # what came is kept for a resume


def test_the_speed_floor_comes_from_the_environment(
    server: ArchiveServer, files: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ZTFCAT_MIN_SPEED", "5000")
    monkeypatch.setenv("ZTFCAT_SPEED_WINDOW", "0.5")
    monkeypatch.setenv("ZTFCAT_STALL_TIMEOUT", "2")
    server.faults.trickle[SMALL] = (50, 0.05)
    holder: list = []
    with ArchiveClient(server.url, retries=1, backoff=0.01) as client:
        assert (client.min_speed, client.speed_window, client.timeout) == (5000, 0.5, (10, 2))
        error, elapsed = bounded(
            read_all(client, SMALL, tmp_path / "v.part", files[SMALL], holder),
            10,
            lambda: holder and holder[0].close(),
        )
    assert isinstance(error, DownloadError) and "too slow" in str(error), error
    assert elapsed < 3


def test_a_slow_reader_is_not_a_slow_network(server: ArchiveServer, files: dict[str, bytes], tmp_path: Path):
    """The download waits for a reader that pauses longer than the window: not counted against it."""
    data = files[NIGHT]
    with (
        make_client(server.url, min_speed=1_000_000, speed_window=0.2) as client,
        client.open_release(
            NIGHT, tmp_path / "w.part", expected_md5=md5(data), chunk_size=256 * 1024, prefetch=1
        ) as stream,
    ):
        pieces = []
        for _ in range(3):
            pieces.append(stream.read(256 * 1024))
            time.sleep(0.5)
        pieces.append(stream.read())
    assert b"".join(pieces) == data


def test_a_trickled_listing_fails_too(server: ArchiveServer):
    server.faults.trickle[INDEX] = (20, 0.1)
    with make_client(server.url, min_speed=2000, speed_window=0.5) as client:
        error, elapsed = bounded(client.listing, 10)
    assert isinstance(error, DownloadError) and "too slow" in str(error), error
    assert str(error).startswith(server.url) and elapsed < 3


def test_a_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch):
    """Connected (the kernel's backlog accepts) but no answer: the stall timeout ends each try."""
    monkeypatch.setenv("ZTFCAT_STALL_TIMEOUT", "0.3")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/alerts/public/"
        with ArchiveClient(url, retries=1, backoff=0.01) as client:
            error, elapsed = bounded(lambda: client.head_size(NIGHT), 10)
    assert isinstance(error, DownloadError), error
    assert str(error).startswith(f"HEAD {url}{NIGHT} failed after 2 tries: ") and "timed out" in str(error)
    assert elapsed < 3


def test_headers_sent_a_byte_at_a_time_time_out(monkeypatch: pytest.MonkeyPatch):
    """Each byte of the headers comes well within the stall timeout, but all of them never do."""
    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)

    def dribble() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not stop.wait(0.05):
                    try:
                        conn.sendall(b"z")
                    except OSError:
                        break

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/alerts/public/"
    try:
        with ArchiveClient(url, retries=1, backoff=0.01, timeout=(2, 0.5)) as client:
            error, elapsed = bounded(lambda: client.head_size(NIGHT), 10)
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert isinstance(error, DownloadError), error
    assert str(error).startswith(f"HEAD {url}{NIGHT} failed after 2 tries: ") and "timed out" in str(error)
    assert elapsed < 3


def test_connection_refused_is_one_line_after_the_retries():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"http://127.0.0.1:{port}/alerts/public/"
    with make_client(url, retries=2) as client, pytest.raises(DownloadError) as info:
        client.md5sums()
    message = str(info.value)
    assert message.startswith(f"GET {url}MD5SUMS failed after 3 tries: ") and "\n" not in message
    assert "refused" in message.lower()


# --- size caps ----------------------------------------------------------------------------------------


def test_an_oversized_listing_is_refused_before_it_is_read(server: ArchiveServer):
    server.faults.pad_listing = 212_000_000  # announced with Content-Length
    tracemalloc.start()
    try:
        with make_client(server.url) as client:
            (error, elapsed) = bounded(client.listing, 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, DownloadError), error
    assert str(error).startswith(f"{server.url} is 2120")
    assert "more than the 16777216-byte cap (ZTFCAT_MAX_LISTING_BYTES): refused unread" in str(error)
    assert peak < 4 * MiB and elapsed < 2


def test_an_oversized_listing_without_length_stops_at_the_cap(server: ArchiveServer):
    server.faults.pad_listing = 212_000_000
    server.faults.no_length.add(INDEX)
    tracemalloc.start()
    try:
        with make_client(server.url) as client:
            (error, elapsed) = bounded(client.listing, 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, DownloadError), error
    assert str(error) == (
        f"{server.url} is more than the 16777216-byte cap (ZTFCAT_MAX_LISTING_BYTES): "
        "refused after 16777217 bytes"
    )
    assert peak < 3 * 16 * MiB  # the capped buffer and its copies, never the 212 MB page


def test_listing_cap_from_the_environment_and_a_page_under_it(
    server: ArchiveServer, monkeypatch: pytest.MonkeyPatch
):
    server.faults.pad_listing = 3 * MiB
    monkeypatch.setenv("ZTFCAT_MAX_LISTING_BYTES", str(2 * MiB))
    with ArchiveClient(server.url, retries=0) as client, pytest.raises(DownloadError, match="cap"):
        client.listing()
    monkeypatch.setenv("ZTFCAT_MAX_LISTING_BYTES", str(4 * MiB))
    with ArchiveClient(server.url, retries=0) as client:
        assert [e.name for e in client.listing()] == [MD5SUMS, NIGHT, SMALL]  # padding is a comment


@pytest.mark.parametrize("announced", [True, False])
def test_an_oversized_md5sums_is_refused(
    server: ArchiveServer, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, announced: bool
):
    server.faults.pad_md5sums = 2 * MiB
    if not announced:
        server.faults.no_length.add(MD5SUMS)
    monkeypatch.setenv("ZTFCAT_MAX_MANIFEST_BYTES", str(MiB))
    with ArchiveClient(server.url, retries=0) as client, pytest.raises(DownloadError) as info:
        client.md5sums()
    assert str(info.value).startswith(f"{server.url}MD5SUMS is ")
    assert f"more than the {MiB}-byte cap (ZTFCAT_MAX_MANIFEST_BYTES)" in str(info.value)
    monkeypatch.delenv("ZTFCAT_MAX_MANIFEST_BYTES")
    with ArchiveClient(server.url, retries=0) as client:  # padded with comments: still the same digests
        assert client.md5sums() == {NIGHT: md5(files[NIGHT]), SMALL: md5(files[SMALL])}


def test_the_real_listing_fits_the_caps_with_a_wide_margin():
    """The caps against the real archive's size (2,959 files on 2026-07-02), rebuilt as its page."""
    from ztfcat.testing.archive_server import IndexRow, render_index, render_md5sums

    listing = Path("/work/shared/data/archive-listing/listing-2026-07-02.tsv")
    if not listing.exists():
        pytest.skip(f"{listing} not present")
    rows = [line.split("\t") for line in listing.read_text().splitlines()[1:]]
    page = render_index([IndexRow(name, age, size) for name, age, size in rows]).encode()
    manifest = render_md5sums({name: "0" * 32 for name, _, _ in rows}).encode()
    assert 20 * len(page) < settings.DEFAULT_MAX_LISTING_BYTES
    assert 20 * len(manifest) < settings.DEFAULT_MAX_MANIFEST_BYTES


# --- redirects ----------------------------------------------------------------------------------------


def test_a_redirect_to_another_origin_is_refused(server: ArchiveServer, other: ArchiveServer, tmp_path: Path):
    server.faults.redirect[NIGHT] = other.url + NIGHT
    with make_client(server.url) as client, pytest.raises(DownloadError) as info:
        client.open_release(NIGHT, tmp_path / "x.part", expected_md5=None)
    assert str(info.value) == (
        f"{server.url}{NIGHT} redirects to {other.url}{NIGHT}, another origin: refused; allow it with "
        "allow_redirects_to / ZTFCAT_ALLOW_REDIRECT_HOSTS=127.0.0.1 if that host is trusted"
    )
    assert other.requests == []  # nothing was sent there


def test_a_listing_redirected_to_another_origin_is_refused(server: ArchiveServer, other: ArchiveServer):
    server.faults.redirect[INDEX] = other.url
    with make_client(server.url) as client, pytest.raises(DownloadError, match="another origin: refused"):
        client.listing()
    assert other.requests == []


def test_an_allowed_redirect_is_followed_and_resumes_there(
    server: ArchiveServer, other: ArchiveServer, files: dict[str, bytes], tmp_path: Path
):
    data = files[NIGHT]
    server.faults.redirect[NIGHT] = other.url + NIGHT
    other.faults.drop_after[NIGHT] = 500_001
    client = make_client(server.url, allow_redirects_to=[f"127.0.0.1:{other.port}"])
    with client, client.open_release(NIGHT, tmp_path / "a.part", expected_md5=md5(data)) as stream:
        assert stream.read() == data
    assert gets(server, NIGHT) == [None, "bytes=500001-"]  # each hop asked again, with the same Range
    assert gets(other, NIGHT) == [None, "bytes=500001-"]


def test_allowed_redirect_hosts_from_the_environment(
    server: ArchiveServer, other: ArchiveServer, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
):
    server.faults.redirect[SMALL] = other.url + SMALL
    monkeypatch.setenv("ZTFCAT_ALLOW_REDIRECT_HOSTS", "example.org, 127.0.0.1")
    with ArchiveClient(server.url, retries=0) as client:
        assert client.head_size(SMALL) == len(files[SMALL])
    assert [m for m, _p, _r in other.requests] == ["HEAD"]


def test_same_origin_redirects_are_followed_and_bounded(
    server: ArchiveServer, files: dict[str, bytes], tmp_path: Path
):
    server.faults.redirect["latest.tar.gz"] = NIGHT  # relative: the same origin
    with make_client(server.url) as client:
        with client.open_release("latest.tar.gz", tmp_path / "l.part", expected_md5=md5(files[NIGHT])) as s:
            assert s.read() == files[NIGHT]
        server.faults.redirect[SMALL] = SMALL  # a loop
        server.requests.clear()
        with pytest.raises(DownloadError) as info:
            client.head_size(SMALL)
    assert str(info.value) == f"{server.url}{SMALL}: more than 5 redirects, last to {server.url}{SMALL}"
    assert len(server.requests) == 6


@pytest.mark.parametrize(
    ("source", "target", "allowed", "ok"),
    [
        ("https://ztf.uw.edu/a/x", "https://ztf.uw.edu:443/b/y", "", True),
        ("https://ztf.uw.edu/a/x", "https://mirror.org/x", "", False),
        ("https://ztf.uw.edu/a/x", "https://mirror.org/x", "mirror.org", True),
        ("https://ztf.uw.edu/a/x", "https://mirror.org:8443/x", "mirror.org:443", False),
        ("https://ztf.uw.edu/a/x", "https://MIRROR.org:8443/x", "mirror.org:8443", True),
        ("https://ztf.uw.edu/a/x", "http://ztf.uw.edu/a/x", "*", False),  # never down to http
        ("http://ztf.uw.edu/a/x", "https://ztf.uw.edu/a/x", "ztf.uw.edu", True),
        ("http://ztf.uw.edu/a/x", "https://ztf.uw.edu/a/x", "", False),
        ("https://ztf.uw.edu/a/x", "ftp://mirror.org/x", "*", False),
        ("https://ztf.uw.edu/a/x", "https://anything.example/x", "*", True),
    ],
)
def test_which_redirects_are_allowed(source: str, target: str, allowed: str, ok: bool):
    assert ArchiveClient(source, allow_redirects_to=allowed)._may_redirect(source, target) is ok


# --- retries ------------------------------------------------------------------------------------------


def test_429_waits_for_retry_after(server: ArchiveServer, files: dict[str, bytes], tmp_path: Path):
    server.faults.fail_first[SMALL] = 1
    server.faults.fail_status = 429
    server.faults.retry_after = "1"
    started = time.monotonic()
    client = make_client(server.url)
    with client, client.open_release(SMALL, tmp_path / "q.part", expected_md5=md5(files[SMALL])) as stream:
        assert stream.read() == files[SMALL]
    assert time.monotonic() - started >= 1
    assert len(server.requests_for(SMALL, "GET")) == 2


def test_a_huge_retry_after_is_capped(
    server: ArchiveServer, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(remote._BoundedRetry, "MAX_RETRY_AFTER", 0.2)
    server.faults.fail_first[SMALL] = 2
    server.faults.fail_status = 503
    server.faults.retry_after = "86400"
    with make_client(server.url) as client:
        size, elapsed = bounded(lambda: client.head_size(SMALL), 10)
    assert size == len(files[SMALL]) and elapsed < 3


def test_429_past_the_retries_names_the_status(server: ArchiveServer):
    server.faults.fail_first[SMALL] = 100
    server.faults.fail_status = 429
    with make_client(server.url, retries=2) as client, pytest.raises(DownloadError) as info:
        client.head_size(SMALL)
    assert str(info.value) == f"{server.url}{SMALL} answered HTTP 429 Too Many Requests"
    assert len(server.requests_for(SMALL, "HEAD")) == 3


def test_head_sizes_run_in_parallel_and_tolerate_errors(server: ArchiveServer, files: dict[str, bytes]):
    from ztfcat.mirror.archive import head_sizes

    server.faults.slow_first_byte = 0.3
    server.faults.missing.add(SMALL)
    started = time.monotonic()
    with make_client(server.url, retries=0) as client:
        sizes = head_sizes(client, [NIGHT, SMALL, "ztf_public_20180603.tar.gz"] * 3, workers=8)
    assert sizes == {NIGHT: len(files[NIGHT]), SMALL: None, "ztf_public_20180603.tar.gz": None}
    assert time.monotonic() - started < 0.3 * 9 / 2  # serial would take 2.7 s
    assert head_sizes(client, []) == {}


# --- settings -----------------------------------------------------------------------------------------


def test_settings_resolve_argument_then_environment_then_default(monkeypatch: pytest.MonkeyPatch):
    assert settings.stall_timeout() == 60 and settings.min_speed() == 10_000
    assert settings.allow_redirect_hosts() == frozenset()
    monkeypatch.setenv("ZTFCAT_STALL_TIMEOUT", "7.5")
    monkeypatch.setenv("ZTFCAT_MIN_SPEED", "0")  # 0 turns the floor off
    monkeypatch.setenv("ZTFCAT_ALLOW_REDIRECT_HOSTS", " A.example:8080,b.example ")
    assert settings.stall_timeout() == 7.5 and settings.stall_timeout(3) == 3
    assert settings.min_speed() == 0
    assert settings.allow_redirect_hosts() == {"a.example:8080", "b.example"}
    assert settings.allow_redirect_hosts(["C.example"]) == {"c.example"}
    client = ArchiveClient("http://127.0.0.1:9/", timeout=(1, None))
    assert client.timeout == (1, 7.5) and client.min_speed == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ZTFCAT_STALL_TIMEOUT", "soon"),
        ("ZTFCAT_STALL_TIMEOUT", "0"),
        ("ZTFCAT_CONNECT_TIMEOUT", "-1"),
        ("ZTFCAT_MIN_SPEED", "nan"),
        ("ZTFCAT_SPEED_WINDOW", "inf"),
        ("ZTFCAT_MAX_LISTING_BYTES", "1.5"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingError) as info:
        ArchiveClient("http://127.0.0.1:9/")
    assert isinstance(info.value, ZtfcatError)
    assert str(info.value).startswith(f"{value!r} in {variable} is not a ") and variable in str(info.value)


def test_download_command_flags_reach_the_client(
    server: ArchiveServer, other: ArchiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``ztfcat download --allow-redirect-host`` and the redirect refused without it, as one line."""
    from ztfcat.cli.root import main
    from ztfcat.testing.synthetic import make_archive

    root = make_archive(tmp_path / "arch", [("20180605", 3)])
    name = "ztf_public_20180605.tar.gz"
    with ArchiveServer(root) as source, ArchiveServer(root) as mirror:
        source.faults.redirect[name] = mirror.url + name
        env = {
            "ZTFCAT_ARCHIVE_URL": source.url,
            "ZTFCAT_DATA_DIR": str(tmp_path / "data"),
            "ZTFCAT_DATABASE_URL": f"sqlite:///{tmp_path}/c.sqlite",
        }
        refused = CliRunner().invoke(main, ["download", "-q", "2018-06-05"], env=env)
        assert refused.exit_code == 1
        assert f"error: {source.url}{name} redirects to {mirror.url}{name}, another origin" in refused.output
        assert mirror.requests == []
        flags = [
            "--allow-redirect-host",
            f"127.0.0.1:{mirror.port}",
            "--stall-timeout",
            "5",
            "--min-speed",
            "0",
        ]
        done = CliRunner().invoke(main, ["download", "-q", *flags, "2018-06-05"], env=env)
        assert done.exit_code == 0, done.output
        assert f"{name}: complete, 3 alerts" in done.output
        assert [m for m, _p, _r in mirror.requests] == ["GET"]


def test_not_found_still_names_the_release(server: ArchiveServer, tmp_path: Path):
    with make_client(server.url) as client, pytest.raises(NotFoundError) as info:
        client.open_release("ztf_public_20180609.tar.gz", tmp_path / "n.part", expected_md5=None)
    assert (
        str(info.value) == f"no release ztf_public_20180609.tar.gz at {server.url}ztf_public_20180609.tar.gz"
    )


def test_the_transfer_listing_reads_md5sums_under_the_same_cap(
    server: ArchiveServer, monkeypatch: pytest.MonkeyPatch
):
    from ztfcat.mirror.bucket import _LenientArchiveClient

    server.faults.pad_md5sums = 2 * MiB
    server.faults.no_length.add(MD5SUMS)
    monkeypatch.setenv("ZTFCAT_MAX_MANIFEST_BYTES", str(MiB))
    with _LenientArchiveClient(server.url) as client, pytest.raises(DownloadError, match="byte cap"):
        client.md5sums()
