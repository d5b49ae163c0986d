"""The Storage Transfer Service URL list: base64 MD5s, HOST/PATH names, integer sizes, order."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from ztfcat.errors import ManifestFormatError
from ztfcat.mirror.urllist import (
    TSV_HEADER,
    ArchiveFile,
    SyncRow,
    format_tsv,
    md5_base64,
    md5_hex_from_base64,
    sync_rows,
    sync_table,
    transfer_object_name,
    write_tsv,
)

BASE = "https://ztf.uw.edu/alerts/public/"
STS_LIST = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "archive-listing" / "sts-url-list-2018-2020.tsv"
)


def archive_file(night: str, content: bytes) -> ArchiveFile:
    """A file whose size and hex MD5 are those of ``content``."""
    name = f"ztf_public_{night}.tar.gz"
    return ArchiveFile(name, BASE + name, len(content), hashlib.md5(content).hexdigest())


def b64(content: bytes) -> str:
    return base64.b64encode(hashlib.md5(content).digest()).decode()


def test_md5_base64_matches_digest_of_bytes():
    for content in (b"", b"ztf", bytes(range(256)) * 1000):
        hex_md5 = hashlib.md5(content).hexdigest()
        assert md5_base64(hex_md5) == b64(content)
        assert md5_base64(hex_md5.upper()) == b64(content)
        assert len(md5_base64(hex_md5)) == 24
        assert md5_hex_from_base64(b64(content)) == hex_md5
    # The example the archive notes give.
    assert md5_base64("c0710d6b4f15dfa88f600b0e6b624077") == "wHENa08V36iPYAsOa2JAdw=="


@pytest.mark.parametrize(
    "bad", ["", "xyz", "467a69587b1a4017c6857d6c1571c0", "#140b35b38f7621675ff72444c0e39fc"]
)
def test_md5_base64_rejects_non_md5(bad):
    with pytest.raises(ValueError, match="hex MD5"):
        md5_base64(bad)


def test_md5_hex_from_base64_rejects_wrong_length():
    with pytest.raises(ValueError, match="16"):
        md5_hex_from_base64(base64.b64encode(b"short").decode())


def test_transfer_object_name_is_host_and_path():
    url = BASE + "ztf_public_20180626.tar.gz"
    assert transfer_object_name(url) == "ztf.uw.edu/alerts/public/ztf_public_20180626.tar.gz"
    assert transfer_object_name(url, "mirror") == "mirror/ztf.uw.edu/alerts/public/ztf_public_20180626.tar.gz"
    assert transfer_object_name(url, "/a/b/") == "a/b/ztf.uw.edu/alerts/public/ztf_public_20180626.tar.gz"
    # The port is not part of the object name.
    assert transfer_object_name("http://ztf.uw.edu:8080/x/y.tar.gz") == "ztf.uw.edu/x/y.tar.gz"
    with pytest.raises(ValueError, match="HTTP"):
        transfer_object_name("ftp://ztf.uw.edu/x.tar.gz")
    with pytest.raises(ValueError, match="HTTP"):
        transfer_object_name("https://ztf.uw.edu/")


def test_no_bucket_lists_every_file_sorted_by_url():
    files = [archive_file(night, night.encode()) for night in ("20180627", "20180601", "20180626")]
    rows = sync_rows(files, None)
    assert [row.url for row in rows] == sorted(f.url for f in files)
    assert all(row.reason == "new" for row in rows)
    assert rows[0] == SyncRow(BASE + "ztf_public_20180601.tar.gz", 8, b64(b"20180601"), "new")


def test_sort_is_by_utf8_bytes():
    # Python's str order and UTF-8 byte order differ for characters outside the BMP vs U+E000..U+FFFF;
    # the service wants byte order.
    files = [("https://h/\U0001f600.tar.gz", 1, "0" * 32), ("https://h/\ufb01.tar.gz", 1, "0" * 32)]
    rows = sync_rows(files, None)
    assert [row.url.encode() for row in rows] == sorted(row.url.encode() for row in rows)
    assert rows[0].url == "https://h/\ufb01.tar.gz"


def test_bucket_comparison_under_host_path_name():
    same, changed, missing, bare = b"same bytes", b"archive bytes", b"missing", b"bare"
    files = [
        archive_file("20180601", same),
        archive_file("20180602", changed),
        archive_file("20180603", missing),
        archive_file("20180604", bare),
        archive_file("20180605", b"composite"),
    ]
    bucket = {
        "ztf.uw.edu/alerts/public/ztf_public_20180601.tar.gz": b64(same),
        "ztf.uw.edu/alerts/public/ztf_public_20180602.tar.gz": b64(b"bucket bytes"),
        # What the seed compared against: a bare name does not count as present.
        "ztf_public_20180604.tar.gz": b64(bare),
        "ztf.uw.edu/alerts/public/ztf_public_20180605.tar.gz": None,
    }
    rows = {row.url.rsplit("_", 1)[1]: row for row in sync_rows(files, bucket)}
    assert sorted(rows) == ["20180602.tar.gz", "20180603.tar.gz", "20180604.tar.gz", "20180605.tar.gz"]
    assert (
        rows["20180602.tar.gz"].reason
        == f"md5 differs (bucket {b64(b'bucket bytes')}, archive {b64(changed)})"
    )
    assert rows["20180602.tar.gz"].md5_base64 == b64(changed)
    assert rows["20180603.tar.gz"].reason == "new"
    assert rows["20180604.tar.gz"].reason == "new"
    assert rows["20180605.tar.gz"].reason == "no md5 in bucket (composite object)"


def test_prefix_changes_the_expected_object_name():
    content = b"night"
    files = [archive_file("20180601", content)]
    bucket = {"ztf.uw.edu/alerts/public/ztf_public_20180601.tar.gz": b64(content)}
    assert sync_rows(files, bucket) == []
    assert [row.reason for row in sync_rows(files, bucket, prefix="mirror")] == ["new"]
    moved = {"mirror/" + name: md5 for name, md5 in bucket.items()}
    assert sync_rows(files, moved, prefix="mirror/") == []


def test_include_empty():
    files = [
        archive_file("20180601", b"x" * 44),
        archive_file("20180602", b""),
        archive_file("20180603", b"x" * 101),
    ]
    assert len(sync_rows(files, None)) == 3
    assert [row.size for row in sync_rows(files, None, include_empty=False)] == [101]
    assert [row.size for row in sync_rows(files, None, include_empty=False, empty_max_bytes=20)] == [44, 101]


def test_accepts_tuples_and_attribute_records_and_float_sizes():
    class Release:
        url = BASE + "ztf_public_20180603.tar.gz"
        size = 3
        md5 = "0" * 32

    files = [
        ("ztf_public_20180601.tar.gz", BASE + "ztf_public_20180601.tar.gz", 804057887.0, "0" * 32),
        (BASE + "ztf_public_20180602.tar.gz", "2.0", "F" * 32),
        Release(),
    ]
    rows = sync_rows(files, None)
    assert [row.size for row in rows] == [804057887, 2, 3]
    assert all(type(row.size) is int for row in rows)
    assert rows[1].md5_base64 == base64.b64encode(b"\xff" * 16).decode()


@pytest.mark.parametrize(
    "record, message",
    [
        ((BASE + "a.tar.gz", None, "0" * 32), "size unknown"),
        ((BASE + "a.tar.gz", 1.5, "0" * 32), "exact byte count"),
        ((BASE + "a.tar.gz", 1, None), "MD5 unknown"),
        ((BASE + "a.tar.gz", 1, "nothex"), "hex MD5"),
    ],
)
def test_unusable_records_are_refused_by_url(record, message):
    with pytest.raises(ValueError, match=message):
        sync_rows([record], None)


def test_duplicate_urls():
    a = (BASE + "a.tar.gz", 1, "0" * 32)
    assert len(sync_rows([a, a], None)) == 1
    with pytest.raises(ValueError, match="a.tar.gz listed twice"):
        sync_rows([a, (BASE + "a.tar.gz", 1, "1" * 32)], None)


def test_format_tsv_header_integer_sizes_and_newlines(tmp_path):
    rows = sync_rows(
        [(BASE + "ztf_public_20180601.tar.gz", 804057887.0, "467a69587b1a4017c6857d6c1571c079")], None
    )
    text = format_tsv(rows)
    assert text == (
        "TsvHttpData-1.0\n"
        "https://ztf.uw.edu/alerts/public/ztf_public_20180601.tar.gz\t804057887\tRnppWHsaQBfGhX1sFXHAeQ==\n"
    )
    assert format_tsv([]) == TSV_HEADER + "\n"
    path = write_tsv(rows, tmp_path / "urls.tsv")
    assert path.read_bytes() == text.encode()


def test_sync_table_columns():
    rows = sync_rows([archive_file("20180602", b"b"), archive_file("20180601", b"a")], {})
    table = sync_table(rows)
    assert table.colnames == ["url", "size", "md5", "reason"]
    assert list(table["url"]) == [BASE + "ztf_public_20180601.tar.gz", BASE + "ztf_public_20180602.tar.gz"]
    assert table["size"].dtype.kind == "i"
    assert list(table["md5"]) == [b64(b"a"), b64(b"b")]
    empty = sync_table([])
    assert len(empty) == 0 and empty.colnames == ["url", "size", "md5", "reason"]


@pytest.mark.shared
def test_real_seed_url_list_converts():
    """The seed's real table: hex MD5s and float sizes; converted, every digest is base64 of the hex."""
    if not STS_LIST.exists():
        pytest.skip(f"{STS_LIST} not present")
    text = STS_LIST.read_text()
    raw_lines = text.splitlines()[1:]
    assert any(line.split("\t")[1].endswith(".0") for line in raw_lines)  # the seed's float sizes

    seed_rows = [tuple(line.split("\t")) for line in raw_lines]
    files = [row for row in seed_rows if re.fullmatch("[0-9a-f]{32}", row[2])]
    # The real table carries commented-out MD5SUMS entries ('#' + 31 hex digits): refused, naming them.
    damaged = [row for row in seed_rows if row not in files]
    assert damaged and all(re.fullmatch("#[0-9a-f]{31}", row[2]) for row in damaged)
    for row in damaged:
        with pytest.raises(ManifestFormatError, match=re.escape(row[2])):
            sync_rows([row], None)
    last = {row[0]: row for row in files}
    for row in sync_rows(last.values(), None):
        assert len(row.md5_base64) == 24
        _, size, md5_hex = last[row.url]
        assert base64.b64decode(row.md5_base64, validate=True).hex() == md5_hex
        assert isinstance(row.size, int) and row.size == float(size)

    # One real night has two different MD5s: the list cannot be built until one is chosen.
    with pytest.raises(ValueError, match="listed twice"):
        sync_rows(files, None)
    unique = {row[0]: row for row in files}.values()
    tsv = format_tsv(sync_rows(unique, None))
    lines = tsv.splitlines()
    assert lines[0] == TSV_HEADER
    assert len(lines) == len(unique) + 1
    for line in lines[1:]:
        url, size, digest = line.split("\t")
        assert size.isdigit() and len(digest) == 24
    assert lines[1:] == sorted(lines[1:], key=lambda line: line.split("\t")[0].encode())
