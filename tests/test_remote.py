"""The archive client: pure parsing of listing, names and MD5SUMS; streaming downloads from a real server."""

from __future__ import annotations

import base64
import hashlib
import io
import random
import tarfile
import threading
import time
from datetime import date, datetime
from pathlib import Path

import pytest

from ztfcat.errors import (
    ChecksumMismatchError,
    DownloadError,
    InvalidNightError,
    ManifestFormatError,
    NotFoundError,
    ZtfcatError,
)
from ztfcat.mirror.urllist import md5_base64
from ztfcat.sources.http import (
    ArchiveClient,
    ListingEntry,
    parse_listing,
    parse_md5sums,
    user_agent,
)
from ztfcat.sources.names import ReleaseName, classify, night_file_name
from ztfcat.testing.archive_server import ArchiveServer, IndexRow, render_index

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "archive-listing"
NIGHT = "ztf_public_20180601.tar.gz"
EMPTY = "ztf_public_20180602.tar.gz"
P3 = "ztf_public_20191109_programid3.tar.gz"


def shared_file(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


# --- the listing page ---------------------------------------------------------------------------------


@pytest.mark.shared
def test_parse_listing_of_the_real_page_shape():
    rows = [line.split("\t") for line in shared_file("listing-2026-07-02.tsv").read_text().splitlines()[1:]]
    page = render_index([IndexRow(name, shown_age, shown_size) for name, shown_age, shown_size in rows])
    entries = parse_listing(page)
    assert [(e.name, e.last_modified, e.size_shown) for e in entries] == [tuple(r) for r in rows]
    assert len(entries) == 2959
    assert entries[0] == ListingEntry("ztf_public_20260702.tar.gz", "10 hours ago", "8.8G")


def test_parse_listing_apache_table_with_dates_and_furniture():
    rows = [
        IndexRow("MD5SUMS", datetime(2026, 7, 2, 9, 1), 210_000),
        IndexRow("ztf_public_20180601.tar.gz", datetime(2018, 6, 2, 10, 11), 804057887),
        IndexRow("ztf public 2.tar.gz", datetime(2018, 6, 3, 0, 0), 74),
        IndexRow("old", datetime(2019, 1, 1, 0, 0), None, is_dir=True),
    ]
    page = render_index(rows)
    assert "?C=N;O=D" in page and "Parent Directory" in page and "/icons/" in page
    assert parse_listing(page, base_url="https://ztf.uw.edu/alerts/public/") == [
        ListingEntry("MD5SUMS", datetime(2026, 7, 2, 9, 1), "205K"),
        ListingEntry("ztf_public_20180601.tar.gz", datetime(2018, 6, 2, 10, 11), "767M"),
        ListingEntry("ztf public 2.tar.gz", datetime(2018, 6, 3), "74"),
    ]


NGINX = """<html>
<head><title>Index of /alerts/public/</title></head>
<body>
<h1>Index of /alerts/public/</h1><hr><pre><a href="../">../</a>
<a href="old/">old/</a>                                               01-Jan-2019 00:00                   -
<a href="MD5SUMS">MD5SUMS</a>                                            02-Jul-2026 09:01              210000
<a href="ztf_public_20180601.tar.gz">ztf_public_20180601.tar.gz</a>                         02-Jun-2018 10:11           804057887
<a href="ztf_public_20191109_programid3.tar.gz">ztf_public_20191109_programid3.tar.gz</a>     10-Nov-2019 03:30:59          2791728742
<a href="ztf_public_20200211_programid3.tar">ztf_public_20200211_programid3.tar</a>                 12-Feb-2020 01:02                   0
<a href="ztf%2Bodd%20name.tar.gz">ztf+odd name.tar.gz</a>                                31-Feb-2020 01:02                  44
</pre><hr></body>
</html>
"""


def test_parse_listing_nginx_autoindex():
    assert parse_listing(NGINX) == [
        ListingEntry("MD5SUMS", datetime(2026, 7, 2, 9, 1), "210000"),
        ListingEntry(NIGHT, datetime(2018, 6, 2, 10, 11), "804057887"),
        ListingEntry(P3, datetime(2019, 11, 10, 3, 30, 59), "2791728742"),
        ListingEntry("ztf_public_20200211_programid3.tar", datetime(2020, 2, 12, 1, 2), "0"),
        ListingEntry("ztf+odd name.tar.gz", "31-Feb-2020 01:02", "44"),  # not a date: kept as shown
    ]


APACHE_PRE = """<html><head><title>Index of /alerts/public</title></head><body>
<h1>Index of /alerts/public</h1>
<pre><img src="/icons/blank.gif" alt="Icon "> <a href="?C=N;O=D">Name</a>                    <a href="?C=M;O=A">Last modified</a>      <a href="?C=S;O=A">Size</a>  <a href="?C=D;O=A">Description</a><hr><a href="/alerts/"><img src="/icons/back.gif" alt="[PARENTDIR]"></a> <a href="/alerts/">Parent Directory</a>                             -
<a href="/alerts/public/ztf_public_20180601.tar.gz"><img src="/icons/compressed.gif" alt="[   ]"></a> <a href="/alerts/public/ztf_public_20180601.tar.gz">ztf_public_20180601.tar.gz</a> 2018-06-02 10:11  767M
<a href="/alerts/public/VALIDATE.out"><img src="/icons/text.gif" alt="[TXT]"></a> <a href="/alerts/public/VALIDATE.out">VALIDATE.out</a>           2020-01-01 00:00   12K  checks
<a href="https://elsewhere.example/x.tar.gz">x.tar.gz</a>
<hr></pre>
</body></html>
"""


def test_parse_listing_apache_pre_with_absolute_links_and_icon_links():
    entries = parse_listing(APACHE_PRE, base_url="https://ztf.uw.edu/alerts/public/")
    assert entries == [
        ListingEntry(NIGHT, datetime(2018, 6, 2, 10, 11), "767M"),
        ListingEntry("VALIDATE.out", datetime(2020, 1, 1), "12K"),
    ]
    assert parse_listing(APACHE_PRE) == []  # absolute links cannot be placed without the page's URL


# --- names --------------------------------------------------------------------------------------------


def test_classify_releases():
    assert classify(NIGHT) == ReleaseName(NIGHT, date(2018, 6, 1), "public")
    release = classify(P3)
    assert release == ReleaseName(P3, date(2019, 11, 9), "programid3") and release.programid3
    assert classify(NIGHT) < classify(P3)  # type: ignore[operator]


@pytest.mark.parametrize(
    "name",
    [
        "ztf_public_20200211_programid3.tar",
        "ztf_20200219_programid1.tar.tar",
        "MD5SUMS",
        "VALIDATE",
        "VALIDATE.out",
        "ztf_public_20180631.tar.gz",  # June has 30 days
        "ztf_public_20181301.tar.gz",
        "ztf_public_2018060.tar.gz",
        "ztf_public_20180601.tar.gz.part",
        "ztf_public_20180601.tar",
        "ztf_public_20180601_programid1.tar.gz",
        "xztf_public_20180601.tar.gz",
        "ztf_public_20180601.tgz",
    ],
)
def test_classify_non_releases(name: str):
    assert classify(name) is None


@pytest.mark.shared
def test_classify_every_name_of_the_real_listing():
    names = [
        line.split("\t")[0] for line in shared_file("listing-2026-07-02.tsv").read_text().splitlines()[1:]
    ]
    releases = [classify(n) for n in names]
    odd = sorted(n for n, r in zip(names, releases, strict=True) if r is None)
    assert odd == ["ztf_20200219_programid1.tar.tar", "ztf_public_20200211_programid3.tar"]
    kinds = [r.kind for r in releases if r is not None]
    assert kinds.count("programid3") == 22
    assert kinds.count("public") == 2959 - 22 - 2
    nights = [r.night for r in releases if r is not None and r.kind == "public"]
    assert min(nights) == date(2018, 6, 1) and max(nights) == date(2026, 7, 2)
    assert len(set(nights)) == len(nights)


def test_night_file_name():
    assert night_file_name(2018, 6, 1) == NIGHT
    assert night_file_name(2024, 2, 29) == "ztf_public_20240229.tar.gz"
    for bad in ((2018, 6, 31), (2023, 2, 29), (2018, 13, 1), (2018, 0, 5)):
        with pytest.raises(InvalidNightError) as info:
            night_file_name(*bad)
        assert isinstance(info.value, ValueError) and isinstance(info.value, ZtfcatError)
        assert f"{bad[0]:04d}-{bad[1]:02d}-{bad[2]:02d}" in str(info.value)


# --- MD5SUMS and base64 digests -----------------------------------------------------------------------


def test_parse_md5sums_edge_cases():
    a, b, c = "0123456789abcdef" * 2, "FEDCBA9876543210" * 2, "1" * 32
    text = (
        "# MD5SUMS of the archive\n"
        f"{a}  {NIGHT}\n"
        "\n"
        f"{b} *./alerts/public/{P3}\r\n"
        f"   {c}  /data/ztf/ztf_public_20180602.tar.gz   \n"
        f"{a}  {NIGHT}\n"  # a repeat that agrees is harmless
    )
    assert parse_md5sums(text) == {NIGHT: a, P3: b.lower(), EMPTY: c}
    assert parse_md5sums("") == {}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f"{'0' * 32}  ok\nnot a line\n", 2),
        (f"{'0' * 31}  short\n", 1),
        (f"{'g' * 32}  nothex\n", 1),
        (f"\n# c\n{'0' * 32}\n", 3),
        (f"{'0' * 32}  x\n{'1' * 32}  dir/x\n", 2),  # same name, two digests
    ],
)
def test_parse_md5sums_rejects_malformed_lines_by_number(text: str, line: int):
    with pytest.raises(ManifestFormatError) as info:
        parse_md5sums(text, source="https://host/MD5SUMS")
    assert f"https://host/MD5SUMS line {line} " in str(info.value)
    assert isinstance(info.value, ZtfcatError)


