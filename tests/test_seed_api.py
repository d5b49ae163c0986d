"""Every name of every version of the seed's ``broker.ztf_archive``, called as that version was called.

Against the project's local archive server (``ztfcat.testing.archive_server``) serving synthetic nights; what
comes back is checked against the tarballs themselves (``tarfile`` and ``fastavro`` on the bytes).
The list of names is the union, over the seed's history (GitHub mwvgroup/Pitt-Google-Broker,
``broker/ztf_archive/``, 2019-04 to 2020-11), of what its ``__init__`` exported.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import warnings
from pathlib import Path

import fastavro
import pytest

import ztfcat
from tests.tarballs import tar_members
from ztfcat.errors import NotFoundError
from ztfcat.testing.archive_server import ArchiveServer
from ztfcat.testing.synthetic import make_archive

N1, N2, N3 = (f"ztf_public_2018060{d}.tar.gz" for d in (1, 2, 3))

#: Every function any version of the seed exported, and its module constants.
SEED_FUNCTIONS = (
    "create_ztf_sync_table",
    "delete_local_data",
    "download_data",
    "download_data_date",
    "download_recent_data",
    "get_alert_data",
    "get_local_alert_list",
    "get_local_alerts",
    "get_local_release_list",
    "get_local_releases",
    "get_number_local_alerts",
    "get_number_local_releases",
    "get_remote_md5_table",
    "get_remote_release_list",
    "get_remote_release_md5",
    "get_ztf_data_dir",
    "iter_alerts",
    "number_local_releases",
    "plot_cutout",
    "plot_stamps",
)
SEED_CONSTANTS = ("ZTF_URL", "ZTF_DATA_DIR", "DATA_DIR", "FILE_DIR", "ALERT_LOG")


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory) -> Path:
    return make_archive(
        tmp_path_factory.mktemp("archive"), [("20180601", 12), ("20180602", 0), ("20180603", 20)]
    )


@pytest.fixture(scope="module")
def server(archive_root):
    with ArchiveServer(archive_root) as srv:
        yield srv


@pytest.fixture
def ztfa(server, database_url, tmp_path, monkeypatch):
    """``import ztfcat as ztfa`` with the settings pointing at the local archive and a fresh catalog."""
    monkeypatch.setenv("ZTFCAT_ARCHIVE_URL", server.url)
    monkeypatch.setenv("ZTFCAT_DATA_DIR", str(tmp_path / "seed"))
    monkeypatch.setenv("ZTFCAT_DATABASE_URL", database_url)
    yield ztfcat
    ztfcat.default_catalog().close()


@pytest.fixture
def loaded(ztfa):
    """Two nights downloaded (12 and 20 alerts), quietly, as the seed's later versions allowed."""
    ztfa.download_data_date(2018, 6, 1, verbose=False)
    ztfa.download_data_date(2018, 6, 3, verbose=False)
    return ztfa


def members(tarball: Path) -> dict[int, bytes]:
    return {int(Path(n).stem): data for n, data in tar_members(tarball).items() if n.endswith(".avro")}


def test_every_seed_name_is_there_and_import_does_nothing():
    for name in (*SEED_FUNCTIONS, *SEED_CONSTANTS):
        assert name in ztfcat.__all__ and name in dir(ztfcat), name
    for name in SEED_FUNCTIONS:
        assert callable(getattr(ztfcat, name)), name
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, ztfcat; print(sorted(m for m in sys.modules if '.' not in m))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for heavy in ("sqlalchemy", "astropy", "numpy", "matplotlib", "fastavro"):
        assert f"'{heavy}'" not in loaded


def test_constants_follow_the_settings(ztfa, server, tmp_path, monkeypatch):
    url, data_dir = ztfa.ZTF_URL, ztfa.ZTF_DATA_DIR
    assert url == server.url.rstrip("/") + "/"
    assert data_dir == ztfa.DATA_DIR == tmp_path / "seed"
    assert ztfa.ALERT_LOG.parent == tmp_path / "seed"
    assert (ztfa.FILE_DIR / "api.py").is_file()
    monkeypatch.setenv("ZTFCAT_DATA_DIR", str(tmp_path / "other"))
    data_dir = ztfa.ZTF_DATA_DIR
    assert data_dir == tmp_path / "other"  # read when asked, never cached
    assert not (tmp_path / "other").exists()


