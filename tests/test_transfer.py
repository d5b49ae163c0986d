"""ztfcat.mirror.bucket: the Storage Transfer URL list and ingest from a bucket, end to end on 127.0.0.1.

The archive is a real :class:`ArchiveServer` serving :func:`make_archive` nights, listed by the real
``ztfcat.mirror.archive.cached_listing``; the bucket is gcp-storage-emulator behind the real google-cloud-storage
client.  The archive's URLs are ``http://127.0.0.1:PORT/alerts/public/...``, so the transfer service
would name its objects ``127.0.0.1/alerts/public/...`` (the port is not part of the name), and that is
what the buckets here hold.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.tarballs import snapshot
from ztfcat.errors import ManifestFormatError, StorageError
from ztfcat.mirror.bucket import (
    SkippedFilesWarning,
    create_sync_table,
    lenient_md5sums,
    listing_prefix,
    sync_bucket,
    sync_table_tsv,
    transferable,
)
from ztfcat.sources import gcs
from ztfcat.sources.http import parse_md5sums
from ztfcat.store.tables import releases
from ztfcat.testing.archive_server import ArchiveServer
from ztfcat.testing.synthetic import make_archive, make_night

pytestmark = pytest.mark.gcs

NIGHTS = (("20180601", 6), ("20180602", 0), ("20180603", 8), ("20180604", 5))
HOST_PATH = "127.0.0.1/alerts/public/"  # what the service names objects fetched from the local archive


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory) -> Path:
    """Four nights (one empty), a programid3 release, and the archive's odd non-release files."""
    root = make_archive(tmp_path_factory.mktemp("archive"), NIGHTS, seed=5, cutouts=False)
    make_night(root / "ztf_public_20180603_programid3.tar.gz", night="20180603", n_alerts=3, seed=9)
    (root / "ztf_public_20200211_programid3.tar").write_bytes(b"")
    (root / "VALIDATE").write_text("ok\n")
    (root / "MD5SUMS").unlink()  # served computed from the files, as one manifest of every file
    return root


@pytest.fixture
def server(archive_root):
    with ArchiveServer(archive_root) as running:
        yield running


@pytest.fixture
def archive_catalog(catalog, server):
    """The ``catalog`` fixture (each database) reading the local archive."""
    catalog.archive_url = server.url
    return catalog


def release_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("ztf_public_*.tar.gz"))}


@pytest.fixture
def bucket(gcs_bucket, archive_root):  # noqa: F811 - fixture from conftest
    """A bucket a transfer job and a careless user left behind."""
    data = release_bytes(archive_root)
    wrong = make_night(archive_root.parent / "other.tar.gz", night="20180603", n_alerts=2, seed=77).path
    objects = {
        HOST_PATH + "ztf_public_20180601.tar.gz": data["ztf_public_20180601.tar.gz"],  # present, right md5
        HOST_PATH + "ztf_public_20180603.tar.gz": wrong.read_bytes(),  # present, md5 differs
        "ztf_public_20180604.tar.gz": data["ztf_public_20180604.tar.gz"],  # bare name: not where STS writes
        "mirror/" + HOST_PATH + "ztf_public_20180602.tar.gz": data["ztf_public_20180602.tar.gz"],
        "notes/readme.txt": b"not a release",
    }
    for name, payload in objects.items():
        gcs_bucket.blob(name).upload_from_string(payload, timeout=30)
    return gcs_bucket, objects


def test_listing_prefix_drops_the_port():
    urls = [f"http://127.0.0.1:8123/alerts/public/ztf_public_2018060{i}.tar.gz" for i in (1, 2)]
    assert listing_prefix(urls) == HOST_PATH
    assert listing_prefix(urls, "/mirror/") == "mirror/" + HOST_PATH
    assert listing_prefix([*urls, "https://ztf.uw.edu/alerts/public/x.tar.gz"], "m") == "m/"
    assert listing_prefix([]) == ""


