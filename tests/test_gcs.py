"""ztfcat.sources.gcs with the real google-cloud-storage client against gcp-storage-emulator on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile

import pytest
from gcs_emulator import gcs_bucket, gcs_client, gcs_emulator  # noqa: F401  (fixtures)

from ztfcat.errors import ChecksumMismatchError, StorageError
from ztfcat.mirror.urllist import ArchiveFile, sync_rows
from ztfcat.sources import gcs

pytestmark = pytest.mark.gcs

HOST_PATH = "ztf.uw.edu/alerts/public/"
BASE = "https://" + HOST_PATH


def tarball(night: str, n_alerts: int, salt: bytes = b"") -> bytes:
    """A small real release: gzip'd tar of ``<candid>.avro`` members (content is not Avro; not read)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i in range(n_alerts):
            data = f"{night}-{i}".encode() + salt
            info = tarfile.TarInfo(f"{night}{i:06d}.avro")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def archive_file(night: str, data: bytes) -> ArchiveFile:
    name = f"ztf_public_{night}.tar.gz"
    return ArchiveFile(name, BASE + name, len(data), hashlib.md5(data).hexdigest())


@pytest.fixture
def filled_bucket(gcs_bucket):  # noqa: F811
    """A bucket as a transfer job (and a careless user) left it; returns (bucket, archive, uploaded)."""
    archive = {night: tarball(night, 3) for night in ("20180601", "20180602", "20180603", "20180604")}
    uploaded = {
        HOST_PATH + "ztf_public_20180601.tar.gz": archive["20180601"],  # same as the archive
        HOST_PATH + "ztf_public_20180602.tar.gz": tarball("20180602", 3, salt=b"x"),  # differs
        "ztf_public_20180604.tar.gz": archive["20180604"],  # bare name: not where the service writes
        HOST_PATH + "MD5SUMS": b"not a release\n",
        "notes/readme.txt": b"hello",
    }
    for name, data in uploaded.items():
        gcs_bucket.blob(name).upload_from_string(data, timeout=30)
    return gcs_bucket, archive, uploaded


def test_parse_gs_url():
    assert gcs.parse_gs_url("gs://bucket/a/b.tar.gz") == ("bucket", "a/b.tar.gz")
    assert gcs.parse_gs_url("gs://bucket") == ("bucket", "")
    for bad in ("s3://bucket/a", "gs:///a", "bucket/a"):
        with pytest.raises(ValueError):
            gcs.parse_gs_url(bad)


def test_bucket_md5s_are_base64_of_the_bytes(filled_bucket):
    bucket, _, uploaded = filled_bucket
    md5s = gcs.bucket_md5s(bucket.name)
    assert md5s == {name: b64md5(data) for name, data in uploaded.items()}
    assert all(len(md5) == 24 for md5 in md5s.values())
    assert set(gcs.bucket_md5s(bucket.name, prefix=HOST_PATH)) == {
        n for n in uploaded if n.startswith(HOST_PATH)
    }


def test_sync_rows_against_the_bucket(filled_bucket):
    bucket, archive, uploaded = filled_bucket
    files = [archive_file(night, data) for night, data in archive.items()]
    rows = sync_rows(files, gcs.bucket_md5s(bucket.name))
    assert [(row.url.rsplit("_", 1)[1], row.reason) for row in rows] == [
        (
            "20180602.tar.gz",
            f"md5 differs (bucket {b64md5(uploaded[HOST_PATH + 'ztf_public_20180602.tar.gz'])}, "
            f"archive {b64md5(archive['20180602'])})",
        ),
        ("20180603.tar.gz", "new"),
        ("20180604.tar.gz", "new"),
    ]
    assert [row.size for row in rows] == [len(archive[n]) for n in ("20180602", "20180603", "20180604")]
    assert [row.md5_base64 for row in rows] == [
        b64md5(archive[n]) for n in ("20180602", "20180603", "20180604")
    ]


def test_list_release_objects_and_object_info(filled_bucket):
    bucket, _, uploaded = filled_bucket
    releases = gcs.list_release_objects(bucket.name)
    expected = sorted(n for n in uploaded if n.endswith(".tar.gz"))
    assert [obj.name for obj in releases] == expected
    for obj in releases:
        assert obj == (obj.name, len(uploaded[obj.name]), b64md5(uploaded[obj.name]))
    assert [obj.name for obj in gcs.list_release_objects(bucket.name, prefix=HOST_PATH)] == [
        n for n in expected if n.startswith(HOST_PATH)
    ]
    name = HOST_PATH + "ztf_public_20180601.tar.gz"
    data = uploaded[name]
    assert gcs.object_info(f"gs://{bucket.name}/{name}") == (name, len(data), b64md5(data))
    assert gcs.object_info(f"{bucket.name}/{name}").size == len(data)