def test_get_ztf_data_dir(ztfa, tmp_path):
    folder = ztfa.get_ztf_data_dir()
    assert folder == tmp_path / "seed" and folder.is_dir()  # the seed made it too


def test_get_remote_md5_table(ztfa, archive_root):
    file_names, file_sizes = ztfa.get_remote_md5_table()
    assert file_names == [N1, N2, N3]
    assert file_sizes == [(archive_root / n).stat().st_size for n in file_names]


def test_get_remote_release_list_is_deprecated(ztfa, archive_root):
    with pytest.warns(DeprecationWarning, match=r"get_remote_md5_table\(\)"):
        names, sizes = ztfa.get_remote_release_list()
    assert names == [N1, N2, N3] and sizes == [(archive_root / n).stat().st_size for n in names]


def test_get_remote_release_md5_is_deprecated(ztfa, archive_root):
    with pytest.warns(DeprecationWarning, match=r"get_remote_md5_table\(\)"):
        table = ztfa.get_remote_release_md5()
    assert table.colnames == ["file", "md5"]
    assert {r["file"]: r["md5"] for r in table} == {
        n: hashlib.md5((archive_root / n).read_bytes()).hexdigest() for n in (N1, N2, N3)
    }


def test_download_data_date_with_the_seeds_keywords(ztfa, archive_root):
    report = ztfa.download_data_date(year=2018, month=6, day=3, block_size=4096, verbose=False)
    assert (report.status, report.n_alerts) == ("complete", 20)
    assert ztfa.get_local_alert_list() == sorted(members(archive_root / N3))
    ztfa.download_data_date(2018, 6, 1, 1024, True)  # positional, with a bar (none drawn off a terminal)
    assert len(ztfa.get_local_alert_list()) == 32


def test_download_recent_data_both_positional_orders(ztfa):
    first = ztfa.download_recent_data(1, 1024, False)  # later seed: (max_downloads, block_size, verbose)
    assert [r.release for r in first] == [N3]
    assert ztfa.download_recent_data(1, True) == []  # first seed: (max_downloads, stop_on_exist)
    rest = ztfa.download_recent_data(max_downloads=5, block_size=1 << 16, verbose=False, stop_on_exist=False)
    assert [r.release for r in rest] == [N2, N1]
    with pytest.raises(TypeError):
        ztfa.download_recent_data(1, True, True)


def test_download_data_is_deprecated(ztfa):
    with pytest.warns(DeprecationWarning, match=r"download_recent_data\(\)"):
        reports = ztfa.download_data(max_downloads=1)
    assert [r.release for r in reports] == [N3]


def test_get_local_releases(loaded):
    releases = loaded.get_local_releases()
    assert iter(releases) is releases  # an iterator, as the seed's generator
    assert list(releases) == ["20180601", "20180603"]


def test_get_local_release_list_is_deprecated(loaded):
    with pytest.warns(DeprecationWarning, match=r"get_local_releases\(\)"):
        assert loaded.get_local_release_list() == ["20180601", "20180603"]
    with pytest.warns(DeprecationWarning):
        assert list(loaded.get_local_release_list(return_iter=True)) == ["20180601", "20180603"]


def test_number_of_local_releases_is_deprecated(loaded):
    with pytest.warns(DeprecationWarning, match="get_local_releases"):
        assert loaded.get_number_local_releases() == 2
    with pytest.warns(DeprecationWarning, match="get_local_releases"):
        assert loaded.number_local_releases() == 2


def test_get_local_alerts_and_alert_list(loaded, archive_root):
    expected = sorted({**members(archive_root / N1), **members(archive_root / N3)})
    alerts = loaded.get_local_alerts()
    assert iter(alerts) is alerts
    assert list(alerts) == expected and all(type(c) is int for c in expected)
    assert loaded.get_local_alert_list() == expected
    as_iter = loaded.get_local_alert_list(return_iter=True)
    assert not isinstance(as_iter, list) and list(as_iter) == expected


def test_get_number_local_alerts_is_deprecated(loaded):
    with pytest.warns(DeprecationWarning, match=r"get_local_alert_list\(\)"):
        assert loaded.get_number_local_alerts() == 32