def test_transferable_keeps_releases_with_size_and_one_md5():
    class Remote:
        def __init__(self, name, size, md5):
            self.name, self.size, self.md5 = name, size, md5
            self.url = "https://ztf.uw.edu/alerts/public/" + name

    files, skipped = transferable(
        [
            Remote("ztf_public_20180602.tar.gz", 44, "A" * 32),
            Remote("ztf_public_20180601.tar.gz", 10, "0" * 32),
            Remote("MD5SUMS", 100, None),
            Remote("ztf_public_20200211_programid3.tar", 0, "1" * 32),
            Remote("ztf_public_20190426.tar.gz", 5, None),
            Remote("ztf_public_20181105.tar.gz", None, "2" * 32),
            Remote("ztf_public_20190724.tar.gz", 7, "#2e42692e036fafee77e63279683671a"),
        ]
    )
    assert [(f.name, f.size, f.md5_hex) for f in files] == [
        ("ztf_public_20180601.tar.gz", 10, "0" * 32),
        ("ztf_public_20180602.tar.gz", 44, "a" * 32),
    ]
    assert [line.split(":")[0] for line in skipped] == [
        "ztf_public_20181105.tar.gz",
        "ztf_public_20190426.tar.gz",
        "ztf_public_20190724.tar.gz",
    ]
    assert "size unknown" in skipped[0] and "no single MD5" in skipped[1] and "32 hex digits" in skipped[2]
    # Once MD5SUMS has been read, the reason is exact.
    remote = [Remote("ztf_public_20190426.tar.gz", 5, None), Remote("ztf_public_20190427.tar.gz", 5, None)]
    _, skipped = transferable(remote, {"ztf_public_20190426.tar.gz": ["a" * 32, "b" * 32]})
    assert skipped == [
        f"ztf_public_20190426.tar.gz: MD5SUMS gives it 2 different MD5s ({'a' * 32}, {'b' * 32})",
        "ztf_public_20190427.tar.gz: not in the archive's MD5SUMS, so its transfer could not be verified",
    ]


def test_table_lists_exactly_what_the_bucket_lacks(archive_catalog, archive_root, bucket, tmp_path):
    gcs_bucket, objects = bucket
    data = release_bytes(archive_root)
    out = tmp_path / "urls.tsv"
    table = create_sync_table(archive_catalog, gcs_bucket.name, out)
    base = archive_catalog.archive_url
    assert base.startswith("http://127.0.0.1:") and base.endswith("/alerts/public/")

    expected = [
        "ztf_public_20180602.tar.gz",  # only under mirror/: the job without a prefix would write it
        "ztf_public_20180603.tar.gz",  # wrong md5 in the bucket
        "ztf_public_20180603_programid3.tar.gz",
        "ztf_public_20180604.tar.gz",  # only under its bare name
    ]
    assert list(table["url"]) == [base + name for name in expected]
    assert list(table["size"]) == [len(data[name]) for name in expected]
    assert list(table["md5"]) == [b64md5(data[name]) for name in expected]
    wrong = b64md5(objects[HOST_PATH + "ztf_public_20180603.tar.gz"])
    assert list(table["reason"]) == [
        "new",
        f"md5 differs (bucket {wrong}, archive {b64md5(data['ztf_public_20180603.tar.gz'])})",
        "new",
        "new",
    ]
    assert table.meta["n_archive"] == 5 and table.meta["n_in_bucket"] == 1
    assert table.meta["skipped"] == [] and table.meta["out_path"] == str(out)
    assert table.meta["total_bytes"] == sum(len(data[name]) for name in expected)

    lines = out.read_bytes().decode("utf-8").split("\n")
    assert lines[0] == "TsvHttpData-1.0" and lines[-1] == ""
    assert len(lines) == len(expected) + 2
    for line, name in zip(lines[1:-1], expected, strict=True):
        url, size, digest = line.split("\t")
        assert url == base + name
        assert size == str(len(data[name]))
        assert digest == b64md5(data[name]) and len(digest) == 24
    assert lines[1:-1] == sorted(lines[1:-1], key=lambda line: line.split("\t")[0].encode())