def test_md5_base64():
    hex_md5 = "c0710d6b4f15dfa88f600b0e6b624077"
    assert md5_base64(hex_md5) == base64.b64encode(bytes.fromhex(hex_md5)).decode()
    assert md5_base64(hex_md5.upper()) == md5_base64(hex_md5)
    assert md5_base64(hashlib.md5(b"").hexdigest()) == "1B2M2Y8AsgTpgAmY7PhCfg=="
    for bad in ("", "0" * 31, "0" * 33, "z" * 32, base64.b64encode(b"0" * 16).decode()):
        with pytest.raises(ManifestFormatError):
            md5_base64(bad)


@pytest.mark.shared
def test_md5_base64_on_real_sts_rows():
    lines = shared_file("sts-url-list-2018-2020.tsv").read_text().splitlines()
    assert lines[0] == "TsvHttpData-1.0"
    broken = []
    for line in lines[1:]:
        hex_md5 = line.split("\t")[2]
        if hex_md5.startswith("#"):  # two real rows hold '#' and 31 digits: refused, never mis-encoded
            with pytest.raises(ManifestFormatError):
                md5_base64(hex_md5)
            broken.append(hex_md5)
            continue
        encoded = md5_base64(hex_md5)
        assert encoded == base64.b64encode(bytes.fromhex(hex_md5)).decode("ascii")
        assert len(encoded) == 24 and base64.b64decode(encoded).hex() == hex_md5.lower()
    assert len(broken) <= 2


