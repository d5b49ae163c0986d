"""The local archive server: its index page, HEAD/GET/Range answers, MD5SUMS and injected faults."""

from __future__ import annotations

import hashlib
import http.client
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ztfcat.testing.archive_server import (
    ArchiveServer,
    Faults,
    IndexRow,
    human_size,
    parse_range,
    render_index,
    render_md5sums,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NAME = "ztf_public_20180601.tar.gz"
TIMEOUT = 10


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / NAME).write_bytes(bytes(range(256)) * 4000)  # 1,024,000 bytes, each offset recognisable
    (folder / "ztf_public_20180602.tar.gz").write_bytes(b"\x1f\x8b" + b"\0" * 72)
    (folder / "ztf_20200219_programid1.tar.tar").write_bytes(b"")
    (folder / ".hidden").write_bytes(b"secret")
    (folder / "sub").mkdir()
    return folder


@pytest.fixture
def server(root: Path):
    with ArchiveServer(root) as srv:
        yield srv


def body_of(root: Path) -> bytes:
    return (root / NAME).read_bytes()


def test_human_size_follows_apache_rounding():
    assert [human_size(n) for n in (-1, 0, 44, 74, 972)] == ["-", "0", "44", "74", "972"]
    assert human_size(973) == "1.0K"
    assert human_size(1024 * 1024) == "1.0M"
    assert human_size(9 * 1024**3) == "9.0G"
    assert human_size(int(9.96 * 1024**3)) == "10G"
    assert human_size(837 * 1024**2) == "837M"


@pytest.mark.shared
def test_human_size_matches_every_real_night_with_a_known_size():
    listing = SHARED / "archive-listing" / "listing-2026-07-02.tsv"
    sts = SHARED / "archive-listing" / "sts-url-list-2018-2020.tsv"
    if not (listing.exists() and sts.exists()):
        pytest.skip("shared archive listing not present")
    shown = dict(line.split("\t")[::2] for line in listing.read_text().splitlines()[1:])
    checked = 0
    for line in sts.read_text().splitlines()[1:]:
        url, size, _ = line.split("\t")
        name = url.rsplit("/", 1)[1]
        if name in shown:
            assert human_size(int(float(size))) == shown[name], name
            checked += 1
    assert checked > 600


def test_parse_range():
    assert parse_range(None, 100) is None
    assert parse_range("bytes=10-", 100) == (10, 99)
    assert parse_range("bytes=10-19", 100) == (10, 19)
    assert parse_range("bytes=90-500", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=100-", 100) == "unsatisfiable"
    assert parse_range("bytes=0-", 0) == "unsatisfiable"
    assert parse_range("bytes=20-10", 100) is None  # invalid: ignored, whole body
    assert parse_range("bytes=0-1,5-6", 100) is None  # multiple ranges: whole body
    assert parse_range("items=0-5", 100) is None


def test_render_index_has_the_real_page_furniture():
    page = render_index([IndexRow("a b.tar.gz", "6 years ago", 74), IndexRow("d", None, None, is_dir=True)])
    assert 'href="?C=N;O=D"' in page and 'src="/icons/blank.gif"' in page
    assert '<a href="/alerts/">Parent Directory</a>' in page
    assert '<a href="a%20b.tar.gz">a b.tar.gz</a>' in page
    assert '<a href="d/">d/</a>' in page
    assert "Parent Directory" not in render_index([], "/")


def test_render_md5sums_is_md5sum_format():
    assert render_md5sums({"b": "1" * 32, "a": "f" * 32}) == f"{'f' * 32}  a\n{'1' * 32}  b\n"


def test_index_page_lists_files_with_rounded_sizes(server: ArchiveServer, root: Path):
    for url in (server.url, server.url.replace("/alerts/public/", "/"), server.url + "?C=N;O=D"):
        response = requests.get(url, timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/html")
        page = response.text
        assert f'<a href="{NAME}">{NAME}</a>' in page
        assert ">1.0M <" in page  # 1,024,000 bytes as Apache rounds it (never "1000K")
        assert 'href="MD5SUMS"' in page
        assert ".hidden" not in page and 'href="sub/"' not in page
    redirect = requests.get(server.url.rstrip("/"), timeout=TIMEOUT, allow_redirects=False)
    assert redirect.status_code == 301 and redirect.headers["Location"] == "/alerts/public/"


def test_head_and_get_give_exact_sizes_and_types(server: ArchiveServer, root: Path):
    head = requests.head(server.url + NAME, timeout=TIMEOUT)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(body_of(root)))
    assert head.headers["Content-Type"] == "application/x-gzip"
    assert head.headers["Accept-Ranges"] == "bytes"
    assert head.content == b""
    get = requests.get(server.url + NAME, timeout=TIMEOUT)
    assert get.content == body_of(root)
    assert (
        requests.head(server.url + "ztf_20200219_programid1.tar.tar", timeout=TIMEOUT).headers[
            "Content-Length"
        ]
        == "0"
    )


def test_ranges(server: ArchiveServer, root: Path):
    body = body_of(root)
    url = server.url + NAME
    tail = requests.get(url, headers={"Range": "bytes=1000-"}, timeout=TIMEOUT)
    assert tail.status_code == 206
    assert tail.headers["Content-Range"] == f"bytes 1000-{len(body) - 1}/{len(body)}"
    assert tail.content == body[1000:]
    middle = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=TIMEOUT)
    assert middle.status_code == 206 and middle.content == body[10:20]
    suffix = requests.get(url, headers={"Range": "bytes=-5"}, timeout=TIMEOUT)
    assert suffix.content == body[-5:]
    past = requests.get(url, headers={"Range": f"bytes={len(body)}-"}, timeout=TIMEOUT)
    assert past.status_code == 416
    assert past.headers["Content-Range"] == f"bytes */{len(body)}"