def test_prefix_and_empty_nights(archive_catalog, archive_root, bucket):
    gcs_bucket, _ = bucket
    base = archive_catalog.archive_url
    table = create_sync_table(archive_catalog, gcs_bucket.name, prefix="mirror")
    # Under mirror/ only the empty night is held; everything else is new there.
    assert [u.removeprefix(base) for u in table["url"]] == [
        "ztf_public_20180601.tar.gz",
        "ztf_public_20180603.tar.gz",
        "ztf_public_20180603_programid3.tar.gz",
        "ztf_public_20180604.tar.gz",
    ]
    assert set(table["reason"]) == {"new"}
    no_empty = create_sync_table(archive_catalog, gcs_bucket.name, include_empty=False, refresh=False)
    assert "ztf_public_20180602.tar.gz" not in {u.removeprefix(base) for u in no_empty["url"]}
    assert len(no_empty) == 3


def test_without_a_bucket_every_tarball_is_listed(archive_catalog, archive_root, tmp_path):
    data = release_bytes(archive_root)
    table = create_sync_table(archive_catalog, None, tmp_path / "all.tsv")
    assert list(table["url"]) == [archive_catalog.archive_url + name for name in sorted(data)]
    assert list(table["md5"]) == [b64md5(data[name]) for name in sorted(data)]
    assert table.meta["bucket"] is None and table.meta["n_in_bucket"] == 0
    assert len((tmp_path / "all.tsv").read_text().splitlines()) == len(data) + 1
    assert sync_table_tsv(table) == (tmp_path / "all.tsv").read_text()  # `sync-table -o -` writes this


def test_sizes_come_from_the_cached_listing(archive_catalog, archive_root, server):
    table = create_sync_table(archive_catalog)
    heads = sorted(path for method, path, _ in server.requests if method == "HEAD")
    # One HEAD per release (from cached_listing's pool), none per row of the table afterwards.
    assert heads == sorted(f"/alerts/public/{name}" for name in release_bytes(archive_root))
    server.requests.clear()
    again = create_sync_table(archive_catalog, refresh=False)
    assert server.requests == []  # the cache answers: no request at all
    assert list(again["url"]) == list(table["url"]) and list(again["size"]) == list(table["size"])


def test_missing_bucket_fails_before_asking_the_archive(archive_catalog, server, gcs_emulator):
    name = f"ztfcat-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StorageError, match=f"no such bucket '{name}'"):
        create_sync_table(archive_catalog, name)
    assert server.requests == []


def test_real_shaped_md5sums_does_not_break_the_table(
    catalog,
    archive_root,
    tmp_path,
    gcs_bucket,  # noqa: F811
):
    """MD5SUMS as the real one is: a commented-out damaged line, a repeated line, one night given two
    different digests, entries for the 0-byte odd files.  The table is still made; the ambiguous night
    is left out and named, since the service cannot transfer it without its one true digest."""
    root = tmp_path / "archive"
    shutil.copytree(archive_root, root)
    digests = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}
    lines = [f"{digests[name]}  {name}" for name in digests]
    lines.insert(1, "#" + digests["ztf_public_20180603.tar.gz"][1:] + "  ztf_public_20180603.tar.gz")
    lines.append(f"{digests['ztf_public_20180601.tar.gz']}  ztf_public_20180601.tar.gz")
    lines.append(f"{'f' * 32}  ztf_public_20180604.tar.gz")  # a second, different digest
    (root / "MD5SUMS").write_text("\n".join(lines) + "\n\n")
    with ArchiveServer(root) as server:
        catalog.archive_url = server.url
        with pytest.warns(SkippedFilesWarning, match="ztf_public_20180604.tar.gz"):
            table = create_sync_table(catalog, gcs_bucket.name, tmp_path / "urls.tsv")
    names = [u.rsplit("/", 1)[1] for u in table["url"]]
    assert names == [
        "ztf_public_20180601.tar.gz",
        "ztf_public_20180602.tar.gz",
        "ztf_public_20180603.tar.gz",
        "ztf_public_20180603_programid3.tar.gz",
    ]
    assert table.meta["skipped"] == [
        f"ztf_public_20180604.tar.gz: MD5SUMS gives it 2 different MD5s "
        f"({', '.join(sorted([digests['ztf_public_20180604.tar.gz'], 'f' * 32]))})"
    ]
    assert table.meta["manifest_problems"] == []
    assert list(table["md5"]) == [base64.b64encode(bytes.fromhex(digests[n])).decode() for n in names]