# --- against a real server ----------------------------------------------------------------------------


def make_tarball(path: Path, members: int, size: int, seed: int) -> bytes:
    """A gzip'd tar of ``members`` random (incompressible) ``<candid>.avro`` files; returns its bytes."""
    rng = random.Random(seed)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i in range(members):
            data = rng.randbytes(size)
            info = tarfile.TarInfo(f"{600_000_000_000_000_000 + i}.avro")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("archive")
    files = {
        NIGHT: make_tarball(root / NIGHT, 24, 100_000, 1),  # about 2.4 MB
        EMPTY: make_tarball(root / EMPTY, 0, 0, 2),
        P3: make_tarball(root / P3, 3, 50_000, 3),
    }
    (root / "ztf_public_20200211_programid3.tar").write_bytes(b"")
    files["root"] = str(root).encode()
    return files


@pytest.fixture
def server(archive: dict[str, bytes]):
    with ArchiveServer(Path(archive["root"].decode())) as srv:
        yield srv


@pytest.fixture
def client(server: ArchiveServer):
    with ArchiveClient(server.url, retries=3, backoff=0.01, timeout=(5, 5)) as archive_client:
        yield archive_client


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_client_uses_settings_and_a_user_agent(monkeypatch: pytest.MonkeyPatch, server: ArchiveServer):
    monkeypatch.setenv("ZTFCAT_ARCHIVE_URL", "http://127.0.0.1:9/alerts/public")
    assert ArchiveClient().base_url == "http://127.0.0.1:9/alerts/public/"
    assert ArchiveClient().session.headers["User-Agent"] == user_agent()
    assert user_agent().startswith("ztfcat/")
    assert ArchiveClient("http://h/x/").url("a b+c.tar.gz") == "http://h/x/a%20b%2Bc.tar.gz"