def test_missing_files_are_404(server: ArchiveServer):
    for name in ("ztf_public_20180631.tar.gz", ".hidden", "sub", "sub/x"):
        assert requests.get(server.url + name, timeout=TIMEOUT).status_code == 404
    assert requests.head(server.url + "nope", timeout=TIMEOUT).status_code == 404


def test_md5sums_generated_from_files(server: ArchiveServer, root: Path):
    text = requests.get(server.url + "MD5SUMS", timeout=TIMEOUT).text
    lines = text.splitlines()
    assert f"{hashlib.md5(body_of(root)).hexdigest()}  {NAME}" in lines
    assert f"{hashlib.md5(b'').hexdigest()}  ztf_20200219_programid1.tar.tar" in lines
    assert len(lines) == 3  # not the dotfile, not the folder, not itself


def test_md5sums_override_and_real_file(root: Path):
    with ArchiveServer(root, md5sums={NAME: "0" * 32}) as srv:
        assert requests.get(srv.url + "MD5SUMS", timeout=TIMEOUT).text == f"{'0' * 32}  {NAME}\n"
    (root / "MD5SUMS").write_text("# as published\n")
    with ArchiveServer(root) as srv:
        assert requests.get(srv.url + "MD5SUMS", timeout=TIMEOUT).text == "# as published\n"


def test_fault_wrong_md5(server: ArchiveServer, root: Path):
    right = hashlib.md5(body_of(root)).hexdigest()
    server.faults.wrong_md5.add(NAME)
    line = next(
        x for x in requests.get(server.url + "MD5SUMS", timeout=TIMEOUT).text.splitlines() if NAME in x
    )
    digest = line.split()[0]
    assert digest != right and len(digest) == 32 and int(digest, 16) >= 0


def test_fault_missing_keeps_the_listing(server: ArchiveServer):
    server.faults.missing.add(NAME)
    assert NAME in requests.get(server.url, timeout=TIMEOUT).text
    assert requests.get(server.url + NAME, timeout=TIMEOUT).status_code == 404
    assert requests.head(server.url + NAME, timeout=TIMEOUT).status_code == 404


def test_fault_fail_first(server: ArchiveServer):
    server.faults.fail_first[NAME] = 2
    codes = [requests.head(server.url + NAME, timeout=TIMEOUT).status_code for _ in range(3)]
    assert codes == [503, 503, 200]