@pytest.mark.shared
def test_real_md5_lines_one_conflict_costs_one_night():
    """The seed's real table carries the real MD5SUMS lines: '#'-damaged copies and one night with two
    digests.  Read as a manifest, only that night loses its MD5."""
    sts = (
        Path(__file__).resolve().parents[2]
        / "shared"
        / "data"
        / "archive-listing"
        / "sts-url-list-2018-2020.tsv"
    )
    if not sts.exists():
        pytest.skip(f"{sts} not present")
    lines = [line.split("\t") for line in sts.read_text().splitlines()[1:] if line.strip()]
    manifest = "".join(f"{md5}  {url.rsplit('/', 1)[1]}\n" for url, _size, md5 in lines)
    with pytest.raises(ManifestFormatError):
        parse_md5sums(manifest)  # the strict reading a download needs refuses it whole
    digests, conflicts, bad = lenient_md5sums(manifest)
    assert conflicts == {
        "ztf_public_20190426.tar.gz": ["9f3a894dfe7d121d966ae1045a6faab2", "cc6652fa4ebef9342a7d3c2d4c95ee5e"]
    }
    assert bad == []  # the '#' lines are comments
    assert digests["ztf_public_20181105.tar.gz"] == "5095a2f33d3f114ba3fb1d13e05397f6"
    assert len(digests) == len({url for url, _, _ in lines}) - 1


def test_lenient_md5sums_reports_bad_lines():
    text = f"{'a' * 32}  x.tar.gz\nnot a line\n\n# note\n{'b' * 32}  y.tar.gz\n{'a' * 32}  x.tar.gz\n"
    digests, conflicts, bad = lenient_md5sums(text, "M")
    assert digests == {"x.tar.gz": "a" * 32, "y.tar.gz": "b" * 32} and conflicts == {}
    assert bad == ["M line 2 is not '<md5>  <name>': 'not a line'"]


@pytest.mark.files_layout
def test_ingest_from_bucket_equals_ingest_from_disk(catalog, gcs_bucket, tmp_path):  # noqa: F811
    spec = make_night(tmp_path / "ztf_public_20180626.tar.gz", night="20180626", n_alerts=25, seed=11)
    name = "ztf.uw.edu/alerts/public/ztf_public_20180626.tar.gz"
    gcs_bucket.blob(name).upload_from_filename(str(spec.path), timeout=60)
    url = f"gs://{gcs_bucket.name}/{name}"

    report = catalog.ingest(url)
    assert report.status == "complete" and report.n_alerts == 25
    assert report.md5 == spec.md5 and report.size == spec.size
    from_bucket = snapshot(catalog)
    with catalog.engine.connect() as conn:
        assert conn.execute(select(releases.c.source)).scalar_one() == url
    assert not list(catalog.data_dir.rglob("*.tar*"))  # streamed: no local copy of the tarball

    assert catalog.delete() == 1
    catalog.ingest(spec.path)
    from_disk = snapshot(catalog)
    assert from_bucket == from_disk
    assert len(from_disk["alerts"]) == 25 and len(from_disk["files"]) == 25


@pytest.fixture
def release_bucket(gcs_bucket, archive_root):  # noqa: F811
    """Releases under STS names and a bare name, one damaged copy, and objects that are not releases."""
    data = release_bytes(archive_root)
    wrong = make_night(archive_root.parent / "wrong.tar.gz", night="20180603", n_alerts=2, seed=78).path
    objects = {
        HOST_PATH + "ztf_public_20180601.tar.gz": data["ztf_public_20180601.tar.gz"],
        HOST_PATH + "ztf_public_20180602.tar.gz": data["ztf_public_20180602.tar.gz"],
        HOST_PATH + "ztf_public_20180603.tar.gz": wrong.read_bytes(),
        "ztf_public_20180604.tar.gz": data["ztf_public_20180604.tar.gz"],
        "copy/ztf_public_20180604.tar.gz": data["ztf_public_20180604.tar.gz"],
        HOST_PATH + "ztf_public_20200211_programid3.tar": b"",
        HOST_PATH + "MD5SUMS": b"x\n",
    }
    for name, payload in objects.items():
        gcs_bucket.blob(name).upload_from_string(payload, timeout=30)
    return gcs_bucket