def test_listing_md5sums_and_head_sizes(client: ArchiveClient, archive: dict[str, bytes]):
    entries = client.listing()
    names = [e.name for e in entries]
    assert names == sorted(["MD5SUMS", NIGHT, EMPTY, P3, "ztf_public_20200211_programid3.tar"])
    assert all(isinstance(e.last_modified, datetime) for e in entries)
    assert next(e for e in entries if e.name == NIGHT).size_shown == "2.3M"
    releases = [r for r in map(classify, names) if r]
    assert [r.name for r in releases] == [NIGHT, EMPTY, P3]
    assert client.md5sums() == {
        NIGHT: md5(archive[NIGHT]),
        EMPTY: md5(archive[EMPTY]),
        P3: md5(archive[P3]),
        "ztf_public_20200211_programid3.tar": md5(b""),
    }
    assert [client.head_size(n) for n in (NIGHT, EMPTY, P3)] == [len(archive[n]) for n in (NIGHT, EMPTY, P3)]


def test_head_size_of_a_missing_release(client: ArchiveClient, server: ArchiveServer):
    name = "ztf_public_20180603.tar.gz"
    with pytest.raises(NotFoundError) as info:
        client.head_size(name)
    assert str(info.value) == f"no release {name} at {server.url}{name}"


def test_invalid_night_is_rejected_before_any_request(client: ArchiveClient, server: ArchiveServer):
    with pytest.raises(InvalidNightError):
        client.head_size(night_file_name(2018, 6, 31))
    assert server.requests == []


def test_open_release_streams_every_byte(client: ArchiveClient, archive: dict[str, bytes], tmp_path: Path):
    data = archive[NIGHT]
    part = tmp_path / (NIGHT + ".part")
    seen: list[tuple[int, int | None]] = []
    stream = client.open_release(
        NIGHT,
        part,
        expected_md5=md5(data),
        expected_size=len(data),
        chunk_size=256 * 1024,
        progress=lambda done, total: seen.append((done, total)),
    )
    with stream:
        assert stream.read(0) == b""
        first = stream.read(1000)
        assert len(first) == 1000  # exactly n, not a short read
        into = bytearray(5000)
        assert stream.readinto(into) == 5000
        rest = stream.read()
        assert stream.read(10) == b""
    assert first + bytes(into) + rest == data
    assert stream.md5_hex == md5(data) and stream.tell() == len(data)
    assert not part.exists()  # verified, and no keep_path: nothing left behind
    assert seen[-1] == (len(data), len(data))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_open_release_feeds_tarfile_and_keeps_the_file(
    client: ArchiveClient, archive: dict[str, bytes], tmp_path: Path
):
    data = archive[NIGHT]
    keep = tmp_path / "kept" / NIGHT
    keep.parent.mkdir()
    with client.open_release(NIGHT, tmp_path / "x.part", expected_md5=md5(data), keep_path=keep) as stream:
        with tarfile.open(fileobj=stream, mode="r|gz") as tar:
            sizes = [len(tar.extractfile(member).read()) for member in tar]  # type: ignore[union-attr]
        assert sizes == [100_000] * 24
        assert stream.finish() == md5(data)  # tarfile stops before the end: finish verifies the rest
    assert keep.read_bytes() == data
    assert not (tmp_path / "x.part").exists()