def test_fault_drop_cuts_the_body_for_the_first_requests(root: Path):
    faults = Faults(drop_after={NAME: 5000}, drop_times=2)
    with ArchiveServer(root, faults=faults) as srv:
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
            conn.request("GET", "/alerts/public/" + NAME, headers={"Range": "bytes=100-"})
            response = conn.getresponse()
            assert response.status == 206
            with pytest.raises(http.client.IncompleteRead) as info:
                response.read()
            assert info.value.partial == body_of(root)[100:5100]
            conn.close()
        whole = requests.get(srv.url + NAME, timeout=TIMEOUT)
        assert whole.content == body_of(root)


def test_fault_no_range(server: ArchiveServer, root: Path):
    server.faults.no_range.add(NAME)
    response = requests.get(server.url + NAME, headers={"Range": "bytes=1000-"}, timeout=TIMEOUT)
    assert response.status_code == 200 and response.content == body_of(root)


def test_fault_rate_limit_throttles_without_spinning(server: ArchiveServer, root: Path):
    started = time.monotonic()
    requests.get(server.url + NAME, timeout=TIMEOUT).raise_for_status()
    fast = time.monotonic() - started
    server.faults.rate_limit_bps = 2_000_000  # 1,024,000 bytes: about 0.5 s
    started, cpu = time.monotonic(), time.process_time()
    response = requests.get(server.url + NAME, timeout=TIMEOUT)
    slow, cpu = time.monotonic() - started, time.process_time() - cpu
    assert response.content == body_of(root)
    assert 0.35 < slow < 3.0
    assert fast < slow
    assert cpu < slow * 0.8  # client and server threads together: mostly asleep


def test_fault_slow_first_byte(server: ArchiveServer):
    server.faults.slow_first_byte = 0.3
    started = time.monotonic()
    requests.head(server.url + NAME, timeout=TIMEOUT)
    assert time.monotonic() - started >= 0.3


SMALL = "ztf_public_20180602.tar.gz"  # 74 bytes


def raw_get(srv: ArchiveServer, name: str, range_header: str | None = None, timeout: float = TIMEOUT):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    conn.request("GET", "/alerts/public/" + name, headers={"Range": range_header} if range_header else {})
    return conn, conn.getresponse()


def test_fault_trickle_sends_a_few_bytes_at_a_time(server: ArchiveServer, root: Path):
    server.faults.trickle[SMALL] = (10, 0.1)
    started = time.monotonic()
    conn, response = raw_get(server, SMALL)
    pieces = []
    while piece := response.read1(1000):
        pieces.append(piece)
    conn.close()
    assert b"".join(pieces) == (root / SMALL).read_bytes()
    assert len(pieces) >= 5 and max(map(len, pieces)) <= 10
    assert 0.6 <= time.monotonic() - started < 3


def test_fault_stall_holds_the_connection_at_a_file_offset(server: ArchiveServer, root: Path):
    server.faults.stall_after[NAME] = 5000
    conn, response = raw_get(server, NAME, timeout=0.5)
    got = b""
    with pytest.raises(TimeoutError):
        while piece := response.read1(65536):
            got += piece
    conn.close()
    assert got == body_of(root)[:5000]
    server.faults.stall_times = 2
    conn, response = raw_get(server, NAME, "bytes=5000-", timeout=0.5)  # from the offset on: nothing
    with pytest.raises(TimeoutError):
        response.read1(65536)
    conn.close()
    conn, response = raw_get(server, NAME, "bytes=5000-")  # the stalls are used up
    assert response.read() == body_of(root)[5000:]
    conn.close()


def test_fault_drop_reset_ends_with_a_reset(root: Path):
    with ArchiveServer(root, faults=Faults(drop_after={NAME: 5000}, drop_reset=True)) as srv:
        conn, response = raw_get(srv, NAME)
        got = response.read1(5000)
        while len(got) < 5000:
            got += response.read1(5000)
        with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
            response.read()
        conn.close()
        assert got == body_of(root)[:5000]


