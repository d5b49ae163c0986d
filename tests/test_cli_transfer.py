"""``ztfcat sync-table``, ``ztfcat sync-bucket`` and ``ztfcat ingest gs://...``, run through click.

A real local archive (:class:`ArchiveServer` over :func:`make_archive`) and gcp-storage-emulator with
the real google-cloud-storage client; objects are named as the transfer service names them for the
local archive's URLs: ``127.0.0.1/alerts/public/<file>`` (no port).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid

import pytest
from click.testing import CliRunner

from ztfcat.cli.root import main
from ztfcat.testing.archive_server import ArchiveServer
from ztfcat.testing.synthetic import make_archive

pytestmark = pytest.mark.gcs

HOST_PATH = "127.0.0.1/alerts/public/"
NIGHTS = (("20180601", 4), ("20180602", 0), ("20180603", 6))


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("archive"), NIGHTS, seed=21, cutouts=False)


@pytest.fixture
def setup(catalog, archive_root, gcs_bucket):  # noqa: F811 - fixtures from conftest
    """``run(*args, code=0)`` of the ztfcat command on a catalog (each database) and the local archive."""
    data = {p.name: p.read_bytes() for p in sorted(archive_root.glob("*.tar.gz"))}
    gcs_bucket.blob(HOST_PATH + "ztf_public_20180601.tar.gz").upload_from_string(
        data["ztf_public_20180601.tar.gz"], timeout=30
    )
    with ArchiveServer(archive_root) as server:
        root = [
            "--data-dir",
            str(catalog.data_dir),
            "--database-url",
            catalog.database_url,
            "--archive-url",
            server.url,
        ]

        def run(*args: str, code: int = 0):
            result = CliRunner().invoke(main, [*root, *args])
            assert result.exit_code == code, result.output + result.stderr
            return result

        yield run, gcs_bucket, data, server


def test_commands_are_on_the_root_group():
    from ztfcat.cli import transfer

    assert main.commands["sync-table"] is transfer.sync_table
    assert main.commands["sync-bucket"] is transfer.sync_bucket
    for name in ("sync-table", "sync-bucket"):
        assert main.commands[name].help


def test_sync_table_writes_the_url_list(setup, tmp_path):
    run, bucket, data, server = setup
    out = tmp_path / "urls.tsv"
    result = run("sync-table", bucket.name, "-o", str(out), "--format", "json")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["url"] for r in rows] == [
        server.url + n for n in ("ztf_public_20180602.tar.gz", "ztf_public_20180603.tar.gz")
    ]
    assert {r["reason"] for r in rows} == {"new"}
    assert "2 of 3 archive tarballs to transfer" in result.stderr
    assert f"1 already in gs://{bucket.name}/" in result.stderr
    assert out.read_text().splitlines() == [
        "TsvHttpData-1.0",
        *(f"{server.url}{n}\t{len(data[n])}\t{b64md5(data[n])}" for n in sorted(data)[1:]),
    ]


def test_sync_table_options(setup, tmp_path):
    run, bucket, data, server = setup
    out = tmp_path / "urls.tsv"
    run("sync-table", bucket.name, "-o", str(out), "--prefix", "mirror", "--no-empty")
    names = [line.split("\t")[0].rsplit("/", 1)[1] for line in out.read_text().splitlines()[1:]]
    assert names == ["ztf_public_20180601.tar.gz", "ztf_public_20180603.tar.gz"]  # prefix: 0601 is new

    server.requests.clear()
    to_stdout = run("sync-table", "-o", "-", "--cached")  # no bucket: every tarball; from the cache
    assert server.requests == []
    assert to_stdout.stdout.splitlines() == [
        "TsvHttpData-1.0",
        *(f"{server.url}{n}\t{len(data[n])}\t{b64md5(data[n])}" for n in sorted(data)),
    ]


def test_sync_table_missing_bucket_is_one_sentence(setup):
    run, *_ = setup
    name = f"ztfcat-missing-{uuid.uuid4().hex[:8]}"
    result = run("sync-table", name, code=1)
    assert f"no such bucket '{name}'" in result.output
    assert "Traceback" not in result.output


def test_sync_bucket_and_ingest_from_a_bucket(setup):
    run, bucket, data, _ = setup
    gcs_url = f"gs://{bucket.name}/{HOST_PATH}ztf_public_20180601.tar.gz"
    first = run("ingest", "--json", gcs_url)
    report = json.loads(first.stdout)
    assert report["status"] == "complete" and report["n_alerts"] == 4
    assert report["md5"] == hashlib.md5(data["ztf_public_20180601.tar.gz"]).hexdigest()

    bucket.blob(HOST_PATH + "ztf_public_20180603.tar.gz").upload_from_string(
        data["ztf_public_20180603.tar.gz"], timeout=30
    )
    synced = run("sync-bucket", bucket.name, "--json")
    reports = [json.loads(line) for line in synced.stdout.splitlines()]
    assert [(r["release"], r["already_complete"], r["n_alerts"]) for r in reports] == [
        ("ztf_public_20180601.tar.gz", True, 4),
        ("ztf_public_20180603.tar.gz", False, 6),
    ]
    again = run("sync-bucket", bucket.name, "--prefix", HOST_PATH)
    assert again.stdout.count("already complete") == 2


def test_sync_bucket_failures_and_empty(setup):
    run, bucket, *_ = setup
    bucket.blob(HOST_PATH + "ztf_public_20180609.tar.gz").upload_from_string(b"not gzip", timeout=30)
    result = run("sync-bucket", bucket.name, code=1)
    assert "ztf_public_20180609.tar.gz: failed:" in result.stdout
    assert "1 of 2 tarballs failed" in result.output
    assert "no release tarballs" in run("sync-bucket", bucket.name, "--prefix", "nothing/").stderr
    name = f"ztfcat-missing-{uuid.uuid4().hex[:8]}"
    assert f"no such bucket '{name}'" in run("sync-bucket", name, code=1).output