def test_get_alert_data_by_every_name_the_seed_used(loaded, archive_root):
    packets = members(archive_root / N3)
    candid = sorted(packets)[3]
    expected = next(fastavro.reader(io.BytesIO(packets[candid])))
    for call in (
        lambda: loaded.get_alert_data(candid),
        lambda: loaded.get_alert_data(candid=candid),
        lambda: loaded.get_alert_data(alertid=candid),  # 2019-07
        lambda: loaded.get_alert_data(alert_id=candid),  # 2020-03 onwards
    ):
        assert call() == expected
    assert loaded.get_alert_data(alert_id=candid, raw=True) == packets[candid]
    assert loaded.get_alert_data(candid, True) == packets[candid]
    with pytest.raises(TypeError):
        loaded.get_alert_data(candid, alert_id=candid)
    with pytest.raises(NotFoundError):
        loaded.get_alert_data(alert_id=1)


def test_iter_alerts_zero_means_no_batching_and_raw_by_position(loaded, archive_root):
    packets = {**members(archive_root / N1), **members(archive_root / N3)}
    singles = list(loaded.iter_alerts(0))
    assert [a["candid"] for a in singles] == sorted(packets)
    assert [a["candid"] for a in loaded.iter_alerts()] == sorted(packets)
    batches = list(loaded.iter_alerts(10, True))  # the seed's iter_alerts(num_alerts, raw)
    assert [len(b) for b in batches] == [10, 10, 10, 2]
    assert [p for b in batches for p in b] == [packets[c] for c in sorted(packets)]
    assert list(loaded.iter_alerts(True))[:2] == [packets[c] for c in sorted(packets)[:2]]  # 2019-04
    assert [len(b) for b in loaded.iter_alerts(num_alerts=20, raw=True)] == [20, 12]
    with pytest.raises(ValueError):
        list(loaded.iter_alerts(-1))


def test_plot_stamps_and_plot_cutout(loaded):
    alert = next(loaded.iter_alerts())
    fig = loaded.plot_stamps(alert)
    assert len([ax for ax in fig.axes if ax.images]) == 3
    one = loaded.plot_cutout(alert)
    assert len(one.axes) == 1 and one.axes[0].images
    science = one.axes[0].images[0].get_array()
    shared = loaded.plot_cutout(alert["candid"], fig=fig.__class__(), subplot=(1, 3, 2))
    assert shared.axes[0].get_subplotspec().get_geometry()[:3] == (1, 3, 1)
    assert (shared.axes[0].images[0].get_array() == science).all()


def test_create_ztf_sync_table_keeps_seed_md_order(ztfa, server, tmp_path):
    out = tmp_path / "out_file.txt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = ztfa.create_ztf_sync_table(None, out, verbose=True)
    assert sorted(table["url"]) == sorted(f"{server.url.rstrip('/')}/{n}" for n in (N1, N2, N3))
    lines = out.read_text().splitlines()
    assert lines[0] == "TsvHttpData-1.0" and len(lines) == 4
    first = tmp_path / "first.txt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ztfa.create_ztf_sync_table(out_file=first, block_size=1024)  # the first seed's keyword
    assert first.read_text() == out.read_text()
    with pytest.raises(TypeError):
        ztfa.create_ztf_sync_table(None, out, out_file=first)


def test_delete_local_data(loaded):
    assert loaded.delete_local_data() == 2
    assert loaded.get_local_alert_list() == [] and list(loaded.get_local_releases()) == []


@pytest.mark.gcs
def test_create_ztf_sync_table_with_a_bucket_as_seed_md_writes_it(
    ztfa, server, archive_root, gcs_bucket, tmp_path
):
    """``create_ztf_sync_table('my_bucket', 'out_file.txt')``: only the files the bucket lacks."""
    held = "127.0.0.1/alerts/public/" + N1  # where the Storage Transfer Service writes N1
    gcs_bucket.blob(held).upload_from_string((archive_root / N1).read_bytes(), timeout=30)
    out = tmp_path / "out_file.txt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = ztfa.create_ztf_sync_table(gcs_bucket.name, str(out))
    base = server.url.rstrip("/")
    assert sorted(table["url"]) == [f"{base}/{N2}", f"{base}/{N3}"]
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    assert sorted(r[0] for r in rows) == [f"{base}/{N2}", f"{base}/{N3}"]
    assert {r[0]: int(r[1]) for r in rows} == {
        f"{base}/{n}": (archive_root / n).stat().st_size for n in (N2, N3)
    }