def test_empty_night(client: ArchiveClient, archive: dict[str, bytes], tmp_path: Path):
    with client.open_release(EMPTY, tmp_path / "e.part", expected_md5=md5(archive[EMPTY])) as stream:
        assert stream.read() == archive[EMPTY]
        with tarfile.open(fileobj=io.BytesIO(archive[EMPTY]), mode="r:gz") as tar:
            assert tar.getmembers() == []


def test_dropped_connection_resumes_with_range(
    client: ArchiveClient, server: ArchiveServer, archive: dict[str, bytes], tmp_path: Path
):
    data = archive[NIGHT]
    server.faults.drop_after[NIGHT] = 700_000
    server.faults.drop_times = 2
    with client.open_release(NIGHT, tmp_path / "d.part", expected_md5=md5(data)) as stream:
        assert stream.read() == data
    assert [r[2] for r in server.requests_for(NIGHT, "GET")] == [None, "bytes=700000-", "bytes=1400000-"]


def test_drops_past_the_retries_give_a_download_error(
    client: ArchiveClient, server: ArchiveServer, archive: dict[str, bytes], tmp_path: Path
):
    server.faults.drop_after[NIGHT] = 0
    server.faults.drop_times = 100
    part = tmp_path / "f.part"
    with client.open_release(NIGHT, part, expected_md5=None) as stream, pytest.raises(DownloadError) as info:
        stream.read()
    message = str(info.value)
    assert message.startswith(f"{NIGHT}: 0 of {len(archive[NIGHT])} bytes received from {server.url}{NIGHT}")
    assert f"gave up after {1 + client.retries} tries without a byte of progress: connection lost" in message
    assert "\n" not in message
    assert len(server.requests_for(NIGHT, "GET")) == 1 + client.retries