def test_open_object_streams_in_bounded_chunks(gcs_bucket, gcs_client):  # noqa: F811
    data = os.urandom(5 * 1024 * 1024 + 12345)
    name = HOST_PATH + "ztf_public_20180605.tar.gz"
    gcs_bucket.blob(name).upload_from_string(data, timeout=60)

    ranges: list[str] = []
    gcs_client._http.hooks["response"].append(
        lambda response, **_: ranges.append(response.request.headers.get("Range"))
    )
    chunk = 1024 * 1024
    pieces = []
    with gcs.open_object(f"gs://{gcs_bucket.name}/{name}", client=gcs_client, chunk_size=chunk) as stream:
        assert stream.name == f"gs://{gcs_bucket.name}/{name}" and stream.size == len(data)
        while piece := stream.read(100_000):
            assert len(piece) <= 100_000
            pieces.append(piece)
        assert stream.tell() == len(data)
    assert b"".join(pieces) == data

    # Every download was a ranged request of at most one chunk: the object was never fetched whole.
    downloads = [r for r in ranges if r is not None]
    assert len(downloads) >= len(data) // chunk
    for header in downloads:
        start, end = header.removeprefix("bytes=").split("-")
        assert int(end) - int(start) + 1 <= chunk + 1


def test_open_object_feeds_a_tar_stream(filled_bucket):
    bucket, archive, _ = filled_bucket
    with (
        gcs.open_object(f"{bucket.name}/{HOST_PATH}ztf_public_20180601.tar.gz") as stream,
        tarfile.open(fileobj=stream, mode="r|gz") as tar,
    ):
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    assert members == [(f"20180601{i:06d}.avro", f"20180601-{i}".encode()) for i in range(3)]


def test_read_all_and_readinto(filled_bucket):
    bucket, _, uploaded = filled_bucket
    name = HOST_PATH + "ztf_public_20180602.tar.gz"
    with gcs.open_object(f"gs://{bucket.name}/{name}") as stream:
        assert stream.read() == uploaded[name]
    buffer = bytearray(10)
    with gcs.open_object(f"gs://{bucket.name}/{name}") as stream:
        assert stream.readinto(buffer) == 10
    assert bytes(buffer) == uploaded[name][:10]


def test_object_changed_under_the_reader_is_detected(gcs_bucket):  # noqa: F811
    name = HOST_PATH + "ztf_public_20180606.tar.gz"
    gcs_bucket.blob(name).upload_from_string(b"a" * 1000, timeout=30)
    stream = gcs.open_object(f"gs://{gcs_bucket.name}/{name}")
    gcs_bucket.blob(name).upload_from_string(b"b" * 1000, timeout=30)
    # Real GCS refuses the read (412, generation changed: StorageError); the emulator ignores
    # generation preconditions and serves the new bytes, which the MD5 check catches.
    with stream, pytest.raises((ChecksumMismatchError, StorageError), match=name):
        stream.read()


def test_missing_bucket_or_object_names_it(gcs_bucket):  # noqa: F811
    with pytest.raises(StorageError, match="no such bucket 'ztfcat-no-such-bucket'"):
        gcs.bucket_md5s("ztfcat-no-such-bucket")
    with pytest.raises(StorageError, match="ztfcat-no-such-bucket"):
        gcs.list_release_objects("ztfcat-no-such-bucket")
    with pytest.raises(StorageError, match="no such bucket 'ztfcat-no-such-bucket'"):
        gcs.open_object("gs://ztfcat-no-such-bucket/a.tar.gz")
    with pytest.raises(StorageError, match=f"no such object in bucket '{gcs_bucket.name}'"):
        gcs.object_info(f"gs://{gcs_bucket.name}/missing.tar.gz")
    with pytest.raises(ValueError, match="gs://bucket/object"):
        gcs.open_object(f"gs://{gcs_bucket.name}")


def test_missing_credentials_name_the_bucket(monkeypatch, tmp_path):
    """Away from the emulator, with no usable credentials: a clear StorageError, no network needed."""
    pytest.importorskip("google.cloud.storage")
    from google.auth.exceptions import DefaultCredentialsError

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    with pytest.raises(StorageError, match="no Google Cloud credentials") as caught:
        gcs.client()
    assert isinstance(caught.value.__cause__, DefaultCredentialsError)
    with pytest.raises(StorageError, match="gs://my-ztf-bucket.*no Google Cloud credentials"):
        gcs.bucket_md5s("my-ztf-bucket")