def test_sync_bucket_ingests_what_is_missing_and_skips_complete(
    archive_catalog, archive_root, release_bucket
):
    catalog = archive_catalog
    create_sync_table(catalog)  # fills the cached listing: the archive's MD5 of each release
    catalog.ingest(archive_root / "ztf_public_20180601.tar.gz")  # already complete, from disk
    seen: list[tuple[str, int]] = []
    reports = sync_bucket(catalog, release_bucket.name, progress=lambda obj, n, b: seen.append((obj.name, b)))

    by = [(r.release, r.status, r.already_complete, r.n_alerts) for r in reports]
    assert by == [
        ("ztf_public_20180601.tar.gz", "complete", True, 6),
        ("ztf_public_20180602.tar.gz", "complete", False, 0),
        ("ztf_public_20180603.tar.gz", "failed", False, 0),
        ("ztf_public_20180604.tar.gz", "complete", False, 5),  # copy/... (first by name)
        ("ztf_public_20180604.tar.gz", "complete", True, 5),  # the bare-name copy: already complete
    ]
    assert "is not the archive's" in reports[2].errors[0][1]
    assert {name for name, _ in seen} <= {
        HOST_PATH + "ztf_public_20180602.tar.gz",
        "copy/ztf_public_20180604.tar.gz",
    }
    assert (
        "copy/ztf_public_20180604.tar.gz",
        len(release_bytes(archive_root)["ztf_public_20180604.tar.gz"]),
    ) in seen
    with catalog.engine.connect() as conn:
        sources = dict(conn.execute(select(releases.c.name, releases.c.source)).all())
    assert sources["ztf_public_20180601.tar.gz"] == str(archive_root / "ztf_public_20180601.tar.gz")
    assert (
        sources["ztf_public_20180602.tar.gz"]
        == f"gs://{release_bucket.name}/{HOST_PATH}ztf_public_20180602.tar.gz"
    )
    assert "ztf_public_20180603.tar.gz" not in sources

    again = sync_bucket(catalog, release_bucket.name, prefix=HOST_PATH)
    assert [(r.release, r.already_complete) for r in again] == [
        ("ztf_public_20180601.tar.gz", True),
        ("ztf_public_20180602.tar.gz", True),
        ("ztf_public_20180603.tar.gz", False),
    ]
    assert again[2].status == "failed"


def test_sync_bucket_errors_are_sentences(catalog, gcs_emulator):
    with pytest.raises(StorageError, match="no such bucket 'ztfcat-nope-"):
        sync_bucket(catalog, f"ztfcat-nope-{uuid.uuid4().hex[:8]}")


def test_seed_calls_verbatim(monkeypatch, tmp_path, archive_root, gcs_client, server):  # noqa: F811
    import ztfcat

    bucket = gcs_client.lookup_bucket("my_bucket") or gcs_client.create_bucket("my_bucket")
    for blob in list(bucket.list_blobs()):
        blob.delete()
    data = release_bytes(archive_root)
    bucket.blob(HOST_PATH + "ztf_public_20180601.tar.gz").upload_from_string(
        data["ztf_public_20180601.tar.gz"], timeout=30
    )
    monkeypatch.setenv("ZTFCAT_ARCHIVE_URL", server.url)
    monkeypatch.setenv("ZTFCAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)

    sync_table = ztfcat.create_ztf_sync_table("my_bucket")
    names = sorted(data)[1:]
    assert list(sync_table["url"]) == [server.url + name for name in names]
    assert list(sync_table["md5"]) == [b64md5(data[name]) for name in names]
    assert not (tmp_path / "out_file.txt").exists()

    sync_table = ztfcat.create_ztf_sync_table("my_bucket", "out_file.txt")
    assert (tmp_path / "out_file.txt").read_text().splitlines() == [
        "TsvHttpData-1.0",
        *(f"{server.url}{name}\t{len(data[name])}\t{b64md5(data[name])}" for name in names),
    ]
    assert len(sync_table) == len(names)


def test_open_object_reads_the_listed_object(release_bucket, archive_root):
    name = HOST_PATH + "ztf_public_20180602.tar.gz"
    info = gcs.object_info(f"gs://{release_bucket.name}/{name}")
    assert info.md5_base64 == b64md5(release_bytes(archive_root)["ztf_public_20180602.tar.gz"])