def test_fault_redirect(server: ArchiveServer):
    server.faults.redirect[NAME] = "http://127.0.0.2:1/elsewhere"
    server.faults.redirect[""] = "/alerts/public/" + NAME
    for url in (server.url + NAME, server.url):
        response = requests.get(url, timeout=TIMEOUT, allow_redirects=False)
        assert response.status_code == 302
    assert (
        requests.head(server.url + NAME, timeout=TIMEOUT).headers["Location"]
        == "http://127.0.0.2:1/elsewhere"
    )
    assert requests.get(server.url, timeout=TIMEOUT, allow_redirects=False).headers["Location"] == (
        "/alerts/public/" + NAME
    )


def test_fault_padding_is_streamed_never_held(server: ArchiveServer):
    import tracemalloc

    plain = requests.get(server.url, timeout=TIMEOUT).content
    server.faults.pad_listing = 50_000_000
    server.faults.pad_md5sums = 1000
    assert int(requests.head(server.url, timeout=TIMEOUT).headers["Content-Length"]) > 50_000_000
    tracemalloc.start()
    try:
        with requests.get(server.url, timeout=TIMEOUT, stream=True) as response:
            length = int(response.headers["Content-Length"])
            head = response.raw.read(len(plain) - 20)
            total = len(head) + sum(len(chunk) for chunk in response.iter_content(1 << 16))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == length and peak < 4_000_000  # server and client in this process: both streamed
    assert plain.startswith(head[: plain.index(b"</table>")])
    manifest = requests.get(server.url + "MD5SUMS", timeout=TIMEOUT).text
    assert manifest.startswith(f"{hashlib.md5(b'').hexdigest()}  ztf_20200219_programid1.tar.tar\n")
    assert manifest.count("# padding") >= 15 and all(
        line.startswith("#") for line in manifest.splitlines()[3:]
    )


def test_fault_no_length_ends_the_body_by_closing(server: ArchiveServer, root: Path):
    server.faults.no_length |= {NAME, "", "MD5SUMS"}
    for name in (NAME, "", "MD5SUMS"):
        conn, response = raw_get(server, name)
        assert response.getheader("Content-Length") is None and response.getheader("Connection") == "close"
        body = response.read()
        conn.close()
        if name == NAME:
            assert body == body_of(root)
        else:
            assert body == requests.get(server.url + name, timeout=TIMEOUT).content


def test_fault_fail_status_and_retry_after(server: ArchiveServer):
    server.faults.fail_first[NAME] = 2
    server.faults.fail_status = 429
    server.faults.retry_after = "7"
    with requests.Session() as session:  # one kept-alive connection: a HEAD answer has no body
        first = session.head(server.url + NAME, timeout=TIMEOUT)
        second = session.get(server.url + NAME, timeout=TIMEOUT)
        third = session.head(server.url + NAME, timeout=TIMEOUT)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    assert second.status_code == 429 and second.text == f"{NAME} is busy\n"
    assert third.status_code == 200 and third.headers["Content-Length"] == "1024000"


def test_requests_are_recorded(server: ArchiveServer):
    requests.get(server.url + NAME, headers={"Range": "bytes=7-"}, timeout=TIMEOUT)
    requests.head(server.url + NAME, timeout=TIMEOUT)
    assert server.requests_for(NAME) == [
        ("GET", "/alerts/public/" + NAME, "bytes=7-"),
        ("HEAD", "/alerts/public/" + NAME, None),
    ]
    assert server.requests_for(NAME, "HEAD") == [("HEAD", "/alerts/public/" + NAME, None)]


def test_stop_releases_the_port(root: Path):
    server = ArchiveServer(root).start()
    url = server.url
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)
    with pytest.raises(RuntimeError):
        _ = server.url


def test_command_line_serves_a_folder(root: Path):
    process = subprocess.Popen(
        [sys.executable, "-m", "ztfcat.testing.archive_server", str(root), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        url = line.split(" at ")[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/alerts/public/")
        assert requests.head(url + NAME, timeout=TIMEOUT).headers["Content-Length"] == "1024000"
    finally:
        process.terminate()
        process.wait(timeout=10)
