"""sources.tarballs: the one place a location becomes a Source (a local file or a gs:// object)."""

from __future__ import annotations

import hashlib

import pytest

from ztfcat.errors import ZtfcatError
from ztfcat.sources.tarballs import BucketTarball, LocalTarball, is_bucket_url, source_for
from ztfcat.testing.synthetic import make_night


def test_a_path_is_a_local_tarball_read_byte_for_byte(tmp_path):
    path = tmp_path / "ztf_public_20180819.tar.gz"
    make_night(path, n_alerts=5, cutouts=False)
    for location in (path, str(path)):
        source = source_for(location)
        assert isinstance(source, LocalTarball)
        assert source.name == "ztf_public_20180819.tar.gz" and source.origin == str(path.resolve())
        with source.open() as stream:
            assert hashlib.md5(stream.read()).digest() == hashlib.md5(path.read_bytes()).digest()


def test_a_missing_file_is_one_line_naming_it(tmp_path):
    with pytest.raises(ZtfcatError, match=r"cannot read .*nowhere\.tar\.gz: No such file") as info:
        source_for(tmp_path / "nowhere.tar.gz").open()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("gs://bucket/ztf_public_20180819.tar.gz", "ztf_public_20180819.tar.gz"),
        ("gs://bucket/ztf.uw.edu/alerts/public/ztf_public_20180819.tar.gz", "ztf_public_20180819.tar.gz"),
    ],
)
def test_a_gs_url_is_a_bucket_object(url, name):
    source = source_for(url)
    assert isinstance(source, BucketTarball) and source.name == name and source.origin == url
    assert is_bucket_url(url) and not is_bucket_url("bucket/x.tar.gz") and not is_bucket_url(None)