def test_interrupted_by_the_reader_then_resumed_from_disk(
    client: ArchiveClient, server: ArchiveServer, archive: dict[str, bytes], tmp_path: Path
):
    data = archive[NIGHT]
    part = tmp_path / "r.part"
    with client.open_release(NIGHT, part, expected_md5=md5(data), chunk_size=64 * 1024, prefetch=2) as stream:
        half = stream.read(len(data) // 2)
    assert half == data[: len(data) // 2]
    saved = part.read_bytes()
    assert len(data) // 2 <= len(saved) < len(data) and data.startswith(saved)
    time.sleep(0.2)
    assert part.read_bytes() == saved  # nothing written once close() returned

    with client.open_release(NIGHT, part, expected_md5=md5(data)) as again:
        assert again.replayed == len(saved)
        assert again.read() == data
    assert server.requests_for(NIGHT, "GET")[-1][2] == f"bytes={len(saved)}-"
    assert not part.exists()


def test_a_reader_stopped_after_the_download_ended_keeps_the_whole_part(
    client: ArchiveClient, server: ArchiveServer, archive: dict[str, bytes], tmp_path: Path
):
    """Ctrl-C while the ingest still works on the start of a night whose bytes have all arrived: the
    verified ``.part`` stays whole (the download thread used to drop it at its last byte), and the
    next run replays it without downloading anything again."""
    data = archive[NIGHT]
    part = tmp_path / "v.part"
    with client.open_release(
        NIGHT, part, expected_md5=md5(data), chunk_size=64 * 1024, prefetch=1000
    ) as stream:
        assert stream.read(1000) == data[:1000]
        deadline = time.monotonic() + 30
        while stream.md5_hex is None and time.monotonic() < deadline:  # the download thread verified
            time.sleep(0.01)
        assert stream.md5_hex == md5(data)
    assert part.read_bytes() == data
    with client.open_release(NIGHT, part, expected_md5=md5(data)) as again:
        assert again.replayed == len(data) and again.read() == data
    assert server.requests_for(NIGHT, "GET")[-1][2] == f"bytes={len(data)}-"
    assert not part.exists()


def test_a_verified_file_that_cannot_be_kept_is_one_line_and_the_part_stays(
    client: ArchiveClient, archive: dict[str, bytes], tmp_path: Path
):
    data = archive[NIGHT]
    part, keep = tmp_path / "k.part", tmp_path / "gone" / NIGHT  # its folder does not exist
    stream = client.open_release(NIGHT, part, expected_md5=md5(data), keep_path=keep)
    with stream, pytest.raises(DownloadError) as failed:
        stream.read()
    message = str(failed.value)
    assert "\n" not in message and NIGHT in message and str(part) in message
    assert part.read_bytes() == data and not keep.exists()  # every verified byte is still on disk


def test_server_without_range_support_restarts_cleanly(
    client: ArchiveClient, server: ArchiveServer, archive: dict[str, bytes], tmp_path: Path
):
    data = archive[NIGHT]
    part = tmp_path / "n.part"
    part.write_bytes(data[:1000])
    server.faults.no_range.add(NIGHT)
    with client.open_release(NIGHT, part, expected_md5=md5(data)) as stream:
        assert stream.replayed == 0
        assert stream.read() == data


def test_server_without_range_support_after_a_drop(
    client: ArchiveClient, server: ArchiveServer, archive: dict[str, bytes], tmp_path: Path
):
    data = archive[NIGHT]
    server.faults.no_range.add(NIGHT)
    server.faults.drop_after[NIGHT] = 500_000
    with client.open_release(NIGHT, tmp_path / "m.part", expected_md5=md5(data)) as stream:
        assert stream.read() == data  # the second body starts at 0 again; the reader's bytes are skipped


def test_part_file_already_whole_needs_no_download(
    client: ArchiveClient, server: ArchiveServer, archive: dict[str, bytes], tmp_path: Path
):
    data = archive[P3]
    part = tmp_path / "w.part"
    part.write_bytes(data)
    with client.open_release(P3, part, expected_md5=md5(data)) as stream:
        assert stream.read() == data
    assert server.requests_for(P3, "GET") == [("GET", "/alerts/public/" + P3, f"bytes={len(data)}-")]


def test_part_file_longer_than_the_release_starts_over(
    client: ArchiveClient, archive: dict[str, bytes], tmp_path: Path
):
    data = archive[P3]
    part = tmp_path / "l.part"
    part.write_bytes(data + b"junk")
    with client.open_release(P3, part, expected_md5=md5(data)) as stream:
        assert stream.replayed == 0
        assert stream.read() == data


def test_wrong_md5_names_the_file_and_both_digests(
    client: ArchiveClient, server: ArchiveServer, archive: dict[str, bytes], tmp_path: Path
):
    server.faults.wrong_md5.add(P3)
    listed = client.md5sums()[P3]
    actual = md5(archive[P3])
    assert listed != actual
    part = tmp_path / "bad.part"
    with client.open_release(P3, part, expected_md5=listed) as stream:
        with pytest.raises(ChecksumMismatchError) as info:
            stream.read()
        with pytest.raises(ChecksumMismatchError):
            stream.read(1)  # the failure stays
    message = str(info.value)
    assert P3 in message and listed in message and actual in message
    assert not part.exists()  # the bad bytes are not kept to be resumed from


def test_stale_part_file_is_caught_and_removed(
    client: ArchiveClient, archive: dict[str, bytes], tmp_path: Path
):
    data = archive[NIGHT]
    part = tmp_path / "s.part"
    part.write_bytes(b"\0" * 1000)  # bytes of another version of the file
    with (
        client.open_release(NIGHT, part, expected_md5=md5(data)) as stream,
        pytest.raises(ChecksumMismatchError),
    ):
        stream.finish()
    assert not part.exists()
    with client.open_release(NIGHT, part, expected_md5=md5(data)) as stream:
        assert stream.read() == data


def test_size_mismatch_names_both_sizes(client: ArchiveClient, archive: dict[str, bytes], tmp_path: Path):
    size = len(archive[P3])
    with pytest.raises(ChecksumMismatchError) as info:
        client.open_release(P3, tmp_path / "z.part", expected_md5=None, expected_size=size + 1)
    assert P3 in str(info.value) and str(size) in str(info.value) and str(size + 1) in str(info.value)


def test_missing_release_is_not_found(client: ArchiveClient, server: ArchiveServer, tmp_path: Path):
    server.faults.missing.add(P3)
    with pytest.raises(NotFoundError) as info:
        client.open_release(P3, tmp_path / "p.part", expected_md5=None)
    assert str(info.value) == f"no release {P3} at {server.url}{P3}"


def test_503_twice_then_ok(
    client: ArchiveClient, server: ArchiveServer, archive: dict[str, bytes], tmp_path: Path
):
    server.faults.fail_first[P3] = 2
    with client.open_release(P3, tmp_path / "o.part", expected_md5=md5(archive[P3])) as stream:
        assert stream.read() == archive[P3]
    assert len(server.requests_for(P3, "GET")) == 3


def test_503_past_the_retries_is_a_download_error(
    client: ArchiveClient, server: ArchiveServer, tmp_path: Path
):
    server.faults.fail_first[P3] = 100
    with pytest.raises(DownloadError) as info:
        client.open_release(P3, tmp_path / "q.part", expected_md5=None)
    assert f"{server.url}{P3} answered HTTP 503" in str(info.value)
    assert len(server.requests_for(P3, "GET")) == 1 + client.retries


def test_reading_starts_before_the_download_ends(
    client: ArchiveClient, server: ArchiveServer, archive: dict[str, bytes], tmp_path: Path
):
    data = archive[NIGHT]
    server.faults.rate_limit_bps = 4_000_000  # the whole night takes about 0.6 s
    started = time.monotonic()
    with client.open_release(
        NIGHT, tmp_path / "t.part", expected_md5=md5(data), chunk_size=64 * 1024
    ) as stream:
        head = stream.read(64 * 1024)
        first_bytes = time.monotonic() - started
        rest = stream.read()
    total = time.monotonic() - started
    assert head + rest == data
    assert total > 0.4  # throttled
    assert first_bytes < total / 4


def test_a_part_file_resumes_into_the_kept_file(
    client: ArchiveClient, server: ArchiveServer, archive: dict[str, bytes], tmp_path: Path
):
    data = archive[NIGHT]
    (tmp_path / (NIGHT + ".part")).write_bytes(data[:300_000])
    path = tmp_path / NIGHT
    with client.open_release(
        NIGHT, tmp_path / (NIGHT + ".part"), expected_md5=md5(data), keep_path=path
    ) as stream:
        assert stream.finish() == md5(data)
    assert path.read_bytes() == data
    assert not (tmp_path / (NIGHT + ".part")).exists()
    assert server.requests_for(NIGHT, "GET")[-1][2] == "bytes=300000-"


def test_close_stops_the_download_thread(client: ArchiveClient, server: ArchiveServer, tmp_path: Path):
    server.faults.rate_limit_bps = 200_000
    before = threading.active_count()
    stream = client.open_release(NIGHT, tmp_path / "c.part", expected_md5=None, chunk_size=16 * 1024)
    stream.read(1)
    stream.close()
    assert stream.closed
    with pytest.raises(ValueError):
        stream.read(1)
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before, [t.name for t in threading.enumerate()]
